// Two lane sums over bfloat16 inputs read in even/odd vector pairs (vector_convert.h
// load_bf16_pairs), for the channel norms' reductions over contiguous runs: the same sums, bit for
// bit, as lane_sum2 (lanes.h) over the same terms, at half the conversion cost. The compiler's own
// vectorization of lane_sum2 widened every 16 values in order (two extensions, an extract, two
// shifts; the load issued twice), which the pairs do with one load, a shift and a mask.
//
// Why the bits agree: lane_sum2 with 64 lanes adds term i to lane (i - b) % 64, in increasing i, and
// folds the lanes with tree_sum. Here each pair of vectors holds kBf16Pair consecutive values, the
// even-indexed ones in one vector and the odd-indexed ones in the other, so every accumulator lane
// still receives the terms of one fixed lane, in the same order, by the same operations (the term
// function is one generic lambda, called on vectors here and on scalars for the tail); the
// accumulators go back to lane order (merge_from_pair_order) before the same fold.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/lanes.h"
#include "cpu/vector_convert.h"
#include "normkit/math.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

#if NK_BF16_PAIRS
// Whether pair_sum2 takes sums of n values: lane_sum2's 64-lane form (n >= 4 * 64), which the pairs
// tile exactly; shorter runs take lane_sum2's 16 lanes.
inline bool pair_sums_cover(int64_t n) { return n >= 4 * kLanes<float>; }

// lane_block_sum2<float, 64>(b, e, f) where f(i, a, p, q) = term(values of the K inputs at i, a, p, q).
template <int K, class Term>
NK_CPU_INLINE std::pair<float, float> pair_block_sum2(const bfloat16_t* const (&in)[K], int64_t b, int64_t e,
                                                      Term& term) {
  constexpr int L = kLanes<float>, kPairs = L / int(kBf16Pair), kVecs = L / int(kFloatLanes);
  static_assert(L % kBf16Pair == 0 && kVecs == 2 * kPairs, "whole pairs per lane round");
  // acc[2g] the even lanes of pair g, acc[2g + 1] its odd lanes: merge_from_pair_order's layout.
  FloatVec acc0[kVecs] = {}, acc1[kVecs] = {};
  int64_t i = b;
  for (; i + L <= e; i += L) {
    for (int g = 0; g < kPairs; ++g) {
      FloatVec even[K], odd[K];
      for (int k = 0; k < K; ++k) load_bf16_pairs(in[k] + i + g * kBf16Pair, even[k], odd[k]);
      FloatVec a, p, q;
      term(even, a, p, q);
      acc0[2 * g] += a;
      acc1[2 * g] = math::mul_add(p, q, acc1[2 * g]);
      term(odd, a, p, q);
      acc0[2 * g + 1] += a;
      acc1[2 * g + 1] = math::mul_add(p, q, acc1[2 * g + 1]);
    }
  }
  float tail0 = 0, tail1 = 0;
  for (; i < e; ++i) {
    float v[K], a, p, q;
    for (int k = 0; k < K; ++k) v[k] = load<float>(in[k][i]);
    term(v, a, p, q);
    tail0 += a;
    tail1 = math::mul_add(p, q, tail1);
  }
  alignas(64) float pairs0[L], pairs1[L], lanes0[L], lanes1[L];
  std::memcpy(pairs0, acc0, sizeof(pairs0));
  std::memcpy(pairs1, acc1, sizeof(pairs1));
  merge_from_pair_order(pairs0, L, lanes0);
  merge_from_pair_order(pairs1, L, lanes1);
  return {tree_sum(lanes0) + tail0, tree_sum(lanes1) + tail1};
}

// lane_sum2<float>(n, f) for pair_sums_cover(n), in the same blocks.
template <int K, class Term>
NK_CPU_INLINE std::pair<float, float> pair_sum2(const bfloat16_t* const (&in)[K], int64_t n, Term&& term) {
  return blocked_sum2<float>(n, [&](int64_t b, int64_t e) { return pair_block_sum2(in, b, e, term); });
}
#endif

// Two sums of term(the K inputs' values at i, a, p, q) over i in [0, n), as lane_sum2_staged's f(i,
// a, p, q) (a summed, p * q summed with one rounding): in pairs for bfloat16 where pair_sums_cover(n),
// else by lane_sum2_staged over SummedInputs. term is generic: called on values and on vectors.
template <class A, class T, int K, class Term>
NK_CPU_INLINE std::pair<A, A> term_sum2(const T* const (&inputs)[K], int64_t n, Term&& term) {
#if NK_BF16_PAIRS
  if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    if (pair_sums_cover(n)) return pair_sum2(inputs, n, term);
  }
#endif
  SummedInputs<T, K> in(inputs);
  return lane_sum2_staged<A>(n, in, [&](int64_t i, A& a, A& p, A& q) {
    A v[K];
    for (int k = 0; k < K; ++k) v[k] = in.at(k, i);
    term(v, a, p, q);
  });
}

}  // namespace normkit::cpu::NK_ISA

// Vectorizable reductions for the CPU kernels. A single accumulator chains every add on the previous
// one (latency bound, about 4 GB/s); kLanes independent partial sums let the compiler keep several
// vector accumulators in flight. The summation order depends only on n, never on threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "normkit/math.h"
#include "normkit/pairwise.h"

// Always inlined: these are the inner loops of every reduction, and whether the compiler inlines them
// otherwise depends on how much else the file holds (a few additions elsewhere left them out of line
// and LayerNorm on 16-value rows twice as slow).
#define NK_CPU_INLINE inline __attribute__((always_inline))

// Per-ISA namespace: these inline helpers are compiled once per instruction set, and one name with
// three bodies would let the linker hand AVX-512 code to the baseline kernels.
namespace normkit::cpu::NK_ISA {

template <class A> constexpr int kLanes = 64;       // float: 4 zmm / 8 ymm accumulators
template <> constexpr int kLanes<double> = 32;

// acc[0] after the pairwise folds acc[j] += acc[j + w] for w = L/2, L/4, ..., 1. One level per
// instantiation: each level is a fixed-length loop the compiler vectorizes (a nested loop over w
// compiled to ~60 scalar adds with their loop control, which cost more than summing a short row).
template <class A, int L>
NK_CPU_INLINE A tree_sum(A (&acc)[L]) {
  if constexpr (L == 1) {
    return acc[0];
  } else {
    static_assert(L % 2 == 0, "lane counts are powers of two");
#pragma omp simd
    for (int j = 0; j < L / 2; ++j) acc[j] += acc[j + L / 2];
    return tree_sum<A, L / 2>(reinterpret_cast<A(&)[L / 2]>(acc));
  }
}

// Adds term i of a lane sum to acc. f(i) returns a plain term; f(i, p, q) gives a product p * q,
// which is added with one rounding (math::mul_add: the kernels are compiled without contraction, so a
// product returned as a plain term is rounded before the add). (Out-parameters, not a returned
// struct: a struct inside an `omp simd` loop kept GCC from vectorizing it.)
template <class A, class F>
NK_CPU_INLINE A add_term(A acc, F& f, int64_t i) {
  if constexpr (std::is_invocable_v<F&, int64_t, A&, A&>) {
    A p, q;
    f(i, p, q);
    return math::mul_add(p, q, acc);
  } else {
    return acc + f(i);
  }
}

// Sum of the terms i in [b, e) (add_term) over L lanes: term i < e - (e - b) % L goes to lane
// (i - b) % L, the lanes are folded by tree_sum, and the remainder is added in order to its own
// accumulator (indexing the lane array with a run-time index would make the compiler keep it in
// memory instead of registers).
template <class A, int L, class F>
NK_CPU_INLINE A lane_block_sum(int64_t b, int64_t e, F& f) {
  A acc[L] = {};
  int64_t i = b;
  for (; i + L <= e; i += L) {
#pragma omp simd
    for (int j = 0; j < L; ++j) acc[j] = add_term(acc[j], f, i + j);
  }
  A tail = 0;
  for (; i < e; ++i) tail = add_term(tail, f, i);
  return tree_sum(acc) + tail;
}

// Two sums in one pass: f(i, a, p, q) gives a term a of the first and a product p * q of the second
// (added with one rounding, as in add_term).
template <class A, int L, class F>
NK_CPU_INLINE std::pair<A, A> lane_block_sum2(int64_t b, int64_t e, F& f) {
  A acc0[L] = {}, acc1[L] = {};
  int64_t i = b;
  for (; i + L <= e; i += L) {
#pragma omp simd
    for (int j = 0; j < L; ++j) {
      A a, p, q;
      f(i + j, a, p, q);
      acc0[j] += a;
      acc1[j] = math::mul_add(p, q, acc1[j]);
    }
  }
  A tail0 = 0, tail1 = 0;
  for (; i < e; ++i) {
    A a, p, q;
    f(i, a, p, q);
    tail0 += a;
    tail1 = math::mul_add(p, q, tail1);
  }
  return {tree_sum(acc0) + tail0, tree_sum(acc1) + tail1};
}

// Sums longer than kLaneBlock go in blocks of kLaneBlock values whose sums are added pairwise
// (normkit/pairwise.h): each lane of one long sum adds n / L terms one after the other, and RMSNorm's
// sum of squares over a row of 2^22 values came out 70 times torch's error.
constexpr int64_t kLaneBlock = 4096;

template <class A, int L, class Stage, class F>
NK_CPU_INLINE A lane_sum_over(int64_t n, Stage& stage, F&& f) {
  if (n <= kLaneBlock) {
    stage(int64_t(0), n);
    return lane_block_sum<A, L>(0, n, f);
  }
  math::PairwiseSum<A> p;
  for (int64_t b = 0; b < n; b += kLaneBlock) {
    stage(b, std::min(n, b + kLaneBlock));
    p.add(lane_block_sum<A, L>(b, std::min(n, b + kLaneBlock), f));
  }
  return p.result();
}

// Two sums over [0, n) from block(b, e), the pair of sums of the block [b, e): one block, or blocks of
// kLaneBlock values added pairwise (also for cpu/pair_sums.h's blocks).
template <class A, class Block>
NK_CPU_INLINE std::pair<A, A> blocked_sum2(int64_t n, Block&& block) {
  if (n <= kLaneBlock) return block(int64_t(0), n);
  math::PairwiseSum<A> p0, p1;
  for (int64_t b = 0; b < n; b += kLaneBlock) {
    const std::pair<A, A> s = block(b, std::min(n, b + kLaneBlock));
    p0.add(s.first);
    p1.add(s.second);
  }
  return {p0.result(), p1.result()};
}

template <class A, int L, class Stage, class F>
NK_CPU_INLINE std::pair<A, A> lane_sum2_over(int64_t n, Stage& stage, F&& f) {
  return blocked_sum2<A>(n, [&](int64_t b, int64_t e) {
    stage(b, e);
    return lane_block_sum2<A, L>(b, e, f);
  });
}

// Short runs (fewer than 4 kLanes values: a 7x7 or 10x10 plane, a short row) use a quarter of the
// lanes (16 for float), so that at most 15 values go to the scalar remainder, a chain of
// dependent adds (with 64 lanes, all 49 values of a 7x7 plane did). The lane count is a function of n
// alone, so results still never depend on the thread count.
//
// The _staged forms call stage(b, e) before the terms i in [b, e) of each block are taken: a caller
// converts the block's inputs into a cache-resident buffer there (float16 through the hardware,
// vector_convert.h) for f to read. The same blocks and lanes, so the same sums.
template <class A, class Stage, class F>
NK_CPU_INLINE A lane_sum_staged(int64_t n, Stage&& stage, F&& f) {
  constexpr int L = kLanes<A>;
  return n >= 4 * L ? lane_sum_over<A, L>(n, stage, f) : lane_sum_over<A, L / 4>(n, stage, f);
}

template <class A, class F>
NK_CPU_INLINE A lane_sum(int64_t n, F&& f) {
  return lane_sum_staged<A>(n, [](int64_t, int64_t) {}, f);
}

// Sum of f(i)^2, each square fused into its add (the staged form as lane_sum_staged).
template <class A, class Stage, class F>
NK_CPU_INLINE A lane_sum_of_squares_staged(int64_t n, Stage&& stage, F&& f) {
  return lane_sum_staged<A>(n, stage, [&](int64_t i, A& p, A& q) { p = q = f(i); });
}

template <class A, class F>
NK_CPU_INLINE A lane_sum_of_squares(int64_t n, F&& f) {
  return lane_sum_of_squares_staged<A>(n, [](int64_t, int64_t) {}, f);
}

// Two sums in one pass (lane_block_sum2's f).
template <class A, class Stage, class F>
NK_CPU_INLINE std::pair<A, A> lane_sum2_staged(int64_t n, Stage&& stage, F&& f) {
  constexpr int L = kLanes<A>;
  return n >= 4 * L ? lane_sum2_over<A, L>(n, stage, f) : lane_sum2_over<A, L / 4>(n, stage, f);
}

template <class A, class F>
NK_CPU_INLINE std::pair<A, A> lane_sum2(int64_t n, F&& f) {
  return lane_sum2_staged<A>(n, [](int64_t, int64_t) {}, f);
}

}  // namespace normkit::cpu::NK_ISA

// Moments of contiguous values around a shift, in cache-resident blocks merged pairwise, shared by
// the row norms (LayerNorm) and the channel norms (BatchNorm, InstanceNorm, GroupNorm) on
// channels-first data.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "cpu/pair_sums.h"
#include "cpu/vector_convert.h"
#include "normkit/math.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// Block moments of n values d from the corrected two-pass sums around an estimate m of their mean:
// se = sum(d - m), se2 = sum((d - m)^2). M2 = se2 - se^2 / n also undoes the rounding of m; a result
// rounded below zero becomes zero (NaN stays NaN).
template <class A>
NK_CPU_INLINE math::Moments<A> corrected_moments(int64_t n, A estimate, A se, A se2) {
  A m2 = se2 - se * (se / A(n));
  if (!(m2 > A(0)) && m2 == m2) m2 = A(0);
  return math::block_moments(n, estimate + se / A(n), m2);
}

// Moments of the n values d = x - shift (n at most a few thousand: the block stays in L1). The
// caller picks the shift (near the statistic's mean), so d's mean is small next to x's and the
// block means merge across blocks without losing the variance.
//
// One pass sums d and d^2: M2 = S2 - S1^2 / n, whose rounding error is about eps * S2 =
// eps * n * (var + dbar^2) (dbar = mean of d), so while dbar^2 <= 4 var the relative error of M2
// stays within a few eps, as good as two passes. Blocks where the shift is far from their mean
// (and M2 <= 0 or NaN) take the corrected two-pass route while the block is in L1: an estimate m
// of the mean of d, then sums of e = d - m and e^2, M2 = sum(e^2) - sum(e)^2 / n (which also undoes
// the rounding of m).
template <class T, class A>
NK_CPU_INLINE math::Moments<A> shifted_block_moments(const T* x, int64_t n, A shift) {
  // (The term on values or on vectors of them: term_sum2 takes bfloat16 in pairs, the same sums.)
  const T* in[1] = {x};
  const auto [s1, s2] = term_sum2<A>(in, n, [&](const auto (&v)[1], auto& d, auto& p, auto& q) {
    d = p = q = v[0] - shift;
  });
  const A mean = s1 / A(n);
  const A m2 = s2 - s1 * mean;
  if (mean * mean * A(n) <= A(4) * m2) return math::block_moments(n, mean, m2);
  // Also taken for NaN and m2 < 0 (m2 == 0 passes only with a zero mean: all d zero, exact).
  const A estimate = lane_sum<A>(n, [&](int64_t i) { return load<A>(x[i]) - shift; }) / A(n);
  const auto [se, se2] = lane_sum2<A>(n, [&](int64_t i, A& e, A& p, A& q) {
    e = p = q = (load<A>(x[i]) - shift) - estimate;
  });
  return corrected_moments(n, estimate, se, se2);
}

// Values per block: two passes over a block that stays in L1. Fixed, so the rounding depends on the
// number of values alone.
constexpr int64_t kStatBlock = 4096;

// Moments of the n values x - shift: blocks of kStatBlock values merged pairwise with Chan's formula
// (normkit/pairwise.h: a running merge of the 4096 blocks of a 2^24-value row lost 50 times torch's
// error). A single block is its own result, without the merge's bookkeeping.
template <class T, class A>
NK_CPU_INLINE math::Moments<A> shifted_moments(const T* x, int64_t n, A shift) {
  // float16 with hardware conversion: each block widened into a float buffer first (exact, so the
  // same moments), as its one or two passes would convert every value again in software.
  alignas(64) float wide[is_hardware_half<T> ? kStatBlock : 1];
  auto block = [&](const T* xb, int64_t len) {
    if constexpr (is_hardware_half<T>) {
      widen_run(xb, wide, len);
      return shifted_block_moments(static_cast<const float*>(wide), len, shift);
    } else {
      return shifted_block_moments(xb, len, shift);
    }
  };
  if (n <= kStatBlock) return block(x, n);
  math::PairwiseMoments<A> m;
  for (int64_t s = 0; s < n; s += kStatBlock) m.add(block(x + s, std::min(kStatBlock, n - s)));
  return m.result();
}

}  // namespace normkit::cpu::NK_ISA

// Per-element formulas and the moment merges shared by the CPU and CUDA kernels. A is the
// accumulation type (float or double). Everything here is a pure function of its arguments, so a CPU
// test of a formula vouches for the CUDA kernel that calls the same function.
#pragma once
#include <cmath>
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::math {

// Count, mean and sum of squared deviations (M2) of a set of values.
template <class A>
struct Moments {
  int64_t count = 0;
  A mean = 0;
  A m2 = 0;
};

// Welford's update with one value.
template <class A>
NK_HD void welford_push(Moments<A>& m, A x) {
  m.count += 1;
  const A delta = x - m.mean;
  m.mean += delta / A(m.count);
  m.m2 += delta * (x - m.mean);
}

// Chan et al.'s pairwise merge: exact in exact arithmetic, stable when the means differ widely.
template <class A>
NK_HD Moments<A> chan_merge(const Moments<A>& a, const Moments<A>& b) {
  const int64_t n = a.count + b.count;
  if (n == 0) return a;
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const A fb = A(b.count) / A(n);
  const A delta = b.mean - a.mean;
  Moments<A> r;
  r.count = n;
  r.mean = a.mean + delta * fb;
  r.m2 = a.m2 + b.m2 + delta * delta * A(a.count) * fb;
  return r;
}

// Moments of a block from its sum and its centred sum of squares (the two-pass block statistics).
template <class A>
NK_HD Moments<A> block_moments(int64_t count, A mean, A centred_sq_sum) {
  Moments<A> m;
  m.count = count;
  m.mean = mean;
  m.m2 = centred_sq_sum;
  return m;
}

// Population (biased) variance, as normalization layers use for normalizing.
template <class A>
NK_HD A biased_var(const Moments<A>& m) {
  return m.count > 0 ? m.m2 / A(m.count) : A(NAN);
}

// Sample (unbiased) variance, as running statistics store it; NaN below two values.
template <class A>
NK_HD A unbiased_var(const Moments<A>& m) {
  return m.count > 1 ? m.m2 / A(m.count - 1) : A(NAN);
}

// running <- momentum * batch + (1 - momentum) * running, in torch's order of operations.
template <class A>
NK_HD A running_update(A running, A batch, A momentum) {
  return momentum * batch + (A(1) - momentum) * running;
}

// rstd = 1 / sqrt(var + eps). Correctly rounded sqrt and division on both sides (no rsqrt
// approximation), so the CPU and CUDA statistics agree. A variance that rounding made slightly
// negative counts as 0; a NaN variance (no values) stays NaN, as in torch.
template <class A>
NK_HD A rstd_from_var(A var, A eps) {
  return A(1) / std::sqrt((var < A(0) ? A(0) : var) + eps);
}

// ---- Row normalization: LayerNorm (kCenter) and RMSNorm (!kCenter) -----------------------------
// Forward: y = (x - mean) * rstd * w + b, with mean = 0 and b = 0 for RMSNorm.
template <class A>
NK_HD A row_norm_apply(A x, A mean, A rstd, A w, A b) {
  return (x - mean) * rstd * w + b;
}

// Backward, per element: with g = dy * w and xhat = (x - mean) * rstd,
//   LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   RMSNorm:   dx = rstd * (g - xhat * mean(g * xhat))
// mean_g is passed as 0 for RMSNorm.
template <class A>
NK_HD A row_norm_dx(A g, A xhat, A rstd, A mean_g, A mean_g_xhat) {
  return rstd * (g - mean_g - xhat * mean_g_xhat);
}

}  // namespace normkit::math

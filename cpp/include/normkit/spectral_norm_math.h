// SpectralNorm and mean-only BatchNorm formulas shared by the CPU and CUDA kernels (the companion of
// math.h for these two layers). A is the accumulation type; every function is pure.
#pragma once
#include <cmath>

#include "normkit/dtype.h"

namespace normkit::math {

// ---- SpectralNorm ----------------------------------------------------------------------------------
// F.normalize's denominator: max(||t||, eps) from the sum of squares of t.
template <class A>
NK_HD A sn_denom(A sq_sum, A eps) {
  const A n = std::sqrt(sq_sum);
  return n > eps ? n : eps;
}

// One element of a normalized vector, rounded to the weight's dtype T as torch's buffer stores it
// (and read back as A for the next product).
template <class T, class A>
NK_HD A sn_normalized(A t, A denom) {
  return load<A>(store<T>(t / denom));
}

// Forward: y = w / sigma (torch's `weight / sigma`).
template <class A>
NK_HD A sn_apply(A w, A sigma) {
  return w / sigma;
}

// Backward with u, v constant and dot = sum(dy * w): dw = dy / sigma - coef u_i v_j, coef = dot / sigma^2.
template <class A>
NK_HD A sn_coef(A dot, A sigma) {
  return dot / (sigma * sigma);
}
template <class A>
NK_HD A sn_dw(A dy, A u_i, A v_j, A sigma, A coef) {
  return dy / sigma - coef * u_i * v_j;
}

// ---- Mean-only BatchNorm (Salimans & Kingma, 2016) --------------------------------------------------
// Forward: y = x - mean_c + bias_c; backward: dx = dy - mean_c(dy) with batch statistics, dy without.
template <class A>
NK_HD A mobn_apply(A x, A mean, A bias) {
  return (x - mean) + bias;
}
template <class A>
NK_HD A mobn_dx(A dy, A mean_dy) {
  return dy - mean_dy;
}

}  // namespace normkit::math

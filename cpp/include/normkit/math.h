// Per-element formulas and the moment merges shared by the CPU and CUDA kernels. A is the
// accumulation type (float or double). Everything here is a pure function of its arguments, so a CPU
// test of a formula vouches for the CUDA kernel that calls the same function.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "normkit/dtype.h"
#include "normkit/pairwise.h"
#include "normkit/vector_fma.h"

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

// The arithmetic of chan_merge below on one statistic: moments (b_mean, b_m2) merged into (mean, m2),
// given the first's count `ac` and the second's share of the merged count `fb` (both counts nonzero).
// Vector loops over statistics that share their counts (blocks of channels-last rows) merge with it
// lane by lane, and round as chan_merge does.
template <class A>
NK_HD void chan_merge_lane(A& mean, A& m2, A b_mean, A b_m2, A ac, A fb) {
  const A delta = b_mean - mean;
  m2 = m2 + b_m2 + delta * delta * ac * fb;
  mean = mean + delta * fb;
}

// Chan et al.'s pairwise merge: exact in exact arithmetic, stable when the means differ widely.
template <class A>
NK_HD Moments<A> chan_merge(const Moments<A>& a, const Moments<A>& b) {
  const int64_t n = a.count + b.count;
  if (n == 0) return a;
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  Moments<A> r = a;
  r.count = n;
  chan_merge_lane(r.mean, r.m2, b.mean, b.m2, A(a.count), A(b.count) / A(n));
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

// Moments merged pairwise (normkit/pairwise.h).
struct MomentsMerge {
  template <class A>
  NK_HD Moments<A> operator()(const Moments<A>& a, const Moments<A>& b) const {
    return chan_merge(a, b);
  }
};
template <class A>
using PairwiseMoments = Pairwise<Moments<A>, MomentsMerge>;
template <class A, class Get>
NK_HD Moments<A> pairwise_moments(int64_t n, Get&& get) {
  return pairwise<Moments<A>, MomentsMerge>(n, get);
}

// The shift of a statistic's moments (the kernels sum x - shift): for runs of kShiftMinRun values or
// more, the mean of its first values (a run of stride `stride`); for shorter ones, the first value.
// The closer the shift to the mean, the smaller the block means, whose rounding is the mean's error
// (the first value left a centred BatchNorm mean ~25 ulp off). The sample is a power of two of values,
// at most an eighth of the run and `max_sample`, summed in four partial sums in a fixed order and
// scaled by its exact reciprocal: on short LayerNorm rows a division and a longer sum on the way to
// the statistics made [262144, 16] 25% slower, hence the first value there. The first value also when
// the mean is not finite (a sum overflowing near the float limits).
constexpr int64_t kShiftMinRun = 256;
constexpr int64_t kChannelShiftSample = 64;  // channel norms: at most this many values per statistic
constexpr int64_t kRowShiftSample = 32;      // LayerNorm: at most this many values per row
// The size of sample_shift's sample for a run of `run` values (> 0); 0: the first value alone.
NK_HD int64_t shift_sample_size(int64_t run, int64_t max_sample) {
  if (run < kShiftMinRun) return 0;
  int64_t n = 4;
  while (2 * n <= max_sample && 16 * n <= run) n *= 2;
  return n;
}

// sample_shift from its sample get(0), ..., get(n - 1) and the run's first value `first`. V is A or a
// vector of A (GCC vector extension: a lane per statistic, each lane computing what A computes).
template <class A, class V, class Get>
NK_HD V shift_of_sample(int64_t n, Get&& get, V first) {
  V s0 = V() + A(0), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i < n; i += 4) {
    s0 += get(i);
    s1 += get(i + 1);
    s2 += get(i + 2);
    s3 += get(i + 3);
  }
  const V mean = ((s0 + s1) + (s2 + s3)) * (A(1) / A(n));
  return mean - mean == A(0) ? mean : first;  // (inf - inf and NaN - NaN are NaN)
}

template <class A, class T>
NK_HD A sample_shift(const T* first, int64_t run, int64_t stride, int64_t max_sample) {
  if (run <= 0) return A(0);
  const int64_t n = shift_sample_size(run, max_sample);
  if (n == 0) return load<A>(first[0]);
  return shift_of_sample<A, A>(n, [&](int64_t i) { return load<A>(first[i * stride]); }, load<A>(first[0]));
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

// ---- SyncBatchNorm: per-channel moments summed over processes ---------------------------------------
// Each process puts, per channel, n * m, M2 and n * m^2 (its count n, mean m = hi + lo, M2) into a
// float64 payload that an all-reduce sums. With N = sum n, S1 = sum n m, Q = sum M2, S2 = sum n m^2:
//   mean = S1 / N,   M2 = Q + (S2 - S1 * mean).
// Each process's own M2 arrives exactly; only the between-process term S2 - S1 * mean cancels, and in
// float64 its error is ~1e-16 * mean^2 relative to the variance (1e-6 for mean 1e4, std 0.1). A sum
// all-reduce suffices, so any backend (MPI, NCCL, gloo) can carry it, and the payload has 3 values per
// channel whatever the number of processes.
struct SyncTerms {
  double s1, q, s2;
};
NK_HD SyncTerms sync_terms(double n, double hi, double lo, double m2) {
  const double m = hi + lo;
  return {n * m, n > 0 ? m2 : 0.0, n * m * m};
}

struct SyncMoments {
  double mean, m2;
};
NK_HD SyncMoments sync_merge(double count, double s1, double q, double s2) {
  if (!(count > 0)) return {0.0, 0.0};
  const double mean = s1 / count;
  const double between = s2 - s1 * mean;
  return {mean, q + (between > 0 ? between : 0.0)};
}

// a * b + c: one rounding (a fused multiply-add) where the processor has the instruction (CUDA, and
// the CPU kernels built for AVX2 or AVX-512), else two. The CPU kernels are compiled without
// contraction (-ffp-contract=off), so a fused product is spelled here, never left to the compiler:
// every dtype's loop and every FMA-capable build round it alike. (Fusing the normalization's last
// product and add saves an instruction per value, which bfloat16 loops, short of registers for
// their conversions, notice.)
// (A may also be a GCC vector of floats or doubles, as in the CPU kernels' register blocks and
// float16 loops: normkit/vector_fma.h.)
template <class A>
NK_HD A mul_add(A a, A b, A c) {
#if defined(__CUDA_ARCH__)
  return std::fma(a, b, c);
#elif defined(__FMA__)
  if constexpr (std::is_floating_point_v<A>) {
    return std::fma(a, b, c);
  } else {
    return vector_fma(a, b, c);
  }
#else
  return a * b + c;
#endif
}

// ---- Row normalization: LayerNorm (kCenter) and RMSNorm (!kCenter) -----------------------------
// Forward: y = (x - mean) * rstd * w + b, with mean = 0 and b = 0 for RMSNorm.
template <class A>
NK_HD A row_norm_apply(A x, A mean, A rstd, A w, A b) {
  return mul_add((x - mean) * rstd, w, b);
}

// Backward, per element: with g = dy * w and xhat = (x - mean) * rstd,
//   LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   RMSNorm:   dx = rstd * (g - xhat * mean(g * xhat))
// mean_g is passed as 0 for RMSNorm.
template <class A>
NK_HD A row_norm_dx(A g, A xhat, A rstd, A mean_g, A mean_g_xhat) {
  return rstd * mul_add(-xhat, mean_g_xhat, g - mean_g);
}

// ---- LocalResponseNorm -----------------------------------------------------------------------------
// Window of channel c: W(c) = [c - size / 2, c + (size - 1) / 2]; the channels whose window holds j
// (the transposed window, for the backward): [j - (size - 1) / 2, j + size / 2]. Both get clipped
// to [0, C) by the caller.
NK_HD int64_t lrn_window_lo(int64_t c, int64_t size) { return c - size / 2; }
NK_HD int64_t lrn_window_hi(int64_t c, int64_t size) { return c + (size - 1) / 2; }
NK_HD int64_t lrn_twindow_lo(int64_t j, int64_t size) { return j - (size - 1) / 2; }
NK_HD int64_t lrn_twindow_hi(int64_t j, int64_t size) { return j + size / 2; }

// s = k + alpha / size * (sum of a^2 over the window); alpha_over_size is alpha / size.
template <class A>
NK_HD A lrn_scale(A window_sq_sum, A alpha_over_size, A k) {
  return mul_add(alpha_over_size, window_sq_sum, k);
}

// s^-0.75 = 1 / (sqrt(s) * sqrt(sqrt(s))): correctly rounded square roots and one division, a few
// ulp from the exact power and much cheaper than pow (the default beta).
template <class A>
NK_HD A lrn_pow_neg_075(A s) {
  const A r = std::sqrt(s);
  return A(1) / (r * std::sqrt(r));
}

// s^-beta; `fast` (beta == 0.75, decided once per call) takes the square-root path.
template <class A>
NK_HD A lrn_pow_neg(A s, A beta, bool fast) {
  return fast ? lrn_pow_neg_075(s) : A(std::pow(s, -beta));
}

// Forward: b = a * s^-beta, with p = s^-beta.
template <class A>
NK_HD A lrn_apply(A a, A p) {
  return a * p;
}

// Backward. Channel c contributes t_c = g_c a_c s_c^(-beta-1) = g_c a_c p_c / s_c to the channels of
// its window; then dx_j = g_j p_j - coef a_j sum_{c : j in W(c)} t_c with coef = 2 alpha beta / size.
template <class A>
NK_HD A lrn_backward_term(A g, A a, A p, A s) {
  return g * a * p / s;
}
template <class A>
NK_HD A lrn_dx(A g, A a, A p, A coef, A term_sum) {
  return mul_add(-(coef * a), term_sum, g * p);
}

// ---- WeightNorm: w = g v / ||v|| per slice ---------------------------------------------------------
// n = sqrt(sum of squares). A zero row gives n = 0 and, as in torch, inf/nan weights and gradients.
template <class A>
NK_HD A weight_norm_norm(A sq_sum) {
  return std::sqrt(sq_sum);
}

// Forward: w = v * scale with scale = g / n (torch's order: v * (g / norm)).
template <class A>
NK_HD A weight_norm_scale(A g, A n) {
  return g / n;
}

// Backward, with dot = sum(dw * v) over the slice: dg = dot / n, and per element
// dv = scale * (dw - v * coef) with scale = g / n and coef = dot / n^2.
template <class A>
NK_HD A weight_norm_dg(A dot, A n) {
  return dot / n;
}
template <class A>
NK_HD A weight_norm_coef(A dot, A n) {
  return dot / (n * n);
}
template <class A>
NK_HD A weight_norm_dv(A dw, A v, A scale, A coef) {
  return scale * (dw - v * coef);
}

// ---- Batch-Instance Normalization ------------------------------------------------------------------
// rho clipped to [0, 1] (torch.clamp: NaN stays NaN).
template <class A>
NK_HD A bin_clip_rho(A rho) {
  return rho < A(0) ? A(0) : (rho > A(1) ? A(1) : rho);
}
// torch.clamp's gradient mask: passes where min <= rho <= max, both bounds included.
template <class A>
NK_HD A bin_rho_mask(A rho) {
  return (rho >= A(0) && rho <= A(1)) ? A(1) : A(0);
}
// y = w (r xhat_BN + (1 - r) xhat_IN) + b.
template <class A>
NK_HD A bin_apply(A x, A mean_bn, A rstd_bn, A mean_in, A rstd_in, A r, A w, A b) {
  return mul_add(w, mul_add(r, (x - mean_bn) * rstd_bn, (A(1) - r) * ((x - mean_in) * rstd_in)), b);
}
// dx of one element; the means are of g = dy w over the channel (BN, 0 without batch statistics) and
// over the plane (IN).
template <class A>
NK_HD A bin_dx(A g, A xhat_bn, A xhat_in, A r, A rstd_bn, A rstd_in, A mg_bn, A mgx_bn, A mg_in, A mgx_in) {
  return mul_add(r * rstd_bn, mul_add(-xhat_bn, mgx_bn, g - mg_bn),
                 (A(1) - r) * rstd_in * mul_add(-xhat_in, mgx_in, g - mg_in));
}

// ---- Switchable Normalization ----------------------------------------------------------------------
// Softmax of 3 logits (IN, LN, BN); without the IN term, over the LN and BN logits only (w[0] = 0).
template <class A>
NK_HD void sn_softmax(A l0, A l1, A l2, bool use_in, A* w) {
  const A m = use_in ? (l0 > l1 ? (l0 > l2 ? l0 : l2) : (l1 > l2 ? l1 : l2)) : (l1 > l2 ? l1 : l2);
  const A e0 = use_in ? A(std::exp(l0 - m)) : A(0), e1 = A(std::exp(l1 - m)), e2 = A(std::exp(l2 - m));
  const A inv = A(1) / (e0 + e1 + e2);
  w[0] = e0 * inv;
  w[1] = e1 * inv;
  w[2] = e2 * inv;
}
// Mean and population variance of a group of planes from their moments (pm[i * stride], pv[...]):
// mean = avg pm, var = avg (pv + pm^2) - mean^2, computed as avg (pv + (pm - mean)^2).
template <class A>
NK_HD void sn_group_stats(const A* pm, const A* pv, int64_t count, int64_t stride, A& mean, A& var) {
  mean = pairwise_sum<A>(count, [&](int64_t i) { return pm[i * stride]; }) / A(count);
  var = pairwise_sum<A>(count, [&](int64_t i) {
          const A d = pm[i * stride] - mean;
          return pv[i * stride] + d * d;
        }) /
        A(count);
}
// The gradients of one plane's mixed mean and variance from its sums Dy = sum dy, Dx = sum dy xhat.
template <class A>
NK_HD A sn_dmean(A rstd, A w, A Dy) {
  return -rstd * w * Dy;
}
template <class A>
NK_HD A sn_dvar(A rstd, A w, A Dx) {
  return A(-0.5) * rstd * rstd * w * Dx;
}
// dx = rstd g + a + b (x - pm) for plane p = (n, c), given dmu_p, ds2_p of the plane, their sums over
// the plane's sample (SA_n, SB_n over c) and channel (SA_c, SB_c over n), the softmax weights wm, wv
// and the group statistics: a S = wm0 dmu_p + wm1 SA_n / C + 2 (pm - ln_mean) wv1 SB_n / C
// + [batch] (wm2 SA_c / N + 2 (pm - bn_mean) wv2 SB_c / N); b S = 2 (wv0 ds2_p + wv1 SB_n / C
// + [batch] wv2 SB_c / N).
template <class A>
NK_HD void sn_dx_coefs(A dmu, A ds2, A SA_n, A SB_n, A SA_c, A SB_c, const A* wm, const A* wv, A pm, A ln_mean,
                       A bn_mean, int64_t N, int64_t C, int64_t S, bool batch, A& a, A& b) {
  A as = wm[0] * dmu + wm[1] * SA_n / A(C) + A(2) * (pm - ln_mean) * wv[1] * SB_n / A(C);
  A bs = A(2) * (wv[0] * ds2 + wv[1] * SB_n / A(C));
  if (batch) {
    as += wm[2] * SA_c / A(N) + A(2) * (pm - bn_mean) * wv[2] * SB_c / A(N);
    bs += A(2) * wv[2] * SB_c / A(N);
  }
  a = as / A(S);
  b = bs / A(S);
}
// Forward: y = w (x - mu) rstd + b, with mu and rstd the plane's mixed statistics.
template <class A>
NK_HD A sn_apply(A x, A mu, A rstd, A w, A b) {
  return mul_add(w, (x - mu) * rstd, b);
}
template <class A>
NK_HD A sn_dx(A g, A x, A rstd, A pm, A a, A b) {
  return mul_add(b, x - pm, mul_add(rstd, g, a));
}
// d logit_j = w_j sum_p dstat_p (stat_j(p) - stat(p)): the softmax backward, centred per plane.

}  // namespace normkit::math

// Switchable Normalization on the CPU (detail/switchable_norm_args.h).
//
// Forward: planes (n, c) in parallel, each a two-pass lane_sum into its moments; then the LN
// statistics per n (over c, in c order) and the BN statistics per c (over n, in n order); then per
// plane the mixed mean and rstd and the elementwise apply. Backward: per plane the sums of dy and
// dy xhat (one pass), their gradients to the mixed statistics summed per n and per c in a fixed
// order, the logit gradients in plane order, then dx per plane. No sum depends on the thread count.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/params.h"
#include "cpu/plane_step.h"
#include "cpu/lanes.h"
#include "normkit/math.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::SnBackwardArgs;
using detail::SnForwardArgs;
using detail::SnSaved;
using detail::SnShape;

constexpr int64_t kTaskElements = 1 << 15;

int64_t grain_of(int64_t S) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(S, 1)); }

template <class A>
void softmaxes(const void* mw, const void* vw, DType t, bool use_in, A* wm, A* wv) {
  math::sn_softmax<A>(param_at<A>(mw, t, 0, A(0)), param_at<A>(mw, t, 1, A(0)), param_at<A>(mw, t, 2, A(0)),
                      use_in, wm);
  math::sn_softmax<A>(param_at<A>(vw, t, 0, A(0)), param_at<A>(vw, t, 1, A(0)), param_at<A>(vw, t, 2, A(0)),
                      use_in, wv);
}

template <class T, class Step>
void forward(const SnForwardArgs& a, Step step) {
  using A = acc_t<T>;
  const SnShape& sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const SnSaved sv{N, C};
  A* saved = static_cast<A*>(a.saved);
  A* mean = saved + sv.mean();
  A* rstd = saved + sv.rstd();
  A* pm = saved + sv.pmean();
  A* pv = saved + sv.pvar();
  A* ln_mean = saved + sv.ln_mean();
  A* ln_var = saved + sv.ln_var();
  A* bn_mean = saved + sv.bn_mean();
  A* bn_var = saved + sv.bn_var();
  const A eps = A(a.eps);
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* xp = x + sh.plane_base(p / C, p % C);
      const A m = lane_sum<A>(S, [&](int64_t i) { return load<A>(xp[i * step]); }) / A(S);
      const A sq = lane_sum_of_squares<A>(S, [&](int64_t i) { return load<A>(xp[i * step]) - m; });
      pm[p] = m;
      pv[p] = sq / A(S);
    }
  });
  for (int64_t n = 0; n < N; ++n) math::sn_group_stats<A>(pm + n * C, pv + n * C, C, 1, ln_mean[n], ln_var[n]);
  for (int64_t c = 0; c < C; ++c) {
    if (a.training) {
      math::sn_group_stats<A>(pm + c, pv + c, N, C, bn_mean[c], bn_var[c]);
      if (a.running_mean) {
        const A mom = A(a.momentum);
        param_put<A>(a.running_mean, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), bn_mean[c], mom));
        param_put<A>(a.running_var, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_var, a.running_dtype, c, A(0)), bn_var[c], mom));
      }
    } else {
      bn_mean[c] = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
      bn_var[c] = param_at<A>(a.running_var, a.running_dtype, c, A(1));
    }
  }
  A wm[3], wv[3];
  softmaxes<A>(a.mean_weight, a.var_weight, a.logit_dtype, a.use_in, wm, wv);
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const int64_t base = sh.plane_base(n, c);
      const A mu = wm[0] * pm[p] + wm[1] * ln_mean[n] + wm[2] * bn_mean[c];
      const A s2 = wv[0] * pv[p] + wv[1] * ln_var[n] + wv[2] * bn_var[c];
      const A r = math::rstd_from_var(s2, eps);
      mean[p] = mu;
      rstd[p] = r;
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      const A b = param_at<A>(a.bias, a.param_dtype, c, A(0));
      for (int64_t i = 0; i < S; ++i)
        y[base + i * step] = store<T>(math::sn_apply(load<A>(x[base + i * step]), mu, r, w, b));
    }
  });
}

template <class T, class Step>
void backward(const SnBackwardArgs& a, Step step) {
  using A = acc_t<T>;
  const SnShape& sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  const SnSaved sv{N, C};
  const A* saved = static_cast<const A*>(a.saved);
  const A* mean = saved + sv.mean();
  const A* rstd = saved + sv.rstd();
  const A* pm = saved + sv.pmean();
  const A* pv = saved + sv.pvar();
  const A* ln_mean = saved + sv.ln_mean();
  const A* ln_var = saved + sv.ln_var();
  const A* bn_mean = saved + sv.bn_mean();
  const A* bn_var = saved + sv.bn_var();
  // Per plane: Dy = sum dy, Dx = sum dy xhat; then dmu, ds2 of the plane.
  std::vector<A> Dy(size_t(N * C)), Dx(size_t(N * C)), dmu(size_t(N * C)), ds2(size_t(N * C));
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % C;
      const int64_t base = sh.plane_base(p / C, c);
      const A mu = mean[p], r = rstd[p];
      const auto s2 = lane_sum2<A>(S, [&](int64_t i, A& g, A& g_again, A& xhat) {
        g = g_again = load<A>(dy[base + i * step]);
        xhat = (load<A>(x[base + i * step]) - mu) * r;
      });
      Dy[size_t(p)] = s2.first;
      Dx[size_t(p)] = s2.second;
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      dmu[size_t(p)] = math::sn_dmean(r, w, s2.first);
      ds2[size_t(p)] = math::sn_dvar(r, w, s2.second);
    }
  });
  std::vector<A> SA_n(static_cast<size_t>(N)), SB_n(static_cast<size_t>(N)), SA_c(static_cast<size_t>(C)),
      SB_c(static_cast<size_t>(C));
  // Sums over planes pairwise (normkit/pairwise.h): a running sum over many planes rounds every term
  // against the whole sum.
  for (int64_t n = 0; n < N; ++n) {
    SA_n[size_t(n)] = math::pairwise_sum<A>(C, [&](int64_t c) { return dmu[size_t(n * C + c)]; });
    SB_n[size_t(n)] = math::pairwise_sum<A>(C, [&](int64_t c) { return ds2[size_t(n * C + c)]; });
  }
  for (int64_t c = 0; c < C; ++c) {
    SA_c[size_t(c)] = math::pairwise_sum<A>(N, [&](int64_t n) { return dmu[size_t(n * C + c)]; });
    SB_c[size_t(c)] = math::pairwise_sum<A>(N, [&](int64_t n) { return ds2[size_t(n * C + c)]; });
    const A sdy = math::pairwise_sum<A>(N, [&](int64_t n) { return Dy[size_t(n * C + c)]; });
    const A sdx = math::pairwise_sum<A>(N, [&](int64_t n) { return Dx[size_t(n * C + c)]; });
    if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, sdy);
    if (a.dweight) param_put<A>(a.dweight, a.dweight_dtype, c, sdx);
  }
  A wm[3], wv[3];
  softmaxes<A>(a.mean_weight, a.var_weight, a.logit_dtype, a.use_in, wm, wv);
  if (a.dmean_weight || a.dvar_weight) {
    math::PairwiseSum<A> sum_m[3], sum_v[3];
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t n = p / C, c = p % C;
      const A mu = mean[p];
      const A s2 = wv[0] * pv[p] + wv[1] * ln_var[n] + wv[2] * bn_var[c];
      const A A_ = dmu[size_t(p)], B_ = ds2[size_t(p)];
      sum_m[0].add(A_ * (pm[p] - mu));
      sum_m[1].add(A_ * (ln_mean[n] - mu));
      sum_m[2].add(A_ * (bn_mean[c] - mu));
      sum_v[0].add(B_ * (pv[p] - s2));
      sum_v[1].add(B_ * (ln_var[n] - s2));
      sum_v[2].add(B_ * (bn_var[c] - s2));
    }
    for (int k = 0; k < 3; ++k) {
      if (a.dmean_weight) param_put<A>(a.dmean_weight, a.dlogit_dtype, k, wm[k] * sum_m[k].result());
      if (a.dvar_weight) param_put<A>(a.dvar_weight, a.dlogit_dtype, k, wv[k] * sum_v[k].result());
    }
  }
  if (!a.dx) return;
  T* dx = static_cast<T*>(a.dx);
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const int64_t base = sh.plane_base(n, c);
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      A ca, cb;
      math::sn_dx_coefs<A>(dmu[size_t(p)], ds2[size_t(p)], SA_n[size_t(n)], SB_n[size_t(n)], SA_c[size_t(c)],
                           SB_c[size_t(c)], wm, wv, pm[p], ln_mean[n], bn_mean[c], N, C, S, a.batch_stats, ca, cb);
      const A r = rstd[p], m = pm[p];
      for (int64_t i = 0; i < S; ++i)
        dx[base + i * step] =
            store<T>(math::sn_dx(load<A>(dy[base + i * step]) * w, load<A>(x[base + i * step]), r, m, ca, cb));
    }
  });
}

}  // namespace

void switchable_norm_forward(const SnForwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    with_plane_step(a.shape.plane_step(), [&](auto step) { forward<decltype(tag)>(a, step); });
  });
}

void switchable_norm_backward(const SnBackwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    with_plane_step(a.shape.plane_step(), [&](auto step) { backward<decltype(tag)>(a, step); });
  });
}

}  // namespace normkit::cpu::NK_ISA

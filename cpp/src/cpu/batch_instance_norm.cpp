// Batch-Instance Normalization on the CPU (detail/batch_instance_norm_args.h).
//
// Forward: planes (n, c) in parallel, each a two-pass lane_sum (mean, then centred squares) into its
// instance moments; then per channel the Chan merge of its N plane moments in n order (the batch
// statistic); then the elementwise apply, planes in parallel. Backward: per plane the sums of dy,
// dy xhat_IN and dy xhat_BN (one pass), per channel their sums over n in n order, then dx per plane.
// Every sum has a fixed order that depends only on the shape, never on the thread count.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/params.h"
#include "cpu/plane_step.h"
#include "cpu/lanes.h"
#include "normkit/math.h"
#include "normkit/pairwise.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::BinBackwardArgs;
using detail::BinForwardArgs;
using detail::BinShape;

constexpr int64_t kTaskElements = 1 << 15;

int64_t grain_of(int64_t S) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(S, 1)); }

template <class T, class Step>
void forward(const BinForwardArgs& a, Step step) {
  using A = acc_t<T>;
  const BinShape& sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  A* mean_in = static_cast<A*>(a.save_mean_in);
  A* rstd_in = static_cast<A*>(a.save_rstd_in);
  A* mean_bn = static_cast<A*>(a.save_mean_bn);
  A* rstd_bn = static_cast<A*>(a.save_rstd_bn);
  const A eps = A(a.eps);
  std::vector<A> m2(size_t(N * C));
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const T* xp = x + sh.plane_base(n, c);
      const A mean = lane_sum<A>(S, [&](int64_t i) { return load<A>(xp[i * step]); }) / A(S);
      const A sq = lane_sum_of_squares<A>(S, [&](int64_t i) { return load<A>(xp[i * step]) - mean; });
      mean_in[p] = mean;
      m2[size_t(p)] = sq;
      rstd_in[p] = math::rstd_from_var(math::biased_var(math::block_moments<A>(S, mean, sq)), eps);
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    if (a.training) {
      // Pairwise over n (normkit/pairwise.h): a running merge of many small planes loses the variance.
      const math::Moments<A> m = math::pairwise_moments<A>(
          N, [&](int64_t n) { return math::block_moments<A>(S, mean_in[n * C + c], m2[size_t(n * C + c)]); });
      mean_bn[c] = m.mean;
      rstd_bn[c] = math::rstd_from_var(math::biased_var(m), eps);
      if (a.running_mean) {
        const A mom = A(a.momentum);
        param_put<A>(a.running_mean, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), m.mean, mom));
        param_put<A>(a.running_var, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_var, a.running_dtype, c, A(0)),
                                          math::unbiased_var(m), mom));
      }
    } else {
      mean_bn[c] = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
      rstd_bn[c] = math::rstd_from_var(param_at<A>(a.running_var, a.running_dtype, c, A(1)), eps);
    }
  }
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const int64_t base = sh.plane_base(n, c);
      const A r = math::bin_clip_rho(param_at<A>(a.rho, a.rho_dtype, c, A(1)));
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      const A b = param_at<A>(a.bias, a.param_dtype, c, A(0));
      const A mb = mean_bn[c], rb = rstd_bn[c], mi = mean_in[p], ri = rstd_in[p];
      for (int64_t i = 0; i < S; ++i)
        y[base + i * step] = store<T>(math::bin_apply(load<A>(x[base + i * step]), mb, rb, mi, ri, r, w, b));
    }
  });
}

template <class T, class Step>
void backward(const BinBackwardArgs& a, Step step) {
  using A = acc_t<T>;
  const BinShape& sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  const A* mean_in = static_cast<const A*>(a.save_mean_in);
  const A* rstd_in = static_cast<const A*>(a.save_rstd_in);
  const A* mean_bn = static_cast<const A*>(a.save_mean_bn);
  const A* rstd_bn = static_cast<const A*>(a.save_rstd_bn);
  // Per plane: sum dy, sum dy xhat_IN, sum dy xhat_BN.
  std::vector<A> sdy(size_t(N * C)), sdi(size_t(N * C)), sdb(size_t(N * C));
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const int64_t base = sh.plane_base(n, c);
      const A mi = mean_in[p], ri = rstd_in[p], mb = mean_bn[c], rb = rstd_bn[c];
      sdy[size_t(p)] = lane_sum<A>(S, [&](int64_t i) { return load<A>(dy[base + i * step]); });
      const auto s2 = lane_sum2<A>(S, [&](int64_t i, A& u, A& g, A& xhat_bn) {
        g = load<A>(dy[base + i * step]);
        const A xv = load<A>(x[base + i * step]);
        u = g * ((xv - mi) * ri);
        xhat_bn = (xv - mb) * rb;
      });
      sdi[size_t(p)] = s2.first;
      sdb[size_t(p)] = s2.second;
    }
  });
  // Per channel, pairwise over n in order.
  std::vector<A> cdy(static_cast<size_t>(C)), cdi(static_cast<size_t>(C)), cdb(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const A s0 = math::pairwise_sum<A>(N, [&](int64_t n) { return sdy[size_t(n * C + c)]; });
    const A s1 = math::pairwise_sum<A>(N, [&](int64_t n) { return sdi[size_t(n * C + c)]; });
    const A s2 = math::pairwise_sum<A>(N, [&](int64_t n) { return sdb[size_t(n * C + c)]; });
    cdy[size_t(c)] = s0;
    cdi[size_t(c)] = s1;
    cdb[size_t(c)] = s2;
    const A rho = param_at<A>(a.rho, a.rho_dtype, c, A(1));
    const A r = math::bin_clip_rho(rho);
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, s0);
    if (a.dweight) param_put<A>(a.dweight, a.dweight_dtype, c, r * s2 + (A(1) - r) * s1);
    if (a.drho) param_put<A>(a.drho, a.drho_dtype, c, math::bin_rho_mask(rho) * w * (s2 - s1));
  }
  if (!a.dx) return;
  T* dx = static_cast<T*>(a.dx);
  const A inv_bn = A(1) / A(N * S), inv_in = A(1) / A(S);
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const int64_t base = sh.plane_base(n, c);
      const A r = math::bin_clip_rho(param_at<A>(a.rho, a.rho_dtype, c, A(1)));
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      const A mi = mean_in[p], ri = rstd_in[p], mb = mean_bn[c], rb = rstd_bn[c];
      const A mg_bn = a.batch_stats ? w * cdy[size_t(c)] * inv_bn : A(0);
      const A mgx_bn = a.batch_stats ? w * cdb[size_t(c)] * inv_bn : A(0);
      const A mg_in = w * sdy[size_t(p)] * inv_in, mgx_in = w * sdi[size_t(p)] * inv_in;
      for (int64_t i = 0; i < S; ++i) {
        const A xv = load<A>(x[base + i * step]);
        const A g = load<A>(dy[base + i * step]) * w;
        dx[base + i * step] =
            store<T>(math::bin_dx(g, (xv - mb) * rb, (xv - mi) * ri, r, rb, ri, mg_bn, mgx_bn, mg_in, mgx_in));
      }
    }
  });
}

}  // namespace

void batch_instance_norm_forward(const BinForwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    with_plane_step(a.shape.plane_step(), [&](auto step) { forward<decltype(tag)>(a, step); });
  });
}

void batch_instance_norm_backward(const BinBackwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    with_plane_step(a.shape.plane_step(), [&](auto step) { backward<decltype(tag)>(a, step); });
  });
}

}  // namespace normkit::cpu::NK_ISA

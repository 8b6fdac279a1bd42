// Batch-Instance Normalization on the CPU (detail/batch_instance_norm_args.h).
//
// Forward: planes (n, c) in parallel, each a two-pass lane_sum (mean, then centred squares) into its
// instance moments; then per channel the Chan merge of its N plane moments in n order (the batch
// statistic); then the elementwise apply, planes in parallel. Backward: per plane the sums of dy,
// dy xhat_IN and dy xhat_BN (one pass), per channel their sums over n in n order, then dx per plane.
// Every sum has a fixed order that depends only on the shape, never on the thread count. Channels
// first, where a channel fits the cache budget, the passes go together per channel
// (cpu/fused_channels.h): the same plane statistics and merges, so the same bits.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/fused_channels.h"
#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "cpu/params.h"
#include "cpu/plane_step.h"
#include "cpu/stream_store.h"
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

template <class Step>
constexpr bool kContiguousPlanes = std::is_same_v<Step, std::integral_constant<int64_t, 1>>;

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
  const bool stream = streams_output(size_t(N * C * S) * sizeof(T));
  // Plane (n, c)'s instance moments, a two-pass lane_sum (mean, then centred squares), saved as its
  // mean and rstd.
  auto plane_moments = [&](int64_t n, int64_t c) {
    const int64_t p = n * C + c;
    const T* xp = x + sh.plane_base(n, c);
    const A mean = lane_sum<A>(S, [&](int64_t i) { return load<A>(xp[i * step]); }) / A(S);
    const A sq = lane_sum_of_squares<A>(S, [&](int64_t i) { return load<A>(xp[i * step]) - mean; });
    const math::Moments<A> m = math::block_moments<A>(S, mean, sq);
    mean_in[p] = mean;
    rstd_in[p] = math::rstd_from_var(math::biased_var(m), eps);
    return m;
  };
  // Channel c's batch statistics from its planes' moments (plane(n)), pairwise over n
  // (normkit/pairwise.h: a running merge of many small planes loses the variance), and the update of
  // its running statistics.
  auto batch_stats = [&](int64_t c, auto&& plane) {
    const math::Moments<A> m = math::pairwise_moments<A>(N, plane);
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
  };
  auto apply_plane = [&](int64_t n, int64_t c) {
    const int64_t p = n * C + c, base = sh.plane_base(n, c);
    const A r = math::bin_clip_rho(param_at<A>(a.rho, a.rho_dtype, c, A(1)));
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    const A b = param_at<A>(a.bias, a.param_dtype, c, A(0));
    const A mb = mean_bn[c], rb = rstd_bn[c], mi = mean_in[p], ri = rstd_in[p];
    auto value = [&](int64_t i) {
      return store<T>(math::bin_apply(load<A>(x[base + i * step]), mb, rb, mi, ri, r, w, b));
    };
    if constexpr (kContiguousPlanes<Step>) {
      write_run(y + base, S, stream, value);
    } else {
      for (int64_t i = 0; i < S; ++i) y[base + i * step] = value(i);
    }
  };
  const int64_t channel_bytes = N * S * int64_t(sizeof(T));
  if constexpr (kContiguousPlanes<Step>) {
    if (a.training && fuse_stats(channel_bytes, C)) {
      fused_channels<math::Moments<A>>(
          N, C, channel_bytes, plane_moments,
          [&](int64_t c, const math::Moments<A>* planes) { batch_stats(c, [&](int64_t n) { return planes[n]; }); },
          apply_plane);
      return;
    }
  }
  std::vector<math::Moments<A>> moments(size_t(N * C));
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) moments[size_t(p)] = plane_moments(p / C, p % C);
  });
  for (int64_t c = 0; c < C; ++c) {
    if (a.training) {
      batch_stats(c, [&](int64_t n) { return moments[size_t(n * C + c)]; });
    } else {
      mean_bn[c] = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
      rstd_bn[c] = math::rstd_from_var(param_at<A>(a.running_var, a.running_dtype, c, A(1)), eps);
    }
  }
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) apply_plane(p / C, p % C);
  });
}

// A plane's (or a channel's) sums of dy, dy xhat_IN and dy xhat_BN.
template <class A>
struct BinSums {
  A dy, dyx_in, dyx_bn;
};

template <class T, class Step>
void backward(const BinBackwardArgs& a, Step step) {
  using A = acc_t<T>;
  const BinShape& sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  const A* mean_in = static_cast<const A*>(a.save_mean_in);
  const A* rstd_in = static_cast<const A*>(a.save_rstd_in);
  const A* mean_bn = static_cast<const A*>(a.save_mean_bn);
  const A* rstd_bn = static_cast<const A*>(a.save_rstd_bn);
  // Per plane and per channel: sum dy, sum dy xhat_IN, sum dy xhat_BN.
  std::vector<BinSums<A>> plane(size_t(N * C)), channel(static_cast<size_t>(C));
  auto plane_sums = [&](int64_t n, int64_t c) {
    const int64_t p = n * C + c, base = sh.plane_base(n, c);
    const A mi = mean_in[p], ri = rstd_in[p], mb = mean_bn[c], rb = rstd_bn[c];
    BinSums<A>& ps = plane[size_t(p)];
    ps.dy = lane_sum<A>(S, [&](int64_t i) { return load<A>(dy[base + i * step]); });
    const auto s2 = lane_sum2<A>(S, [&](int64_t i, A& u, A& g, A& xhat_bn) {
      g = load<A>(dy[base + i * step]);
      const A xv = load<A>(x[base + i * step]);
      u = g * ((xv - mi) * ri);
      xhat_bn = (xv - mb) * rb;
    });
    ps.dyx_in = s2.first;
    ps.dyx_bn = s2.second;
    return ps;
  };
  // Channel c's sums from its planes' (sums_of(n)), pairwise over n in order, and its parameter
  // gradients.
  auto channel_sums = [&](int64_t c, auto&& sums_of) {
    BinSums<A>& cs = channel[size_t(c)];
    cs.dy = math::pairwise_sum<A>(N, [&](int64_t n) { return sums_of(n).dy; });
    cs.dyx_in = math::pairwise_sum<A>(N, [&](int64_t n) { return sums_of(n).dyx_in; });
    cs.dyx_bn = math::pairwise_sum<A>(N, [&](int64_t n) { return sums_of(n).dyx_bn; });
    const A rho = param_at<A>(a.rho, a.rho_dtype, c, A(1));
    const A r = math::bin_clip_rho(rho);
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, cs.dy);
    if (a.dweight) param_put<A>(a.dweight, a.dweight_dtype, c, r * cs.dyx_bn + (A(1) - r) * cs.dyx_in);
    if (a.drho) param_put<A>(a.drho, a.drho_dtype, c, math::bin_rho_mask(rho) * w * (cs.dyx_bn - cs.dyx_in));
  };
  const A inv_bn = A(1) / A(N * S), inv_in = A(1) / A(S);
  const bool stream = streams_output(size_t(N * C * S) * sizeof(T));
  auto dx_plane = [&](int64_t n, int64_t c) {
    const int64_t p = n * C + c, base = sh.plane_base(n, c);
    const A r = math::bin_clip_rho(param_at<A>(a.rho, a.rho_dtype, c, A(1)));
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    const A mi = mean_in[p], ri = rstd_in[p], mb = mean_bn[c], rb = rstd_bn[c];
    const BinSums<A>& cs = channel[size_t(c)];
    const BinSums<A>& ps = plane[size_t(p)];
    const A mg_bn = a.batch_stats ? w * cs.dy * inv_bn : A(0);
    const A mgx_bn = a.batch_stats ? w * cs.dyx_bn * inv_bn : A(0);
    const A mg_in = w * ps.dy * inv_in, mgx_in = w * ps.dyx_in * inv_in;
    auto value = [&](int64_t i) {
      const A xv = load<A>(x[base + i * step]);
      const A g = load<A>(dy[base + i * step]) * w;
      return store<T>(math::bin_dx(g, (xv - mb) * rb, (xv - mi) * ri, r, rb, ri, mg_bn, mgx_bn, mg_in, mgx_in));
    };
    if constexpr (kContiguousPlanes<Step>) {
      write_run(dx + base, S, stream, value);
    } else {
      for (int64_t i = 0; i < S; ++i) dx[base + i * step] = value(i);
    }
  };
  const int64_t channel_bytes = 2 * N * S * int64_t(sizeof(T));  // (dy and x)
  if constexpr (kContiguousPlanes<Step>) {
    if (dx && fuse_stats(channel_bytes, C)) {
      fused_channels<BinSums<A>>(
          N, C, channel_bytes, plane_sums,
          [&](int64_t c, const BinSums<A>* planes) { channel_sums(c, [&](int64_t n) { return planes[n]; }); },
          dx_plane);
      return;
    }
  }
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) plane_sums(p / C, p % C);
  });
  for (int64_t c = 0; c < C; ++c) channel_sums(c, [&](int64_t n) { return plane[size_t(n * C + c)]; });
  if (!dx) return;
  parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) dx_plane(p / C, p % C);
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

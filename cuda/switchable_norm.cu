// Switchable Normalization on CUDA (detail/switchable_norm_args.h). Simple and deterministic: one
// block per (n, c) plane for the moments (two passes) and the elementwise work, small merge kernels
// (one thread per n and per c, pairwise in a fixed order as on the CPU; one block with fixed strided
// splits for the logit gradients). No float atomics; the backward's per-plane sums live in a
// stream-ordered workspace.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "params.cuh"
#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::cuda {
namespace {

using detail::SnBackwardArgs;
using detail::SnForwardArgs;
using detail::SnSaved;
using detail::SnShape;

constexpr int kThreads = 256;

template <class A>
__device__ void softmaxes(const void* mw, const void* vw, DType t, bool use_in, A* wm, A* wv) {
  math::sn_softmax<A>(param_at<A>(mw, t, 0, A(0)), param_at<A>(mw, t, 1, A(0)), param_at<A>(mw, t, 2, A(0)),
                      use_in, wm);
  math::sn_softmax<A>(param_at<A>(vw, t, 0, A(0)), param_at<A>(vw, t, 1, A(0)), param_at<A>(vw, t, 2, A(0)),
                      use_in, wv);
}

template <class T>
__global__ void __launch_bounds__(kThreads) moments_kernel(SnForwardArgs a) {
  using A = acc_t<T>;
  const SnShape sh = a.shape;
  const int64_t C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  const SnSaved sv{sh.N, C};
  A* saved = static_cast<A*>(a.saved);
  for (int64_t p = blockIdx.x; p < sh.N * C; p += gridDim.x) {
    const int64_t base = sh.plane_base(p / C, p % C);
    A s = 0;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) s += load<A>(x[base + i * step]);
    const A mean = block_sum(s) / A(S);
    A q = 0;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
      const A d = load<A>(x[base + i * step]) - mean;
      q += d * d;
    }
    q = block_sum(q);
    if (threadIdx.x == 0) {
      saved[sv.pmean() + p] = mean;
      saved[sv.pvar() + p] = q / A(S);
    }
  }
}

template <class A>
__global__ void group_stats_kernel(SnForwardArgs a) {
  const int64_t N = a.shape.N, C = a.shape.C;
  const SnSaved sv{N, C};
  A* saved = static_cast<A*>(a.saved);
  const A* pm = saved + sv.pmean();
  const A* pv = saved + sv.pvar();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N || i < C;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i < N) math::sn_group_stats<A>(pm + i * C, pv + i * C, C, 1, saved[sv.ln_mean() + i], saved[sv.ln_var() + i]);
    if (i < C) {
      A& bm = saved[sv.bn_mean() + i];
      A& bv = saved[sv.bn_var() + i];
      if (a.training) {
        math::sn_group_stats<A>(pm + i, pv + i, N, C, bm, bv);
        if (a.running_mean) {
          const A mom = A(a.momentum);
          param_put<A>(a.running_mean, a.running_dtype, i,
                       math::running_update(param_at<A>(a.running_mean, a.running_dtype, i, A(0)), bm, mom));
          param_put<A>(a.running_var, a.running_dtype, i,
                       math::running_update(param_at<A>(a.running_var, a.running_dtype, i, A(0)), bv, mom));
        }
      } else {
        bm = param_at<A>(a.running_mean, a.running_dtype, i, A(0));
        bv = param_at<A>(a.running_var, a.running_dtype, i, A(1));
      }
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) apply_kernel(SnForwardArgs a) {
  using A = acc_t<T>;
  const SnShape sh = a.shape;
  const int64_t C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const SnSaved sv{sh.N, C};
  A* saved = static_cast<A*>(a.saved);
  A wm[3], wv[3];
  softmaxes<A>(a.mean_weight, a.var_weight, a.logit_dtype, a.use_in, wm, wv);
  for (int64_t p = blockIdx.x; p < sh.N * C; p += gridDim.x) {
    const int64_t n = p / C, c = p % C;
    const int64_t base = sh.plane_base(n, c);
    const A mu = wm[0] * saved[sv.pmean() + p] + wm[1] * saved[sv.ln_mean() + n] + wm[2] * saved[sv.bn_mean() + c];
    const A s2 = wv[0] * saved[sv.pvar() + p] + wv[1] * saved[sv.ln_var() + n] + wv[2] * saved[sv.bn_var() + c];
    const A r = math::rstd_from_var(s2, A(a.eps));
    if (threadIdx.x == 0) {
      saved[sv.mean() + p] = mu;
      saved[sv.rstd() + p] = r;
    }
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    const A b = param_at<A>(a.bias, a.param_dtype, c, A(0));
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x)
      y[base + i * step] = store<T>(math::sn_apply(load<A>(x[base + i * step]), mu, r, w, b));
  }
}

// Workspace of the backward: Dy, Dx, dmu, ds2 [N C] | SA_n, SB_n [N] | SA_c, SB_c [C].
struct Work {
  int64_t N, C;
  __host__ __device__ int64_t Dy() const { return 0; }
  __host__ __device__ int64_t Dx() const { return N * C; }
  __host__ __device__ int64_t dmu() const { return 2 * N * C; }
  __host__ __device__ int64_t ds2() const { return 3 * N * C; }
  __host__ __device__ int64_t SA_n() const { return 4 * N * C; }
  __host__ __device__ int64_t SB_n() const { return 4 * N * C + N; }
  __host__ __device__ int64_t SA_c() const { return 4 * N * C + 2 * N; }
  __host__ __device__ int64_t SB_c() const { return 4 * N * C + 2 * N + C; }
  __host__ __device__ int64_t size() const { return 4 * N * C + 2 * N + 2 * C; }
};

template <class T>
__global__ void __launch_bounds__(kThreads) plane_sums_kernel(SnBackwardArgs a, acc_t<T>* work) {
  using A = acc_t<T>;
  const SnShape sh = a.shape;
  const int64_t C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  const SnSaved sv{sh.N, C};
  const Work wk{sh.N, C};
  const A* saved = static_cast<const A*>(a.saved);
  for (int64_t p = blockIdx.x; p < sh.N * C; p += gridDim.x) {
    const int64_t c = p % C;
    const int64_t base = sh.plane_base(p / C, c);
    const A mu = saved[sv.mean() + p], r = saved[sv.rstd() + p];
    A s0 = 0, s1 = 0;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
      const A g = load<A>(dy[base + i * step]);
      s0 += g;
      s1 += g * ((load<A>(x[base + i * step]) - mu) * r);
    }
    block_sum2(s0, s1);
    if (threadIdx.x == 0) {
      const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
      work[wk.Dy() + p] = s0;
      work[wk.Dx() + p] = s1;
      work[wk.dmu() + p] = math::sn_dmean(r, w, s0);
      work[wk.ds2() + p] = math::sn_dvar(r, w, s1);
    }
  }
}

// The plane sums over c per sample and over n per channel, pairwise (math::pairwise_sum) as on the
// CPU: a running sum over many planes rounds every term against the whole sum.
template <class A>
__global__ void group_sums_kernel(SnBackwardArgs a, A* work) {
  const int64_t N = a.shape.N, C = a.shape.C;
  const Work wk{N, C};
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N || i < C;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i < N) {
      const A* dmu = work + wk.dmu() + i * C;
      const A* ds2 = work + wk.ds2() + i * C;
      work[wk.SA_n() + i] = math::pairwise_sum<A>(C, [&](int64_t c) { return dmu[c]; });
      work[wk.SB_n() + i] = math::pairwise_sum<A>(C, [&](int64_t c) { return ds2[c]; });
    }
    if (i < C) {
      const A* dmu = work + wk.dmu() + i;
      const A* ds2 = work + wk.ds2() + i;
      const A* Dy = work + wk.Dy() + i;
      const A* Dx = work + wk.Dx() + i;
      work[wk.SA_c() + i] = math::pairwise_sum<A>(N, [&](int64_t n) { return dmu[n * C]; });
      work[wk.SB_c() + i] = math::pairwise_sum<A>(N, [&](int64_t n) { return ds2[n * C]; });
      const A sdy = math::pairwise_sum<A>(N, [&](int64_t n) { return Dy[n * C]; });
      const A sdx = math::pairwise_sum<A>(N, [&](int64_t n) { return Dx[n * C]; });
      if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, i, sdy);
      if (a.dweight) param_put<A>(a.dweight, a.dweight_dtype, i, sdx);
    }
  }
}

// One block: d logit_j = w_j sum_p dstat_p (stat_j(p) - stat(p)).
template <class A>
__global__ void __launch_bounds__(kThreads) logits_kernel(SnBackwardArgs a, const A* work) {
  const int64_t N = a.shape.N, C = a.shape.C;
  const SnSaved sv{N, C};
  const Work wk{N, C};
  const A* saved = static_cast<const A*>(a.saved);
  A wm[3], wv[3];
  softmaxes<A>(a.mean_weight, a.var_weight, a.logit_dtype, a.use_in, wm, wv);
  A g[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t p = threadIdx.x; p < N * C; p += blockDim.x) {
    const int64_t n = p / C, c = p % C;
    const A mu = saved[sv.mean() + p];
    const A pv = saved[sv.pvar() + p], lv = saved[sv.ln_var() + n], bv = saved[sv.bn_var() + c];
    const A s2 = wv[0] * pv + wv[1] * lv + wv[2] * bv;
    const A da = work[wk.dmu() + p], db = work[wk.ds2() + p];
    g[0] += da * (saved[sv.pmean() + p] - mu);
    g[1] += da * (saved[sv.ln_mean() + n] - mu);
    g[2] += da * (saved[sv.bn_mean() + c] - mu);
    g[3] += db * (pv - s2);
    g[4] += db * (lv - s2);
    g[5] += db * (bv - s2);
  }
  for (int k = 0; k < 6; ++k) g[k] = block_sum(g[k]);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 3; ++k) {
      if (a.dmean_weight) param_put<A>(a.dmean_weight, a.dlogit_dtype, k, wm[k] * g[k]);
      if (a.dvar_weight) param_put<A>(a.dvar_weight, a.dlogit_dtype, k, wv[k] * g[3 + k]);
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) dx_kernel(SnBackwardArgs a, const acc_t<T>* work) {
  using A = acc_t<T>;
  const SnShape sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  const SnSaved sv{N, C};
  const Work wk{N, C};
  const A* saved = static_cast<const A*>(a.saved);
  A wm[3], wv[3];
  softmaxes<A>(a.mean_weight, a.var_weight, a.logit_dtype, a.use_in, wm, wv);
  for (int64_t p = blockIdx.x; p < N * C; p += gridDim.x) {
    const int64_t n = p / C, c = p % C;
    const int64_t base = sh.plane_base(n, c);
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    const A pm = saved[sv.pmean() + p], r = saved[sv.rstd() + p];
    A ca, cb;
    math::sn_dx_coefs<A>(work[wk.dmu() + p], work[wk.ds2() + p], work[wk.SA_n() + n], work[wk.SB_n() + n],
                         work[wk.SA_c() + c], work[wk.SB_c() + c], wm, wv, pm, saved[sv.ln_mean() + n],
                         saved[sv.bn_mean() + c], N, C, S, a.batch_stats, ca, cb);
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x)
      dx[base + i * step] =
          store<T>(math::sn_dx(load<A>(dy[base + i * step]) * w, load<A>(x[base + i * step]), r, pm, ca, cb));
  }
}

unsigned grid_for(int64_t n) { return unsigned(std::max<int64_t>(1, std::min<int64_t>(n, int64_t(1) << 20))); }

}  // namespace

void switchable_norm_forward(const SnForwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t planes = args.shape.N * args.shape.C;
  const int64_t groups = std::max(args.shape.N, args.shape.C);
  dispatch_float(args.dtype, [&](auto tag) {
    using T = decltype(tag);
    moments_kernel<T><<<grid_for(planes), kThreads, 0, s>>>(args);
    group_stats_kernel<acc_t<T>><<<grid_for((groups + kThreads - 1) / kThreads), kThreads, 0, s>>>(args);
    apply_kernel<T><<<grid_for(planes), kThreads, 0, s>>>(args);
  });
  check_launch("switchable_norm forward");
}

void switchable_norm_backward(const SnBackwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t planes = args.shape.N * args.shape.C;
  const int64_t groups = std::max(args.shape.N, args.shape.C);
  dispatch_float(args.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const Work wk{args.shape.N, args.shape.C};
    std::shared_ptr<void> holder = allocate(size_t(wk.size()) * sizeof(A), stream);
    A* work = static_cast<A*>(holder.get());
    plane_sums_kernel<T><<<grid_for(planes), kThreads, 0, s>>>(args, work);
    group_sums_kernel<A><<<grid_for((groups + kThreads - 1) / kThreads), kThreads, 0, s>>>(args, work);
    if (args.dmean_weight || args.dvar_weight) logits_kernel<A><<<1, kThreads, 0, s>>>(args, work);
    if (args.dx) dx_kernel<T><<<grid_for(planes), kThreads, 0, s>>>(args, work);
  });
  check_launch("switchable_norm backward");
}

}  // namespace normkit::cuda

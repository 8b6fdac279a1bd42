// Batch-Instance Normalization on CUDA (detail/batch_instance_norm_args.h). Simple and deterministic:
// one block per channel walks the N planes of that channel in n order. Per plane, a fixed strided
// split over the threads and the deterministic block reductions of block_reduce.cuh give the instance
// moments (two passes: mean, then centred squares); the channel's batch moments merge the plane
// moments pairwise in n order (math::PairwiseMoments, normkit/pairwise.h), and the backward's channel
// sums add the plane sums pairwise (math::PairwiseSum): the CPU's summation trees. Every thread keeps
// the same accumulator (the block reductions hand every thread the same bits). No float atomics, no
// workspace: the backward recomputes the per-plane sums of its second pass instead of storing them.
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

using detail::BinBackwardArgs;
using detail::BinForwardArgs;
using detail::BinShape;

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(BinForwardArgs a) {
  using A = acc_t<T>;
  const BinShape sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  A* mean_in = static_cast<A*>(a.save_mean_in);
  A* rstd_in = static_cast<A*>(a.save_rstd_in);
  const A eps = A(a.eps);
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    math::PairwiseMoments<A> merged;  // a running merge of many small planes loses the variance
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = sh.plane_base(n, c);
      A s = 0;
      for (int64_t i = threadIdx.x; i < S; i += blockDim.x) s += load<A>(x[base + i * step]);
      const A mean = block_sum(s) / A(S);
      A q = 0;
      for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
        const A d = load<A>(x[base + i * step]) - mean;
        q += d * d;
      }
      q = block_sum(q);
      const math::Moments<A> pm = math::block_moments<A>(S, mean, q);
      if (threadIdx.x == 0) {
        mean_in[n * C + c] = mean;
        rstd_in[n * C + c] = math::rstd_from_var(math::biased_var(pm), eps);
      }
      merged.add(pm);
    }
    const math::Moments<A> m = merged.result();
    A mb, rb;
    if (a.training) {
      mb = m.mean;
      rb = math::rstd_from_var(math::biased_var(m), eps);
      if (a.running_mean && threadIdx.x == 0) {
        const A mom = A(a.momentum);
        param_put<A>(a.running_mean, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), m.mean, mom));
        param_put<A>(a.running_var, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_var, a.running_dtype, c, A(0)),
                                          math::unbiased_var(m), mom));
      }
    } else {
      mb = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
      rb = math::rstd_from_var(param_at<A>(a.running_var, a.running_dtype, c, A(1)), eps);
    }
    if (threadIdx.x == 0) {
      static_cast<A*>(a.save_mean_bn)[c] = mb;
      static_cast<A*>(a.save_rstd_bn)[c] = rb;
    }
    __syncthreads();
    const A r = math::bin_clip_rho(param_at<A>(a.rho, a.rho_dtype, c, A(1)));
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    const A b = param_at<A>(a.bias, a.param_dtype, c, A(0));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = sh.plane_base(n, c);
      const A mi = mean_in[n * C + c], ri = rstd_in[n * C + c];
      for (int64_t i = threadIdx.x; i < S; i += blockDim.x)
        y[base + i * step] = store<T>(math::bin_apply(load<A>(x[base + i * step]), mb, rb, mi, ri, r, w, b));
    }
    __syncthreads();
  }
}

// The per-plane sums of dy and dy xhat_IN, dy xhat_BN (returned to every thread).
template <class T, class A>
__device__ void plane_sums(const T* dy, const T* x, int64_t base, int64_t step, int64_t S, A mi, A ri, A mb, A rb,
                           A& sdy, A& sdi, A& sdb) {
  A s0 = 0, s1 = 0, s2 = 0;
  for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
    const A g = load<A>(dy[base + i * step]);
    const A xv = load<A>(x[base + i * step]);
    s0 += g;
    s1 += g * ((xv - mi) * ri);
    s2 += g * ((xv - mb) * rb);
  }
  sdy = block_sum(s0);
  block_sum2(s1, s2);
  sdi = s1;
  sdb = s2;
}

template <class T>
__global__ void __launch_bounds__(kThreads) backward_kernel(BinBackwardArgs a) {
  using A = acc_t<T>;
  const BinShape sh = a.shape;
  const int64_t N = sh.N, C = sh.C, S = sh.S, step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);
  const A* mean_in = static_cast<const A*>(a.save_mean_in);
  const A* rstd_in = static_cast<const A*>(a.save_rstd_in);
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const A mb = static_cast<const A*>(a.save_mean_bn)[c], rb = static_cast<const A*>(a.save_rstd_bn)[c];
    math::PairwiseSum<A> sum_dy, sum_di, sum_db;  // over n, as on the CPU
    for (int64_t n = 0; n < N; ++n) {
      A sdy, sdi, sdb;
      plane_sums<T, A>(dy, x, sh.plane_base(n, c), step, S, mean_in[n * C + c], rstd_in[n * C + c], mb, rb, sdy,
                       sdi, sdb);
      sum_dy.add(sdy);
      sum_di.add(sdi);
      sum_db.add(sdb);
    }
    const A cdy = sum_dy.result(), cdi = sum_di.result(), cdb = sum_db.result();
    const A rho = param_at<A>(a.rho, a.rho_dtype, c, A(1));
    const A r = math::bin_clip_rho(rho);
    const A w = param_at<A>(a.weight, a.param_dtype, c, A(1));
    if (threadIdx.x == 0) {
      if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, cdy);
      if (a.dweight) param_put<A>(a.dweight, a.dweight_dtype, c, r * cdb + (A(1) - r) * cdi);
      if (a.drho) param_put<A>(a.drho, a.drho_dtype, c, math::bin_rho_mask(rho) * w * (cdb - cdi));
    }
    if (a.dx) {
      T* dx = static_cast<T*>(a.dx);
      const A inv_bn = A(1) / A(N * S), inv_in = A(1) / A(S);
      const A mg_bn = a.batch_stats ? w * cdy * inv_bn : A(0);
      const A mgx_bn = a.batch_stats ? w * cdb * inv_bn : A(0);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t base = sh.plane_base(n, c);
        const A mi = mean_in[n * C + c], ri = rstd_in[n * C + c];
        A sdy, sdi, sdb;
        plane_sums<T, A>(dy, x, base, step, S, mi, ri, mb, rb, sdy, sdi, sdb);
        const A mg_in = w * sdy * inv_in, mgx_in = w * sdi * inv_in;
        for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
          const A xv = load<A>(x[base + i * step]);
          const A g = load<A>(dy[base + i * step]) * w;
          dx[base + i * step] =
              store<T>(math::bin_dx(g, (xv - mb) * rb, (xv - mi) * ri, r, rb, ri, mg_bn, mgx_bn, mg_in, mgx_in));
        }
      }
    }
    __syncthreads();
  }
}

unsigned grid_for(int64_t C) { return unsigned(std::min<int64_t>(C, int64_t(1) << 20)); }

}  // namespace

void batch_instance_norm_forward(const BinForwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) {
    forward_kernel<decltype(tag)><<<grid_for(args.shape.C), kThreads, 0, s>>>(args);
  });
  check_launch("batch_instance_norm forward_kernel");
}

void batch_instance_norm_backward(const BinBackwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) {
    backward_kernel<decltype(tag)><<<grid_for(args.shape.C), kThreads, 0, s>>>(args);
  });
  check_launch("batch_instance_norm backward_kernel");
}

}  // namespace normkit::cuda

// Mean-only BatchNorm on CUDA (detail/mean_only_batch_norm_args.h). Simple and deterministic: one
// block per channel; each thread sums a fixed strided subset of every plane of the channel (n in
// order), then one block reduction (block_reduce.cuh) gives the channel sum. No float atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "params.cuh"
#include "normkit/dtype.h"
#include "normkit/math.h"
#include "normkit/spectral_norm_math.h"

namespace normkit::cuda {
namespace {

using detail::MobnBackwardArgs;
using detail::MobnForwardArgs;
using detail::MobnShape;

constexpr int kThreads = 256;

// The sum over n and s of channel c of t (returned to every thread).
template <class T, class A>
__device__ A channel_sum(const T* t, const MobnShape& sh, int64_t c) {
  const int64_t step = sh.plane_step();
  A s = 0;
  for (int64_t n = 0; n < sh.N; ++n) {
    const int64_t base = sh.plane_base(n, c);
    for (int64_t i = threadIdx.x; i < sh.S; i += blockDim.x) s += load<A>(t[base + i * step]);
  }
  return block_sum(s);
}

template <class T>
__global__ void __launch_bounds__(kThreads) forward_kernel(MobnForwardArgs a) {
  using A = acc_t<T>;
  const MobnShape sh = a.shape;
  const int64_t step = sh.plane_step();
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  for (int64_t c = blockIdx.x; c < sh.C; c += gridDim.x) {
    A mean;
    if (a.training) {
      mean = channel_sum<T, A>(x, sh, c) / A(sh.N * sh.S);
      if (a.running_mean && threadIdx.x == 0)
        param_put<A>(a.running_mean, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), mean, A(a.momentum)));
    } else {
      mean = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
    }
    if (threadIdx.x == 0) static_cast<A*>(a.save_mean)[c] = mean;
    const A b = param_at<A>(a.bias, a.bias_dtype, c, A(0));
    for (int64_t n = 0; n < sh.N; ++n) {
      const int64_t base = sh.plane_base(n, c);
      for (int64_t i = threadIdx.x; i < sh.S; i += blockDim.x)
        y[base + i * step] = store<T>(math::mobn_apply(load<A>(x[base + i * step]), mean, b));
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) backward_kernel(MobnBackwardArgs a) {
  using A = acc_t<T>;
  const MobnShape sh = a.shape;
  const int64_t step = sh.plane_step();
  const T* dy = static_cast<const T*>(a.dy);
  for (int64_t c = blockIdx.x; c < sh.C; c += gridDim.x) {
    A mean_dy = 0;
    if (a.dbias || a.training) {
      const A s = channel_sum<T, A>(dy, sh, c);
      if (a.dbias && threadIdx.x == 0) param_put<A>(a.dbias, a.dbias_dtype, c, s);
      if (a.training) mean_dy = s / A(sh.N * sh.S);
    }
    if (!a.dx) continue;
    T* dx = static_cast<T*>(a.dx);
    for (int64_t n = 0; n < sh.N; ++n) {
      const int64_t base = sh.plane_base(n, c);
      for (int64_t i = threadIdx.x; i < sh.S; i += blockDim.x)
        dx[base + i * step] = store<T>(math::mobn_dx(load<A>(dy[base + i * step]), mean_dy));
    }
  }
}

unsigned grid_for(int64_t C) { return unsigned(std::min<int64_t>(C, int64_t(1) << 20)); }

}  // namespace

void mean_only_batch_norm_forward(const MobnForwardArgs& args, void* stream) {
  if (args.shape.C == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) {
    forward_kernel<decltype(tag)><<<grid_for(args.shape.C), kThreads, 0, s>>>(args);
  });
  check_launch("mean_only_batch_norm forward_kernel");
}

void mean_only_batch_norm_backward(const MobnBackwardArgs& args, void* stream) {
  if (args.shape.C == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) {
    backward_kernel<decltype(tag)><<<grid_for(args.shape.C), kThreads, 0, s>>>(args);
  });
  check_launch("mean_only_batch_norm backward_kernel");
}

}  // namespace normkit::cuda

// WeightNorm forward/backward on CUDA: one block per row (detail/weight_norm_args.h), each thread
// summing a fixed strided subset and a deterministic block reduction (block_reduce.cuh), so results
// do not depend on scheduling. All per-element math goes through normkit/math.h, as on the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::cuda {
namespace {

using detail::WeightNormBackwardArgs;
using detail::WeightNormForwardArgs;

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride over rows beyond this

unsigned grid_for(int64_t rows) { return unsigned(std::min(rows, kMaxGrid)); }

template <class T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ v_all, const T* __restrict__ g, T* __restrict__ w_all,
                   acc_t<T>* __restrict__ norms, int64_t D, int64_t R) {
  using A = acc_t<T>;
  for (int64_t d = blockIdx.x; d < D; d += gridDim.x) {  // uniform per block
    const T* v = v_all + d * R;
    T* w = w_all + d * R;
    A sq = 0;
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x) {
      const A x = load<A>(v[i]);
      sq += x * x;
    }
    sq = block_sum(sq);
    const A n = math::weight_norm_norm(sq);
    if (threadIdx.x == 0) norms[d] = n;
    const A scale = math::weight_norm_scale(load<A>(g[d]), n);
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x) w[i] = store<T>(load<A>(v[i]) * scale);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ dw_all, const T* __restrict__ v_all, const T* __restrict__ g,
                    const acc_t<T>* __restrict__ norms, T* __restrict__ dv_all, T* __restrict__ dg, int64_t D,
                    int64_t R) {
  using A = acc_t<T>;
  for (int64_t d = blockIdx.x; d < D; d += gridDim.x) {
    const T* v = v_all + d * R;
    const T* dw = dw_all + d * R;
    T* dv = dv_all + d * R;
    A dot = 0;
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x) dot += load<A>(dw[i]) * load<A>(v[i]);
    dot = block_sum(dot);
    const A n = norms[d];
    if (threadIdx.x == 0) dg[d] = store<T>(math::weight_norm_dg(dot, n));
    const A scale = math::weight_norm_scale(load<A>(g[d]), n);
    const A coef = math::weight_norm_coef(dot, n);
    for (int64_t i = threadIdx.x; i < R; i += blockDim.x)
      dv[i] = store<T>(math::weight_norm_dv(load<A>(dw[i]), load<A>(v[i]), scale, coef));
  }
}

template <class T>
void forward(const WeightNormForwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  forward_kernel<T><<<grid_for(a.shape.D), kThreads, 0, st>>>(
      static_cast<const T*>(a.v), static_cast<const T*>(a.g), static_cast<T*>(a.w), static_cast<A*>(a.norms),
      a.shape.D, a.shape.R);
  check_launch("weight_norm forward_kernel");
}

template <class T>
void backward(const WeightNormBackwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  backward_kernel<T><<<grid_for(a.shape.D), kThreads, 0, st>>>(
      static_cast<const T*>(a.dw), static_cast<const T*>(a.v), static_cast<const T*>(a.g),
      static_cast<const A*>(a.norms), static_cast<T*>(a.dv), static_cast<T*>(a.dg), a.shape.D, a.shape.R);
  check_launch("weight_norm backward_kernel");
}

}  // namespace

void weight_norm_forward(const WeightNormForwardArgs& args, void* stream) {
  if (args.shape.D == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { forward<decltype(tag)>(args, s); });
}

void weight_norm_backward(const WeightNormBackwardArgs& args, void* stream) {
  if (args.shape.D == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { backward<decltype(tag)>(args, s); });
}

}  // namespace normkit::cuda

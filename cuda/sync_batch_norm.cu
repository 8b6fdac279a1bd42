// SyncBatchNorm's per-channel steps around the all-reduces on CUDA: one small kernel each, calling the
// per-channel functions of detail/sync_batch_norm_steps.h that the CPU path calls too. Everything is
// queued on the caller's stream; the only host synchronisation is copy_to_host (runtime.cu), which the dispatch
// layer uses for the (rare) checks that need a value on the host.
#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/detail/sync_batch_norm_steps.h"

namespace normkit::cuda {
namespace {

constexpr int kThreads = 256;

dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return dim3(unsigned(blocks < 1024 ? (blocks > 0 ? blocks : 1) : 1024));
}

#define NK_CHANNEL_LOOP(c, C) \
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < (C); c += int64_t(gridDim.x) * blockDim.x)

template <class A>
__global__ void __launch_bounds__(kThreads)
    pack_forward_kernel(const A* __restrict__ moments, int64_t C, double count, double* __restrict__ payload) {
  NK_CHANNEL_LOOP(c, C) detail::sync_pack_moments(c, C, count, moments, payload);
}

template <class A, class P>
__global__ void __launch_bounds__(kThreads)
    finish_forward_kernel(const double* __restrict__ payload, int64_t C, A momentum, A* __restrict__ mean,
                          A* __restrict__ var, P* __restrict__ rm, P* __restrict__ rv) {
  NK_CHANNEL_LOOP(c, C) detail::sync_finish_moments(c, C, payload, momentum, mean, var, rm, rv);
}

__global__ void header_kernel(detail::SyncHeader h, double* __restrict__ payload) {
  detail::sync_write_header(h, payload);
}

template <class O>
__global__ void __launch_bounds__(kThreads)
    cast_kernel(const double* __restrict__ src, int64_t C, O* __restrict__ out) {
  NK_CHANNEL_LOOP(c, C) out[c] = store<O>(src[c]);
}

template <class A, class W>
__global__ void __launch_bounds__(kThreads)
    coefficients_kernel(const double* __restrict__ payload, int64_t C, const W* __restrict__ w, A* __restrict__ coef) {
  NK_CHANNEL_LOOP(c, C) detail::sync_dx_coefficients(c, C, payload, w, coef);
}

}  // namespace

void sync_pack_forward(const void* moments, DType acc, int64_t C, double count, double* payload, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    pack_forward_kernel<A><<<grid_for(C), kThreads, 0, st>>>(static_cast<const A*>(moments), C, count, payload);
  });
  check_launch("sync pack_forward_kernel");
}

void sync_finish_forward(const double* payload, int64_t C, DType acc, double momentum, void* mean, void* var,
                         void* running_mean, void* running_var, DType running_dtype, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    dispatch_float(running_dtype, [&](auto p) {
      using P = decltype(p);
      finish_forward_kernel<A, P><<<grid_for(C), kThreads, 0, st>>>(
          payload, C, A(momentum), static_cast<A*>(mean), static_cast<A*>(var), static_cast<P*>(running_mean),
          static_cast<P*>(running_var));
    });
  });
  check_launch("sync finish_forward_kernel");
}

void sync_write_header(const detail::SyncHeader& h, double* payload, void* stream) {
  header_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream)>>>(h, payload);
  check_launch("sync header_kernel");
}

void sync_cast(const double* src, int64_t C, void* out, DType out_dtype, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_float(out_dtype, [&](auto o) {
    using O = decltype(o);
    cast_kernel<O><<<grid_for(C), kThreads, 0, st>>>(src, C, static_cast<O*>(out));
  });
  check_launch("sync cast_kernel");
}

void sync_dx_coefficients(const double* payload, int64_t C, const void* weight, DType weight_dtype, DType acc,
                          void* coefficients, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    dispatch_float(weight_dtype, [&](auto w) {
      using W = decltype(w);
      coefficients_kernel<A, W><<<grid_for(C), kThreads, 0, st>>>(payload, C, static_cast<const W*>(weight),
                                                                   static_cast<A*>(coefficients));
    });
  });
  check_launch("sync coefficients_kernel");
}

}  // namespace normkit::cuda

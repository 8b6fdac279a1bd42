// SyncBatchNorm's per-channel steps around the all-reduces on CUDA: one small kernel each, calling the
// per-channel functions of detail/sync_batch_norm_steps.h that the CPU path calls too. Everything is
// queued on the caller's stream; the only host synchronisation is copy_to_host, which the dispatch
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
    pack_forward_kernel(const A* __restrict__ moments, int64_t C, detail::SyncHeader h, double* __restrict__ payload) {
  NK_CHANNEL_LOOP(c, C) detail::sync_pack_moments(c, C, h.count, moments, payload);
  if (blockIdx.x == 0 && threadIdx.x == 0) detail::sync_write_header(h, payload);
}

template <class A, class P>
__global__ void __launch_bounds__(kThreads)
    finish_forward_kernel(const double* __restrict__ payload, int64_t C, A momentum, A* __restrict__ mean,
                          A* __restrict__ var, P* __restrict__ rm, P* __restrict__ rv) {
  NK_CHANNEL_LOOP(c, C) detail::sync_finish_moments(c, C, payload, momentum, mean, var, rm, rv);
}

template <class O>
__global__ void __launch_bounds__(kThreads)
    pack_backward_kernel(int64_t C, detail::SyncHeader h, double* __restrict__ payload, O* __restrict__ dweight,
                         O* __restrict__ dbias) {
  NK_CHANNEL_LOOP(c, C) detail::sync_local_gradients(c, C, payload, dweight, dbias);
  if (blockIdx.x == 0 && threadIdx.x == 0) detail::sync_write_header(h, payload);
}

template <class A, class W>
__global__ void __launch_bounds__(kThreads)
    coefficients_kernel(const double* __restrict__ payload, int64_t C, const W* __restrict__ w, A* __restrict__ coef) {
  NK_CHANNEL_LOOP(c, C) detail::sync_dx_coefficients(c, C, payload, w, coef);
}

// A = float or double (the accumulation dtype).
template <class Fn>
void dispatch_acc(DType acc, Fn&& fn) {
  if (acc == DType::Float64)
    fn(double{});
  else
    fn(float{});
}

}  // namespace

void sync_pack_forward(const void* moments, DType acc, int64_t C, const detail::SyncHeader& h, double* payload,
                       void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    pack_forward_kernel<A><<<grid_for(C), kThreads, 0, st>>>(static_cast<const A*>(moments), C, h, payload);
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
      finish_forward_kernel<A, P><<<grid_for(C), kThreads, 0, st>>>(payload, C, A(momentum), static_cast<A*>(mean),
                                                                     static_cast<A*>(var), static_cast<P*>(running_mean),
                                                                     static_cast<P*>(running_var));
    });
  });
  check_launch("sync finish_forward_kernel");
}

void sync_pack_backward(int64_t C, const detail::SyncHeader& h, double* payload, void* dweight, void* dbias,
                        DType grad_dtype, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  dispatch_float(grad_dtype, [&](auto o) {
    using O = decltype(o);
    pack_backward_kernel<O><<<grid_for(C), kThreads, 0, st>>>(C, h, payload, static_cast<O*>(dweight),
                                                              static_cast<O*>(dbias));
  });
  check_launch("sync pack_backward_kernel");
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

// LocalResponseNorm forward/backward on CUDA: one thread per output element, walking its channel
// window (see detail/lrn_args.h). All per-element math goes through normkit/math.h, the functions the
// CPU kernels use. Channels first and channels last differ only in the distance between channels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::cuda {
namespace {

using detail::Layout;
using detail::LrnBackwardArgs;
using detail::LrnForwardArgs;
using detail::LrnParams;
using detail::LrnShape;

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride loops cover the rest

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
dim3 grid_for(int64_t n) { return dim3(unsigned(std::min(ceil_div(n, kThreads), kMaxGrid))); }

// Element indexing: element idx is channel c = (idx / inner) % C, and its channel c' sibling lives at
// idx + (c' - c) * inner (inner = S channels first, 1 channels last).
struct Geometry {
  int64_t numel, C, inner;
  int64_t size;
};

Geometry geometry_of(const LrnShape& s, int64_t size) {
  return {s.numel(), s.C, s.layout == Layout::NCS ? s.S : 1, size};
}

template <class A>
struct Coeffs {
  A alpha_over_size, k, beta, coef;
  bool fast;
};

template <class A>
Coeffs<A> coeffs_of(const LrnParams& p) {
  return {A(p.alpha / double(p.size)), A(p.k), A(p.beta), A(2.0 * p.alpha * p.beta / double(p.size)),
          p.beta == 0.75};
}

// The scale s of the channel of element idx (base: the element of channel 0 of its column).
template <class T, class A>
__device__ __forceinline__ A window_scale(const T* __restrict__ x, int64_t base, int64_t c, const Geometry& g,
                                          const Coeffs<A>& k) {
  const int64_t lo = max(int64_t(0), math::lrn_window_lo(c, g.size));
  const int64_t hi = min(g.C - 1, math::lrn_window_hi(c, g.size));
  A sum = A(0);
  for (int64_t cc = lo; cc <= hi; ++cc) {
    const A v = load<A>(x[base + cc * g.inner]);
    sum += v * v;
  }
  return math::lrn_scale(sum, k.alpha_over_size, k.k);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, Geometry g, Coeffs<acc_t<T>> k) {
  using A = acc_t<T>;
  for (int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x; idx < g.numel;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t c = (idx / g.inner) % g.C;
    const int64_t base = idx - c * g.inner;
    const A s = window_scale(x, base, c, g, k);
    y[idx] = store<T>(math::lrn_apply(load<A>(x[idx]), math::lrn_pow_neg(s, k.beta, k.fast)));
  }
}

// Backward, stage 1: p = s^-beta and t = g a p / s per element, in the accumulation type.
template <class T>
__global__ void __launch_bounds__(kThreads)
    terms_kernel(const T* __restrict__ dy, const T* __restrict__ x, acc_t<T>* __restrict__ p_out,
                 acc_t<T>* __restrict__ t_out, Geometry g, Coeffs<acc_t<T>> k) {
  using A = acc_t<T>;
  for (int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x; idx < g.numel;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t c = (idx / g.inner) % g.C;
    const A s = window_scale(x, idx - c * g.inner, c, g, k);
    const A p = math::lrn_pow_neg(s, k.beta, k.fast);
    p_out[idx] = p;
    t_out[idx] = math::lrn_backward_term(load<A>(dy[idx]), load<A>(x[idx]), p, s);
  }
}

// Stage 2: dx_j = g_j p_j - coef a_j * (sum of t over the channels whose window holds j).
template <class T>
__global__ void __launch_bounds__(kThreads)
    dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ p,
              const acc_t<T>* __restrict__ t, T* __restrict__ dx, Geometry g, Coeffs<acc_t<T>> k) {
  using A = acc_t<T>;
  for (int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x; idx < g.numel;
       idx += int64_t(gridDim.x) * kThreads) {
    const int64_t j = (idx / g.inner) % g.C;
    const int64_t base = idx - j * g.inner;
    const int64_t lo = max(int64_t(0), math::lrn_twindow_lo(j, g.size));
    const int64_t hi = min(g.C - 1, math::lrn_twindow_hi(j, g.size));
    A sum = A(0);
    for (int64_t c = lo; c <= hi; ++c) sum += t[base + c * g.inner];
    dx[idx] = store<T>(math::lrn_dx(load<A>(dy[idx]), load<A>(x[idx]), p[idx], k.coef, sum));
  }
}

template <class T>
void forward(const LrnForwardArgs& a, cudaStream_t st) {
  const Geometry g = geometry_of(a.shape, a.p.size);
  forward_kernel<T><<<grid_for(g.numel), kThreads, 0, st>>>(static_cast<const T*>(a.x), static_cast<T*>(a.y), g,
                                                            coeffs_of<acc_t<T>>(a.p));
  check_launch("local_response_norm forward_kernel");
}

template <class T>
void backward(const LrnBackwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const Geometry g = geometry_of(a.shape, a.p.size);
  const Coeffs<A> k = coeffs_of<A>(a.p);
  const auto hold = allocate(2 * size_t(g.numel) * sizeof(A), st);
  A* p = static_cast<A*>(hold.get());
  A* t = p + g.numel;
  const T* dy = static_cast<const T*>(a.dy);
  const T* x = static_cast<const T*>(a.x);
  terms_kernel<T><<<grid_for(g.numel), kThreads, 0, st>>>(dy, x, p, t, g, k);
  check_launch("local_response_norm terms_kernel");
  dx_kernel<T><<<grid_for(g.numel), kThreads, 0, st>>>(dy, x, p, t, static_cast<T*>(a.dx), g, k);
  check_launch("local_response_norm dx_kernel");
}

}  // namespace

void local_response_norm_forward(const LrnForwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { forward<decltype(tag)>(args, s); });
}

void local_response_norm_backward(const LrnBackwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { backward<decltype(tag)>(args, s); });
}

}  // namespace normkit::cuda

// SpectralNorm on CUDA (detail/spectral_norm_args.h). Deterministic: every sum has a fixed split over
// a fixed launch configuration and the block reductions of block_reduce.cuh, never atomics.
//   W v:    one block per row (strided per-thread sums, then block_sum).
//   W^T u:  one thread per column and row block (spectral_norm_row_block rows summed in order), then
//           a single block sums the partials of each column in block order and normalizes.
// The vectors live in the accumulation-type workspace until `apply` stores them. All per-element
// math goes through normkit/spectral_norm_math.h, as on the CPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/dtype.h"
#include "normkit/spectral_norm_math.h"

namespace normkit::cuda {
namespace {

using detail::SpectralNormBackwardArgs;
using detail::SpectralNormForwardArgs;
using detail::SpectralNormWork;

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;

unsigned grid_for(int64_t n) { return unsigned(std::max<int64_t>(1, std::min(n, kMaxGrid))); }

// dst[i] = load(src[i]) for the two vectors.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) load_vectors_kernel(const T* u, const T* v, A* work, int64_t H, int64_t K) {
  const SpectralNormWork L{H, K};
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) work[L.u() + i] = load<A>(u[i]);
  for (int64_t j = threadIdx.x; j < K; j += blockDim.x) work[L.v() + j] = load<A>(v[j]);
}

// out[i] = sum_j W[i, j] x[j], one block per row.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) mat_vec_kernel(const T* __restrict__ W, const A* __restrict__ x,
                                                           A* __restrict__ out, int64_t H, int64_t K) {
  for (int64_t i = blockIdx.x; i < H; i += gridDim.x) {
    const T* row = W + i * K;
    A s = 0;
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) s += load<A>(row[j]) * x[j];
    s = block_sum(s);
    if (threadIdx.x == 0) out[i] = s;
  }
}

// partial[b][j] = sum over the rows i of block b, in order, of x[i] W[i, j].
template <class T, class A>
__global__ void __launch_bounds__(kThreads) mat_t_vec_partial_kernel(const T* __restrict__ W, const A* __restrict__ x,
                                                                     A* __restrict__ partial, int64_t H, int64_t K) {
  const int64_t rb = detail::spectral_norm_row_block(H);
  const int64_t b = blockIdx.y;
  const int64_t i1 = min(H, (b + 1) * rb);
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < K; j += int64_t(gridDim.x) * blockDim.x) {
    A s = 0;
    for (int64_t i = b * rb; i < i1; ++i) s += x[i] * load<A>(W[i * K + j]);
    partial[b * K + j] = s;
  }
}

// u = normalize(wv), single block.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) normalize_u_kernel(A* work, int64_t H, int64_t K, A eps) {
  const SpectralNormWork L{H, K};
  const A* wv = work + L.wv();
  A q = 0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) q += wv[i] * wv[i];
  const A denom = math::sn_denom(block_sum(q), eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) work[L.u() + i] = math::sn_normalized<T>(wv[i], denom);
}

// wtu = the sum of the partials (block order), v = normalize(wtu), sigma = wtu . v; single block.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) finish_v_kernel(A* work, int64_t H, int64_t K, A eps) {
  const SpectralNormWork L{H, K};
  const int64_t nb = detail::spectral_norm_num_blocks(H);
  const A* partial = work + L.partial();
  A* wtu = work + L.wtu();
  A q = 0;
  for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
    A s = partial[j];
    for (int64_t b = 1; b < nb; ++b) s += partial[b * K + j];
    wtu[j] = s;
    q += s * s;
  }
  const A denom = math::sn_denom(block_sum(q), eps);
  A d = 0;
  for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
    const A vj = math::sn_normalized<T>(wtu[j], denom);
    work[L.v() + j] = vj;
    d += wtu[j] * vj;
  }
  d = block_sum(d);
  if (threadIdx.x == 0) work[L.sigma()] = d;
}

// sigma = u . wv (evaluation: the stored vectors); single block.
template <class A>
__global__ void __launch_bounds__(kThreads) sigma_kernel(A* work, int64_t H, int64_t K) {
  const SpectralNormWork L{H, K};
  A d = 0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) d += work[L.u() + i] * work[L.wv() + i];
  d = block_sum(d);
  if (threadIdx.x == 0) work[L.sigma()] = d;
}

template <class T, class A>
__global__ void __launch_bounds__(kThreads) store_vectors_kernel(const A* work, T* u, T* v, A* sigma, int64_t H,
                                                                 int64_t K, bool vectors) {
  const SpectralNormWork L{H, K};
  if (vectors) {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) u[i] = store<T>(work[L.u() + i]);
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) v[j] = store<T>(work[L.v() + j]);
  }
  if (sigma && threadIdx.x == 0) *sigma = work[L.sigma()];
}

template <class T, class A>
__global__ void __launch_bounds__(kThreads) divide_kernel(const T* __restrict__ W, const A* __restrict__ sigma_p,
                                                          T* __restrict__ y, int64_t n) {
  const A sigma = *sigma_p;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    y[e] = store<T>(math::sn_apply(load<A>(W[e]), sigma));
}

// row_dot[i] = sum_j dy[i, j] W[i, j], one block per row.
template <class T, class A>
__global__ void __launch_bounds__(kThreads) row_dot_kernel(const T* __restrict__ dy, const T* __restrict__ W,
                                                           A* __restrict__ row_dot, int64_t H, int64_t K) {
  for (int64_t i = blockIdx.x; i < H; i += gridDim.x) {
    A s = 0;
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) s += load<A>(dy[i * K + j]) * load<A>(W[i * K + j]);
    s = block_sum(s);
    if (threadIdx.x == 0) row_dot[i] = s;
  }
}

// row_dot[H] = sum of the row sums; single block.
template <class A>
__global__ void __launch_bounds__(kThreads) total_kernel(A* row_dot, int64_t H) {
  A s = 0;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) s += row_dot[i];
  s = block_sum(s);
  if (threadIdx.x == 0) row_dot[H] = s;
}

template <class T, class A>
__global__ void __launch_bounds__(kThreads) dw_kernel(const T* __restrict__ dy, const T* __restrict__ u,
                                                      const T* __restrict__ v, const A* __restrict__ sigma_p,
                                                      const A* __restrict__ total, T* __restrict__ dw, int64_t H,
                                                      int64_t K) {
  const A sigma = *sigma_p;
  const A coef = math::sn_coef(*total, sigma);
  const int64_t n = H * K;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / K, j = e - i * K;
    dw[e] = store<T>(math::sn_dw(load<A>(dy[e]), load<A>(u[i]), load<A>(v[j]), sigma, coef));
  }
}

unsigned elementwise_grid(int64_t n) { return grid_for((n + kThreads - 1) / kThreads); }

template <class T>
void estimate(const SpectralNormForwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  const SpectralNormWork L{H, K};
  const T* W = static_cast<const T*>(a.w);
  A* work = static_cast<A*>(a.work);
  const A eps = A(a.eps);
  load_vectors_kernel<T, A><<<1, kThreads, 0, st>>>(static_cast<const T*>(a.u), static_cast<const T*>(a.v), work, H, K);
  check_launch("spectral_norm load_vectors_kernel");
  if (a.iterations == 0) {
    mat_vec_kernel<T, A><<<grid_for(H), kThreads, 0, st>>>(W, work + L.v(), work + L.wv(), H, K);
    check_launch("spectral_norm mat_vec_kernel");
    sigma_kernel<A><<<1, kThreads, 0, st>>>(work, H, K);
    check_launch("spectral_norm sigma_kernel");
    return;
  }
  const dim3 tgrid(unsigned(std::min<int64_t>((K + kThreads - 1) / kThreads, 65535)),
                   unsigned(detail::spectral_norm_num_blocks(H)));
  for (int64_t it = 0; it < a.iterations; ++it) {
    mat_vec_kernel<T, A><<<grid_for(H), kThreads, 0, st>>>(W, work + L.v(), work + L.wv(), H, K);
    check_launch("spectral_norm mat_vec_kernel");
    normalize_u_kernel<T, A><<<1, kThreads, 0, st>>>(work, H, K, eps);
    check_launch("spectral_norm normalize_u_kernel");
    mat_t_vec_partial_kernel<T, A><<<tgrid, kThreads, 0, st>>>(W, work + L.u(), work + L.partial(), H, K);
    check_launch("spectral_norm mat_t_vec_partial_kernel");
    finish_v_kernel<T, A><<<1, kThreads, 0, st>>>(work, H, K, eps);
    check_launch("spectral_norm finish_v_kernel");
  }
}

template <class T>
void apply(const SpectralNormForwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  const SpectralNormWork L{H, K};
  const A* work = static_cast<const A*>(a.work);
  store_vectors_kernel<T, A><<<1, kThreads, 0, st>>>(work, static_cast<T*>(a.u), static_cast<T*>(a.v),
                                                     static_cast<A*>(a.sigma), H, K, a.iterations > 0);
  check_launch("spectral_norm store_vectors_kernel");
  if (!a.y) return;
  divide_kernel<T, A><<<elementwise_grid(H * K), kThreads, 0, st>>>(static_cast<const T*>(a.w), work + L.sigma(),
                                                                    static_cast<T*>(a.y), H * K);
  check_launch("spectral_norm divide_kernel");
}

template <class T>
void backward(const SpectralNormBackwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  A* row_dot = static_cast<A*>(a.work);
  row_dot_kernel<T, A><<<grid_for(H), kThreads, 0, st>>>(static_cast<const T*>(a.dy), static_cast<const T*>(a.w),
                                                         row_dot, H, K);
  check_launch("spectral_norm row_dot_kernel");
  total_kernel<A><<<1, kThreads, 0, st>>>(row_dot, H);
  check_launch("spectral_norm total_kernel");
  dw_kernel<T, A><<<elementwise_grid(H * K), kThreads, 0, st>>>(
      static_cast<const T*>(a.dy), static_cast<const T*>(a.u), static_cast<const T*>(a.v),
      static_cast<const A*>(a.sigma), row_dot + H, static_cast<T*>(a.dw), H, K);
  check_launch("spectral_norm dw_kernel");
}

}  // namespace

void spectral_norm_estimate(const SpectralNormForwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { estimate<decltype(tag)>(args, s); });
}

void spectral_norm_apply(const SpectralNormForwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { apply<decltype(tag)>(args, s); });
}

void spectral_norm_backward(const SpectralNormBackwardArgs& args, void* stream) {
  if (args.shape.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { backward<decltype(tag)>(args, s); });
}

}  // namespace normkit::cuda

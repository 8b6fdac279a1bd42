// Mean-only BatchNorm on CUDA (detail/mean_only_batch_norm_args.h). Deterministic (no float atomics;
// every split is a function of the shape only) and summed in the CPU's order
// (cpu/mean_only_batch_norm.cpp): a channel's sum is the pairwise sum (math::pairwise_sum, in k
// order) of K partials of that channel, held in a stream-ordered workspace [K, C]:
//   channels first (S > 1): partial (n, c) is the sum of plane (n, c), K = N; a warp per plane (a
//     block for planes longer than kWarpMaxLen), lanes strided over the plane, then the team's tree;
//   rows of C values (channels last, or S == 1 where both layouts are [N, C]): the N * S rows go in
//     the CPU's chunks (rows_per_chunk), K = chunks; partial (k, c) sums channel c over chunk k's rows
//     as the CPU's column_sum does (runs of kRunRows rows, each from zero, added in order). A block
//     covers 32 channels x 8 chunks, so a warp reads 32 neighbouring channels of a row.
// One thread per channel then sums its K partials into the statistic; the elementwise pass is a
// grid-stride loop over all elements.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "params.cuh"
#include "normkit/dtype.h"
#include "normkit/math.h"
#include "normkit/spectral_norm_math.h"

namespace normkit::cuda {
namespace {

using detail::Layout;
using detail::MobnBackwardArgs;
using detail::MobnForwardArgs;
using detail::MobnShape;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride loops cover the rest
constexpr int64_t kWarpMaxLen = 1024;           // planes up to this length get a warp, longer ones a block
constexpr int64_t kRunRows = 64;                // cpu/column_sums.h kChunkRows

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned grid_for(int64_t blocks) { return unsigned(std::max<int64_t>(1, std::min(blocks, kMaxGrid))); }

// The partials of the channel sums: K per channel, each over a plane or over a chunk of rows.
struct SumPlan {
  bool by_rows;            // rows of C values (channels last, or S == 1)
  int64_t K;               // partials per channel
  int64_t rows_per_chunk;  // by_rows: the CPU's rows_per_chunk (at least 64 rows, at most 256 chunks)
};

SumPlan plan_sums(const MobnShape& sh) {
  SumPlan p;
  p.by_rows = sh.layout == Layout::NSC || sh.S == 1;
  const int64_t rows = sh.N * sh.S;
  p.rows_per_chunk = std::max<int64_t>(64, ceil_div(rows, 256));
  p.K = p.by_rows ? ceil_div(rows, p.rows_per_chunk) : sh.N;
  return p;
}

// Channel of element i of a compact [N, C, S] tensor in the shape's layout.
__device__ __forceinline__ int64_t channel_of(const MobnShape& sh, int64_t i) {
  return sh.layout == Layout::NCS ? (i / sh.S) % sh.C : i % sh.C;
}

// Channels first: partial[p] = the sum of plane p (= n * C + c) of S values, one team per plane.
template <class T, bool kBlockTeam>
__global__ void __launch_bounds__(kThreads)
    plane_partials_kernel(const T* __restrict__ t, int64_t planes, int64_t S, acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  constexpr int kTeam = kBlockTeam ? kThreads : kWarpSize;
  constexpr int kTeamsPerBlock = kThreads / kTeam;
  const int rank = threadIdx.x % kTeam;
  // The loop is uniform over a team: its reduction needs every thread of it.
  for (int64_t p = int64_t(blockIdx.x) * kTeamsPerBlock + threadIdx.x / kTeam; p < planes;
       p += int64_t(gridDim.x) * kTeamsPerBlock) {
    const T* plane = t + p * S;
    A s = 0;
    for (int64_t i = rank; i < S; i += kTeam) s += load<A>(plane[i]);
    if constexpr (kBlockTeam) {
      s = block_sum(s);
    } else {
      s = warp_sum(s);
    }
    if (rank == 0) partial[p] = s;
  }
}

// Rows of C values: partial[k * C + c] = the sum of channel c over the rows of chunk k.
template <class T>
__global__ void __launch_bounds__(kThreads)
    chunk_partials_kernel(const T* __restrict__ t, int64_t rows, int64_t C, int64_t rows_per_chunk, int64_t chunks,
                          acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  const int64_t tiles = (C + kWarpSize - 1) / kWarpSize;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t c = tile * kWarpSize + threadIdx.x % kWarpSize;
    if (c >= C) continue;
    for (int64_t k = int64_t(blockIdx.y) * kWarpsPerBlock + threadIdx.x / kWarpSize; k < chunks;
         k += int64_t(gridDim.y) * kWarpsPerBlock) {
      const int64_t first = k * rows_per_chunk;
      const int64_t end = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
      A s = 0;
      for (int64_t r0 = first; r0 < end; r0 += kRunRows) {
        const int64_t r1 = r0 + kRunRows < end ? r0 + kRunRows : end;
        A run = 0;
        for (int64_t r = r0; r < r1; ++r) run += load<A>(t[r * C + c]);
        s = r0 == first ? run : s + run;
      }
      partial[k * C + c] = s;
    }
  }
}

// The partials of t's channel sums into partial[K * C] (nothing to do when K == 0: no rows).
template <class T>
void launch_partials(const T* t, const MobnShape& sh, const SumPlan& plan, acc_t<T>* partial, cudaStream_t s) {
  if (plan.K == 0) return;
  if (plan.by_rows) {
    const dim3 grid(grid_for(ceil_div(sh.C, kWarpSize)), unsigned(ceil_div(plan.K, kWarpsPerBlock)));  // y <= 32
    chunk_partials_kernel<T><<<grid, kThreads, 0, s>>>(t, sh.N * sh.S, sh.C, plan.rows_per_chunk, plan.K, partial);
  } else if (sh.S > kWarpMaxLen) {
    plane_partials_kernel<T, true><<<grid_for(sh.N * sh.C), kThreads, 0, s>>>(t, sh.N * sh.C, sh.S, partial);
  } else {
    plane_partials_kernel<T, false>
        <<<grid_for(ceil_div(sh.N * sh.C, kWarpsPerBlock)), kThreads, 0, s>>>(t, sh.N * sh.C, sh.S, partial);
  }
  check_launch("mean_only_batch_norm partials");
}

// save_mean[c]: the batch mean (the pairwise sum of the channel's K partials over N * S) and the
// running-mean update (training), or the running mean.
template <class A>
__global__ void __launch_bounds__(kThreads)
    forward_stats_kernel(MobnForwardArgs a, const A* __restrict__ partial, int64_t K) {
  const int64_t C = a.shape.C;
  A* save_mean = static_cast<A*>(a.save_mean);
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    A mean;
    if (a.training) {
      mean = math::pairwise_sum<A>(K, [&](int64_t k) { return partial[k * C + c]; }) / A(a.shape.N * a.shape.S);
      if (a.running_mean)
        param_put<A>(a.running_mean, a.running_dtype, c,
                     math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), mean, A(a.momentum)));
    } else {
      mean = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
    }
    save_mean[c] = mean;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) apply_kernel(MobnForwardArgs a) {
  using A = acc_t<T>;
  const MobnShape sh = a.shape;
  const int64_t numel = sh.N * sh.C * sh.S;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const A* mean = static_cast<const A*>(a.save_mean);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(sh, i);
    y[i] = store<T>(math::mobn_apply(load<A>(x[i]), mean[c], param_at<A>(a.bias, a.bias_dtype, c, A(0))));
  }
}

// dbias[c] = the pairwise sum of the channel's K partials of dy; mean_dy[c] = that sum over N * S
// (training) or 0.
template <class A>
__global__ void __launch_bounds__(kThreads)
    backward_stats_kernel(MobnBackwardArgs a, const A* __restrict__ partial, int64_t K, A* __restrict__ mean_dy) {
  const int64_t C = a.shape.C;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const A s = math::pairwise_sum<A>(K, [&](int64_t k) { return partial[k * C + c]; });
    if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, s);
    mean_dy[c] = a.training ? s / A(a.shape.N * a.shape.S) : A(0);
  }
}

// dx = dy - mean_dy[c] (mean_dy null: dy).
template <class T>
__global__ void __launch_bounds__(kThreads) dx_kernel(MobnBackwardArgs a, const acc_t<T>* __restrict__ mean_dy) {
  using A = acc_t<T>;
  const MobnShape sh = a.shape;
  const int64_t numel = sh.N * sh.C * sh.S;
  const T* dy = static_cast<const T*>(a.dy);
  T* dx = static_cast<T*>(a.dx);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = store<T>(math::mobn_dx(load<A>(dy[i]), mean_dy ? mean_dy[channel_of(sh, i)] : A(0)));
}

}  // namespace

void mean_only_batch_norm_forward(const MobnForwardArgs& args, void* stream) {
  const MobnShape& sh = args.shape;
  if (sh.C == 0) return;  // (an empty batch comes as evaluation: ops gives it no batch mean to take)
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const SumPlan plan = plan_sums(sh);
  dispatch_float(args.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    std::shared_ptr<void> holder;
    A* partial = nullptr;
    if (args.training) {
      holder = allocate(size_t(plan.K * sh.C) * sizeof(A), stream);
      partial = static_cast<A*>(holder.get());
      launch_partials<T>(static_cast<const T*>(args.x), sh, plan, partial, s);
    }
    forward_stats_kernel<A><<<grid_for(ceil_div(sh.C, kThreads)), kThreads, 0, s>>>(args, partial,
                                                                                     args.training ? plan.K : 0);
    check_launch("mean_only_batch_norm forward_stats_kernel");
    if (sh.numel() > 0) {
      apply_kernel<T><<<grid_for(ceil_div(sh.numel(), kThreads)), kThreads, 0, s>>>(args);
      check_launch("mean_only_batch_norm apply_kernel");
    }
  });
}

void mean_only_batch_norm_backward(const MobnBackwardArgs& args, void* stream) {
  const MobnShape& sh = args.shape;
  if (sh.C == 0) return;  // an empty batch still gets its dbias (0)
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const SumPlan plan = plan_sums(sh);
  dispatch_float(args.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    std::shared_ptr<void> holder;
    A* mean_dy = nullptr;
    if (args.dbias || args.training) {
      // Workspace: the partials [K, C], then mean_dy [C].
      holder = allocate(size_t((plan.K + 1) * sh.C) * sizeof(A), stream);
      A* partial = static_cast<A*>(holder.get());
      mean_dy = partial + plan.K * sh.C;
      launch_partials<T>(static_cast<const T*>(args.dy), sh, plan, partial, s);
      backward_stats_kernel<A><<<grid_for(ceil_div(sh.C, kThreads)), kThreads, 0, s>>>(args, partial, plan.K, mean_dy);
      check_launch("mean_only_batch_norm backward_stats_kernel");
    }
    if (args.dx && sh.numel() > 0) {
      dx_kernel<T><<<grid_for(ceil_div(sh.numel(), kThreads)), kThreads, 0, s>>>(args, mean_dy);
      check_launch("mean_only_batch_norm dx_kernel");
    }
  });
}

}  // namespace normkit::cuda

// LayerNorm (center) and RMSNorm (!center) forward/backward on CUDA. All per-element math goes
// through normkit/math.h, the same functions the CPU kernels use.
//
// Row kernels: one warp per row when cols <= kWarpMaxCols (8 rows per 256-thread block), otherwise one
// block per row; rows are walked grid-stride so any row count fits the grid. Rows that fit in their
// group's registers (up to kMaxRegValues values per thread) take the register-resident
// kernels: read once, statistics in two passes over the registers. Longer rows stream twice.
// Parameter gradients: deterministic two-stage reduction (no float atomics), see launch_param_grads.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "vector_io.cuh"
#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::cuda {
namespace {

using detail::RowNormBackwardArgs;
using detail::RowNormForwardArgs;

constexpr int kRowThreads = 256;        // threads per block of the row kernels
constexpr int kRowsPerWarpBlock = kRowThreads / kWarpSize;
constexpr int64_t kWarpMaxCols = 1024;  // above this a row gets a whole block
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride loops cover the rest

// Blocks of a row kernel's grid: 8 rows per block with a warp per row, else a row per block; the
// rows beyond kMaxGrid blocks are walked grid-stride.
dim3 row_grid(int64_t rows, bool warp_per_row) {
  const int64_t blocks = warp_per_row ? (rows + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock : rows;
  return dim3(unsigned(std::min(blocks, kMaxGrid)));
}

// The row-group abstraction: a warp per row or a block per row.
template <bool kWarpPerRow>
struct RowGroup;

template <>
struct RowGroup<true> {
  static __device__ __forceinline__ int rank() { return threadIdx.x & (kWarpSize - 1); }
  static __device__ __forceinline__ int size() { return kWarpSize; }
  static __device__ __forceinline__ int64_t first_row() {
    return int64_t(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / kWarpSize;
  }
  static __device__ __forceinline__ int64_t row_step() { return int64_t(gridDim.x) * kRowsPerWarpBlock; }
  template <class A>
  static __device__ __forceinline__ A sum(A v) { return warp_sum(v); }
  template <class A>
  static __device__ __forceinline__ void sum2(A& a, A& b) { warp_sum2(a, b); }
  template <class A>
  static __device__ __forceinline__ math::Moments<A> moments(const math::Moments<A>& m) {
    return warp_moments(m);
  }
};

template <>
struct RowGroup<false> {
  static __device__ __forceinline__ int rank() { return threadIdx.x; }
  static __device__ __forceinline__ int size() { return blockDim.x; }
  static __device__ __forceinline__ int64_t first_row() { return blockIdx.x; }
  static __device__ __forceinline__ int64_t row_step() { return gridDim.x; }
  template <class A>
  static __device__ __forceinline__ A sum(A v) { return block_sum(v); }
  template <class A>
  static __device__ __forceinline__ void sum2(A& a, A& b) { block_sum2(a, b); }
  template <class A>
  static __device__ __forceinline__ math::Moments<A> moments(const math::Moments<A>& m) {
    return block_moments(m);
  }
};

// Optional per-column parameter: `dflt` when absent (weight 1, bias 0).
template <class A, class P>
__device__ __forceinline__ A param(const P* __restrict__ p, int64_t j, A dflt) {
  return p ? load<A>(p[j]) : dflt;
}

// ---- forward ------------------------------------------------------------------------------------

template <class T, class W, class B>
struct ForwardParams {
  using A = acc_t<T>;
  const T* x;
  int64_t x_row_stride;
  const W* weight;  // nullable
  const B* bias;    // nullable
  T* y;
  A* mean;  // nullable
  A* rstd;  // nullable
  int64_t rows, cols;
  A eps;
  bool center;
};

template <class T, class W, class B, bool kWarpPerRow>
__global__ void __launch_bounds__(kRowThreads) row_norm_forward_kernel(ForwardParams<T, W, B> p) {
  using A = acc_t<T>;
  using G = RowGroup<kWarpPerRow>;
  const int rank = G::rank();
  const int nthreads = G::size();
  for (int64_t r = G::first_row(); r < p.rows; r += G::row_step()) {  // uniform across the group
    const T* __restrict__ xr = p.x + r * p.x_row_stride;
    A mean = A(0), rstd;
    if (p.center) {
      // Welford per thread + Chan merges: stable when |mean| >> std, unlike sum/sum-of-squares.
      // Moments of x - K with K the row's first value (the CPU's row_moments takes math::sample_shift,
      // 32 more loads per thread here: not without a GPU to measure it): the means merged
      // are small numbers whose rounding does not spoil M2. Every thread of the row uses the same K.
      const A K = p.cols > 0 ? load<A>(xr[0]) : A(0);
      math::Moments<A> m;
      for (int64_t j = rank; j < p.cols; j += nthreads) math::welford_push(m, load<A>(xr[j]) - K);
      m = G::moments(m);
      mean = m.mean + K;  // M2 (so rstd) does not depend on the shift
      rstd = math::rstd_from_var(math::biased_var(m), p.eps);
    } else {
      A ss = A(0);
      for (int64_t j = rank; j < p.cols; j += nthreads) {
        const A v = load<A>(xr[j]);
        ss += v * v;
      }
      ss = G::sum(ss);
      rstd = math::rstd_from_var(ss / A(p.cols), p.eps);
    }
    if (rank == 0) {
      if (p.mean) p.mean[r] = mean;
      if (p.rstd) p.rstd[r] = rstd;
    }
    T* __restrict__ yr = p.y + r * p.cols;
    for (int64_t j = rank; j < p.cols; j += nthreads) {
      const A w = param(p.weight, j, A(1));
      const A b = param(p.bias, j, A(0));
      yr[j] = store<T>(math::row_norm_apply(load<A>(xr[j]), mean, rstd, w, b));
    }
  }
}

// ---- register-resident rows ---------------------------------------------------------------------
// Thread `rank` of a row group of kGroup threads holds kChunks runs of V = kVec16<T> consecutive
// columns, run k at column (k * kGroup + rank) * V: a warp's run k is one contiguous 16 * 32-byte
// segment. The runs are 16-byte vectors when every pointer and row stride allows (`vec`), else read
// element by element with the same columns per thread and the same order of additions: the same bits.
// The statistics take two passes over the registers: the mean of x - K (K the row's first value, as
// the streaming kernel shifts), then the sum of squares about it, so no division per element (the
// Welford update's) and M2 from centred values.

constexpr int kMaxRegChunks = 8;
constexpr int kMaxRegValues = 32;  // per thread and row: 8 float4 runs (half types' dx spilled at 64)

template <bool kWarpPerRow, class T>
__device__ __forceinline__ int64_t run_col(int k, int rank) {
  constexpr int64_t kGroup = kWarpPerRow ? kWarpSize : kRowThreads;
  return (int64_t(k) * kGroup + rank) * kVec16<T>;
}

template <class T, class W, int kChunks, bool kWarpPerRow>
__global__ void __launch_bounds__(kRowThreads)
    row_norm_forward_regs_kernel(ForwardParams<T, W, W> p, bool vec) {
  using A = acc_t<T>;
  using G = RowGroup<kWarpPerRow>;
  constexpr int V = kVec16<T>;
  const int rank = G::rank();
  const A n = A(p.cols);
  for (int64_t r = G::first_row(); r < p.rows; r += G::row_step()) {  // uniform across the group
    const T* __restrict__ xr = p.x + r * p.x_row_stride;
    A v[kChunks][V];
#pragma unroll
    for (int k = 0; k < kChunks; ++k) load_run(xr, run_col<kWarpPerRow, T>(k, rank), p.cols, vec, v[k]);
    A mean = A(0), rstd;
    if (p.center) {
      const A K = load<A>(xr[0]);  // cols > 0 here
      A s = A(0);
#pragma unroll
      for (int k = 0; k < kChunks; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i)
          if (run_col<kWarpPerRow, T>(k, rank) + i < p.cols) s += v[k][i] - K;
      const A shifted_mean = G::sum(s) / n;
      A q = A(0);
#pragma unroll
      for (int k = 0; k < kChunks; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i)
          if (run_col<kWarpPerRow, T>(k, rank) + i < p.cols) {
            const A d = (v[k][i] - K) - shifted_mean;
            q += d * d;
          }
      mean = K + shifted_mean;
      rstd = math::rstd_from_var(G::sum(q) / n, p.eps);
    } else {
      A ss = A(0);
#pragma unroll
      for (int k = 0; k < kChunks; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i) ss += v[k][i] * v[k][i];  // zeros beyond the row
      rstd = math::rstd_from_var(G::sum(ss) / n, p.eps);
    }
    if (rank == 0) {
      if (p.mean) p.mean[r] = mean;
      if (p.rstd) p.rstd[r] = rstd;
    }
    T* __restrict__ yr = p.y + r * p.cols;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int64_t c = run_col<kWarpPerRow, T>(k, rank);
      if (c >= p.cols) break;  // the later runs start further right
      A w[V], b[V], o[V];
      if (p.weight) load_run(p.weight, c, p.cols, vec, w);
      if (p.bias) load_run(p.bias, c, p.cols, vec, b);
#pragma unroll
      for (int i = 0; i < V; ++i)
        o[i] = math::row_norm_apply(v[k][i], mean, rstd, p.weight ? w[i] : A(1), p.bias ? b[i] : A(0));
      store_run(yr, c, p.cols, vec, o);
    }
  }
}

// Calls launch(chunks, warp_per_row) for the register-resident kernels; false when the row is too
// long for them (or empty). A warp per row up to kMaxRegValues values per lane, then a block per row.
template <class T, class Launch>
bool dispatch_regs(int64_t cols, Launch&& launch) {
  constexpr int64_t V = kVec16<T>;
  constexpr int kMaxChunks = kMaxRegValues / V < kMaxRegChunks ? int(kMaxRegValues / V) : kMaxRegChunks;
  if (cols <= 0) return false;
  const auto pick = [&](int64_t group, auto warp) {
    const int64_t runs = (cols + group * V - 1) / (group * V);
    if constexpr (decltype(warp)::value) {  // a block's single run would fit a warp
      if (runs <= 1) return launch(std::integral_constant<int, 1>{}, warp), true;
    }
    if (runs <= 2) return launch(std::integral_constant<int, 2>{}, warp), true;
    if (runs <= 4) return launch(std::integral_constant<int, 4>{}, warp), true;
    if constexpr (kMaxChunks >= 8) {
      if (runs <= 8) return launch(std::integral_constant<int, 8>{}, warp), true;
    }
    return false;
  };
  return pick(kWarpSize, std::true_type{}) || pick(kRowThreads, std::false_type{});
}

// The 16-byte form needs every row of every tensor to start 16-byte aligned, and whole vectors.
template <class T>
bool vector_rows(int64_t cols, std::initializer_list<int64_t> row_strides, std::initializer_list<const void*> ptrs) {
  if (cols % kVec16<T> != 0) return false;
  for (const int64_t s : row_strides)
    if (s % kVec16<T> != 0) return false;
  for (const void* q : ptrs)
    if (q && !aligned16(q)) return false;
  return true;
}

template <class T, class W, class B>
void launch_forward(const RowNormForwardArgs& a, cudaStream_t s) {
  using A = acc_t<T>;
  ForwardParams<T, W, B> p;
  p.x = static_cast<const T*>(a.x);
  p.x_row_stride = a.x_row_stride;
  p.weight = static_cast<const W*>(a.weight);
  p.bias = static_cast<const B*>(a.bias);
  p.y = static_cast<T*>(a.y);
  p.mean = static_cast<A*>(a.mean);
  p.rstd = static_cast<A*>(a.rstd);
  p.rows = a.rows;
  p.cols = a.cols;
  p.eps = A(a.eps);
  p.center = a.center;
  const bool vec = vector_rows<T>(a.cols, {a.x_row_stride}, {a.x, a.y, a.weight, a.bias});
  const bool resident = dispatch_regs<T>(a.cols, [&](auto chunks, auto warp) {
    row_norm_forward_regs_kernel<T, W, decltype(chunks)::value, decltype(warp)::value>
        <<<row_grid(a.rows, warp), kRowThreads, 0, s>>>(p, vec);
  });
  if (resident) {
    check_launch("row_norm_forward_regs_kernel");
    return;
  }
  if (a.cols <= kWarpMaxCols)
    row_norm_forward_kernel<T, W, B, true><<<row_grid(a.rows, true), kRowThreads, 0, s>>>(p);
  else
    row_norm_forward_kernel<T, W, B, false><<<row_grid(a.rows, false), kRowThreads, 0, s>>>(p);
  check_launch("row_norm_forward_kernel");
}

// ---- backward: dx -------------------------------------------------------------------------------

template <class T, class W>
struct BackwardParams {
  using A = acc_t<T>;
  const T* dy;
  int64_t dy_row_stride;
  const T* x;
  int64_t x_row_stride;
  const A* mean;  // nullable; ignored unless center
  const A* rstd;
  const W* weight;  // nullable
  T* dx;
  int64_t rows, cols;
  bool center;
};

template <class A>
__device__ __forceinline__ A row_mean(const A* __restrict__ mean, bool center, int64_t r) {
  return (center && mean) ? mean[r] : A(0);
}

template <class T, class W, bool kWarpPerRow>
__global__ void __launch_bounds__(kRowThreads) row_norm_dx_kernel(BackwardParams<T, W> p) {
  using A = acc_t<T>;
  using G = RowGroup<kWarpPerRow>;
  const int rank = G::rank();
  const int nthreads = G::size();
  const A inv_cols = A(1) / A(p.cols);
  for (int64_t r = G::first_row(); r < p.rows; r += G::row_step()) {
    const T* __restrict__ dyr = p.dy + r * p.dy_row_stride;
    const T* __restrict__ xr = p.x + r * p.x_row_stride;
    const A mean = row_mean(p.mean, p.center, r);
    const A rstd = p.rstd[r];
    A sum_g = A(0), sum_gx = A(0);
    for (int64_t j = rank; j < p.cols; j += nthreads) {
      const A g = load<A>(dyr[j]) * param(p.weight, j, A(1));
      const A xhat = (load<A>(xr[j]) - mean) * rstd;
      sum_g += g;
      sum_gx += g * xhat;
    }
    G::sum2(sum_g, sum_gx);
    // Multiply by 1/cols like the CPU kernel, so both round the means identically.
    const A mean_g = p.center ? sum_g * inv_cols : A(0);
    const A mean_gx = sum_gx * inv_cols;
    T* __restrict__ dxr = p.dx + r * p.cols;
    for (int64_t j = rank; j < p.cols; j += nthreads) {
      const A g = load<A>(dyr[j]) * param(p.weight, j, A(1));
      const A xhat = (load<A>(xr[j]) - mean) * rstd;
      dxr[j] = store<T>(math::row_norm_dx(g, xhat, rstd, mean_g, mean_gx));
    }
  }
}

// dx from registers: dy and x read once; g = dy * w and xhat replace them in place.
template <class T, class W, int kChunks, bool kWarpPerRow>
__global__ void __launch_bounds__(kRowThreads) row_norm_dx_regs_kernel(BackwardParams<T, W> p, bool vec) {
  using A = acc_t<T>;
  using G = RowGroup<kWarpPerRow>;
  constexpr int V = kVec16<T>;
  const int rank = G::rank();
  const A inv_cols = A(1) / A(p.cols);
  for (int64_t r = G::first_row(); r < p.rows; r += G::row_step()) {
    const T* __restrict__ dyr = p.dy + r * p.dy_row_stride;
    const T* __restrict__ xr = p.x + r * p.x_row_stride;
    A g[kChunks][V], xhat[kChunks][V];
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int64_t c = run_col<kWarpPerRow, T>(k, rank);
      load_run(dyr, c, p.cols, vec, g[k]);
      load_run(xr, c, p.cols, vec, xhat[k]);
    }
    const A mean = row_mean(p.mean, p.center, r);
    const A rstd = p.rstd[r];
    A sum_g = A(0), sum_gx = A(0);
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int64_t c = run_col<kWarpPerRow, T>(k, rank);
      A w[V];
      if (p.weight) load_run(p.weight, c, p.cols, vec, w);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        g[k][i] *= p.weight ? w[i] : A(1);
        xhat[k][i] = (xhat[k][i] - mean) * rstd;
        if (c + i < p.cols) {
          sum_g += g[k][i];
          sum_gx += g[k][i] * xhat[k][i];
        }
      }
    }
    G::sum2(sum_g, sum_gx);
    const A mean_g = p.center ? sum_g * inv_cols : A(0);
    const A mean_gx = sum_gx * inv_cols;
    T* __restrict__ dxr = p.dx + r * p.cols;
#pragma unroll
    for (int k = 0; k < kChunks; ++k) {
      const int64_t c = run_col<kWarpPerRow, T>(k, rank);
      if (c >= p.cols) break;
      A o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) o[i] = math::row_norm_dx(g[k][i], xhat[k][i], rstd, mean_g, mean_gx);
      store_run(dxr, c, p.cols, vec, o);
    }
  }
}

template <class T, class W>
void launch_dx(const RowNormBackwardArgs& a, cudaStream_t s) {
  using A = acc_t<T>;
  BackwardParams<T, W> p;
  p.dy = static_cast<const T*>(a.dy);
  p.dy_row_stride = a.dy_row_stride;
  p.x = static_cast<const T*>(a.x);
  p.x_row_stride = a.x_row_stride;
  p.mean = static_cast<const A*>(a.mean);
  p.rstd = static_cast<const A*>(a.rstd);
  p.weight = static_cast<const W*>(a.weight);
  p.dx = static_cast<T*>(a.dx);
  p.rows = a.rows;
  p.cols = a.cols;
  p.center = a.center;
  const bool vec = vector_rows<T>(a.cols, {a.dy_row_stride, a.x_row_stride}, {a.dy, a.x, a.weight, a.dx});
  const bool resident = dispatch_regs<T>(a.cols, [&](auto chunks, auto warp) {
    row_norm_dx_regs_kernel<T, W, decltype(chunks)::value, decltype(warp)::value>
        <<<row_grid(a.rows, warp), kRowThreads, 0, s>>>(p, vec);
  });
  if (resident) {
    check_launch("row_norm_dx_regs_kernel");
    return;
  }
  if (a.cols <= kWarpMaxCols)
    row_norm_dx_kernel<T, W, true><<<row_grid(a.rows, true), kRowThreads, 0, s>>>(p);
  else
    row_norm_dx_kernel<T, W, false><<<row_grid(a.rows, false), kRowThreads, 0, s>>>(p);
  check_launch("row_norm_dx_kernel");
}

// ---- backward: dweight / dbias --------------------------------------------------------------------
// Stage 1: block (tile, chunk) owns kTileCols columns x one fixed chunk of rows; thread (tx, ty) sums
// rows chunk_start + ty, + kTileRows, ... of column tx, then ty = 0 adds the kTileRows partials in
// order and writes partial[chunk][col]. Stage 2 sums partial[0..chunks)[col] in order. Every
// addition order depends only on (rows, cols), so results are bitwise reproducible run to run.

constexpr int kTileCols = 32;  // one warp across columns: coalesced row segments
constexpr int kTileRows = 8;
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int64_t kTargetBlocks = 2048;  // enough (tile, chunk) blocks to fill a large GPU
constexpr int64_t kMaxChunks = 1024;
constexpr int kFinalizeThreads = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct ChunkPlan {
  int64_t col_tiles, chunks, rows_per_chunk;
};

// A function of (rows, cols) only -- never of the device -- so the summation order is reproducible.
ChunkPlan plan_chunks(int64_t rows, int64_t cols) {
  ChunkPlan c;
  c.col_tiles = ceil_div(cols, kTileCols);
  int64_t chunks = ceil_div(kTargetBlocks, c.col_tiles);
  chunks = std::min(chunks, ceil_div(rows, kMinRowsPerChunk));
  chunks = std::max<int64_t>(1, std::min(chunks, kMaxChunks));
  c.rows_per_chunk = ceil_div(rows, chunks);
  c.chunks = ceil_div(rows, c.rows_per_chunk);  // no empty trailing chunk
  return c;
}

template <class T>
struct ParamGradParams {
  using A = acc_t<T>;
  const T* dy;
  int64_t dy_row_stride;
  const T* x;
  int64_t x_row_stride;
  const A* mean;  // nullable; ignored unless center
  const A* rstd;
  int64_t rows, cols, rows_per_chunk;
  bool center;
  A* partial_w;  // nullable, [chunks, cols]
  A* partial_b;  // nullable, [chunks, cols]
};

// Thread tx owns kRun consecutive columns (one 16-byte vector of T, or one column where the rows are
// not all 16-byte aligned), so a block covers kTileCols * kRun columns; each column's additions are
// in the same order either way.
template <class T, int kRun>
__global__ void __launch_bounds__(kTileCols* kTileRows) param_grad_partial_kernel(ParamGradParams<T> p) {
  using A = acc_t<T>;
  constexpr bool vec = kRun > 1;
  __shared__ A sw[kTileRows][kTileCols * kRun];
  __shared__ A sb[kTileRows][kTileCols * kRun];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * p.rows_per_chunk;
  const int64_t r1 = r0 + p.rows_per_chunk < p.rows ? r0 + p.rows_per_chunk : p.rows;
  const bool want_w = p.partial_w != nullptr;
  const int64_t tiles = (p.cols + kTileCols * kRun - 1) / (kTileCols * kRun);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // uniform per block
    const int64_t j = (tile * kTileCols + tx) * kRun;
    A aw[kRun], ab[kRun];
#pragma unroll
    for (int i = 0; i < kRun; ++i) aw[i] = ab[i] = A(0);
    if (j < p.cols) {
      for (int64_t r = r0 + ty; r < r1; r += kTileRows) {
        A d[kRun];
        load_run(p.dy + r * p.dy_row_stride, j, p.cols, vec, d);
        if (want_w) {
          A xv[kRun];
          load_run(p.x + r * p.x_row_stride, j, p.cols, vec, xv);
          const A mean = row_mean(p.mean, p.center, r), rstd = p.rstd[r];
#pragma unroll
          for (int i = 0; i < kRun; ++i) aw[i] += d[i] * ((xv[i] - mean) * rstd);
        }
#pragma unroll
        for (int i = 0; i < kRun; ++i) ab[i] += d[i];
      }
    }
#pragma unroll
    for (int i = 0; i < kRun; ++i) {
      sw[ty][tx * kRun + i] = aw[i];
      sb[ty][tx * kRun + i] = ab[i];
    }
    __syncthreads();
    if (ty == 0 && j < p.cols) {
      A tw[kRun], tb[kRun];
#pragma unroll
      for (int i = 0; i < kRun; ++i) {
        tw[i] = sw[0][tx * kRun + i];
        tb[i] = sb[0][tx * kRun + i];
#pragma unroll
        for (int k = 1; k < kTileRows; ++k) {
          tw[i] += sw[k][tx * kRun + i];
          tb[i] += sb[k][tx * kRun + i];
        }
      }
      if (p.partial_w) store_run(p.partial_w + chunk * p.cols, j, p.cols, vec, tw);
      if (p.partial_b) store_run(p.partial_b + chunk * p.cols, j, p.cols, vec, tb);
    }
    __syncthreads();  // sw/sb are rewritten by the next tile
  }
}

template <class A, class O>
__global__ void __launch_bounds__(kFinalizeThreads)
    param_grad_finalize_kernel(const A* __restrict__ partial, int64_t chunks, int64_t cols, O* __restrict__ out) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * cols + j];  // fixed order
    out[j] = store<O>(s);
  }
}

template <class A>
void launch_finalize(const A* partial, int64_t chunks, int64_t cols, void* out, DType out_dtype,
                     cudaStream_t s) {
  const int64_t blocks = std::min(ceil_div(cols, kFinalizeThreads), kMaxGrid);
  dispatch_float(out_dtype, [&](auto tag) {
    using O = decltype(tag);
    param_grad_finalize_kernel<A, O>
        <<<dim3(unsigned(blocks)), kFinalizeThreads, 0, s>>>(partial, chunks, cols, static_cast<O*>(out));
  });
  check_launch("param_grad_finalize_kernel");
}

template <class T>
void launch_param_grads(const RowNormBackwardArgs& a, cudaStream_t s) {
  using A = acc_t<T>;
  const ChunkPlan plan = plan_chunks(a.rows, a.cols);
  const size_t bytes = size_t(plan.chunks) * size_t(a.cols) * sizeof(A);
  // Holders free stream-ordered at scope exit, i.e. after the kernels queued below.
  const auto scratch_w = a.dweight ? allocate(bytes, s) : nullptr;
  const auto scratch_b = a.dbias ? allocate(bytes, s) : nullptr;
  ParamGradParams<T> p;
  p.dy = static_cast<const T*>(a.dy);
  p.dy_row_stride = a.dy_row_stride;
  p.x = static_cast<const T*>(a.x);
  p.x_row_stride = a.x_row_stride;
  p.mean = static_cast<const A*>(a.mean);
  p.rstd = static_cast<const A*>(a.rstd);
  p.rows = a.rows;
  p.cols = a.cols;
  p.rows_per_chunk = plan.rows_per_chunk;
  p.center = a.center;
  p.partial_w = static_cast<A*>(scratch_w.get());
  p.partial_b = static_cast<A*>(scratch_b.get());
  // The chunk plan counts tiles of kTileCols columns whatever the run per thread: the same order.
  constexpr int kRun = kVec16<T>;
  const bool vec = vector_rows<T>(a.cols, {a.dy_row_stride, a.x_row_stride}, {a.dy, a.x});
  const int64_t tiles = vec ? ceil_div(a.cols, kTileCols * kRun) : plan.col_tiles;
  const dim3 grid(unsigned(std::min(tiles, kMaxGrid)), unsigned(plan.chunks));
  if (vec)
    param_grad_partial_kernel<T, kRun><<<grid, dim3(kTileCols, kTileRows), 0, s>>>(p);
  else
    param_grad_partial_kernel<T, 1><<<grid, dim3(kTileCols, kTileRows), 0, s>>>(p);
  check_launch("param_grad_partial_kernel");
  if (a.dweight) launch_finalize<A>(p.partial_w, plan.chunks, a.cols, a.dweight, a.dweight_dtype, s);
  if (a.dbias) launch_finalize<A>(p.partial_b, plan.chunks, a.cols, a.dbias, a.dbias_dtype, s);
}

}  // namespace

void row_norm_forward(const RowNormForwardArgs& args, void* stream) {
  // cols == 0 still writes the statistics of the empty rows, as the CPU kernel does (same math).
  if (args.rows == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto t_tag) {
    using T = decltype(t_tag);
    // weight and bias share one dtype (the dispatch layer checks): T or its accumulation type.
    dispatch_param<T>(args.weight_dtype, [&](auto w_tag) {
      using W = decltype(w_tag);
      launch_forward<T, W, W>(args, s);
    });
  });
}

void row_norm_backward(const RowNormBackwardArgs& args, void* stream) {
  if (args.cols == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (args.rows == 0) {
    // A sum over no rows is zero; all-zero bits are +0 in every float dtype.
    if (args.dweight)
      check_cuda(cudaMemsetAsync(args.dweight, 0, size_t(args.cols) * dtype_size(args.dweight_dtype), s),
                 "row_norm_backward: cudaMemsetAsync(dweight)");
    if (args.dbias)
      check_cuda(cudaMemsetAsync(args.dbias, 0, size_t(args.cols) * dtype_size(args.dbias_dtype), s),
                 "row_norm_backward: cudaMemsetAsync(dbias)");
    return;
  }
  dispatch_float(args.dtype, [&](auto t_tag) {
    using T = decltype(t_tag);
    // Parameter gradients first: their scratch allocation may fail, and then nothing is written.
    if (args.dweight || args.dbias) launch_param_grads<T>(args, s);
    if (args.dx) {
      dispatch_param<T>(args.weight_dtype, [&](auto w_tag) {
        using W = decltype(w_tag);
        launch_dx<T, W>(args, s);
      });
    }
  });
}

}  // namespace normkit::cuda

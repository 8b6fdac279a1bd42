// BatchNorm, InstanceNorm and GroupNorm forward/backward on CUDA: normalization of an [N, C, S]
// tensor by the statistics of groups of channels (see detail/channel_norm_args.h). All per-element
// math and all moment merges go through normkit/math.h, the functions the CPU kernels use.
//
// The layout is normalised first, as on the CPU: with S == 1 both layouts are [N, C] rows (NSC), with
// C == 1 both are [N, S] planes (NCS).
//
// Channels first (NCS).
//   Statistics: the values of segment (n, g) -- channels g*cpg .. (g+1)*cpg of sample n -- are
//   cpg * S contiguous values; segments are cut into fixed chunks, and a "team" (one warp for short
//   chunks, one block otherwise) reduces each (segment, chunk) unit to its moments in two passes (the
//   team's sum gives the unit's mean, then the sum of squares about it, the unit read again from
//   L1/L2: no division per value, as Welford's update has, and M2 from centred values). A merge
//   kernel combines a statistic's units by Chan's merge (per-sample: its own segment's chunks;
//   BatchNorm: the chunks of segment (n, g) for every n) in a fixed order.
//   Elementwise (y, dx): a team per (plane (n, c), chunk of S) with the plane's mean/rstd/w/b in
//   registers.
//   Backward sums: per (plane, chunk) sums of dy and dy * xhat, then per-plane sums over the chunks.
// Channels last (NSC): rows of C channels, grouped into row groups (one per sample for per-sample
//   norms, all N * S rows for BatchNorm). Blocks of 256 threads cover tiles of TX channels (a power of
//   two, 32 at most, coalesced along c) x rpb rows of one row group; thread (tx, ty) walks rows ty,
//   ty + TY, ... of its channel, and a fixed shared-memory tree adds the TY partial sums of a channel
//   (the statistics: two passes over the tile, as the channels-first units). Partials are per (row
//   group, row block, channel), merged in a fixed order.
//
// Determinism: no atomics. Every decomposition (chunk lengths, tile shapes, rows per block) is a
// function of the problem shape only -- never of the device or of the grid size -- and every unit is
// reduced by one team in a fixed order, so results are bitwise reproducible run to run. Grid-stride
// loops only decide which block computes which unit. No host synchronisation: everything is queued on
// the caller's stream, scratch included (stream-ordered allocate()).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "block_reduce.cuh"
#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::cuda {
namespace {

using detail::ChannelNormBackwardArgs;
using detail::ChannelNormForwardArgs;
using detail::ChannelNormShape;
using detail::Layout;

template <class A>
using Moments = math::Moments<A>;

constexpr int kThreads = 256;  // threads per block of every kernel here
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride loops cover the rest

// Channels first: units of contiguous values.
constexpr int64_t kWarpMaxLen = 1024;    // units up to this length get a warp, longer ones a block
constexpr int64_t kTargetUnits = 2048;   // cut long segments until there are about this many units
constexpr int64_t kMinChunk = 2048;      // ... but never into chunks shorter than this
constexpr int64_t kMaxChunks = 1024;
// Channels last: tiles of rows x channels.
constexpr int64_t kTargetTiles = 1024;
constexpr int64_t kMinTileRows = 32;
constexpr int64_t kMaxTileRows = 1024;
// Merges of at most this many terms per output use a warp, larger ones a block (a warp's lanes
// merging 16 terms each in turn took 11 us for BatchNorm NHWC's 64 statistics of 502 terms).
constexpr int64_t kWarpMaxTerms = 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

dim3 grid_for(int64_t units, int64_t units_per_block) {
  return dim3(unsigned(std::min(ceil_div(units, units_per_block), kMaxGrid)));
}

// ---- the problem --------------------------------------------------------------------------------

struct Problem {
  int64_t N, C, S, G, cpg;
  bool per_sample;
  Layout layout;
  int64_t num_stats, count;  // statistics, values per statistic
  int64_t K, R;              // channels last: row groups and rows per group

  NK_HD int64_t stat(int64_t k, int64_t c) const { return (per_sample ? k * G : 0) + c / cpg; }
  // Index of the first value of statistic s (the CPU's Problem::first_index): its shift.
  NK_HD int64_t first_index(int64_t s) const {
    const int64_t k = per_sample ? s / G : 0, c = (s % G) * cpg;
    return layout == Layout::NCS ? (k * C + c) * S : k * R * C + c;
  }
};

Problem make_problem(const ChannelNormShape& s) {
  Problem p;
  p.N = s.N;
  p.C = s.C;
  p.S = s.S;
  p.G = s.groups;
  p.cpg = s.groups > 0 ? s.C / s.groups : 0;
  p.per_sample = s.per_sample;
  p.layout = s.layout;
  if (p.S == 1 && p.C > 1) p.layout = Layout::NSC;
  if (p.C == 1) p.layout = Layout::NCS;
  p.num_stats = (p.per_sample ? p.N : 1) * p.G;
  p.count = (p.per_sample ? 1 : p.N) * p.cpg * p.S;
  p.K = p.per_sample ? p.N : 1;
  p.R = p.per_sample ? p.S : p.N * p.S;
  return p;
}

// Channels first: `segs` segments of `len` contiguous values, each cut into `chunks` chunks of
// `chunk_len` values (the last one shorter). A function of (segs, len) only.
struct ChunkPlan {
  int64_t chunks, chunk_len;
  bool warp;  // a warp per unit (else a block)
};

ChunkPlan plan_chunks(int64_t segs, int64_t len) {
  ChunkPlan c;
  int64_t chunks = ceil_div(kTargetUnits, segs);
  chunks = std::min(chunks, ceil_div(len, kMinChunk));
  chunks = std::max<int64_t>(1, std::min(chunks, kMaxChunks));
  c.chunk_len = ceil_div(len, chunks);
  c.chunks = ceil_div(len, c.chunk_len);  // no empty trailing chunk
  c.warp = c.chunk_len <= kWarpMaxLen;
  return c;
}

// Channels last: tiles of TX = 2^tx_shift channels x rpb rows of one row group, `nb` row blocks per
// group. A function of the shape only.
struct TilePlan {
  int64_t rpb, nb, ctiles, units;
  int tx_shift;
};

TilePlan plan_tiles(const Problem& p) {
  TilePlan t;
  t.tx_shift = 0;
  while ((int64_t(1) << t.tx_shift) < p.C && t.tx_shift < 5) ++t.tx_shift;
  const int64_t tx = int64_t(1) << t.tx_shift, ty = kThreads / tx;
  t.ctiles = ceil_div(p.C, tx);
  const int64_t nb_target = std::max<int64_t>(1, ceil_div(kTargetTiles, p.K * t.ctiles));
  int64_t rpb = ceil_div(p.R, nb_target);
  rpb = std::min(std::max(rpb, kMinTileRows), kMaxTileRows);
  t.rpb = ceil_div(rpb, ty) * ty;
  t.nb = ceil_div(p.R, t.rpb);
  t.units = p.K * t.nb * t.ctiles;
  return t;
}

// ---- teams: a warp or a block per unit ------------------------------------------------------------

template <bool kWarp>
struct Team;

template <>
struct Team<true> {
  static __device__ __forceinline__ int rank() { return threadIdx.x & (kWarpSize - 1); }
  static __device__ __forceinline__ int size() { return kWarpSize; }
  static __device__ __forceinline__ int64_t first() {
    return int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  }
  static __device__ __forceinline__ int64_t step() { return int64_t(gridDim.x) * kWarpsPerBlock; }
  template <class A>
  static __device__ __forceinline__ A sum(A a) { return warp_sum(a); }
  template <class A>
  static __device__ __forceinline__ void sum2(A& a, A& b) { warp_sum2(a, b); }
  template <class A>
  static __device__ __forceinline__ Moments<A> moments(const Moments<A>& m) { return warp_moments(m); }
};

template <>
struct Team<false> {
  static __device__ __forceinline__ int rank() { return threadIdx.x; }
  static __device__ __forceinline__ int size() { return blockDim.x; }
  static __device__ __forceinline__ int64_t first() { return blockIdx.x; }
  static __device__ __forceinline__ int64_t step() { return gridDim.x; }
  template <class A>
  static __device__ __forceinline__ A sum(A a) { return block_sum(a); }
  template <class A>
  static __device__ __forceinline__ void sum2(A& a, A& b) { block_sum2(a, b); }
  template <class A>
  static __device__ __forceinline__ Moments<A> moments(const Moments<A>& m) { return block_moments(m); }
};

// The same choice at run time, for the elementwise kernels (no reductions, so no template needed).
struct Lanes {
  int rank, size;
  int64_t first, step;
};

__device__ __forceinline__ Lanes unit_lanes(bool warp) {
  Lanes l;
  if (warp) {
    l.rank = threadIdx.x & (kWarpSize - 1);
    l.size = kWarpSize;
    l.first = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
    l.step = int64_t(gridDim.x) * kWarpsPerBlock;
  } else {
    l.rank = threadIdx.x;
    l.size = blockDim.x;
    l.first = blockIdx.x;
    l.step = gridDim.x;
  }
  return l;
}

// Calls body(i, n) for i = first, first + step, ... < end, n = kLoadBatch indices at a time (then the
// rest one by one): the body issues the loads of its n indices first, then uses the values in index
// order. One 4-byte load in flight per thread left the memory system mostly idle; the order of the
// additions (and so every bit) is that of the plain loop.
constexpr int kLoadBatch = 4;

template <class Body>
__device__ __forceinline__ void for_batched(int64_t first, int64_t end, int64_t step, Body&& body) {
  int64_t i = first;
  for (; i + (kLoadBatch - 1) * step < end; i += kLoadBatch * step)
    body(i, std::integral_constant<int, kLoadBatch>{});
  for (; i < end; i += step) body(i, std::integral_constant<int, 1>{});
}

// for_batched over I inputs: body(o, v) for the offset o = offset(i) of each index, with
// v[k] = in[k][o], the loads of a batch issued before its first body call.
template <int I, class T, class Offset, class Body>
__device__ __forceinline__ void for_batched_values(int64_t first, int64_t end, int64_t step,
                                                   const T* const (&in)[I], Offset&& offset, Body&& body) {
  for_batched(first, end, step, [&](int64_t i, auto n) {
    T v[decltype(n)::value][I];
#pragma unroll
    for (int q = 0; q < n; ++q)
#pragma unroll
      for (int k = 0; k < I; ++k) v[q][k] = in[k][offset(i + q * step)];
#pragma unroll
    for (int q = 0; q < n; ++q) body(offset(i + q * step), v[q]);
  });
}

// ---- tiles (channels last) -----------------------------------------------------------------------

struct Tile {
  int64_t k, rb, c, r0, r1;
  int tx, ty, TX, TY;
};

__device__ __forceinline__ Tile tile_of(int64_t u, const Problem& p, const TilePlan& tp) {
  Tile t;
  t.TX = 1 << tp.tx_shift;
  t.TY = kThreads >> tp.tx_shift;
  t.tx = threadIdx.x & (t.TX - 1);
  t.ty = threadIdx.x >> tp.tx_shift;
  const int64_t ct = u % tp.ctiles, q = u / tp.ctiles;
  t.rb = q % tp.nb;
  t.k = q / tp.nb;
  t.c = ct * t.TX + t.tx;
  t.r0 = t.rb * tp.rpb;
  t.r1 = t.r0 + tp.rpb < p.R ? t.r0 + tp.rpb : p.R;
  return t;
}

// Fixed tree over ty of the per-thread sums of each channel column: at step `st`, row ty < st adds
// row ty + st into itself (lower rows first). Returns column tx's total to every thread.
template <class A>
__device__ __forceinline__ A column_sum(A a, const Tile& t) {
  __shared__ A sa[kThreads];
  const int i = threadIdx.x;
  sa[i] = a;
  __syncthreads();
  for (int st = t.TY / 2; st > 0; st >>= 1) {
    if (t.ty < st) sa[i] = sa[i] + sa[i + st * t.TX];
    __syncthreads();
  }
  a = sa[t.tx];
  __syncthreads();
  return a;
}

// The same tree for two sums.
template <class A>
__device__ __forceinline__ void column_sum2(A& a, A& b, const Tile& t) {
  __shared__ A sa[kThreads];
  __shared__ A sb[kThreads];
  const int i = threadIdx.x;
  sa[i] = a;
  sb[i] = b;
  __syncthreads();
  for (int st = t.TY / 2; st > 0; st >>= 1) {
    if (t.ty < st) {
      const int j = i + st * t.TX;
      sa[i] = sa[i] + sa[j];
      sb[i] = sb[i] + sb[j];
    }
    __syncthreads();
  }
  a = sa[t.tx];
  b = sb[t.tx];
  __syncthreads();
}

// Optional per-channel parameter: `dflt` when absent (weight 1, bias 0).
template <class A, class P>
__device__ __forceinline__ A param(const P* __restrict__ p, int64_t c, A dflt) {
  return p ? load<A>(p[c]) : dflt;
}

// ---- forward: statistics ----------------------------------------------------------------------------
// The moments of statistic s are those of x - shift(s), shift(s) = its first value (the CPU takes
// math::sample_shift, the mean of its first values: computed by every thread here it would cost up to
// 64 loads per thread and unit; a per-statistic shift array is for a session with a GPU to measure), so
// the means the merges see are small numbers whose rounding does not spoil M2 (a float channel with
// mean 1e4 and std 0.1 keeps ~1e-7 relative variance error instead of ~1e-4). Every unit of s reads
// the same shift; the merge kernel adds it back to the mean.

// Shift of statistic s; 0 where it has no values (an empty batch), so x is not read.
template <class A, class T>
__device__ __forceinline__ A stat_shift(const T* __restrict__ x, const Problem& p, int64_t s) {
  return p.count > 0 ? load<A>(x[p.first_index(s)]) : A(0);
}

// Moments of value(i) - shift over i = first, first + step, ... < end, `count` values over the team
// whose sums `reduce` adds (every thread of the team calls it, with or without values): the
// reduced sum gives their mean, then a second pass the sum of squares about it (the values are in
// L1/L2 by then). No division per value, as Welford's update has, and M2 from centred values.
template <class A, class Value, class Reduce>
__device__ __forceinline__ Moments<A> two_pass_moments(int64_t first, int64_t end, int64_t step, int64_t count,
                                                       A shift, Value&& value, Reduce&& reduce) {
  A s = A(0);
  for_batched(first, end, step, [&](int64_t i, auto n) {
    A v[decltype(n)::value];
#pragma unroll
    for (int q = 0; q < n; ++q) v[q] = value(i + q * step);
#pragma unroll
    for (int q = 0; q < n; ++q) s += v[q] - shift;
  });
  const A mean = reduce(s) / A(count);
  A c2 = A(0);
  for_batched(first, end, step, [&](int64_t i, auto n) {
    A v[decltype(n)::value];
#pragma unroll
    for (int q = 0; q < n; ++q) v[q] = value(i + q * step);
#pragma unroll
    for (int q = 0; q < n; ++q) {
      const A d = (v[q] - shift) - mean;
      c2 += d * d;
    }
  });
  return math::block_moments(count, mean, reduce(c2));
}

// Channels first: moments of unit u = (segment, chunk) around its statistic's shift, stored at
// partial[u].
template <class T, bool kWarp>
__global__ void __launch_bounds__(kThreads)
    ncs_moments_kernel(const T* __restrict__ x, Problem p, int64_t units, int64_t seg_len, ChunkPlan cp,
                       Moments<acc_t<T>>* __restrict__ partial) {
  using A = acc_t<T>;
  using G = Team<kWarp>;
  for (int64_t u = G::first(); u < units; u += G::step()) {  // uniform across the team
    const int64_t seg = u / cp.chunks, start = (u % cp.chunks) * cp.chunk_len;
    const int64_t len = cp.chunk_len < seg_len - start ? cp.chunk_len : seg_len - start;
    const T* __restrict__ xs = x + seg * seg_len + start;
    const A shift = stat_shift<A>(x, p, p.stat(seg / p.G, (seg % p.G) * p.cpg));  // segment (n, g)
    const Moments<A> m = two_pass_moments(
        G::rank(), len, G::size(), len, shift, [&](int64_t i) { return load<A>(xs[i]); },
        [](A a) { return G::sum(a); });
    if (G::rank() == 0) partial[u] = m;
  }
}

// Channels last: moments of (row group k, row block rb, channel c) around its statistic's shift,
// stored at partial[(k * nb + rb) * C + c].
template <class T>
__global__ void __launch_bounds__(kThreads)
    nsc_moments_kernel(const T* __restrict__ x, Problem p, TilePlan tp, Moments<acc_t<T>>* __restrict__ partial) {
  using A = acc_t<T>;
  for (int64_t u = blockIdx.x; u < tp.units; u += gridDim.x) {  // uniform per block
    const Tile t = tile_of(u, p, tp);
    const bool live = t.c < p.C;  // (the others walk no rows but take part in the column sums)
    const T* __restrict__ xc = x + t.k * p.R * p.C + (live ? t.c : 0);
    const A shift = live ? stat_shift<A>(x, p, p.stat(t.k, t.c)) : A(0);
    const int64_t first = t.r0 + t.ty;
    const Moments<A> m = two_pass_moments(
        first, live ? t.r1 : first, t.TY, t.r1 - t.r0, shift, [&](int64_t r) { return load<A>(xc[r * p.C]); },
        [&](A a) { return column_sum(a, t); });
    if (t.ty == 0 && live) partial[(t.k * tp.nb + t.rb) * p.C + t.c] = m;
  }
}

// Where the j-th unit of statistic s lies in the partial array:
//   (s / groups) * k_stride + (s % groups) * g_stride + (j / inner) * outer_stride + (j % inner) * inner_stride.
struct UnitMap {
  int64_t per_stat = 0;
  int64_t inner = 1, inner_stride = 0, outer_stride = 0;
  int64_t groups = 1, k_stride = 0, g_stride = 0;

  NK_HD int64_t index(int64_t s, int64_t j) const {
    return (s / groups) * k_stride + (s % groups) * g_stride + (j / inner) * outer_stride +
           (j % inner) * inner_stride;
  }
};

// Per statistic: the fixed-order merge of its units (moments around its shift), then mean = shift +
// merged mean and rstd (and its un-shifted moments for the running update). With `local`
// (SyncBatchNorm's local phase), what the CPU writes: hi = shift, lo = merged mean, m2. No units (an
// empty batch) gives mean 0 and a NaN rstd (local: zeros), as on the CPU.
template <class T, bool kWarp>
__global__ void __launch_bounds__(kThreads)
    merge_moments_kernel(const T* __restrict__ x, Problem p, const Moments<acc_t<T>>* __restrict__ partial,
                         UnitMap map, acc_t<T> eps, acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ rstd,
                         Moments<acc_t<T>>* __restrict__ stat_m, acc_t<T>* __restrict__ local) {
  using A = acc_t<T>;
  using G = Team<kWarp>;
  const int64_t ns = p.num_stats;
  for (int64_t s = G::first(); s < ns; s += G::step()) {
    Moments<A> m;
    for (int64_t j = G::rank(); j < map.per_stat; j += G::size()) m = math::chan_merge(m, partial[map.index(s, j)]);
    m = G::moments(m);
    if (G::rank() == 0) {
      const A shift = stat_shift<A>(x, p, s);
      if (local) {
        local[s] = shift;
        local[ns + s] = m.mean;
        local[2 * ns + s] = m.m2;
      }
      m.mean += shift;  // M2 (so rstd and the unbiased variance) does not depend on the shift
      mean[s] = m.mean;
      rstd[s] = math::rstd_from_var(math::biased_var(m), eps);
      if (stat_m) stat_m[s] = m;
    }
  }
}

// Per channel (groups == C): the average over the channel's statistics of the mean and of the
// unbiased variance, folded into the running statistics.
template <class A, class P>
__global__ void __launch_bounds__(kThreads)
    running_update_kernel(const Moments<A>* __restrict__ stat_m, Problem p, A momentum, P* __restrict__ rm,
                          P* __restrict__ rv) {
  const int64_t K = p.per_sample ? p.N : 1;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < p.C; c += int64_t(gridDim.x) * blockDim.x) {
    A bm = A(0), bv = A(0);
    for (int64_t k = 0; k < K; ++k) {  // fixed order
      const Moments<A> m = stat_m[p.stat(k, c)];
      bm += m.mean;
      bv += math::unbiased_var(m);
    }
    if (K > 1) {
      bm /= A(K);
      bv /= A(K);
    }
    rm[c] = store<P>(math::running_update(load<A>(rm[c]), bm, momentum));
    rv[c] = store<P>(math::running_update(load<A>(rv[c]), bv, momentum));
  }
}

// Evaluation: statistic s (per channel, groups == C) from the running statistics.
template <class A, class P>
__global__ void __launch_bounds__(kThreads)
    running_stats_kernel(const P* __restrict__ rm, const P* __restrict__ rv, Problem p, A eps, A* __restrict__ mean,
                         A* __restrict__ rstd) {
  for (int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; s < p.num_stats;
       s += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (s % p.G) * p.cpg;
    mean[s] = load<A>(rm[c]);
    rstd[s] = math::rstd_from_var(load<A>(rv[c]), eps);
  }
}

// ---- forward: normalization -------------------------------------------------------------------------

// Channels first: a team per (plane (n, c), chunk of S).
template <class T, class W>
__global__ void __launch_bounds__(kThreads)
    ncs_apply_kernel(const T* __restrict__ x, T* __restrict__ y, Problem p, ChunkPlan cp,
                     const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd, const W* __restrict__ w,
                     const W* __restrict__ b) {
  using A = acc_t<T>;
  const Lanes l = unit_lanes(cp.warp);
  const int64_t units = p.N * p.C * cp.chunks;
  for (int64_t u = l.first; u < units; u += l.step) {
    const int64_t plane = u / cp.chunks, start = (u % cp.chunks) * cp.chunk_len;
    const int64_t len = cp.chunk_len < p.S - start ? cp.chunk_len : p.S - start;
    const int64_t c = plane % p.C, s = p.stat(plane / p.C, c);
    const A mu = mean[s], rs = rstd[s];
    const A wc = param(w, c, A(1)), bc = param(b, c, A(0));
    const int64_t off = plane * p.S + start;
    const T* __restrict__ xs = x + off;
    T* __restrict__ ys = y + off;
    const T* in[1] = {xs};
    for_batched_values(l.rank, len, l.size, in, [](int64_t i) { return i; }, [&](int64_t i, const T(&v)[1]) {
      ys[i] = store<T>(math::row_norm_apply(load<A>(v[0]), mu, rs, wc, bc));
    });
  }
}

// Channels last: a block per tile, each thread keeps its channel's parameters in registers.
template <class T, class W>
__global__ void __launch_bounds__(kThreads)
    nsc_apply_kernel(const T* __restrict__ x, T* __restrict__ y, Problem p, TilePlan tp,
                     const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd, const W* __restrict__ w,
                     const W* __restrict__ b) {
  using A = acc_t<T>;
  for (int64_t u = blockIdx.x; u < tp.units; u += gridDim.x) {
    const Tile t = tile_of(u, p, tp);
    if (t.c >= p.C) continue;  // no block-wide synchronisation below
    const int64_t s = p.stat(t.k, t.c);
    const A mu = mean[s], rs = rstd[s];
    const A wc = param(w, t.c, A(1)), bc = param(b, t.c, A(0));
    const int64_t base = t.k * p.R * p.C + t.c;
    const T* in[1] = {x};
    for_batched_values(t.r0 + t.ty, t.r1, t.TY, in, [&](int64_t r) { return base + r * p.C; },
                       [&](int64_t o, const T(&v)[1]) {
                         y[o] = store<T>(math::row_norm_apply(load<A>(v[0]), mu, rs, wc, bc));
                       });
  }
}

// ---- forward: host side -----------------------------------------------------------------------------

template <class T>
void launch_batch_stats(const ChannelNormForwardArgs& a, const Problem& p, acc_t<T>* mean, acc_t<T>* rstd,
                        cudaStream_t st) {
  using A = acc_t<T>;
  const int64_t ns = p.num_stats;
  if (ns == 0) return;
  const bool empty = p.N * p.S == 0;
  const T* x = static_cast<const T*>(a.x);
  UnitMap map;  // no units: an empty batch
  map.groups = p.G;
  std::shared_ptr<void> partial_hold;  // holders free stream-ordered after the kernels queued below
  if (!empty) {
    if (p.layout == Layout::NCS) {
      const int64_t segs = p.N * p.G, len = p.cpg * p.S;
      const ChunkPlan cp = plan_chunks(segs, len);
      const int64_t units = segs * cp.chunks;
      partial_hold = allocate(size_t(units) * sizeof(Moments<A>), st);
      auto* part = static_cast<Moments<A>*>(partial_hold.get());
      if (cp.warp)
        ncs_moments_kernel<T, true>
            <<<grid_for(units, kWarpsPerBlock), kThreads, 0, st>>>(x, p, units, len, cp, part);
      else
        ncs_moments_kernel<T, false><<<grid_for(units, 1), kThreads, 0, st>>>(x, p, units, len, cp, part);
      check_launch("ncs_moments_kernel");
      // Statistic s = (k, g): chunks of segment (n, g) for n = k (per sample) or every n (BatchNorm).
      map.per_stat = (p.per_sample ? 1 : p.N) * cp.chunks;
      map.inner = cp.chunks;
      map.inner_stride = 1;
      map.outer_stride = p.G * cp.chunks;
      map.k_stride = p.G * cp.chunks;
      map.g_stride = cp.chunks;
    } else {
      const TilePlan tp = plan_tiles(p);
      partial_hold = allocate(size_t(p.K * tp.nb * p.C) * sizeof(Moments<A>), st);
      auto* part = static_cast<Moments<A>*>(partial_hold.get());
      nsc_moments_kernel<T><<<grid_for(tp.units, 1), kThreads, 0, st>>>(x, p, tp, part);
      check_launch("nsc_moments_kernel");
      // Statistic s = (k, g): row blocks rb of group k, channels of g, in (rb, c) order.
      map.per_stat = tp.nb * p.cpg;
      map.inner = p.cpg;
      map.inner_stride = 1;
      map.outer_stride = p.C;
      map.k_stride = tp.nb * p.C;
      map.g_stride = p.cpg;
    }
  }
  const bool update_running =
      a.training && !a.local_moments && a.running_mean && a.running_var && p.G == p.C && p.count > 0;
  const auto stat_hold = update_running ? allocate(size_t(ns) * sizeof(Moments<A>), st) : nullptr;
  auto* stat_m = static_cast<Moments<A>*>(stat_hold.get());
  auto* local = static_cast<A*>(a.local_moments);
  const auto* part = static_cast<const Moments<A>*>(partial_hold.get());
  const A eps = A(a.eps);
  if (map.per_stat <= kWarpMaxTerms)
    merge_moments_kernel<T, true>
        <<<grid_for(ns, kWarpsPerBlock), kThreads, 0, st>>>(x, p, part, map, eps, mean, rstd, stat_m, local);
  else
    merge_moments_kernel<T, false>
        <<<grid_for(ns, 1), kThreads, 0, st>>>(x, p, part, map, eps, mean, rstd, stat_m, local);
  check_launch("merge_moments_kernel");
  if (update_running) {
    dispatch_param<T>(a.running_dtype, [&](auto tag) {
      using P = decltype(tag);
      running_update_kernel<A, P><<<grid_for(p.C, kThreads), kThreads, 0, st>>>(
          stat_m, p, A(a.momentum), static_cast<P*>(a.running_mean), static_cast<P*>(a.running_var));
    });
    check_launch("running_update_kernel");
  }
}

template <class T>
void launch_apply(const ChannelNormForwardArgs& a, const Problem& p, const acc_t<T>* mean, const acc_t<T>* rstd,
                  cudaStream_t st) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  // weight and bias share one dtype (the dispatch layer checks): T or its accumulation type.
  dispatch_param<T>(a.weight_dtype, [&](auto tag) {
    using W = decltype(tag);
    const W* w = static_cast<const W*>(a.weight);
    const W* b = static_cast<const W*>(a.bias);
    if (p.layout == Layout::NCS) {
      const ChunkPlan cp = plan_chunks(p.N * p.C, p.S);
      const int64_t units = p.N * p.C * cp.chunks;
      ncs_apply_kernel<T, W>
          <<<grid_for(units, cp.warp ? kWarpsPerBlock : 1), kThreads, 0, st>>>(x, y, p, cp, mean, rstd, w, b);
      check_launch("ncs_apply_kernel");
    } else {
      const TilePlan tp = plan_tiles(p);
      nsc_apply_kernel<T, W><<<grid_for(tp.units, 1), kThreads, 0, st>>>(x, y, p, tp, mean, rstd, w, b);
      check_launch("nsc_apply_kernel");
    }
  });
}

template <class T>
void forward(const ChannelNormForwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const Problem p = make_problem(a.shape);
  if (p.C == 0 || p.G == 0) {
    // Statistics of no values (GroupNorm with C == 0 has N * G of them): mean 0 and rstd NaN, as on
    // the CPU.
    if (p.num_stats > 0 && !a.local_moments) {
      if (a.save_mean) fill(a.save_mean, dtype_of<A>::value, p.num_stats, 0.0, st);
      if (a.save_rstd) fill(a.save_rstd, dtype_of<A>::value, p.num_stats, NAN, st);
    }
    return;
  }
  const int64_t ns = p.num_stats;
  const bool eval = !a.training && a.running_mean && a.running_var;
  const size_t stat_bytes = size_t(ns) * sizeof(A);
  // SyncBatchNorm's local phase leaves the caller's save_mean / save_rstd alone, as on the CPU (its
  // global checks may still fail): its local statistics go to scratch.
  void* save_mean = a.local_moments ? nullptr : a.save_mean;
  void* save_rstd = a.local_moments ? nullptr : a.save_rstd;
  const auto mean_hold = save_mean ? nullptr : allocate(stat_bytes, st);
  const auto rstd_hold = save_rstd ? nullptr : allocate(stat_bytes, st);
  A* mean = save_mean ? static_cast<A*>(save_mean) : static_cast<A*>(mean_hold.get());
  A* rstd = save_rstd ? static_cast<A*>(save_rstd) : static_cast<A*>(rstd_hold.get());
  if (eval) {
    // Running statistics per channel (groups == C, shared by all n), written even for an empty batch.
    if (ns > 0) {
      dispatch_param<T>(a.running_dtype, [&](auto tag) {
        using P = decltype(tag);
        running_stats_kernel<A, P><<<grid_for(ns, kThreads), kThreads, 0, st>>>(
            static_cast<const P*>(a.running_mean), static_cast<const P*>(a.running_var), p, A(a.eps), mean, rstd);
      });
      check_launch("running_stats_kernel");
    }
  } else {
    launch_batch_stats<T>(a, p, mean, rstd, st);
  }
  if (p.N * p.S > 0 && !a.local_moments) launch_apply<T>(a, p, mean, rstd, st);
}

// ---- backward -----------------------------------------------------------------------------------------

// Channels first: per unit (plane, chunk) sums of dy and dy * xhat, stored at part[u].
template <class T, bool kWarp>
__global__ void __launch_bounds__(kThreads)
    ncs_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x, Problem p, ChunkPlan cp,
                    const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                    acc_t<T>* __restrict__ part_dy, acc_t<T>* __restrict__ part_dyx) {
  using A = acc_t<T>;
  using G = Team<kWarp>;
  const int64_t units = p.N * p.C * cp.chunks;
  for (int64_t u = G::first(); u < units; u += G::step()) {
    const int64_t plane = u / cp.chunks, start = (u % cp.chunks) * cp.chunk_len;
    const int64_t len = cp.chunk_len < p.S - start ? cp.chunk_len : p.S - start;
    const int64_t s = p.stat(plane / p.C, plane % p.C);
    const A mu = mean[s], rs = rstd[s];
    const int64_t off = plane * p.S + start;
    const T* __restrict__ dys = dy + off;
    const T* __restrict__ xs = x + off;
    A sd = A(0), sdx = A(0);
    const T* in[2] = {dys, xs};
    for_batched_values(G::rank(), len, G::size(), in, [](int64_t i) { return i; }, [&](int64_t, const T(&v)[2]) {
      sd += load<A>(v[0]);
      sdx += load<A>(v[0]) * ((load<A>(v[1]) - mu) * rs);
    });
    G::sum2(sd, sdx);
    if (G::rank() == 0) {
      part_dy[u] = sd;
      part_dyx[u] = sdx;
    }
  }
}

// Channels last: per (row group k, row block rb, channel c) sums, stored at [(k * nb + rb) * C + c].
template <class T>
__global__ void __launch_bounds__(kThreads)
    nsc_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x, Problem p, TilePlan tp,
                    const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                    acc_t<T>* __restrict__ part_dy, acc_t<T>* __restrict__ part_dyx) {
  using A = acc_t<T>;
  for (int64_t u = blockIdx.x; u < tp.units; u += gridDim.x) {
    const Tile t = tile_of(u, p, tp);
    A sd = A(0), sdx = A(0);
    if (t.c < p.C) {
      const int64_t s = p.stat(t.k, t.c);
      const A mu = mean[s], rs = rstd[s];
      const int64_t base = t.k * p.R * p.C + t.c;
      const T* in[2] = {dy, x};
      for_batched_values(t.r0 + t.ty, t.r1, t.TY, in, [&](int64_t r) { return base + r * p.C; },
                         [&](int64_t, const T(&v)[2]) {
                           sd += load<A>(v[0]);
                           sdx += load<A>(v[0]) * ((load<A>(v[1]) - mu) * rs);
                         });
    }
    column_sum2(sd, sdx, t);
    if (t.ty == 0 && t.c < p.C) {
      const int64_t o = (t.k * tp.nb + t.rb) * p.C + t.c;
      part_dy[o] = sd;
      part_dyx[o] = sdx;
    }
  }
}

// out[o] = sum over j < terms of in[(o / d) * e + (o % d) * f + j * h]: a warp per output, lanes in
// a fixed stride then the butterfly, so the order depends on `terms` only.
struct SumMap {
  int64_t outputs, terms, d, e, f, h;
  NK_HD int64_t index(int64_t o, int64_t j) const { return (o / d) * e + (o % d) * f + j * h; }
};

template <class A, class O>
__global__ void __launch_bounds__(kThreads)
    strided_sum_kernel(const A* __restrict__ in, SumMap m, O* __restrict__ out) {
  using G = Team<true>;
  for (int64_t o = G::first(); o < m.outputs; o += G::step()) {
    A s = A(0);
    for (int64_t j = G::rank(); j < m.terms; j += G::size()) s += in[m.index(o, j)];
    s = warp_sum(s);
    if (G::rank() == 0) out[o] = store<O>(s);
  }
}

template <class A, class O>
void launch_strided_sum(const A* in, const SumMap& m, O* out, cudaStream_t st) {
  if (m.outputs == 0) return;
  strided_sum_kernel<A, O><<<grid_for(m.outputs, kWarpsPerBlock), kThreads, 0, st>>>(in, m, out);
  check_launch("strided_sum_kernel");
}

// Per statistic s = (k, g): mean(g) and mean(g * xhat) from the (k', c) sums of its k' and c, with
// g = dy * w[c]. ksum rows of sums: k' = n (channels first, or per sample), or one row.
template <class A, class W, bool kWarp>
__global__ void __launch_bounds__(kThreads)
    coefficients_kernel(const A* __restrict__ sum_dy, const A* __restrict__ sum_dyx, const W* __restrict__ w,
                        Problem p, int64_t ksum, A* __restrict__ mg, A* __restrict__ mgx) {
  using G = Team<kWarp>;
  const int64_t nk = p.per_sample ? 1 : ksum;
  const int64_t terms = nk * p.cpg;
  const A inv = A(1) / A(p.count);
  for (int64_t s = G::first(); s < p.num_stats; s += G::step()) {
    const int64_t g = s % p.G, k0 = p.per_sample ? s / p.G : 0;
    A a = A(0), bx = A(0);
    for (int64_t j = G::rank(); j < terms; j += G::size()) {
      const int64_t c = g * p.cpg + j % p.cpg;
      const int64_t o = (k0 + j / p.cpg) * p.C + c;
      const A wc = param(w, c, A(1));
      a += wc * sum_dy[o];
      bx += wc * sum_dyx[o];
    }
    G::sum2(a, bx);
    if (G::rank() == 0) {
      mg[s] = a * inv;
      mgx[s] = bx * inv;
    }
  }
}

// dx of one element with batch statistics (the gradient flows through them) ...
template <class T, class A>
__device__ __forceinline__ T dx_batch(T dy, T x, A wc, A mu, A rs, A mgs, A mgxs) {
  return store<T>(math::row_norm_dx(load<A>(dy) * wc, (load<A>(x) - mu) * rs, rs, mgs, mgxs));
}

// ... and with evaluation statistics: dx = dy * w * rstd, written as the CPU writes it (x unused).
template <class T, class A>
__device__ __forceinline__ T dx_eval(T dy, A wc, A rs) {
  return store<T>(math::row_norm_dx(load<A>(dy) * wc, A(0), rs, A(0), A(0)));
}

template <class T, class W>
__global__ void __launch_bounds__(kThreads)
    ncs_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, Problem p, ChunkPlan cp,
                  bool batch_stats, const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                  const W* __restrict__ w, const acc_t<T>* __restrict__ mg, const acc_t<T>* __restrict__ mgx) {
  using A = acc_t<T>;
  const Lanes l = unit_lanes(cp.warp);
  const int64_t units = p.N * p.C * cp.chunks;
  for (int64_t u = l.first; u < units; u += l.step) {
    const int64_t plane = u / cp.chunks, start = (u % cp.chunks) * cp.chunk_len;
    const int64_t len = cp.chunk_len < p.S - start ? cp.chunk_len : p.S - start;
    const int64_t c = plane % p.C, s = p.stat(plane / p.C, c);
    const A rs = rstd[s], wc = param(w, c, A(1));
    const A mu = batch_stats ? mean[s] : A(0);
    const A mgs = batch_stats ? mg[s] : A(0), mgxs = batch_stats ? mgx[s] : A(0);
    const int64_t off = plane * p.S + start;
    const T* __restrict__ dys = dy + off;
    const T* __restrict__ xs = x + off;
    T* __restrict__ dxs = dx + off;
    const auto at = [](int64_t i) { return i; };
    if (batch_stats) {
      const T* in[2] = {dys, xs};
      for_batched_values(l.rank, len, l.size, in, at, [&](int64_t i, const T(&v)[2]) {
        dxs[i] = dx_batch(v[0], v[1], wc, mu, rs, mgs, mgxs);
      });
    } else {
      const T* in[1] = {dys};
      for_batched_values(l.rank, len, l.size, in, at,
                         [&](int64_t i, const T(&v)[1]) { dxs[i] = dx_eval<T, A>(v[0], wc, rs); });
    }
  }
}

template <class T, class W>
__global__ void __launch_bounds__(kThreads)
    nsc_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, Problem p, TilePlan tp,
                  bool batch_stats, const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                  const W* __restrict__ w, const acc_t<T>* __restrict__ mg, const acc_t<T>* __restrict__ mgx) {
  using A = acc_t<T>;
  for (int64_t u = blockIdx.x; u < tp.units; u += gridDim.x) {
    const Tile t = tile_of(u, p, tp);
    if (t.c >= p.C) continue;  // no block-wide synchronisation below
    const int64_t s = p.stat(t.k, t.c);
    const A rs = rstd[s], wc = param(w, t.c, A(1));
    const A mu = batch_stats ? mean[s] : A(0);
    const A mgs = batch_stats ? mg[s] : A(0), mgxs = batch_stats ? mgx[s] : A(0);
    const int64_t base = t.k * p.R * p.C + t.c;
    const auto at = [&](int64_t r) { return base + r * p.C; };
    if (batch_stats) {
      const T* in[2] = {dy, x};
      for_batched_values(t.r0 + t.ty, t.r1, t.TY, in, at, [&](int64_t o, const T(&v)[2]) {
        dx[o] = dx_batch(v[0], v[1], wc, mu, rs, mgs, mgxs);
      });
    } else {
      const T* in[1] = {dy};
      for_batched_values(t.r0 + t.ty, t.r1, t.TY, in, at,
                         [&](int64_t o, const T(&v)[1]) { dx[o] = dx_eval<T, A>(v[0], wc, rs); });
    }
  }
}

template <class T>
void backward(const ChannelNormBackwardArgs& a, cudaStream_t st) {
  using A = acc_t<T>;
  const Problem p = make_problem(a.shape);
  if (p.C == 0 || p.G == 0) return;
  if (p.N * p.S == 0) {
    // A sum over no values is zero; all-zero bits are +0 in every float dtype.
    if (a.dweight)
      check_cuda(cudaMemsetAsync(a.dweight, 0, size_t(p.C) * dtype_size(a.dweight_dtype), st),
                 "channel_norm_backward: cudaMemsetAsync(dweight)");
    if (a.dbias)
      check_cuda(cudaMemsetAsync(a.dbias, 0, size_t(p.C) * dtype_size(a.dbias_dtype), st),
                 "channel_norm_backward: cudaMemsetAsync(dbias)");
    return;
  }
  const bool want_dx = a.dx != nullptr;
  const bool batch_stats = a.batch_stats;
  // Given coefficients (SyncBatchNorm's global ones) need no sums of this process's values for dx.
  const bool need_sums = (want_dx && batch_stats && !a.coefficients) || a.dweight || a.dbias;
  if (!want_dx && !need_sums) return;
  const T* dy = static_cast<const T*>(a.dy);
  const T* x = static_cast<const T*>(a.x);
  const A* mean = static_cast<const A*>(a.save_mean);
  const A* rstd = static_cast<const A*>(a.save_rstd);
  // (k, c) sums of dy and dy * xhat: k = n (channels first, or per sample), or one k.
  const int64_t ksum = (p.layout == Layout::NCS || p.per_sample) ? p.N : 1;
  const size_t sum_bytes = size_t(ksum * p.C) * sizeof(A);
  // Holders free stream-ordered at scope exit, i.e. after the kernels queued below.
  std::shared_ptr<void> sum_dy_hold, sum_dyx_hold, part_dy_hold, part_dyx_hold;
  A* sum_dy = nullptr;
  A* sum_dyx = nullptr;
  if (need_sums) {
    sum_dy_hold = allocate(sum_bytes, st);
    sum_dyx_hold = allocate(sum_bytes, st);
    sum_dy = static_cast<A*>(sum_dy_hold.get());
    sum_dyx = static_cast<A*>(sum_dyx_hold.get());
    if (p.layout == Layout::NCS) {
      const ChunkPlan cp = plan_chunks(p.N * p.C, p.S);
      const int64_t units = p.N * p.C * cp.chunks;
      A* part_dy = sum_dy;  // one chunk per plane: the unit sums are the plane sums
      A* part_dyx = sum_dyx;
      if (cp.chunks > 1) {
        part_dy_hold = allocate(size_t(units) * sizeof(A), st);
        part_dyx_hold = allocate(size_t(units) * sizeof(A), st);
        part_dy = static_cast<A*>(part_dy_hold.get());
        part_dyx = static_cast<A*>(part_dyx_hold.get());
      }
      if (cp.warp)
        ncs_sums_kernel<T, true><<<grid_for(units, kWarpsPerBlock), kThreads, 0, st>>>(dy, x, p, cp, mean, rstd,
                                                                                        part_dy, part_dyx);
      else
        ncs_sums_kernel<T, false>
            <<<grid_for(units, 1), kThreads, 0, st>>>(dy, x, p, cp, mean, rstd, part_dy, part_dyx);
      check_launch("ncs_sums_kernel");
      if (cp.chunks > 1) {
        const SumMap m{p.N * p.C, cp.chunks, 1, cp.chunks, 0, 1};  // plane q: part[q * chunks + j]
        launch_strided_sum(static_cast<const A*>(part_dy), m, sum_dy, st);
        launch_strided_sum(static_cast<const A*>(part_dyx), m, sum_dyx, st);
      }
    } else {
      const TilePlan tp = plan_tiles(p);
      A* part_dy = sum_dy;  // one row block per group: the tile sums are the (k, c) sums
      A* part_dyx = sum_dyx;
      if (tp.nb > 1) {
        const size_t bytes = size_t(p.K * tp.nb * p.C) * sizeof(A);
        part_dy_hold = allocate(bytes, st);
        part_dyx_hold = allocate(bytes, st);
        part_dy = static_cast<A*>(part_dy_hold.get());
        part_dyx = static_cast<A*>(part_dyx_hold.get());
      }
      nsc_sums_kernel<T><<<grid_for(tp.units, 1), kThreads, 0, st>>>(dy, x, p, tp, mean, rstd, part_dy, part_dyx);
      check_launch("nsc_sums_kernel");
      if (tp.nb > 1) {
        const SumMap m{p.K * p.C, tp.nb, p.C, tp.nb * p.C, 1, p.C};  // (k, c): part[(k * nb + j) * C + c]
        launch_strided_sum(static_cast<const A*>(part_dy), m, sum_dy, st);
        launch_strided_sum(static_cast<const A*>(part_dyx), m, sum_dyx, st);
      }
    }
    // dweight / dbias: sums over k of the (k, c) sums, in the requested dtype.
    const SumMap per_channel{p.C, ksum, p.C, 0, 1, p.C};  // c: sums[j * C + c]
    if (a.dweight) {
      dispatch_float(a.dweight_dtype, [&](auto tag) {
        using O = decltype(tag);
        launch_strided_sum(static_cast<const A*>(sum_dyx), per_channel, static_cast<O*>(a.dweight), st);
      });
    }
    if (a.dbias) {
      dispatch_float(a.dbias_dtype, [&](auto tag) {
        using O = decltype(tag);
        launch_strided_sum(static_cast<const A*>(sum_dy), per_channel, static_cast<O*>(a.dbias), st);
      });
    }
  }
  if (!want_dx) return;
  T* dx = static_cast<T*>(a.dx);
  dispatch_param<T>(a.weight_dtype, [&](auto tag) {
    using W = decltype(tag);
    const W* w = static_cast<const W*>(a.weight);
    std::shared_ptr<void> coef_hold;
    A* mg = nullptr;
    A* mgx = nullptr;
    if (batch_stats && a.coefficients) {
      mg = const_cast<A*>(static_cast<const A*>(a.coefficients));
      mgx = mg + p.num_stats;
    } else if (batch_stats) {
      const int64_t ns = p.num_stats;
      coef_hold = allocate(2 * size_t(ns) * sizeof(A), st);
      mg = static_cast<A*>(coef_hold.get());
      mgx = mg + ns;
      const int64_t terms = (p.per_sample ? 1 : ksum) * p.cpg;
      if (terms <= kWarpMaxTerms)
        coefficients_kernel<A, W, true>
            <<<grid_for(ns, kWarpsPerBlock), kThreads, 0, st>>>(sum_dy, sum_dyx, w, p, ksum, mg, mgx);
      else
        coefficients_kernel<A, W, false><<<grid_for(ns, 1), kThreads, 0, st>>>(sum_dy, sum_dyx, w, p, ksum, mg, mgx);
      check_launch("coefficients_kernel");
    }
    if (p.layout == Layout::NCS) {
      const ChunkPlan cp = plan_chunks(p.N * p.C, p.S);
      const int64_t units = p.N * p.C * cp.chunks;
      ncs_dx_kernel<T, W><<<grid_for(units, cp.warp ? kWarpsPerBlock : 1), kThreads, 0, st>>>(
          dy, x, dx, p, cp, batch_stats, mean, rstd, w, mg, mgx);
      check_launch("ncs_dx_kernel");
    } else {
      const TilePlan tp = plan_tiles(p);
      nsc_dx_kernel<T, W><<<grid_for(tp.units, 1), kThreads, 0, st>>>(dy, x, dx, p, tp, batch_stats, mean, rstd, w,
                                                                      mg, mgx);
      check_launch("nsc_dx_kernel");
    }
  });
}

}  // namespace

void channel_norm_forward(const ChannelNormForwardArgs& args, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { forward<decltype(tag)>(args, s); });
}

void channel_norm_backward(const ChannelNormBackwardArgs& args, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  dispatch_float(args.dtype, [&](auto tag) { backward<decltype(tag)>(args, s); });
}

}  // namespace normkit::cuda

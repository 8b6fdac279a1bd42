// Warp and block reductions of sums and of math::Moments. Blocks are 1-D with blockDim.x a multiple
// of 32 (at most 1024), and every thread of the warp/block must call the reduction: the shuffles use
// the full mask and the block versions synchronise.
#pragma once
#include <cstdint>

#include "normkit/math.h"

namespace normkit::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Butterfly sum: floating-point addition is commutative, so every lane ends with the same bits.
template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

template <class A>
__device__ __forceinline__ math::Moments<A> shfl_xor_moments(const math::Moments<A>& m, int mask) {
  math::Moments<A> r;
  r.count = static_cast<int64_t>(__shfl_xor_sync(kFullMask, static_cast<long long>(m.count), mask));
  r.mean = __shfl_xor_sync(kFullMask, m.mean, mask);
  r.m2 = __shfl_xor_sync(kFullMask, m.m2, mask);
  return r;
}

// Chan merges across the warp. chan_merge(a, b) and chan_merge(b, a) may differ in the last bit, so
// both partners merge with the lower lane's group first: every lane computes the same fixed tree and
// ends with identical bits, so all lanes normalise with identical statistics.
template <class A>
__device__ __forceinline__ math::Moments<A> warp_moments(math::Moments<A> m) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) {
    const math::Moments<A> other = shfl_xor_moments(m, o);
    const bool lower = (threadIdx.x & o) == 0;
    m = lower ? math::chan_merge(m, other) : math::chan_merge(other, m);
  }
  return m;
}

// Block sum, returned to every thread. Each warp re-reduces the per-warp partials itself (same
// inputs, same order, same bits), which saves a broadcast round through shared memory.
template <class A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A partial[kWarpSize];
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int warp = threadIdx.x / kWarpSize;
  const int nwarps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : A(0);
  v = warp_sum(v);
  __syncthreads();  // `partial` is reused by the next call
  return v;
}

// Two sums in one round of synchronisation.
template <class A>
__device__ __forceinline__ void block_sum2(A& a, A& b) {
  __shared__ A partial_a[kWarpSize];
  __shared__ A partial_b[kWarpSize];
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int warp = threadIdx.x / kWarpSize;
  const int nwarps = blockDim.x / kWarpSize;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    partial_a[warp] = a;
    partial_b[warp] = b;
  }
  __syncthreads();
  a = lane < nwarps ? partial_a[lane] : A(0);
  b = lane < nwarps ? partial_b[lane] : A(0);
  a = warp_sum(a);
  b = warp_sum(b);
  __syncthreads();
}

template <class A>
__device__ __forceinline__ void warp_sum2(A& a, A& b) {
  a = warp_sum(a);
  b = warp_sum(b);
}

// Block-wide Chan merge of per-thread moments, returned to every thread (bit-identical everywhere).
template <class A>
__device__ __forceinline__ math::Moments<A> block_moments(math::Moments<A> m) {
  __shared__ long long count[kWarpSize];
  __shared__ A mean[kWarpSize];
  __shared__ A m2[kWarpSize];
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int warp = threadIdx.x / kWarpSize;
  const int nwarps = blockDim.x / kWarpSize;
  m = warp_moments(m);
  if (lane == 0) {
    count[warp] = static_cast<long long>(m.count);
    mean[warp] = m.mean;
    m2[warp] = m.m2;
  }
  __syncthreads();
  math::Moments<A> w;
  if (lane < nwarps) {
    w.count = static_cast<int64_t>(count[lane]);
    w.mean = mean[lane];
    w.m2 = m2[lane];
  }
  w = warp_moments(w);
  __syncthreads();
  return w;
}

}  // namespace normkit::cuda

// Runs of V consecutive elements of any storage dtype read and written as 16-byte vectors (one
// ld/st.global.v4 per 16 bytes instead of one instruction per element), or element by element where
// a pointer or stride is not 16-byte aligned. Both forms give the same values; only the instructions
// differ, so a kernel that picks one at run time gives the same bits either way.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::cuda {

// Elements per 16-byte vector of the storage type T: 8 halves, 4 floats, 2 doubles.
template <class T>
constexpr int kVec16 = int(16 / sizeof(T));

template <class E>
struct alignas(16) Vec16 {
  E v[kVec16<E>];
};

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// out[i] = p[c + i] as A for the columns c + i < n, 0 beyond. `vec`: p + c is 16-byte aligned and
// the run lies wholly inside or wholly outside [0, n); runs of less than 16 bytes ignore it.
template <class A, int V, class E>
__device__ __forceinline__ void load_run(const E* __restrict__ p, int64_t c, int64_t n, bool vec, A (&out)[V]) {
  constexpr int kPer = kVec16<E>;
  if constexpr (V % kPer == 0) {
    if (vec) {
#pragma unroll
      for (int q = 0; q < V / kPer; ++q) {
        Vec16<E> pk{};  // zeros beyond the row
        if (c < n) pk = reinterpret_cast<const Vec16<E>*>(p + c)[q];
#pragma unroll
        for (int i = 0; i < kPer; ++i) out[q * kPer + i] = load<A>(pk.v[i]);
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = c + i < n ? load<A>(p[c + i]) : A(0);
}

// p[c + i] = in[i] stored as E for the columns c + i < n; `vec` as for load_run.
template <int V, class E, class A>
__device__ __forceinline__ void store_run(E* __restrict__ p, int64_t c, int64_t n, bool vec, const A (&in)[V]) {
  constexpr int kPer = kVec16<E>;
  if constexpr (V % kPer == 0) {
    if (vec) {
      if (c >= n) return;
#pragma unroll
      for (int q = 0; q < V / kPer; ++q) {
        Vec16<E> pk;
#pragma unroll
        for (int i = 0; i < kPer; ++i) pk.v[i] = store<E>(in[q * kPer + i]);
        reinterpret_cast<Vec16<E>*>(p + c)[q] = pk;
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (c + i < n) p[c + i] = store<E>(in[i]);
}

}  // namespace normkit::cuda

// Transposition of a sample's channels-last rows into channels-first planes: planes[c * S + s] =
// rows[s * C + c], in square tiles of one vector's lanes that are transposed in registers. (Through
// strided_copy's tiles, a line buffer filled a value at a time, InstanceNorm [32,64,56,56] float32's
// channels-last forward took 3.7-4.0 ms; with these, 2.5-2.6 ms.)
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

#include "cpu/vector_width.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

namespace transpose_detail {

// Lane j of the two halves of a butterfly step of width h over rows a and b (each tile row the next
// row's partner h rows down): lo keeps a's lanes outside the h-wide blocks that move and takes b's
// in, hi the other way round. Steps of h = 1, 2, 4, ... transpose the tile.
constexpr int lo_lane(int64_t j, int64_t h, int64_t L) { return int((j & h) ? L + j - h : j); }
constexpr int hi_lane(int64_t j, int64_t h, int64_t L) { return int((j & h) ? L + j : j + h); }

template <int64_t h, class V, size_t... J>
inline void butterfly(V& a, V& b, std::index_sequence<J...>) {
  constexpr int64_t L = sizeof...(J);
  const V lo = __builtin_shufflevector(a, b, lo_lane(J, h, L)...);
  const V hi = __builtin_shufflevector(a, b, hi_lane(J, h, L)...);
  a = lo;
  b = hi;
}

// Unaligned whole-vector access. (std::memcpy into an array of vectors compiled to 16-byte pieces
// through the stack that 32-byte loads read back: a store-forwarding stall per row.)
template <class E>
struct Unaligned {
  typedef E type __attribute__((vector_size(kVectorBytes), aligned(1), may_alias));
};

template <int64_t h, class V, int64_t L>
inline void transpose_steps(V (&r)[L]) {
  if constexpr (h < L) {
    for (int64_t i = 0; i < L; ++i)
      if ((i & h) == 0) butterfly<h>(r[i], r[i + h], std::make_index_sequence<size_t(L)>{});
    transpose_steps<2 * h>(r);
  }
}

}  // namespace transpose_detail

// Values [c0, c1) of rows [s0, s1) of `rows` (S rows of C values) into `planes` (C planes of S
// values). T: any element of 2, 4 or 8 bytes (moved as bits). (Planes into rows are the same
// transposition with the planes as the rows: S and C swapped.)
template <class T>
void rows_to_planes(const T* rows, int64_t S, int64_t C, int64_t s0, int64_t s1, int64_t c0, int64_t c1,
                    T* planes) {
  using E = std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
  using V = typename Vec<E>::type;
  constexpr int64_t L = Vec<E>::kLanes;
  static_assert(sizeof(T) == sizeof(E), "elements of 2, 4 or 8 bytes");
  const E* in = reinterpret_cast<const E*>(rows);
  E* out = reinterpret_cast<E*>(planes);
  int64_t s = s0;
  for (; s + L <= s1; s += L) {
    int64_t c = c0;
    for (; c + L <= c1; c += L) {
      V r[L];
      using U = typename transpose_detail::Unaligned<E>::type;
      for (int64_t i = 0; i < L; ++i) r[i] = *reinterpret_cast<const U*>(in + (s + i) * C + c);
      transpose_detail::transpose_steps<1>(r);
      for (int64_t i = 0; i < L; ++i) *reinterpret_cast<U*>(out + (c + i) * S + s) = r[i];
    }
    for (; c < c1; ++c)
      for (int64_t i = 0; i < L; ++i) out[c * S + s + i] = in[(s + i) * C + c];
  }
  for (; s < s1; ++s)
    for (int64_t c = c0; c < c1; ++c) out[c * S + s] = in[s * C + c];
}

}  // namespace normkit::cpu::NK_ISA

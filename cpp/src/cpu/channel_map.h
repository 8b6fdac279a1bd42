// Per-channel elementwise maps over channels-last rows (row r, channel c at r * C + c), with the
// per-channel operands held in registers.
//
// A plain loop over c reloads every per-channel operand (mean, rstd, weight, bias, ...) for every
// row: with a run-time C and outputs that may alias them, the compiler cannot keep them in registers.
// Normalizing then costs five loads per vector of output, and a core issues one 64-byte load per
// cycle: channels-last GroupNorm [8,256,64,64] normalized at half the speed of its channels-first
// twin. Here channels go in tiles of a compile-time width (as in column_sums.h): a tile's operands
// are loaded into vector registers once per block of rows, and each row then costs one load per
// input and one store.
//
// The map is one generic function, called with GCC vector types in the tiles and with scalars for
// the last channels, so the per-element formula is the shared one of normkit/math.h in both (each
// vector lane computes exactly what the scalar expression computes).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/column_sums.h"
#include "cpu/stream_store.h"
#include "normkit/dtype.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// 64 bytes of A (1 zmm, 2 ymm or 4 xmm).
template <class A>
struct Vec64 {
  typedef A type __attribute__((vector_size(64)));
  static constexpr int64_t kLanes = 64 / int64_t(sizeof(A));
};

// bfloat16 <-> float on whole vectors, with the bit operations of bits::bf16_to_float and
// bits::float_to_bf16 (the same values). Element by element through a stack array, GCC converted
// in 32-byte halves and reloaded them as one 64-byte vector, a store-forwarding stall per vector
// (channels-last BatchNorm bfloat16 normalized slower than its channels-first twin).
typedef uint16_t U16x16 __attribute__((vector_size(32)));
typedef uint32_t U32x16 __attribute__((vector_size(64)));
typedef float F32x16 __attribute__((vector_size(64)));

// The bits of `from` as a To of the same size (the vector form of bits::u32_as_float and
// bits::float_as_u32).
template <class To, class From>
inline To bits_as(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To to;
  std::memcpy(&to, &from, sizeof(to));
  return to;
}

// 16 two-byte values (float16 or bfloat16 bits) from or to memory.
inline U16x16 load_u16x16(const void* p) {
  U16x16 h;
  std::memcpy(&h, p, sizeof(h));
  return h;
}
inline void store_u16x16(void* p, const U16x16& h) { std::memcpy(p, &h, sizeof(h)); }

inline F32x16 bf16_vec_to_float(const bfloat16_t* p) {
  const U16x16 h = load_u16x16(p);
  return bits_as<F32x16>(__builtin_convertvector(h, U32x16) << 16);
}

inline void float_vec_to_bf16(bfloat16_t* p, const F32x16& f) {
  const U32x16 u = bits_as<U32x16>(f);
  const U32x16 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const U32x16 nan = (u >> 16) | 0x40u;
  const U32x16 r = (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
  store_u16x16(p, __builtin_convertvector(r, U16x16));
}

// float16 <-> float on whole vectors: bits::half_to_float and bits::float_to_half, step for step on
// vector types (the same values; element by element, float16 channels-last BatchNorm ran 3x slower
// than bfloat16).
inline F32x16 half_vec_to_float(const half_t* p) {
  const U32x16 h = __builtin_convertvector(load_u16x16(p), U32x16);
  const U32x16 sign = (h & 0x8000u) << 16;
  U32x16 o = (h & 0x7fffu) << 13;
  const U32x16 exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;
  o += exp == 0x0f800000u ? U32x16{} + ((128u - 16u) << 23) : U32x16{};
  const F32x16 sub = bits_as<F32x16>(o + (1u << 23)) - bits_as<F32x16>(U32x16{} + (113u << 23));
  return bits_as<F32x16>((exp == 0u ? bits_as<U32x16>(sub) : o) | sign);
}

inline void float_vec_to_half(half_t* p, const F32x16& f) {
  const U32x16 u = bits_as<U32x16>(f);
  const U32x16 sign = (u >> 16) & 0x8000u;
  const U32x16 a = u & 0x7fffffffu;
  const U32x16 mant_odd = (a >> 13) & 1u;
  const U32x16 normal = (a + ((15u - 127u) << 23) + 0xfffu + mant_odd) >> 13;
  const U32x16 magic = U32x16{} + (((127u - 15u) + (23u - 10u) + 1u) << 23);
  const U32x16 sub = bits_as<U32x16>(bits_as<F32x16>(a) + bits_as<F32x16>(magic)) - magic;
  U32x16 r = a < (113u << 23) ? sub : normal;
  r = a >= (143u << 23) ? U32x16{} + 0x7c00u : r;
  r = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x1ffu)) : r;
  store_u16x16(p, __builtin_convertvector(r | sign, U16x16));
}

template <class T, class A>
inline typename Vec64<A>::type load_vec(const T* p) {
  typename Vec64<A>::type v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, p, sizeof(v));
  } else if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    v = bf16_vec_to_float(p);
  } else if constexpr (std::is_same_v<T, half_t> && std::is_same_v<A, float>) {
    v = half_vec_to_float(p);
  } else {
    alignas(64) A t[Vec64<A>::kLanes];
#pragma omp simd
    for (int64_t j = 0; j < Vec64<A>::kLanes; ++j) t[j] = load<A>(p[j]);
    std::memcpy(&v, t, sizeof(v));
  }
  return v;
}

template <class T, class A>
inline void store_vec(T* p, const typename Vec64<A>::type& v) {
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(p, &v, sizeof(v));
  } else if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    float_vec_to_bf16(p, v);
  } else if constexpr (std::is_same_v<T, half_t> && std::is_same_v<A, float>) {
    float_vec_to_half(p, v);
  } else {
    alignas(64) A t[Vec64<A>::kLanes];
    std::memcpy(t, &v, sizeof(v));
#pragma omp simd
    for (int64_t j = 0; j < Vec64<A>::kLanes; ++j) p[j] = store<T>(t[j]);
  }
}

// Tiles of kVecs vectors from channel c0 on, while whole ones fit in C, over `rows` rows: out row r =
// fn(the inputs' row r, the operands). Returns the first channel past the tiles.
template <int kVecs, int I, int P, class T, class A, class Fn>
inline int64_t map_tiles(int64_t c0, int64_t C, int64_t rows, const T* const (&in)[I], T* out,
                         const A* const (&par)[P], Fn& fn) {
  using V = typename Vec64<A>::type;
  constexpr int64_t L = Vec64<A>::kLanes, W = L * kVecs;
  for (; c0 + W <= C; c0 += W) {
    V op[kVecs][P];
    for (int v = 0; v < kVecs; ++v)
      for (int q = 0; q < P; ++q) std::memcpy(&op[v][q], par[q] + c0 + v * L, sizeof(V));
    for (int64_t r = 0; r < rows; ++r)
      for (int v = 0; v < kVecs; ++v) {
        V a[I];
        for (int i = 0; i < I; ++i) a[i] = load_vec<T, A>(in[i] + r * C + c0 + v * L);
        store_vec<T, A>(out + r * C + c0 + v * L, fn(a, op[v]));
      }
  }
  return c0;
}

// Widest tile the ISA holds in registers with P operand vectors per tile vector: AVX-512 has 32
// vector registers of 64 bytes; with 16 (AVX2, SSE) a 64-byte vector takes 2 or 4 of them.
template <int P>
constexpr int kWideTile =
#if defined(__AVX512F__)
    P <= 5 ? 4 : 2;
#else
    1;
#endif

// Maps `rows` rows of C channels: tiles, then the last channels with scalars.
template <int I, int P, class T, class A, class Fn>
inline void map_block(int64_t C, int64_t rows, const T* const (&in)[I], T* out,
                      const A* const (&par)[P], Fn& fn) {
  int64_t c0 = map_tiles<kWideTile<P>, I, P>(0, C, rows, in, out, par, fn);
  if constexpr (kWideTile<P> > 2) c0 = map_tiles<2, I, P>(c0, C, rows, in, out, par, fn);
  if constexpr (kWideTile<P> > 1) c0 = map_tiles<1, I, P>(c0, C, rows, in, out, par, fn);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < C; ++c) {
      A a[I], op[P];
      for (int i = 0; i < I; ++i) a[i] = load<A>(in[i][r * C + c]);
      for (int q = 0; q < P; ++q) op[q] = par[q][c];
      out[r * C + c] = store<T>(fn(a, op));
    }
}

// Rows [r0, r1) of C channels: out[r][c] = store(fn(inputs[r][c], operands[c])), where fn(a, op)
// takes arrays of I input values and P operand values (vectors or scalars). The rows go in blocks
// of ~8 KB, each walked tile by tile while in L1. When `stream`, a block is produced into a
// cache-resident stage and streamed out (stream_store.h); the caller fences.
template <int I, int P, class T, class A, class Fn>
inline void map_rows(int64_t C, int64_t r0, int64_t r1, const T* const (&in)[I], T* out, const A* const (&par)[P],
                     bool stream, Fn&& fn) {
  constexpr int64_t kStage = kStageElements<T>;
  const int64_t block = std::max<int64_t>(1, kStage / C);
  stream = stream && C <= kStage;
  const bool strided = walks_strided(C, kWideTile<P> * Vec64<A>::kLanes);
  alignas(64) T stage[kStage];
  for (int64_t r = r0; r < r1; r += block) {
    const int64_t rows = std::min(block, r1 - r);
    const T* rin[I];
    for (int i = 0; i < I; ++i) rin[i] = in[i] + r * C;
    // A strided tile-by-tile walk reads the block in address order first (touch_block).
    if (strided)
      for (int i = 0; i < I; ++i) touch_block(rin[i], rows * C * int64_t(sizeof(T)));
    if (stream) {
      map_block(C, rows, rin, stage, par, fn);
      stream_copy(out + r * C, stage, size_t(rows * C) * sizeof(T));
    } else {
      map_block(C, rows, rin, out + r * C, par, fn);
    }
  }
}

}  // namespace normkit::cpu::NK_ISA

// Per-channel sums over the rows of a channels-last block (row r, channel c at r * C + c), with the
// accumulators in registers. The plain loop `acc[c] += term(r, c)` over a run-time C loads and stores
// every accumulator once per row (the compiler cannot keep a run-time-length array in registers),
// which made the channels-last statistics store-bound. Here channels go in tiles of a compile-time
// width whose accumulators live in registers across all rows; the channels past the last whole tile
// use the plain loop.
//
// Every channel's sum still starts at zero and adds the rows in order, so the result is bitwise that
// of the plain loop: the tiling changes the speed, never a value.
#pragma once
#include <cstdint>
#include <cstring>

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// The accumulators of a tile: two 64-byte vectors (GCC/Clang vector extension, lowered to the ISA's
// registers: 2 zmm, 4 ymm or 8 xmm). A plain `A acc[W]` array indexed inside the vectorized loop stays
// in memory, and each row then waits for the previous row's store. Each row's terms go through a
// small array that the compiler keeps in registers too.
template <class A> struct ColumnTile {
  typedef A Vec __attribute__((vector_size(64)));
  static constexpr int64_t kLanes = 64 / sizeof(A), kVecs = 2, kWidth = kLanes * kVecs;
  Vec acc[kVecs] = {};
  void add(const A* t) {
    for (int v = 0; v < kVecs; ++v) {
      Vec tv;
      std::memcpy(&tv, t + v * kLanes, sizeof(Vec));
      acc[v] += tv;
    }
  }
  void store(A* out) const { std::memcpy(out, acc, sizeof(acc)); }
};

// s[c] = sum over r in [0, rows) of term(r, c), for c in [0, C).
template <class A, class Term>
inline void column_sum(int64_t C, int64_t rows, A* s, Term&& term) {
  constexpr int64_t W = ColumnTile<A>::kWidth;
  int64_t c0 = 0;
  for (; c0 + W <= C; c0 += W) {
    ColumnTile<A> tile;
    for (int64_t r = 0; r < rows; ++r) {
      alignas(64) A t[W];
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) t[j] = term(r, c0 + j);
      tile.add(t);
    }
    tile.store(s + c0);
  }
  if (c0 == C) return;
#pragma omp simd
  for (int64_t c = c0; c < C; ++c) s[c] = 0;
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t c = c0; c < C; ++c) s[c] += term(r, c);
  }
}

// Two sums in one pass: term(r, c, a, b) returns its two terms through a and b.
template <class A, class Term>
inline void column_sum2(int64_t C, int64_t rows, A* s0, A* s1, Term&& term) {
  constexpr int64_t W = ColumnTile<A>::kWidth;
  int64_t c0 = 0;
  for (; c0 + W <= C; c0 += W) {
    ColumnTile<A> tile0, tile1;
    for (int64_t r = 0; r < rows; ++r) {
      alignas(64) A t0[W], t1[W];
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) term(r, c0 + j, t0[j], t1[j]);
      tile0.add(t0);
      tile1.add(t1);
    }
    tile0.store(s0 + c0);
    tile1.store(s1 + c0);
  }
  if (c0 == C) return;
#pragma omp simd
  for (int64_t c = c0; c < C; ++c) s0[c] = s1[c] = 0;
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t c = c0; c < C; ++c) {
      A a, b;
      term(r, c, a, b);
      s0[c] += a;
      s1[c] += b;
    }
  }
}

}  // namespace normkit::cpu::NK_ISA

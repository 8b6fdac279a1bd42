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
#include "cpu/vector_convert.h"
#include "normkit/dtype.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// The next block's inputs, requested into L2 a few lines at a time (step) while the current block
// is walked, so that their misses overlap with the walk's work (see map_rows).
template <int I>
struct AheadLines {
  const char* cur[I] = {};
  const char* end[I] = {};
  int64_t per_step = 1;
  // Input i's next block [p, p + bytes), over about `steps` steps.
  void set(int i, const void* p, int64_t bytes, int64_t steps) {
    end[i] = static_cast<const char*>(p) + bytes;
    cur[i] = static_cast<const char*>(p) - reinterpret_cast<uintptr_t>(p) % 64;  // (from its first line)
    per_step = std::max(per_step, (bytes / 64 + steps - 1) / std::max<int64_t>(steps, 1));
  }
  void step() {
    for (int i = 0; i < I; ++i)
      for (int64_t k = 0; k < per_step && cur[i] < end[i]; ++k, cur[i] += 64) __builtin_prefetch(cur[i], 0, 2);
  }
  void finish() {
    for (int i = 0; i < I; ++i)
      for (; cur[i] < end[i]; cur[i] += 64) __builtin_prefetch(cur[i], 0, 2);
  }
};

// Tiles of kVecs vectors from channel c0 on, while whole ones fit in C, over `rows` rows: out row r =
// fn(the inputs' row r, the operands). Returns the first channel past the tiles.
template <int kVecs, int I, int P, class T, class A, class Fn>
inline int64_t map_tiles(int64_t c0, int64_t C, int64_t rows, const T* const (&in)[I], T* out,
                         const A* const (&par)[P], Fn& fn, AheadLines<I>& ahead) {
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
        ahead.step();
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
                      const A* const (&par)[P], Fn& fn, AheadLines<I>& ahead) {
  int64_t c0 = map_tiles<kWideTile<P>, I, P>(0, C, rows, in, out, par, fn, ahead);
  if constexpr (kWideTile<P> > 2) c0 = map_tiles<2, I, P>(c0, C, rows, in, out, par, fn, ahead);
  if constexpr (kWideTile<P> > 1) c0 = map_tiles<1, I, P>(c0, C, rows, in, out, par, fn, ahead);
  ahead.finish();
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
    // A strided tile-by-tile walk: the first block is read in address order first (touch_block),
    // and each block's walk requests the next block's lines as it goes (AheadLines), a line per
    // input per tile vector or so; touching every block first left the core waiting on the touch's
    // misses, then computing with the memory idle. GroupNorm [8,256,64,64] float32 channels-last
    // backward (dx maps 256 channels in 4 tiles): best of 15 calls, 6 alternating process pairs,
    // 4.8-6.1 -> 4.7-5.7 ms, faster in 5 of 6 (~12%); its forward within the noise. (Spread requests,
    // unlike the burst of prefetches that touch_block replaced. The same requests for the next block
    // of the column sums measured no faster.)
    AheadLines<I> ahead;
    if (strided) {
      if (r == r0)
        for (int i = 0; i < I; ++i) touch_block(rin[i], rows * C * int64_t(sizeof(T)));
      const int64_t next = std::min(block, r1 - r - rows);
      for (int i = 0; i < I && next > 0; ++i)
        ahead.set(i, rin[i] + rows * C, next * C * int64_t(sizeof(T)), rows * C / Vec64<A>::kLanes);
    }
    if (stream) {
      map_block(C, rows, rin, stage, par, fn, ahead);
      stream_copy(out + r * C, stage, size_t(rows * C) * sizeof(T));
    } else {
      map_block(C, rows, rin, out + r * C, par, fn, ahead);
    }
  }
}

}  // namespace normkit::cpu::NK_ISA

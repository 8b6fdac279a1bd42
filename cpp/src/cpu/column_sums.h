// Per-channel sums over the rows of a channels-last block (row r, channel c at r * C + c), with the
// accumulators in registers. The plain loop `s[c] += term(r, c)` over a run-time C loads and stores
// every accumulator once per row, and each row then waits for the previous row's store: that made
// these sums latency-bound. Here channels go in tiles of a compile-time width whose accumulators stay
// in registers across all rows: tiles of 4 vectors (64 float channels), then at most one of 2 and
// one of 1 for what remains; the channels past the last tile use the plain loop. (Not for short row
// counts: LocalResponseNorm's 5-row windows measured no faster.)
//
// Wide tiles matter when C is small: a row of 64 float channels (BatchNorm's C = 64) is then one
// tile, so a pass reads its block in address order instead of two interleaved halves. In
// interleaved A/B runs against 2-vector tiles, BatchNorm2d(64) channels-last [32,64,56,56] ran
// 7-10% faster forward and 20% faster backward (float32 and bfloat16, AVX-512, AVX2 and baseline);
// GroupNorm with C = 256 was unchanged.
//
// Rows of at least kAddressOrderChannels channels go in address order instead, every accumulator
// in memory (L1): an accumulator's next update then comes a row (128 values or more) after its last,
// which hides the store's latency, and each row is read once in order where the tiles read it in
// pieces, one per pass over the block. Core calls alternating in one process (Zen 3, float32
// channels last): GroupNorm [8,256,64,64] forward 2.77-3.08 -> 2.49-2.78 ms, backward 4.67 -> 3.75
// ms; BatchNorm backward [8,512,28,28] 1.87 -> 1.30 ms, [8,256,56,56] 3.68 -> 2.94 ms, forward
// 2.09 -> 1.85 ms; C = 1024 and 2048 alike or faster; C = 64 4-9% slower, hence the threshold.
//
// Each sum adds the rows in chunks of kChunkRows: a chunk's rows in order from zero, then the chunk
// sums in order. One running sum over thousands of rows (a small C gives blocks of that many rows)
// rounds every term against the whole sum, an error that grows with the row count; chunks bound it
// by about (kChunkRows + rows / kChunkRows) roundings. The tiles and the plain loop for the last
// channels chunk add the same terms in the same order: the tiling changes the speed, never a value.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/vector_width.h"
#include "normkit/math.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// kLines 64-byte lines of columns per tile, held in vectors of the build's width (GCC/Clang vector
// extension, vector_width.h): a tile's width in values is the same in every build. A plain
// `A acc[W]` indexed inside a vectorized loop stays in memory; the terms of a row pass through a
// small array that the compiler keeps in registers too.
template <class A, int kLines>
struct ColumnTile {
  using V = typename NK_ISA::Vec<A>::type;
  static constexpr int64_t kLanes = NK_ISA::Vec<A>::kLanes, kWidth = 64 / int64_t(sizeof(A)) * kLines,
                           kVecs = kWidth / kLanes;
  V sum[kVecs] = {}, dot[kVecs] = {};

  static V at(const A* t, int v) {
    V r;
    std::memcpy(&r, t + v * kLanes, sizeof(V));
    return r;
  }
  void add(const A* a) {
    for (int v = 0; v < kVecs; ++v) sum[v] += at(a, v);
  }
  void add_product(const A* a, const A* b) {
    for (int v = 0; v < kVecs; ++v) dot[v] = math::mul_add(at(a, v), at(b, v), dot[v]);
  }
  // Adds a chunk's sums (takes them as they are for the first chunk).
  void add_chunk(const ColumnTile& c, bool first) {
    for (int v = 0; v < kVecs; ++v) {
      sum[v] = first ? c.sum[v] : sum[v] + c.sum[v];
      dot[v] = first ? c.dot[v] : dot[v] + c.dot[v];
    }
  }
};

// Rows per chunk of a sum (see above).
constexpr int64_t kChunkRows = 64;

// Tiles of kLines lines from channel c0 on, while whole ones fit in C; returns the first channel
// past them.
template <int kLines, bool kSum, bool kDot, class A, class Term>
inline int64_t column_tiles(int64_t c0, int64_t C, int64_t rows, A* s0, A* s1, Term& term) {
  using Tile = ColumnTile<A, kLines>;
  constexpr int64_t W = Tile::kWidth;
  for (; c0 + W <= C; c0 += W) {
    Tile total;
    for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
      Tile chunk;
      for (int64_t r = r0; r < std::min(rows, r0 + kChunkRows); ++r) {
        alignas(64) A ta[W], tb[W];
#pragma omp simd
        for (int64_t j = 0; j < W; ++j) term(r, c0 + j, ta[j], tb[j]);
        if constexpr (kSum) chunk.add(ta);
        if constexpr (kDot) chunk.add_product(ta, tb);
      }
      total.add_chunk(chunk, r0 == 0);
    }
    if constexpr (kSum) std::memcpy(s0 + c0, total.sum, sizeof(total.sum));
    if constexpr (kDot) std::memcpy(s1 + c0, total.dot, sizeof(total.dot));
  }
  return c0;
}

// Channels [c0, C) summed in address order, chunk by chunk as the tiles, a chunk's sums in p0 and p1
// (sums of no rows are 0).
template <bool kSum, bool kDot, class A, class Term>
inline void address_order_sums(int64_t c0, int64_t C, int64_t rows, A* s0, A* s1, A* p0, A* p1, Term& term) {
  const int64_t n = C - c0;
  for (int64_t c = c0; c < C; ++c) {
    if constexpr (kSum) s0[c] = 0;
    if constexpr (kDot) s1[c] = 0;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    for (int64_t c = 0; c < n; ++c) p0[c] = p1[c] = A(0);
    for (int64_t r = r0; r < std::min(rows, r0 + kChunkRows); ++r) {
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) {
        A a, b;
        term(r, c0 + c, a, b);
        if constexpr (kSum) p0[c] += a;
        if constexpr (kDot) p1[c] = math::mul_add(a, b, p1[c]);
      }
    }
    for (int64_t c = 0; c < n; ++c) {
      if constexpr (kSum) s0[c0 + c] = r0 == 0 ? p0[c] : s0[c0 + c] + p0[c];
      if constexpr (kDot) s1[c0 + c] = r0 == 0 ? p1[c] : s1[c0 + c] + p1[c];
    }
  }
}

// Channels from which a row's sums go in address order (see above).
constexpr int64_t kAddressOrderChannels = 128;

// The kernel of column_sum / column_sum2: for c in [0, C), over r in [0, rows),
// s0[c] = sum of a (kSum) and s1[c] = sum of a * b (kDot, each product fused into its add:
// math::mul_add), with term(r, c, a, b).
template <bool kSum, bool kDot, class A, class Term>
inline void column_sums(int64_t C, int64_t rows, A* s0, A* s1, Term&& term) {
  if (C >= kAddressOrderChannels) {
    thread_local std::vector<A> chunk;  // (grows to the widest row a thread has summed)
    chunk.resize(size_t(2 * C));
    address_order_sums<kSum, kDot>(0, C, rows, s0, s1, chunk.data(), chunk.data() + C, term);
    return;
  }
  int64_t c0 = column_tiles<4, kSum, kDot>(0, C, rows, s0, s1, term);
  c0 = column_tiles<2, kSum, kDot>(c0, C, rows, s0, s1, term);
  c0 = column_tiles<1, kSum, kDot>(c0, C, rows, s0, s1, term);
  if (c0 == C) return;
  // Fewer channels than one vector: the plain loop.
  constexpr int64_t kMax = ColumnTile<A, 1>::kWidth;
  A part0[kMax], part1[kMax];
  address_order_sums<kSum, kDot>(c0, C, rows, s0, s1, part0, part1, term);
}

// s[c] = sum over r of term(r, c).
template <class A, class Term>
inline void column_sum(int64_t C, int64_t rows, A* s, Term&& term) {
  column_sums<true, false>(C, rows, s, static_cast<A*>(nullptr), [&](int64_t r, int64_t c, A& a, A& b) {
    a = term(r, c);
    b = A(0);
  });
}

// Both: s0[c] = sum of a and s1[c] = sum of a * b, in one pass.
template <class A, class Term>
inline void column_sum2(int64_t C, int64_t rows, A* s0, A* s1, Term&& term) {
  column_sums<true, true>(C, rows, s0, s1, term);
}

}  // namespace normkit::cpu::NK_ISA

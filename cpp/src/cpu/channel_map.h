// Per-channel elementwise maps over channels-last rows (row r, channel c at r * C + c).
//
// The rows are walked in address order, a vector of each input at a time, each vector's
// operands (mean, rstd, weight, bias, ...) loaded from the per-channel arrays, which stay in L1.
// Until 2026-11-23 the rows went in blocks walked column tile by column tile, a tile's operands
// loaded once per block "into registers": GCC kept them in a stack array instead (stored once per
// tile and block, then reloaded per vector), so the tiles cost extra stores, and with rows of 2 KB
// and more the walk across rows ran at half the speed of a walk in address order (a load of row
// r + k then sits 4 KB past a store to row r still in flight, a likely cause). BatchNorm2d eval on
// channels-last tensors (the map alone, best of 7, three alternating process pairs), tile walk ->
// this walk: float32 [8,512,28,28] 0.77-1.26 -> 0.44-0.48 ms, [8,128,56,56] 0.50-0.92 -> 0.35-0.42,
// [8,1024,14,14] and [8,2048,7,7] alike or faster, [32,64,56,56] and [8,256,56,56] (DRAM bound) alike;
// bfloat16 alike, [8,256,56,56] 0.86-2.9 -> 0.79-0.82 ms.
//
// The map is one generic function, called with GCC vector types and with scalars for a row's last
// channels, so the per-element formula is the shared one of normkit/math.h in both (each vector lane
// computes exactly what the scalar expression computes).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/stream_store.h"
#include "cpu/vector_convert.h"
#include "normkit/dtype.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

#if NK_BF16_PAIRS
// map_rows for bfloat16 rows of whole pairs of vectors (C a multiple of kBf16Pair), the values converted in
// even/odd pairs (vector_convert.h load_bf16_pairs): each operand array is first split the same way
// (split_in_pair_order: two permutes per 32 channels; split value by value, the copies cost ~5% of
// [8,2048,7,7]'s eval map). BatchNorm2d bfloat16 [32,64,56,56] channels last, core calls,
// alternating builds, AVX-512: eval 1012-1167 -> 750-946 us, train forward 1440-1676 -> 1363-1514 us,
// backward 1943-2185 -> 1650-1916 us; AVX2 (Zen 3): train forward 1800-2192 -> 1363-1520 us,
// backward 2578-2644 -> 1705-1881 us.
template <int I, int P, class Fn>
inline void map_rows_in_pairs(int64_t C, int64_t r0, int64_t r1, const bfloat16_t* const (&in)[I], bfloat16_t* out,
                              const float* const (&par)[P], bool stream, Fn& fn) {
  thread_local std::vector<float> split;
  split.resize(size_t(P * C));
  for (int p = 0; p < P; ++p) split_in_pair_order(par[p], C, split.data() + p * C);
  const int64_t base = r0 * C;
  const float* const ops = split.data();
  // (The loop reads locals only: its vector stores may alias anything, which made GCC reload C and
  // the operand pointers from memory after every store; no time measured either way: memory bound.)
  auto pairs = [&, C, ops](auto stream_tag, int64_t i0, int64_t len, bfloat16_t* dst) {
    const bfloat16_t* src[I];
    for (int k = 0; k < I; ++k) src[k] = in[k] + base + i0;
    for (int64_t j = 0, c = (base + i0) % C; j < len; j += kBf16Pair) {
      FloatVec qe[P], qo[P];
      // (get, not a memcpy into the arrays: on AVX2, GCC copied those in 16-byte halves through the
      // stack that 32-byte loads then read back, a store-forwarding stall per operand.)
      for (int p = 0; p < P; ++p) {
        qe[p] = get<float, kFloatLanes>(ops + p * C + c);
        qo[p] = get<float, kFloatLanes>(ops + p * C + c + kBf16Pair / 2);
      }
      map_bf16_pair<decltype(stream_tag)::value>(src, j, dst + j, qe, qo, fn);
      c += kBf16Pair;
      if (c == C) c = 0;
    }
  };
  write_from_registers(out + base, (r1 - r0) * C, stream, pairs);
}
#endif

// Rows [r0, r1) of C channels: out[r][c] = store(fn(inputs[r][c], operands[c])), where fn(a, op)
// takes arrays of I input values and P operand values (vectors or scalars). When `stream`, the
// output is streamed out (stream_store.h): rows of whole vectors straight from registers, other
// rows through a cache-resident stage; the caller fences.
template <int I, int P, class T, class A, class Fn>
inline void map_rows(int64_t C, int64_t r0, int64_t r1, const T* const (&in)[I], T* out, const A* const (&par)[P],
                     bool stream, Fn&& fn) {
  using V = decltype(splat<A, Vec<A>::kLanes>(A()));
  constexpr int64_t L = Vec<A>::kLanes;
  const int64_t base = r0 * C;
#if NK_BF16_PAIRS
  if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    if (C % kBf16Pair == 0) {
      map_rows_in_pairs(C, r0, r1, in, out, par, stream, fn);
      return;
    }
  }
#endif
  // Rows of whole vectors (a stage holds whole vectors too): one flat loop, the channel offset
  // wrapping at the row's end (a loop per row cost 10-20% on rows of a few vectors: C = 64).
  // (The loop reads locals only, as map_rows_in_pairs': GCC reloaded the operand pointers from the
  // caller's array after every store. GroupNorm [8,256,64,64] channels-last forward, core calls
  // alternating builds: 2.89-3.19 -> 2.56-3.10 ms.)
  auto whole_vectors = [&](auto stream_tag, int64_t i0, int64_t len, T* dst) {
    const int64_t row = C;
    const T* src[I];
    const A* ops[P];
    for (int k = 0; k < I; ++k) src[k] = in[k] + base + i0;
    for (int p = 0; p < P; ++p) ops[p] = par[p];
    for (int64_t j = 0, c = (base + i0) % row; j < len; j += L) {
      V a[I], q[P];
      for (int k = 0; k < I; ++k) a[k] = get<A, L>(src[k] + j);
      for (int p = 0; p < P; ++p) q[p] = get<A, L>(ops[p] + c);
      put_out<decltype(stream_tag)::value, A, L>(dst + j, fn(a, q));
      c += L;
      if (c == row) c = 0;
    }
  };
  if constexpr (std::is_same_v<T, A>) {
    if (C % L == 0) {
      write_from_registers(out + base, (r1 - r0) * C, stream, whole_vectors);
      return;
    }
  }
  write_staged(out + base, (r1 - r0) * C, stream, [&](int64_t i0, int64_t len, T* dst) {
    if (C % L == 0) {
      whole_vectors(std::false_type{}, i0, len, dst);
      return;
    }
    // Values [base + i0, base + i0 + len), a piece of a row at a time (a stage may end mid-row; one
    // division per stage, not per row: short rows are a few vectors).
    for (int64_t i = base + i0, end = i + len, c0 = i % C; i < end; c0 = 0) {
      const int64_t n = std::min(C - c0, end - i);
      T* d = dst + (i - base - i0);
      vector_loop<A>(n, [&](int64_t j, auto lanes) {
        constexpr int64_t K = decltype(lanes)::value;
        decltype(splat<A, K>(A())) a[I], q[P];
        for (int k = 0; k < I; ++k) a[k] = get<A, K>(in[k] + i + j);
        for (int p = 0; p < P; ++p) q[p] = get<A, K>(par[p] + c0 + j);
        put<A, K>(d + j, fn(a, q));
      });
      i += n;
    }
  });
}

}  // namespace normkit::cpu::NK_ISA

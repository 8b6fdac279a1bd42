// Non-temporal stores for large outputs, from registers (stream_vector) or through a cache-resident
// stage (stream_copy, write_staged). A normal store first reads the destination line into the
// cache (read-for-ownership), so writing y costs a read and a write of DRAM; streaming stores skip
// the read, which turns a 3x-tensor-bytes forward into the 2x minimum. Used only for outputs too
// large to stay in the last-level cache beside their inputs (streams_output), whose lines would be
// evicted before anyone reads them anyway.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

// Per-ISA namespace: these inline helpers are compiled once per instruction set, and one name with
// three bodies would let the linker hand AVX-512 code to the baseline kernels.
namespace normkit::cpu::NK_ISA {

// Outputs of at least cpu::streaming_output_bytes (a quarter of the last-level cache, at most 24
// MiB) are written with streaming stores; below, an output and its input can still share the cache.
// Measured op by op, interleaved. Intel Xeon, 260 MB last-level cache: plain stores faster for a
// 16 MiB output (LayerNorm bfloat16 [8192, 1024]: ~7%), streaming from 8 MiB slower for the 12.8-16
// MB bfloat16 outputs (BatchNorm [32,64,56,56] forward 0.86 -> 1.05 ms, LayerNorm [8192, 1024] 1.15
// -> 1.48 ms), streaming faster from 32 MiB (LayerNorm float32 forward: 13-28%, GroupNorm: 5-26%).
// AMD Zen 3, 32 MiB L3 per 8-core complex (2026-11-24, bench cases with torch interleaved, the
// threshold switched between rounds in one process, 6 rounds): streaming from 8 MiB instead of 24
// made BatchNorm [32,64,56,56] bfloat16 forward 1515 -> 1319 us (median), LayerNorm [8192, 1024]
// bfloat16 forward+backward 6451 -> 5895 us, channels-last BatchNorm bfloat16 1384 -> 1341 us.
// Judge store types inside the benchmark, not in a loop of one op: that rewrites one output buffer
// while it sits dirty in the cache, which favours plain stores.
inline bool streams_output(size_t bytes) { return bytes >= cpu::streaming_output_bytes; }

// Copies n bytes from src (a cache-resident buffer) to dst, streaming every whole aligned vector.
inline void stream_copy(void* dst, const void* src, size_t n) {
#if defined(__AVX512F__)
  constexpr size_t kVec = 64;
#elif defined(__AVX__)
  constexpr size_t kVec = 32;
#elif defined(__SSE2__)
  constexpr size_t kVec = 16;
#else
  constexpr size_t kVec = 0;
#endif
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  if constexpr (kVec != 0) {
    const size_t head = std::min(n, (kVec - reinterpret_cast<uintptr_t>(d) % kVec) % kVec);
    std::memcpy(d, s, head);
    size_t i = head;
    for (; i + kVec <= n; i += kVec) {
#if defined(__AVX512F__)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(d + i), _mm512_loadu_si512(s + i));
#elif defined(__AVX__)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
#else
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
#endif
    }
    std::memcpy(d + i, s + i, n - i);
  } else {
    std::memcpy(d, s, n);
  }
}

// Streams the vector v (in registers: one zmm, ymm or xmm of the build) to p, aligned to its size:
// loops that compute whole vectors of an output (map_run, map_rows, the row norms' forward) store
// them so, without write_staged's stage, whose copy loads and stores every vector once more. In the
// benchmark, alternating builds (float32 [32,64,56,56] unless said; AVX-512): LayerNorm [8192, 1024]
// forward 1.40-1.43 -> 1.31 ms, BatchNorm 1.25-1.31 -> 1.18 ms, channels last 1.51-1.59 -> 1.40-1.50
// ms, InstanceNorm 1.17-1.19 -> 1.03-1.07 ms (forward+backward 3.13-3.15 -> 2.83-2.91), GroupNorm
// [8,256,64,64] 1.55-1.56 -> 1.48 ms.
template <class V>
inline void stream_vector(void* p, const V& v) {
#if defined(__AVX512F__)
  using R = __m512i;
#elif defined(__AVX__)
  using R = __m256i;
#elif defined(__SSE2__)
  using R = __m128i;
#else
  using R = V;
#endif
  static_assert(sizeof(V) == sizeof(R), "a vector of the build's width");
  R t;
  std::memcpy(&t, &v, sizeof(t));
#if defined(__AVX512F__)
  _mm512_stream_si512(static_cast<R*>(p), t);
#elif defined(__AVX__)
  _mm256_stream_si256(static_cast<R*>(p), t);
#elif defined(__SSE2__)
  _mm_stream_si128(static_cast<R*>(p), t);
#else
  std::memcpy(p, &t, sizeof(t));
#endif
}

// Elements of T from p to the first 64-byte boundary at or after it (0 where p is on one), or -1
// where p is not aligned to T itself (then no element of the run lies on a boundary).
template <class T>
inline int64_t elements_to_line(const T* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a % sizeof(T)) return -1;
  return int64_t((64 - a % 64) % 64 / sizeof(T));
}

// Streaming stores are weakly ordered: fence them before the task reports completion. (parallel_for
// also fences after every chunk, so kernels need this only for work done outside it.)
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Elements of T per stage: 8 KB, which stays in L1 beside the inputs being read until its copy.
// (16 KB stages were evicted first: channels-last BatchNorm [32,64,56,56] eval forward ran 10-40%
// slower with them in interleaved A/B runs.)
template <class T>
constexpr int64_t kStageElements = int64_t(8192 / sizeof(T));

// Writes out[0, n): produce(i0, len, dst) writes values [i0, i0 + len) to dst[0, len), directly into
// out or, when `stream`, a cache-resident stage at a time followed by a streaming copy. The caller
// fences (parallel_for does after each chunk).
template <class T, class Produce>
inline void write_staged(T* out, int64_t n, bool stream, Produce&& produce) {
  if (!stream) {
    produce(int64_t(0), n, out);
    return;
  }
  constexpr int64_t kStage = kStageElements<T>;
  alignas(64) T stage[kStage];
  for (int64_t i0 = 0; i0 < n; i0 += kStage) {
    const int64_t len = std::min(kStage, n - i0);
    produce(i0, len, stage);
    stream_copy(out + i0, stage, size_t(len) * sizeof(T));
  }
}

// Writes out[0, n) as write_staged does, for a produce(stream_tag, i0, len, dst) that writes whole
// vectors from registers: streamed straight into out (stream_tag true: dst = out) where
// `stream` and out starts on a 64-byte line, else plainly or through the stage (stream_tag false).
template <class T, class Produce>
inline void write_from_registers(T* out, int64_t n, bool stream, Produce&& produce) {
  if (stream && elements_to_line(out) == 0) {
    produce(std::true_type{}, int64_t(0), n, out);
    return;
  }
  write_staged(out, n, stream, [&](int64_t i0, int64_t len, T* dst) { produce(std::false_type{}, i0, len, dst); });
}

// Writes `rows` consecutive rows of `width` values at out, produced whole by produce(stream_tag,
// dst) into dst (row k at dst + k * width): streamed from registers straight into out (stream_tag
// true) where `from_registers` and every row starts on a 64-byte line; else plainly (false) into
// `stage` when `stream`, then streamed out from it, or into out. For the row norms, which produce a
// row at once (their statistics and partials run along it), not a stage at a time.
template <class T, class Produce>
inline void write_rows_from_registers(T* out, int64_t rows, int64_t width, bool stream, bool from_registers, T* stage,
                                      Produce&& produce) {
  bool direct = stream && from_registers;
  for (int64_t k = 0; k < rows && direct; ++k) direct = elements_to_line(out + k * width) == 0;
  if (direct) {
    produce(std::true_type{}, out);
    return;
  }
  T* dst = stream ? stage : out;
  produce(std::false_type{}, dst);
  if (stream) stream_copy(out, dst, size_t(rows * width) * sizeof(T));
}

// Writes value(i) for i in [0, n) to out (see write_staged).
template <class T, class V>
inline void write_run(T* out, int64_t n, bool stream, V&& value) {
  write_staged(out, n, stream, [&](int64_t i0, int64_t len, T* dst) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dst[i] = value(i0 + i);
  });
}

// Writes rows [r0, r1) of `width` values each (row r at out + r * width): row(r, dst) produces row r
// into dst. When `stream`, whole rows are gathered into a cache-resident stage and streamed out
// together (streaming one short row at a time would cost more than it saves).
template <class T, class RowFn>
inline void write_rows(T* out, int64_t r0, int64_t r1, int64_t width, bool stream, RowFn&& row) {
  constexpr int64_t kStage = kStageElements<T>;
  if (!stream || width > kStage) {
    for (int64_t r = r0; r < r1; ++r) row(r, out + r * width);
    return;
  }
  alignas(64) T stage[kStage];
  const int64_t per_stage = kStage / width;
  for (int64_t r = r0; r < r1; r += per_stage) {
    const int64_t rows = std::min(per_stage, r1 - r);
    for (int64_t i = 0; i < rows; ++i) row(r + i, stage + i * width);
    stream_copy(out + r * width, stage, size_t(rows * width) * sizeof(T));
  }
}

}  // namespace normkit::cpu::NK_ISA

// Software prefetch of the rows ahead, for kernels that read each row twice: once from DRAM (its
// statistics), then again from L1 (its output). During the second pass nothing is read from DRAM,
// and the hardware prefetchers do not fill that time: they stop at every 4 KB page (a caller's
// tensor is rarely on huge pages) and run only a short way ahead. Requesting, segment by segment
// during the second pass over row r, the same segment of a row kAheadBytes further on keeps DRAM
// busy. Measured on LayerNorm float32 [8192, 1024] (4 KB rows), interleaved in one process, in three
// runs: forward 2.9-3.7 -> 2.2-2.4 ms, backward 5.8-6.7 -> 5.0-5.4 ms, backward without parameter
// gradients 4.2-4.6 -> 3.1-3.8 ms; bfloat16 within the noise. (Single streaming passes, such as the
// channel norms' unfused normalization passes, gained nothing measurable: the hardware keeps up
// with a pass that only streams.)
// Prefetches change no value: the loops they sit in do the same operations in the same order.
#pragma once
#include <algorithm>
#include <cstdint>

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// How far ahead to request: about two 4 KB rows (1, 2 and 3 rows measured on 4 KB rows: 2 and 3
// best, 1 half the gain).
constexpr int64_t kAheadBytes = 8192;
// Elements of a segment: the unit between two rounds of prefetches (small enough that the requests
// spread over the pass, large enough for the vectorized loop).
constexpr int64_t kAheadSegment = 256;
// Rows shorter than this are not prefetched: several share a page, and the hardware keeps up.
constexpr int64_t kAheadMinRowBytes = 1024;
// Nor tensors smaller than this, which repeated calls find in the last-level cache: there the
// requests only cost instructions (LayerNorm [64, 4096] float32, 1 MiB: 5% slower with them).
constexpr int64_t kAheadMinBytes = int64_t(4) << 20;

// Rows ahead to request for `rows` rows of `row_bytes` bytes (0: none).
inline int64_t rows_ahead(int64_t rows, int64_t row_bytes) {
  if (row_bytes < kAheadMinRowBytes || rows * row_bytes < kAheadMinBytes) return 0;
  return (kAheadBytes + row_bytes - 1) / row_bytes;
}

// Requests the `bytes` bytes from p into L2, a 64-byte line at a time.
inline void request_lines(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}

// body(i0, i1) over [0, n) in segments of kAheadSegment elements; before each segment, elements
// [i0, i1) of each row in `ahead` (null: none) are requested into L2.
template <class T, int K, class Body>
inline void segments_with_prefetch(int64_t n, const T* const (&ahead)[K], Body&& body) {
  bool any = false;
  for (int k = 0; k < K; ++k) any = any || ahead[k] != nullptr;
  if (!any) {  // nothing to request: one loop, as without prefetching
    body(0, n);
    return;
  }
  for (int64_t i0 = 0; i0 < n; i0 += kAheadSegment) {
    const int64_t i1 = std::min(n, i0 + kAheadSegment);
    for (int k = 0; k < K; ++k) {
      if (ahead[k]) request_lines(ahead[k] + i0, (i1 - i0) * int64_t(sizeof(T)));
    }
    body(i0, i1);
  }
}

// A range of bytes requested into L2 a piece at a time, for a pass that reads from cache while the
// next pass's values still lie in memory: aim(p, bytes) sets the range, request(bytes) requests its
// next `bytes` (fewer where fewer are left; nothing once aimed at nothing).
class RequestAhead {
 public:
  void aim(const void* p, int64_t bytes) {
    p_ = static_cast<const char*>(p);
    left_ = p ? bytes : 0;
  }
  void request(int64_t bytes) {
    const int64_t n = std::min(bytes, left_);
    request_lines(p_, n);
    p_ += n;
    left_ -= n;
  }

 private:
  const char* p_ = nullptr;
  int64_t left_ = 0;
};

}  // namespace normkit::cpu::NK_ISA

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu/strided_copy.h"
#include "normkit/parallel.h"

namespace normkit::cpu {

namespace {

// Offset, with `strides`, of position `index` over the dims `dims` of src's shape (the first dim
// the slowest).
int64_t offset_of(const TensorView& src, const int64_t* strides, const int* dims, int n, int64_t index) {
  int64_t off = 0;
  for (int i = n - 1; i >= 0; --i) {
    const int d = dims[i];
    off += (index % src.shape[d]) * strides[d];
    index /= src.shape[d];
  }
  return off;
}

template <class E>
void gather(const TensorView& src, E* dst) {
  const int nd = src.ndim();
  const int64_t total = src.numel();
  const int64_t inner = nd ? src.shape[nd - 1] : 1;
  const int64_t inner_stride = nd ? src.strides[nd - 1] : 1;
  const int64_t outer = inner ? total / inner : 0;
  const E* base = static_cast<const E*>(src.data);
  std::vector<int> dims(static_cast<size_t>(std::max(nd - 1, 0)));
  for (int d = 0; d + 1 < nd; ++d) dims[size_t(d)] = d;
  parallel_for(outer, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(inner, 1)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const E* s = base + offset_of(src, src.strides.data(), dims.data(), nd - 1, o);
      E* out = dst + o * inner;
      for (int64_t i = 0; i < inner; ++i) out[i] = s[i * inner_stride];
    }
  });
}

// The unit-stride dim of a view whose last dim is strided (a permuted layout: channels-last data
// read as channels-first, or the reverse), or -1. Row by row, such a copy reads one value per cache
// line and comes back to each line shape[k] rows later, by when a large view has evicted it: it ran
// at a tenth of the memory bandwidth (InstanceNorm [8,256,64,64] channels-last to channels-first).
int unit_stride_dim(const TensorView& src) {
  const int nd = src.ndim();
  if (nd < 2 || src.shape[nd - 1] < 2 || src.strides[nd - 1] == 1) return -1;
  for (int d = nd - 2; d >= 0; --d)
    if (src.strides[d] == 1 && src.shape[d] > 1) return d;
  return -1;
}

// A cache line of dst from `line`: one store per line in flight (16 scalar stores a line filled the
// store buffer while each waited for its line), streaming past the caches when it is a whole line.
inline void write_line(void* dst, const void* line) {
#if defined(__SSE2__)
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0) {  // (a part of a line streamed costs a read of it)
    for (int i = 0; i < 4; ++i)
      _mm_stream_si128(static_cast<__m128i*>(dst) + i, _mm_load_si128(static_cast<const __m128i*>(line) + i));
    return;
  }
#endif
  std::memcpy(dst, line, 64);
}

// The copy of such a view in tiles of its (k, last) planes: a tile of T values of the last dim (a
// cache line of dst) by up to kRun values of dim k, read across from L1 and written along dst's
// lines.
template <class E>
void transpose_tiles(const TensorView& src, int k, E* dst) {
  constexpr int64_t T = 64 / int64_t(sizeof(E));  // a cache line of elements
  constexpr int64_t kRun = 256;                   // a tile's values along k: T * kRun * sizeof(E) = 16 KB
  const int nd = src.ndim();
  const int64_t K = src.shape[k], J = src.shape[nd - 1], sj = src.strides[nd - 1];
  // dst is row-major over src's shape: its stride of each dim.
  std::vector<int64_t> dst_strides(static_cast<size_t>(nd));
  for (int64_t d = nd - 1, stride = 1; d >= 0; --d) {
    dst_strides[size_t(d)] = stride;
    stride *= src.shape[d];
  }
  const int64_t dk = dst_strides[size_t(k)];
  std::vector<int> outer_dims;  // the other dims, slowest first
  int64_t outer = 1;
  for (int d = 0; d < nd - 1; ++d)
    if (d != k) {
      outer_dims.push_back(d);
      outer *= src.shape[d];
    }
  const int no = int(outer_dims.size());
  const int64_t j_tiles = (J + T - 1) / T, k_runs = (K + kRun - 1) / kRun;
  const E* base = static_cast<const E*>(src.data);
  // Unit u: the tile (outer index o, j tile jt, k run kr), at s_off in src and d_off in dst.
  struct Unit {
    int64_t j0, j1, k0, k1, s_off, d_off;
  };
  auto unit = [&](int64_t u) {
    const int64_t o = u / (j_tiles * k_runs), jt = u / k_runs % j_tiles, kr = u % k_runs;
    return Unit{jt * T, std::min(J, jt * T + T), kr * kRun, std::min(K, kr * kRun + kRun),
                offset_of(src, src.strides.data(), outer_dims.data(), no, o),
                offset_of(src, dst_strides.data(), outer_dims.data(), no, o)};
  };
  // A tile's lines of src: requested a tile ahead, since a tile is often a 4 KB page of src, beyond
  // which the hardware prefetchers do not run.
  auto request = [&](const Unit& t) {
    for (int64_t j = t.j0; j < t.j1; ++j)
      for (int64_t kk = t.k0; kk < t.k1; kk += T) __builtin_prefetch(base + t.s_off + kk + j * sj, 0, 3);
  };
  parallel_for(outer * j_tiles * k_runs, 16, [&](int64_t u0, int64_t u1) {
    Unit next = unit(u0);
    request(next);
    for (int64_t u = u0; u < u1; ++u) {
      const Unit t = next;
      if (u + 1 < u1) {
        next = unit(u + 1);
        request(next);
      }
      const E* s = base + t.s_off;
      E* out = dst + t.d_off;
      if (t.j1 - t.j0 == T) {
        for (int64_t kk = t.k0; kk < t.k1; ++kk) {
          alignas(64) E line[T];
          for (int64_t j = 0; j < T; ++j) line[j] = s[kk + (t.j0 + j) * sj];
          write_line(out + kk * dk + t.j0, line);
        }
      } else {
        for (int64_t kk = t.k0; kk < t.k1; ++kk)
          for (int64_t j = t.j0; j < t.j1; ++j) out[kk * dk + j] = s[kk + j * sj];
      }
    }
  });
}

// src with its size-1 dims dropped and each dim merged into the one before it where the two are
// laid out as one (stride[d] == shape[d + 1] * stride[d + 1]): the same elements in the same
// row-major order, in fewer and longer dims. Channels-last [N, C, H, W] read channels first becomes
// [N, C, H * W]: a transposition of whole planes, whose rows in dst are the planes of H * W values,
// instead of W-value rows that cut cache lines.
TensorView coalesced(const TensorView& src) {
  TensorView c = src;
  c.shape.clear();
  c.strides.clear();
  for (int d = 0; d < src.ndim(); ++d) {
    const int64_t n = src.shape[size_t(d)], st = src.strides[size_t(d)];
    if (n == 1) continue;
    if (!c.shape.empty() && c.strides.back() == n * st) {
      c.shape.back() *= n;
      c.strides.back() = st;
    } else {
      c.shape.push_back(n);
      c.strides.push_back(st);
    }
  }
  return c;
}

template <class E>
void copy(const TensorView& view, E* dst) {
  const TensorView src = coalesced(view);
  const int k = unit_stride_dim(src);
  if (k >= 0)
    transpose_tiles(src, k, dst);
  else
    gather(src, dst);
}

}  // namespace

void contiguous_copy(const TensorView& src, void* dst) {
  switch (dtype_size(src.dtype)) {
    case 2: copy(src, static_cast<uint16_t*>(dst)); break;
    case 4: copy(src, static_cast<uint32_t*>(dst)); break;
    default: copy(src, static_cast<uint64_t*>(dst)); break;
  }
}

}  // namespace normkit::cpu

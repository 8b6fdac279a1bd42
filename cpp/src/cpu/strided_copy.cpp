#include <algorithm>
#include <cstring>

#include "cpu/strided_copy.h"
#include "normkit/parallel.h"

namespace normkit::cpu {

namespace {
template <class E>
void gather(const TensorView& src, E* dst) {
  const int nd = src.ndim();
  const int64_t total = src.numel();
  const int64_t inner = nd ? src.shape[nd - 1] : 1;
  const int64_t inner_stride = nd ? src.strides[nd - 1] : 1;
  const int64_t outer = inner ? total / inner : 0;
  const E* base = static_cast<const E*>(src.data);
  parallel_for(outer, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(inner, 1)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      // Offset of row o: decompose it over the outer dimensions.
      int64_t rem = o, off = 0;
      for (int d = nd - 2; d >= 0; --d) {
        off += (rem % src.shape[d]) * src.strides[d];
        rem /= src.shape[d];
      }
      const E* s = base + off;
      E* out = dst + o * inner;
      for (int64_t i = 0; i < inner; ++i) out[i] = s[i * inner_stride];
    }
  });
}
}  // namespace

void contiguous_copy(const TensorView& src, void* dst) {
  switch (dtype_size(src.dtype)) {
    case 2: gather(src, static_cast<uint16_t*>(dst)); break;
    case 4: gather(src, static_cast<uint32_t*>(dst)); break;
    default: gather(src, static_cast<uint64_t*>(dst)); break;
  }
}

}  // namespace normkit::cpu

#include "ops/dim_rows.h"

#include "cpu/strided_copy.h"
#include "ops/common.h"

namespace normkit::ops {

int64_t normalize_dim(const TensorView& t, const char* t_arg, int64_t dim) {
  const int64_t nd = t.ndim();
  check_value(dim >= -nd && dim < nd, "dim: expected a dimension in [", -nd, ", ", nd - 1, "] for ", t_arg,
              " of shape ", shape_str(t.shape), ", got ", dim);
  return dim < 0 ? dim + nd : dim;
}

TensorView dim_first(const TensorView& t, int64_t dim) {
  if (dim <= 0) return t;
  TensorView p = t;
  size_t j = 1;
  p.shape[0] = t.shape[size_t(dim)];
  p.strides[0] = t.strides[size_t(dim)];
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (int64_t(i) == dim) continue;
    p.shape[j] = t.shape[i];
    p.strides[j] = t.strides[i];
    ++j;
  }
  return p;
}

const void* rows_in(const TensorView& t, int64_t dim, std::shared_ptr<void>& holder, void* stream) {
  const TensorView p = dim_first(t, dim);
  if (p.is_contiguous()) return p.data;
  holder = compact_copy(p, stream);
  return holder.get();
}

void* rows_out(const TensorView& out, int64_t dim, std::shared_ptr<void>& scratch, void* stream) {
  if (dim <= 0) return out.data;
  scratch = device_buffer(out.device, out.numel(), size_t(dtype_size(out.dtype)), stream);
  return scratch.get();
}

void finish_rows(const TensorView& out, int64_t dim, const std::shared_ptr<void>& scratch, void* stream) {
  if (dim <= 0) return;
  // The scratch holds dim-first compact rows; view it in out's dimension order and copy it compactly.
  const TensorView first = dim_first(out, dim);
  std::vector<int64_t> rstrides(first.shape.size());
  int64_t stride = 1;
  for (int i = int(first.shape.size()) - 1; i >= 0; --i) {
    rstrides[size_t(i)] = stride;
    stride *= first.shape[size_t(i)];
  }
  TensorView src = out;
  src.data = scratch.get();
  src.strides[size_t(dim)] = rstrides[0];
  size_t j = 1;
  for (size_t i = 0; i < out.shape.size(); ++i) {
    if (int64_t(i) == dim) continue;
    src.strides[i] = rstrides[j++];
  }
  if (out.device.kind == DeviceKind::CPU) {
    cpu::contiguous_copy(src, out.data);
  } else {
#if defined(NORMKIT_WITH_CUDA)
    cuda::contiguous_copy(src, out.data, stream);
#endif
  }
  (void)stream;
}

}  // namespace normkit::ops

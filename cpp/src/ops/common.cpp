#include "ops/common.h"

#include <cmath>
#include <cstdlib>

#include "cpu/strided_copy.h"

namespace normkit::ops {

void check_device_supported(const TensorView& t, const char* arg) {
  if (t.device.kind == DeviceKind::CPU) return;
#if defined(NORMKIT_WITH_CUDA)
  check_type(t.device.index < cuda::device_count(), arg, ": expected a usable device, got ",
             device_str(t.device), " but only ", cuda::device_count(), " CUDA device(s) are available");
#else
  throw TypeError(concat(arg, ": expected a CPU array (normkit was built without CUDA), got ",
                         device_str(t.device)));
#endif
}

void check_same_device(const TensorView& t, const char* arg, const TensorView& ref, const char* ref_arg) {
  check_type(t.device == ref.device, arg, ": expected device ", device_str(ref.device), " (the device of ",
             ref_arg, "), got ", device_str(t.device));
}

void check_dtype(const TensorView& t, const char* arg, DType expected) {
  check_type(t.dtype == expected, arg, ": expected dtype ", dtype_name(expected), ", got ", dtype_name(t.dtype));
}

void check_shape(const TensorView& t, const char* arg, const Shape& expected) {
  check_value(t.shape == expected, arg, ": expected shape ", shape_str(expected), ", got ", shape_str(t.shape));
}

void check_output(const TensorView& t, const char* arg, const Shape& shape, DType dtype,
                  const TensorView& ref, const char* ref_arg) {
  check_same_device(t, arg, ref, ref_arg);
  check_dtype(t, arg, dtype);
  check_shape(t, arg, shape);
  check_value(t.is_contiguous(), arg, ": expected a contiguous output array, got strides ", shape_str(t.strides));
}

void check_eps(double eps) {
  check_value(eps >= 0 && std::isfinite(eps), "eps: expected a finite number >= 0, got ", eps);
}

int64_t check_normalized_shape(const TensorView& x, const char* arg, const Shape& normalized_shape) {
  check_value(!normalized_shape.empty(), "normalized_shape: expected at least one dimension, got []");
  const int k = int(normalized_shape.size());
  bool match = x.ndim() >= k;
  for (int i = 0; match && i < k; ++i) match = x.shape[x.ndim() - k + i] == normalized_shape[i];
  check_value(match, "normalized_shape: expected the trailing dimensions of ", arg, ", got normalized_shape ",
              shape_str(normalized_shape), " for ", arg, " of shape ", shape_str(x.shape));
  int64_t rows = 1;
  for (int i = 0; i < x.ndim() - k; ++i) rows *= x.shape[i];
  return rows;
}

Shape leading_shape(const TensorView& x, int trailing_dims) {
  return Shape(x.shape.begin(), x.shape.end() - trailing_dims);
}

DeviceScope::DeviceScope(const Device& d) {
#if defined(NORMKIT_WITH_CUDA)
  if (d.kind == DeviceKind::CUDA) guard_ = std::make_unique<cuda::DeviceGuard>(d.index);
#else
  (void)d;
#endif
}

Rows rows_of(const TensorView& t, int row_dims, void* stream) {
  const RowLayout layout = row_layout(t, row_dims);
  if (layout.ok) return {t.data, layout.row_stride, nullptr};
  const size_t bytes = size_t(t.numel()) * size_t(dtype_size(t.dtype));
  Rows r;
  r.stride = layout.cols;
  if (t.device.kind == DeviceKind::CPU) {
    r.holder = std::shared_ptr<void>(std::malloc(bytes), std::free);
    if (!r.holder) throw RuntimeError(concat("out of host memory copying a ", bytes, "-byte view"));
    cpu::contiguous_copy(t, r.holder.get());
  } else {
#if defined(NORMKIT_WITH_CUDA)
    r.holder = cuda::allocate(bytes, stream);
    cuda::contiguous_copy(t, r.holder.get(), stream);
#endif
  }
  (void)stream;
  r.data = r.holder.get();
  return r;
}

}  // namespace normkit::ops

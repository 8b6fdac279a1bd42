#include "ops/common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/strided_copy.h"
#include "normkit/host_cache.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace normkit::ops {

void check_device_supported(const TensorView& t, const char* arg) {
  if (t.device.kind == DeviceKind::CPU) return;
#if defined(NORMKIT_WITH_CUDA)
  const int count = cuda::device_count();
  check_type(t.device.index < count, arg, ": expected a usable device, got ", device_str(t.device), " but only ",
             count, " CUDA device(s) are available");
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

void check_channel_vector(const OptTensor& p, const char* arg, const TensorView& x, bool written) {
  if (!p) return;
  check_same_device(*p, arg, x, "x");
  check_value(p->ndim() == 1 && p->shape[0] == x.shape[1], arg, ": expected shape [", x.shape[1],
              "] (the channels of x), got ", shape_str(p->shape));
  check_value(!written || p->is_contiguous(), arg, ": expected a contiguous array (updated in place), got strides ",
              shape_str(p->strides));
}

void check_eps(double eps) {
  check_value(eps >= 0 && std::isfinite(eps), "eps: expected a finite number >= 0, got ", eps);
}

DType check_param_dtypes(const OptTensor& a, const char* a_arg, const OptTensor& b, const char* b_arg,
                         const TensorView& x) {
  const DType acc = acc_dtype(x.dtype);
  for (const auto& [p, arg] : {std::pair<const OptTensor&, const char*>{a, a_arg}, {b, b_arg}}) {
    if (!p) continue;
    check_type(p->dtype == x.dtype || p->dtype == acc, arg, ": expected dtype ", dtype_name(x.dtype),
               x.dtype == acc ? "" : " or ", x.dtype == acc ? "" : dtype_name(acc), " (for x of dtype ",
               dtype_name(x.dtype), "), got ", dtype_name(p->dtype));
  }
  if (a && b) {
    check_type(a->dtype == b->dtype, b_arg, ": expected dtype ", dtype_name(a->dtype), " (that of ", a_arg,
               "), got ", dtype_name(b->dtype));
  }
  return a ? a->dtype : b ? b->dtype : x.dtype;
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

void advise_huge_pages(const TensorView& out) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t bytes = size_t(out.numel()) * size_t(dtype_size(out.dtype));
  if (out.device.kind != DeviceKind::CPU || bytes < 4 * kHuge) return;
  // Only whole huge pages inside the buffer: never touch memory around it.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(out.data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(out.data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)out;
#endif
}

size_t checked_bytes(int64_t count, size_t elem_size) {
  if (count < 0 || (elem_size != 0 && uint64_t(count) > SIZE_MAX / elem_size))
    throw RuntimeError(concat("out of host or device memory: a buffer of ", count, " values of ", elem_size,
                              " bytes does not fit the address space"));
  return size_t(count) * elem_size;
}

std::shared_ptr<void> device_buffer(const Device& device, int64_t count, size_t elem_size, void* stream) {
  const size_t bytes = std::max<size_t>(1, checked_bytes(count, elem_size));
#if defined(NORMKIT_WITH_CUDA)
  if (device.kind != DeviceKind::CPU) return cuda::allocate(bytes, stream);
#endif
  (void)stream;
  (void)device;
  std::shared_ptr<void> holder(std::malloc(bytes), std::free);
  if (!holder) throw RuntimeError(concat("out of host memory for a ", bytes, "-byte buffer"));
  return holder;
}

namespace {

// [lo, hi) bytes a view touches; lo == hi for an empty one.
std::pair<uintptr_t, uintptr_t> byte_range(const TensorView& t) {
  const auto base = reinterpret_cast<uintptr_t>(t.data);
  if (t.numel() == 0) return {base, base};
  int64_t lo = 0, hi = 0;  // element offsets of the extreme elements
  for (int i = 0; i < t.ndim(); ++i) {
    const int64_t span = (t.shape[i] - 1) * t.strides[i];
    (span < 0 ? lo : hi) += span;
  }
  const int64_t elem = dtype_size(t.dtype);
  return {base + uintptr_t(lo * elem), base + uintptr_t((hi + 1) * elem)};
}

}  // namespace

void check_no_overlap(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
  auto check_pair = [](const Named& out, const Named& other) {
    if (!out.view || !other.view || out.view->device != other.view->device) return;
    const auto [a0, a1] = byte_range(*out.view);
    const auto [b0, b1] = byte_range(*other.view);
    const bool disjoint = a0 == a1 || b0 == b1 || a1 <= b0 || b1 <= a0;
    check_value(disjoint, out.arg, ": expected an output that shares no memory with ", other.arg,
                ", got overlapping arrays");
  };
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    for (auto p = o + 1; p != outputs.end(); ++p) check_pair(*o, *p);
    for (const Named& in : inputs) check_pair(*o, in);
  }
}

void fill(const TensorView& t, double value, void* stream) {
  const int64_t n = t.numel();
  if (n == 0) return;
  if (t.device.kind != DeviceKind::CPU) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::fill(t.data, t.dtype, n, value, stream);
#endif
    return;
  }
  (void)stream;
  if (t.dtype == DType::Float32) {
    std::fill_n(static_cast<float*>(t.data), n, float(value));
  } else if (t.dtype == DType::Float64) {
    std::fill_n(static_cast<double*>(t.data), n, value);
  } else {
    if (value != 0.0) throw RuntimeError("fill: a non-zero value needs a float32 or float64 array");
    std::memset(t.data, 0, size_t(n) * size_t(dtype_size(t.dtype)));  // +0 is all-zero bits
  }
}

void fill(const OptTensor& t, double value, void* stream) {
  if (t) fill(*t, value, stream);
}

std::shared_ptr<void> compact_copy(const TensorView& t, void* stream) {
  const size_t bytes = std::max<size_t>(1, checked_bytes(t.numel(), size_t(dtype_size(t.dtype))));
  std::shared_ptr<void> holder;
  if (t.device.kind == DeviceKind::CPU) {
    // (From the host cache: a fresh multi-megabyte malloc is faulted in page by page, which cost as
    // much as the copy.)
    holder = std::shared_ptr<void>(host_cache_acquire(bytes), [bytes](void* p) { host_cache_release(p, bytes); });
    cpu::contiguous_copy(t, holder.get());
  } else {
#if defined(NORMKIT_WITH_CUDA)
    holder = cuda::allocate(bytes, stream);
    cuda::contiguous_copy(t, holder.get(), stream);
#endif
  }
  (void)stream;
  return holder;
}

OptTensor compact_param(const OptTensor& p, std::shared_ptr<void>& holder, void* stream) {
  if (!p || p->is_contiguous()) return p;
  holder = compact_copy(*p, stream);
  TensorView v = *p;
  v.data = holder.get();
  int64_t stride = 1;
  for (int i = v.ndim() - 1; i >= 0; --i) {
    v.strides[size_t(i)] = stride;
    stride *= v.shape[size_t(i)];
  }
  return v;
}

Rows rows_of(const TensorView& t, int row_dims, void* stream) {
  const RowLayout layout = row_layout(t, row_dims);
  if (layout.ok) return {t.data, layout.row_stride, nullptr};
  Rows r;
  r.stride = layout.cols;
  r.holder = compact_copy(t, stream);
  r.data = r.holder.get();
  return r;
}

namespace {

using detail::Layout;

// Dimension order of a layout: channels first is the natural order; channels last puts dim 1 last.
std::vector<int> dim_order(int ndim, Layout layout) {
  std::vector<int> order(static_cast<size_t>(ndim));
  for (int i = 0; i < ndim; ++i) order[size_t(i)] = i;
  if (layout == Layout::NSC && ndim > 2) {
    order.erase(order.begin() + 1);
    order.push_back(1);
  }
  return order;
}

TensorView permuted(const TensorView& t, const std::vector<int>& order) {
  TensorView p = t;
  for (size_t i = 0; i < order.size(); ++i) {
    p.shape[i] = t.shape[size_t(order[i])];
    p.strides[i] = t.strides[size_t(order[i])];
  }
  return p;
}

}  // namespace

bool compact_in(const TensorView& t, Layout layout) {
  return permuted(t, dim_order(t.ndim(), layout)).is_contiguous();
}

Layout output_layout(const TensorView& out, const char* arg) {
  if (compact_in(out, Layout::NCS)) return Layout::NCS;
  check_value(compact_in(out, Layout::NSC), arg,
              ": expected a compact channels-first or channels-last output array, got strides ",
              shape_str(out.strides), " for shape ", shape_str(out.shape));
  return Layout::NSC;
}

TensorView in_layout(const TensorView& t, Layout layout, std::shared_ptr<void>& holder, void* stream) {
  if (compact_in(t, layout)) return t;
  const std::vector<int> order = dim_order(t.ndim(), layout);
  holder = compact_copy(permuted(t, order), stream);
  TensorView c = t;
  c.data = holder.get();
  int64_t stride = 1;
  for (size_t i = order.size(); i-- > 0;) {
    c.strides[size_t(order[i])] = stride;
    stride *= t.shape[size_t(order[i])];
  }
  return c;
}

const void* data_in(const TensorView& t, Layout layout, std::shared_ptr<void>& holder, void* stream) {
  if (compact_in(t, layout)) return t.data;
  holder = compact_copy(permuted(t, dim_order(t.ndim(), layout)), stream);
  return holder.get();
}

}  // namespace normkit::ops

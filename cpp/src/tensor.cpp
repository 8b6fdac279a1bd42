#include "normkit/tensor.h"

#include "normkit/error.h"

namespace normkit {

void append_text(std::string& s, const DeviceText& t) {
  if (t.device.kind == DeviceKind::CPU) s += "cpu";
  else s += concat("cuda:", t.device.index);
}

namespace {
const char* code_name(uint8_t code) {
  switch (code) {
    case dlpack::kDLInt: return "int";
    case dlpack::kDLUInt: return "uint";
    case dlpack::kDLFloat: return "float";
    case dlpack::kDLBfloat: return "bfloat";
    case dlpack::kDLComplex: return "complex";
    case dlpack::kDLBool: return "bool";
  }
  return "opaque";
}
}  // namespace

TensorView TensorView::from_dlpack(const dlpack::Tensor& t, const char* arg) {
  TensorView v;
  const auto& dt = t.dtype;
  const bool one_lane = dt.lanes == 1;
  if (one_lane && dt.code == dlpack::kDLFloat && dt.bits == 16) v.dtype = DType::Float16;
  else if (one_lane && dt.code == dlpack::kDLBfloat && dt.bits == 16) v.dtype = DType::BFloat16;
  else if (one_lane && dt.code == dlpack::kDLFloat && dt.bits == 32) v.dtype = DType::Float32;
  else if (one_lane && dt.code == dlpack::kDLFloat && dt.bits == 64) v.dtype = DType::Float64;
  else
    throw TypeError(concat(arg, ": expected dtype float16, bfloat16, float32 or float64, got ",
                           code_name(dt.code), int(dt.bits), dt.lanes == 1 ? "" : concat("x", dt.lanes)));

  switch (t.device.device_type) {
    case dlpack::kDLCPU:
    case dlpack::kDLCUDAHost: v.device = {DeviceKind::CPU, 0}; break;
    case dlpack::kDLCUDA:
    case dlpack::kDLCUDAManaged: v.device = {DeviceKind::CUDA, t.device.device_id}; break;
    default:
      throw TypeError(concat(arg, ": expected a CPU or CUDA array, got DLPack device type ",
                             t.device.device_type));
  }
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  v.shape.assign(t.shape, t.shape + t.ndim);
  // Sizes whose byte count does not fit (no real array has them; a broadcast view or a hand-made DLPack
  // tensor can) would wrap every count, offset and copy size below: numel * itemsize <= 2^62 bytes.
  for (int64_t d : v.shape) check_value(d >= 0, arg, ": expected sizes >= 0, got ", shape_str(v.shape));
  check_value(bounded_numel(v.shape, (int64_t(1) << 62) / dtype_size(v.dtype)) >= 0, arg,
              ": expected at most 2^62 bytes, got shape ", shape_str(v.shape), " of dtype ", dtype_name(v.dtype));
  v.strides.resize(t.ndim);
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    v.strides[i] = t.strides ? t.strides[i] : expected;
    expected *= t.shape[i];
  }
  return v;
}

int64_t bounded_numel(const std::vector<int64_t>& shape, int64_t limit) {
  for (int64_t d : shape)
    if (d == 0) return 0;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > limit / d) return -1;
    n *= d;
  }
  return n;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // producers report arbitrary strides for empty arrays
  int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

RowLayout row_layout(const TensorView& t, int row_dims) {
  RowLayout r;
  const int lead = t.ndim() - row_dims;
  r.cols = 1;
  for (int i = lead; i < t.ndim(); ++i) r.cols *= t.shape[i];
  r.rows = 1;
  for (int i = 0; i < lead; ++i) r.rows *= t.shape[i];
  if (r.rows == 0 || r.cols == 0) {
    r.ok = true;
    r.row_stride = r.cols;
    return r;
  }
  // The row itself must be compact.
  int64_t expected = 1;
  for (int i = t.ndim() - 1; i >= lead; --i) {
    if (t.shape[i] != 1 && t.strides[i] != expected) return r;
    expected *= t.shape[i];
  }
  // Leading dims must collapse into a single stride: walk them innermost first, skipping size-1 dims.
  int64_t stride = r.cols, span = 1;
  bool seen = false;
  for (int i = lead - 1; i >= 0; --i) {
    if (t.shape[i] == 1) continue;
    if (!seen) {
      stride = t.strides[i];
      seen = true;
    } else if (t.strides[i] != stride * span) {
      return r;
    }
    span *= t.shape[i];
  }
  // Rows must not overlap (stride 0 broadcasts or negative strides take the copy path).
  if (r.rows > 1 && stride < r.cols) return r;
  r.row_stride = stride;
  r.ok = true;
  return r;
}

}  // namespace normkit

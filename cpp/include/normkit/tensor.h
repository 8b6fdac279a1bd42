// A non-owning view of a DLPack tensor: the core's only notion of an array. Built once at the
// boundary (from_dlpack validates dtype and device); everything after works on TensorView.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "normkit/dlpack.h"
#include "normkit/dtype.h"

namespace normkit {

enum class DeviceKind : uint8_t { CPU, CUDA };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// "cpu" or "cuda:1" in a message (built only when a check fails, like ShapeText).
struct DeviceText {
  Device device;
};
inline DeviceText device_str(const Device& d) { return {d}; }
void append_text(std::string& s, const DeviceText& t);

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Float32;
  Device device;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements

  // Reads a DLTensor; a dtype other than float16/bfloat16/float32/float64 or a device other than
  // CPU/CUDA is a TypeError naming `arg`.
  static TensorView from_dlpack(const dlpack::Tensor& t, const char* arg);

  int ndim() const { return int(shape.size()); }
  int64_t numel() const;
  bool is_contiguous() const;  // compact row-major (size-1 dims may have any stride)
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

using OptTensor = std::optional<TensorView>;

// The element count of `shape` (sizes >= 0) when it is at most `limit`, else -1, computed without
// overflow (a hand-made shape can multiply past int64).
int64_t bounded_numel(const std::vector<int64_t>& shape, int64_t limit);

// x seen as a matrix of `rows` x `cols` where a row is the trailing `row_dims` dimensions. The kernels
// need each row contiguous and the rows evenly spaced (row_stride); leading dimensions that collapse
// into one stride (a sliced batch, for instance) qualify without a copy.
struct RowLayout {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements between consecutive rows
  bool ok = false;         // false: the view needs a contiguous copy first
};
RowLayout row_layout(const TensorView& t, int row_dims);

}  // namespace normkit

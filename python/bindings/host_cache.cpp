// Large CPU outputs from the host cache, handed to NumPy or PyTorch as their own arrays. The array's
// owner returns the buffer to the cache when the last view of it dies.
#include <cstdint>

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "normkit/error.h"
#include "normkit/host_cache.h"

namespace normkit::bindings {
namespace {

struct Block {
  void* base;    // from host_cache_acquire(bytes)
  size_t bytes;
};

nb::dlpack::dtype dlpack_dtype(const std::string& name) {
  if (name == "float16") return {uint8_t(nb::dlpack::dtype_code::Float), 16, 1};
  if (name == "bfloat16") return {uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1};
  if (name == "float32") return {uint8_t(nb::dlpack::dtype_code::Float), 32, 1};
  if (name == "float64") return {uint8_t(nb::dlpack::dtype_code::Float), 64, 1};
  throw TypeError(concat("dtype: expected float16, bfloat16, float32 or float64, got ", name));
}

nb::object empty_cached(const std::vector<int64_t>& shape, const std::string& dtype, const std::string& framework,
                        uintptr_t away_from) {
  const nb::dlpack::dtype dt = dlpack_dtype(dtype);
  std::vector<size_t> dims;
  for (int64_t d : shape) {
    check_value(d >= 0, "shape: expected sizes >= 0, got ", shape_str(shape));
    dims.push_back(size_t(d));
  }
  // Byte counts past 2^62 (2^59 elements of up to 8 bytes) are no allocation a machine can make.
  const int64_t count = bounded_numel(shape, int64_t(1) << 59);
  check_value(count >= 0, "shape: expected an array of at most 2^62 bytes, got ", shape_str(shape));
  // (The data 3 KiB past an input's modulo 4 KiB: see host_cache_shift.)
  const size_t shift = host_cache_shift(away_from), bytes = size_t(count) * dt.bits / 8 + shift;
  auto* block = new Block{host_cache_acquire(bytes), bytes};
  nb::capsule owner(block, [](void* p) noexcept {
    auto* b = static_cast<Block*>(p);
    host_cache_release(b->base, b->bytes);
    delete b;
  });
  void* data = static_cast<char*>(block->base) + shift;
  // A raw capsule for torch: its C import (torch._C._from_dlpack) costs a third of what nanobind's
  // export through torch.utils.dlpack.from_dlpack, a Python function, does.
  if (framework == "dltensor")
    return nb::cast(nb::ndarray<>(data, dims.size(), dims.data(), owner, nullptr, dt));
  check_value(framework == "numpy", "framework: expected 'numpy' or 'dltensor', got ", framework);
  return nb::cast(nb::ndarray<nb::numpy>(data, dims.size(), dims.data(), owner, nullptr, dt));
}

}  // namespace

void export_host_cache(nb::module_& m) {
  m.def("empty_cached", &empty_cached, "shape"_a, "dtype"_a, "framework"_a, "away_from"_a = 0,
        "An uninitialised C-contiguous CPU array from normkit's cache of large host buffers, its data 3 KiB "
        "past the address away_from (an input's) modulo 4 KiB.");
  m.def("host_cache_clear", &host_cache_clear, "Frees every idle buffer of the host cache.");
  m.def("host_cache_idle_bytes", &host_cache_idle_bytes);
  m.def("host_cache_set_limit", &host_cache_set_limit, "bytes"_a);
  m.def("host_cache_limit", &host_cache_limit);
}

}  // namespace normkit::bindings

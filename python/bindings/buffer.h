// A communicator's `allreduce(array)` argument as (data, count, dtype, device): a compact float32 or
// float64 array of any DLPack producer, reduced in place. Shared by the backend modules (_mpi, _nccl),
// which do not link the core's tensor code.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include "normkit/error.h"
#include "normkit/tensor.h"

namespace normkit::bindings {

struct Buffer {
  void* data;
  int64_t count;
  DType dtype;
  Device device;
};

inline Buffer buffer_of(const nanobind::ndarray<>& a) {
  namespace nb = nanobind;
  Buffer b{a.data(), int64_t(a.size()), DType::Float32, {}};
  const auto dt = a.dtype();
  if (dt == nb::dtype<double>())
    b.dtype = DType::Float64;
  else if (dt != nb::dtype<float>())
    throw TypeError(concat("array: expected float32 or float64, got a dtype of code ", int(dt.code), " and ",
                           int(dt.bits), " bits"));
  int64_t expected = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expected)
      throw ValueError("array: expected a contiguous array (reduced in place), got a strided view");
    expected *= int64_t(a.shape(i));
  }
  if (a.device_type() == nb::device::cpu::value)
    b.device = {DeviceKind::CPU, 0};
  else if (a.device_type() == nb::device::cuda::value)
    b.device = {DeviceKind::CUDA, int(a.device_id())};
  else
    throw TypeError(concat("array: expected a CPU or CUDA array, got DLPack device type ", a.device_type()));
  return b;
}

}  // namespace normkit::bindings

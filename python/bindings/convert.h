// nanobind arrays -> core tensor views. Any DLPack producer arrives as nb::ndarray (NumPy, PyTorch,
// JAX, CuPy, a raw "dltensor" capsule); strides arrive in elements.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include "normkit/tensor.h"

namespace normkit::bindings {

namespace nb = nanobind;
using namespace nanobind::literals;
using InArray = nb::ndarray<nb::ro>;  // read: any dtype, device and strides; checked in the core
using OutArray = nb::ndarray<>;
using OptInArray = std::optional<InArray>;
using OptOutArray = std::optional<OutArray>;

template <class Array>
TensorView view(const Array& a, const char* arg) {
  dlpack::Tensor t{};
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.device = {a.device_type(), a.device_id()};
  t.ndim = int32_t(a.ndim());
  const auto dt = a.dtype();
  t.dtype = {dt.code, dt.bits, dt.lanes};
  t.shape = const_cast<int64_t*>(a.shape_ptr());
  t.strides = const_cast<int64_t*>(a.stride_ptr());
  return TensorView::from_dlpack(t, arg);
}

template <class Array>
OptTensor view(const std::optional<Array>& a, const char* arg) {
  if (!a) return std::nullopt;
  return view(*a, arg);
}

inline void* stream_ptr(uintptr_t s) { return reinterpret_cast<void*>(s); }

}  // namespace normkit::bindings

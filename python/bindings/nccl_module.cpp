// The _nccl extension module: NCCL's run-time loader and the NCCL communicator of the core. Built only
// with CUDA and nccl.h; imports on machines without a GPU or an NCCL library (NCCL is loaded by load(),
// or on first use from the default search path).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <nccl.h>

#include <string>

#include "convert.h"
#include "nccl_communicator.h"
#include "exceptions.h"
#include "normkit/error.h"

namespace nb = nanobind;
using namespace nanobind::literals;

namespace normkit::bindings {
namespace {

// The checked view of an array NCCL may sum in place on CUDA device `device`: writable (nb::ndarray<>
// refuses read-only arrays), float32/float64, in that device's memory and contiguous.
TensorView nccl_buffer(const nb::ndarray<>& a, int device) {
  TensorView v = view(a, "array");
  NcclCommunicator::check_buffer(v.numel(), v.dtype, v.device, device);
  check_value(v.is_contiguous(), "NCCL all-reduce: the array must be contiguous, got shape ", shape_str(v.shape),
              " with strides ", shape_str(v.strides));
  return v;
}

void export_nccl(nb::module_& m) {
  m.attr("built") = true;
  m.attr("UNIQUE_ID_BYTES") = nccl::kUniqueIdBytes;
  m.attr("HEADER_VERSION") = NCCL_VERSION_CODE;  // the nccl.h this module was compiled against

  m.def(
      "load", [](const std::optional<std::string>& path) { return nccl::load(path.value_or(std::string())); },
      "path"_a = nb::none(),
      "Loads the NCCL library from `path` (None: libnccl.so.2 from the default search) and returns the path "
      "it was loaded from. RuntimeError when it cannot be loaded or another NCCL library already is.");
  m.def(
      "loaded_path",
      []() -> std::optional<std::string> {
        std::string p = nccl::loaded_path();
        if (p.empty()) return std::nullopt;
        return p;
      },
      "The path NCCL was loaded from, or None.");
  m.def("version", &nccl::version, "NCCL_VERSION_CODE of the loaded library (23007 for 2.30.7).");
  m.def(
      "unique_id",
      [] {
        const std::string id = nccl::unique_id();
        return nb::bytes(id.data(), id.size());
      },
      "A new NCCL unique id (UNIQUE_ID_BYTES bytes) naming a communicator; needs no GPU.");
  m.def(
      "_check_buffer",
      [](const nb::ndarray<>& array, int device) {
        (void)nccl_buffer(array, device);
      },
      "array"_a, "device"_a = 0, "The argument checks of NcclCommunicator.allreduce, without a communicator.");

  nb::class_<NcclCommunicator>(m, "NcclCommunicator",
                               "An NCCL communicator: one rank of `size`, on one CUDA device (normkit's "
                               "Communicator for SyncBatchNorm).")
      .def(
          "__init__",
          [](NcclCommunicator* self, const nb::bytes& unique_id, int rank, int size, int device) {
            const std::string id(unique_id.c_str(), unique_id.size());
            nb::gil_scoped_release release;  // blocks until every rank has joined
            new (self) NcclCommunicator(id.data(), id.size(), rank, size, device);
          },
          "unique_id"_a, "rank"_a, "size"_a, "device"_a)
      .def_prop_ro("rank", &NcclCommunicator::rank)
      .def_prop_ro("size", &NcclCommunicator::size)
      .def_prop_ro("device", &NcclCommunicator::device)
      .def(
          "allreduce",
          [](NcclCommunicator& self, const nb::ndarray<>& array, uintptr_t stream) {
            const TensorView v = nccl_buffer(array, self.device());
            nb::gil_scoped_release release;
            self.allreduce_sum(v.data, v.numel(), v.dtype, v.device, stream_ptr(stream));
          },
          "array"_a, "stream"_a = 0,
          "Sums a contiguous float32/float64 CUDA array over all ranks, in place, queued on `stream` (a "
          "cudaStream_t as an int; 0: the default stream). Returns without waiting.")
      .def_prop_ro(
          "_nk_handle",
          [](NcclCommunicator& self) { return reinterpret_cast<uintptr_t>(static_cast<Communicator*>(&self)); },
          "Address of the normkit::Communicator, valid while this object lives.");
}

}  // namespace
}  // namespace normkit::bindings

NB_MODULE(_nccl, m) {
  m.doc() = "normkit's NCCL communicator (NCCL loaded at run time).";
  normkit::bindings::register_normkit_exceptions();
  normkit::bindings::export_nccl(m);
}

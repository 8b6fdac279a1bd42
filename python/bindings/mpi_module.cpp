// normkit._mpi: the MPI communicator, in its own module so that `import normkit` never needs MPI. It
// takes the MPI_Comm handle of an mpi4py communicator (MPI._handleof), so it must be built against the
// MPI library mpi4py uses.
#include <mpi.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "buffer.h"
#include "exceptions.h"
#include "comm/mpi_communicator.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// MPI_Comm is a pointer in Open MPI and an int in MPICH; mpi4py gives its value as a Python int.
MPI_Comm comm_from_handle(uintptr_t h) {
  return (MPI_Comm)h;  // NOLINT: a C cast is the one that compiles for both kinds of handle
}

}  // namespace

NB_MODULE(_mpi, m) {
  m.doc() = "normkit's MPI communicator backend.";
  normkit::bindings::register_normkit_exceptions();
  using normkit::MpiCommunicator;
  nb::class_<MpiCommunicator>(m, "MPICommunicator")
      .def(
          "__init__",
          [](MpiCommunicator* self, uintptr_t handle) { new (self) MpiCommunicator(comm_from_handle(handle)); },
          "handle"_a, "From the MPI_Comm handle of an mpi4py communicator (MPI._handleof(comm)).")
      .def_prop_ro("rank", &MpiCommunicator::rank)
      .def_prop_ro("size", &MpiCommunicator::size)
      .def_prop_ro("cuda_aware", &MpiCommunicator::cuda_aware)
      .def(
          "allreduce",
          [](MpiCommunicator& c, nb::ndarray<> array, uintptr_t stream) {
            const normkit::bindings::Buffer b = normkit::bindings::buffer_of(array);
            nb::gil_scoped_release release;
            c.allreduce_sum(b.data, b.count, b.dtype, b.device, reinterpret_cast<void*>(stream));
          },
          "array"_a, "stream"_a = 0, "In-place sum over the processes of a contiguous float32/float64 array.")
      .def_prop_ro("_nk_handle", [](MpiCommunicator& c) {
        return reinterpret_cast<uintptr_t>(static_cast<normkit::Communicator*>(&c));
      });
  m.def("library_version", [] {
    char v[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int len = 0;
    MPI_Get_library_version(v, &len);
    return std::string(v, size_t(len));
  });
}

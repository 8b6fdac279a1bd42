// The local communicator class and the Python-callback communicator (see communicator.h).
#include "communicator.h"

namespace normkit::bindings {

int PythonCommunicator::rank() const {
  nb::gil_scoped_acquire gil;
  return nb::cast<int>(obj_.attr("rank"));
}

int PythonCommunicator::size() const {
  nb::gil_scoped_acquire gil;
  return nb::cast<int>(obj_.attr("size"));
}

void PythonCommunicator::allreduce_sum(void* data, int64_t count, DType dtype, Device device, void*) {
  nb::gil_scoped_acquire gil;
  const size_t shape[1] = {size_t(count)};
  const nb::dlpack::dtype dt = dtype == DType::Float64 ? nb::dtype<double>() : nb::dtype<float>();
  // A view, not a copy: the callee reduces in place into the core's buffer.
  nb::object array;
  if (device.kind == DeviceKind::CPU) {
    array = nb::cast(nb::ndarray<nb::numpy>(data, 1, shape, nb::handle(), nullptr, dt, nb::device::cpu::value), nb::rv_policy::reference);
  } else {
    array = nb::cast(nb::ndarray<nb::array_api>(data, 1, shape, nb::handle(), nullptr, dt, nb::device::cuda::value,
                                                device.index),
                     nb::rv_policy::reference);
  }
  obj_.attr("allreduce")(array);
}

Communicator& communicator_of(nb::handle comm, std::optional<PythonCommunicator>& holder) {
  if (nb::hasattr(comm, "_nk_handle"))
    return *reinterpret_cast<Communicator*>(nb::cast<uintptr_t>(comm.attr("_nk_handle")));
  if (!(nb::hasattr(comm, "allreduce") && nb::hasattr(comm, "rank") && nb::hasattr(comm, "size")))
    throw TypeError(concat("comm: expected a communicator (rank, size, allreduce(array)), got ",
                           nb::str(comm.type()).c_str()));
  holder.emplace(comm);
  return *holder;
}

void export_communicator(nb::module_& m) {
  nb::class_<LocalCommunicator>(m, "LocalCommunicator",
                                "World size 1: every all-reduce leaves the buffer as it is.")
      .def(nb::init<>())
      .def_prop_ro("rank", &LocalCommunicator::rank)
      .def_prop_ro("size", &LocalCommunicator::size)
      .def(
          "allreduce",
          [](LocalCommunicator&, OutArray a) {
            const TensorView v = view(a, "array");
            check_type(v.dtype == DType::Float32 || v.dtype == DType::Float64,
                       "array: expected float32 or float64, got ", dtype_name(v.dtype));
          },
          "array"_a, "In-place sum over the one process: nothing to do.")
      .def_prop_ro("_nk_handle", [](LocalCommunicator& c) { return reinterpret_cast<uintptr_t>(static_cast<Communicator*>(&c)); });
}

}  // namespace normkit::bindings

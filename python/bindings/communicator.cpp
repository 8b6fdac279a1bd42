// The local communicator class and the Python-callback communicator (see communicator.h).
#include "communicator.h"

#include <string>

namespace normkit::bindings {

namespace {

// obj.<name> as an int; a TypeError naming comm otherwise (not nanobind's bare bad_cast).
int int_attribute(nb::handle obj, const char* name) {
  int value = 0;
  if (!nb::try_cast(obj.attr(name), value))
    throw TypeError(concat("comm: expected an int ", name, ", got ", nb::str(obj.attr(name).type()).c_str()));
  return value;
}

// Whether `name` is imported already (looked up, never imported: exporting must not load a framework).
bool module_loaded(const char* name) {
  return nb::borrow<nb::dict>(nb::module_::import_("sys").attr("modules")).contains(name);
}

// The core's buffer as a Python communicator receives it: a view, not a copy (the callee reduces in
// place into it), of a kind with dtype, shape and __dlpack__: a NumPy array for host memory; for CUDA
// memory a torch tensor when torch is loaded, else a CuPy array when CuPy is, else nanobind's bare
// DLPack object (__dlpack__ and __dlpack_device__ only: pass it to the framework's from_dlpack).
nb::object buffer_view(void* data, int64_t count, DType dtype, Device device) {
  const size_t shape[1] = {size_t(count)};
  const nb::dlpack::dtype dt = dtype == DType::Float64 ? nb::dtype<double>() : nb::dtype<float>();
  const auto policy = nb::rv_policy::reference;
  if (device.kind == DeviceKind::CPU) {
    return nb::cast(nb::ndarray<nb::numpy>(data, 1, shape, nb::handle(), nullptr, dt, nb::device::cpu::value),
                    policy);
  }
  const int cuda = nb::device::cuda::value, index = device.index;
  if (module_loaded("torch"))
    return nb::cast(nb::ndarray<nb::pytorch>(data, 1, shape, nb::handle(), nullptr, dt, cuda, index), policy);
  if (module_loaded("cupy"))
    return nb::cast(nb::ndarray<nb::cupy>(data, 1, shape, nb::handle(), nullptr, dt, cuda, index), policy);
  return nb::cast(nb::ndarray<nb::array_api>(data, 1, shape, nb::handle(), nullptr, dt, cuda, index), policy);
}

}  // namespace

int PythonCommunicator::rank() const {
  nb::gil_scoped_acquire gil;
  return int_attribute(obj_, "rank");
}

int PythonCommunicator::size() const {
  nb::gil_scoped_acquire gil;
  return int_attribute(obj_, "size");
}

void PythonCommunicator::allreduce_sum(void* data, int64_t count, DType dtype, Device device, void*) {
  nb::gil_scoped_acquire gil;
  obj_.attr("allreduce")(buffer_view(data, count, dtype, device));
}

Communicator& communicator_of(nb::handle comm, std::optional<PythonCommunicator>& holder) {
  if (nb::hasattr(comm, "_nk_handle")) {
    // The address of a C++ object: taken from normkit's own communicator classes only, so that a
    // stray attribute of that name cannot hand the core an arbitrary pointer.
    const std::string module = nb::str(comm.type().attr("__module__")).c_str();
    uintptr_t handle = 0;
    if (module.rfind("normkit.", 0) != 0 || !nb::try_cast(comm.attr("_nk_handle"), handle) || handle == 0)
      throw TypeError(concat("comm: expected a normkit communicator or an object with rank, size and allreduce(array), "
                             "got ", nb::str(comm.type()).c_str(), " with an _nk_handle attribute"));
    return *reinterpret_cast<Communicator*>(handle);
  }
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
      .def_prop_ro("_nk_handle", [](LocalCommunicator& c) {
        return reinterpret_cast<uintptr_t>(static_cast<Communicator*>(&c));
      });
}

}  // namespace normkit::bindings

// NcclCommunicator and the run-time loader of NCCL. nccl.h gives the types, enums and signatures; every
// call goes through function pointers resolved with dlsym from the library that load() opened.
#include "nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <mutex>

#include "cuda_check.cuh"
#include "normkit/error.h"

static_assert(sizeof(ncclUniqueId) == normkit::nccl::kUniqueIdBytes, "NCCL_UNIQUE_ID_BYTES changed");

namespace normkit {
namespace nccl {
namespace {

constexpr const char* kDefaultLibrary = "libnccl.so.2";

struct Api {
  decltype(&::ncclGetVersion) GetVersion = nullptr;
  decltype(&::ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&::ncclCommInitRank) CommInitRank = nullptr;
  decltype(&::ncclAllReduce) AllReduce = nullptr;
  decltype(&::ncclCommDestroy) CommDestroy = nullptr;
  decltype(&::ncclCommAbort) CommAbort = nullptr;
  decltype(&::ncclGetErrorString) GetErrorString = nullptr;
  decltype(&::ncclCommCount) CommCount = nullptr;
  decltype(&::ncclCommUserRank) CommUserRank = nullptr;
  decltype(&::ncclGetLastError) GetLastError = nullptr;  // optional (NCCL >= 2.13)
};

// Written once under the mutex, never unloaded (NCCL keeps threads alive), read freely afterwards.
std::mutex g_mutex;
void* g_handle = nullptr;
std::string g_path;
Api g_api;

template <class F>
void resolve(void* handle, const char* name, F& fn, const std::string& path, bool required = true) {
  fn = reinterpret_cast<F>(dlsym(handle, name));
  if (!fn && required)
    throw RuntimeError(concat("NCCL library '", path, "' has no symbol ", name, " (not an NCCL 2 library?)"));
}

std::string path_of(void* handle, const std::string& fallback) {
  Dl_info info{};
  void* sym = dlsym(handle, "ncclGetVersion");
  if (sym && dladdr(sym, &info) && info.dli_fname && *info.dli_fname) return info.dli_fname;
  return fallback;
}

std::string load_locked(const std::string& requested) {
  const std::string path = requested.empty() ? kDefaultLibrary : requested;
  if (g_handle) {
    if (requested.empty()) return g_path;
    // The same file again is fine; RTLD_NOLOAD finds it without loading anything new.
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (h) dlclose(h);  // drops the reference RTLD_NOLOAD added
    if (h == g_handle) return g_path;
    throw RuntimeError(concat("NCCL is already loaded from '", g_path, "'; cannot load '", path,
                              "' as well (one NCCL library per process)"));
  }
  dlerror();
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* why = dlerror();
    throw RuntimeError(concat("cannot load the NCCL library '", path, "': ", why ? why : "unknown error",
                              requested.empty() ? " (install nvidia-nccl-cu13 or pass its path to load())" : ""));
  }
  Api api;
  try {
    resolve(h, "ncclGetVersion", api.GetVersion, path);
    resolve(h, "ncclGetUniqueId", api.GetUniqueId, path);
    resolve(h, "ncclCommInitRank", api.CommInitRank, path);
    resolve(h, "ncclAllReduce", api.AllReduce, path);
    resolve(h, "ncclCommDestroy", api.CommDestroy, path);
    resolve(h, "ncclCommAbort", api.CommAbort, path);
    resolve(h, "ncclGetErrorString", api.GetErrorString, path);
    resolve(h, "ncclCommCount", api.CommCount, path);
    resolve(h, "ncclCommUserRank", api.CommUserRank, path);
    resolve(h, "ncclGetLastError", api.GetLastError, path, /*required=*/false);
  } catch (...) {
    dlclose(h);
    throw;
  }
  g_api = api;
  g_path = path_of(h, path);
  g_handle = h;
  return g_path;
}

// The loaded API; loads the default library on first use.
const Api& api() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_handle) load_locked({});
  return g_api;
}

// "<what>: <NCCL's error string> (<last error detail>)" as a RuntimeError, unless r is ncclSuccess.
void check(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess) return;
  const Api& a = g_api;
  std::string detail;
  if (a.GetLastError) {
    const char* last = a.GetLastError(comm);
    if (last && *last) detail = concat(" (", last, ")");
  }
  throw RuntimeError(concat(what, " failed: ", a.GetErrorString(r), detail));
}

// Makes `device` current for its lifetime and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cuda::check_cuda(cudaGetDevice(&previous_), "NCCL communicator: cudaGetDevice");
    if (previous_ != device) cuda::check_cuda(cudaSetDevice(device), "NCCL communicator: cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

std::string load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return load_locked(path);
}

std::string loaded_path() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_handle ? g_path : std::string();
}

int version() {
  int v = 0;
  check(api().GetVersion(&v), "ncclGetVersion");
  return v;
}

std::string unique_id() {
  ncclUniqueId id{};
  check(api().GetUniqueId(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

}  // namespace nccl

NcclCommunicator::NcclCommunicator(const void* unique_id, size_t unique_id_bytes, int rank, int size,
                                   int device)
    : rank_(rank), size_(size), device_(device) {
  check_value(unique_id != nullptr && unique_id_bytes == nccl::kUniqueIdBytes, "NcclCommunicator: unique_id must be ",
              nccl::kUniqueIdBytes, " bytes (from unique_id()), got ", unique_id ? unique_id_bytes : 0);
  check_value(size >= 1, "NcclCommunicator: size must be at least 1, got ", size);
  check_value(rank >= 0 && rank < size, "NcclCommunicator: rank must be in [0, ", size, "), got ", rank);
  check_value(device >= 0, "NcclCommunicator: device must be a CUDA device index >= 0, got ", device);
  const nccl::Api& a = nccl::api();

  int devices = 0;  // left untouched when the runtime fails (no driver)
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw RuntimeError(concat("NcclCommunicator: no usable CUDA device (cudaGetDeviceCount: ", cudaGetErrorString(e),
                              "); NCCL needs a GPU"));
  }
  if (device >= devices)
    throw RuntimeError(concat("NcclCommunicator: CUDA device ", device, " does not exist (", devices,
                              " device", devices == 1 ? "" : "s", " visible)"));

  ncclUniqueId id;
  std::memcpy(id.internal, unique_id, sizeof(id.internal));
  nccl::DeviceGuard guard(device);
  ncclComm_t comm = nullptr;
  nccl::check(a.CommInitRank(&comm, size, id, rank), "ncclCommInitRank");
  comm_ = comm;
  int n = 0, r = 0;
  try {
    nccl::check(a.CommCount(comm, &n), "ncclCommCount", comm);
    nccl::check(a.CommUserRank(comm, &r), "ncclCommUserRank", comm);
    if (n != size || r != rank)
      throw RuntimeError(concat("NcclCommunicator: NCCL reports rank ", r, " of ", n, ", expected rank ", rank, " of ",
                                size));
  } catch (...) {
    (void)a.CommAbort(comm);
    comm_ = nullptr;
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  const nccl::Api& a = nccl::g_api;  // set: comm_ exists only after a successful load
  if (a.CommDestroy(comm_) != ncclSuccess) (void)a.CommAbort(comm_);
  comm_ = nullptr;
}

void NcclCommunicator::check_buffer(int64_t count, DType dtype, Device device, int comm_device) {
  check_value(device.kind == DeviceKind::CUDA, "NCCL all-reduce: the buffer is in ", device_str(device),
              " memory; NCCL needs CUDA memory of the communicator's device cuda:", comm_device);
  check_value(device.index == comm_device, "NCCL all-reduce: the buffer is on ", device_str(device),
              " but the communicator is on cuda:", comm_device);
  check_type(dtype == DType::Float32 || dtype == DType::Float64,
             "NCCL all-reduce: the buffer must be float32 or float64, got ", dtype_name(dtype));
  check_value(count >= 0, "NCCL all-reduce: count must be >= 0, got ", count);
}

void NcclCommunicator::allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) {
  check_buffer(count, dtype, device, device_);
  if (count == 0 || !comm_) return;
  const ncclDataType_t type = dtype == DType::Float64 ? ncclFloat64 : ncclFloat32;
  nccl::DeviceGuard guard(device_);
  nccl::check(nccl::g_api.AllReduce(data, data, size_t(count), type, ncclSum, comm_, static_cast<cudaStream_t>(stream)),
              "ncclAllReduce", comm_);
}

}  // namespace normkit

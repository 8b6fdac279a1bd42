#include "comm/mpi_communicator.h"

#include <climits>
#include <cstdlib>
#include <cstring>

#include "normkit/error.h"

#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>  // MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support
#endif
#if defined(NORMKIT_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace normkit {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw RuntimeError(concat(what, ": ", msg));
}

#if defined(NORMKIT_WITH_CUDA)
void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw RuntimeError(concat(what, ": ", cudaGetErrorString(e)));
}
#endif

bool query_cuda_aware() {
  if (const char* env = std::getenv("NORMKIT_MPI_CUDA_AWARE")) return std::strcmp(env, "1") == 0;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw RuntimeError("MPICommunicator: MPI is not initialized (import mpi4py.MPI first)");
  check_value(comm != MPI_COMM_NULL, "comm: expected a valid MPI communicator, got MPI.COMM_NULL");
  check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  cuda_aware_ = query_cuda_aware();
}

MpiCommunicator::~MpiCommunicator() = default;

void MpiCommunicator::allreduce_host(void* data, int64_t count, DType dtype) {
  const MPI_Datatype type = dtype == DType::Float64 ? MPI_DOUBLE : MPI_FLOAT;
  const size_t elem = dtype == DType::Float64 ? 8 : 4;
  // MPI counts are ints: larger buffers go in pieces.
  for (int64_t done = 0; done < count;) {
    const int n = int(std::min<int64_t>(count - done, INT_MAX));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + size_t(done) * elem, n, type, MPI_SUM, comm_),
              "MPI_Allreduce");
    done += n;
  }
}

void MpiCommunicator::allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) {
  check_type(dtype == DType::Float32 || dtype == DType::Float64, "allreduce: expected float32 or float64, got ",
             dtype_name(dtype));
  if (device.kind == DeviceKind::CPU) {
    allreduce_host(data, count, dtype);
    return;
  }
#if defined(NORMKIT_WITH_CUDA)
  auto st = static_cast<cudaStream_t>(stream);
  const size_t bytes = size_t(count) * (dtype == DType::Float64 ? 8 : 4);
  // MPI calls do not order with CUDA streams: the buffer must be complete before MPI reads it.
  if (cuda_aware_) {
    check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    allreduce_host(data, count, dtype);
    return;
  }
  if (staging_bytes_ < bytes) {
    void* p = nullptr;
    check_cuda(cudaMallocHost(&p, bytes), "cudaMallocHost");
    staging_ = std::shared_ptr<void>(p, [](void* q) { (void)cudaFreeHost(q); });
    staging_bytes_ = bytes;
  }
  check_cuda(cudaMemcpyAsync(staging_.get(), data, bytes, cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  allreduce_host(staging_.get(), count, dtype);
  check_cuda(cudaMemcpyAsync(data, staging_.get(), bytes, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
  // The staging buffer is reused by the next call: wait until the device has read it.
  check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize");
#else
  (void)stream;
  throw TypeError(concat("allreduce: expected a CPU buffer (normkit was built without CUDA), got cuda:", device.index));
#endif
}

}  // namespace normkit

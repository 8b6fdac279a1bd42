// The MPI backend of normkit::Communicator. Built only into the normkit._mpi extension module (so
// `import normkit` never needs MPI), from any MPI communicator -- COMM_WORLD or one from Split.
#pragma once
#include <mpi.h>

#include <memory>

#include "normkit/comm.h"

namespace normkit {

class MpiCommunicator final : public Communicator {
 public:
  // `comm` is used as given, not duplicated: its collectives stay in the order the program issues them
  // on every process, and no collective call is needed to build one. The caller keeps it alive.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Host memory is reduced in place. CUDA memory goes to the MPI library directly when it is CUDA-aware
  // (MPIX_Query_cuda_support, or NORMKIT_MPI_CUDA_AWARE=1), otherwise through pinned host memory.
  void allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) override;
  bool cuda_aware() const { return cuda_aware_; }

 private:
  void allreduce_host(void* data, int64_t count, DType dtype);

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  bool cuda_aware_ = false;
  std::shared_ptr<void> staging_;  // pinned host memory for CUDA buffers
  size_t staging_bytes_ = 0;
};

}  // namespace normkit

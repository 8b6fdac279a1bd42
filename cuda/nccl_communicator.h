// The NCCL backend of the core's Communicator. NCCL itself is loaded at run time (dlopen): the
// nvidia-nccl-cu13 wheel ships only libnccl.so.2, and a module linked against it would not import where
// NCCL is absent. Nothing here includes nccl.h, so users of this header need neither NCCL nor its
// header; the implementation uses nccl.h for types and enums only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "normkit/comm.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace normkit {

namespace nccl {

constexpr size_t kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES

// Loads NCCL from `path` (a file name or path given to dlopen; empty: "libnccl.so.2" through the
// default search) and resolves its entry points. Returns the path of the loaded library. Loading again
// is a no-op when `path` names the library already loaded (or is empty); another library is a
// RuntimeError, as is a library that cannot be opened or lacks an entry point.
std::string load(const std::string& path = {});
// The path NCCL was loaded from; empty while it is not loaded.
std::string loaded_path();
// NCCL_VERSION_CODE of the loaded library (23007 for 2.30.7). Loads the default library if needed.
int version();
// A new unique id (kUniqueIdBytes bytes) for NcclCommunicator; needs no GPU.
std::string unique_id();

}  // namespace nccl

class NcclCommunicator final : public Communicator {
 public:
  // Joins the communicator of `size` ranks named by `unique_id` (kUniqueIdBytes bytes, made by one rank
  // with nccl::unique_id() and shared with the others) as `rank`, on CUDA device `device`. Blocks until
  // every rank has joined. Bad arguments: ValueError; no such device or an NCCL failure: RuntimeError.
  NcclCommunicator(const void* unique_id, size_t unique_id_bytes, int rank, int size, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const { return device_; }
  // Queues an in-place ncclAllReduce (sum) on `stream` and returns without waiting for it.
  void allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) override;

  // The argument checks of allreduce_sum for a communicator on CUDA device `comm_device`: a buffer that
  // is not in that device's memory or a negative count is a ValueError, a dtype other than float32 or
  // float64 a TypeError.
  static void check_buffer(int64_t count, DType dtype, Device device, int comm_device);

 private:
  ncclComm* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 0;
  int device_ = 0;
};

}  // namespace normkit

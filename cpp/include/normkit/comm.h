// The communicator interface of the core: what SyncBatchNorm needs from a process group, and nothing
// more. Backends (MPI, NCCL, a torch.distributed group, Python callables) live beside the core, each in
// its own extension module, and hand the core a `Communicator*`; the core never sees MPI, NCCL or
// Python. Backends report failures by throwing normkit::RuntimeError (or ValueError for bad input).
#pragma once
#include <cstdint>

#include "normkit/dtype.h"
#include "normkit/tensor.h"

namespace normkit {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over all ranks of `count` values of `dtype` (float32 or float64) at `data`, memory of
  // `device`. For CUDA memory `stream` is the cudaStream_t the buffer was produced on (nullptr: the
  // default stream); the result must be ordered on that stream before later work queued on it.
  virtual void allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) = 0;
};

// World size 1: the sum over one rank is the buffer itself.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(void*, int64_t, DType, Device, void*) override {}
};

}  // namespace normkit

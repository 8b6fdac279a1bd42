// Communicators as the bindings hand them to the core: objects of the backend modules (normkit._mpi,
// normkit._nccl, LocalCommunicator here) expose `_nk_handle`, the address of their C++ Communicator;
// any other Python object with `rank`, `size` and `allreduce(array)` (a torch.distributed group
// adapter, a user's wrapper) is called back through PythonCommunicator.
#pragma once
#include <optional>

#include "convert.h"
#include "normkit/comm.h"
#include "normkit/error.h"

namespace normkit::bindings {

class PythonCommunicator final : public Communicator {
 public:
  explicit PythonCommunicator(nb::handle obj) : obj_(obj) {}
  int rank() const override;
  int size() const override;
  // Calls obj.allreduce(array) with the GIL held; `array` views the buffer: a NumPy array for host
  // memory; for CUDA memory a torch tensor (torch loaded), else a CuPy array (CuPy loaded), else a
  // bare DLPack object. The stream is not passed: with torch it is torch's current stream, which
  // torch.distributed orders against.
  void allreduce_sum(void* data, int64_t count, DType dtype, Device device, void* stream) override;

 private:
  nb::handle obj_;
};

// The C++ communicator of `comm`: its `_nk_handle`, or a PythonCommunicator kept in `holder`.
Communicator& communicator_of(nb::handle comm, std::optional<PythonCommunicator>& holder);

}  // namespace normkit::bindings

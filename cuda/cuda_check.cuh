// Turns CUDA error codes into normkit::RuntimeError, shared by every .cu file of the backend.
#pragma once
#include <cuda_runtime.h>

#include "normkit/error.h"

namespace normkit::cuda {

// Throws RuntimeError("<what>: <CUDA message>") unless `e` is cudaSuccess. The runtime's last-error
// slot is cleared first so that a later, unrelated check does not report this failure again.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  throw RuntimeError(concat(what, ": ", cudaGetErrorString(e), " (", cudaGetErrorName(e), ")"));
}

// After a kernel launch: reports a bad configuration or a missing device at the launch site.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace normkit::cuda

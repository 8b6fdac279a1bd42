// Parameter vectors of run-time dtype in the CUDA kernels (BatchInstanceNorm, SwitchableNorm,
// mean-only BatchNorm): read as accumulation-type values and written back in their own dtype. The
// device twin of cpu/params.h's param_at / param_put.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::cuda {

// p[i] as an A, or `fallback` when p is absent.
template <class A>
__device__ A param_at(const void* p, DType t, int64_t i, A fallback) {
  if (!p) return fallback;
  switch (t) {
    case DType::Float16: return load<A>(static_cast<const half_t*>(p)[i]);
    case DType::BFloat16: return load<A>(static_cast<const bfloat16_t*>(p)[i]);
    case DType::Float32: return load<A>(static_cast<const float*>(p)[i]);
    default: return load<A>(static_cast<const double*>(p)[i]);
  }
}

// p[i] = v, stored in dtype t.
template <class A>
__device__ void param_put(void* p, DType t, int64_t i, A v) {
  switch (t) {
    case DType::Float16: static_cast<half_t*>(p)[i] = store<half_t>(v); break;
    case DType::BFloat16: static_cast<bfloat16_t*>(p)[i] = store<bfloat16_t>(v); break;
    case DType::Float32: static_cast<float*>(p)[i] = store<float>(v); break;
    default: static_cast<double*>(p)[i] = store<double>(v); break;
  }
}

}  // namespace normkit::cuda

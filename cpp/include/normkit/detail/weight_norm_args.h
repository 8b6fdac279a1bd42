// What the dispatch layer hands to the CPU and CUDA WeightNorm kernels. The dimension that keeps its
// own norm has been brought to the front, so v is D compact rows of R values each (dim=None, the norm
// of the whole tensor: one row of everything), and so are w, dw and dv:
//   n_d = ||v_d||,  w_d = g_d v_d / n_d
//   dg_d = sum(dw_d * v_d) / n_d,  dv_d = g_d / n_d * (dw_d - v_d * sum(dw_d * v_d) / n_d^2)
// g and dg hold D values of the dtype of v; norms D values of its accumulation dtype.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::detail {

struct WeightNormShape {
  int64_t D = 0, R = 0;
  int64_t numel() const { return D * R; }
};

struct WeightNormForwardArgs {
  DType dtype;  // of v, g and w
  WeightNormShape shape;
  const void* v;
  const void* g;
  void* w;
  void* norms;  // accumulation dtype
};

struct WeightNormBackwardArgs {
  DType dtype;  // of dw, v, g, dv and dg
  WeightNormShape shape;
  const void* dw;
  const void* v;
  const void* g;
  const void* norms;  // accumulation dtype, from the forward
  void* dv;
  void* dg;
};

}  // namespace normkit::detail

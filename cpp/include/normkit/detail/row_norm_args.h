// What the dispatch layer hands to the CPU and CUDA row-normalization kernels (LayerNorm and RMSNorm
// share them: RMSNorm is the uncentred case). All pointers are already validated; x and dy are
// `rows` rows of `cols` contiguous elements spaced by their row strides; every output is contiguous.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::detail {

struct RowNormForwardArgs {
  DType dtype;  // of x and y
  int64_t rows, cols;
  bool center;  // LayerNorm: true, RMSNorm: false
  const void* x;
  int64_t x_row_stride;
  const void* weight;  // nullable, `cols` elements of weight_dtype
  DType weight_dtype;
  const void* bias;  // nullable
  DType bias_dtype;  // == weight_dtype, which is dtype or its accumulation dtype (checked)
  double eps;
  void* y;
  void* mean;  // nullable (RMSNorm, or not wanted), acc dtype
  void* rstd;  // nullable (not wanted: a forward no backward follows), acc dtype
};

struct RowNormBackwardArgs {
  DType dtype;  // of dy, x and dx
  int64_t rows, cols;
  bool center;
  const void* dy;
  int64_t dy_row_stride;
  const void* x;
  int64_t x_row_stride;
  const void* mean;  // nullable (RMSNorm)
  const void* rstd;
  const void* weight;  // nullable
  DType weight_dtype;
  void* dx;       // nullable
  void* dweight;  // nullable
  DType dweight_dtype;
  void* dbias;  // nullable
  DType dbias_dtype;
};

}  // namespace normkit::detail

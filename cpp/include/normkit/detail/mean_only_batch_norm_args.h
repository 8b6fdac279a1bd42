// What the dispatch layer hands to the CPU and CUDA mean-only BatchNorm kernels (Salimans & Kingma,
// 2016). x is [N, C, S] (S = product of the spatial dims, 1 for [N, C]) compact in `layout` (x, y, dy
// and dx share it):
//   y = x - mean_c + bias_c,   mean_c over n and s (training) or running_mean_c (otherwise);
//   dx = dy - mean_c(dy) (training) or dy (otherwise),   dbias = sum over n and s of dy.
// No division by a standard deviation: the layer is meant to follow a weight-normalized layer.
#pragma once
#include <cstdint>

#include "normkit/detail/channel_norm_args.h"
#include "normkit/dtype.h"

namespace normkit::detail {

struct MobnShape {
  int64_t N = 0, C = 0, S = 0;
  Layout layout = Layout::NCS;
  int64_t numel() const { return N * C * S; }
  // Offset of element (n, c, s) is plane_base(n, c) + s * plane_step().
  NK_HD int64_t plane_base(int64_t n, int64_t c) const {
    return layout == Layout::NCS ? (n * C + c) * S : n * S * C + c;
  }
  NK_HD int64_t plane_step() const { return layout == Layout::NCS ? 1 : C; }
};

struct MobnForwardArgs {
  DType dtype;  // of x and y
  MobnShape shape;
  const void* x;
  const void* bias;  // nullable (0), C values of bias_dtype
  DType bias_dtype;
  // training: subtract the batch mean and, when running_mean is given, update it in place as
  //   running = (1 - momentum) * running + momentum * batch_mean;
  // otherwise subtract running_mean.
  bool training;
  double momentum;  // resolved by the caller (momentum=None -> 1 / (num_batches_tracked + 1))
  void* running_mean;  // nullable when training; C values of running_dtype
  DType running_dtype;
  void* y;
  void* save_mean;  // C accumulation-type values: the mean that was subtracted
};

struct MobnBackwardArgs {
  DType dtype;  // of dy and dx
  MobnShape shape;
  const void* dy;
  bool training;  // the mean came from the batch: dx = dy - mean_c(dy)
  void* dx;       // nullable
  void* dbias;    // nullable, C values of dbias_dtype
  DType dbias_dtype;
};

}  // namespace normkit::detail

// What the dispatch layer hands to the CPU and CUDA Batch-Instance Normalization kernels (Nam & Kim,
// NeurIPS 2018). x is [N, C, S] (S = product of the spatial dims), compact in `layout` (x, y, dy, dx):
//   y = w_c * (r_c * xhat_BN + (1 - r_c) * xhat_IN) + b_c,   r_c = clamp(rho_c, 0, 1),
// xhat_BN from per-channel statistics (batch statistics when training, running ones otherwise) and
// xhat_IN from per-(n, c) statistics (always). One pass of per-plane moments gives both: a channel's
// batch statistic is the Chan merge of its N plane moments, in n order.
#pragma once
#include <cstdint>

#include "normkit/detail/channel_norm_args.h"
#include "normkit/dtype.h"

namespace normkit::detail {

struct BinShape {
  int64_t N = 0, C = 0, S = 0;
  Layout layout = Layout::NCS;
  int64_t numel() const { return N * C * S; }
  // Offset of element (n, c, s) and the distance between consecutive s of one plane.
  NK_HD int64_t plane_base(int64_t n, int64_t c) const {
    return layout == Layout::NCS ? (n * C + c) * S : n * S * C + c;
  }
  NK_HD int64_t plane_step() const { return layout == Layout::NCS ? 1 : C; }
};

// Per-channel parameters (C values each): weight, bias, rho share param_dtype (x's dtype or its
// accumulation dtype); running statistics share running_dtype.
struct BinForwardArgs {
  DType dtype;  // of x and y
  BinShape shape;
  const void* x;
  const void* rho;  // required
  const void* weight;  // nullable (1)
  const void* bias;    // nullable (0)
  DType param_dtype;
  DType rho_dtype;
  double eps;
  // training: batch statistics, running ones updated (unbiased variance) when given;
  // otherwise the running statistics for the BN branch.
  bool training;
  double momentum;  // resolved by the caller
  void* running_mean;  // nullable when training
  void* running_var;
  DType running_dtype;
  void* y;
  void* save_mean_bn;  // C accumulation-type values
  void* save_rstd_bn;
  void* save_mean_in;  // N * C accumulation-type values
  void* save_rstd_in;
};

// dx = r rstd_BN (g - [batch_stats] (mean_c(g) + xhat_BN mean_c(g xhat_BN)))
//    + (1 - r) rstd_IN (g - mean_nc(g) - xhat_IN mean_nc(g xhat_IN)),   g = dy * w
// dweight = sum dy (r xhat_BN + (1 - r) xhat_IN), dbias = sum dy,
// drho = sum dy w (xhat_BN - xhat_IN) where 0 <= rho <= 1 (torch.clamp's gradient), else 0.
struct BinBackwardArgs {
  DType dtype;  // of dy, x and dx
  BinShape shape;
  const void* dy;
  const void* x;
  const void* rho;
  const void* weight;  // nullable
  DType param_dtype;
  DType rho_dtype;
  const void* save_mean_bn;
  const void* save_rstd_bn;
  const void* save_mean_in;
  const void* save_rstd_in;
  bool batch_stats;
  void* dx;       // nullable
  void* dweight;  // nullable
  DType dweight_dtype;
  void* dbias;  // nullable
  DType dbias_dtype;
  void* drho;  // nullable
  DType drho_dtype;
};

}  // namespace normkit::detail

// What the dispatch layer hands to the CPU and CUDA LocalResponseNorm kernels. x is [N, C, S]
// (S = product of the spatial dims), compact in `layout` like every other array here (x, y, dy, dx):
//   b_c = a_c * s_c^-beta,  s_c = k + alpha / size * sum_{c' in W(c)} a_{c'}^2,
//   W(c) = [c - size / 2, c + (size - 1) / 2] clipped to [0, C) (zero padding, divided by size even
// at the edges, as torch's avg_pool with count_include_pad).
#pragma once
#include <cstdint>

#include "normkit/detail/channel_norm_args.h"
#include "normkit/dtype.h"

namespace normkit::detail {

struct LrnShape {
  int64_t N = 0, C = 0, S = 0;
  Layout layout = Layout::NCS;
  int64_t numel() const { return N * C * S; }
};

struct LrnParams {
  int64_t size;  // >= 1 (checked)
  double alpha, beta, k;
};

struct LrnForwardArgs {
  DType dtype;  // of x and y
  LrnShape shape;
  LrnParams p;
  const void* x;
  void* y;
};

// dx_j = dy_j s_j^-beta - (2 alpha beta / size) a_j * sum_{c : j in W(c)} dy_c a_c s_c^(-beta-1)
struct LrnBackwardArgs {
  DType dtype;  // of dy, x and dx
  LrnShape shape;
  LrnParams p;
  const void* dy;
  const void* x;
  void* dx;
};

}  // namespace normkit::detail

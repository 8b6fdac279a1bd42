// What the dispatch layer hands to the CPU and CUDA Switchable Normalization kernels (Luo et al.,
// ICLR 2019). x is [N, C, S] (S = product of the spatial dims; S = 1 for a 2-D input), compact in
// `layout` (x, y, dy, dx). From the per-(n, c) moments (pm, pv: mean and biased variance over S):
//   IN: pm, pv;  LN: mean_c pm, mean_c (pv + pm^2) - mean^2;  BN: the same over n (training) or the
//   running statistics (eval);
//   mu = sum_k softmax(mean_weight)_k mu_k,  s2 = sum_k softmax(var_weight)_k s2_k  (k = IN, LN, BN),
//   y = w_c (x - mu) / sqrt(s2 + eps) + b_c.
// Without the IN term (use_in = false, 2-D input) the softmaxes run over the LN and BN logits only.
#pragma once
#include <cstdint>

#include "normkit/detail/batch_instance_norm_args.h"
#include "normkit/dtype.h"

namespace normkit::detail {

using SnShape = BinShape;

// The saved buffer, accumulation dtype, 4 N C + 2 N + 2 C values:
// mean [N C] | rstd [N C] | plane mean [N C] | plane var [N C] | LN mean [N] | LN var [N] |
// BN mean [C] | BN var [C] (batch statistics when training, running ones otherwise).
struct SnSaved {
  int64_t N, C;
  NK_HD int64_t mean() const { return 0; }
  NK_HD int64_t rstd() const { return N * C; }
  NK_HD int64_t pmean() const { return 2 * N * C; }
  NK_HD int64_t pvar() const { return 3 * N * C; }
  NK_HD int64_t ln_mean() const { return 4 * N * C; }
  NK_HD int64_t ln_var() const { return 4 * N * C + N; }
  NK_HD int64_t bn_mean() const { return 4 * N * C + 2 * N; }
  NK_HD int64_t bn_var() const { return 4 * N * C + 2 * N + C; }
  NK_HD int64_t size() const { return 4 * N * C + 2 * N + 2 * C; }
};

struct SnForwardArgs {
  DType dtype;  // of x and y
  SnShape shape;
  bool use_in;
  const void* x;
  const void* mean_weight;  // 3 logits (IN, LN, BN)
  const void* var_weight;   // 3 logits
  DType logit_dtype;
  const void* weight;  // nullable (1)
  const void* bias;    // nullable (0)
  DType param_dtype;
  double eps;
  bool training;  // batch statistics for BN, running ones updated (population variance) when given
  double momentum;
  void* running_mean;  // nullable when training
  void* running_var;
  DType running_dtype;
  void* y;
  void* saved;  // SnSaved
};

// With g = dy w, per plane the sums Dy = sum dy, Dx = sum dy xhat give dmu_p = -rstd w Dy and
// ds2_p = -rstd^2 w Dx / 2; these flow back through the softmax mixtures into the plane moments
// (math::sn_* formulas), and dx = rstd g + a_p + b_p (x - pm_p).
struct SnBackwardArgs {
  DType dtype;  // of dy, x and dx
  SnShape shape;
  bool use_in;
  const void* dy;
  const void* x;
  const void* mean_weight;
  const void* var_weight;
  DType logit_dtype;
  const void* weight;  // nullable
  DType param_dtype;
  const void* saved;
  bool batch_stats;
  void* dx;  // nullable
  void* dweight;  // nullable
  DType dweight_dtype;
  void* dbias;  // nullable
  DType dbias_dtype;
  void* dmean_weight;  // nullable (3)
  void* dvar_weight;   // nullable (3)
  DType dlogit_dtype;
};

}  // namespace normkit::detail

// What the dispatch layer hands to the CPU and CUDA kernels of the channel normalizations. BatchNorm,
// InstanceNorm and GroupNorm all normalize an [N, C, S] tensor (S = product of the spatial dims) by
// statistics of groups of channels:
//
//   layer         groups       per_sample   statistics                reduced over
//   BatchNorm     C            false        one per channel           n, s
//   InstanceNorm  C            true         one per (n, c)            s
//   GroupNorm     num_groups   true         one per (n, group)        c in group, s
//
// A statistic's index is  stat(n, c) = (per_sample ? n * groups : 0) + c / (C / groups).
// The affine weight/bias are per channel. x, y, dy and dx are compact in `layout` (but see x_layout
// and dy_layout).
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::detail {

enum class Layout : uint8_t {
  NCS,  // channels first: x[n][c][s] (NCHW, NCDHW, NCL, NC)
  NSC,  // channels last:  x[n][s][c] (NHWC = torch.channels_last, NDHWC = channels_last_3d)
};

struct ChannelNormShape {
  int64_t N = 0, C = 0, S = 0;
  Layout layout = Layout::NCS;
  int64_t groups = 0;  // divides C
  bool per_sample = false;

  int64_t channels_per_group() const { return C / groups; }
  int64_t num_stats() const { return (per_sample ? N : 1) * groups; }
  int64_t stat_index(int64_t n, int64_t c) const {
    return (per_sample ? n * groups : 0) + c / channels_per_group();
  }
  int64_t count_per_stat() const { return (per_sample ? 1 : N) * channels_per_group() * S; }
};

struct ChannelNormForwardArgs {
  DType dtype;  // of x and y
  ChannelNormShape shape;
  const void* x;
  // The layout x is compact in: shape.layout (y's), or, for the CPU kernels only, NSC under an NCS y
  // (InstanceNorm's channels-first output of a channels-last input, as torch's).
  Layout x_layout = Layout::NCS;
  const void* weight;  // nullable, C values of weight_dtype
  DType weight_dtype;
  const void* bias;  // nullable
  DType bias_dtype;  // == weight_dtype, which is dtype or its accumulation dtype (checked)
  double eps;

  // training: statistics from x. Then, if running_mean/running_var are given (BatchNorm and
  // InstanceNorm with track_running_stats; groups == C), each channel's running values become
  //   running = (1 - momentum) * running + momentum * batch_value,
  // where batch_value averages, over the statistics of that channel, the mean and the UNBIASED
  // variance (count_per_stat / (count_per_stat - 1) times the biased one).
  // !training: normalize with the running statistics (per channel, shared by all n; per_sample is
  // false and groups == C then): mean = running_mean, rstd = 1 / sqrt(running_var + eps).
  bool training;
  double momentum;  // already resolved by the caller (momentum=None -> 1 / num_batches_tracked)
  void* running_mean;  // nullable, C values of running_dtype, updated in place
  void* running_var;
  DType running_dtype;  // dtype or its accumulation dtype (checked)

  void* y;
  void* save_mean;  // num_stats() values in the accumulation type: what backward reads
  void* save_rstd;

  // SyncBatchNorm's first phase (training, BatchNorm only): when set, the kernel only computes the
  // local statistics and writes 3 * num_stats() accumulation-type values -- hi[s], lo[s], m2[s] with
  // mean = hi + lo (a shift and the mean relative to it, so the mean survives in float64 to more bits
  // than the accumulation type holds) and m2 the sum of squared deviations; y, save_mean, save_rstd
  // and the running statistics are left alone (y may be null). An empty batch gives zeros.
  void* local_moments = nullptr;
};

struct ChannelNormBackwardArgs {
  DType dtype;  // of dy, x and dx
  ChannelNormShape shape;
  const void* dy;
  // The layout dy is compact in: shape.layout, or, for the CPU kernels only, NCS under an NSC problem
  // (the gradient of InstanceNorm's channels-first output for a channels-last x).
  Layout dy_layout = Layout::NCS;
  const void* x;
  const void* save_mean;  // num_stats() accumulation-type values from the forward
  const void* save_rstd;
  const void* weight;  // nullable
  DType weight_dtype;
  // true: the statistics came from x, so the gradient flows through them:
  //   dx = rstd * (g - mean_stat(g) - xhat * mean_stat(g * xhat)),  g = dy * w[c]
  // false (eval with running statistics): dx = dy * w[c] * rstd.
  bool batch_stats;
  void* dx;  // nullable
  void* dweight;  // nullable: sum over n, s of dy * xhat, per channel
  DType dweight_dtype;
  void* dbias;  // nullable: sum over n, s of dy, per channel
  DType dbias_dtype;

  // SyncBatchNorm's last phase (batch_stats, BatchNorm only): when set, 2 * num_stats()
  // accumulation-type values mg[s], mgx[s] -- mean(g) and mean(g * xhat) over the global batch,
  // weight included -- replace the ones the kernel would compute from this process's values.
  const void* coefficients = nullptr;
};

}  // namespace normkit::detail

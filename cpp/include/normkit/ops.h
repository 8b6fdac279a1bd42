// The public operations of the core. Each validates all of its arguments first (TypeError for
// dtype/device, ValueError for shapes and values) and only then writes its outputs; it picks the CPU
// or CUDA kernels from the tensors' device. Outputs are caller-allocated: y and dx with x's shape and
// dtype, statistics of shape [rows] (the product of the leading dimensions) in the accumulation dtype
// (float32, float64 for float64 inputs), parameter gradients with the weight's shape, any float dtype.
// `stream` is a cudaStream_t for CUDA tensors (nullptr: the default stream) and is ignored on CPU.
#pragma once
#include <cstdint>
#include <vector>

#include "normkit/comm.h"
#include "normkit/tensor.h"

namespace normkit {

using Shape = std::vector<int64_t>;

// LayerNorm over the trailing dimensions `normalized_shape`: y = (x - mean) * rstd * weight + bias.
// mean and rstd (one per row) may be left out where no backward follows.
void layer_norm_forward(const TensorView& x, const Shape& normalized_shape, const OptTensor& weight,
                        const OptTensor& bias, double eps, const TensorView& y, const OptTensor& mean,
                        const OptTensor& rstd, void* stream = nullptr);

// Gradients of layer_norm_forward given the saved mean and rstd. Any of dx, dweight, dbias may be
// absent when that gradient is not wanted.
void layer_norm_backward(const TensorView& dy, const TensorView& x, const Shape& normalized_shape,
                         const TensorView& mean, const TensorView& rstd, const OptTensor& weight,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                         void* stream = nullptr);

// RMSNorm: y = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps) (rstd may be left out).
void rms_norm_forward(const TensorView& x, const Shape& normalized_shape, const OptTensor& weight,
                      double eps, const TensorView& y, const OptTensor& rstd, void* stream = nullptr);

void rms_norm_backward(const TensorView& dy, const TensorView& x, const Shape& normalized_shape,
                       const TensorView& rstd, const OptTensor& weight, const OptTensor& dx,
                       const OptTensor& dweight, void* stream = nullptr);

// ---- Channel normalizations: x is [N, C, *spatial], compact channels-first (NCHW...) or channels-last
// (NHWC, NDHWC); y (dx) must be compact in one of the two layouts and the kernels work in y's (dx's)
// layout, reading x and dy in place when they share it. save_mean/save_rstd hold one value per
// statistic in the accumulation dtype: [C] for BatchNorm, [N, C] for InstanceNorm, [N, num_groups]
// for GroupNorm. Running statistics (per channel, any float dtype) are updated in place.

// training: batch statistics, running statistics updated when given; otherwise normalize with the
// running statistics (then save_mean/save_rstd receive them as mean and 1/sqrt(var + eps)).
void batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                        const OptTensor& weight, const OptTensor& bias, bool training, double momentum,
                        double eps, const TensorView& y, const TensorView& save_mean,
                        const TensorView& save_rstd, void* stream = nullptr);
// training: the gradient through the batch statistics; otherwise with the statistics held fixed.
void batch_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                         const TensorView& save_rstd, const OptTensor& weight, bool training,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                         void* stream = nullptr);

// use_input_stats: per-(n, c) statistics (running statistics, when given, get the batch average);
// otherwise the running statistics per channel.
void instance_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                           const OptTensor& weight, const OptTensor& bias, bool use_input_stats,
                           double momentum, double eps, const TensorView& y, const TensorView& save_mean,
                           const TensorView& save_rstd, void* stream = nullptr);
void instance_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                            const TensorView& save_rstd, const OptTensor& weight, bool use_input_stats,
                            const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                            void* stream = nullptr);

void group_norm_forward(const TensorView& x, int64_t num_groups, const OptTensor& weight,
                        const OptTensor& bias, double eps, const TensorView& y, const TensorView& save_mean,
                        const TensorView& save_rstd, void* stream = nullptr);
void group_norm_backward(const TensorView& dy, const TensorView& x, int64_t num_groups,
                         const TensorView& save_mean, const TensorView& save_rstd, const OptTensor& weight,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                         void* stream = nullptr);

// ---- LocalResponseNorm over the channels of x = [N, C, *spatial] (rank >= 3), as
// torch.nn.functional.local_response_norm: y_c = x_c / (k + alpha / size * sum_{c' in W(c)} x_{c'}^2)^beta
// with W(c) = [c - size / 2, c + (size - 1) / 2] clipped to the channels (divided by size even at the
// edges). y (dx) must be compact channels-first or channels-last; the kernels work in its layout,
// reading x and dy in place when they share it. No statistics are saved: the backward recomputes them.
void local_response_norm_forward(const TensorView& x, int64_t size, double alpha, double beta, double k,
                                 const TensorView& y, void* stream = nullptr);
void local_response_norm_backward(const TensorView& dy, const TensorView& x, int64_t size, double alpha,
                                  double beta, double k, const TensorView& dx, void* stream = nullptr);

// ---- WeightNorm, as torch._weight_norm(v, g, dim): w = g * v / ||v||, the norm taken over every dim
// of v but `dim` (in [-ndim, ndim)). As in torch, dim == -1 means the norm of the whole tensor (the
// parametrization's dim=None); other negative dims count from the end. g (and dg) have v's dtype and
// the shape of v with size 1 on every dim but `dim` (all sizes 1, or a 0-d array, for the whole
// tensor); norms has g's shape and the accumulation dtype (float32; float64 for float64). w, dv, dg
// and norms must be compact. Zero-norm slices give inf/nan, as in torch.
void weight_norm_forward(const TensorView& v, const TensorView& g, int64_t dim, const TensorView& w,
                         const TensorView& norms, void* stream = nullptr);
void weight_norm_backward(const TensorView& dw, const TensorView& v, const TensorView& g,
                          const TensorView& norms, int64_t dim, const TensorView& dv, const TensorView& dg,
                          void* stream = nullptr);

// ---- Batch-Instance Normalization (Nam & Kim, 2018) over x = [N, C, *spatial] (rank >= 3):
//   y = w_c * (r_c * xhat_BN + (1 - r_c) * xhat_IN) + b_c,  r_c = clamp(rho_c, 0, 1),
// xhat_BN from batch statistics (training; running ones updated as BatchNorm's when given) or the
// running statistics (otherwise), xhat_IN from per-(n, c) statistics. rho, weight, bias: [C];
// save_mean_bn/save_rstd_bn: [C], save_mean_in/save_rstd_in: [N, C], accumulation dtype. The backward
// gives drho only where 0 <= rho <= 1 (torch.clamp's gradient, bounds included).
void batch_instance_norm_forward(const TensorView& x, const TensorView& rho, const OptTensor& weight,
                                 const OptTensor& bias, const OptTensor& running_mean,
                                 const OptTensor& running_var, bool training, double momentum, double eps,
                                 const TensorView& y, const TensorView& save_mean_bn,
                                 const TensorView& save_rstd_bn, const TensorView& save_mean_in,
                                 const TensorView& save_rstd_in, void* stream = nullptr);
void batch_instance_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& rho,
                                  const OptTensor& weight, const TensorView& save_mean_bn,
                                  const TensorView& save_rstd_bn, const TensorView& save_mean_in,
                                  const TensorView& save_rstd_in, bool training, const OptTensor& dx,
                                  const OptTensor& dweight, const OptTensor& dbias, const OptTensor& drho,
                                  void* stream = nullptr);

// ---- Switchable Normalization (Luo et al., 2019) over x = [N, C, *spatial] (rank >= 2):
//   y = w_c (x - mu) / sqrt(s2 + eps) + b_c,  mu = sum_k softmax(mean_weight)_k mu_k,
//   s2 = sum_k softmax(var_weight)_k s2_k over the IN, LN and BN statistics (population variances;
// BN from the batch when training, running_mean/running_var updated with the BN batch statistics
// and `momentum` when given, the running statistics otherwise). A 2-D x has no IN term: the softmaxes
// run over the LN and BN logits. mean_weight, var_weight: [3]; weight, bias: [C]; saved: the
// accumulation-dtype buffer of detail::SnSaved (4 N C + 2 N + 2 C values).
void switchable_norm_forward(const TensorView& x, const TensorView& mean_weight, const TensorView& var_weight,
                             const OptTensor& weight, const OptTensor& bias, const OptTensor& running_mean,
                             const OptTensor& running_var, bool training, double momentum, double eps,
                             const TensorView& y, const TensorView& saved, void* stream = nullptr);
void switchable_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& mean_weight,
                              const TensorView& var_weight, const OptTensor& weight, const TensorView& saved,
                              bool training, const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                              const OptTensor& dmean_weight, const OptTensor& dvar_weight, void* stream = nullptr);

// ---- SyncBatchNorm (training): BatchNorm over the union of the batches of all processes of `comm`.
// Forward: local per-channel moments, ONE sum all-reduce of 1 + 3 C float64 values (whatever the
// number of processes; see math::sync_terms), then normalization with the global mean and biased
// variance; running statistics get the global mean and unbiased variance. Backward: local sums of dy
// and dy * xhat, ONE all-reduce of 1 + 2 C values, then dx; dweight/dbias are this process's sums.
// Local batches may be empty (N = 0): the process still takes part and gets empty outputs. A global
// batch of at most one value per channel is a ValueError, raised identically by every process before
// anything is written. `check` adds the layer id, the call number and the channel count to the
// payload, reduced and compared first in a 6-value all-reduce of their own (so that different
// channel counts, hence payload sizes, are caught too); processes that disagree all raise ValueError
// instead of mixing layers or hanging. On CUDA nothing waits for the device, except with `check` on
// or a local batch of at most one value.
struct SyncCheck {
  bool enabled = false;
  int64_t layer_id = 0;
  int64_t call = 0;
};
void sync_batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                             const OptTensor& weight, const OptTensor& bias, double momentum, double eps,
                             Communicator& comm, const SyncCheck& check, const TensorView& y,
                             const TensorView& save_mean, const TensorView& save_rstd, void* stream = nullptr);
// dx absent: no communication (the local sums give dweight/dbias).
void sync_batch_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                              const TensorView& save_rstd, const OptTensor& weight, Communicator& comm,
                              const SyncCheck& check, const OptTensor& dx, const OptTensor& dweight,
                              const OptTensor& dbias, void* stream = nullptr);
// ---- SpectralNorm (Miyato et al., 2018), as torch.nn.utils.parametrizations.spectral_norm: the weight
// w (2 or more dims) seen as the matrix W = w.movedim(dim, 0).flatten(1) of H x K; u ([H]) and v ([K])
// have w's dtype and are updated in place. When training, n_power_iterations steps of
//   u = normalize(W v),  v = normalize(W^T u),  normalize(t) = t / max(||t||, eps)
// run first (torch's order; the stored u and v are used as they are otherwise); then
// sigma = u^T W v and y = w / sigma. y (compact, w's shape and dtype) and sigma (one value, the
// accumulation dtype) are optional: without them the call is just the power iteration.
// check_sigma: a zero or non-finite sigma is a ValueError, raised before anything is written
// (on CUDA it costs a device-to-host copy of sigma); without it the division gives inf/nan as torch.
void spectral_norm_forward(const TensorView& w, const TensorView& u, const TensorView& v, int64_t dim,
                           int64_t n_power_iterations, double eps, bool training, bool check_sigma,
                           const OptTensor& y, const OptTensor& sigma, void* stream = nullptr);
// The gradient of y = w / sigma with u and v held constant (torch's):
//   dW = dY / sigma - (sum(dY * W) / sigma^2) u v^T   (on the matrix view; dw compact, w's shape).
void spectral_norm_backward(const TensorView& dy, const TensorView& w, const TensorView& u, const TensorView& v,
                            int64_t dim, const TensorView& sigma, const TensorView& dw, void* stream = nullptr);

// ---- Mean-only BatchNorm (Salimans & Kingma, 2016) over x = [N, C, *spatial] (rank >= 2):
//   y = x - mean_c + bias_c,
// mean_c over n and the spatial dims when training (running_mean, when given, updated in place with
// `momentum`, the weight of the batch), running_mean otherwise. save_mean ([C], accumulation dtype)
// receives the mean that was subtracted. y (dx) must be compact channels-first or channels-last; the
// kernels work in its layout. Backward: dx = dy - mean_c(dy) when training, dy otherwise; dbias = sum dy.
void mean_only_batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& bias,
                                  bool training, double momentum, const TensorView& y,
                                  const TensorView& save_mean, void* stream = nullptr);
void mean_only_batch_norm_backward(const TensorView& dy, bool training, const OptTensor& dx,
                                   const OptTensor& dbias, void* stream = nullptr);

}  // namespace normkit

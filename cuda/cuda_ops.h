// Host-side entry points of the CUDA kernels, callable from code compiled without nvcc. The dispatch
// layer calls these only for validated CUDA tensors, and only when normkit is built with CUDA
// (NORMKIT_WITH_CUDA); the device of the tensors is already current (see DeviceGuard).
#pragma once
#include <cstdint>
#include <memory>

#include "normkit/detail/batch_instance_norm_args.h"
#include "normkit/detail/channel_norm_args.h"
#include "normkit/detail/lrn_args.h"
#include "normkit/detail/row_norm_args.h"
#include "normkit/detail/switchable_norm_args.h"
#include "normkit/detail/sync_batch_norm_steps.h"
#include "normkit/detail/weight_norm_args.h"
#include "normkit/detail/spectral_norm_args.h"
#include "normkit/detail/mean_only_batch_norm_args.h"
#include "normkit/tensor.h"

namespace normkit::cuda {

// Number of usable CUDA devices now; 0 when there is no driver or no device (never throws).
int device_count();

// Makes `device` current for the guard's lifetime and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Device memory that lives until the holder is released (stream-ordered free on `stream`).
std::shared_ptr<void> allocate(size_t bytes, void* stream);

// Copies `bytes` bytes of device memory to the host and waits for them (and for everything queued
// before on `stream`): the one host synchronisation some checks need.
void copy_to_host(void* dst, const void* src, size_t bytes, void* stream);

// Sets `count` elements of `dtype` at dst to `value` (stream-ordered). Any float dtype for 0;
// float32 and float64 for other values.
void fill(void* dst, DType dtype, int64_t count, double value, void* stream);

// Copies `bytes` bytes of device memory to device memory (stream-ordered).
void copy_on_device(void* dst, const void* src, size_t bytes, void* stream);

// Copies any strided view into compact row-major memory `dst` (same dtype, same device).
void contiguous_copy(const TensorView& src, void* dst, void* stream);

void row_norm_forward(const detail::RowNormForwardArgs& args, void* stream);
void row_norm_backward(const detail::RowNormBackwardArgs& args, void* stream);

void channel_norm_forward(const detail::ChannelNormForwardArgs& args, void* stream);
void channel_norm_backward(const detail::ChannelNormBackwardArgs& args, void* stream);

void local_response_norm_forward(const detail::LrnForwardArgs& args, void* stream);
void local_response_norm_backward(const detail::LrnBackwardArgs& args, void* stream);

void weight_norm_forward(const detail::WeightNormForwardArgs& args, void* stream);
void weight_norm_backward(const detail::WeightNormBackwardArgs& args, void* stream);

void batch_instance_norm_forward(const detail::BinForwardArgs& args, void* stream);
void batch_instance_norm_backward(const detail::BinBackwardArgs& args, void* stream);

void switchable_norm_forward(const detail::SnForwardArgs& args, void* stream);
void switchable_norm_backward(const detail::SnBackwardArgs& args, void* stream);

// SyncBatchNorm's per-channel steps (detail/sync_batch_norm_steps.h); acc is the accumulation dtype.
void sync_pack_forward(const void* moments, DType acc, int64_t C, double count, double* payload, void* stream);
void sync_finish_forward(const double* payload, int64_t C, DType acc, double momentum, void* mean, void* var,
                         void* running_mean, void* running_var, DType running_dtype, void* stream);
void sync_write_header(const detail::SyncHeader& h, double* payload, void* stream);
// out[c] = src[c] for c < C, converted to out_dtype.
void sync_cast(const double* src, int64_t C, void* out, DType out_dtype, void* stream);
void sync_dx_coefficients(const double* payload, int64_t C, const void* weight, DType weight_dtype, DType acc,
                          void* coefficients, void* stream);

void spectral_norm_estimate(const detail::SpectralNormForwardArgs& args, void* stream);
void spectral_norm_apply(const detail::SpectralNormForwardArgs& args, void* stream);
void spectral_norm_backward(const detail::SpectralNormBackwardArgs& args, void* stream);

void mean_only_batch_norm_forward(const detail::MobnForwardArgs& args, void* stream);
void mean_only_batch_norm_backward(const detail::MobnBackwardArgs& args, void* stream);

}  // namespace normkit::cuda

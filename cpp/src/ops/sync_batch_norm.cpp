// SyncBatchNorm: BatchNorm's kernels cut at the reductions, with one all-reduce in between.
//
//   forward:  local moments (BatchNorm's statistics pass)  ->  payload  ->  all-reduce
//             -> global mean / variance, running statistics  ->  BatchNorm's normalization pass
//   backward: local sums of dy, dy * xhat (BatchNorm's sums pass)  ->  payload  ->  all-reduce
//             -> dx coefficients  ->  BatchNorm's dx pass with them
//
// The per-channel steps between the passes are detail/sync_batch_norm_steps.h, run by a plain loop
// here or by cuda/sync_batch_norm.cu. Every caller tensor is validated before the first collective,
// and a failing global check raises on every process before anything of the caller's is written.
#include <cstdlib>
#include <cstring>

#include "normkit/detail/sync_batch_norm_steps.h"
#include "ops/common.h"

namespace normkit {

namespace ops {  // ops/channel_norm.cpp: BatchNorm's passes, validated like batch_norm_forward/backward
void batch_norm_local_moments(const TensorView& x, const OptTensor& weight, const OptTensor& bias, double eps,
                              const TensorView& y, const TensorView& save_mean, const TensorView& save_rstd,
                              void* local_moments, void* stream);
void batch_norm_backward_given_coefficients(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                                            const TensorView& save_rstd, const OptTensor& weight,
                                            const void* coefficients, const TensorView& dx, void* stream);
}  // namespace ops

namespace {

using detail::SyncHeader;

bool on_cpu(const Device& d) { return d.kind == DeviceKind::CPU; }

TensorView vector_view(void* data, DType dtype, const Device& d, int64_t n) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = d;
  v.shape = {n};
  v.strides = {1};
  return v;
}

// ---- the per-channel steps on the tensors' device --------------------------------------------------

void pack_forward(const Device& d, const void* moments, DType acc, int64_t C, double count, double* payload,
                  void* stream) {
  if (!on_cpu(d)) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::sync_pack_forward(moments, acc, C, count, payload, stream);
#endif
    return;
  }
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    for (int64_t c = 0; c < C; ++c) detail::sync_pack_moments(c, C, count, static_cast<const A*>(moments), payload);
  });
}

void finish_forward(const Device& d, const double* payload, int64_t C, DType acc, double momentum, void* mean,
                    void* var, const OptTensor& running_mean, const OptTensor& running_var, void* stream) {
  void* rm = running_mean ? running_mean->data : nullptr;
  void* rv = running_var ? running_var->data : nullptr;
  const DType running_dtype = running_mean ? running_mean->dtype : acc;
  if (!on_cpu(d)) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::sync_finish_forward(payload, C, acc, momentum, mean, var, rm, rv, running_dtype, stream);
#endif
    return;
  }
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    dispatch_float(running_dtype, [&](auto p) {
      using P = decltype(p);
      for (int64_t c = 0; c < C; ++c)
        detail::sync_finish_moments(c, C, payload, A(momentum), static_cast<A*>(mean), static_cast<A*>(var),
                                    static_cast<P*>(rm), static_cast<P*>(rv));
    });
  });
}

void write_header(const Device& d, const SyncHeader& h, double* payload, void* stream) {
  if (!on_cpu(d)) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::sync_write_header(h, payload, stream);
#endif
    return;
  }
  detail::sync_write_header(h, payload);
}

// out = the C float64 values at src, in out's dtype.
void cast_to(const Device& d, const double* src, int64_t C, const TensorView& out, void* stream) {
  if (!on_cpu(d)) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::sync_cast(src, C, out.data, out.dtype, stream);
#endif
    return;
  }
  dispatch_float(out.dtype, [&](auto o) {
    using O = decltype(o);
    for (int64_t c = 0; c < C; ++c) static_cast<O*>(out.data)[c] = store<O>(src[c]);
  });
}

void dx_coefficients(const Device& d, const double* payload, int64_t C, const OptTensor& weight, DType acc,
                     void* coefficients, void* stream) {
  const void* w = weight ? weight->data : nullptr;
  const DType wd = weight ? weight->dtype : acc;
  if (!on_cpu(d)) {
#if defined(NORMKIT_WITH_CUDA)
    cuda::sync_dx_coefficients(payload, C, w, wd, acc, coefficients, stream);
#endif
    return;
  }
  dispatch_acc(acc, [&](auto a) {
    using A = decltype(a);
    dispatch_float(wd, [&](auto wt) {
      using W = decltype(wt);
      for (int64_t c = 0; c < C; ++c)
        detail::sync_dx_coefficients(c, C, payload, static_cast<const W*>(w), static_cast<A*>(coefficients));
    });
  });
}

// n float64 values from src (on d) to dst: on d too, or on the host when `to_host` (which then waits
// for the device on CUDA).
void copy_values(const Device& d, double* dst, const double* src, int64_t n, bool to_host, void* stream) {
  if (on_cpu(d)) {
    std::memcpy(dst, src, size_t(n) * sizeof(double));
    return;
  }
#if defined(NORMKIT_WITH_CUDA)
  if (to_host)
    cuda::copy_to_host(dst, src, size_t(n) * sizeof(double), stream);
  else
    cuda::copy_on_device(dst, src, size_t(n) * sizeof(double), stream);
#else
  (void)to_host;
  (void)stream;
#endif
}

// ---- the collective and what every process checks after it -----------------------------------------

SyncHeader make_header(int64_t local_count, const SyncCheck& check, int64_t C, int64_t check_offset) {
  SyncHeader h;
  h.count = double(local_count);
  if (check.enabled) {
    h.check_offset = check_offset;
    detail::sync_check_values(h.check, check.layer_id, check.call, C);
  }
  return h;
}

// The all-reduce, and the checks every process makes on the sums (all raise or none does). With the
// mismatch check on, the 6 check values (at the payload's end) are reduced and checked first, in a
// collective of their own: processes whose payloads differ in size (different channel counts) then
// raise too, instead of failing inside the communication library. Returns the global count when it
// had to be read (always on CPU), otherwise -1.
double allreduce_and_check(Communicator& comm, const Device& d, double* payload, int64_t size, const SyncHeader& h,
                           const char* direction, bool need_count, void* stream) {
  if (h.check_offset >= 0) {
    comm.allreduce_sum(payload + h.check_offset, detail::kSyncCheckValues, DType::Float64, d, stream);
    double summed[detail::kSyncCheckValues];
    copy_values(d, summed, payload + h.check_offset, detail::kSyncCheckValues, true, stream);
    const int bad = detail::sync_check_mismatch(summed, comm.size());
    static const char* const names[] = {"layer id", "call number", "channel count"};
    if (bad >= 0)
      throw ValueError(concat("SyncBatchNorm ", direction, ": the ", comm.size(), " processes disagree on the ",
                              names[bad], " (a layer skipped or called in a different order on some process); ",
                              "expected the same value everywhere, got sum ", summed[2 * bad], " and sum of squares ",
                              summed[2 * bad + 1]));
    size = h.check_offset;
  }
  comm.allreduce_sum(payload, size, DType::Float64, d, stream);
  if (!need_count) return -1;
  double count = 0;
  copy_values(d, &count, payload, 1, true, stream);
  return count;
}

}  // namespace

void sync_batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                             const OptTensor& weight, const OptTensor& bias, double momentum, double eps,
                             Communicator& comm, const SyncCheck& check, const TensorView& y,
                             const TensorView& save_mean, const TensorView& save_rstd, void* stream) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 2, "x: expected at least 2 dimensions [N, C, *], got shape ", shape_str(x.shape));
  ops::check_channel_vector(running_mean, "running_mean", x, true);
  ops::check_channel_vector(running_var, "running_var", x, true);
  ops::check_param_dtypes(running_mean, "running_mean", running_var, "running_var", x);
  check_value(running_mean.has_value() == running_var.has_value(),
              "running_mean, running_var: expected both or neither, got ",
              running_mean ? "running_mean only" : "running_var only");
  check_value(std::isfinite(momentum), "momentum: expected a finite number, got ", momentum);
  // (The BatchNorm calls below never see the running statistics, which are updated in place before
  // x, weight and bias are read for the normalization: checked here.)
  ops::check_no_overlap({{y, "y"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}, {running_mean, "running_mean"},
                         {running_var, "running_var"}},
                        {{x, "x"}, {weight, "weight"}, {bias, "bias"}});
  const int64_t C = x.shape[1];
  const int64_t local_count = C > 0 ? x.numel() / C : 0;
  const DType acc = acc_dtype(x.dtype);
  const Device d = x.device;
  // y before x is copied into y's layout (a wrong y must not first cost a copy of x).
  ops::check_same_device(y, "y", x, "x");
  ops::check_dtype(y, "y", x.dtype);
  ops::check_shape(y, "y", x.shape);
  const detail::Layout layout = ops::output_layout(y, "y");
  ops::DeviceScope scope(d);
  // Both BatchNorm passes below read x in y's layout: a strided x is copied once, here.
  std::shared_ptr<void> x_copy;
  const TensorView xs = ops::in_layout(x, layout, x_copy, stream);

  // Local moments; this validates x, weight, bias, eps, y, save_mean and save_rstd.
  auto moments = ops::device_buffer(d, C, 3 * size_t(dtype_size(acc)), stream);
  ops::batch_norm_local_moments(xs, weight, bias, eps, y, save_mean, save_rstd, moments.get(), stream);

  const int64_t size = detail::sync_forward_payload_size(C, check.enabled);
  auto payload_hold = ops::device_buffer(d, size, sizeof(double), stream);
  auto* payload = static_cast<double*>(payload_hold.get());
  const SyncHeader h = make_header(local_count, check, C, 1 + 3 * C);
  pack_forward(d, moments.get(), acc, C, h.count, payload, stream);
  write_header(d, h, payload, stream);
  // A process with two or more values knows the global count is at least two: on CUDA only the others
  // wait for the device to read it.
  const double count =
      allreduce_and_check(comm, d, payload, size, h, "forward", on_cpu(d) || local_count <= 1, stream);
  check_value(count < 0 || count > 1, "x: expected more than 1 value per channel over the ", comm.size(),
              " processes when training, got ", count);

  auto stats = ops::device_buffer(d, C, 2 * size_t(dtype_size(acc)), stream);
  void* mean = stats.get();
  void* var = static_cast<char*>(stats.get()) + size_t(C) * size_t(dtype_size(acc));
  finish_forward(d, payload, C, acc, momentum, mean, var, running_mean, running_var, stream);
  // Normalization with the global statistics: BatchNorm's evaluation pass, given them as "running".
  batch_norm_forward(xs, vector_view(mean, acc, d, C), vector_view(var, acc, d, C), weight, bias, false, 0.0, eps, y,
                     save_mean, save_rstd, stream);
}

void sync_batch_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                              const TensorView& save_rstd, const OptTensor& weight, Communicator& comm,
                              const SyncCheck& check, const OptTensor& dx, const OptTensor& dweight,
                              const OptTensor& dbias, void* stream) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 2, "x: expected at least 2 dimensions [N, C, *], got shape ", shape_str(x.shape));
  const int64_t C = x.shape[1];
  if (dweight) ops::check_output(*dweight, "dweight", {C}, dweight->dtype, x, "x");
  if (dbias) ops::check_output(*dbias, "dbias", {C}, dbias->dtype, x, "x");
  // Before anything is written: dweight and dbias are written after the all-reduce and before the dx
  // pass reads dy, x and weight.
  ops::check_no_overlap({{dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}},
                        {{dy, "dy"}, {x, "x"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}, {weight, "weight"}});
  if (!dx) {
    // dweight and dbias are this process's sums: no communication.
    batch_norm_backward(dy, x, save_mean, save_rstd, weight, false, std::nullopt, dweight, dbias, stream);
    return;
  }
  ops::check_same_device(*dx, "dx", x, "x");
  ops::check_dtype(*dx, "dx", x.dtype);
  ops::check_shape(*dx, "dx", x.shape);
  const detail::Layout layout = ops::output_layout(*dx, "dx");
  // dy before it is copied into dx's layout: a wrong-shaped broadcast dy would otherwise be copied (or
  // fail to allocate) before its shape is checked.
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  const int64_t local_count = C > 0 ? x.numel() / C : 0;
  const DType acc = acc_dtype(x.dtype);
  const Device d = x.device;
  ops::DeviceScope scope(d);
  // Both BatchNorm passes below read dy and x in dx's layout: strided ones are copied once, here.
  std::shared_ptr<void> dy_copy, x_copy;
  const TensorView dys = ops::in_layout(dy, layout, dy_copy, stream);
  const TensorView xs = ops::in_layout(x, layout, x_copy, stream);

  const int64_t size = detail::sync_backward_payload_size(C, check.enabled);
  auto payload_hold = ops::device_buffer(d, size, sizeof(double), stream);
  auto* payload = static_cast<double*>(payload_hold.get());
  // This process's sums of dy and dy * xhat [sum_dy[C], sum_dy_xhat[C]] (validates dy, x, the saved
  // statistics and weight), copied into the payload: the all-reduce sums the payload in place, and
  // these local sums are this process's dbias and dweight, written only once the check has passed.
  auto local_hold = ops::device_buffer(d, C, 2 * sizeof(double), stream);
  auto* local = static_cast<double*>(local_hold.get());
  batch_norm_backward(dys, xs, save_mean, save_rstd, weight, false, std::nullopt,
                      vector_view(local + C, DType::Float64, d, C), vector_view(local, DType::Float64, d, C), stream);
  copy_values(d, payload + 1, local, 2 * C, false, stream);
  const SyncHeader h = make_header(local_count, check, C, 1 + 2 * C);
  write_header(d, h, payload, stream);
  allreduce_and_check(comm, d, payload, size, h, "backward", false, stream);
  if (dweight) cast_to(d, local + C, C, *dweight, stream);
  if (dbias) cast_to(d, local, C, *dbias, stream);

  std::shared_ptr<void> weight_copy;
  const OptTensor w = ops::compact_param(weight, weight_copy, stream);
  auto coefficients = ops::device_buffer(d, C, 2 * size_t(dtype_size(acc)), stream);
  dx_coefficients(d, payload, C, w, acc, coefficients.get(), stream);
  ops::batch_norm_backward_given_coefficients(dys, xs, save_mean, save_rstd, weight, coefficients.get(), *dx, stream);
}

}  // namespace normkit

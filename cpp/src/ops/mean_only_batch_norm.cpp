// Mean-only BatchNorm entries: validate everything, then hand the kernels one argument struct. The
// kernels work in the layout of the output (channels first or channels last, which the Python layer
// makes follow x); x and dy are read in place when they share it and copied once otherwise.
#include <cmath>

#include "ops/common.h"

namespace normkit {
namespace {

using detail::Layout;
using detail::MobnShape;

void check_input(const TensorView& x, const char* arg) {
  ops::check_device_supported(x, arg);
  check_value(x.ndim() >= 2, arg, ": expected at least 2 dimensions [N, C, *spatial], got shape ",
              shape_str(x.shape));
}

}  // namespace

void mean_only_batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& bias_in,
                                  bool training, double momentum, const TensorView& y,
                                  const TensorView& save_mean, void* stream) {
  check_input(x, "x");
  ops::check_channel_vector(bias_in, "bias", x);
  ops::check_channel_vector(running_mean, "running_mean", x, true);
  const DType bias_dtype = ops::check_param_dtypes(bias_in, "bias", std::nullopt, "", x);
  const DType running_dtype = ops::check_param_dtypes(running_mean, "running_mean", std::nullopt, "", x);
  check_value(training || running_mean.has_value(),
              "running_mean: expected an array in evaluation mode (training=False), got None");
  check_value(std::isfinite(momentum), "momentum: expected a finite number, got ", momentum);
  ops::check_same_device(y, "y", x, "x");
  ops::check_dtype(y, "y", x.dtype);
  ops::check_shape(y, "y", x.shape);
  const Layout layout = ops::output_layout(y, "y");
  ops::check_output(save_mean, "save_mean", {x.shape[1]}, acc_dtype(x.dtype), x, "x");

  ops::check_no_overlap({{y, "y"}, {save_mean, "save_mean"}, {running_mean, "running_mean"}},
                        {{x, "x"}, {bias_in, "bias"}});
  const MobnShape shape = ops::ncs_shape<MobnShape>(x, layout);
  if (shape.C == 0) return;
  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> bias_copy, x_copy;
  const OptTensor bias = ops::compact_param(bias_in, bias_copy, stream);
  ops::advise_huge_pages(y);
  detail::MobnForwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.bias = bias ? bias->data : nullptr;
  a.bias_dtype = bias_dtype;
  // An empty batch (N * S == 0) has no batch mean: as torch's BatchNorm, an empty output, the running
  // mean left as it is, and a saved mean of 0 (BatchNorm's empty-batch mean): both kernels then take
  // the evaluation path with no running mean.
  const bool batch_mean = training && shape.N * shape.S > 0;
  a.training = batch_mean;
  a.momentum = momentum;
  a.running_mean = running_mean && (batch_mean || !training) ? running_mean->data : nullptr;
  a.running_dtype = running_dtype;
  a.y = y.data;
  a.save_mean = save_mean.data;
  NK_RUN_KERNEL(x.device, mean_only_batch_norm_forward, a, stream);
}

void mean_only_batch_norm_backward(const TensorView& dy, bool training, const OptTensor& dx,
                                   const OptTensor& dbias, void* stream) {
  check_input(dy, "dy");
  Layout layout = ops::compact_in(dy, Layout::NSC) && !ops::compact_in(dy, Layout::NCS) ? Layout::NSC : Layout::NCS;
  if (dx) {
    ops::check_same_device(*dx, "dx", dy, "dy");
    ops::check_dtype(*dx, "dx", dy.dtype);
    ops::check_shape(*dx, "dx", dy.shape);
    layout = ops::output_layout(*dx, "dx");
  }
  if (dbias) ops::check_output(*dbias, "dbias", {dy.shape[1]}, dbias->dtype, dy, "dy");

  ops::check_no_overlap({{dx, "dx"}, {dbias, "dbias"}}, {{dy, "dy"}});
  const MobnShape shape = ops::ncs_shape<MobnShape>(dy, layout);
  if (shape.C == 0) return;
  ops::DeviceScope scope(dy.device);
  std::shared_ptr<void> dy_copy;
  if (dx) ops::advise_huge_pages(*dx);
  detail::MobnBackwardArgs a{};
  a.dtype = dy.dtype;
  a.shape = shape;
  a.dy = ops::data_in(dy, layout, dy_copy, stream);
  a.training = training && shape.N * shape.S > 0;  // (an empty batch has no mean to subtract)
  a.dx = dx ? dx->data : nullptr;
  a.dbias = dbias ? dbias->data : nullptr;
  a.dbias_dtype = dbias ? dbias->dtype : dy.dtype;
  NK_RUN_KERNEL(dy.device, mean_only_batch_norm_backward, a, stream);
}

}  // namespace normkit

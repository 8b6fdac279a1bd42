// BatchNorm, InstanceNorm and GroupNorm entries. The three differ only in how channels group into
// statistics (see detail/channel_norm_args.h), so they share one validation path and one pair of
// kernels. The kernels work in the layout of the output; inputs in another layout are copied once
// (see kernel_transposes for the exception).
#include <algorithm>
#include <cmath>

#include "ops/common.h"

namespace normkit {
namespace {

using detail::ChannelNormBackwardArgs;
using detail::ChannelNormForwardArgs;
using detail::ChannelNormShape;
using detail::Layout;
using ops::compact_in;
using ops::data_in;
using ops::output_layout;

// (The layout is set once the output's is known.)
ChannelNormShape shape_of(const TensorView& x, int64_t groups, bool per_sample) {
  ChannelNormShape s = ops::ncs_shape<ChannelNormShape>(x, Layout::NCS);
  s.groups = groups;
  s.per_sample = per_sample;
  return s;
}

void check_input(const TensorView& x) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 2, "x: expected at least 2 dimensions [N, C, *], got shape ", shape_str(x.shape));
}

void check_saved(const TensorView& s, const char* arg, const Shape& shape, const TensorView& x) {
  ops::check_same_device(s, arg, x, "x");
  ops::check_dtype(s, arg, acc_dtype(x.dtype));
  int64_t n = 1;
  for (auto d : shape) n *= d;
  check_value(s.numel() == n && s.is_contiguous(), arg, ": expected ", shape_str(shape),
              " contiguous values, got shape ", shape_str(s.shape));
}

// Whether t, compact in `from` and not in the kernels' layout `to`, goes to the kernels as it is: the
// CPU kernels transpose InstanceNorm's mixed layouts (a channels-last x under a channels-first y, and
// the channels-first dy of its backward) a few samples at a time through cache, where a whole copy
// first moved t's bytes twice more. Other devices get the copy.
bool kernel_transposes(const TensorView& t, Layout from, Layout to) {
  return t.device.kind == DeviceKind::CPU && compact_in(t, from) && !compact_in(t, to);
}

struct Running {
  const OptTensor& mean;
  const OptTensor& var;
};

void forward(const TensorView& x, ChannelNormShape shape, const Running& running, const OptTensor& weight_in,
             const OptTensor& bias_in, bool training, double momentum, double eps, const TensorView& y,
             const TensorView& save_mean, const TensorView& save_rstd, const Shape& saved_shape,
             void* stream, void* local_moments = nullptr) {
  ops::check_channel_vector(weight_in, "weight", x);
  ops::check_channel_vector(bias_in, "bias", x);
  ops::check_channel_vector(running.mean, "running_mean", x, true);
  ops::check_channel_vector(running.var, "running_var", x, true);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", bias_in, "bias", x);
  const DType running_dtype = ops::check_param_dtypes(running.mean, "running_mean", running.var, "running_var", x);
  check_value(running.mean.has_value() == running.var.has_value(),
              "running_mean, running_var: expected both or neither, got ",
              running.mean ? "running_mean only" : "running_var only");
  ops::check_eps(eps);
  check_value(std::isfinite(momentum), "momentum: expected a finite number, got ", momentum);
  ops::check_same_device(y, "y", x, "x");
  ops::check_dtype(y, "y", x.dtype);
  ops::check_shape(y, "y", x.shape);
  const Layout layout = output_layout(y, "y");
  check_saved(save_mean, "save_mean", saved_shape, x);
  check_saved(save_rstd, "save_rstd", saved_shape, x);

  ops::check_no_overlap({{y, "y"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"}, {running.mean, "running_mean"},
                         {running.var, "running_var"}},
                        {{x, "x"}, {weight_in, "weight"}, {bias_in, "bias"}});

  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, bias_copy, x_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor bias = ops::compact_param(bias_in, bias_copy, stream);
  ops::advise_huge_pages(y);
  shape.layout = layout;
  ChannelNormForwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  const bool transposes = layout == Layout::NCS && kernel_transposes(x, Layout::NSC, layout);
  a.x_layout = transposes ? Layout::NSC : layout;
  a.x = transposes ? x.data : data_in(x, layout, x_copy, stream);
  a.weight = weight ? weight->data : nullptr;
  a.weight_dtype = param_dtype;
  a.bias = bias ? bias->data : nullptr;
  a.bias_dtype = param_dtype;
  a.eps = eps;
  a.training = training;
  a.momentum = momentum;
  a.running_mean = running.mean ? running.mean->data : nullptr;
  a.running_var = running.var ? running.var->data : nullptr;
  a.running_dtype = running_dtype;
  a.y = y.data;
  a.save_mean = save_mean.data;
  a.save_rstd = save_rstd.data;
  a.local_moments = local_moments;
  NK_RUN_KERNEL(x.device, channel_norm_forward, a, stream);
}

void backward(const TensorView& dy, const TensorView& x, ChannelNormShape shape, const TensorView& save_mean,
              const TensorView& save_rstd, const Shape& saved_shape, const OptTensor& weight_in,
              bool batch_stats, const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
              void* stream, const void* coefficients = nullptr) {
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  check_saved(save_mean, "save_mean", saved_shape, x);
  check_saved(save_rstd, "save_rstd", saved_shape, x);
  ops::check_channel_vector(weight_in, "weight", x);
  ops::check_param_dtypes(weight_in, "weight", std::nullopt, "", x);
  const Shape channels{x.shape[1]};
  Layout layout = compact_in(x, Layout::NSC) && !compact_in(x, Layout::NCS) ? Layout::NSC : Layout::NCS;
  if (dx) {
    ops::check_same_device(*dx, "dx", x, "x");
    ops::check_dtype(*dx, "dx", x.dtype);
    ops::check_shape(*dx, "dx", x.shape);
    layout = output_layout(*dx, "dx");
  }
  if (dweight) ops::check_output(*dweight, "dweight", channels, dweight->dtype, x, "x");
  if (dbias) ops::check_output(*dbias, "dbias", channels, dbias->dtype, x, "x");

  ops::check_no_overlap({{dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}},
                        {{dy, "dy"}, {x, "x"}, {save_mean, "save_mean"}, {save_rstd, "save_rstd"},
                         {weight_in, "weight"}});

  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, x_copy, dy_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  if (dx) ops::advise_huge_pages(*dx);
  shape.layout = layout;
  ChannelNormBackwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  const bool transposes = layout == Layout::NSC && kernel_transposes(dy, Layout::NCS, layout);
  a.dy_layout = transposes ? Layout::NCS : layout;
  a.dy = transposes ? dy.data : data_in(dy, layout, dy_copy, stream);
  a.x = data_in(x, layout, x_copy, stream);
  a.save_mean = save_mean.data;
  a.save_rstd = save_rstd.data;
  a.weight = weight ? weight->data : nullptr;
  a.weight_dtype = weight ? weight->dtype : x.dtype;
  a.batch_stats = batch_stats;
  a.dx = dx ? dx->data : nullptr;
  a.dweight = dweight ? dweight->data : nullptr;
  a.dweight_dtype = dweight ? dweight->dtype : x.dtype;
  a.dbias = dbias ? dbias->data : nullptr;
  a.dbias_dtype = dbias ? dbias->dtype : x.dtype;
  a.coefficients = coefficients;
  NK_RUN_KERNEL(x.device, channel_norm_backward, a, stream);
}

}  // namespace

namespace ops {
void batch_norm_local_moments(const TensorView& x, const OptTensor& weight, const OptTensor& bias, double eps,
                              const TensorView& y, const TensorView& save_mean, const TensorView& save_rstd,
                              void* local_moments, void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], false);
  const OptTensor none;
  forward(x, shape, {none, none}, weight, bias, true, 0.0, eps, y, save_mean, save_rstd, {shape.C}, stream,
          local_moments);
}

void batch_norm_backward_given_coefficients(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                                            const TensorView& save_rstd, const OptTensor& weight,
                                            const void* coefficients, const TensorView& dx, void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], false);
  const OptTensor none;
  backward(dy, x, shape, save_mean, save_rstd, {shape.C}, weight, true, dx, none, none, stream, coefficients);
}
}  // namespace ops

void batch_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                        const OptTensor& weight, const OptTensor& bias, bool training, double momentum,
                        double eps, const TensorView& y, const TensorView& save_mean,
                        const TensorView& save_rstd, void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], false);
  if (training) {
    check_value(shape.N * shape.S != 1, "x: expected more than 1 value per channel when training, got shape ",
                shape_str(x.shape));
  } else {
    check_value(running_mean.has_value() && running_var.has_value(),
                "running_mean, running_var: expected both in evaluation mode (training=False), got None");
  }
  forward(x, shape, {running_mean, running_var}, weight, bias, training, momentum, eps, y, save_mean,
          save_rstd, {shape.C}, stream);
}

void batch_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                         const TensorView& save_rstd, const OptTensor& weight, bool training,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias, void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], false);
  backward(dy, x, shape, save_mean, save_rstd, {shape.C}, weight, training, dx, dweight, dbias, stream);
}

void instance_norm_forward(const TensorView& x, const OptTensor& running_mean, const OptTensor& running_var,
                           const OptTensor& weight, const OptTensor& bias, bool use_input_stats,
                           double momentum, double eps, const TensorView& y, const TensorView& save_mean,
                           const TensorView& save_rstd, void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], use_input_stats);
  if (use_input_stats) {
    check_value(shape.S != 1, "x: expected more than 1 spatial element when training, got shape ",
                shape_str(x.shape));
  } else {
    check_value(running_mean.has_value() && running_var.has_value(),
                "running_mean, running_var: expected both when use_input_stats=False, got None");
  }
  const Shape saved = use_input_stats ? Shape{shape.N, shape.C} : Shape{shape.C};
  forward(x, shape, {running_mean, running_var}, weight, bias, use_input_stats, momentum, eps, y, save_mean,
          save_rstd, saved, stream);
}

void instance_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& save_mean,
                            const TensorView& save_rstd, const OptTensor& weight, bool use_input_stats,
                            const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                            void* stream) {
  check_input(x);
  const ChannelNormShape shape = shape_of(x, x.shape[1], use_input_stats);
  const Shape saved = use_input_stats ? Shape{shape.N, shape.C} : Shape{shape.C};
  backward(dy, x, shape, save_mean, save_rstd, saved, weight, use_input_stats, dx, dweight, dbias, stream);
}

namespace {
ChannelNormShape group_shape(const TensorView& x, int64_t num_groups) {
  check_input(x);
  check_value(num_groups >= 1 && x.shape[1] % num_groups == 0, "num_groups: expected a divisor of the ",
              x.shape[1], " channels of x, got ", num_groups);
  return shape_of(x, num_groups, true);
}
}  // namespace

void group_norm_forward(const TensorView& x, int64_t num_groups, const OptTensor& weight,
                        const OptTensor& bias, double eps, const TensorView& y, const TensorView& save_mean,
                        const TensorView& save_rstd, void* stream) {
  const ChannelNormShape shape = group_shape(x, num_groups);
  const OptTensor none;
  forward(x, shape, {none, none}, weight, bias, true, 0.0, eps, y, save_mean, save_rstd,
          {shape.N, num_groups}, stream);
}

void group_norm_backward(const TensorView& dy, const TensorView& x, int64_t num_groups,
                         const TensorView& save_mean, const TensorView& save_rstd, const OptTensor& weight,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias, void* stream) {
  const ChannelNormShape shape = group_shape(x, num_groups);
  backward(dy, x, shape, save_mean, save_rstd, {shape.N, num_groups}, weight, true, dx, dweight, dbias,
           stream);
}

}  // namespace normkit

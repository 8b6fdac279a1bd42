// Batch-Instance Normalization entries: validate everything, then hand the kernels one argument
// struct. The kernels work in the layout of the output (channels first or channels last, which the
// Python layer makes follow x); x and dy are read in place when they share it and copied once
// otherwise.
#include <cmath>

#include "ops/common.h"

namespace normkit {
namespace {

using detail::BinShape;
using detail::Layout;

void check_input(const TensorView& x) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 3, "x: expected at least 3 dimensions [N, C, *spatial], got shape ", shape_str(x.shape));
}

void check_saved(const TensorView& s, const char* arg, int64_t count, const TensorView& x) {
  ops::check_same_device(s, arg, x, "x");
  ops::check_dtype(s, arg, acc_dtype(x.dtype));
  check_value(s.numel() == count && s.is_contiguous(), arg, ": expected ", count, " contiguous values, got shape ",
              shape_str(s.shape));
}

void check_grad(const OptTensor& g, const char* arg, const TensorView& x) {
  if (g) ops::check_output(*g, arg, {x.shape[1]}, g->dtype, x, "x");
}

}  // namespace

void batch_instance_norm_forward(const TensorView& x, const TensorView& rho, const OptTensor& weight_in,
                                 const OptTensor& bias_in, const OptTensor& running_mean,
                                 const OptTensor& running_var, bool training, double momentum, double eps,
                                 const TensorView& y, const TensorView& save_mean_bn,
                                 const TensorView& save_rstd_bn, const TensorView& save_mean_in,
                                 const TensorView& save_rstd_in, void* stream) {
  check_input(x);
  ops::check_channel_vector(rho, "rho", x);
  ops::check_channel_vector(weight_in, "weight", x);
  ops::check_channel_vector(bias_in, "bias", x);
  ops::check_channel_vector(running_mean, "running_mean", x, true);
  ops::check_channel_vector(running_var, "running_var", x, true);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", bias_in, "bias", x);
  const DType rho_dtype = ops::check_param_dtypes(rho, "rho", std::nullopt, "", x);
  const DType running_dtype = ops::check_param_dtypes(running_mean, "running_mean", running_var, "running_var", x);
  check_value(running_mean.has_value() == running_var.has_value(),
              "running_mean, running_var: expected both or neither, got ",
              running_mean ? "running_mean only" : "running_var only");
  const BinShape s0 = ops::ncs_shape<BinShape>(x, Layout::NCS);
  check_value(training || running_mean.has_value(),
              "running_mean, running_var: expected both in evaluation mode (training=False), got None");
  // The instance branch always normalizes per (n, c), as InstanceNorm does when training.
  check_value(s0.S != 1, "x: expected more than 1 spatial element per (n, c) (instance statistics), got shape ",
              shape_str(x.shape));
  ops::check_eps(eps);
  check_value(std::isfinite(momentum), "momentum: expected a finite number, got ", momentum);
  ops::check_same_device(y, "y", x, "x");
  ops::check_dtype(y, "y", x.dtype);
  ops::check_shape(y, "y", x.shape);
  const Layout layout = ops::output_layout(y, "y");
  check_saved(save_mean_bn, "save_mean_bn", s0.C, x);
  check_saved(save_rstd_bn, "save_rstd_bn", s0.C, x);
  check_saved(save_mean_in, "save_mean_in", s0.N * s0.C, x);
  check_saved(save_rstd_in, "save_rstd_in", s0.N * s0.C, x);

  ops::check_no_overlap({{y, "y"}, {save_mean_bn, "save_mean_bn"}, {save_rstd_bn, "save_rstd_bn"},
                         {save_mean_in, "save_mean_in"}, {save_rstd_in, "save_rstd_in"}, {running_mean, "running_mean"},
                         {running_var, "running_var"}},
                        {{x, "x"}, {rho, "rho"}, {weight_in, "weight"}, {bias_in, "bias"}});
  const BinShape shape = ops::ncs_shape<BinShape>(x, layout);
  if (shape.numel() == 0) {
    // No values: the statistics of nothing (mean 0, rstd NaN, as BatchNorm's); running statistics
    // are not updated.
    ops::DeviceScope scope(x.device);
    ops::fill(save_mean_bn, 0.0, stream);
    ops::fill(save_rstd_bn, std::nan(""), stream);
    ops::fill(save_mean_in, 0.0, stream);
    ops::fill(save_rstd_in, std::nan(""), stream);
    return;
  }
  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, bias_copy, rho_copy, x_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor bias = ops::compact_param(bias_in, bias_copy, stream);
  const OptTensor rho_c = ops::compact_param(rho, rho_copy, stream);
  ops::advise_huge_pages(y);
  detail::BinForwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.rho = rho_c->data;
  a.weight = weight ? weight->data : nullptr;
  a.bias = bias ? bias->data : nullptr;
  a.param_dtype = param_dtype;
  a.rho_dtype = rho_dtype;
  a.eps = eps;
  a.training = training;
  a.momentum = momentum;
  a.running_mean = running_mean ? running_mean->data : nullptr;
  a.running_var = running_var ? running_var->data : nullptr;
  a.running_dtype = running_dtype;
  a.y = y.data;
  a.save_mean_bn = save_mean_bn.data;
  a.save_rstd_bn = save_rstd_bn.data;
  a.save_mean_in = save_mean_in.data;
  a.save_rstd_in = save_rstd_in.data;
  NK_RUN_KERNEL(x.device, batch_instance_norm_forward, a, stream);
}

void batch_instance_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& rho,
                                  const OptTensor& weight_in, const TensorView& save_mean_bn,
                                  const TensorView& save_rstd_bn, const TensorView& save_mean_in,
                                  const TensorView& save_rstd_in, bool training, const OptTensor& dx,
                                  const OptTensor& dweight, const OptTensor& dbias, const OptTensor& drho,
                                  void* stream) {
  check_input(x);
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  ops::check_channel_vector(rho, "rho", x);
  ops::check_channel_vector(weight_in, "weight", x);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", std::nullopt, "", x);
  const DType rho_dtype = ops::check_param_dtypes(rho, "rho", std::nullopt, "", x);
  const BinShape s0 = ops::ncs_shape<BinShape>(x, Layout::NCS);
  check_saved(save_mean_bn, "save_mean_bn", s0.C, x);
  check_saved(save_rstd_bn, "save_rstd_bn", s0.C, x);
  check_saved(save_mean_in, "save_mean_in", s0.N * s0.C, x);
  check_saved(save_rstd_in, "save_rstd_in", s0.N * s0.C, x);
  Layout layout = ops::compact_in(x, Layout::NSC) && !ops::compact_in(x, Layout::NCS) ? Layout::NSC : Layout::NCS;
  if (dx) {
    ops::check_same_device(*dx, "dx", x, "x");
    ops::check_dtype(*dx, "dx", x.dtype);
    ops::check_shape(*dx, "dx", x.shape);
    layout = ops::output_layout(*dx, "dx");
  }
  check_grad(dweight, "dweight", x);
  check_grad(dbias, "dbias", x);
  check_grad(drho, "drho", x);

  ops::check_no_overlap({{dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}, {drho, "drho"}},
                        {{dy, "dy"}, {x, "x"}, {rho, "rho"}, {weight_in, "weight"}, {save_mean_bn, "save_mean_bn"},
                         {save_rstd_bn, "save_rstd_bn"}, {save_mean_in, "save_mean_in"},
                         {save_rstd_in, "save_rstd_in"}});
  const BinShape shape = ops::ncs_shape<BinShape>(x, layout);
  if (shape.numel() == 0) {
    // Sums over no values.
    ops::DeviceScope scope(x.device);
    ops::fill(dweight, 0.0, stream);
    ops::fill(dbias, 0.0, stream);
    ops::fill(drho, 0.0, stream);
    return;
  }
  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, rho_copy, x_copy, dy_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor rho_c = ops::compact_param(rho, rho_copy, stream);
  if (dx) ops::advise_huge_pages(*dx);
  detail::BinBackwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.dy = ops::data_in(dy, layout, dy_copy, stream);
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.rho = rho_c->data;
  a.weight = weight ? weight->data : nullptr;
  a.param_dtype = param_dtype;
  a.rho_dtype = rho_dtype;
  a.save_mean_bn = save_mean_bn.data;
  a.save_rstd_bn = save_rstd_bn.data;
  a.save_mean_in = save_mean_in.data;
  a.save_rstd_in = save_rstd_in.data;
  a.batch_stats = training;
  a.dx = dx ? dx->data : nullptr;
  a.dweight = dweight ? dweight->data : nullptr;
  a.dweight_dtype = dweight ? dweight->dtype : x.dtype;
  a.dbias = dbias ? dbias->data : nullptr;
  a.dbias_dtype = dbias ? dbias->dtype : x.dtype;
  a.drho = drho ? drho->data : nullptr;
  a.drho_dtype = drho ? drho->dtype : x.dtype;
  NK_RUN_KERNEL(x.device, batch_instance_norm_backward, a, stream);
}

}  // namespace normkit

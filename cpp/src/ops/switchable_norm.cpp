// Switchable Normalization entries: validate everything, then hand the kernels one argument struct.
// The kernels work in the layout of the output (channels first or channels last, which the Python
// layer makes follow x); x and dy are read in place when they share it and copied once otherwise.
#include <cmath>

#include "ops/common.h"

namespace normkit {
namespace {

using detail::Layout;
using detail::SnSaved;
using detail::SnShape;

void check_input(const TensorView& x) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 2, "x: expected at least 2 dimensions [N, C, *spatial], got shape ", shape_str(x.shape));
}

void check_logits(const TensorView& l, const char* arg, const TensorView& x) {
  ops::check_same_device(l, arg, x, "x");
  check_value(l.ndim() == 1 && l.shape[0] == 3, arg, ": expected shape [3] (IN, LN, BN logits), got ",
              shape_str(l.shape));
}

void check_saved(const TensorView& s, const TensorView& x) {
  ops::check_same_device(s, "saved", x, "x");
  ops::check_dtype(s, "saved", acc_dtype(x.dtype));
  const SnSaved sv{x.shape[0], x.shape[1]};
  check_value(s.numel() == sv.size() && s.is_contiguous(), "saved: expected ", sv.size(),
              " contiguous values, got shape ", shape_str(s.shape));
}

// The saved buffer of an empty input (see SnSaved): means 0; variances and rstd NaN.
void fill_saved_of_nothing(const TensorView& saved, const SnShape& shape, void* stream) {
  const SnSaved sv{shape.N, shape.C};
  const size_t elem = size_t(dtype_size(saved.dtype));
  auto part = [&](int64_t offset, int64_t count, double value) {
    TensorView v = saved;
    v.data = static_cast<char*>(saved.data) + size_t(offset) * elem;
    v.shape = {count};
    v.strides = {1};
    ops::fill(v, value, stream);
  };
  const double nan = std::nan("");
  const int64_t nc = shape.N * shape.C;
  part(sv.mean(), nc, 0.0);
  part(sv.rstd(), nc, nan);
  part(sv.pmean(), nc, 0.0);
  part(sv.pvar(), nc, nan);
  part(sv.ln_mean(), shape.N, 0.0);
  part(sv.ln_var(), shape.N, nan);
  part(sv.bn_mean(), shape.C, 0.0);
  part(sv.bn_var(), shape.C, nan);
}

}  // namespace

void switchable_norm_forward(const TensorView& x, const TensorView& mean_weight, const TensorView& var_weight,
                             const OptTensor& weight_in, const OptTensor& bias_in, const OptTensor& running_mean,
                             const OptTensor& running_var, bool training, double momentum, double eps,
                             const TensorView& y, const TensorView& saved, void* stream) {
  check_input(x);
  check_logits(mean_weight, "mean_weight", x);
  check_logits(var_weight, "var_weight", x);
  ops::check_channel_vector(weight_in, "weight", x);
  ops::check_channel_vector(bias_in, "bias", x);
  ops::check_channel_vector(running_mean, "running_mean", x, true);
  ops::check_channel_vector(running_var, "running_var", x, true);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", bias_in, "bias", x);
  const DType logit_dtype = ops::check_param_dtypes(mean_weight, "mean_weight", var_weight, "var_weight", x);
  const DType running_dtype = ops::check_param_dtypes(running_mean, "running_mean", running_var, "running_var", x);
  check_value(running_mean.has_value() == running_var.has_value(),
              "running_mean, running_var: expected both or neither, got ",
              running_mean ? "running_mean only" : "running_var only");
  check_value(training || running_mean.has_value(),
              "running_mean, running_var: expected both in evaluation mode (training=False), got None");
  ops::check_eps(eps);
  check_value(std::isfinite(momentum), "momentum: expected a finite number, got ", momentum);
  ops::check_same_device(y, "y", x, "x");
  ops::check_dtype(y, "y", x.dtype);
  ops::check_shape(y, "y", x.shape);
  const Layout layout = ops::output_layout(y, "y");
  check_saved(saved, x);

  ops::check_no_overlap({{y, "y"}, {saved, "saved"}, {running_mean, "running_mean"}, {running_var, "running_var"}},
                        {{x, "x"}, {mean_weight, "mean_weight"}, {var_weight, "var_weight"}, {weight_in, "weight"},
                         {bias_in, "bias"}});
  const SnShape shape = ops::ncs_shape<SnShape>(x, layout);
  if (shape.numel() == 0) {
    // No values: every saved mean is 0 and every variance and rstd NaN (the statistics of
    // nothing, as BatchNorm's); running statistics are not updated.
    ops::DeviceScope scope(x.device);
    fill_saved_of_nothing(saved, shape, stream);
    return;
  }
  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, bias_copy, mw_copy, vw_copy, x_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor bias = ops::compact_param(bias_in, bias_copy, stream);
  const OptTensor mw = ops::compact_param(mean_weight, mw_copy, stream);
  const OptTensor vw = ops::compact_param(var_weight, vw_copy, stream);
  ops::advise_huge_pages(y);
  detail::SnForwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.use_in = x.ndim() >= 3;
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.mean_weight = mw->data;
  a.var_weight = vw->data;
  a.logit_dtype = logit_dtype;
  a.weight = weight ? weight->data : nullptr;
  a.bias = bias ? bias->data : nullptr;
  a.param_dtype = param_dtype;
  a.eps = eps;
  a.training = training;
  a.momentum = momentum;
  a.running_mean = running_mean ? running_mean->data : nullptr;
  a.running_var = running_var ? running_var->data : nullptr;
  a.running_dtype = running_dtype;
  a.y = y.data;
  a.saved = saved.data;
  NK_RUN_KERNEL(x.device, switchable_norm_forward, a, stream);
}

void switchable_norm_backward(const TensorView& dy, const TensorView& x, const TensorView& mean_weight,
                              const TensorView& var_weight, const OptTensor& weight_in, const TensorView& saved,
                              bool training, const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                              const OptTensor& dmean_weight, const OptTensor& dvar_weight, void* stream) {
  check_input(x);
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  check_logits(mean_weight, "mean_weight", x);
  check_logits(var_weight, "var_weight", x);
  ops::check_channel_vector(weight_in, "weight", x);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", std::nullopt, "", x);
  const DType logit_dtype = ops::check_param_dtypes(mean_weight, "mean_weight", var_weight, "var_weight", x);
  check_saved(saved, x);
  Layout layout = ops::compact_in(x, Layout::NSC) && !ops::compact_in(x, Layout::NCS) ? Layout::NSC : Layout::NCS;
  if (dx) {
    ops::check_same_device(*dx, "dx", x, "x");
    ops::check_dtype(*dx, "dx", x.dtype);
    ops::check_shape(*dx, "dx", x.shape);
    layout = ops::output_layout(*dx, "dx");
  }
  if (dweight) ops::check_output(*dweight, "dweight", {x.shape[1]}, dweight->dtype, x, "x");
  if (dbias) ops::check_output(*dbias, "dbias", {x.shape[1]}, dbias->dtype, x, "x");
  if (dmean_weight) ops::check_output(*dmean_weight, "dmean_weight", {3}, logit_dtype, x, "x");
  if (dvar_weight) ops::check_output(*dvar_weight, "dvar_weight", {3}, logit_dtype, x, "x");

  ops::check_no_overlap({{dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}, {dmean_weight, "dmean_weight"},
                         {dvar_weight, "dvar_weight"}},
                        {{dy, "dy"}, {x, "x"}, {mean_weight, "mean_weight"}, {var_weight, "var_weight"},
                         {weight_in, "weight"}, {saved, "saved"}});
  const SnShape shape = ops::ncs_shape<SnShape>(x, layout);
  if (shape.numel() == 0) {
    // Sums over no values.
    ops::DeviceScope scope(x.device);
    ops::fill(dweight, 0.0, stream);
    ops::fill(dbias, 0.0, stream);
    ops::fill(dmean_weight, 0.0, stream);
    ops::fill(dvar_weight, 0.0, stream);
    return;
  }
  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, mw_copy, vw_copy, x_copy, dy_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor mw = ops::compact_param(mean_weight, mw_copy, stream);
  const OptTensor vw = ops::compact_param(var_weight, vw_copy, stream);
  if (dx) ops::advise_huge_pages(*dx);
  detail::SnBackwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.use_in = x.ndim() >= 3;
  a.dy = ops::data_in(dy, layout, dy_copy, stream);
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.mean_weight = mw->data;
  a.var_weight = vw->data;
  a.logit_dtype = logit_dtype;
  a.weight = weight ? weight->data : nullptr;
  a.param_dtype = param_dtype;
  a.saved = saved.data;
  a.batch_stats = training;
  a.dx = dx ? dx->data : nullptr;
  a.dweight = dweight ? dweight->data : nullptr;
  a.dweight_dtype = dweight ? dweight->dtype : x.dtype;
  a.dbias = dbias ? dbias->data : nullptr;
  a.dbias_dtype = dbias ? dbias->dtype : x.dtype;
  a.dmean_weight = dmean_weight ? dmean_weight->data : nullptr;
  a.dvar_weight = dvar_weight ? dvar_weight->data : nullptr;
  a.dlogit_dtype = logit_dtype;
  NK_RUN_KERNEL(x.device, switchable_norm_backward, a, stream);
}

}  // namespace normkit

// LayerNorm and RMSNorm entries: validate everything, then hand the row kernels one argument struct.
#include "ops/common.h"

namespace normkit {
namespace {

using detail::RowNormBackwardArgs;
using detail::RowNormForwardArgs;

void check_param(const OptTensor& p, const char* arg, const Shape& normalized_shape, const TensorView& x) {
  if (!p) return;
  ops::check_same_device(*p, arg, x, "x");
  ops::check_shape(*p, arg, normalized_shape);
}

void check_stats(const TensorView& s, const char* arg, int64_t rows, const TensorView& x) {
  ops::check_same_device(s, arg, x, "x");
  ops::check_dtype(s, arg, acc_dtype(x.dtype));
  check_value(s.numel() == rows && s.is_contiguous(), arg, ": expected ", rows,
              " contiguous values (one per row of x), got shape ", shape_str(s.shape));
}

// center: LayerNorm (else RMSNorm). mean and rstd: the statistics written out, where given.
void forward(const TensorView& x, const Shape& normalized_shape, const OptTensor& weight_in,
             const OptTensor& bias_in, double eps, const TensorView& y, bool center, const OptTensor& mean,
             const OptTensor& rstd, void* stream) {
  ops::check_device_supported(x, "x");
  const int64_t rows = ops::check_normalized_shape(x, "x", normalized_shape);
  check_param(weight_in, "weight", normalized_shape, x);
  check_param(bias_in, "bias", normalized_shape, x);
  const DType param_dtype = ops::check_param_dtypes(weight_in, "weight", bias_in, "bias", x);
  ops::check_eps(eps);
  ops::check_output(y, "y", x.shape, x.dtype, x, "x");
  if (mean) check_stats(*mean, "mean", rows, x);
  if (rstd) check_stats(*rstd, "rstd", rows, x);

  ops::check_no_overlap({{y, "y"}, {mean, "mean"}, {rstd, "rstd"}},
                        {{x, "x"}, {weight_in, "weight"}, {bias_in, "bias"}});

  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy, bias_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  const OptTensor bias = ops::compact_param(bias_in, bias_copy, stream);
  ops::advise_huge_pages(y);
  const int row_dims = int(normalized_shape.size());
  const ops::Rows xr = ops::rows_of(x, row_dims, stream);
  RowNormForwardArgs a{};
  a.dtype = x.dtype;
  a.rows = rows;
  a.cols = 1;
  for (auto s : normalized_shape) a.cols *= s;
  a.center = center;
  a.x = xr.data;
  a.x_row_stride = xr.stride;
  a.weight = weight ? weight->data : nullptr;
  a.weight_dtype = param_dtype;
  a.bias = bias ? bias->data : nullptr;
  a.bias_dtype = param_dtype;
  a.eps = eps;
  a.y = y.data;
  a.mean = mean ? mean->data : nullptr;
  a.rstd = rstd ? rstd->data : nullptr;
  NK_RUN_KERNEL(x.device, row_norm_forward, a, stream);
}

void backward(const TensorView& dy, const TensorView& x, const Shape& normalized_shape,
              const TensorView* mean, const TensorView& rstd, const OptTensor& weight_in,
              const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias, void* stream) {
  ops::check_device_supported(x, "x");
  const int64_t rows = ops::check_normalized_shape(x, "x", normalized_shape);
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  if (mean) check_stats(*mean, "mean", rows, x);
  check_stats(rstd, "rstd", rows, x);
  check_param(weight_in, "weight", normalized_shape, x);
  ops::check_param_dtypes(weight_in, "weight", std::nullopt, "", x);
  if (dx) ops::check_output(*dx, "dx", x.shape, x.dtype, x, "x");
  if (dweight) ops::check_output(*dweight, "dweight", normalized_shape, dweight->dtype, x, "x");
  if (dbias) ops::check_output(*dbias, "dbias", normalized_shape, dbias->dtype, x, "x");

  ops::check_no_overlap({{dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}},
                        {{dy, "dy"}, {x, "x"}, {mean, "mean"}, {rstd, "rstd"}, {weight_in, "weight"}});

  ops::DeviceScope scope(x.device);
  std::shared_ptr<void> weight_copy;
  const OptTensor weight = ops::compact_param(weight_in, weight_copy, stream);
  if (dx) ops::advise_huge_pages(*dx);
  const int row_dims = int(normalized_shape.size());
  const ops::Rows xr = ops::rows_of(x, row_dims, stream);
  const ops::Rows dyr = ops::rows_of(dy, row_dims, stream);
  int64_t cols = 1;
  for (auto s : normalized_shape) cols *= s;
  RowNormBackwardArgs a{};
  a.dtype = x.dtype;
  a.rows = rows;
  a.cols = cols;
  a.center = mean != nullptr;
  a.dy = dyr.data;
  a.dy_row_stride = dyr.stride;
  a.x = xr.data;
  a.x_row_stride = xr.stride;
  a.mean = mean ? mean->data : nullptr;
  a.rstd = rstd.data;
  a.weight = weight ? weight->data : nullptr;
  a.weight_dtype = weight ? weight->dtype : x.dtype;
  a.dx = dx ? dx->data : nullptr;
  a.dweight = dweight ? dweight->data : nullptr;
  a.dweight_dtype = dweight ? dweight->dtype : x.dtype;
  a.dbias = dbias ? dbias->data : nullptr;
  a.dbias_dtype = dbias ? dbias->dtype : x.dtype;
  NK_RUN_KERNEL(x.device, row_norm_backward, a, stream);
}

}  // namespace

void layer_norm_forward(const TensorView& x, const Shape& normalized_shape, const OptTensor& weight,
                        const OptTensor& bias, double eps, const TensorView& y, const OptTensor& mean,
                        const OptTensor& rstd, void* stream) {
  forward(x, normalized_shape, weight, bias, eps, y, true, mean, rstd, stream);
}

void layer_norm_backward(const TensorView& dy, const TensorView& x, const Shape& normalized_shape,
                         const TensorView& mean, const TensorView& rstd, const OptTensor& weight,
                         const OptTensor& dx, const OptTensor& dweight, const OptTensor& dbias,
                         void* stream) {
  backward(dy, x, normalized_shape, &mean, rstd, weight, dx, dweight, dbias, stream);
}

void rms_norm_forward(const TensorView& x, const Shape& normalized_shape, const OptTensor& weight,
                      double eps, const TensorView& y, const OptTensor& rstd, void* stream) {
  forward(x, normalized_shape, weight, std::nullopt, eps, y, false, std::nullopt, rstd, stream);
}

void rms_norm_backward(const TensorView& dy, const TensorView& x, const Shape& normalized_shape,
                       const TensorView& rstd, const OptTensor& weight, const OptTensor& dx,
                       const OptTensor& dweight, void* stream) {
  backward(dy, x, normalized_shape, nullptr, rstd, weight, dx, dweight, std::nullopt, stream);
}

}  // namespace normkit

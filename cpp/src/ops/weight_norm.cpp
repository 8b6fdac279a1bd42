// WeightNorm entries: validate everything, then hand the kernels one argument struct. The kernels see
// D compact rows (detail/weight_norm_args.h): for dim 0 and the whole tensor that is v itself (or a
// compact copy); for any other dim, `dim` is brought to the front by a compact copy of a permuted view
// (weights are small), and the row-ordered results are copied back into the caller's compact outputs.
#include "ops/common.h"
#include "ops/dim_rows.h"

namespace normkit {
namespace {

using detail::WeightNormShape;

// dim in torch's convention: -1 is the whole tensor (returned as -1), other negatives count from the
// end; returns the dim in [0, ndim) otherwise.
int64_t check_dim(const TensorView& v, int64_t dim) {
  const int64_t d = ops::normalize_dim(v, "v", dim);
  return dim == -1 ? -1 : d;
}

// The shape g (and norms, dg) must have: v's with size 1 on every dim but `dim`.
Shape param_shape(const TensorView& v, int64_t dim) {
  Shape s(v.shape.size(), 1);
  if (dim >= 0) s[size_t(dim)] = v.shape[size_t(dim)];
  return s;
}

bool all_ones(const Shape& s) {
  for (int64_t d : s)
    if (d != 1) return false;
  return true;
}

// g: v's dtype and device, the parameter shape (the whole tensor also takes a 0-d g).
void check_param(const TensorView& t, const char* arg, const TensorView& v, int64_t dim, DType dtype) {
  ops::check_same_device(t, arg, v, "v");
  ops::check_dtype(t, arg, dtype);
  const Shape want = param_shape(v, dim);
  const bool ok = t.shape == want || (dim == -1 && t.ndim() <= v.ndim() && all_ones(t.shape));
  check_value(ok, arg, ": expected shape ", shape_str(want), " (v's shape with size 1 on every dim but dim=", dim,
              ") for v of shape ", shape_str(v.shape), ", got ", shape_str(t.shape));
}

void check_param_output(const TensorView& t, const char* arg, const TensorView& v, int64_t dim, DType dtype) {
  check_param(t, arg, v, dim, dtype);
  check_value(t.is_contiguous(), arg, ": expected a compact output array, got strides ", shape_str(t.strides),
              " for shape ", shape_str(t.shape));
}

WeightNormShape shape_of(const TensorView& v, int64_t dim) {
  WeightNormShape s;
  s.D = dim >= 0 ? v.shape[size_t(dim)] : 1;
  s.R = s.D > 0 ? v.numel() / s.D : 0;
  return s;
}

void check_compact_like_v(const TensorView& out, const char* arg, const TensorView& v) {
  ops::check_output(out, arg, v.shape, v.dtype, v, "v");
}

}  // namespace

void weight_norm_forward(const TensorView& v, const TensorView& g, int64_t dim, const TensorView& w,
                         const TensorView& norms, void* stream) {
  ops::check_device_supported(v, "v");
  check_value(v.ndim() >= 1, "v: expected 1 or more dimensions, got a 0-d array");
  dim = check_dim(v, dim);
  check_param(g, "g", v, dim, v.dtype);
  check_compact_like_v(w, "w", v);
  check_param_output(norms, "norms", v, dim, acc_dtype(v.dtype));

  ops::check_no_overlap({{w, "w"}, {norms, "norms"}}, {{v, "v"}, {g, "g"}});
  const WeightNormShape shape = shape_of(v, dim);
  if (shape.D == 0) return;  // rows of no values still get their norm (0)
  ops::DeviceScope scope(v.device);
  std::shared_ptr<void> v_copy, g_copy, w_scratch;
  const OptTensor gc = ops::compact_param(g, g_copy, stream);
  detail::WeightNormForwardArgs a{};
  a.dtype = v.dtype;
  a.shape = shape;
  a.v = ops::rows_in(v, dim, v_copy, stream);
  a.g = gc->data;
  a.w = ops::rows_out(w, dim, w_scratch, stream);
  a.norms = norms.data;
  NK_RUN_KERNEL(v.device, weight_norm_forward, a, stream);
  ops::finish_rows(w, dim, w_scratch, stream);
}

void weight_norm_backward(const TensorView& dw, const TensorView& v, const TensorView& g,
                          const TensorView& norms, int64_t dim, const TensorView& dv, const TensorView& dg,
                          void* stream) {
  ops::check_device_supported(v, "v");
  check_value(v.ndim() >= 1, "v: expected 1 or more dimensions, got a 0-d array");
  dim = check_dim(v, dim);
  ops::check_same_device(dw, "dw", v, "v");
  ops::check_dtype(dw, "dw", v.dtype);
  ops::check_shape(dw, "dw", v.shape);
  check_param(g, "g", v, dim, v.dtype);
  check_param(norms, "norms", v, dim, acc_dtype(v.dtype));
  check_compact_like_v(dv, "dv", v);
  check_param_output(dg, "dg", v, dim, v.dtype);

  ops::check_no_overlap({{dv, "dv"}, {dg, "dg"}}, {{dw, "dw"}, {v, "v"}, {g, "g"}, {norms, "norms"}});
  const WeightNormShape shape = shape_of(v, dim);
  if (shape.D == 0) return;  // rows of no values still get their norm (0)
  ops::DeviceScope scope(v.device);
  std::shared_ptr<void> v_copy, dw_copy, g_copy, n_copy, dv_scratch;
  const OptTensor gc = ops::compact_param(g, g_copy, stream);
  const OptTensor nc = ops::compact_param(norms, n_copy, stream);
  detail::WeightNormBackwardArgs a{};
  a.dtype = v.dtype;
  a.shape = shape;
  a.dw = ops::rows_in(dw, dim, dw_copy, stream);
  a.v = ops::rows_in(v, dim, v_copy, stream);
  a.g = gc->data;
  a.norms = nc->data;
  a.dv = ops::rows_out(dv, dim, dv_scratch, stream);
  a.dg = dg.data;
  NK_RUN_KERNEL(v.device, weight_norm_backward, a, stream);
  ops::finish_rows(dv, dim, dv_scratch, stream);
}

}  // namespace normkit

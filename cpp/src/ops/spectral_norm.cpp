// SpectralNorm entries: validate everything, then hand the kernels one argument struct. The kernels
// see the weight as H compact rows (detail/spectral_norm_args.h): for dim 0 that is w itself (or a
// compact copy); for any other dim, `dim` is brought to the front by a compact copy of a permuted view
// (weights are small), and row-ordered results are copied back into the caller's compact outputs.
//
// The forward estimates sigma in a private workspace first; only when sigma passed its check (if
// asked for) are u, v, sigma and y written, so a rejected call leaves every caller array untouched.
#include <cmath>
#include <cstdlib>

#include "ops/common.h"
#include "ops/dim_rows.h"

namespace normkit {
namespace {

using detail::SpectralNormShape;

void check_weight(const TensorView& w) {
  ops::check_device_supported(w, "w");
  check_value(w.ndim() >= 2, "w: expected 2 or more dimensions (a 1-D weight needs no power iteration: "
              "torch normalizes it as w / max(||w||, eps)), got shape ", shape_str(w.shape));
  check_value(w.numel() > 0, "w: expected a non-empty weight, got shape ", shape_str(w.shape));
}

SpectralNormShape shape_of(const TensorView& w, int64_t dim) {
  SpectralNormShape s;
  s.H = w.shape[size_t(dim)];
  s.K = w.numel() / s.H;
  return s;
}

// u or v: w's dtype and device, `n` values; `written` ones must be contiguous (updated in place).
void check_vector(const TensorView& t, const char* arg, int64_t n, const char* what, const TensorView& w,
                  bool written) {
  ops::check_same_device(t, arg, w, "w");
  ops::check_dtype(t, arg, w.dtype);
  check_value(t.ndim() == 1 && t.shape[0] == n, arg, ": expected shape [", n, "] (", what, " of w of shape ",
              shape_str(w.shape), "), got ", shape_str(t.shape));
  check_value(!written || t.is_contiguous(), arg, ": expected a contiguous array (updated in place), got strides ",
              shape_str(t.strides));
}

void check_sigma_array(const TensorView& s, const TensorView& w) {
  ops::check_same_device(s, "sigma", w, "w");
  ops::check_dtype(s, "sigma", acc_dtype(w.dtype));
  check_value(s.numel() == 1, "sigma: expected a single value (shape [] or [1]), got shape ", shape_str(s.shape));
}

// The sigma the estimate left in the workspace (a device-to-host copy on CUDA).
double read_sigma(const TensorView& w, const void* work, const SpectralNormShape& s, void* stream) {
  const int64_t at = detail::SpectralNormWork{s.H, s.K}.sigma();
  return dispatch_acc(acc_dtype(w.dtype), [&](auto tag) -> double {
    using A = decltype(tag);
    const A* p = static_cast<const A*>(work) + at;
#if defined(NORMKIT_WITH_CUDA)
    if (w.device.kind != DeviceKind::CPU) {
      A v = 0;
      cuda::copy_to_host(&v, p, sizeof v, stream);
      return double(v);
    }
#endif
    (void)stream;
    return double(*p);
  });
}

}  // namespace

void spectral_norm_forward(const TensorView& w, const TensorView& u, const TensorView& v, int64_t dim,
                           int64_t n_power_iterations, double eps, bool training, bool check_sigma,
                           const OptTensor& y, const OptTensor& sigma, void* stream) {
  check_weight(w);
  dim = ops::normalize_dim(w, "w", dim);
  const SpectralNormShape shape = shape_of(w, dim);
  check_value(n_power_iterations >= 1, "n_power_iterations: expected a positive number, got ", n_power_iterations);
  ops::check_eps(eps);
  // (Written only when training, so contiguous then; in evaluation any view, compacted below.)
  check_vector(u, "u", shape.H, "the size of dim", w, training);
  check_vector(v, "v", shape.K, "the product of the other dims", w, training);
  if (y) ops::check_output(*y, "y", w.shape, w.dtype, w, "w");
  if (sigma) {
    check_sigma_array(*sigma, w);
    check_value(sigma->is_contiguous(), "sigma: expected a contiguous output array, got strides ",
                shape_str(sigma->strides));
  }

  ops::check_no_overlap({{u, "u"}, {v, "v"}, {y, "y"}, {sigma, "sigma"}}, {{w, "w"}});
  ops::DeviceScope scope(w.device);
  const int64_t work_values = detail::SpectralNormWork{shape.H, shape.K}.size();
  std::shared_ptr<void> w_copy, y_scratch, u_copy, v_copy;
  const std::shared_ptr<void> work =
      ops::device_buffer(w.device, work_values, size_t(dtype_size(acc_dtype(w.dtype))), stream);
  detail::SpectralNormForwardArgs a{};
  a.dtype = w.dtype;
  a.shape = shape;
  a.w = ops::rows_in(w, dim, w_copy, stream);
  a.u = ops::compact_param(u, u_copy, stream)->data;  // (u itself when contiguous: written in place)
  a.v = ops::compact_param(v, v_copy, stream)->data;
  a.iterations = training ? n_power_iterations : 0;
  a.eps = eps;
  a.work = work.get();
  a.y = nullptr;
  a.sigma = sigma ? sigma->data : nullptr;
  NK_RUN_KERNEL(w.device, spectral_norm_estimate, a, stream);
  if (check_sigma) {
    const double s = read_sigma(w, work.get(), shape, stream);
    check_value(s != 0 && std::isfinite(s), "w: expected a weight with a nonzero, finite spectral norm, got sigma = "
                "u^T W v = ", s, " for w of shape ", shape_str(w.shape),
                s == 0 ? " (an all-zero weight, or u or v orthogonal to it)" : " (non-finite values in w, u or v)");
  }
  if (y) a.y = ops::rows_out(*y, dim, y_scratch, stream);
  NK_RUN_KERNEL(w.device, spectral_norm_apply, a, stream);
  if (y) ops::finish_rows(*y, dim, y_scratch, stream);
}

void spectral_norm_backward(const TensorView& dy, const TensorView& w, const TensorView& u, const TensorView& v,
                            int64_t dim, const TensorView& sigma, const TensorView& dw, void* stream) {
  check_weight(w);
  dim = ops::normalize_dim(w, "w", dim);
  const SpectralNormShape shape = shape_of(w, dim);
  ops::check_same_device(dy, "dy", w, "w");
  ops::check_dtype(dy, "dy", w.dtype);
  ops::check_shape(dy, "dy", w.shape);
  check_vector(u, "u", shape.H, "the size of dim", w, false);
  check_vector(v, "v", shape.K, "the product of the other dims", w, false);
  check_sigma_array(sigma, w);
  ops::check_output(dw, "dw", w.shape, w.dtype, w, "w");

  ops::check_no_overlap({{dw, "dw"}}, {{dy, "dy"}, {w, "w"}, {u, "u"}, {v, "v"}, {sigma, "sigma"}});
  ops::DeviceScope scope(w.device);
  std::shared_ptr<void> w_copy, dy_copy, u_copy, v_copy, s_copy, dw_scratch;
  const OptTensor uc = ops::compact_param(u, u_copy, stream);
  const OptTensor vc = ops::compact_param(v, v_copy, stream);
  const OptTensor sc = ops::compact_param(sigma, s_copy, stream);
  const std::shared_ptr<void> work =
      ops::device_buffer(w.device, shape.H + 1, size_t(dtype_size(acc_dtype(w.dtype))), stream);
  detail::SpectralNormBackwardArgs a{};
  a.dtype = w.dtype;
  a.shape = shape;
  a.dy = ops::rows_in(dy, dim, dy_copy, stream);
  a.w = ops::rows_in(w, dim, w_copy, stream);
  a.u = uc->data;
  a.v = vc->data;
  a.sigma = sc->data;
  a.work = work.get();
  a.dw = ops::rows_out(dw, dim, dw_scratch, stream);
  NK_RUN_KERNEL(w.device, spectral_norm_backward, a, stream);
  ops::finish_rows(dw, dim, dw_scratch, stream);
}

}  // namespace normkit

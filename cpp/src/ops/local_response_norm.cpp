// LocalResponseNorm entries: validate everything, then hand the kernels one argument struct. The
// kernels work in the layout of the output (channels first or channels last, which the Python layer
// makes follow x); x and dy are read in place when they share it and copied once otherwise.
#include "ops/common.h"

namespace normkit {
namespace {

using detail::Layout;
using detail::LrnParams;
using detail::LrnShape;

LrnParams check_params(const TensorView& x, int64_t size, double alpha, double beta, double k) {
  ops::check_device_supported(x, "x");
  check_value(x.ndim() >= 3, "x: expected 3 or more dimensions [N, C, *], got shape ", shape_str(x.shape));
  check_value(size >= 1, "size: expected an integer >= 1, got ", size);
  return LrnParams{size, alpha, beta, k};
}

// An output like x: same device, dtype and shape, compact channels first or channels last.
Layout check_output(const TensorView& out, const char* arg, const TensorView& x) {
  ops::check_same_device(out, arg, x, "x");
  ops::check_dtype(out, arg, x.dtype);
  ops::check_shape(out, arg, x.shape);
  return ops::output_layout(out, arg);
}

}  // namespace

void local_response_norm_forward(const TensorView& x, int64_t size, double alpha, double beta, double k,
                                 const TensorView& y, void* stream) {
  const LrnParams p = check_params(x, size, alpha, beta, k);
  const Layout layout = check_output(y, "y", x);

  ops::check_no_overlap({{y, "y"}}, {{x, "x"}});
  const LrnShape shape = ops::ncs_shape<LrnShape>(x, layout);
  if (shape.numel() == 0) return;
  ops::DeviceScope scope(x.device);
  ops::advise_huge_pages(y);
  std::shared_ptr<void> x_copy;
  detail::LrnForwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.p = p;
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.y = y.data;
  NK_RUN_KERNEL(x.device, local_response_norm_forward, a, stream);
}

void local_response_norm_backward(const TensorView& dy, const TensorView& x, int64_t size, double alpha,
                                  double beta, double k, const TensorView& dx, void* stream) {
  const LrnParams p = check_params(x, size, alpha, beta, k);
  ops::check_same_device(dy, "dy", x, "x");
  ops::check_dtype(dy, "dy", x.dtype);
  ops::check_shape(dy, "dy", x.shape);
  const Layout layout = check_output(dx, "dx", x);

  ops::check_no_overlap({{dx, "dx"}}, {{dy, "dy"}, {x, "x"}});
  const LrnShape shape = ops::ncs_shape<LrnShape>(x, layout);
  if (shape.numel() == 0) return;
  ops::DeviceScope scope(x.device);
  ops::advise_huge_pages(dx);
  std::shared_ptr<void> x_copy, dy_copy;
  detail::LrnBackwardArgs a{};
  a.dtype = x.dtype;
  a.shape = shape;
  a.p = p;
  a.dy = ops::data_in(dy, layout, dy_copy, stream);
  a.x = ops::data_in(x, layout, x_copy, stream);
  a.dx = dx.data;
  NK_RUN_KERNEL(x.device, local_response_norm_backward, a, stream);
}

}  // namespace normkit

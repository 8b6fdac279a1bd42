// LocalResponseNorm bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_local_response_norm(nb::module_& m) {
  m.def(
      "local_response_norm_forward",
      [](InArray x, int64_t size, double alpha, double beta, double k, OutArray y, uintptr_t stream) {
        const TensorView xv = view(x, "x"), yv = view(y, "y");
        nb::gil_scoped_release release;
        local_response_norm_forward(xv, size, alpha, beta, k, yv, stream_ptr(stream));
      },
      "x"_a, "size"_a, "alpha"_a, "beta"_a, "k"_a, "y"_a, "stream"_a = 0);

  m.def(
      "local_response_norm_backward",
      [](InArray dy, InArray x, int64_t size, double alpha, double beta, double k, OutArray dx,
         uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x"), dxv = view(dx, "dx");
        nb::gil_scoped_release release;
        local_response_norm_backward(dyv, xv, size, alpha, beta, k, dxv, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "size"_a, "alpha"_a, "beta"_a, "k"_a, "dx"_a, "stream"_a = 0);
}

}  // namespace normkit::bindings

// SpectralNorm bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_spectral_norm(nb::module_& m) {
  m.def(
      "spectral_norm_forward",
      [](InArray w, OutArray u, OutArray v, int64_t dim, int64_t n_power_iterations, double eps, bool training,
         bool check_sigma, OptOutArray y, OptOutArray sigma, uintptr_t stream) {
        const TensorView wv = view(w, "w"), uv = view(u, "u"), vv = view(v, "v");
        const OptTensor yv = view(y, "y"), sv = view(sigma, "sigma");
        nb::gil_scoped_release release;
        spectral_norm_forward(wv, uv, vv, dim, n_power_iterations, eps, training, check_sigma, yv, sv,
                              stream_ptr(stream));
      },
      "w"_a, "u"_a, "v"_a, "dim"_a, "n_power_iterations"_a, "eps"_a, "training"_a, "check_sigma"_a,
      "y"_a.none(), "sigma"_a.none(), "stream"_a = 0);

  m.def(
      "spectral_norm_backward",
      [](InArray dy, InArray w, InArray u, InArray v, int64_t dim, InArray sigma, OutArray dw, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), wv = view(w, "w"), uv = view(u, "u"), vv = view(v, "v"),
                         sv = view(sigma, "sigma"), dwv = view(dw, "dw");
        nb::gil_scoped_release release;
        spectral_norm_backward(dyv, wv, uv, vv, dim, sv, dwv, stream_ptr(stream));
      },
      "dy"_a, "w"_a, "u"_a, "v"_a, "dim"_a, "sigma"_a, "dw"_a, "stream"_a = 0);
}

}  // namespace normkit::bindings

// LayerNorm and RMSNorm bindings: convert, release the GIL, call the core.
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_row_norm(nb::module_& m) {
  m.def(
      "layer_norm_forward",
      [](InArray x, Shape normalized_shape, OptInArray weight, OptInArray bias, double eps, OutArray y,
         OptOutArray mean, OptOutArray rstd, uintptr_t stream) {
        const TensorView xv = view(x, "x");
        const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
        const TensorView yv = view(y, "y");
        const OptTensor mv = view(mean, "mean"), rv = view(rstd, "rstd");
        nb::gil_scoped_release release;
        layer_norm_forward(xv, normalized_shape, wv, bv, eps, yv, mv, rv, stream_ptr(stream));
      },
      "x"_a, "normalized_shape"_a, "weight"_a.none(), "bias"_a.none(), "eps"_a, "y"_a, "mean"_a.none(),
      "rstd"_a.none(), "stream"_a = 0);

  m.def(
      "layer_norm_backward",
      [](InArray dy, InArray x, Shape normalized_shape, InArray mean, InArray rstd, OptInArray weight,
         OptOutArray dx, OptOutArray dweight, OptOutArray dbias, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x");
        const TensorView mv = view(mean, "mean"), rv = view(rstd, "rstd");
        const OptTensor wv = view(weight, "weight");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
        nb::gil_scoped_release release;
        layer_norm_backward(dyv, xv, normalized_shape, mv, rv, wv, dxv, dwv, dbv, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "normalized_shape"_a, "mean"_a, "rstd"_a, "weight"_a.none(), "dx"_a.none(),
      "dweight"_a.none(), "dbias"_a.none(), "stream"_a = 0);

  m.def(
      "rms_norm_forward",
      [](InArray x, Shape normalized_shape, OptInArray weight, double eps, OutArray y, OptOutArray rstd,
         uintptr_t stream) {
        const TensorView xv = view(x, "x");
        const OptTensor wv = view(weight, "weight"), rv = view(rstd, "rstd");
        const TensorView yv = view(y, "y");
        nb::gil_scoped_release release;
        rms_norm_forward(xv, normalized_shape, wv, eps, yv, rv, stream_ptr(stream));
      },
      "x"_a, "normalized_shape"_a, "weight"_a.none(), "eps"_a, "y"_a, "rstd"_a.none(), "stream"_a = 0);

  m.def(
      "rms_norm_backward",
      [](InArray dy, InArray x, Shape normalized_shape, InArray rstd, OptInArray weight, OptOutArray dx,
         OptOutArray dweight, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x"), rv = view(rstd, "rstd");
        const OptTensor wv = view(weight, "weight");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight");
        nb::gil_scoped_release release;
        rms_norm_backward(dyv, xv, normalized_shape, rv, wv, dxv, dwv, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "normalized_shape"_a, "rstd"_a, "weight"_a.none(), "dx"_a.none(), "dweight"_a.none(),
      "stream"_a = 0);
}

}  // namespace normkit::bindings

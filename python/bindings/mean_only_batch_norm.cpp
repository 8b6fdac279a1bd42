// Mean-only BatchNorm bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_mean_only_batch_norm(nb::module_& m) {
  m.def(
      "mean_only_batch_norm_forward",
      [](InArray x, OptOutArray running_mean, OptInArray bias, bool training, double momentum, OutArray y,
         OutArray save_mean, uintptr_t stream) {
        const TensorView xv = view(x, "x"), yv = view(y, "y"), sv = view(save_mean, "save_mean");
        const OptTensor rm = view(running_mean, "running_mean"), bv = view(bias, "bias");
        nb::gil_scoped_release release;
        mean_only_batch_norm_forward(xv, rm, bv, training, momentum, yv, sv, stream_ptr(stream));
      },
      "x"_a, "running_mean"_a.none(), "bias"_a.none(), "training"_a, "momentum"_a, "y"_a, "save_mean"_a,
      "stream"_a = 0);

  m.def(
      "mean_only_batch_norm_backward",
      [](InArray dy, bool training, OptOutArray dx, OptOutArray dbias, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy");
        const OptTensor dxv = view(dx, "dx"), dbv = view(dbias, "dbias");
        nb::gil_scoped_release release;
        mean_only_batch_norm_backward(dyv, training, dxv, dbv, stream_ptr(stream));
      },
      "dy"_a, "training"_a, "dx"_a.none(), "dbias"_a.none(), "stream"_a = 0);
}

}  // namespace normkit::bindings

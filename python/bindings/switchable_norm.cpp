// Switchable Normalization bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_switchable_norm(nb::module_& m) {
  m.def(
      "switchable_norm_forward",
      [](InArray x, InArray mean_weight, InArray var_weight, OptInArray weight, OptInArray bias,
         OptOutArray running_mean, OptOutArray running_var, bool training, double momentum, double eps, OutArray y,
         OutArray saved, uintptr_t stream) {
        const TensorView xv = view(x, "x"), mw = view(mean_weight, "mean_weight"), vw = view(var_weight, "var_weight");
        const TensorView yv = view(y, "y"), sv = view(saved, "saved");
        const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
        const OptTensor rm = view(running_mean, "running_mean"), rvar = view(running_var, "running_var");
        nb::gil_scoped_release release;
        switchable_norm_forward(xv, mw, vw, wv, bv, rm, rvar, training, momentum, eps, yv, sv, stream_ptr(stream));
      },
      "x"_a, "mean_weight"_a, "var_weight"_a, "weight"_a.none(), "bias"_a.none(), "running_mean"_a.none(),
      "running_var"_a.none(), "training"_a, "momentum"_a, "eps"_a, "y"_a, "saved"_a, "stream"_a = 0);

  m.def(
      "switchable_norm_backward",
      [](InArray dy, InArray x, InArray mean_weight, InArray var_weight, OptInArray weight, InArray saved,
         bool training, OptOutArray dx, OptOutArray dweight, OptOutArray dbias, OptOutArray dmean_weight,
         OptOutArray dvar_weight, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x");
        const TensorView mw = view(mean_weight, "mean_weight"), vw = view(var_weight, "var_weight");
        const OptTensor wv = view(weight, "weight");
        const TensorView sv = view(saved, "saved");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
        const OptTensor dmw = view(dmean_weight, "dmean_weight"), dvw = view(dvar_weight, "dvar_weight");
        nb::gil_scoped_release release;
        switchable_norm_backward(dyv, xv, mw, vw, wv, sv, training, dxv, dwv, dbv, dmw, dvw, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "mean_weight"_a, "var_weight"_a, "weight"_a.none(), "saved"_a, "training"_a, "dx"_a.none(),
      "dweight"_a.none(), "dbias"_a.none(), "dmean_weight"_a.none(), "dvar_weight"_a.none(), "stream"_a = 0);
}

}  // namespace normkit::bindings

// Batch-Instance Normalization bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_batch_instance_norm(nb::module_& m) {
  m.def(
      "batch_instance_norm_forward",
      [](InArray x, InArray rho, OptInArray weight, OptInArray bias, OptOutArray running_mean,
         OptOutArray running_var, bool training, double momentum, double eps, OutArray y, OutArray save_mean_bn,
         OutArray save_rstd_bn, OutArray save_mean_in, OutArray save_rstd_in, uintptr_t stream) {
        const TensorView xv = view(x, "x"), rv = view(rho, "rho"), yv = view(y, "y");
        const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
        const OptTensor rm = view(running_mean, "running_mean"), rvar = view(running_var, "running_var");
        const TensorView mb = view(save_mean_bn, "save_mean_bn"), sb = view(save_rstd_bn, "save_rstd_bn");
        const TensorView mi = view(save_mean_in, "save_mean_in"), si = view(save_rstd_in, "save_rstd_in");
        nb::gil_scoped_release release;
        batch_instance_norm_forward(xv, rv, wv, bv, rm, rvar, training, momentum, eps, yv, mb, sb, mi, si,
                                    stream_ptr(stream));
      },
      "x"_a, "rho"_a, "weight"_a.none(), "bias"_a.none(), "running_mean"_a.none(), "running_var"_a.none(),
      "training"_a, "momentum"_a, "eps"_a, "y"_a, "save_mean_bn"_a, "save_rstd_bn"_a, "save_mean_in"_a,
      "save_rstd_in"_a, "stream"_a = 0);

  m.def(
      "batch_instance_norm_backward",
      [](InArray dy, InArray x, InArray rho, OptInArray weight, InArray save_mean_bn, InArray save_rstd_bn,
         InArray save_mean_in, InArray save_rstd_in, bool training, OptOutArray dx, OptOutArray dweight,
         OptOutArray dbias, OptOutArray drho, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x"), rv = view(rho, "rho");
        const OptTensor wv = view(weight, "weight");
        const TensorView mb = view(save_mean_bn, "save_mean_bn"), sb = view(save_rstd_bn, "save_rstd_bn");
        const TensorView mi = view(save_mean_in, "save_mean_in"), si = view(save_rstd_in, "save_rstd_in");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
        const OptTensor drv = view(drho, "drho");
        nb::gil_scoped_release release;
        batch_instance_norm_backward(dyv, xv, rv, wv, mb, sb, mi, si, training, dxv, dwv, dbv, drv,
                                     stream_ptr(stream));
      },
      "dy"_a, "x"_a, "rho"_a, "weight"_a.none(), "save_mean_bn"_a, "save_rstd_bn"_a, "save_mean_in"_a,
      "save_rstd_in"_a, "training"_a, "dx"_a.none(), "dweight"_a.none(), "dbias"_a.none(), "drho"_a.none(),
      "stream"_a = 0);
}

}  // namespace normkit::bindings

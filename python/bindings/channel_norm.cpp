// BatchNorm, InstanceNorm and GroupNorm bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

namespace {

// BatchNorm and InstanceNorm share their argument lists (the flag is `training` or
// `use_input_stats`), so one binding body serves both.
using RunningStatsForward = void (*)(const TensorView&, const OptTensor&, const OptTensor&, const OptTensor&,
                                     const OptTensor&, bool, double, double, const TensorView&, const TensorView&,
                                     const TensorView&, void*);
using RunningStatsBackward = void (*)(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                      const OptTensor&, bool, const OptTensor&, const OptTensor&, const OptTensor&,
                                      void*);

template <RunningStatsForward Op>
void running_stats_forward(InArray x, OptOutArray running_mean, OptOutArray running_var, OptInArray weight,
                           OptInArray bias, bool batch_stats, double momentum, double eps, OutArray y,
                           OutArray save_mean, OutArray save_rstd, uintptr_t stream) {
  const TensorView xv = view(x, "x"), yv = view(y, "y");
  const OptTensor rm = view(running_mean, "running_mean"), rv = view(running_var, "running_var");
  const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
  const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
  nb::gil_scoped_release release;
  Op(xv, rm, rv, wv, bv, batch_stats, momentum, eps, yv, sm, sr, stream_ptr(stream));
}

template <RunningStatsBackward Op>
void running_stats_backward(InArray dy, InArray x, InArray save_mean, InArray save_rstd, OptInArray weight,
                            bool batch_stats, OptOutArray dx, OptOutArray dweight, OptOutArray dbias,
                            uintptr_t stream) {
  const TensorView dyv = view(dy, "dy"), xv = view(x, "x");
  const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
  const OptTensor wv = view(weight, "weight");
  const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
  nb::gil_scoped_release release;
  Op(dyv, xv, sm, sr, wv, batch_stats, dxv, dwv, dbv, stream_ptr(stream));
}

}  // namespace

void export_channel_norm(nb::module_& m) {
  m.def("batch_norm_forward", &running_stats_forward<batch_norm_forward>, "x"_a, "running_mean"_a.none(),
        "running_var"_a.none(), "weight"_a.none(), "bias"_a.none(), "training"_a, "momentum"_a, "eps"_a, "y"_a,
        "save_mean"_a, "save_rstd"_a, "stream"_a = 0);
  m.def("batch_norm_backward", &running_stats_backward<batch_norm_backward>, "dy"_a, "x"_a, "save_mean"_a,
        "save_rstd"_a, "weight"_a.none(), "training"_a, "dx"_a.none(), "dweight"_a.none(), "dbias"_a.none(),
        "stream"_a = 0);
  m.def("instance_norm_forward", &running_stats_forward<instance_norm_forward>, "x"_a, "running_mean"_a.none(),
        "running_var"_a.none(), "weight"_a.none(), "bias"_a.none(), "use_input_stats"_a, "momentum"_a, "eps"_a,
        "y"_a, "save_mean"_a, "save_rstd"_a, "stream"_a = 0);
  m.def("instance_norm_backward", &running_stats_backward<instance_norm_backward>, "dy"_a, "x"_a, "save_mean"_a,
        "save_rstd"_a, "weight"_a.none(), "use_input_stats"_a, "dx"_a.none(), "dweight"_a.none(), "dbias"_a.none(),
        "stream"_a = 0);

  m.def(
      "group_norm_forward",
      [](InArray x, int64_t num_groups, OptInArray weight, OptInArray bias, double eps, OutArray y,
         OutArray save_mean, OutArray save_rstd, uintptr_t stream) {
        const TensorView xv = view(x, "x"), yv = view(y, "y");
        const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
        const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
        nb::gil_scoped_release release;
        group_norm_forward(xv, num_groups, wv, bv, eps, yv, sm, sr, stream_ptr(stream));
      },
      "x"_a, "num_groups"_a, "weight"_a.none(), "bias"_a.none(), "eps"_a, "y"_a, "save_mean"_a,
      "save_rstd"_a, "stream"_a = 0);

  m.def(
      "group_norm_backward",
      [](InArray dy, InArray x, int64_t num_groups, InArray save_mean, InArray save_rstd, OptInArray weight,
         OptOutArray dx, OptOutArray dweight, OptOutArray dbias, uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x");
        const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
        const OptTensor wv = view(weight, "weight");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
        nb::gil_scoped_release release;
        group_norm_backward(dyv, xv, num_groups, sm, sr, wv, dxv, dwv, dbv, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "num_groups"_a, "save_mean"_a, "save_rstd"_a, "weight"_a.none(), "dx"_a.none(),
      "dweight"_a.none(), "dbias"_a.none(), "stream"_a = 0);
}

}  // namespace normkit::bindings

// SyncBatchNorm bindings: convert, pick the communicator, release the GIL, call the core.
#include "communicator.h"
#include "normkit/ops.h"

#include <nanobind/stl/pair.h>

namespace normkit::bindings {

namespace {

// check: None (off) or (layer_id, call).
SyncCheck sync_check(const std::optional<std::pair<int64_t, int64_t>>& check) {
  SyncCheck c;
  if (check) {
    c.enabled = true;
    c.layer_id = check->first;
    c.call = check->second;
  }
  return c;
}

}  // namespace

void export_sync_batch_norm(nb::module_& m) {
  m.def(
      "sync_batch_norm_forward",
      [](InArray x, OptOutArray running_mean, OptOutArray running_var, OptInArray weight, OptInArray bias,
         double momentum, double eps, nb::handle comm, std::optional<std::pair<int64_t, int64_t>> check, OutArray y,
         OutArray save_mean, OutArray save_rstd, uintptr_t stream) {
        const TensorView xv = view(x, "x"), yv = view(y, "y");
        const OptTensor rm = view(running_mean, "running_mean"), rv = view(running_var, "running_var");
        const OptTensor wv = view(weight, "weight"), bv = view(bias, "bias");
        const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
        std::optional<PythonCommunicator> holder;
        Communicator& c = communicator_of(comm, holder);
        nb::gil_scoped_release release;
        sync_batch_norm_forward(xv, rm, rv, wv, bv, momentum, eps, c, sync_check(check), yv, sm, sr,
                                stream_ptr(stream));
      },
      "x"_a, "running_mean"_a.none(), "running_var"_a.none(), "weight"_a.none(), "bias"_a.none(), "momentum"_a,
      "eps"_a, "comm"_a, "check"_a.none(), "y"_a, "save_mean"_a, "save_rstd"_a, "stream"_a = 0);

  m.def(
      "sync_batch_norm_backward",
      [](InArray dy, InArray x, InArray save_mean, InArray save_rstd, OptInArray weight, nb::handle comm,
         std::optional<std::pair<int64_t, int64_t>> check, OptOutArray dx, OptOutArray dweight, OptOutArray dbias,
         uintptr_t stream) {
        const TensorView dyv = view(dy, "dy"), xv = view(x, "x");
        const TensorView sm = view(save_mean, "save_mean"), sr = view(save_rstd, "save_rstd");
        const OptTensor wv = view(weight, "weight");
        const OptTensor dxv = view(dx, "dx"), dwv = view(dweight, "dweight"), dbv = view(dbias, "dbias");
        std::optional<PythonCommunicator> holder;
        Communicator& c = communicator_of(comm, holder);
        nb::gil_scoped_release release;
        sync_batch_norm_backward(dyv, xv, sm, sr, wv, c, sync_check(check), dxv, dwv, dbv, stream_ptr(stream));
      },
      "dy"_a, "x"_a, "save_mean"_a, "save_rstd"_a, "weight"_a.none(), "comm"_a, "check"_a.none(), "dx"_a.none(),
      "dweight"_a.none(), "dbias"_a.none(), "stream"_a = 0);
}

}  // namespace normkit::bindings

// WeightNorm bindings: convert, release the GIL, call the core.
#include "convert.h"
#include "normkit/ops.h"

namespace normkit::bindings {

void export_weight_norm(nb::module_& m) {
  m.def(
      "weight_norm_forward",
      [](InArray v, InArray g, int64_t dim, OutArray w, OutArray norms, uintptr_t stream) {
        const TensorView vv = view(v, "v"), gv = view(g, "g"), wv = view(w, "w"), nv = view(norms, "norms");
        nb::gil_scoped_release release;
        weight_norm_forward(vv, gv, dim, wv, nv, stream_ptr(stream));
      },
      "v"_a, "g"_a, "dim"_a, "w"_a, "norms"_a, "stream"_a = 0);

  m.def(
      "weight_norm_backward",
      [](InArray dw, InArray v, InArray g, InArray norms, int64_t dim, OutArray dv, OutArray dg, uintptr_t stream) {
        const TensorView dwv = view(dw, "dw"), vv = view(v, "v"), gv = view(g, "g"), nv = view(norms, "norms"),
                         dvv = view(dv, "dv"), dgv = view(dg, "dg");
        nb::gil_scoped_release release;
        weight_norm_backward(dwv, vv, gv, nv, dim, dvv, dgv, stream_ptr(stream));
      },
      "dw"_a, "v"_a, "g"_a, "norms"_a, "dim"_a, "dv"_a, "dg"_a, "stream"_a = 0);
}

}  // namespace normkit::bindings

// Build facts and thread control.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "normkit/build_info.h"
#include "normkit/parallel.h"

namespace normkit::bindings {

void export_info(nb::module_& m) {
  m.def("build_info", [] {
    const BuildInfo b = build_info();
    nb::dict d;
    d["version"] = b.version;
    d["cuda"] = b.cuda;
    d["cuda_archs"] = b.cuda_archs;
    d["mpi"] = b.mpi;
    d["nccl"] = b.nccl;
    d["simd"] = b.simd;
    d["bf16_instructions"] = b.bf16_instructions;
    d["streaming_output_bytes"] = b.streaming_output_bytes;
    d["num_threads"] = b.num_threads;
    d["threading"] = b.threading;
    return d;
  });
  m.def("cuda_available", &cuda_available);
  m.def("set_num_threads", &set_num_threads, "n"_a);
  m.def("get_num_threads", &get_num_threads);
}

}  // namespace normkit::bindings

// The _core extension module: one export function per topic, and the exception mapping.
#include <nanobind/nanobind.h>

#include "exceptions.h"

namespace nb = nanobind;

namespace normkit::bindings {
void export_info(nb::module_& m);
void export_row_norm(nb::module_& m);
void export_channel_norm(nb::module_& m);
void export_local_response_norm(nb::module_& m);
void export_weight_norm(nb::module_& m);
void export_batch_instance_norm(nb::module_& m);
void export_switchable_norm(nb::module_& m);
void export_host_cache(nb::module_& m);
void export_communicator(nb::module_& m);
void export_sync_batch_norm(nb::module_& m);
void export_spectral_norm(nb::module_& m);
void export_mean_only_batch_norm(nb::module_& m);
}  // namespace normkit::bindings

NB_MODULE(_core, m) {
  m.doc() = "normkit's C++ core: normalization kernels over DLPack arrays.";
  // Layers (torch modules, NumPy objects) may hold communicators until interpreter shutdown.
  nb::set_leak_warnings(false);
  normkit::bindings::register_normkit_exceptions();
  normkit::bindings::export_info(m);
  normkit::bindings::export_row_norm(m);
  normkit::bindings::export_channel_norm(m);
  normkit::bindings::export_local_response_norm(m);
  normkit::bindings::export_weight_norm(m);
  normkit::bindings::export_batch_instance_norm(m);
  normkit::bindings::export_switchable_norm(m);
  normkit::bindings::export_host_cache(m);
  normkit::bindings::export_communicator(m);
  normkit::bindings::export_sync_batch_norm(m);
  normkit::bindings::export_spectral_norm(m);
  normkit::bindings::export_mean_only_batch_norm(m);
}

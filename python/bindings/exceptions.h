// The core's typed exceptions as Python's (TypeError, ValueError, RuntimeError), registered by every
// extension module (_core, _mpi, _nccl).
#pragma once
#include <nanobind/nanobind.h>

#include "normkit/error.h"

namespace normkit::bindings {

inline void register_normkit_exceptions() {
  nanobind::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
}

}  // namespace normkit::bindings

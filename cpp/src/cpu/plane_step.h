// The step between consecutive values of a plane (n, c): 1 for channels-first data, C for
// channels-last. fn(step) gets it as a compile-time 1 or as the run-time C, so a loop over
// x[i * step] compiles to a contiguous vector loop on channels-first data. Left to the compiler,
// whether such a loop gets a contiguous version is its heuristics' choice: GCC 12 once vectorized
// Batch-Instance Norm's channels-first apply with scattered single-value stores, 3x slower.
#pragma once
#include <cstdint>
#include <type_traits>

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

template <class Fn>
void with_plane_step(int64_t step, Fn&& fn) {
  if (step == 1) {
    fn(std::integral_constant<int64_t, 1>{});
  } else {
    fn(step);
  }
}

}  // namespace normkit::cpu::NK_ISA

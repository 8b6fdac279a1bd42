// Per-plane elementwise maps over runs of short channels-first planes (plane q = n * C + c, its S
// values at q * S; S small: a CNN's last stages, 7x7, 4x4).
//
// One loop over the planes, each plane's operands (mean, rstd, weight, ...) splatted once and its
// values mapped a vector at a time. Through a map_run (or write_run) per plane, the call and
// the loop set-up per plane cost more than a 4x4 plane's values: BatchNorm2d eval [16,512,4,4]
// float32 took 58-60 us per call, 48-49 us this way (torch: 27-29 us). The per-element formula is
// fn's, the one map_run applies to a run (each vector lane computes exactly what the scalar
// expression computes), so the values are the same.
#pragma once
#include <cstdint>

#include "cpu/stream_store.h"
#include "cpu/vector_convert.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// Planes [q0, q1): out[q][i] = store(fn(inputs[q][i], operands of q)), each plane a map_values run.
// operands(op) fills the next plane's P scalar operands: it is called once per plane, for q0, q0 + 1,
// ... in order (write_rows' order), so that it can count (n, c) instead of dividing per plane. When
// `stream`, whole planes go through a cache-resident stage (write_rows); the caller fences.
template <int I, int P, class T, class A, class Operands, class Fn>
inline void map_planes(int64_t S, int64_t q0, int64_t q1, const T* const (&in)[I], T* out, bool stream,
                       Operands&& operands, Fn&& fn) {
  write_rows(out, q0, q1, S, stream, [&](int64_t q, T* dst) {
    A op[P];
    operands(op);
    map_values(S, in, q * S, dst, op, fn);
  });
}

}  // namespace normkit::cpu::NK_ISA

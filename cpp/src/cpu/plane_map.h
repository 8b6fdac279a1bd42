// Per-plane elementwise maps over runs of short channels-first planes (plane q = n * C + c, its S
// values at q * S; S small: a CNN's last stages, 7x7, 4x4).
//
// One loop over the planes, each plane's operands (mean, rstd, weight, ...) splatted once and its
// values mapped a 64-byte vector at a time. Through a map_run (or write_run) per plane, the call and
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

// Planes [q0, q1): out[q][i] = store(fn(inputs[q][i], operands of q)), fn(a, op) as map_run's.
// operands(op) fills the next plane's P scalar operands: it is called once per plane, for q0, q0 + 1,
// ... in order (write_rows' order), so that it can count (n, c) instead of dividing per plane. When
// `stream`, whole planes go through a cache-resident stage (write_rows); the caller fences.
template <int I, int P, class T, class A, class Operands, class Fn>
inline void map_planes(int64_t S, int64_t q0, int64_t q1, const T* const (&in)[I], T* out, bool stream,
                       Operands&& operands, Fn&& fn) {
  write_rows(out, q0, q1, S, stream, [&](int64_t q, T* dst) {
    A op[P];
    operands(op);
    const int64_t base = q * S;
    vector_loop<A>(S, [&](int64_t i, auto lanes) {
      constexpr int64_t K = decltype(lanes)::value;
      decltype(splat<A, K>(A())) a[I], v[P];
      for (int k = 0; k < I; ++k) a[k] = get<A, K>(in[k] + base + i);
      for (int p = 0; p < P; ++p) v[p] = splat<A, K>(op[p]);
      put<A, K>(dst + i, fn(a, v));
    });
  });
}

}  // namespace normkit::cpu::NK_ISA

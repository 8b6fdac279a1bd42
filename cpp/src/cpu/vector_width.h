// The width of the build's vectors, and the GCC vector type of that width that the explicit vector
// loops, tiles and conversions use.
#pragma once
#include <cstdint>

// Per-ISA namespace (see lanes.h): the width differs between the builds.
namespace normkit::cpu::NK_ISA {

// The build's vector: 64 bytes on AVX-512 (a zmm), 32 on AVX2 (a ymm), 16 on the baseline (an xmm).
// No wider: a GCC vector type wider than the instructions has no machine mode, and GCC 12 copied
// its values (arrays of them, a lambda's results) through the stack in 16-byte and 8-byte pieces
// that wide loads then read back, a store-forwarding stall per piece. With 64-byte vectors on AVX2
// (Zen 3, core calls): LayerNorm [8192,1024] float32 forward 4.9 ms, 2.0 ms for its staged bfloat16
// twin; backward 10.3 ms on 6144 rows, 2.8 ms on 6000 (below the streaming threshold).
constexpr int64_t kVectorBytes =
#if defined(__AVX512F__)
    64;
#elif defined(__AVX__)
    32;
#else
    16;
#endif

// A vector of A (kLanes values).
template <class A>
struct Vec {
  typedef A type __attribute__((vector_size(kVectorBytes)));
  static constexpr int64_t kLanes = kVectorBytes / int64_t(sizeof(A));
};

}  // namespace normkit::cpu::NK_ISA

// Fused multiply-add over GCC vectors of float or double (the CPU kernels' register blocks and the
// float16 loops' widened vectors), for the CPU kernels built with FMA (AVX2, AVX-512). Built without
// contraction, GCC neither fuses `a * b + c` on such vectors nor reliably turns a loop of scalar
// std::fma over their lanes into vector instructions (a channels-last column sum so ran 1.5x slower,
// LocalResponseNorm's window sums 2x): the intrinsics say it. Host code only.
#pragma once
#if defined(__FMA__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <type_traits>

namespace normkit::math {
namespace vfma {

// Register-sized vectors (the intrinsics' types carry may_alias, which template arguments drop).
typedef float f32x4 __attribute__((vector_size(16)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x2 __attribute__((vector_size(16)));
typedef double f64x4 __attribute__((vector_size(32)));

inline __attribute__((always_inline)) f32x4 fma(f32x4 a, f32x4 b, f32x4 c) { return _mm_fmadd_ps(a, b, c); }
inline __attribute__((always_inline)) f32x8 fma(f32x8 a, f32x8 b, f32x8 c) { return _mm256_fmadd_ps(a, b, c); }
inline __attribute__((always_inline)) f64x2 fma(f64x2 a, f64x2 b, f64x2 c) { return _mm_fmadd_pd(a, b, c); }
inline __attribute__((always_inline)) f64x4 fma(f64x4 a, f64x4 b, f64x4 c) { return _mm256_fmadd_pd(a, b, c); }
#if defined(__AVX512F__)
typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
inline __attribute__((always_inline)) f32x16 fma(f32x16 a, f32x16 b, f32x16 c) { return _mm512_fmadd_ps(a, b, c); }
inline __attribute__((always_inline)) f64x8 fma(f64x8 a, f64x8 b, f64x8 c) { return _mm512_fmadd_pd(a, b, c); }
#endif

// r = a * b + c, register R by register R (memcpy: no aliasing questions; it stays in registers).
template <class R, class V>
inline __attribute__((always_inline)) V by_registers(const V& a, const V& b, const V& c) {
  V r;
  for (size_t o = 0; o < sizeof(V); o += sizeof(R)) {
    R x, y, z;
    std::memcpy(&x, reinterpret_cast<const char*>(&a) + o, sizeof(R));
    std::memcpy(&y, reinterpret_cast<const char*>(&b) + o, sizeof(R));
    std::memcpy(&z, reinterpret_cast<const char*>(&c) + o, sizeof(R));
    const R t = fma(x, y, z);
    std::memcpy(reinterpret_cast<char*>(&r) + o, &t, sizeof(R));
  }
  return r;
}

}  // namespace vfma

template <class V>
inline __attribute__((always_inline)) V vector_fma(V a, V b, V c) {
  using E = std::remove_cv_t<std::remove_reference_t<decltype(a[0])>>;
  static_assert(std::is_same_v<E, float> || std::is_same_v<E, double>, "vectors of float or double");
  constexpr bool kFloat = std::is_same_v<E, float>;
#if defined(__AVX512F__)
  if constexpr (sizeof(V) % 64 == 0)
    return vfma::by_registers<std::conditional_t<kFloat, vfma::f32x16, vfma::f64x8>>(a, b, c);
#endif
  if constexpr (sizeof(V) % 32 == 0) {
    return vfma::by_registers<std::conditional_t<kFloat, vfma::f32x8, vfma::f64x4>>(a, b, c);
  } else if constexpr (sizeof(V) % 16 == 0) {
    return vfma::by_registers<std::conditional_t<kFloat, vfma::f32x4, vfma::f64x2>>(a, b, c);
  } else {
    V r;
    for (int i = 0; i < int(sizeof(V) / sizeof(E)); ++i) r[i] = std::fma(a[i], b[i], c[i]);
    return r;
  }
}

}  // namespace normkit::math
#endif

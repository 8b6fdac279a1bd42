// Element types, their accumulation types, conversions and the dtype dispatch. Usable from host code
// and from CUDA device code: the CPU and CUDA kernels read and write elements through the same
// load/store functions, so a conversion bug cannot hide on one side.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define NK_HD __host__ __device__ __forceinline__
#else
// Always inlined on the host: the CPU kernels are compiled once per instruction set, and an
// out-of-line copy of a shared inline function would be one symbol with several bodies, of which the
// linker keeps any one (AVX-512 code in the baseline kernels).
#define NK_HD inline __attribute__((always_inline))
#endif

namespace normkit {

enum class DType : uint8_t { Float16, BFloat16, Float32, Float64 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
  }
  return "?";
}

inline int dtype_size(DType t) {
  return t == DType::Float64 ? 8 : t == DType::Float32 ? 4 : 2;
}

// Accumulation dtype: half types accumulate in float32, float64 in float64.
inline DType acc_dtype(DType t) { return t == DType::Float64 ? DType::Float64 : DType::Float32; }

// 16-bit storage types: plain bits, so they are trivially copyable on host and device alike.
struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

template <class T> struct dtype_of;
template <> struct dtype_of<half_t> { static constexpr DType value = DType::Float16; };
template <> struct dtype_of<bfloat16_t> { static constexpr DType value = DType::BFloat16; };
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };

namespace bits {
// The conversions are written once, on "lanes": one value (uint32_t and float, host and device) or
// a whole host vector of them (GCC vector types, cpu/vector_convert.h, which specialises Lanes). So the
// CPU's vector loops and every scalar path, CUDA's included, round with the same steps.
//   Lanes<U>::F           the float type with U's lanes
//   Lanes<U>::splat(c)    the constant c in every lane
//   Lanes<U>::as_float(u) / as_uint(f): the same bits as the other type
template <class U>
struct Lanes;

template <>
struct Lanes<uint32_t> {
  using F = float;
  static NK_HD uint32_t splat(uint32_t c) { return c; }
  static NK_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
  }
  static NK_HD uint32_t as_uint(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
  }
};

// IEEE binary16 bits (zero-extended in each lane) -> binary32, exact, branch-free (so the CPU loops
// vectorize). Subnormals are renormalised by a float subtraction of the implicit bit.
template <class U>
NK_HD typename Lanes<U>::F half_bits_to_float(U h) {
  using L = Lanes<U>;
  const U sign = (h & 0x8000u) << 16;
  U o = (h & 0x7fffu) << 13;                   // exponent/mantissa in place
  const U exp = o & 0x0f800000u;               // the 5 exponent bits, shifted
  o += (127u - 15u) << 23;                     // rebias
  o += exp == 0x0f800000u ? L::splat((128u - 16u) << 23) : L::splat(0u);  // inf/nan: all-ones exponent
  const typename L::F sub = L::as_float(o + (1u << 23)) - L::as_float(L::splat(113u << 23));
  const U r = exp == 0u ? L::as_uint(sub) : o;  // zero and subnormals
  return L::as_float(r | sign);
}

// binary32 -> binary16 bits (in the low half of each lane), round to nearest even, overflow to inf,
// NaN stays NaN (quiet).
template <class U>
NK_HD U float_to_half_bits(typename Lanes<U>::F f) {
  using L = Lanes<U>;
  const U u = L::as_uint(f);
  const U sign = (u >> 16) & 0x8000u;
  const U a = u & 0x7fffffffu;
  // Normal range: add the rounding bias and drop 13 mantissa bits.
  const U mant_odd = (a >> 13) & 1u;
  const U normal = (a + ((15u - 127u) << 23) + 0xfffu + mant_odd) >> 13;
  // Subnormal range: let the FPU align the mantissa by adding 0.5 (denormal magic), which rounds RNE.
  const U magic = L::splat(((127u - 15u) + (23u - 10u) + 1u) << 23);
  const U sub = L::as_uint(L::as_float(a) + L::as_float(magic)) - magic;
  U r = a < (113u << 23) ? sub : normal;
  r = a >= (143u << 23) ? L::splat(0x7c00u) : r;               // overflow -> inf
  r = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x1ffu)) : r;  // NaN
  return r | sign;
}

// bfloat16 bits (zero-extended in each lane) -> binary32: exact.
template <class U>
NK_HD typename Lanes<U>::F bf16_bits_to_float(U b) {
  return Lanes<U>::as_float(b << 16);
}

// binary32 -> bfloat16 bits (in the low half of each lane): round to nearest even; NaN stays a
// quiet NaN. (NaN found by f != f, one unordered compare: the integer test (u & 0x7fffffff) >
// 0x7f800000 took three instructions per vector on AVX2, which has no unsigned compare.)
template <class U>
NK_HD U float_to_bf16_bits(typename Lanes<U>::F f) {
  const U u = Lanes<U>::as_uint(f);
  const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return f != f ? ((u >> 16) | 0x40u) : rounded;
}

// One value.
NK_HD float half_to_float(uint16_t h) { return half_bits_to_float<uint32_t>(h); }
NK_HD uint16_t float_to_half(float f) { return uint16_t(float_to_half_bits<uint32_t>(f)); }
NK_HD float bf16_to_float(uint16_t b) { return bf16_bits_to_float<uint32_t>(b); }
NK_HD uint16_t float_to_bf16(float f) { return uint16_t(float_to_bf16_bits<uint32_t>(f)); }
}  // namespace bits

// load<A>(storage) and store<T>(acc): the only place where element types change.
template <class A> NK_HD A load(float v) { return A(v); }
template <class A> NK_HD A load(double v) { return A(v); }
template <class A> NK_HD A load(half_t v) {
#if defined(__CUDA_ARCH__)
  return A(__half2float(__ushort_as_half(v.bits)));
#else
  return A(bits::half_to_float(v.bits));
#endif
}
template <class A> NK_HD A load(bfloat16_t v) {
  return A(bits::bf16_to_float(v.bits));
}

template <class T> struct store_impl;
template <> struct store_impl<float> {
  template <class A> static NK_HD float apply(A v) { return float(v); }
};
template <> struct store_impl<double> {
  template <class A> static NK_HD double apply(A v) { return double(v); }
};
template <> struct store_impl<half_t> {
  template <class A> static NK_HD half_t apply(A v) {
#if defined(__CUDA_ARCH__)
    return half_t{__half_as_ushort(__float2half_rn(float(v)))};
#else
    return half_t{bits::float_to_half(float(v))};
#endif
  }
};
template <> struct store_impl<bfloat16_t> {
  template <class A> static NK_HD bfloat16_t apply(A v) { return bfloat16_t{bits::float_to_bf16(float(v))}; }
};
template <class T, class A> NK_HD T store(A v) { return store_impl<T>::apply(v); }

// Calls fn(T{}) with T the storage type of `t`: NK dispatch written once for every op.
template <class Fn>
decltype(auto) dispatch_float(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float16: return fn(half_t{});
    case DType::BFloat16: return fn(bfloat16_t{});
    case DType::Float32: return fn(float{});
    case DType::Float64: break;
  }
  return fn(double{});
}

// Calls fn(A{}) with A the accumulation type named by `acc` (float64 -> double, else float): for
// buffers that only ever hold accumulation-type values (statistics, coefficients).
template <class Fn>
decltype(auto) dispatch_acc(DType acc, Fn&& fn) {
  if (acc == DType::Float64) return fn(double{});
  return fn(float{});
}

// Parameters (weight, bias, running statistics) are stored in the input's dtype or, for mixed
// precision, in its accumulation dtype; the dispatch layer rejects anything else. Calls fn(P{}).
template <class T, class Fn>
decltype(auto) dispatch_param(DType p, Fn&& fn) {
  if (p == dtype_of<T>::value) return fn(T{});
  return fn(acc_t<T>{});
}

}  // namespace normkit

// Element conversions a whole vector at a time, for the loops whose per-element
// conversion the compiler does not vectorize well (float16: GCC 12 converts it value by value with
// bit operations): load_vec/store_vec (float16 and bfloat16 <-> float, F16C where the build has it,
// AVX512-BF16 where the processor has it),
// explicit vector loops (vector_loop and for_elements with get/put/splat), map_run over contiguous
// runs (bfloat16 on AVX-512 and AVX2 in even/odd vector pairs: load_bf16_pairs/store_bf16_pairs), and
// widen_run (float16 -> float into a buffer that reductions then read).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/lanes.h"
#include "cpu/stream_store.h"
#include "cpu/vector_width.h"
#include "normkit/dtype.h"

#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512BW__)
#include <immintrin.h>
#endif

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// float16 and bfloat16 <-> float on whole vectors of floats, by the conversions of normkit/dtype.h
// (bits::Lanes specialised below: the same steps, so the same values as the scalar ones).
// Element by element through a stack array, GCC converted in 32-byte halves and reloaded them as
// one 64-byte vector, a store-forwarding stall per vector (channels-last BatchNorm bfloat16
// normalized slower than its channels-first twin, float16 3x slower than bfloat16).
constexpr int64_t kFloatLanes = Vec<float>::kLanes;
typedef uint16_t HalfBits __attribute__((vector_size(kFloatLanes * 2)));  // two-byte values
typedef uint32_t WideBits __attribute__((vector_size(kFloatLanes * 4)));  // the same, one per 32-bit lane
typedef Vec<float>::type FloatVec;

// A vector of two-byte values (float16 or bfloat16 bits) from or to memory, one per 32-bit lane.
inline WideBits load_half_bits(const void* p) {
  HalfBits h;
  std::memcpy(&h, p, sizeof(h));
  return __builtin_convertvector(h, WideBits);
}
inline void store_half_bits(void* p, const WideBits& lanes) {
  const HalfBits h = __builtin_convertvector(lanes, HalfBits);
  std::memcpy(p, &h, sizeof(h));
}

}  // namespace normkit::cpu::NK_ISA

template <>
struct normkit::bits::Lanes<normkit::cpu::NK_ISA::WideBits> {
  using U = normkit::cpu::NK_ISA::WideBits;
  using F = normkit::cpu::NK_ISA::FloatVec;
  // (Always inlined, as NK_HD. Each build specialises its own width: 16, 32 or 64 bytes.)
  static NK_HD U splat(uint32_t c) { return U{} + c; }
  static NK_HD F as_float(const U& u) {
    F f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  static NK_HD U as_uint(const F& f) {
    U u;
    std::memcpy(&u, &f, sizeof(u));
    return u;
  }
};

namespace normkit::cpu::NK_ISA {

// Whether float16 converts by the hardware in this build, and whether T is float16 converted so:
// then the kernels take whole-vector loops and widen values into float buffers for their
// reductions, which costs less than converting them one by one.
constexpr bool kHardwareHalf =
#if defined(__F16C__)
    true;
#else
    false;
#endif
template <class T>
constexpr bool is_hardware_half = std::is_same_v<T, half_t> && kHardwareHalf;

#if defined(__F16C__)
// float16 <-> float by the hardware where the kernels are built with F16C (the AVX2 and AVX-512
// builds): one instruction per vector where the bit operations take about fifteen. The same values
// as bits::half_bits_to_float and float_to_half_bits on every input (compared on all 2^16 halves
// and all 2^32 floats), except that a signaling NaN comes in quieted, as the arithmetic after every
// load would make it anyway. float16 BatchNorm normalized 2.5x slower than bfloat16 without it.
// (F16C exists only beside AVX: the vector is 32 or 64 bytes here.)
inline void hardware_half_to_float(const half_t* p, FloatVec& v) {
#if defined(__AVX512F__)
  const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#else
  const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
  static_assert(sizeof(f) == sizeof(v), "one register per vector");
  std::memcpy(&v, &f, sizeof(v));
}

inline void hardware_float_to_half(half_t* p, const FloatVec& v) {
  constexpr int kNearestEven = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#if defined(__AVX512F__)
  __m512 f;
  std::memcpy(&f, &v, sizeof(f));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(f, kNearestEven));
#else
  __m256 f;
  std::memcpy(&f, &v, sizeof(f));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(f, kNearestEven));
#endif
}
#endif

#if defined(__AVX512BW__)
// AVX512-BF16's conversions (vcvtneps2bf16, vcvtne2ps2bf16) round normal values, zeros, infinities
// and NaNs as bits::float_to_bf16_bits does (to nearest even; a NaN's top bits, quieted) but flush
// subnormals to zero whatever MXCSR says, so vectors holding one take the integer rounding. They are
// written as inline assembly: the AVX-512 build is compiled for processors without them too, and
// runs them only where bf16_instructions says the processor has them.
//
// Whether a vector of floats, or either of two, holds a subnormal.
constexpr int kDenormalClass = 0x20;  // (vfpclassps category bit 5)
inline bool has_subnormal(const __m512& a) { return _mm512_fpclass_ps_mask(a, kDenormalClass) != 0; }
inline bool has_subnormal(const __m512& a, const __m512& b) {
  return !_kortestz_mask16_u8(_mm512_fpclass_ps_mask(a, kDenormalClass), _mm512_fpclass_ps_mask(b, kDenormalClass));
}

// v rounded to bfloat16 at p by the AVX512-BF16 instruction, where the processor has it
// (bf16_instructions) and v holds no subnormal; false (nothing written) otherwise.
inline bool hardware_float_to_bf16(bfloat16_t* p, const FloatVec& v) {
  __m512 f;
  std::memcpy(&f, &v, sizeof(f));
  if (__builtin_expect(!bf16_instructions || has_subnormal(f), 0)) return false;
  __m256i packed;
  asm("vcvtneps2bf16 %1, %0" : "=v"(packed) : "v"(f));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), packed);
  return true;
}
#endif

template <class T, class A>
inline typename Vec<A>::type load_vec(const T* p) {
  typename Vec<A>::type v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, p, sizeof(v));
  } else if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    v = bits::bf16_bits_to_float(load_half_bits(p));
  } else if constexpr (std::is_same_v<T, half_t> && std::is_same_v<A, float>) {
#if defined(__F16C__)
    hardware_half_to_float(p, v);
#else
    v = bits::half_bits_to_float(load_half_bits(p));
#endif
  } else {
    alignas(64) A t[Vec<A>::kLanes];
#pragma omp simd
    for (int64_t j = 0; j < Vec<A>::kLanes; ++j) t[j] = load<A>(p[j]);
    std::memcpy(&v, t, sizeof(v));
  }
  return v;
}

template <class T, class A>
inline void store_vec(T* p, const typename Vec<A>::type& v) {
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(p, &v, sizeof(v));
  } else if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
#if defined(__AVX512BW__)
    if (hardware_float_to_bf16(p, v)) return;
#endif
    store_half_bits(p, bits::float_to_bf16_bits<WideBits>(v));
  } else if constexpr (std::is_same_v<T, half_t> && std::is_same_v<A, float>) {
#if defined(__F16C__)
    hardware_float_to_half(p, v);
#else
    store_half_bits(p, bits::float_to_half_bits<WideBits>(v));
#endif
  } else {
    alignas(64) A t[Vec<A>::kLanes];
    std::memcpy(t, &v, sizeof(v));
#pragma omp simd
    for (int64_t j = 0; j < Vec<A>::kLanes; ++j) p[j] = store<T>(t[j]);
  }
}

// `value` in every lane of a vector of A (the vector form of a per-run operand). (An
// initialiser list compiles to one broadcast; a loop over the lanes compiled to one insert per lane.)
template <class A, size_t... Lane>
inline typename Vec<A>::type broadcast_lanes(A value, std::index_sequence<Lane...>) {
  return typename Vec<A>::type{(void(Lane), value)...};
}
template <class A>
inline typename Vec<A>::type broadcast(A value) {
  return broadcast_lanes(value, std::make_index_sequence<size_t(Vec<A>::kLanes)>{});
}

// Explicit vector loops: vector_loop<A>(n, body) calls body(i, lanes) for i in [0, n), a whole
// vector of A at a time (lanes = Vec<A>::kLanes) and then value by value (lanes = 1).
// The body reads and writes through get/put/splat<A, lanes>, which are load_vec/store_vec/broadcast
// on vectors and load/store on single values, so one body serves both.
template <class A, class Body>
inline void vector_loop(int64_t n, Body&& body) {
  constexpr int64_t L = Vec<A>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) body(i, std::integral_constant<int64_t, L>{});
  for (; i < n; ++i) body(i, std::integral_constant<int64_t, 1>{});
}

template <class A, int64_t Lanes, class T>
inline auto get(const T* p) {
  if constexpr (Lanes == 1) {
    return load<A>(*p);
  } else {
    return load_vec<T, A>(p);
  }
}

template <class A, int64_t Lanes, class T, class X>
inline void put(T* p, const X& v) {
  if constexpr (Lanes == 1) {
    *p = store<T>(v);
  } else {
    store_vec<T, A>(p, v);
  }
}

// put into an output that Stream says is streamed past the caches: whole vectors of T = A (aligned:
// the caller's loop starts on a line, and a vector is at most a line) by streaming stores, the rest
// as put. Narrower types' values fill part of a register and take put (plain stores): callers stream only
// T = A here (bfloat16 streams through store_bf16_pairs), and compile other types' Stream bodies only
// for branches that never run.
template <bool Stream, class A, int64_t Lanes, class T, class X>
inline void put_out(T* p, const X& v) {
  if constexpr (Stream && Lanes > 1 && std::is_same_v<T, A>) {
    stream_vector(p, v);
  } else {
    put<A, Lanes>(p, v);
  }
}

template <class A, int64_t Lanes>
inline auto splat(A value) {
  if constexpr (Lanes == 1) {
    return value;
  } else {
    return broadcast(value);
  }
}

// body(i, lanes) for i in [0, n), for loops over element type T: whole vectors (vector_loop) where T
// is float16 converted by the hardware, whose conversions the compiler does not vectorize; else one
// value at a time (lanes = 1) in a loop the compiler vectorizes itself, as it does well for the
// other types. So a loop body is written once, with get/put/splat, for every element type.
template <class T, class A, class Body>
inline void for_elements(int64_t n, Body&& body) {
  if constexpr (is_hardware_half<T>) {
    vector_loop<A>(n, body);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) body(i, std::integral_constant<int64_t, 1>{});
  }
}

// The loop for bodies that write through put_out<Stream>: whole vectors where the output is streamed
// (vector_loop), else for_elements.
template <bool Stream, class T, class A, class Body>
inline void for_output(int64_t n, Body&& body) {
  if constexpr (Stream) {
    vector_loop<A>(n, body);
  } else {
    for_elements<T, A>(n, body);
  }
}

#if defined(__AVX512BW__)
// 32 bfloat16 values as two float vectors, the even-indexed values and the odd-indexed ones: a
// bfloat16 is the high half of its float, so a shift and a mask convert them in place (widening
// them in order took two lane-crossing extensions and two shifts). For maps whose operands are the
// same for every value of a run, where the order of the lanes does not matter.
inline void load_bf16_pairs(const bfloat16_t* p, FloatVec& even, FloatVec& odd) {
  const __m512i v = _mm512_loadu_si512(p);
  const __m512i e = _mm512_slli_epi32(v, 16), o = _mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u)));
  std::memcpy(&even, &e, sizeof(even));
  std::memcpy(&odd, &o, sizeof(odd));
}

// bits::float_to_bf16_bits's result in the high half of each lane (the low half is garbage): the
// same rounding to nearest even, the NaN test as an unordered compare (u & 0x7fffffff > 0x7f800000
// is exactly "f is NaN").
inline __m512i bf16_in_high_half(const FloatVec& v) {
  __m512 f;
  std::memcpy(&f, &v, sizeof(f));
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
  return _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x400000));
}

// The inverse of load_bf16_pairs: value 2i from even[i], value 2i + 1 from odd[i], each rounded
// as store<bfloat16_t>. Where the processor has AVX512-BF16 (bf16_instructions): one conversion of
// both vectors, to the even values then the odd ones, and a word permute that interleaves them, in
// place of the fifteen instructions of the integer rounding below, which took a fifth of a bfloat16
// BatchNorm's forward and of its backward (measured by truncating instead). With the subnormal
// test, core calls of BatchNorm [32,64,56,56] bfloat16, alternating builds: forward 823-859 ->
// 736-766 us, backward 1176-1182 -> 1112-1147 us. (Rounding and packing in order by integers took
// a cross-lane two-source permute.)
template <bool Stream = false>
inline void store_bf16_pairs(bfloat16_t* p, const FloatVec& even, const FloatVec& odd) {
  auto store = [p](const __m512i& v) {
    if constexpr (Stream) {
      stream_vector(p, v);  // (p 64-byte aligned: see put_out)
    } else {
      _mm512_storeu_si512(p, v);
    }
  };
  __m512 e, o;
  std::memcpy(&e, &even, sizeof(e));
  std::memcpy(&o, &odd, sizeof(o));
  if (__builtin_expect(bf16_instructions && !has_subnormal(e, o), 1)) {
    __m512i packed;  // words 0-15: even's, 16-31: odd's (AT&T order: low source first)
    asm("vcvtne2ps2bf16 %2, %1, %0" : "=v"(packed) : "v"(o), "v"(e));
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                                22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    store(_mm512_permutexvar_epi16(interleave, packed));
    return;
  }
  const __m512i hi = bf16_in_high_half(odd), lo = _mm512_srli_epi32(bf16_in_high_half(even), 16);
  // Bitwise select: hi where the mask has ones (the high halves), lo elsewhere.
  constexpr int kSelectFirstWhereThird = 0xE4;
  const __m512i high_halves = _mm512_set1_epi32(int(0xffff0000u));
  store(_mm512_ternarylogic_epi32(hi, lo, high_halves, kSelectFirstWhereThird));
}
constexpr int64_t kBf16Pair = 32;  // values per pair of float vectors

// Each kBf16Pair (32) values of src (n a multiple of it) as two float vectors a and b, stored as the
// two-source permutes (a, b) by `first` and by `second`.
inline void permute_pairs(const float* src, int64_t n, float* dst, __m512i first, __m512i second) {
  for (int64_t c = 0; c < n; c += kBf16Pair) {
    const __m512 a = _mm512_loadu_ps(src + c), b = _mm512_loadu_ps(src + c + kBf16Pair / 2);
    _mm512_storeu_ps(dst + c, _mm512_permutex2var_ps(a, first, b));
    _mm512_storeu_ps(dst + c + kBf16Pair / 2, _mm512_permutex2var_ps(a, second, b));
  }
}

// Per-value operands of a map over whole pairs, in the pairs' order: of each kBf16Pair (32) values of
// src, the 16 even-indexed ones, then the 16 odd-indexed ones.
inline void split_in_pair_order(const float* src, int64_t n, float* dst) {
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  permute_pairs(src, n, dst, evens, _mm512_add_epi32(evens, _mm512_set1_epi32(1)));
}

// The inverse of split_in_pair_order: values in pair order back in their own order.
inline void merge_from_pair_order(const float* src, int64_t n, float* dst) {
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  permute_pairs(src, n, dst, first, _mm512_add_epi32(first, _mm512_set1_epi32(8)));
}
#elif defined(__AVX2__)
// The same pairs on AVX2, 16 values in one ymm: the same steps as the AVX-512 code above (no
// AVX512-BF16 here, and a blend of words in place of the ternary select). Against the compiler's
// own vectorization, which widened in order (two extensions, an extract and two shifts per 16
// values) and narrowed with a mask, a saturating pack and a lane permute, the pairs take a shift and
// a mask in, a shift and a blend out.
inline void load_bf16_pairs(const bfloat16_t* p, FloatVec& even, FloatVec& odd) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i e = _mm256_slli_epi32(v, 16), o = _mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u)));
  std::memcpy(&even, &e, sizeof(even));
  std::memcpy(&odd, &o, sizeof(odd));
}

// With NaNs: their lanes take the quieted NaN (bits::float_to_bf16_bits's NaN branch).
template <bool WithNaNs>
inline __m256i bf16_in_high_half(const __m256& f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  if constexpr (!WithNaNs) return rounded;
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
}

// (One unordered compare of the two vectors tests both for NaNs, and only a pair holding one takes
// the NaN selects: three instructions per pair in place of six. BatchNorm [32,64,56,56] bfloat16
// forward, core calls, alternating builds, 5 rounds: 1043-1284 -> 959-1107 us.)
template <bool Stream = false>
inline void store_bf16_pairs(bfloat16_t* p, const FloatVec& even, const FloatVec& odd) {
  __m256 e, o;
  std::memcpy(&e, &even, sizeof(e));
  std::memcpy(&o, &odd, sizeof(o));
  const bool nans = _mm256_movemask_ps(_mm256_cmp_ps(e, o, _CMP_UNORD_Q)) != 0;
  const __m256i hi = __builtin_expect(nans, 0) ? bf16_in_high_half<true>(o) : bf16_in_high_half<false>(o);
  const __m256i lo = _mm256_srli_epi32(nans ? bf16_in_high_half<true>(e) : bf16_in_high_half<false>(e), 16);
  constexpr int kOddWords = 0xAA;  // (per 128-bit lane: words 1, 3, 5, 7 from hi)
  const __m256i v = _mm256_blend_epi16(lo, hi, kOddWords);
  if constexpr (Stream) {
    stream_vector(p, v);  // (p 32-byte aligned: see put_out)
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
}
constexpr int64_t kBf16Pair = 16;  // values per pair of float vectors

// (The two helpers below as the AVX-512 ones: of each 16 values, the 8 even-indexed ones, then the
// 8 odd-indexed ones; and back.) An in-lane shuffle takes the even (or odd) values of both halves,
// a 64-bit permute puts the halves in order.
inline void split_in_pair_order(const float* src, int64_t n, float* dst) {
  constexpr int kEvens = _MM_SHUFFLE(2, 0, 2, 0), kOdds = _MM_SHUFFLE(3, 1, 3, 1), kInOrder = _MM_SHUFFLE(3, 1, 2, 0);
  for (int64_t c = 0; c < n; c += kBf16Pair) {
    const __m256 a = _mm256_loadu_ps(src + c), b = _mm256_loadu_ps(src + c + kBf16Pair / 2);
    const __m256d even = _mm256_castps_pd(_mm256_shuffle_ps(a, b, kEvens));
    const __m256d odd = _mm256_castps_pd(_mm256_shuffle_ps(a, b, kOdds));
    _mm256_storeu_ps(dst + c, _mm256_castpd_ps(_mm256_permute4x64_pd(even, kInOrder)));
    _mm256_storeu_ps(dst + c + kBf16Pair / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(odd, kInOrder)));
  }
}

inline void merge_from_pair_order(const float* src, int64_t n, float* dst) {
  constexpr int kLowHalves = 0x20, kHighHalves = 0x31;
  for (int64_t c = 0; c < n; c += kBf16Pair) {
    const __m256 even = _mm256_loadu_ps(src + c), odd = _mm256_loadu_ps(src + c + kBf16Pair / 2);
    const __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
    _mm256_storeu_ps(dst + c, _mm256_permute2f128_ps(lo, hi, kLowHalves));
    _mm256_storeu_ps(dst + c + kBf16Pair / 2, _mm256_permute2f128_ps(lo, hi, kHighHalves));
  }
}
#endif
// Whether this build has the pair helpers above (AVX-512 and AVX2), for the preprocessor (the code
// that calls them exists only in those builds) and as a constant.
#if defined(__AVX512BW__) || defined(__AVX2__)
#define NK_BF16_PAIRS 1
#else
#define NK_BF16_PAIRS 0
#endif
constexpr bool kPairedBf16 = NK_BF16_PAIRS != 0;

#if NK_BF16_PAIRS
// One pair step of a bfloat16 map: kBf16Pair values of each input at offset i, fn applied to the
// even values with operands qe and to the odd ones with qo, stored at dst (streamed when Stream).
template <bool Stream = false, int I, int P, class Fn>
inline void map_bf16_pair(const bfloat16_t* const (&in)[I], int64_t i, bfloat16_t* dst, const FloatVec (&qe)[P],
                          const FloatVec (&qo)[P], Fn& fn) {
  FloatVec even[I], odd[I];
  for (int k = 0; k < I; ++k) load_bf16_pairs(in[k] + i, even[k], odd[k]);
  store_bf16_pairs<Stream>(dst, fn(even, qe), fn(odd, qo));
}
#endif

// Whether the maps over contiguous runs of T (map_run, map_planes) take explicit vector loops: where
// the compiler's own vectorization of the conversions costs more (float16 by the hardware, and
// bfloat16 in even/odd pairs: BatchNorm2d bfloat16 [32,64,56,56] channels first, core calls,
// alternating builds, AVX-512: eval 743-884 -> 611-726 us, train forward 1090-1244 -> 871-1127 us,
// backward 1489-1706 -> 1354-1548 us; AVX2 (Zen 3): train forward 1743-1933 -> 1389-1511 us,
// backward 2205-2726 -> 1879-2347 us).
template <class T>
constexpr bool maps_whole_vectors = is_hardware_half<T> || (std::is_same_v<T, bfloat16_t> && kPairedBf16);

// map_values' loop a vector of A at a time, in order (get/put convert).
template <bool Stream = false, int I, int P, class T, class A, class Fn>
inline void map_vectors(int64_t n, const T* const (&in)[I], int64_t offset, T* dst, const A (&par)[P], Fn& fn) {
  vector_loop<A>(n, [&](int64_t i, auto lanes) {
    constexpr int64_t K = decltype(lanes)::value;
    decltype(splat<A, K>(A())) a[I], q[P];
    for (int k = 0; k < I; ++k) a[k] = get<A, K>(in[k] + offset + i);
    for (int p = 0; p < P; ++p) q[p] = splat<A, K>(par[p]);
    put_out<Stream, A, K>(dst + i, fn(a, q));
  });
}

// dst[i] = store(fn(the inputs' values at offset + i, the operands)) for i in [0, n): one run sharing
// P scalar operands; fn(a, q) takes arrays of I input values and P operands, vectors or scalars (as
// map_rows' fn). Stream: dst starts on a 64-byte line and its whole vectors are streamed (put_out).
template <bool Stream = false, int I, int P, class T, class A, class Fn>
inline void map_values(int64_t n, const T* const (&in)[I], int64_t offset, T* dst, const A (&par)[P], Fn& fn) {
#if NK_BF16_PAIRS
  if constexpr (std::is_same_v<T, bfloat16_t> && std::is_same_v<A, float>) {
    // kBf16Pair values at a time in even/odd pairs (the operands are the run's: the lanes' order is free).
    FloatVec q[P];
    for (int p = 0; p < P; ++p) q[p] = broadcast(par[p]);
    int64_t i = 0;
    for (; i + kBf16Pair <= n; i += kBf16Pair) map_bf16_pair<Stream>(in, offset + i, dst + i, q, q, fn);
    if (i < n) map_vectors(n - i, in, offset + i, dst + i, par, fn);
    return;
  }
#endif
  map_vectors<Stream>(n, in, offset, dst, par, fn);
}

// Whether map_values writes whole vectors of T from registers (then it can stream them).
template <class T, class A>
constexpr bool maps_to_whole_lines = std::is_same_v<T, A> || (std::is_same_v<T, bfloat16_t> && kPairedBf16);

// out[i] = store(fn(the inputs' value i, the operands)) for i in [0, n) of contiguous runs that
// share P scalar operands (map_values). When `stream`: the values before out's first 64-byte line
// by plain stores, then whole vectors streamed from registers where map_values writes whole lines,
// else through a cache-resident stage (write_staged).
template <int I, int P, class T, class A, class Fn>
inline void map_run(int64_t n, const T* const (&in)[I], T* out, const A (&par)[P], bool stream, Fn&& fn) {
  if constexpr (maps_to_whole_lines<T, A>) {
    const int64_t h = stream ? std::clamp<int64_t>(elements_to_line(out), 0, n) : 0;
    map_values(h, in, 0, out, par, fn);
    write_from_registers(out + h, n - h, stream, [&](auto stream_tag, int64_t i0, int64_t len, T* dst) {
      map_values<decltype(stream_tag)::value>(len, in, h + i0, dst, par, fn);
    });
    return;
  }
  write_staged(out, n, stream, [&](int64_t i0, int64_t len, T* dst) { map_values(len, in, i0, dst, par, fn); });
}

// out[i] = float(x[i]) for i in [0, n): exact, so sums over out are those over x.
inline void widen_run(const half_t* x, float* out, int64_t n) {
  vector_loop<float>(n, [&](int64_t i, auto lanes) {
    constexpr int64_t K = decltype(lanes)::value;
    put<float, K>(out + i, get<float, K>(x + i));
  });
}

// K float16 inputs widened a lane block at a time for lane_sum_staged / lane_sum2_staged: as the
// stage, it fills its buffers with values [b, e) of each input; at(k, i) is input k's value i of
// the current block.
template <int K>
struct WidenedBlocks {
  const half_t* src[K];
  alignas(64) float buf[K][kLaneBlock];  // (left uninitialised: no aggregate initialisation)
  int64_t base = 0;
  template <class... P>
  explicit WidenedBlocks(P... inputs) : src{inputs...} {}
  explicit WidenedBlocks(const half_t* const (&inputs)[K]) { std::copy(inputs, inputs + K, src); }
  void operator()(int64_t b, int64_t e) {
    base = b;
    for (int k = 0; k < K; ++k) widen_run(src[k] + b, buf[k], e - b);
  }
  float at(int k, int64_t i) const { return buf[k][i - base]; }
};

// K inputs read where they lie, with WidenedBlocks' interface (its stage does nothing).
template <class T, int K>
struct InPlaceInputs {
  const T* src[K];
  template <class... P>
  explicit InPlaceInputs(P... inputs) : src{inputs...} {}
  explicit InPlaceInputs(const T* const (&inputs)[K]) { std::copy(inputs, inputs + K, src); }
  void operator()(int64_t, int64_t) const {}
  acc_t<T> at(int k, int64_t i) const { return load<acc_t<T>>(src[k][i]); }
};

// The inputs of a lane sum over T values, as the sum's stage and at(k, i): float16 widened a block
// at a time where the hardware converts it (WidenedBlocks), every other type read in place. One
// loop body then serves every element type.
template <class T, int K>
using SummedInputs = std::conditional_t<is_hardware_half<T>, WidenedBlocks<K>, InPlaceInputs<T, K>>;

// n float16 values widened into this thread's scratch buffer `slot` (0 or 1), valid until the next
// call with that slot: for the column walks over a block of channels-last rows, which would convert
// each value in software.
inline const float* widen_to_scratch(const half_t* x, int64_t n, int slot) {
  thread_local std::vector<float> scratch[2];
  std::vector<float>& buf = scratch[slot];
  if (buf.size() < size_t(n)) buf.resize(size_t(n));
  widen_run(x, buf.data(), n);
  return buf.data();
}

}  // namespace normkit::cpu::NK_ISA

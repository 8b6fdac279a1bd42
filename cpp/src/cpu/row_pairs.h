// LayerNorm/RMSNorm rows of bfloat16 on AVX-512 and AVX2 in even/odd vector pairs (vector_convert.h
// load_bf16_pairs): x, dy and dx kBf16Pair values at a time as their even and their odd values, the weight,
// bias and the backward's partials in that same order (split_in_pair_order), so that no value
// crosses lanes. The per-element formulas (normkit/math.h) and their order are the other loops', so
// the values are the same bit for bit. Ranges [i0, i1) are whole pairs (multiples of kBf16Pair).
#pragma once
#include <cstdint>

#include "cpu/vector_convert.h"
#include "normkit/math.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

#if NK_BF16_PAIRS
// The forward of one row: y = row_norm_apply(x, mean, rstd, w, b), ws/bs the weight/bias in pair order
// (y streamed when Stream: store_bf16_pairs).
template <bool Stream = false>
inline void row_apply_in_pairs(const bfloat16_t* x, bfloat16_t* y, int64_t i0, int64_t i1, float mean, float rstd,
                               const float* ws, const float* bs) {
  constexpr int64_t kOdd = kBf16Pair / 2, L = kFloatLanes;
  const FloatVec m = splat<float, L>(mean), s = splat<float, L>(rstd);
  for (int64_t i = i0; i < i1; i += kBf16Pair) {
    FloatVec xe, xo;
    load_bf16_pairs(x + i, xe, xo);
    const FloatVec even = math::row_norm_apply(xe, m, s, get<float, L>(ws + i), get<float, L>(bs + i));
    const FloatVec odd = math::row_norm_apply(xo, m, s, get<float, L>(ws + i + kOdd), get<float, L>(bs + i + kOdd));
    store_bf16_pairs<Stream>(y + i, even, odd);
  }
}

// Pass 2 of the backward for R rows (rows[k]: its x, dy, mean, rs, mean_g, mean_gx): dx of each row
// unless dx is null, and each row's terms added in row order to the partials pw (dweight) and pb
// (dbias) unless null, all in pair order (dx streamed when Stream: store_bf16_pairs). ws: the weight
// in pair order.
template <int R, bool Stream = false, class Row>
inline void row_pass2_in_pairs(const Row* rows, bfloat16_t* const* dx, const float* ws, float* pw, float* pb,
                               int64_t i0, int64_t i1) {
  constexpr int64_t kOdd = kBf16Pair / 2;
  FloatVec mean[R], rs[R], mean_g[R], mean_gx[R];
  for (int k = 0; k < R; ++k) {
    mean[k] = splat<float, kFloatLanes>(rows[k].mean);
    rs[k] = splat<float, kFloatLanes>(rows[k].rs);
    mean_g[k] = splat<float, kFloatLanes>(rows[k].mean_g);
    mean_gx[k] = splat<float, kFloatLanes>(rows[k].mean_gx);
  }
  for (int64_t i = i0; i < i1; i += kBf16Pair) {
    const FloatVec w[2] = {get<float, kFloatLanes>(ws + i), get<float, kFloatLanes>(ws + i + kOdd)};
    FloatVec sw[2] = {}, sb[2] = {};
    if (pw) sw[0] = get<float, kFloatLanes>(pw + i), sw[1] = get<float, kFloatLanes>(pw + i + kOdd);
    if (pb) sb[0] = get<float, kFloatLanes>(pb + i), sb[1] = get<float, kFloatLanes>(pb + i + kOdd);
    for (int k = 0; k < R; ++k) {
      FloatVec g[2], xh[2], d[2];
      load_bf16_pairs(rows[k].dy + i, g[0], g[1]);
      load_bf16_pairs(rows[k].x + i, xh[0], xh[1]);
      for (int h = 0; h < 2; ++h) {
        xh[h] = (xh[h] - mean[k]) * rs[k];
        d[h] = math::row_norm_dx(g[h] * w[h], xh[h], rs[k], mean_g[k], mean_gx[k]);
        sw[h] = math::mul_add(g[h], xh[h], sw[h]);
        sb[h] += g[h];
      }
      if (dx) store_bf16_pairs<Stream>(dx[k] + i, d[0], d[1]);
    }
    if (pw) put<float, kFloatLanes>(pw + i, sw[0]), put<float, kFloatLanes>(pw + i + kOdd, sw[1]);
    if (pb) put<float, kFloatLanes>(pb + i, sb[0]), put<float, kFloatLanes>(pb + i + kOdd, sb[1]);
  }
}
#endif

}  // namespace normkit::cpu::NK_ISA

// LocalResponseNorm on the CPU: one fused pass per direction (see detail/lrn_args.h for the math).
//
// Every output element depends only on the inputs of its own (n, position) column of channels, and
// each is computed by one fixed sequence of operations (window sums added in ascending channel
// order, no running sums), so results never depend on the thread count or the work partition.
//
// Channels first (NCS): a unit of work is a block of B contiguous positions of one sample; per
// channel, the window's rows are summed element-wise, vectorized over the positions with the sums of
// a tile of positions in registers (the `size` rows stay in L1). The backward keeps p = s^-beta and
// t = g a p / s for all C channels of the block (2 C B values, about 64 KB) and then sums t over the
// transposed windows.
// Channels last (NSC): a unit is a run of positions; per position, the C channels are loaded into a
// zero-padded buffer so that every window sum is a fixed-length, vectorizable loop over channels
// (the zeros of the padding leave the sums exact: x + 0 == x).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/vector_width.h"
#include "normkit/math.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::Layout;
using detail::LrnBackwardArgs;
using detail::LrnForwardArgs;
using detail::LrnParams;
using detail::LrnShape;

constexpr int64_t kBlockValues = 1 << 13;   // channels first: C x B accumulation values per block
constexpr int64_t kTaskElements = 1 << 15;  // elements per parallel task, to amortise the hand-off

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class A>
struct Coeffs {
  A alpha_over_size, k, beta, coef;
  explicit Coeffs(const LrnParams& p)
      : alpha_over_size(A(p.alpha / double(p.size))),
        k(A(p.k)),
        beta(A(p.beta)),
        coef(A(2.0 * p.alpha * p.beta / double(p.size))) {}
};

bool fast_beta(const LrnParams& p) { return p.beta == 0.75; }

// Channels first: positions per block, a function of C alone.
int64_t ncs_block(const LrnShape& s) {
  return std::min(s.S, std::clamp<int64_t>(kBlockValues / std::max<int64_t>(s.C, 1), 16, 1024));
}

// The clipped window of channel c (lo..hi inclusive).
inline void window(int64_t c, int64_t size, int64_t C, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, math::lrn_window_lo(c, size));
  hi = std::min<int64_t>(C - 1, math::lrn_window_hi(c, size));
}
inline void twindow(int64_t j, int64_t size, int64_t C, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, math::lrn_twindow_lo(j, size));
  hi = std::min<int64_t>(C - 1, math::lrn_twindow_hi(j, size));
}

// Window sums over channels lo..hi, added in ascending channel order starting from zero, of
// x[c * stride + i]^2 (kSquare) or x[c * stride + i], for kWidth positions at a time whose sums stay
// in registers (a sum array in memory, stored and reloaded once per window channel, made the sums
// cost more than the rest of the op). Positions past the last whole tile take the scalar loop with
// the same sequence of operations, so every position rounds alike.
// sum plus one window term: v^2 (kSquare, fused into the add) or v. Every window sum adds through
// this, so the tiles, the scalar positions and the padded channels-last sums round alike.
template <bool kSquare, class V>
inline V window_add(V sum, V v) {
  if constexpr (kSquare) {
    return math::mul_add(v, v, sum);
  } else {
    return sum + v;
  }
}

template <class A>
struct WindowTile {
  using V = typename NK_ISA::Vec<A>::type;  // (vector_width.h; four 64-byte lines a tile in every build)
  static constexpr int64_t kLanes = NK_ISA::Vec<A>::kLanes, kWidth = 4 * 64 / int64_t(sizeof(A)),
                           kVecs = kWidth / kLanes;
};

template <bool kSquare, class T, class A>
inline void tile_window_sum(const T* x, int64_t stride, int64_t lo, int64_t hi, A* out) {
  using Tile = WindowTile<A>;
  typename Tile::V sum[Tile::kVecs] = {};
  for (int64_t c = lo; c <= hi; ++c) {
    const T* xr = x + c * stride;
    alignas(64) A v[Tile::kWidth];
#pragma omp simd
    for (int64_t j = 0; j < Tile::kWidth; ++j) v[j] = load<A>(xr[j]);
    for (int q = 0; q < Tile::kVecs; ++q) {
      typename Tile::V t;
      std::memcpy(&t, v + q * Tile::kLanes, sizeof(t));
      sum[q] = window_add<kSquare>(sum[q], t);
    }
  }
  std::memcpy(out, sum, sizeof(sum));
}

template <bool kSquare, class T, class A>
inline A window_sum_at(const T* x, int64_t stride, int64_t lo, int64_t hi, int64_t i) {
  A sum = 0;
  for (int64_t c = lo; c <= hi; ++c) {
    const A v = load<A>(x[c * stride + i]);
    sum = window_add<kSquare>(sum, v);
  }
  return sum;
}

// fn(i, sum_i) for i < len, sum_i the window sum at position i.
template <bool kSquare, class T, class A, class Fn>
inline void for_window_sums(const T* x, int64_t stride, int64_t lo, int64_t hi, int64_t len, Fn&& fn) {
  constexpr int64_t W = WindowTile<A>::kWidth;
  int64_t i0 = 0;
  for (; i0 + W <= len; i0 += W) {
    alignas(64) A sum[W];
    tile_window_sum<kSquare>(x + i0, stride, lo, hi, sum);
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) fn(i0 + j, sum[j]);
  }
  for (int64_t i = i0; i < len; ++i) fn(i, window_sum_at<kSquare, T, A>(x, stride, lo, hi, i));
}

// ---- channels first -----------------------------------------------------------------------------

template <class T, bool kFast>
void forward_ncs(const LrnForwardArgs& a) {
  using A = acc_t<T>;
  const LrnShape& sh = a.shape;
  const Coeffs<A> k(a.p);
  const int64_t C = sh.C, S = sh.S, size = a.p.size, B = ncs_block(sh), blocks = ceil_div(S, B);
  parallel_for(sh.N * blocks, std::max<int64_t>(1, kTaskElements / (C * B)), [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / blocks, s0 = (u % blocks) * B, len = std::min(B, S - s0);
      const T* x = static_cast<const T*>(a.x) + n * C * S + s0;
      T* y = static_cast<T*>(a.y) + n * C * S + s0;
      for (int64_t c = 0; c < C; ++c) {
        int64_t lo, hi;
        window(c, size, C, lo, hi);
        const T* xc = x + c * S;
        T* yc = y + c * S;
        for_window_sums<true, T, A>(x, S, lo, hi, len, [&](int64_t i, A sum) {
          const A s = math::lrn_scale(sum, k.alpha_over_size, k.k);
          yc[i] = store<T>(math::lrn_apply(load<A>(xc[i]), math::lrn_pow_neg(s, k.beta, kFast)));
        });
      }
    }
  });
}

template <class T, bool kFast>
void backward_ncs(const LrnBackwardArgs& a) {
  using A = acc_t<T>;
  const LrnShape& sh = a.shape;
  const Coeffs<A> k(a.p);
  const int64_t C = sh.C, S = sh.S, size = a.p.size, B = ncs_block(sh), blocks = ceil_div(S, B);
  parallel_for(sh.N * blocks, std::max<int64_t>(1, kTaskElements / (C * B)), [&](int64_t u0, int64_t u1) {
    std::vector<A> pbuf(static_cast<size_t>(C * B)), tbuf(static_cast<size_t>(C * B));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t n = u / blocks, s0 = (u % blocks) * B, len = std::min(B, S - s0);
      const T* x = static_cast<const T*>(a.x) + n * C * S + s0;
      const T* dy = static_cast<const T*>(a.dy) + n * C * S + s0;
      T* dx = static_cast<T*>(a.dx) + n * C * S + s0;
      // Pass 1: p_c = s_c^-beta and t_c = g_c a_c p_c / s_c for every channel of the block.
      for (int64_t c = 0; c < C; ++c) {
        int64_t lo, hi;
        window(c, size, C, lo, hi);
        const T* xc = x + c * S;
        const T* gc = dy + c * S;
        A* pc = pbuf.data() + c * B;
        A* tc = tbuf.data() + c * B;
        for_window_sums<true, T, A>(x, S, lo, hi, len, [&](int64_t i, A sum) {
          const A s = math::lrn_scale(sum, k.alpha_over_size, k.k);
          const A p = math::lrn_pow_neg(s, k.beta, kFast);
          pc[i] = p;
          tc[i] = math::lrn_backward_term(load<A>(gc[i]), load<A>(xc[i]), p, s);
        });
      }
      // Pass 2: dx_j = g_j p_j - coef a_j * (sum of t over the channels whose window holds j).
      for (int64_t j = 0; j < C; ++j) {
        int64_t lo, hi;
        twindow(j, size, C, lo, hi);
        const T* xj = x + j * S;
        const T* gj = dy + j * S;
        const A* pj = pbuf.data() + j * B;
        T* dxj = dx + j * S;
        for_window_sums<false, A, A>(tbuf.data(), B, lo, hi, len, [&](int64_t i, A tsum) {
          dxj[i] = store<T>(math::lrn_dx(load<A>(gj[i]), load<A>(xj[i]), pj[i], k.coef, tsum));
        });
      }
    }
  });
}

// ---- channels last ------------------------------------------------------------------------------

// Window reach below and above a channel, capped at C - 1: a longer reach is clipped to the same
// channels anyway, and the cap bounds the padded buffers by 3 C.
struct Reach {
  int64_t below, above;
};
Reach forward_reach(int64_t size, int64_t C) {
  return {std::min<int64_t>(size / 2, C - 1), std::min<int64_t>((size - 1) / 2, C - 1)};
}

// out[c] = sum_{d = 0}^{width - 1} pad[c + d] * (square ? pad[c + d] : 1), c < C: the window sum in
// ascending channel order (padding zeros included, which leaves it exact).
template <class A, bool kSquare>
inline void padded_window_sum(const A* pad, int64_t C, int64_t width, A* out) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) out[c] = A(0);
  for (int64_t d = 0; d < width; ++d) {
    const A* v = pad + d;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) out[c] = window_add<kSquare>(out[c], v[c]);
  }
}

template <class T, bool kFast>
void forward_nsc(const LrnForwardArgs& a) {
  using A = acc_t<T>;
  const LrnShape& sh = a.shape;
  const Coeffs<A> k(a.p);
  const int64_t C = sh.C;
  const Reach r = forward_reach(a.p.size, C);
  const int64_t width = r.below + r.above + 1;
  parallel_for(sh.N * sh.S, std::max<int64_t>(1, kTaskElements / C), [&](int64_t q0, int64_t q1) {
    std::vector<A> pad(static_cast<size_t>(C + width - 1), A(0)), acc(static_cast<size_t>(C));
    A* xa = pad.data() + r.below;  // xa[c] = a_c; zeros on either side
    A* sum = acc.data();
    for (int64_t q = q0; q < q1; ++q) {
      const T* x = static_cast<const T*>(a.x) + q * C;
      T* y = static_cast<T*>(a.y) + q * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) xa[c] = load<A>(x[c]);
      padded_window_sum<A, true>(pad.data(), C, width, sum);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const A s = math::lrn_scale(sum[c], k.alpha_over_size, k.k);
        y[c] = store<T>(math::lrn_apply(xa[c], math::lrn_pow_neg(s, k.beta, kFast)));
      }
    }
  });
}

template <class T, bool kFast>
void backward_nsc(const LrnBackwardArgs& a) {
  using A = acc_t<T>;
  const LrnShape& sh = a.shape;
  const Coeffs<A> k(a.p);
  const int64_t C = sh.C;
  const Reach r = forward_reach(a.p.size, C);
  const int64_t width = r.below + r.above + 1;  // the transposed window swaps below and above
  parallel_for(sh.N * sh.S, std::max<int64_t>(1, kTaskElements / C), [&](int64_t q0, int64_t q1) {
    std::vector<A> xpad(static_cast<size_t>(C + width - 1), A(0)), tpad(static_cast<size_t>(C + width - 1), A(0));
    std::vector<A> acc(static_cast<size_t>(C)), pbuf(static_cast<size_t>(C));
    A* xa = xpad.data() + r.below;
    A* ta = tpad.data() + r.above;
    A* sum = acc.data();
    A* p = pbuf.data();
    for (int64_t q = q0; q < q1; ++q) {
      const T* x = static_cast<const T*>(a.x) + q * C;
      const T* dy = static_cast<const T*>(a.dy) + q * C;
      T* dx = static_cast<T*>(a.dx) + q * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) xa[c] = load<A>(x[c]);
      padded_window_sum<A, true>(xpad.data(), C, width, sum);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const A s = math::lrn_scale(sum[c], k.alpha_over_size, k.k);
        p[c] = math::lrn_pow_neg(s, k.beta, kFast);
        ta[c] = math::lrn_backward_term(load<A>(dy[c]), xa[c], p[c], s);
      }
      padded_window_sum<A, false>(tpad.data(), C, width, sum);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dx[c] = store<T>(math::lrn_dx(load<A>(dy[c]), xa[c], p[c], k.coef, sum[c]));
    }
  });
}

template <class T, bool kFast>
void forward(const LrnForwardArgs& a) {
  if (a.shape.layout == Layout::NCS) {
    forward_ncs<T, kFast>(a);
  } else {
    forward_nsc<T, kFast>(a);
  }
}

template <class T, bool kFast>
void backward(const LrnBackwardArgs& a) {
  if (a.shape.layout == Layout::NCS) {
    backward_ncs<T, kFast>(a);
  } else {
    backward_nsc<T, kFast>(a);
  }
}

}  // namespace

void local_response_norm_forward(const LrnForwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fast_beta(a.p)) {
      forward<T, true>(a);
    } else {
      forward<T, false>(a);
    }
  });
}

void local_response_norm_backward(const LrnBackwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (fast_beta(a.p)) {
      backward<T, true>(a);
    } else {
      backward<T, false>(a);
    }
  });
}

}  // namespace normkit::cpu::NK_ISA

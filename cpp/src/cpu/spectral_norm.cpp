// SpectralNorm on the CPU (detail/spectral_norm_args.h). W is H compact rows of K values.
//   W v:    one lane_sum per row, rows in parallel.
//   W^T u:  fixed blocks of rows (spectral_norm_row_block) each accumulate a partial vector over
//           their rows in order, blocks in parallel; the partials are then summed in block order.
// Every sum has an order fixed by the shape alone, so results never depend on the thread count.
#include <algorithm>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "normkit/parallel.h"
#include "normkit/spectral_norm_math.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::SpectralNormBackwardArgs;
using detail::SpectralNormForwardArgs;
using detail::SpectralNormWork;

constexpr int64_t kTaskElements = 1 << 15;  // elements per parallel task, to amortise the hand-off

int64_t grain_of(int64_t K) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(K, 1)); }

// out[i] = sum_j W[i, j] x[j].
template <class T, class A>
void mat_vec(const T* W, const A* x, A* out, int64_t H, int64_t K) {
  parallel_for(H, grain_of(K), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* row = W + i * K;
      out[i] = lane_sum<A>(K, [&](int64_t j, A& p, A& q) {
        p = load<A>(row[j]);
        q = x[j];
      });
    }
  });
}

// out[j] = sum_i x[i] W[i, j], through per-block partials (partial: num_blocks x K).
template <class T, class A>
void mat_t_vec(const T* W, const A* x, A* partial, A* out, int64_t H, int64_t K) {
  const int64_t rb = detail::spectral_norm_row_block(H), nb = detail::spectral_norm_num_blocks(H);
  parallel_for(nb, std::max<int64_t>(1, kTaskElements / std::max<int64_t>(rb * K, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      A* p = partial + b * K;
      std::fill(p, p + K, A(0));
      const int64_t i1 = std::min(H, (b + 1) * rb);
      for (int64_t i = b * rb; i < i1; ++i) {
        const T* row = W + i * K;
        const A xi = x[i];
#pragma omp simd
        for (int64_t j = 0; j < K; ++j) p[j] += xi * load<A>(row[j]);
      }
    }
  });
  parallel_for(K, 1 << 12, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) out[j] = partial[j];
    for (int64_t b = 1; b < nb; ++b) {
      const A* p = partial + b * K;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) out[j] += p[j];
    }
  });
}

// dst = normalize(src) = src / max(||src||, eps), rounded to T element by element.
template <class T, class A>
void normalize_into(const A* src, A* dst, int64_t n, A eps) {
  const A denom = math::sn_denom(lane_sum_of_squares<A>(n, [&](int64_t i) { return src[i]; }), eps);
  for (int64_t i = 0; i < n; ++i) dst[i] = math::sn_normalized<T>(src[i], denom);
}

template <class T>
void estimate(const SpectralNormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  const SpectralNormWork L{H, K};
  A* work = static_cast<A*>(a.work);
  A *u = work + L.u(), *v = work + L.v(), *wv = work + L.wv(), *wtu = work + L.wtu();
  const T* W = static_cast<const T*>(a.w);
  const T* u_in = static_cast<const T*>(a.u);
  const T* v_in = static_cast<const T*>(a.v);
  for (int64_t i = 0; i < H; ++i) u[i] = load<A>(u_in[i]);
  for (int64_t j = 0; j < K; ++j) v[j] = load<A>(v_in[j]);
  const A eps = A(a.eps);
  A sigma;
  if (a.iterations == 0) {
    mat_vec(W, v, wv, H, K);
    sigma = lane_sum<A>(H, [&](int64_t i, A& p, A& q) {
      p = u[i];
      q = wv[i];
    });
  } else {
    for (int64_t it = 0; it < a.iterations; ++it) {
      mat_vec(W, v, wv, H, K);
      normalize_into<T>(wv, u, H, eps);
      mat_t_vec(W, u, work + L.partial(), wtu, H, K);
      normalize_into<T>(wtu, v, K, eps);
    }
    // u^T W v = (W^T u) . v: the last product already holds W^T u.
    sigma = lane_sum<A>(K, [&](int64_t j, A& p, A& q) {
      p = wtu[j];
      q = v[j];
    });
  }
  work[L.sigma()] = sigma;
}

template <class T>
void apply(const SpectralNormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  const SpectralNormWork L{H, K};
  const A* work = static_cast<const A*>(a.work);
  const A sigma = work[L.sigma()];
  if (a.iterations > 0) {
    T* u = static_cast<T*>(a.u);
    T* v = static_cast<T*>(a.v);
    for (int64_t i = 0; i < H; ++i) u[i] = store<T>(work[L.u() + i]);
    for (int64_t j = 0; j < K; ++j) v[j] = store<T>(work[L.v() + j]);
  }
  if (a.sigma) *static_cast<A*>(a.sigma) = sigma;
  if (!a.y) return;
  const T* W = static_cast<const T*>(a.w);
  T* y = static_cast<T*>(a.y);
  parallel_for(H * K, kTaskElements, [&](int64_t e0, int64_t e1) {
#pragma omp simd
    for (int64_t e = e0; e < e1; ++e) y[e] = store<T>(math::sn_apply(load<A>(W[e]), sigma));
  });
}

template <class T>
void backward(const SpectralNormBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t H = a.shape.H, K = a.shape.K;
  const T* W = static_cast<const T*>(a.w);
  const T* dy = static_cast<const T*>(a.dy);
  T* dw = static_cast<T*>(a.dw);
  A* row_dot = static_cast<A*>(a.work);
  parallel_for(H, grain_of(K), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      row_dot[i] = lane_sum<A>(K, [&](int64_t j, A& p, A& q) {
        p = load<A>(dy[i * K + j]);
        q = load<A>(W[i * K + j]);
      });
  });
  const A dot = math::pairwise_sum<A>(H, [&](int64_t i) { return row_dot[i]; });
  const A sigma = *static_cast<const A*>(a.sigma);
  const A coef = math::sn_coef(dot, sigma);
  std::vector<A> v(static_cast<size_t>(K));
  const T* v_in = static_cast<const T*>(a.v);
  for (int64_t j = 0; j < K; ++j) v[size_t(j)] = load<A>(v_in[j]);
  const T* u_in = static_cast<const T*>(a.u);
  parallel_for(H, grain_of(K), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const A ui = load<A>(u_in[i]);
      const T* dyr = dy + i * K;
      T* dwr = dw + i * K;
#pragma omp simd
      for (int64_t j = 0; j < K; ++j) dwr[j] = store<T>(math::sn_dw(load<A>(dyr[j]), ui, v[size_t(j)], sigma, coef));
    }
  });
}

}  // namespace

void spectral_norm_estimate(const SpectralNormForwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) { estimate<decltype(tag)>(a); });
}

void spectral_norm_apply(const SpectralNormForwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) { apply<decltype(tag)>(a); });
}

void spectral_norm_backward(const SpectralNormBackwardArgs& a) {
  if (a.shape.numel() == 0) return;
  dispatch_float(a.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace normkit::cpu::NK_ISA

// WeightNorm on the CPU: rows in parallel (detail/weight_norm_args.h). Each row's sums are lane_sums
// of a fixed order that depends only on R, so results never depend on the thread count.
#include <algorithm>

#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "normkit/math.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::WeightNormBackwardArgs;
using detail::WeightNormForwardArgs;

constexpr int64_t kTaskElements = 1 << 15;  // elements per parallel task, to amortise the hand-off

int64_t grain_of(int64_t R) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(R, 1)); }

template <class T>
void forward(const WeightNormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t D = a.shape.D, R = a.shape.R;
  parallel_for(D, grain_of(R), [&](int64_t d0, int64_t d1) {
    for (int64_t d = d0; d < d1; ++d) {
      const T* v = static_cast<const T*>(a.v) + d * R;
      T* w = static_cast<T*>(a.w) + d * R;
      const A sq = lane_sum_of_squares<A>(R, [&](int64_t i) { return load<A>(v[i]); });
      const A n = math::weight_norm_norm(sq);
      static_cast<A*>(a.norms)[d] = n;
      const A scale = math::weight_norm_scale(load<A>(static_cast<const T*>(a.g)[d]), n);
#pragma omp simd
      for (int64_t i = 0; i < R; ++i) w[i] = store<T>(load<A>(v[i]) * scale);
    }
  });
}

template <class T>
void backward(const WeightNormBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t D = a.shape.D, R = a.shape.R;
  parallel_for(D, grain_of(R), [&](int64_t d0, int64_t d1) {
    for (int64_t d = d0; d < d1; ++d) {
      const T* v = static_cast<const T*>(a.v) + d * R;
      const T* dw = static_cast<const T*>(a.dw) + d * R;
      T* dv = static_cast<T*>(a.dv) + d * R;
      const A dot = lane_sum<A>(R, [&](int64_t i, A& p, A& q) {
        p = load<A>(dw[i]);
        q = load<A>(v[i]);
      });
      const A n = static_cast<const A*>(a.norms)[d];
      static_cast<T*>(a.dg)[d] = store<T>(math::weight_norm_dg(dot, n));
      const A scale = math::weight_norm_scale(load<A>(static_cast<const T*>(a.g)[d]), n);
      const A coef = math::weight_norm_coef(dot, n);
#pragma omp simd
      for (int64_t i = 0; i < R; ++i)
        dv[i] = store<T>(math::weight_norm_dv(load<A>(dw[i]), load<A>(v[i]), scale, coef));
    }
  });
}

}  // namespace

void weight_norm_forward(const WeightNormForwardArgs& a) {
  if (a.shape.D == 0) return;
  dispatch_float(a.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void weight_norm_backward(const WeightNormBackwardArgs& a) {
  if (a.shape.D == 0) return;
  dispatch_float(a.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace normkit::cpu::NK_ISA

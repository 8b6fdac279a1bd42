// Vectorizable reductions for the CPU kernels. A single accumulator chains every add on the previous
// one (latency bound, about 4 GB/s); kLanes independent partial sums let the compiler keep several
// vector accumulators in flight. The summation order depends only on n, never on threads.
#pragma once
#include <cstdint>
#include <utility>

namespace normkit::cpu {

template <class A> constexpr int kLanes = 64;       // float: 4 zmm / 8 ymm accumulators
template <> constexpr int kLanes<double> = 32;

template <class A, int L>
inline A tree_sum(A (&acc)[L]) {
  for (int w = L / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// Sum of f(i) for i in [0, n).
template <class A, class F>
inline A lane_sum(int64_t n, F&& f) {
  constexpr int L = kLanes<A>;
  A acc[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
#pragma omp simd
    for (int j = 0; j < L; ++j) acc[j] += f(i + j);
  }
  for (int j = 0; i + j < n; ++j) acc[j] += f(i + j);
  return tree_sum(acc);
}

// Two sums in one pass: f(i, &a, &b) returns its two terms through a and b.
template <class A, class F>
inline std::pair<A, A> lane_sum2(int64_t n, F&& f) {
  constexpr int L = kLanes<A>;
  A acc0[L] = {}, acc1[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
#pragma omp simd
    for (int j = 0; j < L; ++j) {
      A a, b;
      f(i + j, a, b);
      acc0[j] += a;
      acc1[j] += b;
    }
  }
  for (int j = 0; i + j < n; ++j) {
    A a, b;
    f(i + j, a, b);
    acc0[j] += a;
    acc1[j] += b;
  }
  return {tree_sum(acc0), tree_sum(acc1)};
}

}  // namespace normkit::cpu

// Vectorizable reductions for the CPU kernels. A single accumulator chains every add on the previous
// one (latency bound, about 4 GB/s); kLanes independent partial sums let the compiler keep several
// vector accumulators in flight. The summation order depends only on n, never on threads.
#pragma once
#include <cstdint>
#include <utility>

// Per-ISA namespace: these inline helpers are compiled once per instruction set, and one name with
// three bodies would let the linker hand AVX-512 code to the baseline kernels.
namespace normkit::cpu::NK_ISA {

template <class A> constexpr int kLanes = 64;       // float: 4 zmm / 8 ymm accumulators
template <> constexpr int kLanes<double> = 32;

// acc[0] after the pairwise folds acc[j] += acc[j + w] for w = L/2, L/4, ..., 1. One level per
// instantiation: each level is a fixed-length loop the compiler vectorizes (a nested loop over w
// compiled to ~60 scalar adds with their loop control, which cost more than summing a short row).
template <class A, int L>
inline A tree_sum(A (&acc)[L]) {
  if constexpr (L == 1) {
    return acc[0];
  } else {
    static_assert(L % 2 == 0, "lane counts are powers of two");
#pragma omp simd
    for (int j = 0; j < L / 2; ++j) acc[j] += acc[j + L / 2];
    return tree_sum<A, L / 2>(reinterpret_cast<A(&)[L / 2]>(acc));
  }
}

// Sum of f(i) for i in [0, n) over L lanes: term i < n - n % L goes to lane i % L, the lanes are
// folded by tree_sum, and the remainder is added in order to its own accumulator (indexing the lane
// array with a run-time index would make the compiler keep it in memory instead of registers).
template <class A, int L, class F>
inline A lane_sum_over(int64_t n, F&& f) {
  A acc[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
#pragma omp simd
    for (int j = 0; j < L; ++j) acc[j] += f(i + j);
  }
  A tail = 0;
  for (; i < n; ++i) tail += f(i);
  return tree_sum(acc) + tail;
}

template <class A, int L, class F>
inline std::pair<A, A> lane_sum2_over(int64_t n, F&& f) {
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
  A tail0 = 0, tail1 = 0;
  for (; i < n; ++i) {
    A a, b;
    f(i, a, b);
    tail0 += a;
    tail1 += b;
  }
  return {tree_sum(acc0) + tail0, tree_sum(acc1) + tail1};
}

// Short runs (fewer than 4 kLanes values: a 7x7 or 10x10 plane, a short row) use a quarter of the
// lanes, one 64-byte vector, so that at most 15 values go to the scalar remainder, a chain of
// dependent adds (with 64 lanes, all 49 values of a 7x7 plane did). The lane count is a function of n
// alone, so results still never depend on the thread count.
template <class A, class F>
inline A lane_sum(int64_t n, F&& f) {
  constexpr int L = kLanes<A>;
  return n >= 4 * L ? lane_sum_over<A, L>(n, f) : lane_sum_over<A, L / 4>(n, f);
}

// Two sums in one pass: f(i, &a, &b) returns its two terms through a and b.
template <class A, class F>
inline std::pair<A, A> lane_sum2(int64_t n, F&& f) {
  constexpr int L = kLanes<A>;
  return n >= 4 * L ? lane_sum2_over<A, L>(n, f) : lane_sum2_over<A, L / 4>(n, f);
}

}  // namespace normkit::cpu::NK_ISA

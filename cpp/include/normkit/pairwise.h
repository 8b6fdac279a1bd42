// Pairwise (cascade) reduction of a sequence that arrives one value at a time: plain sums here,
// moments merged with Chan's formula in math.h (PairwiseMoments), rows of partial sums added in
// place in cpu/pairwise_rows.h. A running merge rounds every new value against the whole result, an
// error that grows with the number of values: 8192 planes of 8 values merged one after the other lost
// 1e-3 of a variance, and 2^16 blocks of a long row 1e-5 of its mean of squares. Here a binary counter
// keeps at most one partial per power of two, so the values meet in a fixed binary tree and the
// error grows with log2 of their number. The tree depends on the number of values alone, never on
// the thread count.
#pragma once
#include <cstdint>
#include <new>

#include "normkit/dtype.h"

namespace normkit::math {

struct SumMerge {
  template <class V>
  NK_HD V operator()(const V& a, const V& b) const {
    return a + b;
  }
};

// Up to 2^kDepth - 1 values: add() them in order, then result(). The partials are stored uninitialized
// (only part[0, depth) is ever read): zero-filling 40 slots cost more than the moments of a 16-value
// LayerNorm row (2x slower on [262144, 16]).
template <class V, class Merge, int kDepth = 40>
struct Pairwise {
  union Slot {
    V v;
    NK_HD Slot() {}
  };
  Slot part[kDepth];
  int depth = 0;
  int64_t count = 0;
  Merge merge;

  NK_HD explicit Pairwise(Merge m = Merge()) : merge(m) {}

  // Value number `count`: merged with the partials of the trailing one bits of its index (the
  // subtrees it completes), earlier partial first.
  NK_HD void add(V v) {
    for (int64_t c = count++; c & 1; c >>= 1) v = merge(part[--depth].v, v);
    new (&part[depth++].v) V(v);
  }
  // The partials, smallest (latest) last, merged from the latest up; `empty` without values.
  NK_HD V result(V empty = V()) const {
    if (depth == 0) return empty;
    V r = part[depth - 1].v;
    for (int i = depth - 2; i >= 0; --i) r = merge(part[i].v, r);
    return r;
  }
};

template <class A>
using PairwiseSum = Pairwise<A, SumMerge>;

// The pairwise reduction of get(0), ..., get(n - 1).
template <class V, class Merge, class Get>
NK_HD V pairwise(int64_t n, Get&& get, V empty = V()) {
  // One value: what the counter gives, without setting it up (BatchNorm's running-statistics update
  // sums one statistic per channel: [4,2048] channels-last training forward 48-51 -> 34-37 us).
  if (n == 1) return get(0);
  Pairwise<V, Merge> p;
  for (int64_t i = 0; i < n; ++i) p.add(get(i));
  return p.result(empty);
}
template <class A, class Get>
NK_HD A pairwise_sum(int64_t n, Get&& get) {
  return pairwise<A, SumMerge>(n, get, A(0));
}

}  // namespace normkit::math

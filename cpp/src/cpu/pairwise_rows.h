// Column sums of rows of partial sums (one row per block of a reduction, `width` columns each),
// pairwise in row order (normkit/pairwise.h), a row at a time: each merge adds a later row into an
// earlier one in place, in address order (a vector loop). Per column these are the additions of
// math::pairwise_sum over the rows; summing a column at a time instead reads the partials with a
// stride of a whole row, one cache line per value (LayerNorm [2048,1024] backward: its parameter
// gradients cost as much as its dx pass that way). The rows are the caller's scratch: they are
// overwritten.
#pragma once
#include <cstdint>

#include "normkit/pairwise.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// row_of(b): row b's first column, b in [0, rows). Returns the sums (inside one of the rows), or
// nullptr for no rows.
template <class A, class RowOf>
const A* pairwise_row_sums(int64_t rows, int64_t width, RowOf&& row_of) {
  auto add_rows = [width](A* earlier, A* later) {
#pragma omp simd
    for (int64_t c = 0; c < width; ++c) earlier[c] = earlier[c] + later[c];
    return earlier;
  };
  math::Pairwise<A*, decltype(add_rows)> sums(add_rows);
  for (int64_t b = 0; b < rows; ++b) sums.add(row_of(b));
  return sums.result(nullptr);
}

}  // namespace normkit::cpu::NK_ISA

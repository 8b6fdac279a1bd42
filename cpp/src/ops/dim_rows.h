// A weight seen as compact rows along one dimension (WeightNorm, SpectralNorm): the kernels take
// `dim` first. For dim <= 0 (the first dimension, or WeightNorm's whole tensor) that is the array
// itself; for any other dim, inputs are copied once into dim-first order and outputs are written into
// a scratch buffer that finish_rows copies back into the caller's layout (weights are small).
#pragma once
#include <memory>

#include "normkit/tensor.h"

namespace normkit::ops {

// `dim` in [-ndim, ndim) (negatives count from the end) as an index in [0, ndim); a ValueError naming
// t_arg and its shape otherwise.
int64_t normalize_dim(const TensorView& t, const char* t_arg, int64_t dim);
// The view of t with `dim` first (the identity for dim <= 0).
TensorView dim_first(const TensorView& t, int64_t dim);
// An input in row order: in place when already compact there, otherwise a compact copy in holder.
const void* rows_in(const TensorView& t, int64_t dim, std::shared_ptr<void>& holder, void* stream);
// Where to write a compact output of t's shape in row order: the output itself when dim <= 0,
// otherwise `scratch` (allocated here), to be copied back by finish_rows.
void* rows_out(const TensorView& out, int64_t dim, std::shared_ptr<void>& scratch, void* stream);
void finish_rows(const TensorView& out, int64_t dim, const std::shared_ptr<void>& scratch, void* stream);

}  // namespace normkit::ops

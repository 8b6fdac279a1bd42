#pragma once
#include "normkit/tensor.h"

namespace normkit::cpu {
// Copies any strided view (negative, zero or overlapping strides included) into compact row-major
// memory at dst, which must hold src.numel() elements of src's dtype.
void contiguous_copy(const TensorView& src, void* dst);
}  // namespace normkit::cpu

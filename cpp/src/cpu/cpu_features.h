// Processor features the kernels test at run time, beyond the instruction set they were compiled
// for (isa.cpp sets them once, when the library loads, before any kernel runs).
#pragma once
#include <cstddef>

namespace normkit::cpu {

// Whether the AVX-512 kernels round floats to bfloat16 with the AVX512-BF16 conversion instructions
// (vector_convert.h): the processor has them, the AVX-512 kernels are in use, and NORMKIT_CPU_BF16
// is not "emulate" (which keeps the integer rounding, to test it on such a processor). Both give
// the same bits.
extern const bool bf16_instructions;

// Outputs of at least this many bytes are written with streaming stores (stream_store.h): a quarter
// of the last-level cache, at most 24 MiB (streaming_threshold.cpp).
extern const size_t streaming_output_bytes;

}  // namespace normkit::cpu

// CPU kernel entry points. Each kernel source is compiled once per instruction set (CMake builds
// cpu/*.cpp into one object library per ISA, defining NK_ISA to baseline, avx2 or avx512), and
// NK_CPU_DISPATCH calls the version for the ISA this processor supports.
#pragma once
#include "normkit/detail/batch_instance_norm_args.h"
#include "normkit/detail/channel_norm_args.h"
#include "normkit/detail/lrn_args.h"
#include "normkit/detail/row_norm_args.h"
#include "normkit/detail/switchable_norm_args.h"
#include "normkit/detail/weight_norm_args.h"
#include "normkit/detail/spectral_norm_args.h"
#include "normkit/detail/mean_only_batch_norm_args.h"

#define NK_CPU_KERNEL_DECLARATIONS                                  \
  void row_norm_forward(const detail::RowNormForwardArgs& args);    \
  void row_norm_backward(const detail::RowNormBackwardArgs& args);         \
  void channel_norm_forward(const detail::ChannelNormForwardArgs& args);  \
  void channel_norm_backward(const detail::ChannelNormBackwardArgs& args); \
  void local_response_norm_forward(const detail::LrnForwardArgs& args);    \
  void local_response_norm_backward(const detail::LrnBackwardArgs& args);  \
  void weight_norm_forward(const detail::WeightNormForwardArgs& args);     \
  void weight_norm_backward(const detail::WeightNormBackwardArgs& args);       \
  void batch_instance_norm_forward(const detail::BinForwardArgs& args);       \
  void batch_instance_norm_backward(const detail::BinBackwardArgs& args);    \
  void switchable_norm_forward(const detail::SnForwardArgs& args);           \
  void switchable_norm_backward(const detail::SnBackwardArgs& args);       \
  void spectral_norm_estimate(const detail::SpectralNormForwardArgs& args);  \
  void spectral_norm_apply(const detail::SpectralNormForwardArgs& args);     \
  void spectral_norm_backward(const detail::SpectralNormBackwardArgs& args); \
  void mean_only_batch_norm_forward(const detail::MobnForwardArgs& args);    \
  void mean_only_batch_norm_backward(const detail::MobnBackwardArgs& args);

namespace normkit::cpu {

enum class Isa { Baseline, Avx2, Avx512 };
Isa active_isa();  // the best compiled ISA this processor supports
const char* isa_name(Isa isa);

namespace baseline { NK_CPU_KERNEL_DECLARATIONS }
#if defined(NORMKIT_X86_ISAS)
namespace avx2 { NK_CPU_KERNEL_DECLARATIONS }
namespace avx512 { NK_CPU_KERNEL_DECLARATIONS }
#endif

}  // namespace normkit::cpu

#if defined(NORMKIT_X86_ISAS)
#define NK_CPU_DISPATCH(fn, ...)                                            \
  do {                                                                      \
    switch (::normkit::cpu::active_isa()) {                                 \
      case ::normkit::cpu::Isa::Avx512: ::normkit::cpu::avx512::fn(__VA_ARGS__); break; \
      case ::normkit::cpu::Isa::Avx2: ::normkit::cpu::avx2::fn(__VA_ARGS__); break;     \
      default: ::normkit::cpu::baseline::fn(__VA_ARGS__); break;            \
    }                                                                       \
  } while (0)
#else
#define NK_CPU_DISPATCH(fn, ...) ::normkit::cpu::baseline::fn(__VA_ARGS__)
#endif

#include <cstdlib>
#include <cstring>

#include "cpu/cpu_features.h"
#include "cpu/kernels.h"

namespace normkit::cpu {

// NORMKIT_CPU_ISA=baseline|avx2 caps the choice (to test the other code paths on one machine).
Isa active_isa() {
  static const Isa isa = [] {
    Isa best = Isa::Baseline;
#if defined(NORMKIT_X86_ISAS)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
      best = Isa::Avx2;
    if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      best = Isa::Avx512;
#endif
    if (const char* cap = std::getenv("NORMKIT_CPU_ISA")) {
      if (!std::strcmp(cap, "baseline")) best = Isa::Baseline;
      if (!std::strcmp(cap, "avx2") && best == Isa::Avx512) best = Isa::Avx2;
    }
    return best;
  }();
  return isa;
}

const bool bf16_instructions = [] {
#if defined(NORMKIT_X86_ISAS)
  const char* mode = std::getenv("NORMKIT_CPU_BF16");
  return active_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512bf16") && !(mode && !std::strcmp(mode, "emulate"));
#else
  return false;
#endif
}();

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Baseline: break;
  }
  return "baseline";
}

}  // namespace normkit::cpu

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <string>

#include "cpu/cpu_features.h"

namespace normkit::cpu {

namespace {

// The size of cpu0's level-3 cache in bytes as Linux reports it (the processor's own CPUID
// description), or 0 where it says none. Not sysconf(_SC_LEVEL3_CACHE_SIZE): glibc's figure was
// 256 MiB on a Zen 3 whose L3 (per 8-core complex) is 32 MiB.
size_t level3_cache_bytes() {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    if (!(level_file >> level)) break;
    if (level != 3) continue;
    size_t size = 0;
    std::string unit;
    if (!(size_file >> size)) return 0;
    size_file >> unit;  // "32768K"
    if (!unit.empty() && (unit[0] == 'K' || unit[0] == 'k')) size <<= 10;
    if (!unit.empty() && (unit[0] == 'M' || unit[0] == 'm')) size <<= 20;
    return size;
  }
  return 0;
}

}  // namespace

// A quarter of the last-level cache, at most 24 MiB (see stream_store.h for the measurements).
const size_t streaming_output_bytes = [] {
  constexpr size_t kAtMost = size_t(24) << 20, kAtLeast = size_t(1) << 20;
  const size_t l3 = level3_cache_bytes();
  return l3 == 0 ? kAtMost : std::clamp(l3 / 4, kAtLeast, kAtMost);
}();

}  // namespace normkit::cpu

#include "normkit/build_info.h"

#include <algorithm>
#include <string>

#include "cpu/cpu_features.h"
#include "cpu/kernels.h"
#include "normkit/parallel.h"
#if defined(NORMKIT_WITH_CUDA)
#include "cuda_ops.h"
#endif

#ifndef NORMKIT_VERSION
#define NORMKIT_VERSION "0.0.0"
#endif
#ifndef NORMKIT_CUDA_ARCHS
#define NORMKIT_CUDA_ARCHS ""
#endif

namespace normkit {

BuildInfo build_info() {
  BuildInfo info;
  info.version = NORMKIT_VERSION;
#if defined(NORMKIT_WITH_CUDA)
  info.cuda = true;
  const std::string archs = NORMKIT_CUDA_ARCHS;  // "75-real,80-real,90"
  for (size_t begin = 0; begin <= archs.size();) {
    const size_t end = std::min(archs.find(',', begin), archs.size());
    const std::string a = archs.substr(begin, end - begin);
    if (!a.empty()) info.cuda_archs.push_back(a.substr(0, a.find('-')));
    begin = end + 1;
  }
#endif
#if defined(NORMKIT_WITH_MPI)
  info.mpi = true;
#endif
#if defined(NORMKIT_WITH_NCCL)
  info.nccl = true;
#endif
  info.simd = cpu::isa_name(cpu::active_isa());
  info.bf16_instructions = cpu::bf16_instructions;
  info.streaming_output_bytes = static_cast<long long>(cpu::streaming_output_bytes);
  info.num_threads = get_num_threads();
  info.threading = threading_backend();
  return info;
}

bool cuda_available() {
#if defined(NORMKIT_WITH_CUDA)
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

}  // namespace normkit

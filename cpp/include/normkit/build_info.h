// What this build of the core contains and what it can use now.
#pragma once
#include <string>
#include <vector>

namespace normkit {

struct BuildInfo {
  std::string version;
  bool cuda = false;                    // compiled with CUDA kernels
  std::vector<std::string> cuda_archs;  // compute capabilities compiled for
  bool mpi = false;                     // the MPI communicator module was built
  bool nccl = false;                    // the NCCL communicator module was built
  std::string simd;                     // the CPU kernel ISA in use
  bool bf16_instructions = false;       // its float -> bfloat16 rounding by AVX512-BF16 instructions
  long long streaming_output_bytes = 0;  // outputs this large or larger are written past the caches
  int num_threads = 1;
  std::string threading;                // threading_backend()
};

BuildInfo build_info();
// True when normkit was built with CUDA and a CUDA device can be used now.
bool cuda_available();

}  // namespace normkit

// The CPU core's thread pool. parallel_for only distributes work: every kernel fixes its own
// partition of a reduction from the problem size alone, so results never depend on the thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace normkit {

// Threads used by CPU kernels (the calling thread included). Defaults to NORMKIT_NUM_THREADS,
// else OMP_NUM_THREADS, else the number of hardware threads.
int get_num_threads();
void set_num_threads(int n);

// Whose threads run the chunks: "openmp" (the OpenMP runtime's, shared with PyTorch where it is
// loaded) or "pool" (normkit's own: built without OpenMP, NORMKIT_THREADING=pool, or after fork()).
const char* threading_backend();

// Calls fn(begin, end) over consecutive chunks of [0, n) of at most `grain` indices each, on up to
// get_num_threads() threads; returns when all chunks are done. Runs inline for a single chunk, and
// when called from inside a pool task (no nested parallelism). The first exception thrown by a chunk
// is rethrown in the caller after the other chunks finish.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace normkit

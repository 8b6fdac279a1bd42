// parallel_for on the OpenMP runtime's threads. PyTorch's CPU ops run on the same runtime (one
// libgomp.so.1 per process), whose idle threads spin for milliseconds after each parallel region:
// a pool of normkit's own then waits for a core that torch's spinning thread holds, and a normkit op
// that follows a torch op ran at one thread's speed (LayerNorm [64, 4096] forward after a torch op
// 94 us instead of 47). On the shared runtime the spinning threads are the ones that take the work.
#pragma once
#include <cstdint>
#include <functional>

namespace normkit::detail {

// Runs chunk_fn(c) for every c in [0, chunks) on a team of `team` threads (at most `chunks`), the
// caller's included, and returns when all have run. An exception from a chunk is rethrown here after
// the other chunks ran. The caller first proves that the team can start: the runtime itself would end
// the process where it cannot (parallel.cpp).
void run_on_openmp_team(int team, int64_t chunks, const std::function<void(int64_t)>& chunk_fn);

}  // namespace normkit::detail

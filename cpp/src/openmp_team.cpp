#include "openmp_team.h"

#include <omp.h>

#include <atomic>
#include <exception>
#include <memory>
#include <mutex>

namespace normkit::detail {

void run_on_openmp_team(int team, int64_t chunks, const std::function<void(int64_t)>& chunk_fn) {
  // The chunks are split into `team` contiguous ranges, range t run first by thread t, as torch's
  // OpenMP loops split theirs: consecutive ops, normkit's or torch's, then find their parts of a
  // tensor in the cache of the core that touched them last (LayerNorm [64, 4096] forward 52-57 ->
  // 40-45 us against one shared counter). A thread done with its range takes what is left of the
  // others', chunk by chunk from their fronts, so a thread that starts late delays nothing. Which
  // thread runs a chunk never changes what it computes.
  struct alignas(64) Range {
    std::atomic<int64_t> next;
    int64_t end;
  };
  std::unique_ptr<Range[]> ranges(new Range[size_t(team)]);
  for (int t = 0; t < team; ++t) {
    ranges[size_t(t)].next.store(chunks * t / team, std::memory_order_relaxed);
    ranges[size_t(t)].end = chunks * (t + 1) / team;
  }
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(team)
  {
    // (Inside another parallel region the runtime gives fewer threads than asked: each thread visits
    // every range, so all chunks run.)
    const int me = omp_get_thread_num() % team;
    for (int k = 0; k < team; ++k) {
      Range& r = ranges[size_t((me + k) % team)];
      for (int64_t c; (c = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end;) {
        try {
          chunk_fn(c);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (!error) error = std::current_exception();
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace normkit::detail

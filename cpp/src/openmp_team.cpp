#include "openmp_team.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "normkit/error.h"

namespace normkit::detail {
namespace {

// libgomp ends the process when it cannot start a thread (a pids or address-space limit). Before a
// team larger than any before, start that many threads ourselves, all alive at once, and join them:
// where that fails the call raises, as normkit's own pool does, and nothing was run.
void check_threads_can_start(int threads) {
  static std::mutex mu;
  static int proven = 1;
  std::lock_guard<std::mutex> once(mu);
  if (threads <= proven) return;
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  std::vector<std::thread> probe;
  auto join_all = [&] {
    {
      std::lock_guard<std::mutex> lock(m);
      release = true;
    }
    cv.notify_all();
    for (auto& t : probe) t.join();
  };
  try {
    for (int i = 1; i < threads; ++i) probe.emplace_back([&] {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return release; });
    });
  } catch (const std::system_error& e) {
    join_all();
    throw cannot_start_threads(threads - 1, e.what());
  }
  join_all();
  proven = threads;
}

}  // namespace

void run_on_openmp_team(int threads, int64_t chunks, const std::function<void(int64_t)>& chunk_fn) {
  const int team = int(std::min<int64_t>(threads, chunks));
  check_threads_can_start(team);
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

#include "normkit/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "normkit/error.h"

#include "openmp_team.h"

namespace normkit {
namespace {

thread_local bool t_in_pool_task = false;

// Kernels may write large outputs with streaming (weakly ordered) stores: fence them at the end of
// every chunk, before the chunk is reported done, so the results are visible to every thread.
inline void store_fence() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_sfence();
#endif
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spinning: back-to-back kernels hand work to threads that are still awake, since a futex wake-up
// costs tens of microseconds (as much as a whole small normalization), and more inside a VM.
// NORMKIT_SPIN_US (default 300) bounds it.
int spin_microseconds() {
  static const int us = [] {
    const char* s = std::getenv("NORMKIT_SPIN_US");
    return s ? std::max(0, std::atoi(s)) : 300;
  }();
  return us;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Spins until pred() holds or `us` microseconds pass. `yield`: give the core to any other runnable
// thread now and then (an idle worker must not slow down torch's threads that run between normkit
// calls); a caller waiting for its own job's chunks spins without yielding.
template <class Pred>
void spin_briefly(Pred&& pred, bool yield = false, int us = spin_microseconds()) {
  const auto start = std::chrono::steady_clock::now();
  const auto limit = std::chrono::microseconds(us);
  for (int i = 0; !pred(); ++i) {
    cpu_relax();
    if ((i & 255) == 255) {
      if (std::chrono::steady_clock::now() - start > limit) return;
      if (yield) std::this_thread::yield();
    }
  }
}

// More threads than this is a mistake (a typo, a count of something else), not a machine.
constexpr int kMaxThreads = 1024;

int default_threads() {
  for (const char* var : {"NORMKIT_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* s = std::getenv(var)) {
      const int n = std::atoi(s);
      if (n > 0) return std::min(n, kMaxThreads);
    }
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Workers sleep on a condition variable between jobs. A job is a chunk counter that the caller and
// the workers drain together; the caller waits until every chunk has finished.
class ThreadPool {
 public:
  explicit ThreadPool(int workers) {
    try {
      for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error& e) {
      // The system would not start another thread (a pids or memory limit): stop the ones that
      // started (a thrown constructor runs no destructor) and say so.
      stop_all();
      throw RuntimeError(concat("cannot start ", workers, " worker threads (", e.what(), "); set fewer with ",
                                "normkit.set_num_threads or NORMKIT_NUM_THREADS"));
    }
  }
  ~ThreadPool() { stop_all(); }
  int workers() const { return int(threads_.size()); }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void run(int64_t chunks, const std::function<void(int64_t)>& chunk_fn) {
    std::lock_guard<std::mutex> serial(run_mu_);  // one job at a time from different callers
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &chunk_fn;
      chunks_ = chunks;
      next_.store(0);
      pending_.store(chunks);
      error_ = nullptr;
      ++generation_;
      published_ns_.store(now_ns(), std::memory_order_relaxed);
      published_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    t_in_pool_task = true;  // a nested parallel_for from a chunk run here must run inline
    drain(chunk_fn, chunks);
    t_in_pool_task = false;
    // Spin until the chunks are done and the workers have left the job (chunk_fn dies when we
    // return), so that the usual end of a job costs no futex sleep and wake-up of this thread.
    spin_briefly([this] {
      return pending_.load(std::memory_order_acquire) == 0 && active_.load(std::memory_order_acquire) == 0;
    });
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_.load() == 0 && active_.load() == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain(const std::function<void(int64_t)>& job, int64_t chunks) {
    for (;;) {
      const int64_t c = next_.fetch_add(1);
      if (c >= chunks) return;
      try {
        job(c);
        store_fence();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_.notify_all();
      }
    }
  }

  // Between jobs a worker spins the full spin time only while that pays: when the previous job came
  // within the spin time of the one before (back-to-back normkit calls). When other work runs
  // between normkit calls (torch ops in a model, with their own thread pool), a spinning worker would
  // only take a core from it, so the worker spins only kOpSpinUs, long enough to catch the next
  // parallel loop of the same normkit call (an op runs several), then sleeps. Sleeping at once made
  // every loop of a call pay a futex wake-up after a long gap: BatchNorm2d [16,512,4,4] float32 core
  // calls with 1 ms of other work between them took 174-224 us forward and 204-265 us backward,
  // 140-155 and 164-182 us with this short spin (95-120 and 120-150 back to back, either way).
  static constexpr int kOpSpinUs = 50;
  void worker_loop() {
    t_in_pool_task = true;
    uint64_t seen = 0;
    int64_t last_end_ns = 0;
    bool spin = true;
    for (;;) {
      const std::function<void(int64_t)>* job;
      int64_t chunks;
      spin_briefly([&] { return published_.load(std::memory_order_acquire) != seen; }, true,
                   spin ? spin_microseconds() : std::min(kOpSpinUs, spin_microseconds()));
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || (generation_ != seen && job_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        job = job_;
        chunks = chunks_;
        ++active_;
      }
      spin = published_ns_.load(std::memory_order_relaxed) - last_end_ns <= int64_t(spin_microseconds()) * 1000;
      drain(*job, chunks);
      last_end_ns = now_ns();
      active_.fetch_sub(1, std::memory_order_release);
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex run_mu_, mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0}, pending_{0};
  std::exception_ptr error_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> published_{0};    // generation_, readable without the lock (for spinning)
  std::atomic<int64_t> published_ns_{0};  // when the current job was published (steady clock)
  std::atomic<int> active_{0};  // workers inside the current job (taken under mu_)
  bool stop_ = false;
};

#ifdef NORMKIT_OPENMP
bool g_forked_child = false;  // OpenMP's threads stay the parent's: the child uses a pool of its own

// NORMKIT_THREADING=pool: normkit's own pool even where the OpenMP runtime is there.
bool use_openmp() {
  static const bool wanted = [] {
    const char* s = std::getenv("NORMKIT_THREADING");
    return !(s && std::string(s) == "pool");
  }();
  return wanted && !g_forked_child;
}

// libgomp ends the process when it cannot start a thread (a pids or address-space limit). Before a
// team larger than any before, as many threads start as a pool of our own, all alive at once, and
// stop again: where the system refuses them that raises the pool's RuntimeError, and nothing has run.
void prove_team_can_start(int team) {
  static std::mutex mu;
  static int proven = 1;
  std::lock_guard<std::mutex> lock(mu);
  if (team <= proven) return;
  ThreadPool probe(team - 1);
  proven = team;
}
#endif

std::mutex g_pool_mu;
int g_num_threads = 0;  // 0: not yet read from the environment
ThreadPool* g_pool = nullptr;

// After fork() the child owns no worker threads: forget the parent's pool (leaked on purpose, its
// mutexes may be held by threads that do not exist in the child).
void after_fork_in_child() {
  g_pool = nullptr;
  new (&g_pool_mu) std::mutex();
#ifdef NORMKIT_OPENMP
  g_forked_child = true;
#endif
}

// Registered when the module loads: a child forked before normkit's first parallel call must know it
// too, since torch's OpenMP threads may exist in the parent by then.
[[maybe_unused]] const bool g_atfork_registered = (pthread_atfork(nullptr, nullptr, after_fork_in_child), true);

ThreadPool* pool_for(int threads) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (!g_pool || g_pool->workers() != threads - 1) {
    // The old pool goes only once the new one exists: a pool that cannot start leaves g_pool valid.
    ThreadPool* fresh = new ThreadPool(threads - 1);
    delete g_pool;
    g_pool = fresh;
  }
  return g_pool;
}

}  // namespace

const char* threading_backend() {
#ifdef NORMKIT_OPENMP
  if (use_openmp()) return "openmp";
#endif
  return "pool";
}

int get_num_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (g_num_threads == 0) g_num_threads = default_threads();
  return g_num_threads;
}

void set_num_threads(int n) {
  check_value(n >= 1 && n <= kMaxThreads, "set_num_threads: expected 1 <= n <= ", kMaxThreads, ", got ", n);
  std::lock_guard<std::mutex> lock(g_pool_mu);
  g_num_threads = n;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int threads = get_num_threads();
  if (chunks == 1 || threads == 1 || t_in_pool_task) {
    fn(0, n);
    store_fence();
    return;
  }
  const std::function<void(int64_t)> chunk_fn = [&](int64_t c) {
    const int64_t begin = c * grain;
    fn(begin, std::min(n, begin + grain));
  };
#ifdef NORMKIT_OPENMP
  if (use_openmp()) {
    const int team = int(std::min<int64_t>(threads, chunks));
    prove_team_can_start(team);
    detail::run_on_openmp_team(team, chunks, [&](int64_t c) {
      // A nested parallel_for from a chunk runs inline (the flag restored even when the chunk throws).
      struct InTask {
        bool was = t_in_pool_task;
        InTask() { t_in_pool_task = true; }
        ~InTask() { t_in_pool_task = was; }
      } in_task;
      chunk_fn(c);
      store_fence();
    });
    return;
  }
#endif
  pool_for(threads)->run(chunks, chunk_fn);
}

}  // namespace normkit

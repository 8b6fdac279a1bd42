#include "normkit/host_cache.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "normkit/error.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace normkit {
namespace {

// Buffers of 2 MB and more are whole huge pages; smaller ones (outputs from a few hundred KB up) are
// page aligned in steps of 64 KB, so that a 300 KB output does not hold a 2 MB buffer.
constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kSmallStep = size_t(64) << 10;
constexpr size_t kPage = 4096;

size_t rounded(size_t bytes) {
  const size_t step = bytes >= kHuge ? kHuge : kSmallStep;
  return (bytes + step - 1) / step * step;
}
size_t alignment(size_t size) { return size >= kHuge ? kHuge : kPage; }

size_t default_limit() {
  if (const char* s = std::getenv("NORMKIT_HOST_CACHE_MB")) return size_t(std::strtoull(s, nullptr, 10)) << 20;
  return size_t(1) << 30;
}

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> idle;  // rounded size -> buffer
  size_t idle_bytes = 0;
  size_t limit = default_limit();

  // Frees idle buffers, largest first, until at most `keep` bytes stay. Caller holds mu.
  void trim(size_t keep) {
    while (idle_bytes > keep && !idle.empty()) {
      auto it = std::prev(idle.end());
      idle_bytes -= it->first;
      std::free(it->second);
      idle.erase(it);
    }
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: buffers may come back during interpreter exit
  return *c;
}

}  // namespace

void* host_cache_acquire(size_t bytes) {
  const size_t size = rounded(bytes ? bytes : 1);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.idle.find(size);
    if (it != c.idle.end()) {
      void* p = it->second;
      c.idle_bytes -= size;
      c.idle.erase(it);
      return p;
    }
  }
  void* p = std::aligned_alloc(alignment(size), size);
  if (!p) {
    // Idle buffers of other sizes may be what stands in the way.
    host_cache_clear();
    p = std::aligned_alloc(alignment(size), size);
    if (!p) throw std::bad_alloc();
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (size >= kHuge) madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

size_t host_cache_shift(uintptr_t away_from) {
  constexpr uintptr_t kPage = 4096, kLine = 64;
  return size_t(((away_from % kPage) / kLine * kLine + 3 * kPage / 4) % kPage);
}

void host_cache_release(void* p, size_t bytes) {
  if (!p) return;
  const size_t size = rounded(bytes ? bytes : 1);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (size > c.limit) {
    std::free(p);
    return;
  }
  c.idle.emplace(size, p);
  c.idle_bytes += size;
  c.trim(c.limit);
}

void host_cache_clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.trim(0);
}

size_t host_cache_idle_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.idle_bytes;
}

void host_cache_set_limit(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
  c.trim(bytes);
}

size_t host_cache_limit() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.limit;
}

}  // namespace normkit

// A cache of large host buffers for op outputs. glibc maps every allocation above 32 MB afresh and
// unmaps it on free, so each large output of a training loop is faulted in and zeroed by the kernel
// page by page, which costs more than the normalization that writes it. Outputs taken from here are
// 2 MB aligned, backed by transparent huge pages where available, and go back to the cache when their
// last user lets go, so the next step reuses them (as PyTorch's CUDA caching allocator does on GPU).
#pragma once
#include <cstddef>

namespace normkit {

// At least `bytes` bytes, 2 MB aligned; from the cache when a free buffer of that size is there.
void* host_cache_acquire(size_t bytes);
// Returns a buffer from host_cache_acquire(bytes); kept for reuse up to the cache limit, freed beyond.
void host_cache_release(void* p, size_t bytes);
// Frees every idle buffer.
void host_cache_clear();
size_t host_cache_idle_bytes();
// The most idle bytes kept (default 1 GiB, or NORMKIT_HOST_CACHE_MB).
void host_cache_set_limit(size_t bytes);
size_t host_cache_limit();

}  // namespace normkit

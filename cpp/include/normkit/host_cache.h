// A cache of host buffers for op outputs of a few hundred KB and more. glibc maps large allocations
// afresh and gives memory back to the kernel on free, so the outputs of a training loop (kept alive
// for the backward, hence never reused in place by malloc) are faulted in and zeroed page by page,
// which costs more than the normalization that writes them. Buffers from here go back to the cache
// when their last user lets go, so the next step reuses them (as PyTorch's CUDA caching allocator does
// on GPU). From 2 MB up they are 2 MB aligned and backed by transparent huge pages where available;
// smaller ones are page aligned, in 64 KB steps.
#pragma once
#include <cstddef>

namespace normkit {

// At least `bytes` bytes (see above for the alignment); from the cache when a free buffer of that
// size class is there.
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

// A cache of host buffers for op outputs of a few hundred KB and more. glibc maps large allocations
// afresh and gives memory back to the kernel on free, so the outputs of a training loop (kept alive
// for the backward, hence never reused in place by malloc) are faulted in and zeroed page by page,
// which costs more than the normalization that writes them. Buffers from here go back to the cache
// when their last user lets go, so the next step reuses them (as PyTorch's CUDA caching allocator does
// on GPU). From 2 MB up they are 2 MB aligned and backed by transparent huge pages where available;
// smaller ones are page aligned, in 64 KB steps.
#pragma once
#include <cstddef>
#include <cstdint>

namespace normkit {

// At least `bytes` bytes (see above for the alignment); from the cache when a free buffer of that
// size class is there.
void* host_cache_acquire(size_t bytes);
// Returns a buffer from host_cache_acquire(bytes); kept for reuse up to the cache limit, freed beyond.
void host_cache_release(void* p, size_t bytes);
// Where the data of a buffer that an op writes while it reads an input at `away_from` should start:
// this many bytes past the buffer's start (whole 64-byte lines, under 4 KiB), so that they lie 3 KiB
// past the input's modulo 4 KiB. A load whose address matches a pending store's in the low 12 bits
// is taken for its dependant and waits (4K aliasing), and buffers from here start on a page, as
// torch's huge-page allocations do. 3 KiB past is 1 KiB behind: stores trailing the loads by 1 KiB
// (modulo 4 KiB, and modulo 2 KiB for bfloat16 rows of 1024) measured fastest. Zen 3, the bench cases
// [8192,1024] forward+backward, the output's offset from x alternating in one process: LayerNorm
// float32 11.9 ms at 0, 6.7 at 2 KiB, 6.5 at 3 KiB; bfloat16 4.9, 5.4 and 4.7 ms; RMSNorm float32
// 8.5, 5.6 and 5.4 ms.
size_t host_cache_shift(uintptr_t away_from);
// Frees every idle buffer.
void host_cache_clear();
size_t host_cache_idle_bytes();
// The most idle bytes kept (default 1 GiB, or NORMKIT_HOST_CACHE_MB).
void host_cache_set_limit(size_t bytes);
size_t host_cache_limit();

}  // namespace normkit

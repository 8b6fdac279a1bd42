// Zeroed scratch for a kernel's partial sums that the kernel loads and stores in the same loop as it
// stores an output row. A load whose address matches an older store's in the low 12 bits waits for
// that store (4K aliasing): with the partials at a malloc'd address, LayerNorm's backward loaded each
// dweight partial right after storing dx at such an address, and that load took 38% of the loop.
// Here the two arrays start half a page and three quarters of a page after the output (mod 4 KiB),
// so with rows of a multiple of 1 KiB (where a bad offset would hit every row) neither the output's
// stores nor each other's are ever a few vectors ahead of their loads (LayerNorm backward with
// parameter gradients, alternating builds: [64, 4096] one thread 249-296 -> 235-270 us, two threads
// 107-124 -> 105-106 us; [8192, 1024] 2.48-2.55 -> 2.40-2.44 ms).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

template <class A>
class OffsetPartials {
 public:
  // `count` values in each of `arrays` (0, 1 or 2) arrays; `out`: the output stored in the same loop.
  OffsetPartials(size_t count, int arrays, const void* out) {
    if (arrays == 0) return;
    const size_t span = (count * sizeof(A) + kPage - 1) / kPage * kPage;  // (whole pages, so the offsets hold)
    // (Slack: up to a page to align, up to a page and a quarter of offsets.)
    bytes_.assign(size_t(arrays) * span + 3 * kPage, 0);
    char* page = bytes_.data() + (kPage - reinterpret_cast<uintptr_t>(bytes_.data()) % kPage) % kPage;
    const size_t first = (reinterpret_cast<uintptr_t>(out) + kPage / 2) % kPage;
    arrays_[0] = reinterpret_cast<A*>(page + first);
    if (arrays == 2) arrays_[1] = reinterpret_cast<A*>(page + first + span + kPage / 4);
  }
  A* operator[](int i) const { return arrays_[i]; }

 private:
  static constexpr size_t kPage = 4096;
  std::vector<char> bytes_;
  A* arrays_[2] = {nullptr, nullptr};
};

}  // namespace normkit::cpu::NK_ISA

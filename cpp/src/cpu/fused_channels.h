// Channels-first fused passes: a statistic's values read from DRAM once and again from cache, the
// next statistic's values taken between the pieces of this one's output. The budget rule and the
// schedule serve channel_norm.cpp (BatchNorm, InstanceNorm, GroupNorm: statistics over segments,
// pieces of chunks or blocks) and, through fused_channels, the norms whose statistic of channel c
// gathers its N planes (n, c) (mean-only BatchNorm, Batch-Instance Norm: pieces of whole planes).
//
// Every statistic is the caller's same function on the fused and the unfused path, so both give the
// same bits. Large outputs are still best streamed here (stream_store.h). A loop of one op favours
// plain stores (forward and backward each 5-10% faster): each call rewrites the same output buffer
// while it sits dirty in the last-level cache, so its lines never reach DRAM. Inside the benchmark,
// with torch's work between the calls, streaming won: mean-only BatchNorm [32,64,56,56] float32
// forward+backward 2.96-3.05 -> 2.52-2.54 ms, Batch-Instance Norm 4.23-4.50 -> 3.93-4.06 ms
// (forwards alike).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "normkit/parallel.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// Whether to compute a statistic and normalize its values in one task (`bytes` per task, `tasks`
// tasks): per thread, 16 MB / threads within 512 KB and 4 MB (L2 / L3), and at least two tasks per
// thread. Both paths do the same arithmetic, so the choice (which may depend on the thread count)
// never changes a result.
inline bool fuse_stats(int64_t bytes, int64_t tasks) {
  const int threads = get_num_threads();
  const int64_t budget = std::clamp<int64_t>((int64_t(16) << 20) / threads, int64_t(512) << 10, int64_t(4) << 20);
  return bytes <= budget && tasks >= 2 * threads;
}

// Statistics per task, and whether a task pipelines them.
struct FusedTasks {
  int64_t grain;
  bool pipelined;
};

// Statistics [s0, s1) of a fused task: gather(s, after) takes statistic s a piece at a time, calling
// after(piece...) after each piece; emit(s, piece...) writes the output of s that pairs with that
// piece of s + 1; emit_all(s) writes all of s's output. Pipelined, s's output goes piece by piece
// between the pieces of s + 1's statistics.
template <class Gather, class Emit, class EmitAll>
void run_fused_task(const FusedTasks& ft, int64_t s0, int64_t s1, Gather&& gather, Emit&& emit, EmitAll&& emit_all) {
  auto nothing = [](auto&&...) {};
  if (!ft.pipelined) {
    for (int64_t s = s0; s < s1; ++s) gather(s, nothing), emit_all(s);
    return;
  }
  gather(s0, nothing);
  for (int64_t s = s0; s + 1 < s1; ++s) gather(s + 1, [&](auto... piece) { emit(s, piece...); });
  emit_all(s1 - 1);
}

// Channels whose statistic gathers N planes: stat(n, c) -> P, plane (n, c)'s statistic;
// finish(c, planes): channel c's merge of its N planes' statistics (planes[n]); map(n, c): plane
// (n, c)'s outputs. Tasks of about 1 MB of channels, at least two per thread, pipelined plane by
// plane (run_fused_task).
template <class P, class Stat, class Finish, class Map>
void fused_channels(int64_t N, int64_t C, int64_t channel_bytes, Stat&& stat, Finish&& finish, Map&& map) {
  const int64_t per_thread = (C + 2 * get_num_threads() - 1) / (2 * get_num_threads());
  const int64_t grain = std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(channel_bytes, 1), 1, per_thread);
  parallel_for(C, grain, [&](int64_t c0, int64_t c1) {
    std::vector<P> planes(static_cast<size_t>(N));
    auto gather = [&](int64_t c, auto&& after) {
      for (int64_t n = 0; n < N; ++n) {
        planes[size_t(n)] = stat(n, c);
        after(n);
      }
      finish(c, static_cast<const P*>(planes.data()));
    };
    auto map_at = [&](int64_t c, int64_t n) { map(n, c); };
    auto map_all = [&](int64_t c) {
      for (int64_t n = 0; n < N; ++n) map(n, c);
    };
    run_fused_task(FusedTasks{grain, true}, c0, c1, gather, map_at, map_all);
  });
}

}  // namespace normkit::cpu::NK_ISA

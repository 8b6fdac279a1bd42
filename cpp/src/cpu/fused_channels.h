// Channels-first norms whose statistic of channel c gathers its N planes (n, c) (mean-only
// BatchNorm, Batch-Instance Norm): the per-plane statistics, the per-channel merge and the per-plane
// map fused per channel, so that a channel's planes are read from DRAM once and again from cache.
//
// A task takes consecutive channels: the statistics of channel c + 1's planes one by one, each
// followed by the map of the same plane of channel c, whose merge came before. Channel c's planes,
// read one channel ago, are then in L2, and DRAM serves the reads of c + 1 while c's outputs are
// written (as channel_norm.cpp's fused passes). Each plane's statistic and each channel's merge are
// the caller's same functions as on its unfused path, so both paths give the same bits.
//
// Large outputs are still best streamed here (stream_store.h). A loop of one op favours plain stores
// (forward and backward each 5-10% faster): each call rewrites the same output buffer while it sits dirty in
// the last-level cache, so its lines never reach DRAM. Inside the benchmark, with torch's work between
// the calls, streaming won: mean-only BatchNorm [32,64,56,56] float32 forward+backward 2.96-3.05 ->
// 2.52-2.54 ms, Batch-Instance Norm 4.23-4.50 -> 3.93-4.06 ms (forwards alike).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "normkit/parallel.h"

// Per-ISA namespace (see lanes.h).
namespace normkit::cpu::NK_ISA {

// Whether C channels of `channel_bytes` each fit the cache budget that lets one task take a
// channel's statistics and then map it while it is in cache (per thread: 16 MB / threads, within
// 512 KB and 4 MB, as channel_norm.cpp's fuse_stats), with at least two tasks per thread. The choice
// may depend on the thread count: it never changes a value.
inline bool fuses_channels(int64_t C, int64_t channel_bytes) {
  const int threads = get_num_threads();
  const int64_t budget = std::clamp<int64_t>((int64_t(16) << 20) / threads, int64_t(512) << 10, int64_t(4) << 20);
  return channel_bytes <= budget && C >= 2 * threads;
}

// stat(n, c) -> P: plane (n, c)'s statistic; finish(c, planes): channel c's merge of its N planes'
// statistics (planes[n]); map(n, c): plane (n, c)'s outputs.
template <class P, class Stat, class Finish, class Map>
void fused_channels(int64_t N, int64_t C, int64_t channel_bytes, Stat&& stat, Finish&& finish, Map&& map) {
  // Channels per task: about 1 MB of them (a task's first channel gets its statistics before any
  // map), and at least two tasks per thread.
  const int64_t per_thread = (C + 2 * get_num_threads() - 1) / (2 * get_num_threads());
  const int64_t grain = std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(channel_bytes, 1), 1, per_thread);
  parallel_for(C, grain, [&](int64_t c0, int64_t c1) {
    std::vector<P> planes(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) planes[size_t(n)] = stat(n, c0);
    finish(c0, static_cast<const P*>(planes.data()));
    for (int64_t c = c0; c < c1; ++c) {
      const bool next = c + 1 < c1;
      for (int64_t n = 0; n < N; ++n) {
        if (next) planes[size_t(n)] = stat(n, c + 1);
        map(n, c);
      }
      if (next) finish(c + 1, static_cast<const P*>(planes.data()));
    }
  });
}

}  // namespace normkit::cpu::NK_ISA

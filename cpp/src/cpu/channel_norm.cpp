// BatchNorm, InstanceNorm and GroupNorm on the CPU: normalization of an [N, C, S] tensor by the
// statistics of groups of channels (see detail/channel_norm_args.h).
//
// Determinism: every reduction is cut into pieces that depend on the problem size and layout only
// (never on the thread count), each piece is reduced by one thread, and the pieces are merged in a
// fixed order. Threads only decide who computes which piece.
//
// Statistics. Each piece is a block of at most kStatBlock contiguous values (channels first) or of
// ~kRowBlock values in whole rows (channels last), small enough to stay in cache for a second pass.
// All values of a statistic are shifted by its first value (so block means are small numbers whose
// rounding does not spoil the merges; a float channel with mean 1e4 and std 0.1 keeps ~1e-6 relative
// variance error). A block takes one pass of sums of d = x - shift and d^2 while that is as
// accurate as two (per statistic, the criterion of cpu/shifted_moments.h), else, while the block is
// in cache, the corrected two-pass:
//   pass 1: mean estimate m^ = mean(x - shift),
//   pass 2: sd = sum(x - shift - m^), sq = sum((x - shift - m^)^2),
// giving mean = m^ + sd / n and M2 = sq - sd^2 / n. (Channels last, always taking both passes
// left GroupNorm [8,256,64,64] statistics compute-bound.) Blocks are merged with Chan's formula
// (math::chan_merge) pairwise in block order (normkit/pairwise.h), into chunks, then segments, then
// statistics: a running merge of thousands of small planes (BatchNorm1d [8192, 64, 8]) lost 1e-3
// of a variance.
//
// Channels first (NCS): the values of statistic (n, g) of a per-sample norm (InstanceNorm,
// GroupNorm) are one contiguous segment of cpg * S values; a BatchNorm statistic c is N segments of
// S values. Segments are cut into chunks of kChunk values (the unit of parallel work). When a
// statistic's values fit the cache budget (fuse_stats), one task computes its statistics and
// normalizes them right away (forward; backward: sums, then dx), so x comes from DRAM once (same
// arithmetic as the unfused path); past L1, a task's statistics are pipelined (fused_tasks).
// BatchNorm planes shorter than kShortPlane values instead go in blocks of a channel's planes
// (gathered into L1, kStatBlock values each), and planes that short are normalized in one loop
// over the planes (cpu/plane_map.h): per plane, the moments, merges and calls cost more than its
// values. Planes shorter still (kRunPlane) are fused per group of channels, a group's statistics
// then its outputs, mapped in runs of planes with the operands expanded per value.
// Channels last (NSC): rows of C channels. The rows of a statistic's row group (a sample for
// per-sample norms, all N * S rows for BatchNorm) are cut into fixed blocks of rows; per block,
// per-channel vector sums give each group's block moments. Per-sample norms fuse per sample, or,
// for samples of kPipelineMinBytes and more, pipeline the samples across all threads (forward).
// A channels-last x under a channels-first y (InstanceNorm's output) is transposed a chunk of samples
// at a time into cache and normalized channels first from there (forward_transposed).
// Unfused normalization passes run last-to-first, to reuse what the statistics pass left in L3.
//
// Backward: per (k, c) sums of dy and dy * xhat (k = n, a block of planes for short planes, or k = 0
// for channels-last BatchNorm) give dbias, dweight (pairwise sums over k in order) and, per
// statistic, mean(g) and mean(g * xhat) (pairwise sums over k then c in order); then
// dx = math::row_norm_dx per element.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/channel_map.h"
#include "cpu/column_sums.h"
#include "cpu/fused_channels.h"
#include "cpu/shifted_moments.h"
#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "cpu/pair_sums.h"
#include "cpu/pairwise_rows.h"
#include "cpu/plane_map.h"
#include "cpu/prefetch_ahead.h"
#include "cpu/rows_to_planes.h"
#include "cpu/params.h"
#include "cpu/stream_store.h"
#include "normkit/host_cache.h"
#include "normkit/math.h"
#include "normkit/pairwise.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::ChannelNormBackwardArgs;
using detail::ChannelNormForwardArgs;
using detail::Layout;

constexpr int64_t kChunk = 8 * kStatBlock;  // channels first: values per unit of parallel work
constexpr int64_t kRowBlock = 16384;        // channels last: values per block of rows (L2)
// Channels last: at least this many rows per block. Each block costs per-channel work (finishing its
// moments, merging them across blocks); with 16384 / C rows, C = 2048 gave 8-row blocks whose
// per-channel work outweighed their sums ([8,2048,7,7] forward 0.70 -> 0.48 ms with 32).
constexpr int64_t kMinBlockRows = 32;
constexpr int64_t kTaskElements = 1 << 15;  // elements per parallel task, to amortise the hand-off
constexpr int64_t kShortPlane = 1024;       // BatchNorm channels first: shorter planes go in blocks
// BatchNorm channels first, planes of fewer than kRunPlane values (four float vectors: a CNN's 7x7,
// 4x4, 2x2): statistics and outputs fused per group of channels, the outputs mapped in runs of
// planes (map_short_plane_runs). A group's inputs take about kShortTaskBytes (they stay in L2 between
// the two passes), its expanded operands at most kShortOperandBytes (read from L1 with the inputs).
// Core calls, alternating builds, float32: [32,512,7,7] forward 226-264 -> 199-227 us, backward
// 365-390 -> 301-317 us; [8,2048,7,7] 263-300 -> 241-248 and 392-401 -> 309-347 us; [64,128,2,2]
// bfloat16 backward 154-166 -> 56-59 us. (8x8 planes gained on [128,256,8,8] but lost 15% on the
// L2-sized [32,64,8,8], whose planes of whole vectors map fast one by one: hence fewer than 64.)
constexpr int64_t kRunPlane = 64;
constexpr int64_t kShortTaskBytes = 256 << 10;
constexpr int64_t kShortOperandBytes = 16 << 10;
// Channels-last per-sample norms pipeline samples of at least this many bytes of x across all threads
// (forward); smaller ones go a sample per task (1 MB samples measured alike).
constexpr int64_t kPipelineMinBytes = 1 << 20;
// Channels-first fused passes (fused_tasks): bytes per pipelined task (a task of one statistic does
// not pipeline), and the bytes of a statistic's values from which tasks pipeline (L1: 48 KB here).
constexpr int64_t kFusedTaskBytes = 1 << 20;
constexpr int64_t kPipelineMinStatBytes = 32 << 10;
// Values normalized between two rounds of requests for the next statistic's block (fused_forward_ncs).
constexpr int64_t kAheadPiece = 1024;

template <class A>
using Moments = math::Moments<A>;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Float values in a 64-byte cache line.
constexpr int64_t kFloatsPerLine = 64 / int64_t(sizeof(float));

// A grain of at least `grain` (and 1) in whole 64-byte lines of float statistics.
int64_t line_grain(int64_t grain) { return ceil_div(std::max<int64_t>(1, grain), kFloatsPerLine) * kFloatsPerLine; }

// parallel_for over [0, n) in pieces of `grain`, handing out the last pieces first (each piece runs
// forwards, for the prefetchers).
template <class Fn>
void parallel_for_from_end(int64_t n, int64_t grain, Fn&& fn) {
  parallel_for(ceil_div(n, grain), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t e = n - t * grain;
      fn(std::max<int64_t>(0, e - grain), e);
    }
  });
}

// Tasks of the fused channels-first passes (fused_forward_ncs): statistics per task, and whether a
// task pipelines them. Only statistics whose values outgrow L1 gain from it: within L1 the second
// pass is fast already, and interleaving two statistics' values there cost time (InstanceNorm
// [32,64,56,56] float32 backward, 25 KB of dy and x per statistic: 7% slower).
FusedTasks fused_tasks(int64_t values_per_stat, size_t bytes_per_value) {
  const int64_t bytes = values_per_stat * int64_t(bytes_per_value);
  if (bytes > kPipelineMinStatBytes) return {std::max<int64_t>(1, kFusedTaskBytes / bytes), true};
  return {std::max<int64_t>(1, kTaskElements / values_per_stat), false};
}

// The problem after normalising the layout: with S == 1 both layouts are [N, C] rows (NSC), with
// C == 1 both are [N, S] planes (NCS).
struct Problem {
  int64_t N, C, S, G, cpg;
  bool per_sample;
  Layout layout;
  int64_t num_stats, count;
  int64_t stream_N;  // the samples whose outputs decide streaming stores (N, or all of a chunk's tensor)

  explicit Problem(const detail::ChannelNormShape& s)
      : N(s.N), C(s.C), S(s.S), G(s.groups), cpg(s.groups > 0 ? s.C / s.groups : 0),
        per_sample(s.per_sample), layout(s.layout), num_stats(s.num_stats()),
        count((s.per_sample ? 1 : s.N) * cpg * s.S), stream_N(s.N) {
    if (S == 1 && C > 1) layout = Layout::NSC;
    if (C == 1) layout = Layout::NCS;
  }
  bool empty() const { return N * S == 0 || C == 0; }
  // Whether outputs of elem_size-byte elements are large enough for streaming stores.
  bool streams(size_t elem_size) const { return streams_output(size_t(stream_N * C * S) * elem_size); }
  // (cpg == 1, BatchNorm and InstanceNorm, without the division: per short plane it cost as much as the plane.)
  int64_t stat(int64_t n, int64_t c) const { return (per_sample ? n * G : 0) + (cpg == 1 ? c : c / cpg); }
  // Channels last: row groups (samples, or one group of all rows) and their blocks of rows.
  int64_t row_groups() const { return per_sample ? N : 1; }
  int64_t group_rows() const { return per_sample ? S : N * S; }
  int64_t block_rows() const { return std::max<int64_t>(kMinBlockRows, kRowBlock / C); }
  int64_t row_blocks() const { return ceil_div(group_rows(), block_rows()); }
  // Channels first: a segment (n, g) is cpg * S contiguous values, cut into chunks.
  int64_t seg_len() const { return cpg * S; }
  // Channels-first BatchNorm with planes shorter than kShortPlane values: moments and gradient sums per
  // block of a channel's planes, kStatBlock values (see batch_stats_of_short_planes).
  bool short_planes() const {
    return !per_sample && G == C && layout == Layout::NCS && S > 0 && S < kShortPlane;
  }
  // BatchNorm planes of fewer than kRunPlane values (see there).
  bool plane_runs() const { return short_planes() && S < kRunPlane; }
  int64_t planes_per_block() const { return std::max<int64_t>(1, kStatBlock / S); }
  int64_t plane_blocks() const { return ceil_div(N, planes_per_block()); }
  // Unit u of the short planes' blocks: channel c, block blk of its planes, samples [n0, n1).
  struct PlaneBlock {
    int64_t c, blk, n0, n1;
  };
  PlaneBlock plane_block(int64_t u) const {
    const int64_t blocks = plane_blocks(), blk = u % blocks, n0 = blk * planes_per_block();
    return {u / blocks, blk, n0, std::min(N, n0 + planes_per_block())};
  }
  // The k of the backward's (k, c) sums: samples (channels first, per-sample norms), blocks of
  // planes (short planes), or one.
  int64_t sum_groups() const {
    if (short_planes()) return plane_blocks();
    return layout == Layout::NCS || per_sample ? N : 1;
  }
  int64_t seg_chunks() const { return ceil_div(seg_len(), kChunk); }
  // Index of the first value of statistic s: the shift of all its block moments.
  int64_t first_index(int64_t s) const {
    const int64_t k = per_sample ? s / G : 0, c = (s % G) * cpg;
    return layout == Layout::NCS ? (k * C + c) * S : k * group_rows() * C + c;
  }
};

// The statistics are accumulated as moments of x - shift and shifted back, shift = math::sample_shift
// of the statistic's first values (a run in memory: a plane's start channels first, its channel in
// the first rows channels last).
template <class T, class A = acc_t<T>>
A stat_shift(const Problem& p, const T* x, int64_t s) {
  const bool ncs = p.layout == Layout::NCS;
  const int64_t run = ncs ? (p.per_sample ? p.cpg * p.S : p.S) : p.group_rows();
  return math::sample_shift<A>(x + p.first_index(s), run, ncs ? 1 : p.C, math::kChannelShiftSample);
}

// stat_shift of every statistic. Channels last with a statistic per channel (BatchNorm,
// InstanceNorm), a vector of channels at a time from whole rows: one statistic at a time, the sample
// went down a column, a line per value ([8,2048,7,7] forward: 22-25 us of 290-330).
template <class T, class A = acc_t<T>>
std::vector<A> stat_shifts(const Problem& p, const T* x) {
  std::vector<A> out(size_t(p.num_stats));
  if (p.layout == Layout::NSC && p.cpg == 1 && p.group_rows() > 0) {
    const int64_t C = p.C, n = math::shift_sample_size(p.group_rows(), math::kChannelShiftSample);
    if (n == 0) {
      // Runs too short for a sample: each shift is its channel's value in the group's first row, so
      // the shifts are that row (a parallel region around these few loads cost more than they do:
      // BatchNorm [4,2048] training forward 42-44 -> 32-37 us).
      for (int64_t k = 0; k < p.row_groups(); ++k) {
        const T* row = x + k * p.group_rows() * C;
        for (int64_t c = 0; c < C; ++c) out[size_t(k * C + c)] = load<A>(row[c]);
      }
      return out;
    }
    constexpr int64_t L = Vec<A>::kLanes;
    const int64_t vectors = p.row_groups() * (C / L);
    parallel_for(vectors, std::max<int64_t>(1, 4096 / n), [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t k = v / (C / L), c = v % (C / L) * L;
        const T* first = x + k * p.group_rows() * C + c;
        const auto shift = math::shift_of_sample<A>(n, [&](int64_t i) { return get<A, L>(first + i * C); },
                                                    get<A, L>(first));
        std::memcpy(&out[size_t(k * C + c)], &shift, sizeof(shift));
      }
    });
    for (int64_t k = 0; k < p.row_groups(); ++k)
      for (int64_t c = C / L * L; c < C; ++c) out[size_t(k * C + c)] = stat_shift<T, A>(p, x, k * C + c);
    return out;
  }
  parallel_for(p.num_stats, 256, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) out[size_t(s)] = stat_shift<T, A>(p, x, s);
  });
  return out;
}

// ---- channels-last helpers -------------------------------------------------------------------------

// out[c] = v(stat of (row group k, channel c)) for the C channels.
template <class A, class V>
void expand_groups(const Problem& p, int64_t k, A* out, V&& v) {
  const int64_t s0 = p.per_sample ? k * p.G : 0;
  if (p.cpg == 1) {  // (a copy: the loop below cost 4-5 ns a channel, 9 us of [8,2048,7,7]'s forward)
    for (int64_t c = 0; c < p.C; ++c) out[c] = v(s0 + c);
    return;
  }
  for (int64_t g = 0; g < p.G; ++g) {
    const A val = v(s0 + g);
    for (int64_t c = g * p.cpg; c < (g + 1) * p.cpg; ++c) out[c] = val;
  }
}

// fn(k) for every row group k, in parallel.
template <class Fn>
void for_row_groups(const Problem& p, Fn&& fn) {
  parallel_for(p.row_groups(), std::max<int64_t>(1, kTaskElements / p.C), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) fn(k);
  });
}

// Per-channel scratch of one task.
template <class A>
struct RowScratch {
  std::vector<A> a, b, c;
  explicit RowScratch(int64_t C) : a(size_t(C)), b(size_t(C)), c(size_t(C)) {}
};

// A block of n values in rows of channels about to be walked column tile by column tile: float16
// widened into this thread's float scratch `slot` (exact: the same sums; the widening reads it in
// address order), other types as they are. Returns what the walk reads. (A first read of every line
// in address order where the tiles walk a row in several pieces, to start the stream prefetchers,
// cost more than it saved on 2026-11-24: GroupNorm [8,256,64,64] channels-last 2.20-2.29 -> 1.92-1.95
// ms forward and 3.79-3.83 -> 3.10-3.13 ms backward without it, BatchNorm [8,2048,7,7] 8% and 13%,
// also with x evicted from the caches before each call.)
template <class T>
auto column_block(const T* x, int64_t n, int slot) {
  if constexpr (is_hardware_half<T>) {
    return widen_to_scratch(x, n, slot);
  } else {
    (void)n, (void)slot;
    return x;
  }
}

// Block moments of channels-last row blocks as structure of arrays: per block, a row of the G group
// means and a row of their M2s (all G of a block count rows * cpg values), so that the merges of
// blocks and the per-group steps are vector loops over groups.
template <class A>
struct BlockRow {
  A* mean = nullptr;
  A* m2 = nullptr;
  int64_t count = 0;
};

template <class A>
struct BlockRows {
  int64_t G;
  std::vector<A> mean, m2;  // [block][group]
  BlockRows(int64_t blocks, int64_t groups) : G(groups), mean(size_t(blocks * groups)), m2(size_t(blocks * groups)) {}
  BlockRow<A> row(int64_t block, int64_t count, int64_t g0 = 0) {
    return {&mean[size_t(block * G + g0)], &m2[size_t(block * G + g0)], count};
  }
};

// The moments of groups [0, width) of `blocks` rows (rows(b): block b's row from group g0 on) merged
// pairwise in block order, in place in the rows: each group's merges are those of
// math::pairwise_moments over its blocks (the same tree, chan_merge's arithmetic per lane).
template <class A, class RowOf>
BlockRow<A> merge_block_rows(int64_t blocks, int64_t width, RowOf&& row_of) {
  auto merge = [width](BlockRow<A> a, const BlockRow<A>& b) {
    const A ac = A(a.count), fb = A(b.count) / A(a.count + b.count);
#pragma omp simd
    for (int64_t g = 0; g < width; ++g) math::chan_merge_lane(a.mean[g], a.m2[g], b.mean[g], b.m2[g], ac, fb);
    a.count += b.count;
    return a;
  };
  math::Pairwise<BlockRow<A>, decltype(merge)> rows(merge);
  for (int64_t b = 0; b < blocks; ++b) rows.add(row_of(b));
  return rows.result();
}

// Moments of x - shift of each of the G groups over `rows` rows of C channels starting at x (as
// column_block gives the block), with sh[c] the shift of channel c's group, into `out`.
template <class T, class A>
void row_block_moments(const Problem& p, const T* x, int64_t rows, const A* sh, RowScratch<A>& sc,
                       const BlockRow<A>& out) {
  const int64_t C = p.C, G = p.G, cpg = p.cpg;
  A* acc = sc.a.data();
  A* mref = sc.b.data();
  A* sq = sc.c.data();
  // One pass: per-channel sums of d = x - shift and d^2, kept for each group while as accurate as
  // two passes (the criterion of shifted_block_moments).
  column_sum2(C, rows, acc, sq, [&](int64_t r, int64_t c, A& d, A& d_again) {
    d = d_again = load<A>(x[r * C + c]) - sh[c];
  });
  const int64_t n = rows * cpg;
  const A an = A(n);
  // (false for NaN and m2 < 0; m2 == 0 passes only with a zero mean, all d zero: exact)
  auto kept = [an](A mean, A m2) { return mean * mean * an <= A(4) * m2; };
  int redo = 0;
  if (cpg == 1) {
    // A group per channel (BatchNorm, InstanceNorm): the steps below lane by lane, the same values
    // (a sum of one term is that term). One group at a time, their scalar divisions and branches
    // cost more than the block's sums when C is in the thousands.
#pragma omp simd reduction(+ : redo)
    for (int64_t c = 0; c < C; ++c) {
      const A mean = acc[c] / an, m2 = sq[c] - acc[c] * mean;
      out.mean[c] = mean;
      out.m2[c] = m2;
      redo += kept(mean, m2) ? 0 : 1;
    }
  } else {
    for (int64_t g = 0; g < G; ++g) {
      A s1 = 0, s2 = 0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        s1 += acc[c];
        s2 += sq[c];
      }
      const A mean = s1 / an, m2 = s2 - s1 * mean;
      out.mean[g] = mean;
      out.m2[g] = m2;
      redo += kept(mean, m2) ? 0 : 1;
    }
  }
  if (redo == 0) return;
  // The corrected two-pass for the other groups, while the block is in cache. Pass 1: each group's
  // mean estimate from the per-channel sums of x - shift, which acc already holds from the one pass
  // (the sums a separate pass would take, bit for bit: the same terms in the same order).
  const A inv_rows = A(1) / A(rows);
  if (cpg == 1) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) mref[c] = acc[c] * inv_rows;  // (/ A(1) below: exact)
  } else {
    for (int64_t g = 0; g < G; ++g) {
      A s = 0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) s += acc[c];
      const A mg = s * inv_rows / A(cpg);
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) mref[c] = mg;
    }
  }
  // Pass 2: per-channel sums of d and d^2 around the group's estimate.
  column_sum2(C, rows, acc, sq, [&](int64_t r, int64_t c, A& d, A& d_again) {
    d = d_again = (load<A>(x[r * C + c]) - sh[c]) - mref[c];
  });
  if (cpg == 1) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const Moments<A> m = corrected_moments(n, mref[c], acc[c], sq[c]);
      const bool keep = kept(out.mean[c], out.m2[c]);
      out.mean[c] = keep ? out.mean[c] : m.mean;
      out.m2[c] = keep ? out.m2[c] : m.m2;
    }
    return;
  }
  for (int64_t g = 0; g < G; ++g) {
    if (kept(out.mean[g], out.m2[g])) continue;
    A sd = 0, s2 = 0;
    for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
      sd += acc[c];
      s2 += sq[c];
    }
    const Moments<A> m = corrected_moments(n, mref[g * cpg], sd, s2);
    out.mean[g] = m.mean;
    out.m2[g] = m.m2;
  }
}

// ---- forward ---------------------------------------------------------------------------------------

template <class A>
struct Stats {
  std::vector<Moments<A>> m;  // per statistic (batch statistics only)
  std::vector<A> mean, rstd;  // per statistic
  std::vector<A> shift, rel;  // per statistic: mean = shift + rel before rounding (batch statistics)
};

// fn(a's vector, b's vector) for each of the Stats' vectors.
template <class A, class Fn>
void each_stat_vector(Stats<A>& a, const Stats<A>& b, Fn&& fn) {
  fn(a.m, b.m);
  fn(a.mean, b.mean);
  fn(a.rstd, b.rstd);
  fn(a.shift, b.shift);
  fn(a.rel, b.rel);
}

// Statistic s from the moments of its x - shift.
template <class A>
void finish_stat(Stats<A>& st, int64_t s, Moments<A> m, A shift, A eps) {
  st.shift[size_t(s)] = shift;
  st.rel[size_t(s)] = m.mean;
  m.mean += shift;
  st.m[size_t(s)] = m;
  st.mean[size_t(s)] = m.mean;
  st.rstd[size_t(s)] = math::rstd_from_var(math::biased_var(m), eps);
}

// The per-element maps of map_run and map_rows (v: the input values, q: the operands; vectors or
// scalars): y from {x} with {mean, rstd, weight, bias}; dx from {dy, x} with {weight, mean, rstd,
// mean(g), mean(g * xhat)} (batch statistics) or with {weight, rstd} (fixed statistics).
constexpr auto kApplyMap = [](const auto* v, const auto* q) {
  return math::row_norm_apply(v[0], q[0], q[1], q[2], q[3]);
};
constexpr auto kDxMap = [](const auto* v, const auto* q) {
  return math::row_norm_dx(v[0] * q[0], (v[1] - q[1]) * q[2], q[2], q[3], q[4]);
};
constexpr auto kFixedStatsDxMap = [](const auto* v, const auto* q) {
  const std::remove_cv_t<std::remove_reference_t<decltype(v[0])>> zero{};
  return math::row_norm_dx(v[0] * q[0], zero, q[1], zero, zero);
};

// Whether a run of T goes through map_run's explicit vector loop: always for the types whose
// conversions the compiler vectorizes poorly (maps_whole_vectors), and for a streamed output that
// map_run streams from registers; else the compiler vectorizes write_run's loop. (The same formula
// per value either way.)
template <class T, class A>
bool maps_explicitly(bool stream) {
  return maps_whole_vectors<T> || (stream && maps_to_whole_lines<T, A>);
}

// y = row_norm_apply(x) over n contiguous values that share one channel.
template <class T, class A>
void apply_run(const T* x, T* y, int64_t n, A mean, A rstd, A w, A b, bool stream) {
  if (maps_explicitly<T, A>(stream)) {  // (vector_convert.h)
    const T* in[1] = {x};
    const A par[4] = {mean, rstd, w, b};
    map_run(n, in, y, par, stream, kApplyMap);
  } else {
    write_run(y, n, stream, [&](int64_t i) { return store<T>(math::row_norm_apply(load<A>(x[i]), mean, rstd, w, b)); });
  }
}

// (n, c) of the plane after plane n * C + c.
inline void next_plane(int64_t C, int64_t& n, int64_t& c) {
  if (++c == C) {
    c = 0;
    ++n;
  }
}

// map_planes (cpu/plane_map.h) over the planes [u0, u1) of a channels-first problem:
// operands(op, c, s) fills plane (n, c)'s operands from its channel c and statistic s, (n, c)
// counted along (next_plane) instead of divided out per plane.
template <int I, int P, class T, class A, class Operands, class Fn>
void map_planes_of(const Problem& p, int64_t u0, int64_t u1, const T* const (&in)[I], T* out, bool stream,
                   Operands&& operands, Fn&& fn) {
  int64_t n = u0 / p.C, c = u0 % p.C;
  map_planes<I, P, T, A>(p.S, u0, u1, in, out, stream, [&](A (&op)[P]) {
    operands(op, c, p.stat(n, c));
    next_plane(p.C, n, c);
  }, fn);
}

// Short planes, channels [c0, c1) of every sample: out = fn(inputs, operands) over each sample's run
// of (c1 - c0) * S contiguous values, each value's operands read from arrays that repeat channel c's
// operands (operands(op, c)) over its planes' S values. Built once for all N samples, the arrays
// spare each plane the loop set-up of map_planes_of. The per-element formula is fn's, so the values
// are those of map_planes_of.
template <int I, int P, class T, class A, class Operands, class Fn>
void map_short_plane_runs(const Problem& p, int64_t c0, int64_t c1, const T* const (&in)[I], T* out, bool stream,
                          Operands&& operands, Fn&& fn) {
  const int64_t S = p.S, W = (c1 - c0) * S;
  thread_local std::vector<A> expanded;
  expanded.resize(size_t(P * W));
  for (int64_t c = c0; c < c1; ++c) {
    A op[P];
    operands(op, c);
    for (int q = 0; q < P; ++q) std::fill_n(expanded.begin() + q * W + (c - c0) * S, S, op[q]);
  }
  const A* par[P];
  for (int q = 0; q < P; ++q) par[q] = expanded.data() + q * W;
  for (int64_t n = 0; n < p.N; ++n) {
    const int64_t off = (n * p.C + c0) * S;
    write_staged(out + off, W, stream, [&](int64_t i0, int64_t len, T* dst) {
      vector_loop<A>(len, [&](int64_t j, auto lanes) {
        constexpr int64_t K = decltype(lanes)::value;
        decltype(splat<A, K>(A())) a[I], q[P];
        for (int k = 0; k < I; ++k) a[k] = get<A, K>(in[k] + off + i0 + j);
        for (int k = 0; k < P; ++k) q[k] = get<A, K>(par[k] + i0 + j);
        put<A, K>(dst + j, fn(a, q));
      });
    });
  }
}

// Channels per task of the short-plane passes: about kShortTaskBytes of inputs (`bytes_per_value`
// per value), the expanded operands (`operand_bytes` per value) within kShortOperandBytes, at least
// two tasks per thread. Only the schedule depends on it.
int64_t short_plane_group(const Problem& p, int64_t bytes_per_value, int64_t operand_bytes) {
  const int64_t per_channel = std::max<int64_t>(1, p.N * p.S * bytes_per_value);
  const int64_t per_thread = ceil_div(p.C, 2 * int64_t(get_num_threads()));
  const int64_t operands = kShortOperandBytes / std::max<int64_t>(1, p.S * operand_bytes);
  const int64_t group = std::max<int64_t>(1, std::min({kShortTaskBytes / per_channel, operands, per_thread}));
  // Runs of whole vectors where a multiple of `whole` channels fits the limits taken less strictly:
  // a run's last partial vector goes value by value ([256,64,7,7] backward, 2 channels a group:
  // 4% slower than unfused; padding that vector instead cost more).
  const int64_t whole = kFloatsPerLine / std::gcd(p.S, kFloatsPerLine);
  if (group % whole == 0) return group;
  const int64_t rounded = std::max(whole, group / whole * whole);
  const bool fits = rounded <= std::min(per_thread, 4 * operands) && rounded * per_channel <= 8 * kShortTaskBytes;
  return fits ? rounded : group;
}

// fn(n, c, ch) for the units [u0, u1) of (plane n * C + c, chunk ch of pch) in order, counting
// instead of dividing per unit (the divisions cost as much as the work on a short plane).
template <class Fn>
void for_plane_chunks(int64_t C, int64_t pch, int64_t u0, int64_t u1, Fn&& fn) {
  int64_t plane = u0 / pch, ch = u0 % pch, n = plane / C, c = plane % C;
  for (int64_t u = u0; u < u1; ++u) {
    fn(n, c, ch);
    if (++ch == pch) {
      ch = 0;
      next_plane(C, n, c);
    }
  }
}

// Channels first: statistic s covers the segments (n, g) for n in [n0, n1).
struct Members {
  int64_t n0, n1, g;
};
Members members(const Problem& p, int64_t s) {
  if (p.per_sample) return {s / p.G, s / p.G + 1, s % p.G};
  return {0, p.N, s};
}

// Plane (n, c) of statistic s + 1 lies where plane (n - dn, c - dc) of s does in s's segments
// (per-sample statistics lie in different samples and groups; BatchNorm's in different channels).
struct PairShift {
  int64_t dn, dc;
};
PairShift pair_shift(const Problem& p, int64_t s) {
  const Members m0 = members(p, s), m1 = members(p, s + 1);
  return {m1.n0 - m0.n0, (m1.g - m0.g) * p.cpg};
}

// Channels first: the moments of statistic s, merged pairwise over its segments and their chunks in
// order. `chunk(n, ch)` gives the moments of chunk ch of segment (n, g).
template <class A, class ChunkFn>
Moments<A> chain_chunks(const Problem& p, int64_t s, ChunkFn&& chunk) {
  const Members mb = members(p, s);
  const int64_t nch = p.seg_chunks();
  math::PairwiseMoments<A> m;
  for (int64_t n = mb.n0; n < mb.n1; ++n)
    for (int64_t ch = 0; ch < nch; ++ch) m.add(chunk(n, ch));
  return m.result();
}

// Channels first: the moments of each chunk of each segment in parallel, then each statistic's
// chain of them in order. `chunk_moments(n, g, ch, shift)`.
template <class T, class A, class ChunkFn>
void chunk_stats(const Problem& p, const T* x, const std::vector<A>& shifts, A eps, Stats<A>& st,
                 ChunkFn& chunk_moments) {
  const int64_t N = p.N, G = p.G, L = p.seg_len(), nch = p.seg_chunks();
  std::vector<Moments<A>> um(static_cast<size_t>(N * G * nch));
  parallel_for(N * G * nch, std::max<int64_t>(1, kTaskElements / std::min(L, kChunk)), [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t seg = u / nch, ch = u % nch, n = seg / G, g = seg % G;
      um[size_t(u)] = chunk_moments(n, g, ch, shifts[size_t(p.per_sample ? seg : g)]);
    }
  });
  parallel_for(p.num_stats, std::max<int64_t>(1, 4096 / (N * nch)), [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t g = members(p, s).g;
      auto unit = [&](int64_t n, int64_t ch) { return um[size_t((n * G + g) * nch + ch)]; };
      finish_stat(st, s, chain_chunks<A>(p, s, unit), shifts[size_t(s)], eps);
    }
  });
}

// A short plane's values into a gathering buffer, in fixed-size moves the compiler inlines: a memcpy
// call cost more than a plane of 64 bytes. GCC turns the loop of 64-byte moves back into a memcpy
// call (loop distribution: 5% of BatchNorm2d(512) [16,512,4,4] forward+backward), hence the attribute.
#if defined(__GNUC__) && !defined(__clang__)
#define NK_NO_COPY_LOOP_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NK_NO_COPY_LOOP_CALLS
#endif
template <class T>
NK_NO_COPY_LOOP_CALLS void copy_plane(T* dst, const T* src, int64_t n) {
  char* d = reinterpret_cast<char*>(dst);
  const char* s = reinterpret_cast<const char*>(src);
  const int64_t bytes = n * int64_t(sizeof(T));
  int64_t i = 0;
  for (; i + 64 <= bytes; i += 64) std::memcpy(d + i, s + i, 64);
  // The rest: at most one move of each size, each of a constant size (a loop over the sizes left
  // them to run-time memcpy calls).
  auto move = [&](auto step) {
    if (i + step.value <= bytes) {
      std::memcpy(d + i, s + i, size_t(step.value));
      i += step.value;
    }
  };
  move(std::integral_constant<int64_t, 32>{});
  move(std::integral_constant<int64_t, 16>{});
  move(std::integral_constant<int64_t, 8>{});
  move(std::integral_constant<int64_t, 4>{});
  move(std::integral_constant<int64_t, 2>{});
}

// The planes (n, c) of samples [n0, n1) of t, one after the other into dst.
template <class T>
void gather_planes(const Problem& p, const T* t, const Problem::PlaneBlock& pb, T* dst) {
  for (int64_t n = pb.n0; n < pb.n1; ++n) copy_plane(dst + (n - pb.n0) * p.S, t + (n * p.C + pb.c) * p.S, p.S);
}

// BatchNorm channels first with planes shorter than kShortPlane values (a CNN's last stages: 7x7,
// 4x4, 1x1): moments per block of a channel's planes instead of per plane, the block's planes
// gathered into an L1 buffer (blocks of kStatBlock values: kStatBlock / S planes). Per plane, the
// lane reductions, divisions and merges of a moment cost more than its few values: BatchNorm2d(512)
// [16,512,4,4] float32 ran at 0.7x torch's speed. Here the moments of the plane blocks [u0, u1) (unit
// u = c * plane_blocks() + blk: Problem::plane_block) into um.
template <class T, class A>
void short_plane_moments(const Problem& p, const T* x, const std::vector<A>& shifts, int64_t u0, int64_t u1,
                         Moments<A>* um) {
  alignas(64) T gathered[kStatBlock];
  for (int64_t u = u0; u < u1; ++u) {
    const Problem::PlaneBlock pb = p.plane_block(u);
    gather_planes(p, x, pb, gathered);
    um[u] = shifted_moments(gathered, (pb.n1 - pb.n0) * p.S, shifts[size_t(pb.c)]);
  }
}

// Channel c's statistic from its blocks' moments, pairwise in block order.
template <class A>
void finish_short_plane_stat(const Problem& p, int64_t c, const Moments<A>* um, const std::vector<A>& shifts, A eps,
                             Stats<A>& st) {
  const int64_t blocks = p.plane_blocks();
  finish_stat(st, c, math::pairwise_moments<A>(blocks, [&](int64_t blk) { return um[c * blocks + blk]; }),
              shifts[size_t(c)], eps);
}

template <class T, class A>
void batch_stats_of_short_planes(const Problem& p, const T* x, const std::vector<A>& shifts, A eps, Stats<A>& st) {
  const int64_t C = p.C, S = p.S, blocks = p.plane_blocks();
  std::vector<Moments<A>> um(static_cast<size_t>(C * blocks));
  const int64_t grain = std::max<int64_t>(1, kTaskElements / (p.planes_per_block() * S));
  parallel_for(C * blocks, grain, [&](int64_t u0, int64_t u1) { short_plane_moments(p, x, shifts, u0, u1, um.data()); });
  parallel_for(C, std::max<int64_t>(1, 4096 / blocks), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) finish_short_plane_stat(p, c, um.data(), shifts, eps, st);
  });
}

// y of channels [c0, c1) of planes shorter than kRunPlane, in runs of planes.
template <class T, class A>
void apply_short_plane_runs(const Problem& p, const T* x, T* y, const Stats<A>& st, const A* w, const A* b,
                            bool stream, int64_t c0, int64_t c1) {
  const T* in[1] = {x};
  map_short_plane_runs<1, 4, T, A>(p, c0, c1, in, y, stream, [&](A (&op)[4], int64_t c) {
    op[0] = st.mean[size_t(c)], op[1] = st.rstd[size_t(c)], op[2] = w[c], op[3] = b[c];
  }, kApplyMap);
}

// The statistics and outputs of planes shorter than kRunPlane, fused per group of channels
// (short_plane_group): a group's moments read its planes from memory (gathered through L1), its
// outputs read them again from L2. The same moments, merges and map as the unfused passes.
template <class T, class A>
void fused_forward_short_planes(const Problem& p, const T* x, T* y, const A* w, const A* b,
                                const std::vector<A>& shifts, A eps, Stats<A>& st) {
  const int64_t blocks = p.plane_blocks();
  std::vector<Moments<A>> um(static_cast<size_t>(p.C * blocks));
  const bool stream = p.streams(sizeof(T));
  parallel_for(p.C, short_plane_group(p, sizeof(T), 4 * sizeof(A)), [&](int64_t c0, int64_t c1) {
    short_plane_moments(p, x, shifts, c0 * blocks, c1 * blocks, um.data());
    for (int64_t c = c0; c < c1; ++c) finish_short_plane_stat(p, c, um.data(), shifts, eps, st);
    apply_short_plane_runs(p, x, y, st, w, b, stream, c0, c1);
  });
}

// The moments of statistic s a block at a time, in chain_chunks's order (its segments (n, g), their
// chunks, shifted_moments's blocks of each chunk) with the same pairwise merges: the same bits as
// chunk_stats (the determinism tests compare the two: 1 thread fuses where 2 threads do not).
template <class T, class A>
class StatWalk {
 public:
  // Where a block lies: segment n, values [o, o + len) of it.
  struct Block {
    int64_t n, o, len;
  };
  StatWalk(const Problem& p, const T* x, int64_t s)
      : p_(p), x_(x), mb_(members(p, s)), n_(mb_.n0), shift_(stat_shift(p, x, s)) {}
  bool done() const { return n_ >= mb_.n1; }
  A shift() const { return shift_; }
  Moments<A> result() const { return chain_.result(); }
  // The values of the block that step() takes next: where they start and how many (none when done).
  std::pair<const T*, int64_t> next_values() const {
    if (done()) return {nullptr, 0};
    return {x_ + (n_ * p_.C + mb_.g * p_.cpg) * p_.S + pos_, std::min(kStatBlock, chunk_left())};
  }
  // Takes the moments of the next block.
  Block step() {
    const auto [values, len] = next_values();
    // (A one-block chunk too: a pairwise merge of one value is that value, as shifted_moments's.)
    blocks_.add(shifted_moments(values, len, shift_));
    if (len == chunk_left()) {
      chain_.add(blocks_.result());
      blocks_ = math::PairwiseMoments<A>();
    }
    const Block blk{n_, pos_, len};
    pos_ += len;
    if (pos_ == p_.seg_len()) pos_ = 0, ++n_;
    return blk;
  }

 private:
  // Values from pos_ to the end of its chunk.
  int64_t chunk_left() const {
    const int64_t in_chunk = pos_ % kChunk;
    return std::min(kChunk, p_.seg_len() - (pos_ - in_chunk)) - in_chunk;
  }

  const Problem& p_;
  const T* x_;
  Members mb_;
  int64_t n_, pos_ = 0;
  A shift_;
  math::PairwiseMoments<A> chain_, blocks_;
};

// Channels first, statistics that fit the cache budget (fuse_stats): each task takes consecutive
// statistics, and normalizes statistic s a block at a time, each block after the same block of
// statistic s + 1's moments. The normalization reads s from L2 (a GroupNorm segment or a BatchNorm
// channel outgrows L1) while the moments read s + 1 from memory; one statistic after the other, the
// L2 pass left memory idle: GroupNorm [8,256,64,64] float32 forward took 14% longer than LayerNorm's
// same bytes, now as long (1.55 -> 1.43 ms, alternating builds). Tasks of kFusedTaskBytes: the
// pipeline restarts at each task's first statistic. While a block of s is normalized, the next
// block of s + 1 is requested into L2 a piece at a time (prefetch_ahead.h; the moments then find it
// there): on an AVX2 Zen 3, both variants interleaved in one process, 16 rounds, GroupNorm
// [8,256,64,64] float32 forward 1986-2504 (median 2103) -> 1691-2025 (1840) us, BatchNorm
// [32,64,56,56] training 1566-2064 (1853) -> 1484-2236 (1667) us.
template <class T, class A>
void fused_forward_ncs(const Problem& p, const T* x, T* y, const A* w, const A* b, A eps, Stats<A>& st,
                       bool stream) {
  const int64_t L = p.seg_len(), S = p.S;
  const bool requests = p.N * p.C * S * int64_t(sizeof(T)) >= kAheadMinBytes;
  const FusedTasks ft = fused_tasks(p.count, sizeof(T));
  parallel_for(p.num_stats, ft.grain, [&](int64_t s0, int64_t s1) {
    RequestAhead ahead;
    // Values [o0, o1) of segment n of statistic s, channel by channel (in pieces of kAheadPiece
    // between the requests).
    const int64_t piece = requests ? kAheadPiece : L;
    auto normalize = [&](int64_t s, int64_t n, int64_t o0, int64_t o1) {
      const int64_t c0 = members(p, s).g * p.cpg, base = (n * p.C + c0) * S;
      for (int64_t o = o0; o < o1;) {
        const int64_t c = o / S, e = std::min({o1, (c + 1) * S, o + piece});
        ahead.request((e - o) * int64_t(sizeof(T)));
        apply_run(x + base + o, y + base + o, e - o, st.mean[size_t(s)], st.rstd[size_t(s)], w[c0 + c],
                  b[c0 + c], stream);
        o = e;
      }
    };
    auto take = [&](int64_t s, auto&& after) {
      StatWalk<T, A> wk(p, x, s);
      while (!wk.done()) {
        const typename StatWalk<T, A>::Block blk = wk.step();
        const auto [next, len] = wk.next_values();
        ahead.aim(requests ? next : nullptr, len * int64_t(sizeof(T)));
        after(blk);
      }
      ahead.aim(nullptr, 0);
      finish_stat(st, s, wk.result(), wk.shift(), eps);
    };
    // (A block's offset within its segment is the same in s: whole segments pair up.)
    auto normalize_at = [&](int64_t s, const typename StatWalk<T, A>::Block& blk) {
      normalize(s, blk.n - pair_shift(p, s).dn, blk.o, blk.o + blk.len);
    };
    auto normalize_all = [&](int64_t s) {
      const Members mb = members(p, s);
      for (int64_t n = mb.n0; n < mb.n1; ++n) normalize(s, n, 0, L);
    };
    run_fused_task(ft, s0, s1, take, normalize_at, normalize_all);
  });
}

template <class T, class A>
void forward_ncs(const Problem& p, const T* x, T* y, const A* w, const A* b, A eps, bool batch, Stats<A>& st) {
  const int64_t N = p.N, C = p.C, S = p.S, cpg = p.cpg;
  const int64_t L = p.seg_len();
  const bool stream = p.streams(sizeof(T));
  auto chunk_moments = [&](int64_t n, int64_t g, int64_t ch, A shift) {
    return shifted_moments(x + (n * C + g * cpg) * S + ch * kChunk, std::min(kChunk, L - ch * kChunk), shift);
  };
  if (batch) {
    // (Fused where a statistic fits the cache budget; BatchNorm's short planes take their gathered
    // blocks, and the statistics alone (SyncBatchNorm's local phase) the unfused pass.)
    if (y && (p.per_sample || !p.short_planes()) && fuse_stats(p.count * int64_t(sizeof(T)), p.num_stats)) {
      fused_forward_ncs(p, x, y, w, b, eps, st, stream);
      return;
    }
    const std::vector<A> shifts = stat_shifts<T, A>(p, x);
    if (p.plane_runs() && y) {
      fused_forward_short_planes(p, x, y, w, b, shifts, eps, st);
      return;
    }
    if (p.short_planes()) {
      batch_stats_of_short_planes(p, x, shifts, eps, st);
    } else {
      chunk_stats(p, x, shifts, eps, st, chunk_moments);
    }
  }
  if (!y) return;  // statistics only (SyncBatchNorm's local phase)
  if (p.plane_runs()) {  // (running statistics: eval)
    parallel_for(C, short_plane_group(p, sizeof(T), 4 * sizeof(A)), [&](int64_t c0, int64_t c1) {
      apply_short_plane_runs(p, x, y, st, w, b, stream, c0, c1);
    });
    return;
  }
  // Normalize (plane, chunk of the plane) units, the last ones first: what the statistics pass read
  // last may still be in the last-level cache.
  const int64_t pch = ceil_div(S, kChunk), units = N * C * pch;
  parallel_for_from_end(units, std::max<int64_t>(1, kTaskElements / std::min(S, kChunk)), [&](int64_t u0, int64_t u1) {
    if (S < kShortPlane) {  // (whole planes: pch == 1, units are planes)
      const T* in[1] = {x};
      map_planes_of<1, 4, T, A>(p, u0, u1, in, y, stream, [&](A (&op)[4], int64_t c, int64_t s) {
        op[0] = st.mean[size_t(s)], op[1] = st.rstd[size_t(s)], op[2] = w[c], op[3] = b[c];
      }, kApplyMap);
      return;
    }
    for_plane_chunks(C, pch, u0, u1, [&](int64_t n, int64_t c, int64_t ch) {
      const int64_t s = p.stat(n, c), off = (n * C + c) * S + ch * kChunk;
      apply_run(x + off, y + off, std::min(kChunk, S - ch * kChunk), st.mean[size_t(s)], st.rstd[size_t(s)], w[c],
                b[c], stream);
    });
  });
}

// Channels last: normalize rows [r0, r1) of row group k with per-channel vectors.
template <class T, class A>
void apply_rows(const Problem& p, const T* x, T* y, int64_t r0, int64_t r1, const A* me, const A* re, const A* w,
                const A* b) {
  const T* in[1] = {x};
  const A* par[4] = {me, re, w, b};
  map_rows(p.C, r0, r1, in, y, par, p.streams(sizeof(T)), kApplyMap);
}

template <class T, class A>
void forward_nsc(const Problem& p, const T* x, T* y, const A* w, const A* b, A eps, bool batch, Stats<A>& st) {
  const int64_t C = p.C, G = p.G, K = p.row_groups(), R = p.group_rows();
  const int64_t Rb = p.block_rows(), nb = p.row_blocks();
  // Per row group, the per-channel mean and rstd.
  std::vector<A> me(size_t(K * C)), re(size_t(K * C));
  auto expand = [&](int64_t k) {
    expand_groups(p, k, &me[size_t(k * C)], [&](int64_t s) { return st.mean[size_t(s)]; });
    expand_groups(p, k, &re[size_t(k * C)], [&](int64_t s) { return st.rstd[size_t(s)]; });
  };
  if (batch) {
    // Per row group, each channel's shift (that of its statistic).
    // (Computed per statistic in parallel first: a BatchNorm's K = 1 expansion is one task, and
    // its thousands of strided samples took 8% of [8,2048,7,7]'s forward on one thread.)
    const std::vector<A> stat_shift_values = stat_shifts<T, A>(p, x);
    std::vector<A> shifts(size_t(K * C));
    for_row_groups(p, [&](int64_t k) {
      expand_groups(p, k, &shifts[size_t(k * C)], [&](int64_t s) { return stat_shift_values[size_t(s)]; });
    });
    // Block moments per [sample][block][group], each block's from row_block_moments, and a sample's
    // statistics from its blocks' moments, pairwise in block order: the same arithmetic on every path.
    BlockRows<A> um(K * nb, G);
    auto block_count = [&](int64_t blk) { return std::min(Rb, R - blk * Rb) * p.cpg; };
    auto block_moments = [&](int64_t k, int64_t blk, RowScratch<A>& sc) {
      const int64_t r0 = blk * Rb, rows = std::min(Rb, R - r0);
      row_block_moments(p, column_block(x + (k * R + r0) * C, rows * C, 0), rows, &shifts[size_t(k * C)], sc,
                        um.row(k * nb + blk, block_count(blk)));
    };
    // Statistics [g0, g1) of sample k (the merges change um's rows: once per statistic).
    auto finish_groups = [&](int64_t k, int64_t g0, int64_t g1) {
      const BlockRow<A> m = merge_block_rows<A>(nb, g1 - g0, [&](int64_t blk) {
        return um.row(k * nb + blk, block_count(blk), g0);
      });
      for (int64_t g = g0; g < g1; ++g)
        finish_stat(st, k * G + g, math::block_moments(m.count, m.mean[g - g0], m.m2[g - g0]),
                    shifts[size_t(k * C + g * p.cpg)], eps);
    };
    auto finish_sample = [&](int64_t k) {
      finish_groups(k, 0, G);
      expand(k);
    };
    // Normalizes block a of sample k counted from the last: what the statistics read last is
    // likeliest to be in cache (a forward walk evicts each line just before it is needed).
    auto apply_block = [&](int64_t k, int64_t a) {
      const int64_t e = R - a * Rb;
      apply_rows(p, x + k * R * C, y + k * R * C, std::max<int64_t>(0, e - Rb), e, &me[size_t(k * C)],
                 &re[size_t(k * C)], w, b);
    };
    const int64_t grain = std::max<int64_t>(1, kTaskElements / (Rb * C));
    const int64_t sample_bytes = R * C * int64_t(sizeof(T));
    if (y && p.per_sample && K >= 2 && sample_bytes >= kPipelineMinBytes) {
      // Samples past L2: a pipeline, all threads on the normalization of sample k and the statistics
      // of sample k + 1, their blocks alternating, so that DRAM serves reads and writes together
      // (GroupNorm [8,256,64,64] float32: 10% faster than a sample per thread, statistics then
      // normalization; the same arithmetic, so the same values).
      parallel_for(nb, grain, [&](int64_t b0, int64_t b1) {
        RowScratch<A> sc(C);
        for (int64_t blk = b0; blk < b1; ++blk) block_moments(0, blk, sc);
      });
      finish_sample(0);
      for (int64_t k = 0; k < K; ++k) {
        const bool next = k + 1 < K;
        parallel_for(next ? 2 * nb : nb, grain, [&](int64_t u0, int64_t u1) {
          RowScratch<A> sc(C);
          for (int64_t u = u0; u < u1; ++u) {
            if (!next) apply_block(k, u);
            else if (u % 2 == 0) apply_block(k, u / 2);
            else block_moments(k + 1, u / 2, sc);
          }
        });
        if (next) finish_sample(k + 1);
      }
      return;
    }
    if (y && p.per_sample && fuse_stats(sample_bytes, K)) {
      // A sample per task: its statistics, then its normalization while it is in cache.
      parallel_for(K, std::max<int64_t>(1, kTaskElements / (R * C)), [&](int64_t k0, int64_t k1) {
        RowScratch<A> sc(C);
        for (int64_t k = k0; k < k1; ++k) {
          for (int64_t blk = 0; blk < nb; ++blk) block_moments(k, blk, sc);
          finish_sample(k);
          for (int64_t a = 0; a < nb; ++a) apply_block(k, a);
        }
      });
      return;
    }
    parallel_for(K * nb, grain, [&](int64_t u0, int64_t u1) {
      RowScratch<A> sc(C);
      for (int64_t u = u0; u < u1; ++u) block_moments(u / nb, u % nb, sc);
    });
    // (Tasks of whole 64-byte lines of statistics, about kTaskElements block moments each: the merges
    // write their rows in place, and two threads merging the channels of one line took [32,64,56,56]
    // 40 us more than one thread alone.)
    parallel_for(p.num_stats, line_grain(kTaskElements / nb), [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1;) {
        const int64_t k = s / G, e = std::min(s1, (k + 1) * G);
        finish_groups(k, s - k * G, e - k * G);
        s = e;
      }
    });
  }
  if (!y) return;  // statistics only (SyncBatchNorm's local phase)
  for_row_groups(p, expand);
  // Normalize rows, the last ones first (see forward_ncs), split at row-group boundaries so that
  // each piece uses one group's vectors.
  parallel_for_from_end(K * R, std::max<int64_t>(1, kTaskElements / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1;) {
      const int64_t k = r / R, e = std::min(r1, (k + 1) * R);
      apply_rows(p, x, y, r, e, &me[size_t(k * C)], &re[size_t(k * C)], w, b);
      r = e;
    }
  });
}

// Whether an input compact in `given` takes a transposing pass into a problem laid out in `kernel`:
// the problem's layout is `kernel` and differs from `given` in memory (C > 1 and S > 1).
bool transposes(const Problem& p, Layout given, Layout kernel) {
  return p.layout == kernel && given != kernel && p.C > 1 && p.S > 1;
}

// The transposing passes (a channels-last x under InstanceNorm's channels-first y, and its
// channels-first dy under the channels-last backward) take chunks of samples, transposed in tasks of
// kTransposePiece rows or columns (a multiple of every build's tile) into a buffer that stays in
// cache: kTransposeChunkBytes per thread, within a quarter of the last-level cache (the streaming
// threshold). On the Zen 3, InstanceNorm [32,64,56,56] float32, alternating in one process: 1 MiB per
// thread lost to 4 MiB (backward 5.6 against 4.0 ms: two samples per chunk are too few for the
// backward's one task per sample), and 6-8 MiB lost again (4.6-4.7 ms).
constexpr int64_t kTransposeChunkBytes = 4 << 20;
constexpr int64_t kTransposePiece = 256;

// Samples per chunk: all N where the statistics (or gradient sums) span samples.
int64_t transpose_chunk(int64_t N, int64_t sample_bytes, bool per_sample_chunks) {
  if (!per_sample_chunks) return N;
  const int64_t bytes = std::min<int64_t>(kTransposeChunkBytes * get_num_threads(), int64_t(streaming_output_bytes));
  return std::clamp<int64_t>(bytes / std::max<int64_t>(1, sample_bytes), 1, N);
}

// n samples of src, each `rows` rows of `cols` values, into dst, each cols rows of `rows` values; in
// parallel, the tasks along each sample's longer side.
template <class T>
void transpose_samples(const T* src, int64_t rows, int64_t cols, int64_t n, T* dst) {
  const int64_t sample = rows * cols;
  const bool by_rows = rows >= cols;
  const int64_t side = by_rows ? rows : cols, pieces = ceil_div(side, kTransposePiece);
  parallel_for(n * pieces, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t k = u / pieces, i0 = u % pieces * kTransposePiece, i1 = std::min(side, i0 + kTransposePiece);
      if (by_rows)
        rows_to_planes(src + k * sample, rows, cols, i0, i1, 0, cols, dst + k * sample);
      else
        rows_to_planes(src + k * sample, rows, cols, 0, rows, i0, i1, dst + k * sample);
    }
  });
}

// The chunks of a transposing pass over the samples of `shape`: each chunk's n samples from sample n0
// of src (each `rows` rows of `cols` values) transposed into a buffer from the host cache, then
// fn(q, n0, buffer) with q the chunk's problem (shape with N = n; streaming as for all N).
template <class T, class Fn>
void for_transposed_chunks(detail::ChannelNormShape shape, bool per_sample_chunks, const T* src, int64_t rows,
                           int64_t cols, Fn&& fn) {
  const int64_t N = shape.N, sample = rows * cols;
  const int64_t chunk = transpose_chunk(N, sample * int64_t(sizeof(T)), per_sample_chunks);
  const size_t bytes = size_t(chunk * sample) * sizeof(T);
  const std::shared_ptr<void> buffer(host_cache_acquire(bytes), [bytes](void* ptr) { host_cache_release(ptr, bytes); });
  T* t = static_cast<T*>(buffer.get());
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    shape.N = std::min(chunk, N - n0);
    transpose_samples(src + n0 * sample, rows, cols, shape.N, t);
    Problem q(shape);
    q.stream_N = N;
    fn(q, n0, t);
  }
}

// x channels last under a channels-first y (InstanceNorm's output, as torch's): chunks of samples are
// transposed into cache and normalized from there channels first, so DRAM sees x read once and y
// written once (a whole transposed copy first wrote and read x's bytes again: InstanceNorm
// [32,64,56,56] float32 forward 3.4-4.7 -> 2.3-3.0 ms). The statistics and outputs are forward_ncs's
// on x's channels-first copy, chunk or not: per-sample statistics lie within a sample, and shared ones
// (running statistics in eval) are only read. BatchNorm's batch statistics take one chunk.
template <class T, class A>
void forward_transposed(const detail::ChannelNormShape& shape, const T* x, T* y, const A* w, const A* b, A eps,
                        bool batch, Stats<A>& st) {
  const int64_t sample = shape.C * shape.S;
  detail::ChannelNormShape chunks = shape;
  chunks.layout = Layout::NCS;
  for_transposed_chunks(chunks, shape.per_sample || !batch, x, shape.S, shape.C,
                        [&](const Problem& q, int64_t n0, const T* xt) {
    T* yc = y ? y + n0 * sample : nullptr;
    if (!shape.per_sample) {
      forward_ncs<T, A>(q, xt, yc, w, b, eps, batch, st);
      return;
    }
    // Per-sample statistics: the chunk's slice of st, in (eval's are set before) and out.
    const auto from = size_t(n0 * shape.groups), count = size_t(q.N * shape.groups);
    Stats<A> sub;
    each_stat_vector(sub, st, [&](auto& part, const auto& whole) {
      part.assign(whole.begin() + from, whole.begin() + from + count);
    });
    forward_ncs<T, A>(q, xt, yc, w, b, eps, batch, sub);
    each_stat_vector(st, sub, [&](auto& whole, const auto& part) {
      std::copy(part.begin(), part.end(), whole.begin() + from);
    });
  });
}

template <class T>
void forward(const ChannelNormForwardArgs& a) {
  using A = acc_t<T>;
  const Problem p(a.shape);
  const int64_t C = p.C, ns = p.num_stats;
  const A eps = A(a.eps);
  const bool eval = !a.training && a.running_mean && a.running_var;
  Stats<A> st;
  st.m.resize(size_t(ns));
  st.shift.assign(size_t(ns), A(0));
  st.rel.assign(size_t(ns), A(0));
  st.mean.assign(size_t(ns), A(0));
  st.rstd.assign(size_t(ns), A(NAN));
  if (eval && C > 0) {
    // Running statistics per channel (groups == C, shared by all n).
    const ParamValues<A> rm(a.running_mean, a.running_dtype, C, A(0));
    const ParamValues<A> rv(a.running_var, a.running_dtype, C, A(0));
    for (int64_t s = 0; s < ns; ++s) {
      const int64_t c = (s % p.G) * p.cpg;
      st.mean[size_t(s)] = rm[size_t(c)];
      st.rstd[size_t(s)] = math::rstd_from_var(rv[size_t(c)], eps);
    }
  }
  if (!p.empty()) {
    const ParamValues<A> w(a.weight, a.weight_dtype, C, A(1));
    const ParamValues<A> b(a.bias, a.bias_dtype, C, A(0));
    const T* x = static_cast<const T*>(a.x);
    T* y = a.local_moments ? nullptr : static_cast<T*>(a.y);
    if (transposes(p, a.x_layout, Layout::NCS))
      forward_transposed<T, A>(a.shape, x, y, w.data(), b.data(), eps, !eval, st);
    else if (p.layout == Layout::NCS)
      forward_ncs<T, A>(p, x, y, w.data(), b.data(), eps, !eval, st);
    else
      forward_nsc<T, A>(p, x, y, w.data(), b.data(), eps, !eval, st);

    // Running statistics: per channel, the average over that channel's statistics of the batch mean
    // and of the unbiased variance. Skipped for an empty batch.
    if (a.training && !a.local_moments && a.running_mean && a.running_var && p.G == C && p.count > 0) {
      const int64_t K = p.per_sample ? p.N : 1;
      const A momentum = A(a.momentum);
      dispatch_float(a.running_dtype, [&](auto tag) {
        using P = decltype(tag);
        P* rm = static_cast<P*>(a.running_mean);
        P* rv = static_cast<P*>(a.running_var);
        for (int64_t c = 0; c < C; ++c) {
          auto stat = [&](int64_t k) -> const Moments<A>& { return st.m[size_t(k * (p.per_sample ? p.G : 0) + c)]; };
          A bm = math::pairwise_sum<A>(K, [&](int64_t k) { return stat(k).mean; });
          A bv = math::pairwise_sum<A>(K, [&](int64_t k) { return math::unbiased_var(stat(k)); });
          if (K > 1) {
            bm /= A(K);
            bv /= A(K);
          }
          rm[c] = store<P>(math::running_update(load<A>(rm[c]), bm, momentum));
          rv[c] = store<P>(math::running_update(load<A>(rv[c]), bv, momentum));
        }
      });
    }
  }
  if (a.local_moments) {
    A* out = static_cast<A*>(a.local_moments);
    for (int64_t s = 0; s < ns; ++s) {
      out[s] = st.shift[size_t(s)];
      out[ns + s] = st.rel[size_t(s)];
      out[2 * ns + s] = st.m[size_t(s)].m2;
    }
    return;
  }
  if (a.save_mean) std::copy(st.mean.begin(), st.mean.end(), static_cast<A*>(a.save_mean));
  if (a.save_rstd) std::copy(st.rstd.begin(), st.rstd.end(), static_cast<A*>(a.save_rstd));
}

// ---- backward --------------------------------------------------------------------------------------

// Per statistic: mean(g) and mean(g * xhat), from the (k, c) sums.
template <class A>
void stat_coefficients(const Problem& p, int64_t s, const A* sum_dy, const A* sum_dyx, const A* w, A* mg, A* mgx) {
  const int64_t C = p.C, g = s % p.G;
  const int64_t k0 = p.per_sample ? s / p.G : 0;
  const int64_t k1 = p.per_sample ? k0 + 1 : p.sum_groups();
  math::PairwiseSum<A> a, bx;
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t c = g * p.cpg; c < (g + 1) * p.cpg; ++c) {
      a.add(w[c] * sum_dy[k * C + c]);
      bx.add(w[c] * sum_dyx[k * C + c]);
    }
  const A inv = A(1) / A(p.count);
  mg[s] = a.result() * inv;
  mgx[s] = bx.result() * inv;
}

template <class A>
void all_stat_coefficients(const Problem& p, const A* sum_dy, const A* sum_dyx, const A* w, A* mg, A* mgx) {
  const int64_t per_stat = std::max<int64_t>(1, p.count / std::max<int64_t>(1, p.S));  // (k, c) terms
  parallel_for(p.num_stats, std::max<int64_t>(1, kTaskElements / per_stat), [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) stat_coefficients(p, s, sum_dy, sum_dyx, w, mg, mgx);
  });
}

// dx over n contiguous values of one channel.
template <class T, class A>
void dx_run(const T* dy, const T* x, T* dx, int64_t n, A mean, A rstd, A w, A mg, A mgx, bool batch_stats,
            bool stream) {
  if (maps_explicitly<T, A>(stream)) {  // (vector_convert.h)
    const T* in[2] = {dy, x};
    if (batch_stats) {
      const A par[5] = {w, mean, rstd, mg, mgx};
      map_run(n, in, dx, par, stream, kDxMap);
    } else {
      const A par[2] = {w, rstd};
      map_run(n, in, dx, par, stream, kFixedStatsDxMap);
    }
    return;
  }
  if (batch_stats) {
    write_run(dx, n, stream, [&](int64_t i) {
      return store<T>(math::row_norm_dx(load<A>(dy[i]) * w, (load<A>(x[i]) - mean) * rstd, rstd, mg, mgx));
    });
  } else {
    write_run(dx, n, stream,
              [&](int64_t i) { return store<T>(math::row_norm_dx(load<A>(dy[i]) * w, A(0), rstd, A(0), A(0))); });
  }
}

// Sums of dy and dy * xhat over n contiguous values.
template <class T, class A>
std::pair<A, A> run_sums(const T* dy, const T* x, int64_t n, A mean, A rstd) {
  const T* in[2] = {dy, x};
  return term_sum2<A>(in, n, [&](const auto (&v)[2], auto& d, auto& d_again, auto& xhat) {
    d = d_again = v[0];
    xhat = (v[1] - mean) * rstd;
  });
}

struct BackwardPlan {
  bool want_dx, batch_stats, need_sums;
};

template <class T, class A>
void backward_ncs(const Problem& p, const ChannelNormBackwardArgs& a, const BackwardPlan& bp, const A* mean,
                  const A* rstd, const A* w, A* sum_dy, A* sum_dyx, A* mg, A* mgx) {
  const int64_t N = p.N, C = p.C, S = p.S;
  const T* dy = static_cast<const T*>(a.dy);
  const T* x = static_cast<const T*>(a.x);
  T* dx = static_cast<T*>(a.dx);
  const int64_t pch = ceil_div(S, kChunk);
  // Sums of chunk ch of plane (n, c).
  auto chunk_sums = [&](int64_t n, int64_t c, int64_t ch) {
    const int64_t s = p.stat(n, c), off = (n * C + c) * S + ch * kChunk;
    return run_sums(dy + off, x + off, std::min(kChunk, S - ch * kChunk), mean[s], rstd[s]);
  };
  // Sums of plane (n, c): its chunk sums added pairwise in order.
  auto plane_sums = [&](int64_t n, int64_t c, auto&& chunk) {
    math::PairwiseSum<A> sd, sdx;
    for (int64_t ch = 0; ch < pch; ++ch) {
      const std::pair<A, A> r = chunk(ch);
      sd.add(r.first);
      sdx.add(r.second);
    }
    sum_dy[n * C + c] = sd.result();
    sum_dyx[n * C + c] = sdx.result();
  };
  auto plane_dx = [&](int64_t n, int64_t c, int64_t o, int64_t len) {
    const int64_t s = p.stat(n, c), off = (n * C + c) * S + o;
    dx_run(dy + off, x + off, dx + off, len, mean[s], rstd[s], w[c], mg[s], mgx[s], bp.batch_stats,
           p.streams(sizeof(T)));
  };
  if (bp.want_dx && bp.need_sums && !a.coefficients && (p.per_sample || !p.short_planes()) &&
      fuse_stats(2 * p.count * int64_t(sizeof(T)), p.num_stats)) {
    // Consecutive statistics per task, as fused_forward_ncs: the sums of statistic s + 1's planes a
    // chunk at a time, each chunk followed by the dx of the same chunk of s, which dy and x are in
    // L2 for. (BatchNorm [32,64,56,56] float32, 784 KB of dy and x per channel, goes a channel per
    // task: fused, its backward took 2.20 -> 1.86 ms; tasks of 4 MB, pipelining 5 channels, were 7%
    // slower than that, two channels outgrowing L2.)
    auto stat_sums = [&](int64_t s, auto&& after_chunk) {
      const Members mb = members(p, s);
      for (int64_t n = mb.n0; n < mb.n1; ++n)
        for (int64_t c = mb.g * p.cpg; c < (mb.g + 1) * p.cpg; ++c)
          plane_sums(n, c, [&](int64_t ch) {
            const std::pair<A, A> r = chunk_sums(n, c, ch);
            after_chunk(n, c, ch);
            return r;
          });
      stat_coefficients(p, s, sum_dy, sum_dyx, w, mg, mgx);
    };
    auto dx_all = [&](int64_t s) {
      const Members mb = members(p, s);
      for (int64_t n = mb.n0; n < mb.n1; ++n)
        for (int64_t c = mb.g * p.cpg; c < (mb.g + 1) * p.cpg; ++c) plane_dx(n, c, 0, S);
    };
    auto dx_at = [&](int64_t s, int64_t n, int64_t c, int64_t ch) {
      const PairShift d = pair_shift(p, s);
      plane_dx(n - d.dn, c - d.dc, ch * kChunk, std::min(kChunk, S - ch * kChunk));
    };
    const FusedTasks ft = fused_tasks(p.count, 2 * sizeof(T));
    parallel_for(p.num_stats, ft.grain, [&](int64_t s0, int64_t s1) {
      run_fused_task(ft, s0, s1, stat_sums, dx_at, dx_all);
    });
    return;
  }
  const int64_t units = N * C * pch;
  const int64_t grain = std::max<int64_t>(1, kTaskElements / std::min(S, kChunk));
  const bool stream = p.streams(sizeof(T));
  // Short planes: sums per block of a channel's planes [u0, u1), gathered into L1 buffers (as the
  // forward's moments), and the dx of channels [c0, c1).
  auto short_plane_sums = [&](int64_t u0, int64_t u1) {
    alignas(64) T gathered_dy[kStatBlock], gathered_x[kStatBlock];
    for (int64_t u = u0; u < u1; ++u) {
      const Problem::PlaneBlock pb = p.plane_block(u);
      gather_planes(p, dy, pb, gathered_dy);
      gather_planes(p, x, pb, gathered_x);
      const std::pair<A, A> r = run_sums(gathered_dy, gathered_x, (pb.n1 - pb.n0) * S, mean[pb.c], rstd[pb.c]);
      sum_dy[pb.blk * C + pb.c] = r.first;
      sum_dyx[pb.blk * C + pb.c] = r.second;
    }
  };
  auto short_plane_dx = [&](int64_t c0, int64_t c1) {
    if (bp.batch_stats) {
      const T* in[2] = {dy, x};
      map_short_plane_runs<2, 5, T, A>(p, c0, c1, in, dx, stream, [&](A (&op)[5], int64_t c) {
        op[0] = w[c], op[1] = mean[c], op[2] = rstd[c], op[3] = mg[c], op[4] = mgx[c];
      }, kDxMap);
    } else {
      const T* in[1] = {dy};
      map_short_plane_runs<1, 2, T, A>(p, c0, c1, in, dx, stream, [&](A (&op)[2], int64_t c) {
        op[0] = w[c], op[1] = rstd[c];
      }, kFixedStatsDxMap);
    }
  };
  const int64_t short_group = p.plane_runs() ? short_plane_group(p, 2 * sizeof(T), 5 * sizeof(A)) : 1;
  if (bp.want_dx && bp.need_sums && bp.batch_stats && !a.coefficients && p.plane_runs()) {
    // Fused per group of channels, as the forward (fused_forward_short_planes): the group's sums read
    // dy and x from memory, its dx from L2.
    const int64_t blocks = p.plane_blocks();
    parallel_for(C, short_group, [&](int64_t c0, int64_t c1) {
      short_plane_sums(c0 * blocks, c1 * blocks);
      for (int64_t c = c0; c < c1; ++c) stat_coefficients(p, c, sum_dy, sum_dyx, w, mg, mgx);
      short_plane_dx(c0, c1);
    });
    return;
  }
  if (bp.need_sums && p.short_planes()) {
    parallel_for(C * p.plane_blocks(), std::max<int64_t>(1, kTaskElements / (p.planes_per_block() * S)),
                 short_plane_sums);
    if (bp.want_dx && bp.batch_stats && !a.coefficients)
      all_stat_coefficients(p, sum_dy, sum_dyx, w, mg, mgx);
  } else if (bp.need_sums) {
    std::vector<std::pair<A, A>> us(static_cast<size_t>(units));
    parallel_for(units, grain, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) us[size_t(u)] = chunk_sums(u / pch / C, u / pch % C, u % pch);
    });
    parallel_for(N * C, std::max<int64_t>(1, 4096 / pch), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) plane_sums(q / C, q % C, [&](int64_t ch) { return us[size_t(q * pch + ch)]; });
    });
    if (bp.want_dx && bp.batch_stats && !a.coefficients)
      all_stat_coefficients(p, sum_dy, sum_dyx, w, mg, mgx);
  }
  if (!bp.want_dx) return;
  if (p.plane_runs()) {
    parallel_for(C, short_group, short_plane_dx);
    return;
  }
  parallel_for_from_end(units, grain, [&](int64_t u0, int64_t u1) {
    if (S < kShortPlane) {  // (whole planes, as forward_ncs's normalization)
      if (bp.batch_stats) {
        const T* in[2] = {dy, x};
        map_planes_of<2, 5, T, A>(p, u0, u1, in, dx, stream, [&](A (&op)[5], int64_t c, int64_t s) {
          op[0] = w[c], op[1] = mean[s], op[2] = rstd[s], op[3] = mg[s], op[4] = mgx[s];
        }, kDxMap);
      } else {
        const T* in[1] = {dy};
        map_planes_of<1, 2, T, A>(p, u0, u1, in, dx, stream, [&](A (&op)[2], int64_t c, int64_t s) {
          op[0] = w[c], op[1] = rstd[s];
        }, kFixedStatsDxMap);
      }
      return;
    }
    for_plane_chunks(C, pch, u0, u1, [&](int64_t n, int64_t c, int64_t ch) {
      plane_dx(n, c, ch * kChunk, std::min(kChunk, S - ch * kChunk));
    });
  });
}

template <class T, class A>
void backward_nsc(const Problem& p, const ChannelNormBackwardArgs& a, const BackwardPlan& bp, const A* mean,
                  const A* rstd, const A* w, A* sum_dy, A* sum_dyx, A* mg, A* mgx) {
  const int64_t C = p.C, G = p.G, K = p.row_groups(), R = p.group_rows();
  const int64_t Rb = p.block_rows(), nb = p.row_blocks();
  const T* dy = static_cast<const T*>(a.dy);
  const T* x = static_cast<const T*>(a.x);
  T* dx = static_cast<T*>(a.dx);
  const bool stream = p.streams(sizeof(T));
  // Per row group, per-channel mean, rstd, weight-free coefficient vectors.
  std::vector<A> me(size_t(K * C)), re(size_t(K * C)), ge(size_t(K * C)), gxe(size_t(K * C));
  for_row_groups(p, [&](int64_t k) {
    expand_groups(p, k, &me[size_t(k * C)], [&](int64_t s) { return mean[s]; });
    expand_groups(p, k, &re[size_t(k * C)], [&](int64_t s) { return rstd[s]; });
  });
  auto expand_coef = [&](int64_t k) {
    expand_groups(p, k, &ge[size_t(k * C)], [&](int64_t s) { return bp.batch_stats ? mg[s] : A(0); });
    expand_groups(p, k, &gxe[size_t(k * C)], [&](int64_t s) { return bp.batch_stats ? mgx[s] : A(0); });
  };
  // Per-channel sums of a block of rows.
  auto block_sums = [&](int64_t k, int64_t r0, int64_t rows, A* sd, A* sdx) {
    const A* mk = &me[size_t(k * C)];
    const A* rk = &re[size_t(k * C)];
    const auto* dyb = column_block(dy + (k * R + r0) * C, rows * C, 0);
    const auto* xb = column_block(x + (k * R + r0) * C, rows * C, 1);
    column_sum2(C, rows, sd, sdx, [&](int64_t r, int64_t c, A& d, A& xhat) {
      d = load<A>(dyb[r * C + c]);
      xhat = (load<A>(xb[r * C + c]) - mk[c]) * rk[c];
    });
  };
  auto rows_dx = [&](int64_t k, int64_t r0, int64_t r1) {
    const A* mk = &me[size_t(k * C)];
    const A* rk = &re[size_t(k * C)];
    const int64_t base = k * R * C;
    if (bp.batch_stats) {
      const T* in[2] = {dy + base, x + base};
      const A* par[5] = {w, mk, rk, &ge[size_t(k * C)], &gxe[size_t(k * C)]};
      map_rows(C, r0, r1, in, dx + base, par, stream, kDxMap);
    } else {
      const T* in[1] = {dy + base};
      const A* par[2] = {w, rk};
      map_rows(C, r0, r1, in, dx + base, par, stream, kFixedStatsDxMap);
    }
  };
  // Row group k's (k, c) sums from its block partials, pairwise in block order a row of channels at
  // a time (cpu/pairwise_rows.h; the partials are scratch).
  auto group_sums = [&](int64_t k, A* part_dy, A* part_dyx, int64_t c0 = 0, int64_t c1 = -1) {
    const int64_t width = (c1 < 0 ? C : c1) - c0;
    for (auto [part, sum] : {std::pair{part_dy, sum_dy}, std::pair{part_dyx, sum_dyx}}) {
      const A* total = pairwise_row_sums<A>(nb, width, [&](int64_t blk) { return part + blk * C + c0; });
      std::copy(total, total + width, sum + k * C + c0);
    }
  };
  // Per-sample norms: sample k's (k, c) sums from its block partials, its statistics' coefficients,
  // and their per-channel vectors for its dx.
  auto sample_coefficients = [&](int64_t k, A* part_dy, A* part_dyx) {
    group_sums(k, part_dy, part_dyx);
    for (int64_t g = 0; g < G; ++g) stat_coefficients(p, k * G + g, sum_dy, sum_dyx, w, mg, mgx);
    expand_coef(k);
  };
  if (bp.want_dx && bp.need_sums && p.per_sample && fuse_stats(2 * R * C * int64_t(sizeof(T)), K)) {
    parallel_for(K, std::max<int64_t>(1, kTaskElements / (R * C)), [&](int64_t k0, int64_t k1) {
      std::vector<A> pd(size_t(nb * C)), pdx(size_t(nb * C));
      for (int64_t k = k0; k < k1; ++k) {
        for (int64_t blk = 0; blk < nb; ++blk)
          block_sums(k, blk * Rb, std::min(Rb, R - blk * Rb), &pd[size_t(blk * C)], &pdx[size_t(blk * C)]);
        sample_coefficients(k, pd.data(), pdx.data());
        rows_dx(k, 0, R);
      }
    });
    return;
  }
  if (bp.want_dx && bp.need_sums && p.per_sample) {
    // Samples too large for one task each: sample by sample, all threads on one sample (its block
    // sums, then its dx from the last row back), so that the dx pass finds what the sums read in the
    // last-level cache (GroupNorm [8,256,64,64] float32, 8 MiB of dy and x per sample: 11% faster
    // than the block sums of all samples followed by all of dx; the same arithmetic).
    std::vector<A> pd(size_t(nb * C)), pdx(size_t(nb * C));
    for (int64_t k = 0; k < K; ++k) {
      parallel_for(nb, std::max<int64_t>(1, kTaskElements / (Rb * C)), [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk)
          block_sums(k, blk * Rb, std::min(Rb, R - blk * Rb), &pd[size_t(blk * C)], &pdx[size_t(blk * C)]);
      });
      sample_coefficients(k, pd.data(), pdx.data());
      parallel_for_from_end(R, std::max<int64_t>(1, kTaskElements / C), [&](int64_t r0, int64_t r1) {
        rows_dx(k, r0, r1);
      });
    }
    return;
  }
  if (bp.need_sums) {
    const int64_t units = K * nb;
    std::vector<A> pd(size_t(units * C)), pdx(size_t(units * C));
    parallel_for(units, std::max<int64_t>(1, kTaskElements / (Rb * C)), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t k = u / nb, blk = u % nb;
        block_sums(k, blk * Rb, std::min(Rb, R - blk * Rb), &pd[size_t(u * C)], &pdx[size_t(u * C)]);
      }
    });
    // (k, c) columns in parallel, each summed over its blocks in order (tasks of whole lines of
    // channels, see forward_nsc's merges).
    parallel_for(K * C, line_grain(kTaskElements / nb), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1;) {
        const int64_t k = q / C, e = std::min(q1, (k + 1) * C);
        group_sums(k, &pd[size_t(k * nb * C)], &pdx[size_t(k * nb * C)], q - k * C, e - k * C);
        q = e;
      }
    });
    if (bp.want_dx && bp.batch_stats && !a.coefficients)
      all_stat_coefficients(p, sum_dy, sum_dyx, w, mg, mgx);
  }
  if (!bp.want_dx) return;
  for_row_groups(p, expand_coef);
  parallel_for_from_end(K * R, std::max<int64_t>(1, kTaskElements / C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1;) {
      const int64_t k = r / R, e = std::min(r1, (k + 1) * R);
      rows_dx(k, r - k * R, e - k * R);
      r = e;
    }
  });
}

// dy channels first under the channels-last backward (the gradient of InstanceNorm's channels-first
// y for a channels-last x): chunks of samples of dy transposed into cache, each chunk's backward_nsc
// from there. Its (k, c) sums are per sample, reduced over the samples afterwards (backward), so the
// chunks change no arithmetic; sums that span samples (BatchNorm) take one chunk.
template <class T, class A>
void backward_transposed(const Problem& p, const ChannelNormBackwardArgs& a, const BackwardPlan& bp, const A* mean,
                         const A* rstd, const A* w, A* sum_dy, A* sum_dyx, A* mg, A* mgx) {
  const int64_t C = p.C, sample = C * p.S;
  for_transposed_chunks(a.shape, p.per_sample, static_cast<const T*>(a.dy), C, p.S,
                        [&](const Problem& q, int64_t n0, const T* dyt) {
    ChannelNormBackwardArgs ac = a;
    ac.shape.N = q.N;
    ac.dy = dyt;
    ac.x = static_cast<const T*>(a.x) + n0 * sample;
    ac.dx = a.dx ? static_cast<T*>(a.dx) + n0 * sample : nullptr;
    const int64_t k0 = p.per_sample ? n0 : 0, s0 = k0 * p.G;
    backward_nsc<T, A>(q, ac, bp, mean + s0, rstd + s0, w, sum_dy + k0 * C, sum_dyx + k0 * C, mg + s0, mgx + s0);
  });
}

template <class T>
void backward(const ChannelNormBackwardArgs& a) {
  using A = acc_t<T>;
  const Problem p(a.shape);
  const int64_t C = p.C;
  BackwardPlan bp;
  bp.want_dx = a.dx != nullptr;
  bp.batch_stats = a.batch_stats;
  bp.need_sums = (bp.want_dx && bp.batch_stats) || a.dweight || a.dbias;
  // (k, c) sums (Problem::sum_groups).
  const int64_t K = p.sum_groups();
  std::vector<A> sum_dy(size_t(K * C), A(0)), sum_dyx(size_t(K * C), A(0));
  if (!p.empty() && (bp.want_dx || bp.need_sums)) {
    const ParamValues<A> w(a.weight, a.weight_dtype, C, A(1));
    std::vector<A> mg(size_t(p.num_stats), A(0)), mgx(size_t(p.num_stats), A(0));
    if (a.coefficients) {
      // Global coefficients (SyncBatchNorm): no sums from this process's values are needed for dx.
      const A* co = static_cast<const A*>(a.coefficients);
      std::copy(co, co + p.num_stats, mg.begin());
      std::copy(co + p.num_stats, co + 2 * p.num_stats, mgx.begin());
      bp.need_sums = a.dweight || a.dbias;
    }
    const A* mean = static_cast<const A*>(a.save_mean);
    const A* rstd = static_cast<const A*>(a.save_rstd);
    if (transposes(p, a.dy_layout, Layout::NSC))
      backward_transposed<T, A>(p, a, bp, mean, rstd, w.data(), sum_dy.data(), sum_dyx.data(), mg.data(),
                                mgx.data());
    else if (p.layout == Layout::NCS)
      backward_ncs<T, A>(p, a, bp, mean, rstd, w.data(), sum_dy.data(), sum_dyx.data(), mg.data(), mgx.data());
    else
      backward_nsc<T, A>(p, a, bp, mean, rstd, w.data(), sum_dy.data(), sum_dyx.data(), mg.data(), mgx.data());
  }
  auto reduce_k = [&](const std::vector<A>& part, void* out, DType dt) {
    std::vector<A> v(size_t(C), A(0));
    parallel_for(C, std::max<int64_t>(1, kTaskElements / std::max<int64_t>(K, 1)), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        v[size_t(c)] = math::pairwise_sum<A>(K, [&](int64_t k) { return part[size_t(k * C + c)]; });
    });
    store_params(v, out, dt);
  };
  if (a.dweight) reduce_k(sum_dyx, a.dweight, a.dweight_dtype);
  if (a.dbias) reduce_k(sum_dy, a.dbias, a.dbias_dtype);
}

}  // namespace

void channel_norm_forward(const ChannelNormForwardArgs& a) {
  dispatch_float(a.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void channel_norm_backward(const ChannelNormBackwardArgs& a) {
  dispatch_float(a.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace normkit::cpu::NK_ISA

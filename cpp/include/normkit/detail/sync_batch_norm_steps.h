// The per-channel steps of SyncBatchNorm around its all-reduces, written once for the CPU loops and the
// CUDA kernels (each calls them for c in [0, C)). The payloads are float64 arrays summed by the
// communicator:
//   forward:  [count, s1[C], q[C], s2[C], check...]   (see math::sync_terms / sync_merge)
//   backward: [count, sum_dy[C], sum_dy_xhat[C], check...]
// `check` is 6 values when mismatch detection is on (see sync_check_values); they are reduced first,
// on their own, and the rest of the payload after them.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"
#include "normkit/math.h"

namespace normkit::detail {

constexpr int64_t kSyncCheckValues = 6;

inline int64_t sync_forward_payload_size(int64_t C, bool check) { return 1 + 3 * C + (check ? kSyncCheckValues : 0); }
inline int64_t sync_backward_payload_size(int64_t C, bool check) { return 1 + 2 * C + (check ? kSyncCheckValues : 0); }

// Mismatch detection through a sum: each process adds v and v^2 for v in (layer id, call, channels),
// each taken modulo 2^20. After the sum, all W processes agree on v iff W * sum(v^2) == sum(v)^2
// (Cauchy-Schwarz); with v < 2^20 every term stays below W * 2^40, exact in float64 up to 8192
// processes however long training runs (the call counter grows without bound). Values that differ
// by a multiple of 2^20 pass unnoticed: processes out of step differ by a few calls, not a million.
// Every process evaluates the same sums, so all raise or none does.
constexpr int64_t kSyncCheckModulus = int64_t(1) << 20;
inline void sync_check_values(double* out, int64_t layer_id, int64_t call, int64_t channels) {
  auto reduced = [](int64_t v) { return double(((v % kSyncCheckModulus) + kSyncCheckModulus) % kSyncCheckModulus); };
  const double v[3] = {reduced(layer_id), reduced(call), reduced(channels)};
  for (int i = 0; i < 3; ++i) {
    out[2 * i] = v[i];
    out[2 * i + 1] = v[i] * v[i];
  }
}
// Index (0: layer id, 1: call, 2: channels) of the first disagreement, or -1.
inline int sync_check_mismatch(const double* summed, int world_size) {
  for (int i = 0; i < 3; ++i)
    if (double(world_size) * summed[2 * i + 1] != summed[2 * i] * summed[2 * i]) return i;
  return -1;
}

// What a process writes into its payload besides the per-channel values: its count and, when the
// check is on, its check values at `check_offset`.
struct SyncHeader {
  double count = 0;
  int64_t check_offset = -1;  // -1: no check values
  double check[kSyncCheckValues] = {};
};
NK_HD void sync_write_header(const SyncHeader& h, double* payload) {
  payload[0] = h.count;
  if (h.check_offset >= 0)
    for (int64_t i = 0; i < kSyncCheckValues; ++i) payload[h.check_offset + i] = h.check[i];
}

// Forward, before the all-reduce: channel c's terms from the local moments (hi[C], lo[C], m2[C]).
template <class A>
NK_HD void sync_pack_moments(int64_t c, int64_t C, double count, const A* moments, double* payload) {
  const math::SyncTerms t =
      math::sync_terms(count, double(moments[c]), double(moments[C + c]), double(moments[2 * C + c]));
  payload[1 + c] = t.s1;
  payload[1 + C + c] = t.q;
  payload[1 + 2 * C + c] = t.s2;
}

// Forward, after it: channel c's global mean and biased variance (what the normalization uses), and
// the running statistics updated with the unbiased variance of the global batch. Only called with a
// global count of at least 2 values per channel.
template <class A, class P>
NK_HD void sync_finish_moments(int64_t c, int64_t C, const double* payload, A momentum, A* mean, A* var,
                               P* running_mean, P* running_var) {
  const double n = payload[0];
  const math::SyncMoments m = math::sync_merge(n, payload[1 + c], payload[1 + C + c], payload[1 + 2 * C + c]);
  mean[c] = A(m.mean);
  var[c] = A(m.m2 / n);
  if (running_mean) {
    running_mean[c] = store<P>(math::running_update(load<A>(running_mean[c]), A(m.mean), momentum));
    running_var[c] = store<P>(math::running_update(load<A>(running_var[c]), A(m.m2 / (n - 1.0)), momentum));
  }
}

// Backward, after the all-reduce: the dx coefficients mean(g) and mean(g * xhat) over the global batch
// (g = dy * w), laid out as ChannelNormBackwardArgs::coefficients wants them.
template <class A, class W>
NK_HD void sync_dx_coefficients(int64_t c, int64_t C, const double* payload, const W* weight, A* coefficients) {
  const double n = payload[0];
  const A w = weight ? load<A>(weight[c]) : A(1);
  coefficients[c] = w * A(payload[1 + c] / n);
  coefficients[C + c] = w * A(payload[1 + C + c] / n);
}

}  // namespace normkit::detail

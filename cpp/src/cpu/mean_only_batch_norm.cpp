// Mean-only BatchNorm on the CPU (detail/mean_only_batch_norm_args.h).
//
// Per-channel sums, in an order fixed by the shape alone (never by the thread count):
//   channels first: one lane_sum per plane (n, c), planes in parallel, then per channel over n in order;
//   channels last (and [N, C]): the N * S rows of C values go in fixed chunks, each chunk summing its
//   rows in order into a partial of C values (chunks in parallel), then the partials in chunk order.
// The elementwise pass runs planes (channels first) or chunks of rows (channels last) in parallel.
// Channels first, where a channel fits the cache budget, both passes go together (sum_and_map).
#include <algorithm>
#include <vector>

#include "cpu/column_sums.h"
#include "cpu/fused_channels.h"
#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "cpu/params.h"
#include "cpu/stream_store.h"
#include "normkit/math.h"
#include "normkit/parallel.h"
#include "normkit/spectral_norm_math.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::Layout;
using detail::MobnBackwardArgs;
using detail::MobnForwardArgs;
using detail::MobnShape;

constexpr int64_t kTaskElements = 1 << 15;

int64_t grain_of(int64_t n) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(n, 1)); }

// Whether the rows-of-C path applies: channels last, or no spatial extent (both layouts coincide).
bool by_rows(const MobnShape& sh) { return sh.layout == Layout::NSC || sh.S == 1; }

// Rows of C values per chunk: at least 64, at most 256 chunks.
int64_t rows_per_chunk(int64_t rows) { return std::max<int64_t>(64, (rows + 255) / 256); }

// The sum of plane (n, c) of channels-first t, and a channel's sum from its planes' (plane(n)),
// pairwise over n (normkit/pairwise.h: a running sum over thousands of planes loses digits). The
// fused and the unfused paths both sum this way, so both give the same bits.
template <class T, class A>
A plane_sum(const T* t, const MobnShape& sh, int64_t n, int64_t c) {
  const T* tp = t + (n * sh.C + c) * sh.S;
  return lane_sum<A>(sh.S, [&](int64_t i) { return load<A>(tp[i]); });
}
template <class A, class Plane>
A channel_sum(int64_t N, Plane&& plane) {
  return math::pairwise_sum<A>(N, plane);
}

// sums[c] = sum over n and s of t(n, c, s).
template <class T, class A>
std::vector<A> channel_sums(const T* t, const MobnShape& sh) {
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  std::vector<A> sums(static_cast<size_t>(C), A(0));
  if (!by_rows(sh)) {
    std::vector<A> plane(static_cast<size_t>(N * C));
    parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) plane[size_t(p)] = plane_sum<T, A>(t, sh, p / C, p % C);
    });
    for (int64_t c = 0; c < C; ++c)
      sums[size_t(c)] = channel_sum<A>(N, [&](int64_t n) { return plane[size_t(n * C + c)]; });
    return sums;
  }
  const int64_t rows = N * S, rpc = rows_per_chunk(rows), chunks = (rows + rpc - 1) / rpc;
  std::vector<A> partial(static_cast<size_t>(chunks * C));
  parallel_for(chunks, grain_of(rpc * C), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = k * rpc, r1 = std::min(rows, r0 + rpc);
      const T* block = t + r0 * C;
      column_sum(C, r1 - r0, partial.data() + k * C, [&](int64_t r, int64_t c) { return load<A>(block[r * C + c]); });
    }
  });
  for (int64_t c = 0; c < C; ++c)
    sums[size_t(c)] = math::pairwise_sum<A>(chunks, [&](int64_t k) { return partial[size_t(k * C + c)]; });
  return sums;
}

// out(n, c, s) = f(in(n, c, s), c) for every element, in the shape's layout. Large outputs are
// written with streaming stores, as BatchNorm's (stream_store.h; parallel_for fences each chunk):
// [32,64,56,56] float32 forward, core calls, alternating builds: NCHW 1.46-1.49 -> 1.34-1.37 ms,
// NHWC 1.52-1.53 -> 1.41-1.58 ms.
template <class T, class A, class F>
void per_channel_map(const T* in, T* out, const MobnShape& sh, F&& f) {
  const int64_t N = sh.N, C = sh.C, S = sh.S;
  const bool stream = streams_output(size_t(N * C * S) * sizeof(T));
  if (!by_rows(sh)) {
    parallel_for(N * C, grain_of(S), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        const T* ip = in + p * S;
        write_run(out + p * S, S, stream, [&](int64_t i) { return store<T>(f(load<A>(ip[i]), c)); });
      }
    });
    return;
  }
  parallel_for(N * S, grain_of(C), [&](int64_t r0, int64_t r1) {
    write_rows(out, r0, r1, C, stream, [&](int64_t r, T* orow) {
      const T* ir = in + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) orow[c] = store<T>(f(load<A>(ir[c]), c));
    });
  });
}

// Channels first, where a channel fits the cache budget: the sums and the map fused per channel
// (cpu/fused_channels.h), with the same plane sums and pairwise merges as channel_sums; large
// outputs streamed as per_channel_map's.
template <class T>
bool fuses(const MobnShape& sh) {
  return !by_rows(sh) && fuse_stats(sh.N * sh.S * int64_t(sizeof(T)), sh.C);
}
template <class T, class A, class Finish, class F>
void sum_and_map(const T* t, T* out, const MobnShape& sh, Finish&& finish, F&& f) {
  const bool stream = streams_output(size_t(sh.N * sh.C * sh.S) * sizeof(T));
  fused_channels<A>(
      sh.N, sh.C, sh.N * sh.S * int64_t(sizeof(T)), [&](int64_t n, int64_t c) { return plane_sum<T, A>(t, sh, n, c); },
      [&](int64_t c, const A* planes) { finish(c, channel_sum<A>(sh.N, [&](int64_t n) { return planes[n]; })); },
      [&](int64_t n, int64_t c) {
        const int64_t base = (n * sh.C + c) * sh.S;
        write_run(out + base, sh.S, stream, [&](int64_t i) { return store<T>(f(load<A>(t[base + i]), c)); });
      });
}

template <class T>
void forward(const MobnForwardArgs& a) {
  using A = acc_t<T>;
  const MobnShape& sh = a.shape;
  const int64_t C = sh.C;
  A* mean = static_cast<A*>(a.save_mean);
  const T* x = static_cast<const T*>(a.x);
  const A count = A(sh.N * sh.S);
  // Channel c's mean from its sum, and its running mean's update.
  auto finish = [&](int64_t c, A sum) {
    mean[c] = sum / count;
    if (a.running_mean)
      param_put<A>(a.running_mean, a.running_dtype, c,
                   math::running_update(param_at<A>(a.running_mean, a.running_dtype, c, A(0)), mean[c],
                                        A(a.momentum)));
  };
  const ParamValues<A> bias(a.bias, a.bias_dtype, C, A(0));
  const A* b = bias.data();
  auto apply = [&](A v, int64_t c) { return math::mobn_apply(v, mean[c], b[c]); };
  if (a.training && fuses<T>(sh)) {
    sum_and_map<T, A>(x, static_cast<T*>(a.y), sh, finish, apply);
    return;
  }
  if (a.training) {
    const std::vector<A> sums = channel_sums<T, A>(x, sh);
    for (int64_t c = 0; c < C; ++c) finish(c, sums[size_t(c)]);
  } else {
    for (int64_t c = 0; c < C; ++c) mean[c] = param_at<A>(a.running_mean, a.running_dtype, c, A(0));
  }
  per_channel_map<T, A>(x, static_cast<T*>(a.y), sh, apply);
}

template <class T>
void backward(const MobnBackwardArgs& a) {
  using A = acc_t<T>;
  const MobnShape& sh = a.shape;
  const int64_t C = sh.C;
  const T* dy = static_cast<const T*>(a.dy);
  std::vector<A> mean_dy(static_cast<size_t>(C), A(0));
  const A count = A(sh.N * sh.S);
  // Channel c's dbias and mean of dy from its sum of dy.
  auto finish = [&](int64_t c, A sum) {
    if (a.dbias) param_put<A>(a.dbias, a.dbias_dtype, c, sum);
    if (a.training) mean_dy[size_t(c)] = sum / count;
  };
  const A* m = mean_dy.data();
  auto dx_of = [&](A g, int64_t c) { return math::mobn_dx(g, m[c]); };
  const bool sums = a.dbias || a.training;
  if (sums && a.dx && fuses<T>(sh)) {
    sum_and_map<T, A>(dy, static_cast<T*>(a.dx), sh, finish, dx_of);
    return;
  }
  if (sums) {
    const std::vector<A> s = channel_sums<T, A>(dy, sh);
    for (int64_t c = 0; c < C; ++c) finish(c, s[size_t(c)]);
  }
  if (!a.dx) return;
  per_channel_map<T, A>(dy, static_cast<T*>(a.dx), sh, dx_of);
}

}  // namespace

void mean_only_batch_norm_forward(const MobnForwardArgs& a) {
  if (a.shape.C == 0) return;  // an empty batch still gets its statistics and dbias (0)
  dispatch_float(a.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void mean_only_batch_norm_backward(const MobnBackwardArgs& a) {
  if (a.shape.C == 0) return;  // an empty batch still gets its statistics and dbias (0)
  dispatch_float(a.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace normkit::cpu::NK_ISA

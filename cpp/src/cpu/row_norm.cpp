// LayerNorm and RMSNorm on the CPU. Rows are independent, so threads split rows; the parameter
// gradients sum over rows in fixed row blocks (partials per block, then a column-wise sum of the
// partials in block order), which keeps them bitwise independent of the thread count.
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/lanes.h"
#include "cpu/offset_partials.h"
#include "cpu/pairwise_rows.h"
#include "cpu/params.h"
#include "cpu/prefetch_ahead.h"
#include "cpu/row_pairs.h"
#include "cpu/shifted_moments.h"
#include "cpu/stream_store.h"
#include "cpu/vector_convert.h"
#include "normkit/math.h"
#include "normkit/pairwise.h"
#include "normkit/parallel.h"

namespace normkit::cpu::NK_ISA {
namespace {

using detail::RowNormBackwardArgs;
using detail::RowNormForwardArgs;

// Rows per parallel task: enough elements per task to amortise the hand-off.
constexpr int64_t kTaskElements = 1 << 15;

// Moments of a row: shifted_moments around math::sample_shift of its first values.
template <class T, class A = acc_t<T>>
math::Moments<A> row_moments(const T* x, int64_t n) {
  const A shift = math::sample_shift<A>(x, n, 1, math::kRowShiftSample);
  math::Moments<A> m = shifted_moments(x, n, shift);
  m.mean += shift;
  return m;
}

// Long rows are normalized a few at a time, column segment by column segment. One row at a time, a
// row of x and y plus the whole of weight and bias pass through L1 for every row; past ~2K float
// columns they no longer fit, and weight and bias come back from L2 for each row. In segments, a
// segment of weight and bias is loaded once and serves the whole group of rows. The same operations
// per element, so the same values. Interleaved A/B, float32: [64, 4096] 61-65 -> 52-56 us on one
// thread, [16, 16384] 78 -> 70 us, [256, 8192] 2.1 -> 1.9 ms; bfloat16 within the noise. (The
// backward in groups was no faster: it already takes rows in pairs, which halves that traffic.)
constexpr int64_t kGroupRows = 4;
constexpr int64_t kGroupSegment = 512;
// Rows whose weight and bias (in the accumulation type) take at least this much go in groups.
constexpr int64_t kGroupMinParamBytes = 16384;

// Whether a streamed output's rows of T are written from registers (rows that start on a 64-byte
// line; the others go through a stage): whole vectors of T, bfloat16 only in pairs.
template <class T>
bool streams_from_registers(bool streaming, bool pairs) {
  return streaming && maps_to_whole_lines<T, acc_t<T>> && (!std::is_same_v<T, bfloat16_t> || pairs);
}

template <class T>
void forward(const RowNormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t n = a.cols;
  const ParamValues<A> w(a.weight, a.weight_dtype, n, A(1));
  const ParamValues<A> b(a.bias, a.bias_dtype, n, A(0));
  const A eps = A(a.eps);
  const A* wp = w.data();
  const A* bp = b.data();
  const bool streaming = streams_output(size_t(a.rows * n) * sizeof(T));
  const int64_t ahead = rows_ahead(a.rows, n * int64_t(sizeof(T)));
  const bool grouped = 2 * n * int64_t(sizeof(A)) >= kGroupMinParamBytes;
  auto x_row = [&](int64_t r) { return static_cast<const T*>(a.x) + r * a.x_row_stride; };
  // Row r's statistics (written out) as {mean, rstd}.
  auto row_stats = [&](int64_t r) __attribute__((always_inline)) {
    const T* x = x_row(r);
    A mean = 0, var;
    if (a.center) {
      const math::Moments<A> m = row_moments(x, n);
      mean = m.mean;
      var = math::biased_var(m);
    } else {
      SummedInputs<T, 1> in(x);
      var = lane_sum_of_squares_staged<A>(n, in, [&](int64_t i) { return in.at(0, i); }) / A(n);
    }
    const A rstd = math::rstd_from_var(var, eps);
    if (a.mean) static_cast<A*>(a.mean)[r] = mean;
    if (a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
    return std::pair<A, A>{mean, rstd};
  };
#if NK_BF16_PAIRS
  // bfloat16 rows of whole vector pairs (cpu/row_pairs.h), weight and bias split once per call.
  // LayerNorm bfloat16 forward, core calls, alternating builds: [64, 4096] 59-63 -> 55-60 us,
  // [8192, 1024] 1.35-1.36 -> 1.15-1.18 ms.
  const bool pairs = std::is_same_v<T, bfloat16_t> && n % kBf16Pair == 0;
  std::vector<float> split(pairs ? size_t(2 * n) : 0);
  if constexpr (std::is_same_v<T, bfloat16_t>) {
    if (pairs) {
      split_in_pair_order(wp, n, split.data());
      split_in_pair_order(bp, n, split.data() + n);
    }
  }
#else
  constexpr bool pairs = false;
#endif
  // y[i0, i1) of a row; Stream: whole vectors streamed from registers (stream_store.h), for rows of
  // float, double, or bfloat16 in pairs that start on a 64-byte line (stream_rows and
  // write_rows_from_registers; the segments, of 256 and 512 values, start on lines too). Without the stage that the other rows go
  // through, LayerNorm [8192, 1024] float32 forward in the benchmark took 1.40-1.43 -> 1.31 ms.
  auto apply = [&](auto stream_tag, const T* x, T* y, int64_t i0, int64_t i1, A mean, A rstd) {
    constexpr bool Stream = decltype(stream_tag)::value;
#if NK_BF16_PAIRS
    if constexpr (std::is_same_v<T, bfloat16_t>) {
      if (pairs) {
        row_apply_in_pairs<Stream>(x, y, i0, i1, mean, rstd, split.data(), split.data() + n);
        return;
      }
    }
#endif
    auto body = [&](int64_t j, auto lanes) {
      constexpr int64_t K = decltype(lanes)::value;
      const int64_t i = i0 + j;
      put_out<Stream, A, K>(y + i, math::row_norm_apply(get<A, K>(x + i), splat<A, K>(mean), splat<A, K>(rstd),
                                                        get<A, K>(wp + i), get<A, K>(bp + i)));
    };
    for_output<Stream, T, A>(i1 - i0, body);
  };
  const bool stream_rows = streams_from_registers<T>(streaming, pairs);
  parallel_for(a.rows, std::max<int64_t>(1, kTaskElements / std::max<int64_t>(n, 1)),
               [&](int64_t r0, int64_t r1) {
    if (grouped) {
      std::vector<T> staging(streaming ? size_t(kGroupRows * n) : 0);
      for (int64_t g0 = r0; g0 < r1; g0 += kGroupRows) {
        const int64_t rows = std::min(kGroupRows, r1 - g0);
        std::pair<A, A> st[kGroupRows];
        for (int64_t k = 0; k < rows; ++k) st[k] = row_stats(g0 + k);
        write_rows_from_registers(static_cast<T*>(a.y) + g0 * n, rows, n, streaming, stream_rows, staging.data(),
                                  [&](auto stream_tag, T* y0) {
          for (int64_t i0 = 0; i0 < n; i0 += kGroupSegment) {
            const int64_t i1 = std::min(n, i0 + kGroupSegment);
            for (int64_t k = 0; k < rows; ++k) {
              apply(stream_tag, x_row(g0 + k), y0 + k * n, i0, i1, st[k].first, st[k].second);
            }
          }
        });
      }
      if (streaming) stream_fence();
      return;
    }
    std::vector<T> staging(streaming ? size_t(n) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = x_row(r);
      const auto [mean, rstd] = row_stats(r);
      const T* next[1] = {ahead && r + ahead < a.rows ? x + ahead * a.x_row_stride : nullptr};
      write_rows_from_registers(static_cast<T*>(a.y) + r * n, 1, n, streaming, stream_rows, staging.data(),
                                [&](auto stream_tag, T* y) {
        segments_with_prefetch(n, next, [&](int64_t i0, int64_t i1) { apply(stream_tag, x, y, i0, i1, mean, rstd); });
      });
    }
    if (streaming) stream_fence();
  });
}

// Row blocks for the parameter-gradient partials: a function of the row count only. At least two for
// 64 rows and more (work for both threads), at most 128 rows per block: a block adds its rows one
// after the other, and 16384 rows per block (RMSNorm [2^20, 16]) gave dweight 13 times torch's error.
constexpr int64_t kMaxBlockRows = 128;
int64_t row_blocks(int64_t rows) {
  return std::max(std::clamp<int64_t>(rows / 32, 1, 64), (rows + kMaxBlockRows - 1) / kMaxBlockRows);
}

template <class T>
void backward(const RowNormBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t n = a.cols, rows = a.rows;
  const ParamValues<A> w(a.weight, a.weight_dtype, n, A(1));
  const A* wp = w.data();
  const bool want_dx = a.dx != nullptr;
  const bool want_params = a.dweight || a.dbias;
  const int64_t blocks = row_blocks(rows);
  // dweight's (and dbias's) partials, one row of n per block.
  const OffsetPartials<A> parts(size_t(blocks * n), want_params ? (a.dbias ? 2 : 1) : 0, a.dx ? a.dx : a.x);
  A* const part_w = parts[0];
  A* const part_b = parts[1];
  const A inv_n = A(1) / A(n);
  const bool streaming = want_dx && streams_output(size_t(rows * n) * sizeof(T));
  // The dx passes over row r request the x and dy of row r + ahead; those over rows r and r + 1, of
  // rows r + 2 * ahead and the next (prefetch_ahead.h).
  const int64_t ahead = rows_ahead(rows, n * int64_t(sizeof(T)));
  auto x_row = [&](int64_t r) { return static_cast<const T*>(a.x) + r * a.x_row_stride; };
  auto dy_row = [&](int64_t r) { return static_cast<const T*>(a.dy) + r * a.dy_row_stride; };
  auto ahead_of = [&](int64_t r, int64_t d) {
    const bool ok = ahead && r + d < rows;
    return std::pair<const T*, const T*>{ok ? x_row(r + d) : nullptr, ok ? dy_row(r + d) : nullptr};
  };

  // Pass 1 of row r: its statistics and the means of g = dy * w and g * xhat.
  struct Row {
    const T* x;
    const T* dy;
    A mean, rs, mean_g, mean_gx;
  };
  auto row_pass1 = [&](int64_t r) {
    Row o{x_row(r), dy_row(r),
          a.mean ? static_cast<const A*>(a.mean)[r] : A(0), static_cast<const A*>(a.rstd)[r], A(0), A(0)};
    if (!want_dx) return o;
    A sum_g = 0, sum_gx = 0;
    SummedInputs<T, 2> in(o.dy, o.x);
    if (a.center) {
      std::tie(sum_g, sum_gx) = lane_sum2_staged<A>(n, in, [&](int64_t i, A& g, A& g_again, A& xhat) {
        g = g_again = in.at(0, i) * wp[i];
        xhat = (in.at(1, i) - o.mean) * o.rs;
      });
    } else {
      sum_gx = lane_sum_staged<A>(n, in, [&](int64_t i, A& g, A& xhat) {
        g = in.at(0, i) * wp[i];
        xhat = in.at(1, i) * o.rs;
      });
    }
    o.mean_g = sum_g * inv_n;
    o.mean_gx = sum_gx * inv_n;
    return o;
  };

#if NK_BF16_PAIRS
  // bfloat16 rows of whole vector pairs (cpu/row_pairs.h): pass 2, dx and the partials, in pair
  // order (pass 1's sums keep their lane order), the weight split once per call; the summed partials
  // go back to column order. LayerNorm bfloat16 backward, core calls, alternating builds:
  // [64, 4096] 84-115 -> 78-90 us, [8192, 1024] 2.08 -> 1.73-1.75 ms.
  const bool pairs = std::is_same_v<T, bfloat16_t> && n % kBf16Pair == 0;
  std::vector<float> w_split(pairs ? size_t(n) : 0);
  if constexpr (std::is_same_v<T, bfloat16_t>) {
    if (pairs) split_in_pair_order(wp, n, w_split.data());
  }
  // Pass 2 of R rows over [i0, i1): dx[k] of row k unless dx is null (streamed: stream_tag), the
  // partials unless null.
  auto paired_pass2 = [&](auto rows_tag, auto stream_tag, const Row* rw, T* const* dx, A* pw, A* pb, int64_t i0,
                          int64_t i1) {
    constexpr int R = decltype(rows_tag)::value;
    if constexpr (std::is_same_v<T, bfloat16_t>) {
      row_pass2_in_pairs<R, decltype(stream_tag)::value>(rw, dx, w_split.data(), pw, pb, i0, i1);
    }
  };
  // Summed partials (in pair order) in column order, in buf.
  auto in_column_order = [](const A* sum, int64_t width, std::vector<A>& buf) -> const A* {
    buf.resize(size_t(width));
    if constexpr (std::is_same_v<A, float>) merge_from_pair_order(sum, width, buf.data());
    return buf.data();
  };
#else
  constexpr bool pairs = false;
  auto paired_pass2 = [](auto, auto, const Row*, T* const*, A*, A*, int64_t, int64_t) {};
  auto in_column_order = [](const A* sum, int64_t, std::vector<A>&) { return sum; };
#endif

  // As the forward's: dx rows that start on a line are streamed from registers, other streamed rows go
  // through the stage. LayerNorm [8192, 1024] float32 backward, core calls, alternating builds:
  // 2.35-2.41 -> 1.98-2.06 ms (dx only: 2.13-2.16 -> 1.84-1.90 ms).
  const bool stream_rows = streams_from_registers<T>(streaming, pairs);

  // Pass 2 of the R rows rw from row r on (R = 1, or 2 where the rows carry partials): dx[k] of
  // row k (streamed: stream_tag) and each row's terms added in row order to the partials pw and pb
  // unless null. Rows in pairs load and store the partials once per pair instead of once per row
  // (0-15% faster in interleaved runs, most on [64, 4096]; no loss measured beyond the noise), and
  // each partial still adds row r's term, then row r + 1's: the operations of single rows, in their
  // order, so the same bits. The requests ahead go to the rows R * ahead further on.
  auto rows_pass2 = [&](auto rows_tag, auto stream_tag, int64_t r, const Row* rw, T* const* dx, A* pw, A* pb) {
    constexpr int R = decltype(rows_tag)::value;
    constexpr bool Stream = decltype(stream_tag)::value;
    const T* next[2 * R];
    for (int k = 0; k < R; ++k) std::tie(next[2 * k], next[2 * k + 1]) = ahead_of(r, R * ahead + k);
    if (pairs) {
      segments_with_prefetch(n, next, [&](int64_t i0, int64_t i1) {
        paired_pass2(rows_tag, stream_tag, rw, dx, pw, pb, i0, i1);
      });
      return;
    }
    // Partials: 0 none, 1 dweight's, 2 dweight's and dbias's.
    auto body = [&](auto partials) {
      constexpr int kPartials = decltype(partials)::value;
      segments_with_prefetch(n, next, [&](int64_t i0, int64_t i1) {
        for_output<Stream, T, A>(i1 - i0, [&](int64_t j, auto lanes) {
          constexpr int64_t K = decltype(lanes)::value;
          const int64_t i = i0 + j;
          const auto w = get<A, K>(wp + i);
          decltype(splat<A, K>(A())) sw{}, sb{};
          if constexpr (kPartials >= 1) sw = get<A, K>(pw + i);
          if constexpr (kPartials == 2) sb = get<A, K>(pb + i);
          for (int k = 0; k < R; ++k) {
            const Row& o = rw[k];
            const auto g = get<A, K>(o.dy + i), xh = (get<A, K>(o.x + i) - splat<A, K>(o.mean)) * splat<A, K>(o.rs);
            put_out<Stream, A, K>(dx[k] + i, math::row_norm_dx(g * w, xh, splat<A, K>(o.rs), splat<A, K>(o.mean_g),
                                                               splat<A, K>(o.mean_gx)));
            if constexpr (kPartials >= 1) sw = math::mul_add(g, xh, sw);
            if constexpr (kPartials == 2) sb += g;
          }
          if constexpr (kPartials >= 1) put<A, K>(pw + i, sw);
          if constexpr (kPartials == 2) put<A, K>(pb + i, sb);
        });
      });
    };
    if (pb) {
      body(std::integral_constant<int, 2>{});
    } else if (pw) {
      body(std::integral_constant<int, 1>{});
    } else {
      body(std::integral_constant<int, 0>{});
    }
  };
  // Rows r to r + R - 1: pass 1, then pass 2 into the output (write_rows_from_registers).
  auto dx_rows = [&](auto rows_tag, int64_t r, A* pw, A* pb, std::vector<T>& staging) {
    constexpr int R = decltype(rows_tag)::value;
    Row rw[R];
    for (int k = 0; k < R; ++k) rw[k] = row_pass1(r + k);
    write_rows_from_registers(static_cast<T*>(a.dx) + r * n, R, n, streaming, stream_rows, staging.data(),
                              [&](auto stream_tag, T* dst) {
      T* dx[R];
      for (int k = 0; k < R; ++k) dx[k] = dst + k * n;
      rows_pass2(rows_tag, stream_tag, r, rw, dx, pw, pb);
    });
  };

  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> staging(streaming ? size_t(2 * n) : 0);
    for (int64_t blk = b0; blk < b1; ++blk) {
      A* pw = want_params ? part_w + blk * n : nullptr;
      A* pb = part_b ? part_b + blk * n : nullptr;
      const int64_t r_begin = rows * blk / blocks, r_end = rows * (blk + 1) / blocks;
      for (int64_t r = r_begin; r < r_end;) {
        if (want_dx && pw && r + 1 < r_end) {
          dx_rows(std::integral_constant<int, 2>{}, r, pw, pb, staging);
          r += 2;
        } else if (want_dx) {
          dx_rows(std::integral_constant<int, 1>{}, r, pw, pb, staging);
          ++r;
        } else {
          const Row o = row_pass1(r);
          if (pw && pairs) {
            paired_pass2(std::integral_constant<int, 1>{}, std::false_type{}, &o, nullptr, pw, pb, 0, n);
          } else if (pw) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
              const A d = load<A>(o.dy[i]);
              pw[i] = math::mul_add(d, (load<A>(o.x[i]) - o.mean) * o.rs, pw[i]);
              if (pb) pb[i] += d;
            }
          }
          ++r;
        }
      }
    }
    if (streaming) stream_fence();
  });
  if (!want_params) return;

  // Column-wise sums of the block partials, pairwise in block order a row at a time
  // (cpu/pairwise_rows.h). The partials are this call's own scratch.
  auto reduce_into = [&](A* part, void* out, DType out_dtype) {
    dispatch_float(out_dtype, [&](auto tag) {
      using P = decltype(tag);
      P* o = static_cast<P*>(out);
      parallel_for(n, std::max<int64_t>(1024, kTaskElements / blocks), [&](int64_t c0, int64_t c1) {
        const int64_t width = c1 - c0;
        const A* sum = pairwise_row_sums<A>(blocks, width, [&](int64_t blk) { return part + blk * n + c0; });
        std::vector<A> merged;
        if (pairs) sum = in_column_order(sum, width, merged);  // (c0 and width: whole pairs)
        for (int64_t c = 0; c < width; ++c) o[c0 + c] = store<P>(sum[c]);
      });
    });
  };
  if (a.dweight) reduce_into(part_w, a.dweight, a.dweight_dtype);
  if (a.dbias) reduce_into(part_b, a.dbias, a.dbias_dtype);
}

}  // namespace

void row_norm_forward(const RowNormForwardArgs& a) {
  if (a.rows == 0) return;  // cols == 0 still writes the statistics (mean 0, rstd NaN, as torch)
  dispatch_float(a.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void row_norm_backward(const RowNormBackwardArgs& a) {
  if (a.cols == 0) return;  // rows == 0 still writes zero parameter gradients
  dispatch_float(a.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace normkit::cpu::NK_ISA

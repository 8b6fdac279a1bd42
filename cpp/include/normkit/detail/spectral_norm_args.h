// What the dispatch layer hands to the CPU and CUDA SpectralNorm kernels (Miyato et al., ICLR 2018).
// The weight is seen as the matrix W = weight.movedim(dim, 0).flatten(1): H compact rows of K values
// (the dispatch layer brings `dim` to the front with a compact copy when it is not already there).
// u holds H values and v K values, both of the weight's dtype. One power-iteration step is torch's:
//   u <- normalize(W v),  v <- normalize(W^T u),  normalize(t) = t / max(||t||, eps),
// each vector rounded to the weight's dtype as soon as it is computed (torch stores it in its buffer);
// then sigma = u^T W v and y = W / sigma. The backward treats u and v as constants:
//   dW = dY / sigma - (sum(dY * W) / sigma^2) u v^T.
//
// The forward runs in two kernels so that the op can look at sigma before anything of the caller's
// is written: `estimate` works only in the accumulation-type workspace (SpectralNormWork) and
// `apply` copies u, v and sigma out and writes y.
#pragma once
#include <cstdint>

#include "normkit/dtype.h"

namespace normkit::detail {

struct SpectralNormShape {
  int64_t H = 0, K = 0;  // rows (the size of `dim`) and columns (everything else)
  int64_t numel() const { return H * K; }
};

// Rows of W summed together into one partial of W^T u: a fixed split that depends on H only, so the
// sums never depend on the thread count (CPU) or the launch configuration (CUDA).
NK_HD int64_t spectral_norm_row_block(int64_t H) {
  const int64_t by_count = (H + 63) / 64;  // at most 64 partials
  return by_count > 16 ? by_count : 16;
}
NK_HD int64_t spectral_norm_num_blocks(int64_t H) {
  const int64_t b = spectral_norm_row_block(H);
  return (H + b - 1) / b;
}

// The accumulation-type workspace of the forward, in elements of the accumulation type A:
//   u[H], v[K]          the current vectors (rounded to the weight's dtype, held as A)
//   wv[H]               W v before normalization
//   wtu[K]              W^T u before normalization
//   partial[blocks][K]  per-row-block partial sums of W^T u
//   sigma[1]
struct SpectralNormWork {
  int64_t H, K;
  NK_HD int64_t u() const { return 0; }
  NK_HD int64_t v() const { return H; }
  NK_HD int64_t wv() const { return H + K; }
  NK_HD int64_t wtu() const { return 2 * H + K; }
  NK_HD int64_t partial() const { return 2 * H + 2 * K; }
  NK_HD int64_t sigma() const { return partial() + spectral_norm_num_blocks(H) * K; }
  NK_HD int64_t size() const { return sigma() + 1; }
};

struct SpectralNormForwardArgs {
  DType dtype;  // of w, u, v and y
  SpectralNormShape shape;
  const void* w;  // H x K compact
  void* u;        // H values: read by estimate, written by apply when iterations > 0
  void* v;        // K values
  int64_t iterations;  // power-iteration steps; 0: sigma from the stored u and v (evaluation)
  double eps;
  void* work;   // SpectralNormWork{H, K}.size() accumulation-type values (device memory on CUDA)
  void* y;      // nullable: H x K compact, written by apply
  void* sigma;  // nullable: one accumulation-type value, written by apply
};

struct SpectralNormBackwardArgs {
  DType dtype;  // of dy, w, u, v and dw
  SpectralNormShape shape;
  const void* dy;  // H x K compact
  const void* w;   // H x K compact
  const void* u;   // H values
  const void* v;   // K values
  const void* sigma;  // one accumulation-type value (from the forward)
  void* work;  // H + 1 accumulation-type values (per-row sums of dY * W and their total)
  void* dw;    // H x K compact
};

}  // namespace normkit::detail

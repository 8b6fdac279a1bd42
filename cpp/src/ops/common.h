// Shared by every op's validate-then-dispatch entry: argument checks with messages that name the
// argument, the device scope, and the row view of an input.
#pragma once
#include <initializer_list>
#include <memory>

#include "normkit/error.h"
#include "normkit/ops.h"
#include "normkit/tensor.h"
#include "cpu/kernels.h"

#if defined(NORMKIT_WITH_CUDA)
#include "cuda_ops.h"
#endif

namespace normkit::ops {

// TypeError unless `t` lives on a device this build can compute on.
void check_device_supported(const TensorView& t, const char* arg);
// TypeError unless t is on the same device as ref (named ref_arg).
void check_same_device(const TensorView& t, const char* arg, const TensorView& ref, const char* ref_arg);
void check_dtype(const TensorView& t, const char* arg, DType expected);
void check_shape(const TensorView& t, const char* arg, const Shape& expected);
// An output: expected shape and dtype, compact, on ref's device.
void check_output(const TensorView& t, const char* arg, const Shape& shape, DType dtype,
                  const TensorView& ref, const char* ref_arg);
void check_eps(double eps);
// An optional per-channel vector of x = [N, C, *]: shape [C], x's device; `written` ones (running
// statistics, updated in place) must also be contiguous.
void check_channel_vector(const OptTensor& p, const char* arg, const TensorView& x, bool written = false);
// Parameters share one dtype, x's or its accumulation dtype (float32 parameters for half inputs);
// returns it (x's dtype when there are none).
DType check_param_dtypes(const OptTensor& a, const char* a_arg, const OptTensor& b, const char* b_arg,
                         const TensorView& x);
// x's trailing dimensions equal normalized_shape; returns the number of leading rows.
int64_t check_normalized_shape(const TensorView& x, const char* arg, const Shape& normalized_shape);
Shape leading_shape(const TensorView& x, int trailing_dims);

// Makes the tensors' CUDA device current for the op (nothing on CPU).
class DeviceScope {
 public:
  explicit DeviceScope(const Device& d);

 private:
#if defined(NORMKIT_WITH_CUDA)
  std::unique_ptr<cuda::DeviceGuard> guard_;
#endif
};

// An input as evenly spaced contiguous rows of its trailing `row_dims` dimensions. Views that are not
// (a transposed row, a broadcast, dimensions that do not collapse) are copied once into compact
// memory owned by `holder`: the kernels then see a plain matrix.
struct Rows {
  const void* data = nullptr;
  int64_t stride = 0;
  std::shared_ptr<void> holder;
};
Rows rows_of(const TensorView& t, int row_dims, void* stream);

// Asks the kernel to back the untouched pages of a large CPU output with transparent huge pages.
// A fresh output (torch.empty, np.empty of many MB) is mapped on first write, and with 4 KB pages
// those page faults cost more than the normalization itself; with 2 MB pages they almost vanish.
// Advisory only: pages already present are unaffected, and nothing happens off Linux.
void advise_huge_pages(const TensorView& out);

// A parameter (weight, bias: small) as a compact view: itself, or a compact copy kept in `holder`.
OptTensor compact_param(const OptTensor& p, std::shared_ptr<void>& holder, void* stream);

// count * elem_size bytes; a RuntimeError where that does not fit size_t (a view's size is bounded at
// the boundary, scratch in a wider dtype or a multiple of it is not: a wrapped size would allocate a
// few bytes and be overrun).
size_t checked_bytes(int64_t count, size_t elem_size);

// count values of elem_size bytes (at least 1 byte) of uninitialised memory on `device` (stream-ordered
// on CUDA), freed with the holder.
std::shared_ptr<void> device_buffer(const Device& device, int64_t count, size_t elem_size, void* stream);

// A compact row-major copy of any view, on the view's device (host or device memory).
std::shared_ptr<void> compact_copy(const TensorView& t, void* stream);

// An argument for check_no_overlap, written {view, "name"}: a view (null when absent) and its name.
struct Named {
  Named(const TensorView& t, const char* a) : view(&t), arg(a) {}
  Named(const OptTensor& t, const char* a) : view(t ? &*t : nullptr), arg(a) {}
  Named(const TensorView* t, const char* a) : view(t), arg(a) {}
  const TensorView* view;
  const char* arg;
};

// Every output (anything the op writes, running statistics included) must share no memory with any
// other argument: an op reads its inputs after it has begun writing, so an aliased output gives
// silently wrong values. Byte ranges are compared (a conservative test: interleaved views of one
// buffer count as overlapping). ValueError naming both arguments.
void check_no_overlap(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs);

// Sets every element of a contiguous output to `value` (0 for any float dtype; other values for
// float32/float64 outputs, i.e. statistics in the accumulation dtype).
void fill(const TensorView& t, double value, void* stream);
// fill() for an optional output.
void fill(const OptTensor& t, double value, void* stream);

// ---- [N, C, *spatial] arrays in a channel layout (detail::Layout): channels first (NCHW...) or
// channels last (NHWC, NDHWC). Used by the channel normalizations and LocalResponseNorm.

// The [N, C, S] shape struct (S: the product of the spatial dims) of x = [N, C, *spatial] in `layout`,
// for the kernels' argument structs that have these four fields.
template <class NcsShape>
NcsShape ncs_shape(const TensorView& x, detail::Layout layout) {
  NcsShape s;
  s.N = x.shape[0];
  s.C = x.shape[1];
  s.S = 1;
  for (int i = 2; i < x.ndim(); ++i) s.S *= x.shape[size_t(i)];
  s.layout = layout;
  return s;
}

// Whether t is compact in `layout`.
bool compact_in(const TensorView& t, detail::Layout layout);
// The layout an output array is compact in (channels first preferred when both hold); ValueError
// naming `arg` when it is neither.
detail::Layout output_layout(const TensorView& out, const char* arg);
// t as a view compact in `layout`: t itself when it already is, otherwise a view of a compact copy kept
// in holder (for ops that hand the same input to several kernels: copied once, not per kernel).
TensorView in_layout(const TensorView& t, detail::Layout layout, std::shared_ptr<void>& holder, void* stream);
// t's data in `layout`: in place when already compact in it, otherwise a compact copy kept in holder.
const void* data_in(const TensorView& t, detail::Layout layout, std::shared_ptr<void>& holder, void* stream);

}  // namespace normkit::ops

// Runs kernel `fn` on `args` on the tensors' device: cpu::<isa>::fn(args) (cpu/kernels.h) or
// cuda::fn(args, stream) (cuda_ops.h). Validation is done by then; the device is supported.
#if defined(NORMKIT_WITH_CUDA)
#define NK_RUN_KERNEL(device, fn, args, stream)                      \
  do {                                                               \
    if ((device).kind == ::normkit::DeviceKind::CPU) {               \
      NK_CPU_DISPATCH(fn, args);                                     \
    } else {                                                         \
      ::normkit::cuda::fn(args, stream);                             \
    }                                                                \
  } while (0)
#else
#define NK_RUN_KERNEL(device, fn, args, stream) \
  do {                                          \
    (void)(stream);                             \
    NK_CPU_DISPATCH(fn, args);                  \
  } while (0)
#endif

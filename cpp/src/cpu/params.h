// Per-channel (or per-column) parameter vectors in the CPU kernels: read in any float dtype as
// accumulation-type values, and written back in the dtype asked for. Parameters are O(C) values, so
// converting them once per call keeps a single element type in the inner loops.
#pragma once
#include <cstdint>
#include <vector>

#include "normkit/dtype.h"

// Per-ISA namespace, like lanes.h: compiled once per instruction set, never merged across them.
namespace normkit::cpu::NK_ISA {

// p[i] as an A, or `fallback` when p is absent.
template <class A>
A param_at(const void* p, DType t, int64_t i, A fallback) {
  if (!p) return fallback;
  return dispatch_float(t, [&](auto tag) -> A {
    using P = decltype(tag);
    return load<A>(static_cast<const P*>(p)[i]);
  });
}

// p[i] = v, stored in dtype t.
template <class A>
void param_put(void* p, DType t, int64_t i, A v) {
  dispatch_float(t, [&](auto tag) {
    using P = decltype(tag);
    static_cast<P*>(p)[i] = store<P>(v);
  });
}

// The n values of p as As (`fill` everywhere when p is absent): p itself where it already holds As
// (parameters reach the kernels compact), else a converted copy. Not copying saves an allocation and
// two passes over the vector per call, which on cache-resident LayerNorms was ~10% of the time.
template <class A>
class ParamValues {
 public:
  ParamValues(const void* p, DType dtype, int64_t n, A fill) {
    if (p && dtype == dtype_of<A>::value) {
      data_ = static_cast<const A*>(p);
      return;
    }
    copy_.assign(size_t(n), fill);
    if (p) {
      dispatch_float(dtype, [&](auto tag) {
        using P = decltype(tag);
        const P* src = static_cast<const P*>(p);
        for (int64_t i = 0; i < n; ++i) copy_[size_t(i)] = load<A>(src[i]);
      });
    }
    data_ = copy_.data();
  }
  ParamValues(const ParamValues&) = delete;  // (data_ may point into copy_)
  ParamValues& operator=(const ParamValues&) = delete;

  const A* data() const { return data_; }
  A operator[](size_t i) const { return data_[i]; }

 private:
  std::vector<A> copy_;
  const A* data_ = nullptr;
};

// out[i] = v[i] in dtype `dtype`.
template <class A>
void store_params(const std::vector<A>& v, void* out, DType dtype) {
  dispatch_float(dtype, [&](auto tag) {
    using P = decltype(tag);
    P* o = static_cast<P*>(out);
    for (size_t i = 0; i < v.size(); ++i) o[i] = store<P>(v[i]);
  });
}

}  // namespace normkit::cpu::NK_ISA

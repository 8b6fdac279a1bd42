// Device bookkeeping of the CUDA backend: device count, current-device guard, stream-ordered
// allocation and the strided-to-contiguous copy.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>

#include "cuda_check.cuh"
#include "cuda_ops.h"
#include "normkit/error.h"

namespace normkit::cuda {

int device_count() {
  int n = 0;
  // No driver / no device is an answer (0), not an error: CPU-only machines import normkit too.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  if (current != device) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    previous_ = current;  // only restore what we changed
  }
}

DeviceGuard::~DeviceGuard() {
  // A destructor must not throw; a failure here leaves the guarded device current.
  if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();
}

namespace {

constexpr int kMaxCachedDevices = 64;  // devices whose answer is cached (others ask every time)

// Whether `device` has stream-ordered allocation (cudaMallocAsync): CUDA 11.2+ drivers on most
// devices, but not every platform (some virtualised or older setups report 0). Where it has, its
// default pool's release threshold goes to UINT64_MAX: with the default (0) every synchronisation in
// the process (torch's loss.item() once per step) hands the pool's memory back to the OS, and the
// next op maps its scratch afresh. The pool then keeps what it has grown to (cudaMemPoolTrimTo
// returns it); the setting is the device's default pool's, shared with other users of that pool.
bool query_memory_pools(int device) {
  int supported = 0;
  if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (supported == 0) return false;
  cudaMemPool_t pool = nullptr;
  uint64_t threshold = UINT64_MAX;
  if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess ||
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) != cudaSuccess)
    (void)cudaGetLastError();  // the pool works without it, only with more trips to the OS
  return true;
}

// query_memory_pools for the current device, asked once per device.
bool memory_pools_supported() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= kMaxCachedDevices) return query_memory_pools(device);
  static std::once_flag asked[kMaxCachedDevices];
  static bool supported[kMaxCachedDevices];
  std::call_once(asked[device], [device] { supported[device] = query_memory_pools(device); });
  return supported[device];
}

}  // namespace

std::shared_ptr<void> allocate(size_t bytes, void* stream) {
  if (bytes == 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  void* p = nullptr;
  if (!memory_pools_supported()) {
    // Fallback: a plain allocation, freed once the work queued on `s` is done (a host wait that
    // only devices without memory pools pay).
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    return std::shared_ptr<void>(p, [s](void* q) {
      if (cudaStreamSynchronize(s) != cudaSuccess || cudaFree(q) != cudaSuccess) (void)cudaGetLastError();
    });
  }
  check_cuda(cudaMallocAsync(&p, bytes, s), "cudaMallocAsync");
  // The free is ordered after all work queued on `s` before the holder dies, so kernels still
  // reading the buffer finish first.
  return std::shared_ptr<void>(p, [s](void* q) {
    if (cudaFreeAsync(q, s) != cudaSuccess) (void)cudaGetLastError();
  });
}

void copy_on_device(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)),
             "cudaMemcpyAsync(device to device)");
}

void copy_to_host(void* dst, const void* src, size_t bytes, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync(device to host)");
  check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

namespace {

template <class E>
__global__ void __launch_bounds__(256) fill_kernel(E* __restrict__ dst, int64_t n, E value) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

}  // namespace

void fill(void* dst, DType dtype, int64_t count, double value, void* stream) {
  if (count <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (value == 0.0) {  // +0 is all-zero bits in every float dtype
    check_cuda(cudaMemsetAsync(dst, 0, size_t(count) * dtype_size(dtype), s), "fill: cudaMemsetAsync");
    return;
  }
  const unsigned blocks = unsigned(std::min<int64_t>((count + 255) / 256, int64_t(1) << 16));
  if (dtype == DType::Float32)
    fill_kernel<float><<<blocks, 256, 0, s>>>(static_cast<float*>(dst), count, float(value));
  else if (dtype == DType::Float64)
    fill_kernel<double><<<blocks, 256, 0, s>>>(static_cast<double*>(dst), count, value);
  else
    throw RuntimeError("fill: a non-zero value needs a float32 or float64 buffer");
  check_cuda(cudaGetLastError(), "fill_kernel");
}

namespace {

constexpr int kMaxCopyDims = 8;

struct StridedLayout {
  int ndim;
  int64_t shape[kMaxCopyDims];
  int64_t stride[kMaxCopyDims];  // in elements, may be negative or zero
};

// One thread per destination element (grid-stride): dst is written coalesced, src is gathered.
template <class E>
__global__ void __launch_bounds__(256)
    strided_gather_kernel(const E* __restrict__ src, E* __restrict__ dst, int64_t n, StridedLayout l) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % l.shape[d];
      rem /= l.shape[d];
      off += idx * l.stride[d];
    }
    dst[i] = src[off];
  }
}

}  // namespace

void contiguous_copy(const TensorView& src, void* dst, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t n = src.numel();
  if (n == 0) return;
  const int esize = dtype_size(src.dtype);
  if (src.is_contiguous()) {
    check_cuda(cudaMemcpyAsync(dst, src.data, size_t(n) * size_t(esize), cudaMemcpyDeviceToDevice, s),
               "contiguous_copy: cudaMemcpyAsync");
    return;
  }
  // Drop size-1 dims and merge dims that are contiguous with each other, so that most views with many
  // dims still fit in the kernel's fixed-size layout.
  StridedLayout l{};
  int64_t sh[64], st[64];
  int m = 0;
  check_value(src.ndim() <= 64, "contiguous_copy: at most 64 dimensions are supported, got ",
              src.ndim());
  for (int d = 0; d < src.ndim(); ++d) {
    if (src.shape[d] == 1) continue;
    if (m > 0 && st[m - 1] == src.strides[d] * src.shape[d]) {
      sh[m - 1] *= src.shape[d];
      st[m - 1] = src.strides[d];
    } else {
      sh[m] = src.shape[d];
      st[m] = src.strides[d];
      ++m;
    }
  }
  check_value(m <= kMaxCopyDims, "contiguous_copy: a non-contiguous view of shape ",
              shape_str(src.shape), " needs ", m, " dimensions after merging, at most ",
              kMaxCopyDims, " are supported");
  l.ndim = m;
  for (int d = 0; d < m; ++d) {
    l.shape[d] = sh[d];
    l.stride[d] = st[d];
  }
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (esize) {
    case 2:
      strided_gather_kernel<<<grid, threads, 0, s>>>(static_cast<const uint16_t*>(src.data),
                                                     static_cast<uint16_t*>(dst), n, l);
      break;
    case 4:
      strided_gather_kernel<<<grid, threads, 0, s>>>(static_cast<const uint32_t*>(src.data),
                                                     static_cast<uint32_t*>(dst), n, l);
      break;
    default:
      strided_gather_kernel<<<grid, threads, 0, s>>>(static_cast<const uint64_t*>(src.data),
                                                     static_cast<uint64_t*>(dst), n, l);
      break;
  }
  check_launch("contiguous_copy: strided_gather_kernel");
}

}  // namespace normkit::cuda

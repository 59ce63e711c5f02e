// What the CUDA normalization files share: element conversions, 16-byte vectors, the block-wide
// merge of accumulators, device properties and stream-ordered scratch.
// Internal to norm/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "core/cuda_check.h"
#include "norm/cuda/kernels_cuda.h"
#include "norm/norm_math.h"

#if defined(SYNCBN_CUDA_EMULATION)
#include "norm/cuda/cuda_emulation.h"
#endif

namespace syncbn::norm::cuda::detail {

// Multiprocessors of the current device (cached per device).
int sm_count();

// Stream-ordered scratch memory (cudaMallocAsync/cudaFreeAsync): freed in stream order when it
// goes out of scope, so no host synchronization.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) SYNCBN_CUDA_CHECK(cudaMallocAsync(&data_, bytes, stream_));
  }
  ~Scratch() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename U>
  U* as() const {
    return static_cast<U*>(data_);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

inline cudaStream_t to_cuda(Stream stream) { return reinterpret_cast<cudaStream_t>(stream); }

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// 16 bytes of T: one ld.global.v4 / st.global.v4.
template <typename T>
inline constexpr int kPerVec = math::kVecBytes / static_cast<int>(sizeof(T));
template <typename T>
struct alignas(16) Vec {
  T v[kPerVec<T>];
};
template <typename T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) {
  *reinterpret_cast<Vec<T>*>(p) = v;
}

__host__ __device__ inline uint64_t address(const void* p) { return reinterpret_cast<uint64_t>(p); }

// The block's dynamic shared memory as an array of A.
template <typename A>
__device__ __forceinline__ A* shared_memory() {
#if defined(SYNCBN_CUDA_EMULATION)
  return reinterpret_cast<A*>(emu::shared);
#else
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return reinterpret_cast<A*>(shared_bytes);
#endif
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), checked. Through one function so that
// the CPU emulation (cuda_emulation.h, for tests) can run the same kernels.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
#if defined(SYNCBN_CUDA_EMULATION)
  (void)stream;
  emu::launch(kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
#else
  // The launch syntax of a .cuh is beyond clang-format.
  // clang-format off
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
  SYNCBN_LAUNCH_CHECK();
}

// Merges `width` accumulators per thread of a 2-D block over threadIdx.y into row y = 0:
// shared holds blockDim.x·blockDim.y·width entries, this thread's at (y·blockDim.x + x)·width.
// A tree in a fixed order: deterministic.
template <typename A>
__device__ void merge_over_y(A* shared, int width) {
  const int row = blockDim.x * width;
  for (int active = blockDim.y; active > 1;) {
    const int half = (active + 1) / 2;
    if (static_cast<int>(threadIdx.y) < active - half) {
      for (int k = 0; k < width; ++k) {
        shared[threadIdx.y * row + threadIdx.x * width + k].merge(
            shared[(threadIdx.y + half) * row + threadIdx.x * width + k]);
      }
    }
    __syncthreads();
    active = half;
  }
}

// Block-wide merge for 1-D blocks: the result is returned to every thread.
template <typename A>
__device__ A block_merge(const A& acc, A* shared) {
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int active = blockDim.x; active > 1;) {
    const int half = (active + 1) / 2;
    if (static_cast<int>(threadIdx.x) < active - half)
      shared[threadIdx.x].merge(shared[threadIdx.x + half]);
    __syncthreads();
    active = half;
  }
  const A result = shared[0];
  __syncthreads();  // shared may be reused by the caller
  return result;
}

}  // namespace syncbn::norm::cuda::detail

// The part of the CUDA runtime API that the normalization kernels and their tests call, done on
// the host for the CPU emulation of the kernels (norm/cuda/cuda_emulation.h): "device" memory is
// host memory, streams are in-order by construction (every emulated launch finishes before it
// returns), and there is one device with two multiprocessors. Linked instead of libcudart into
// the emulated tests only (their own definitions take precedence over libcudart's).
//
// It also counts the calls that would make the host wait for the device on a real GPU
// (synchronizations, blocking copies, cudaMalloc/cudaFree), so tests can check that a training
// step enqueues work without waiting: syncbn_emulated_host_syncs().
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {
std::atomic<long> host_syncs{0};
}  // namespace

// Calls so far that would block the host on a GPU.
long syncbn_emulated_host_syncs() { return host_syncs.load(); }

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrMultiProcessorCount ? 2 : 0;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "(emulated CUDA runtime)"; }

cudaError_t cudaMalloc(void** p, size_t bytes) {
  ++host_syncs;  // may synchronize the device
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  ++host_syncs;  // synchronizes the device
  std::free(p);
  return cudaSuccess;
}
// Stream-ordered: no host synchronization.
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  return *p != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind) {
  ++host_syncs;
  if (bytes > 0) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

// Device-to-host into pageable memory waits for the copy; counted as a synchronization.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t) {
  if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDefault) ++host_syncs;
  if (bytes > 0) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (bytes > 0) std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  static int token;
  *stream = reinterpret_cast<cudaStream_t>(&token);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++host_syncs;
  return cudaSuccess;
}

}  // extern "C"

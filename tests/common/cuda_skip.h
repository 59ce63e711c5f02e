// Why this process cannot run the gpu-labelled tests, or "" if it can: the reason they pass to
// GTEST_SKIP, so that CTest reports them as skipped (never passed) on a machine without a GPU.
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace syncbn::testing {

// ranks_on_node: the MPI ranks sharing this node, each of which needs its own device.
inline std::string cuda_skip_reason(int ranks_on_node = 1) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error for later calls
    return std::string("no CUDA device: cudaGetDeviceCount: ") + cudaGetErrorString(status);
  }
  if (devices == 0) return "no CUDA device";
  if (ranks_on_node > devices) {
    return std::to_string(ranks_on_node) + " ranks on this node but only " +
           std::to_string(devices) + " CUDA device(s)";
  }
  return "";
}

}  // namespace syncbn::testing

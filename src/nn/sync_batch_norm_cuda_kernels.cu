#include "nn/sync_batch_norm_cuda_kernels.h"
#include "norm/cuda/cuda_common.cuh"  // launch(), also under the CPU emulation of tests
#include "norm/norm_math.h"

namespace syncbn::nn::cuda_detail {
namespace {

using norm::cuda::detail::launch;

cudaStream_t to_cuda(CUstream_st* stream) { return reinterpret_cast<cudaStream_t>(stream); }
unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + 255) / 256); }

__global__ void set_scalar_kernel(double* p, double value) { *p = value; }

__global__ void decode_slot_kernel(const double* slot_value, slot::Layout layout, int group_size,
                                   double* count, unsigned* status) {
  const slot::Decoded reduced = slot::decode(*slot_value, layout, group_size);
  if (!reduced.same_layer) *status |= kLayerMismatch;
  if (reduced.count <= 1) *status |= kTooFewValues;
  *count = reduced.count > 1 ? static_cast<double>(reduced.count) : 2.0;
}

template <typename T>  // double: batch statistics; float: running statistics
__global__ void save_stats_kernel(int64_t C, const T* mean, const T* var, double eps,
                                  float* saved_mean, float* saved_invstd) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  saved_mean[c] = static_cast<float>(mean[c]);
  saved_invstd[c] = norm::math::bn_invstd(var[c], eps);
}

__global__ void accumulate_affine_grads_kernel(int64_t C, const double* sum_dy,
                                               const double* sum_dy_xmu, const float* invstd,
                                               float* grad_weight, float* grad_bias) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  grad_weight[c] += static_cast<float>(sum_dy_xmu[c] * invstd[c]);
  grad_bias[c] += static_cast<float>(sum_dy[c]);
}

__global__ void fill_kernel(float* p, int64_t n, float value) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) p[i] = value;
}

}  // namespace

void set_scalar(double* p, double value, CUstream_st* stream) {
  launch(set_scalar_kernel, dim3(1), dim3(1), 0, to_cuda(stream), p, value);
}

void decode_slot(const double* slot_value, const slot::Layout& layout, int group_size,
                 double* count, unsigned* status, CUstream_st* stream) {
  launch(decode_slot_kernel, dim3(1), dim3(1), 0, to_cuda(stream), slot_value, layout, group_size,
         count, status);
}

void save_stats(int64_t channels, const double* mean, const double* var, double eps,
                float* saved_mean, float* saved_invstd, CUstream_st* stream) {
  launch(save_stats_kernel<double>, dim3(blocks_for(channels)), dim3(256), 0, to_cuda(stream),
         channels, mean, var, eps, saved_mean, saved_invstd);
}

void save_stats(int64_t channels, const float* mean, const float* var, double eps,
                float* saved_mean, float* saved_invstd, CUstream_st* stream) {
  launch(save_stats_kernel<float>, dim3(blocks_for(channels)), dim3(256), 0, to_cuda(stream),
         channels, mean, var, eps, saved_mean, saved_invstd);
}

void accumulate_affine_grads(int64_t channels, const double* sum_dy, const double* sum_dy_xmu,
                             const float* invstd, float* grad_weight, float* grad_bias,
                             CUstream_st* stream) {
  launch(accumulate_affine_grads_kernel, dim3(blocks_for(channels)), dim3(256), 0, to_cuda(stream),
         channels, sum_dy, sum_dy_xmu, invstd, grad_weight, grad_bias);
}

void fill(float* p, int64_t n, float value, CUstream_st* stream) {
  if (n == 0) return;
  launch(fill_kernel, dim3(blocks_for(n)), dim3(256), 0, to_cuda(stream), p, n, value);
}

}  // namespace syncbn::nn::cuda_detail

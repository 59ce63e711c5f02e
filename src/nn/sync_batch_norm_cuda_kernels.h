// The small per-channel kernels of SyncBatchNormCuda (nn/sync_batch_norm_cuda.h) that are not
// normalization stages: the count slot, the saved statistics, the affine gradients. Launchers
// only enqueue on `stream`; all pointers are device memory. Internal to the layer.
#pragma once

#include <cstdint>

#include "nn/count_slot.h"

struct CUstream_st;

namespace syncbn::nn::cuda_detail {

// Bits of the layer's device status word.
enum StatusBit : unsigned { kTooFewValues = 1u, kLayerMismatch = 2u };

// *p = value.
void set_scalar(double* p, double value, CUstream_st* stream);
// The reduced slot → *count (group-wide n), setting kLayerMismatch when a tag field is neither 0
// nor group_size and kTooFewValues when n <= 1 (then *count = 2 keeps the step finite).
void decode_slot(const double* slot_value, const slot::Layout& layout, int group_size,
                 double* count, unsigned* status, CUstream_st* stream);
// saved_mean = mean, saved_invstd = 1/sqrt(var + eps) in float32, from the float64 batch
// statistics or the float32 running statistics (eval).
void save_stats(int64_t channels, const double* mean, const double* var, double eps,
                float* saved_mean, float* saved_invstd, CUstream_st* stream);
void save_stats(int64_t channels, const float* mean, const float* var, double eps,
                float* saved_mean, float* saved_invstd, CUstream_st* stream);
// grad_weight += invstd·sum_dy_xmu, grad_bias += sum_dy (local sums).
void accumulate_affine_grads(int64_t channels, const double* sum_dy, const double* sum_dy_xmu,
                             const float* invstd, float* grad_weight, float* grad_bias,
                             CUstream_st* stream);
void fill(float* p, int64_t n, float value, CUstream_st* stream);

}  // namespace syncbn::nn::cuda_detail

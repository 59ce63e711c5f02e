// Normalization stages on a CUDA device: the list of norm/kernels.h, in the same order, with the
// same arguments plus a stream (STYLE.md rule 3); the math is the block comment of kernels.h and
// the shared formulas of norm/norm_math.h. Every pointer is device memory of the current device.
// Every function only enqueues work on `stream` (no host synchronization, no blocking
// allocation: scratch memory comes from the stream-ordered allocator, cudaMallocAsync).
//
// Differences from the CPU list, all forced by the device:
//  * Activations are a template type T: float, __half or __nv_bfloat16 (compute in float32).
//    Reductions take an accumulator type Acc: double (float64 sums, as the CPU) or float
//    (Welford in float32, merged with Chan's formula, converted to float64 sums per block). The
//    stage outputs that cross ranks (sum, sumsq, sum_dy, sum_dy_xmu) are float64 either way.
//  * The group-wide count n is a device pointer to one double (`count`): in SyncBN it is a
//    result of the collective, and reading it on the host would synchronize the stream.
//  * bn_elemt can fuse a ReLU: y = max(0, BN(x)).
//  * LaunchConfig lets tests vary the block size and grid; the defaults suit the device.
//
// Parallelization. Contiguous (N, C, S) with S > 1: each channel is N runs of S elements, cut
// into pieces (norm_math.h channel_piece); each warp of a block reduces (or transforms) its own
// pieces of one channel with 16-byte loads inside each piece (split_for_vectors: scalar head,
// vectors, scalar tail). Channels-last and (N, C): threads own 16 bytes of channels (or one channel
// when the rows are not 16-byte aligned) and walk rows. Per-block partials go to a scratch array
// and one thread per channel adds them in block order, so results are deterministic for a given
// LaunchConfig and device.
#pragma once

#include <cstdint>

#include "norm/kernels.h"

struct CUstream_st;

namespace syncbn::norm::cuda {

using Stream = CUstream_st*;

struct LaunchConfig {
#if defined(SYNCBN_CUDA_EMULATION)
  int threads = 32;  // the CPU emulation of tests runs every GPU thread as a host thread
#else
  int threads = 256;  // per block: a multiple of 32, at most 1024
#endif
  int max_blocks = 0;  // blocks per reduction grid (0: 4 per SM, at least one per channel group)
};

enum class Activation { kNone, kRelu };

// Stage 1: local per-channel sums.             x (N,C,S) → sum (C), sumsq (C), float64.
template <typename T, typename Acc>
void bn_stats(const T* x, const BnGeometry& g, double* sum, double* sumsq, Stream stream,
              const LaunchConfig& launch = {});

// Stage 2: global sums → statistics. count: device pointer to the group-wide n (> 0).
// mean (C), var (C): biased variance; both float64.
void bn_gather_stats(int64_t channels, const double* count, const double* sum, const double* sumsq,
                     double* mean, double* var, Stream stream);

// Running-stat update with factor m; var is made unbiased with *count (> 1) here.
void bn_update_running(int64_t channels, const double* count, double factor, const double* mean,
                       const double* var, float* running_mean, float* running_var, Stream stream);

// Stage 3: y = (x − mean)·invstd·γ + β (then max(0, ·) with kRelu). weight/bias may be null.
// mean, invstd, weight, bias: (C). y may alias x.
template <typename T>
void bn_elemt(const T* x, const BnGeometry& g, const float* mean, const float* invstd,
              const float* weight, const float* bias, T* y, Stream stream,
              Activation activation = Activation::kNone, const LaunchConfig& launch = {});

// Stage 4: local sum_dy (C) and sum_dy_xmu (C), float64.
template <typename T, typename Acc>
void bn_backward_reduce(const T* dy, const T* x, const BnGeometry& g, const float* mean,
                        double* sum_dy, double* sum_dy_xmu, Stream stream,
                        const LaunchConfig& launch = {});

// Stage 5: dx from the group-wide sums and *count. sum_dy == sum_dy_xmu == nullptr: eval mode,
// dx = γ·invstd·dy (count unused, may be null). dx may alias dy.
template <typename T>
void bn_backward_elemt(const T* dy, const T* x, const BnGeometry& g, const float* mean,
                       const float* invstd, const float* weight, const double* sum_dy,
                       const double* sum_dy_xmu, const double* count, T* dx, Stream stream,
                       const LaunchConfig& launch = {});

// GroupNorm family (statistics in float64 as on the CPU).
template <typename T>
void gn_stats(const T* x, const BnGeometry& g, int64_t groups, double eps, float* mean,
              float* invstd, double* var, Stream stream, const LaunchConfig& launch = {});
template <typename T>
void gn_elemt(const T* x, const BnGeometry& g, int64_t groups, const float* mean,
              const float* invstd, const float* weight, const float* bias, T* y, Stream stream,
              const LaunchConfig& launch = {});
template <typename T>
void gn_backward(const T* dy, const T* x, const BnGeometry& g, int64_t groups, const float* mean,
                 const float* invstd, const float* weight, T* dx, float* dweight, float* dbias,
                 Stream stream, const LaunchConfig& launch = {});

template <typename T>
void ln_forward(const T* x, int64_t rows, int64_t d, double eps, const float* weight,
                const float* bias, T* y, float* mean, float* invstd, Stream stream,
                const LaunchConfig& launch = {});
template <typename T>
void ln_backward(const T* dy, const T* x, int64_t rows, int64_t d, const float* mean,
                 const float* invstd, const float* weight, T* dx, float* dweight, float* dbias,
                 Stream stream, const LaunchConfig& launch = {});

// Instantiated for: bn_stats / bn_backward_reduce <float, double>, <float, float>,
// <__half, float>, <__nv_bfloat16, float>; every other template for float, __half and
// __nv_bfloat16.

}  // namespace syncbn::norm::cuda

// The small layers of the CUDA trainer (train/cuda) on device buffers: ReLU, max pooling, global
// average pooling, bias, softmax cross-entropy and the SGD update. Each is the CPU layer of
// nn/layers.h (or optim::SGD) with the same math; convolution (cuDNN), linear (cuBLAS) and the
// norms (norm/cuda, nn/sync_batch_norm_cuda.h) live elsewhere.
//
// Kernels take raw pointers, sizes and a stream (STYLE.md rule 4); every launcher only enqueues
// work on `stream` (no host synchronization, no allocation). All pointers are device memory of
// the current device; activations are float32, contiguous (N, C, H, W) or (N, F). Every function
// accepts empty inputs (n = 0 or N = 0) and then launches nothing.
//
//   relu_forward       y = max(x, 0); NaN propagates (clamp_min)
//   relu_backward      dx = dy where y > 0, else 0          (from the forward's OUTPUT y)
//   maxpool_forward    per window: the first maximum in window order, a NaN wins; y and argmax
//                      (h·W + w within the input plane) overwritten
//   maxpool_backward   dx = Σ over the windows whose argmax is this element of dy, in output
//                      order (a gather: deterministic, no atomics); dx overwritten
//   gap_forward        y = mean over the S elements of each plane (float64 sum)
//   gap_backward       dx = dy / S (float32 division, as the CPU)
//   add                y = a + b (a residual block's two branches)
//   accumulate         y += x (the gradient of a branch point, from each of its readers)
//   add_bias           y (N, C, S) += bias (C)
//   bias_backward      grad_bias (C) += Σ_{n,s} dy (float64 sum in (n, s) order)
//   softmax_xent       per row: lse = m + log Σ exp(z − m) (float64), loss = lse − z_label,
//                      dz = scale · (exp(z − lse) − onehot); row_loss (N) overwritten, then
//                      *loss_sum = Σ row_loss in row order (one thread: deterministic)
//   sgd_update         torch.optim.SGD's rule, exactly as optim/sgd.h (same fused multiply-adds,
//                      momentum·buf rounded before its add)
#pragma once

#include <cstdint>

#include "nn/sgd_math.h"

struct CUstream_st;

namespace syncbn::nn::cuda {

using Stream = CUstream_st*;

void relu_forward(const float* x, int64_t n, float* y, Stream stream);
void relu_backward(const float* dy, const float* y, int64_t n, float* dx, Stream stream);

// a, b, y (n); y may alias a or b.
void add(const float* a, const float* b, int64_t n, float* y, Stream stream);
// x, y (n).
void accumulate(const float* x, int64_t n, float* y, Stream stream);

// x (planes, H, W) → y (planes, Ho, Wo), argmax (planes, Ho, Wo); Ho = (H + 2p − k) / s + 1.
void maxpool_forward(const float* x, int64_t planes, int64_t H, int64_t W, int64_t kernel,
                     int64_t stride, int64_t padding, float* y, int32_t* argmax, Stream stream);
// dy, argmax (planes, Ho, Wo) → dx (planes, H, W).
void maxpool_backward(const float* dy, const int32_t* argmax, int64_t planes, int64_t H, int64_t W,
                      int64_t kernel, int64_t stride, int64_t padding, float* dx, Stream stream);

// x (planes, S) → y (planes); dy (planes) → dx (planes, S).
void gap_forward(const float* x, int64_t planes, int64_t S, float* y, Stream stream);
void gap_backward(const float* dy, int64_t planes, int64_t S, float* dx, Stream stream);

void add_bias(float* y, const float* bias, int64_t N, int64_t C, int64_t S, Stream stream);
void bias_backward(const float* dy, int64_t N, int64_t C, int64_t S, float* grad_bias,
                   Stream stream);

// logits, dlogits (N, K); labels (N) in [0, K) (checked by the caller); row_loss (N) scratch.
void softmax_xent(const float* logits, const int32_t* labels, int64_t N, int64_t K, double scale,
                  float* dlogits, double* row_loss, double* loss_sum, Stream stream);

// One SGD step's scalars (nn/sgd_math.h).
using math::sgd_step;
using math::SgdStep;
// value, grad, momentum_buffer (n); momentum_buffer unused (may be null) without momentum.
void sgd_update(float* value, const float* grad, float* momentum_buffer, int64_t n,
                const SgdStep& step, Stream stream);

}  // namespace syncbn::nn::cuda

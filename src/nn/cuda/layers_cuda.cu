// The CUDA trainer's small layers (nn/cuda/layers_cuda.h: the math, per launcher). One thread
// per output element, in grid-stride loops; no shared memory, no atomics, so every result is
// deterministic and the same under the CPU emulation of the tests (norm/cuda/cuda_emulation.h).
#include <cmath>

#include "nn/cuda/layers_cuda.h"
#include "nn/loss_math.h"
#include "norm/cuda/cuda_common.cuh"  // launch(), also under the CPU emulation of tests

namespace syncbn::nn::cuda {
namespace {

using norm::cuda::detail::launch;

#if defined(SYNCBN_CUDA_EMULATION)
constexpr int kThreads = 32;  // the emulation runs every GPU thread as a host thread
#else
constexpr int kThreads = 256;
#endif
constexpr int64_t kMaxBlocks = 4096;

cudaStream_t to_cuda(Stream stream) { return reinterpret_cast<cudaStream_t>(stream); }
dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

__device__ __forceinline__ int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t index_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__global__ void relu_forward_kernel(const float* x, int64_t n, float* y) {
  for (int64_t i = first_index(); i < n; i += index_stride()) {
    const float v = x[i];
    y[i] = v > 0.0f || std::isnan(v) ? v : 0.0f;
  }
}

__global__ void relu_backward_kernel(const float* dy, const float* y, int64_t n, float* dx) {
  for (int64_t i = first_index(); i < n; i += index_stride()) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void add_kernel(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(const float* x, int64_t n, float* y) {
  for (int64_t i = first_index(); i < n; i += index_stride()) y[i] += x[i];
}

struct PoolShape {
  int64_t planes, H, W, Ho, Wo, kernel, stride, padding;
};

__global__ void maxpool_forward_kernel(const float* x, PoolShape p, float* y, int32_t* argmax) {
  const int64_t total = p.planes * p.Ho * p.Wo;
  for (int64_t o = first_index(); o < total; o += index_stride()) {
    const int64_t ow = o % p.Wo, oh = (o / p.Wo) % p.Ho, plane = o / (p.Wo * p.Ho);
    const float* in = x + plane * p.H * p.W;
    const int64_t hs = oh * p.stride - p.padding, ws = ow * p.stride - p.padding;
    const int64_t h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;
    const int64_t h1 = hs + p.kernel < p.H ? hs + p.kernel : p.H;
    const int64_t w1 = ws + p.kernel < p.W ? ws + p.kernel : p.W;
    int64_t best = h0 * p.W + w0;
    float best_value = -INFINITY;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t w = w0; w < w1; ++w) {
        const float v = in[h * p.W + w];
        if (v > best_value || std::isnan(v)) {
          best_value = v;
          best = h * p.W + w;
        }
      }
    }
    y[o] = best_value;
    argmax[o] = static_cast<int32_t>(best);
  }
}

// Output rows whose window [o·s − p, o·s − p + k) contains input row h: o in [lo, hi].
__device__ __forceinline__ void covering(int64_t h, int64_t k, int64_t s, int64_t pad, int64_t out,
                                         int64_t* lo, int64_t* hi) {
  const int64_t top = h + pad - k + 1;  // o·s >= top
  *lo = top > 0 ? (top + s - 1) / s : 0;
  const int64_t last = (h + pad) / s;
  *hi = last < out - 1 ? last : out - 1;
}

__global__ void maxpool_backward_kernel(const float* dy, const int32_t* argmax, PoolShape p,
                                        float* dx) {
  const int64_t total = p.planes * p.H * p.W;
  for (int64_t i = first_index(); i < total; i += index_stride()) {
    const int64_t w = i % p.W, h = (i / p.W) % p.H, plane = i / (p.W * p.H);
    int64_t oh0, oh1, ow0, ow1;
    covering(h, p.kernel, p.stride, p.padding, p.Ho, &oh0, &oh1);
    covering(w, p.kernel, p.stride, p.padding, p.Wo, &ow0, &ow1);
    const int32_t self = static_cast<int32_t>(h * p.W + w);
    const int64_t base = plane * p.Ho * p.Wo;
    float sum = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = base + oh * p.Wo + ow;
        if (argmax[o] == self) sum += dy[o];
      }
    }
    dx[i] = sum;
  }
}

__global__ void gap_forward_kernel(const float* x, int64_t planes, int64_t S, float* y) {
  for (int64_t plane = first_index(); plane < planes; plane += index_stride()) {
    double sum = 0.0;
    for (int64_t s = 0; s < S; ++s) sum += x[plane * S + s];
    y[plane] = static_cast<float>(sum / static_cast<double>(S));
  }
}

__global__ void gap_backward_kernel(const float* dy, int64_t planes, int64_t S, float* dx) {
  const int64_t total = planes * S;
  for (int64_t i = first_index(); i < total; i += index_stride())
    dx[i] = dy[i / S] / static_cast<float>(S);
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t N, int64_t C, int64_t S) {
  const int64_t total = N * C * S;
  for (int64_t i = first_index(); i < total; i += index_stride()) y[i] += bias[(i / S) % C];
}

__global__ void bias_backward_kernel(const float* dy, int64_t N, int64_t C, int64_t S,
                                     float* grad_bias) {
  for (int64_t c = first_index(); c < C; c += index_stride()) {
    double sum = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t s = 0; s < S; ++s) sum += dy[(n * C + c) * S + s];
    grad_bias[c] += static_cast<float>(sum);
  }
}

__global__ void softmax_xent_rows_kernel(const float* z, const int32_t* labels, int64_t N,
                                         int64_t K, double scale, float* dz, double* row_loss) {
  for (int64_t i = first_index(); i < N; i += index_stride()) {
    int64_t argmax = 0;
    row_loss[i] = math::softmax_xent_row(z + i * K, K, labels[i], scale, dz + i * K, &argmax);
  }
}

__global__ void sum_rows_kernel(const double* row_loss, int64_t N, double* loss_sum) {
  double total = 0.0;
  for (int64_t i = 0; i < N; ++i) total += row_loss[i];
  *loss_sum = total;
}

__global__ void sgd_update_kernel(float* value, const float* grad, float* buf, int64_t n,
                                  SgdStep u) {
  for (int64_t i = first_index(); i < n; i += index_stride())
    math::sgd_update_element(u, value, grad, buf, i);
}

PoolShape pool_shape(int64_t planes, int64_t H, int64_t W, int64_t kernel, int64_t stride,
                     int64_t padding) {
  return {planes,
          H,
          W,
          (H + 2 * padding - kernel) / stride + 1,
          (W + 2 * padding - kernel) / stride + 1,
          kernel,
          stride,
          padding};
}

}  // namespace

void relu_forward(const float* x, int64_t n, float* y, Stream stream) {
  if (n == 0) return;
  launch(relu_forward_kernel, grid_for(n), dim3(kThreads), 0, to_cuda(stream), x, n, y);
}

void relu_backward(const float* dy, const float* y, int64_t n, float* dx, Stream stream) {
  if (n == 0) return;
  launch(relu_backward_kernel, grid_for(n), dim3(kThreads), 0, to_cuda(stream), dy, y, n, dx);
}

void add(const float* a, const float* b, int64_t n, float* y, Stream stream) {
  if (n == 0) return;
  launch(add_kernel, grid_for(n), dim3(kThreads), 0, to_cuda(stream), a, b, n, y);
}

void accumulate(const float* x, int64_t n, float* y, Stream stream) {
  if (n == 0) return;
  launch(accumulate_kernel, grid_for(n), dim3(kThreads), 0, to_cuda(stream), x, n, y);
}

void maxpool_forward(const float* x, int64_t planes, int64_t H, int64_t W, int64_t kernel,
                     int64_t stride, int64_t padding, float* y, int32_t* argmax, Stream stream) {
  const PoolShape p = pool_shape(planes, H, W, kernel, stride, padding);
  const int64_t total = p.planes * p.Ho * p.Wo;
  if (total == 0) return;
  launch(maxpool_forward_kernel, grid_for(total), dim3(kThreads), 0, to_cuda(stream), x, p, y,
         argmax);
}

void maxpool_backward(const float* dy, const int32_t* argmax, int64_t planes, int64_t H, int64_t W,
                      int64_t kernel, int64_t stride, int64_t padding, float* dx, Stream stream) {
  const PoolShape p = pool_shape(planes, H, W, kernel, stride, padding);
  const int64_t total = planes * H * W;
  if (total == 0) return;
  launch(maxpool_backward_kernel, grid_for(total), dim3(kThreads), 0, to_cuda(stream), dy, argmax,
         p, dx);
}

void gap_forward(const float* x, int64_t planes, int64_t S, float* y, Stream stream) {
  if (planes == 0) return;
  launch(gap_forward_kernel, grid_for(planes), dim3(kThreads), 0, to_cuda(stream), x, planes, S, y);
}

void gap_backward(const float* dy, int64_t planes, int64_t S, float* dx, Stream stream) {
  if (planes * S == 0) return;
  launch(gap_backward_kernel, grid_for(planes * S), dim3(kThreads), 0, to_cuda(stream), dy, planes,
         S, dx);
}

void add_bias(float* y, const float* bias, int64_t N, int64_t C, int64_t S, Stream stream) {
  if (N * C * S == 0) return;
  launch(add_bias_kernel, grid_for(N * C * S), dim3(kThreads), 0, to_cuda(stream), y, bias, N, C,
         S);
}

void bias_backward(const float* dy, int64_t N, int64_t C, int64_t S, float* grad_bias,
                   Stream stream) {
  if (N * C * S == 0) return;
  launch(bias_backward_kernel, grid_for(C), dim3(kThreads), 0, to_cuda(stream), dy, N, C, S,
         grad_bias);
}

void softmax_xent(const float* logits, const int32_t* labels, int64_t N, int64_t K, double scale,
                  float* dlogits, double* row_loss, double* loss_sum, Stream stream) {
  if (N > 0) {
    launch(softmax_xent_rows_kernel, grid_for(N), dim3(kThreads), 0, to_cuda(stream), logits,
           labels, N, K, scale, dlogits, row_loss);
  }
  launch(sum_rows_kernel, dim3(1), dim3(1), 0, to_cuda(stream), row_loss, N, loss_sum);
}

void sgd_update(float* value, const float* grad, float* momentum_buffer, int64_t n,
                const SgdStep& step, Stream stream) {
  if (n == 0) return;
  launch(sgd_update_kernel, grid_for(n), dim3(kThreads), 0, to_cuda(stream), value, grad,
         momentum_buffer, n, step);
}

}  // namespace syncbn::nn::cuda

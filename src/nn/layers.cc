// ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten, Identity. Loops over planes or elements split
// statically over OpenMP threads (norm/parallel.h), each thread writing its own outputs, so
// results are the same for any thread count.
#include "nn/layers.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "nn/layer_util.h"
#include "norm/parallel.h"

namespace syncbn::nn {
namespace {

using norm::thread_count_for;

void require_4d(const Tensor& x, const std::string& kind) {
  SYNCBN_REQUIRE(x.dim() == 4, kind, ": expected 4D input (N, C, H, W), got input of size ",
                 shape_to_string(x.shape()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ReLU

Tensor ReLU::forward(const Tensor& x, bool /*training*/) {
  Tensor y = Tensor::empty(x.shape(), x.format());
  const int64_t n = x.numel();
  positive_.resize(static_cast<size_t>(n));
  const float* in = x.data();
  float* out = y.data();
  uint8_t* mask = positive_.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(n))
  for (int64_t i = 0; i < n; ++i) {
    const float v = in[i];
    out[i] = v > 0.0f || std::isnan(v) ? v : 0.0f;  // clamp_min(x, 0): NaN propagates
    mask[i] = v > 0.0f;
  }
  shape_ = x.shape();
  format_ = x.format();
  have_saved_ = true;
  return y;
}

Tensor ReLU::backward(const Tensor& dy_in) {
  detail::require_forward(have_saved_, kind());
  detail::require_grad_shape(dy_in, shape_, kind());
  Tensor converted;
  const Tensor* dy = &dy_in;
  if (dy_in.format() != format_) {
    converted = dy_in.to(format_);
    dy = &converted;
  }
  Tensor dx = Tensor::empty(shape_, format_);
  const int64_t n = dx.numel();
  const float* g = dy->data();
  const uint8_t* mask = positive_.data();
  float* out = dx.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(n))
  for (int64_t i = 0; i < n; ++i) out[i] = mask[i] ? g[i] : 0.0f;
  positive_ = {};
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// MaxPool2d

MaxPool2d::MaxPool2d(int64_t kernel_size, int64_t stride, int64_t padding)
    : kernel_(kernel_size), stride_(stride == 0 ? kernel_size : stride), padding_(padding) {
  SYNCBN_REQUIRE(kernel_ >= 1 && stride_ >= 1 && padding_ >= 0,
                 "MaxPool2d: expected kernel_size >= 1, stride >= 1 (0: kernel_size), padding >= "
                 "0, got kernel_size ",
                 kernel_size, ", stride ", stride, ", padding ", padding);
  SYNCBN_REQUIRE(padding_ <= kernel_ / 2, "MaxPool2d: pad should be at most half of kernel size, ",
                 "got padding ", padding_, " and kernel_size ", kernel_);
}

namespace {

// One output row of a 2x2, stride 2 max-pool: input rows r0 and r1 (starting at plane index
// row0), Wo outputs and their argmax. The same rule as the general loop (a later value wins if
// greater, or if it is NaN), written as selects so that the loop vectorizes.
void max_pool_2x2_row(const float* __restrict r0, const float* __restrict r1, float* __restrict out,
                      int32_t* __restrict arg, int64_t Wo, int32_t row0, int32_t W) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const float v0 = r0[2 * ow], v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
    const int32_t i0 = row0 + 2 * static_cast<int32_t>(ow);
    float best = v0;
    int32_t at = i0;
    bool wins = (v1 > best) | (v1 != v1);
    best = wins ? v1 : best;
    at = wins ? i0 + 1 : at;
    wins = (v2 > best) | (v2 != v2);
    best = wins ? v2 : best;
    at = wins ? i0 + W : at;
    wins = (v3 > best) | (v3 != v3);
    best = wins ? v3 : best;
    at = wins ? i0 + W + 1 : at;
    out[ow] = best;
    arg[ow] = at;
  }
}

}  // namespace

Tensor MaxPool2d::forward(const Tensor& x_in, bool /*training*/) {
  require_4d(x_in, kind());
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  SYNCBN_REQUIRE(H + 2 * padding_ >= kernel_ && W + 2 * padding_ >= kernel_,
                 "MaxPool2d: input of size ", shape_to_string(x_in.shape()), " padded by ",
                 padding_, " is smaller than the kernel (", kernel_, "x", kernel_,
                 "); output size is too small");
  SYNCBN_REQUIRE(H * W <= std::numeric_limits<int32_t>::max(), "MaxPool2d: input plane ", H, "x", W,
                 " is too large");
  const int64_t Ho = (H + 2 * padding_ - kernel_) / stride_ + 1;
  const int64_t Wo = (W + 2 * padding_ - kernel_) / stride_ + 1;
  const detail::Contiguous xc(x_in);
  const float* x = xc.get().data();
  Tensor y = Tensor::empty({N, C, Ho, Wo});
  argmax_.resize(static_cast<size_t>(y.numel()));
  in_shape_ = x_in.shape();
  out_shape_ = y.shape();
  have_saved_ = true;
  const int64_t planes = N * C;
  float* out = y.data();
  int32_t* arg = argmax_.data();
  if (kernel_ == 2 && stride_ == 2 && padding_ == 0) {
    // The common 2x2 pool: windows never leave the plane, so no clamping, and the row loop
    // vectorizes (the general loop below spends most of its time in mispredicted branches).
#pragma omp parallel for schedule(static) num_threads(thread_count_for(y.numel() * 4))
    for (int64_t plane = 0; plane < planes; ++plane) {
      const float* in = x + plane * H * W;
      for (int64_t oh = 0; oh < Ho; ++oh) {
        const float* r0 = in + 2 * oh * W;
        max_pool_2x2_row(r0, r0 + W, out + (plane * Ho + oh) * Wo, arg + (plane * Ho + oh) * Wo, Wo,
                         static_cast<int32_t>(2 * oh * W), static_cast<int32_t>(W));
      }
    }
    return y;
  }
#pragma omp parallel for schedule(static) \
    num_threads(thread_count_for(y.numel() * kernel_ * kernel_))
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = x + plane * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh) {
      const int64_t h0 = std::max<int64_t>(oh * stride_ - padding_, 0);
      const int64_t h1 = std::min(oh * stride_ - padding_ + kernel_, H);
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * stride_ - padding_, 0);
        const int64_t w1 = std::min(ow * stride_ - padding_ + kernel_, W);
        // PyTorch's CPU kernel: the first maximum wins ties, and a NaN beats everything.
        int64_t best = h0 * W + w0;
        float best_value = -std::numeric_limits<float>::infinity();
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) {
            const float v = in[h * W + w];
            if (v > best_value || std::isnan(v)) {
              best_value = v;
              best = h * W + w;
            }
          }
        }
        const int64_t o = (plane * Ho + oh) * Wo + ow;
        out[o] = best_value;
        arg[o] = static_cast<int32_t>(best);
      }
    }
  }
  return y;
}

Tensor MaxPool2d::backward(const Tensor& dy_in) {
  detail::require_forward(have_saved_, kind());
  detail::require_grad_shape(dy_in, out_shape_, kind());
  const detail::Contiguous dyc(dy_in);
  const float* dy = dyc.get().data();
  Tensor dx(in_shape_);  // zeros; windows may overlap, so the gradient accumulates
  const int64_t planes = in_shape_[0] * in_shape_[1];
  const int64_t in_plane = in_shape_[2] * in_shape_[3];
  const int64_t out_plane = out_shape_[2] * out_shape_[3];
  const int32_t* arg = argmax_.data();
  float* out = dx.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(planes* out_plane))
  for (int64_t plane = 0; plane < planes; ++plane) {
    float* d = out + plane * in_plane;
    for (int64_t o = plane * out_plane; o < (plane + 1) * out_plane; ++o) d[arg[o]] += dy[o];
  }
  argmax_ = {};
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// AdaptiveAvgPool2d

namespace {

// PyTorch's adaptive pooling windows: cell i of `out` over `in` covers [⌊i·in/out⌋,
// ⌈(i+1)·in/out⌉).
int64_t window_start(int64_t i, int64_t out, int64_t in) { return i * in / out; }
int64_t window_end(int64_t i, int64_t out, int64_t in) { return ((i + 1) * in + out - 1) / out; }

}  // namespace

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_h, int64_t output_w)
    : out_h_(output_h), out_w_(output_w) {
  SYNCBN_REQUIRE(output_h >= 1 && output_w >= 1,
                 "AdaptiveAvgPool2d: output size must be >= 1, got (", output_h, ", ", output_w,
                 ")");
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x_in, bool /*training*/) {
  require_4d(x_in, kind());
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  SYNCBN_REQUIRE(H >= 1 && W >= 1, "AdaptiveAvgPool2d: expected non-empty spatial dimensions, ",
                 "got input of size ", shape_to_string(x_in.shape()));
  const detail::Contiguous xc(x_in);
  const float* x = xc.get().data();
  Tensor y = Tensor::empty({N, C, out_h_, out_w_});
  const int64_t planes = N * C;
  float* out = y.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(planes* H* W))
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = x + plane * H * W;
    for (int64_t i = 0; i < out_h_; ++i) {
      const int64_t h0 = window_start(i, out_h_, H), h1 = window_end(i, out_h_, H);
      for (int64_t j = 0; j < out_w_; ++j) {
        const int64_t w0 = window_start(j, out_w_, W), w1 = window_end(j, out_w_, W);
        double sum = 0.0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) sum += in[h * W + w];
        out[(plane * out_h_ + i) * out_w_ + j] =
            static_cast<float>(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  }
  in_shape_ = x_in.shape();
  have_saved_ = true;
  return y;
}

Tensor AdaptiveAvgPool2d::backward(const Tensor& dy_in) {
  detail::require_forward(have_saved_, kind());
  const int64_t N = in_shape_[0], C = in_shape_[1], H = in_shape_[2], W = in_shape_[3];
  detail::require_grad_shape(dy_in, {N, C, out_h_, out_w_}, kind());
  const detail::Contiguous dyc(dy_in);
  const float* dy = dyc.get().data();
  Tensor dx(in_shape_);  // zeros; adaptive windows may overlap
  const int64_t planes = N * C;
  float* out = dx.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(planes* H* W))
  for (int64_t plane = 0; plane < planes; ++plane) {
    float* d = out + plane * H * W;
    for (int64_t i = 0; i < out_h_; ++i) {
      const int64_t h0 = window_start(i, out_h_, H), h1 = window_end(i, out_h_, H);
      for (int64_t j = 0; j < out_w_; ++j) {
        const int64_t w0 = window_start(j, out_w_, W), w1 = window_end(j, out_w_, W);
        const float g =
            dy[(plane * out_h_ + i) * out_w_ + j] / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) d[h * W + w] += g;
      }
    }
  }
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Flatten, Identity

Tensor Flatten::forward(const Tensor& x, bool /*training*/) {
  SYNCBN_REQUIRE(x.dim() >= 2, "Flatten: expected input with at least 2 dimensions (N, ...), ",
                 "got input of size ", shape_to_string(x.shape()));
  in_shape_ = x.shape();
  in_format_ = x.format();
  have_saved_ = true;
  int64_t features = 1;
  for (int64_t d = 1; d < x.dim(); ++d) features *= x.size(d);
  return detail::reshaped(x, {x.size(0), features});
}

Tensor Flatten::backward(const Tensor& dy) {
  detail::require_forward(have_saved_, kind());
  int64_t features = 1;
  for (size_t d = 1; d < in_shape_.size(); ++d) features *= in_shape_[d];
  detail::require_grad_shape(dy, {in_shape_[0], features}, kind());
  have_saved_ = false;
  Tensor dx = detail::reshaped(dy, in_shape_);
  return in_format_ == MemoryFormat::kContiguous ? dx : dx.to(in_format_);
}

Tensor Identity::forward(const Tensor& x, bool /*training*/) {
  shape_ = x.shape();
  have_saved_ = true;
  return x;
}

Tensor Identity::backward(const Tensor& dy) {
  detail::require_forward(have_saved_, kind());
  detail::require_grad_shape(dy, shape_, kind());
  have_saved_ = false;
  return dy;
}

}  // namespace syncbn::nn

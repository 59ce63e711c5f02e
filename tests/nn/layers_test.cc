// The layers of nn/layers.h against finite differences, and their contracts: shapes, N = 0,
// errors, parameter and buffer names, initialisation, gradient accumulation.
//
// Gradient checks. The layers compute in float32; the check takes the scalar
// L = Σ g·y(x, θ) for a fixed random g, accumulated in float64, and compares each analytic
// dL/dx_i and dL/dθ_j with the central difference (L(v + h) − L(v − h)) / 2h, also in float64:
//
//   err = max_i |analytic_i − numeric_i| / max_i |analytic_i|     ≤ tolerance
//
// For the piecewise-linear layers (conv, linear, pooling, ReLU) the difference has no truncation
// error: L is linear in v between kinks, and the float32 outputs that v does not touch are
// bitwise the same in both evaluations, so only the few affected outputs' rounding (~1e-7 of
// them, over 2h = 2e-2) remains; tolerance 1e-3. Inputs keep clear of the kinks (ReLU: |x| >=
// 0.1; max pooling: values at least 0.1 apart). The norms and the loss are smooth: h = 1e-2 gives
// a truncation error ~h² and every output moves; tolerance 3e-3. A wrong term in any of these
// gradients is off by O(1). Breakages tried once each, and caught: col2im reading the kernel
// transposed (kh and kw swapped: every conv case but the 1x1 fails), max pooling keeping the last
// of tied maxima, the loss gradient without the one-hot, norm layers overwriting instead of
// accumulating dγ and dβ.
#include "nn/layers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "tensor/tensor.h"

namespace syncbn::nn {
namespace {

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0) {
  Tensor t(std::move(shape));
  Rng(seed).fill_normal(t.data(), t.numel(), 0.0, stddev);
  return t;
}

// Values at least 0.1 apart in random order: no ties or near-ties for max pooling.
Tensor distinct_tensor(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t(std::move(shape));
  std::vector<int64_t> order(t.numel());
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  for (int64_t i = t.numel() - 1; i > 0; --i)
    std::swap(order[i], order[rng.next_u64() % static_cast<uint64_t>(i + 1)]);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data()[i] = static_cast<float>(0.1 * (order[i] - t.numel() / 2));
  return t;
}

// Values with |v| >= 0.1: clear of ReLU's kink.
Tensor away_from_zero(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t = random_tensor(std::move(shape), seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float& v = t.data()[i];
    v = std::copysign(0.1f + std::abs(v), v);
  }
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a.data()[i]) * b.data()[i];
  return s;
}

double relative_error(const std::vector<double>& analytic, const std::vector<double>& numeric) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    err = std::max(err, std::abs(analytic[i] - numeric[i]));
    scale = std::max(scale, std::abs(analytic[i]));
  }
  return scale > 0 ? err / scale : err;
}

void zero_grads(Layer& layer) {
  std::vector<ParamRef> params;
  layer.collect_parameters(params);
  for (ParamRef& p : params) std::fill(p.grad->data(), p.grad->data() + p.grad->numel(), 0.0f);
}

struct GradCheckOptions {
  bool training = true;
  double h = 1e-2;
  double tolerance = 1e-3;
};

// Checks dx and every parameter gradient of `layer` at x against central differences of
// L = Σ g·y, g random. Returns the layer's output for further checks.
Tensor grad_check(Layer& layer, const Tensor& x, const GradCheckOptions& opt, uint64_t seed = 7) {
  SCOPED_TRACE(str_cat(layer.kind(), " input ", shape_to_string(x.shape())));
  zero_grads(layer);
  const Tensor y = layer.forward(x, opt.training);
  const Tensor g = random_tensor(y.shape(), seed);
  const Tensor dx = layer.backward(g);
  EXPECT_EQ(dx.shape(), x.shape());

  auto loss = [&](const Tensor& input) { return dot(g, layer.forward(input, opt.training)); };
  // dx
  {
    Tensor xp = x;
    std::vector<double> analytic(x.numel()), numeric(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.data()[i];
      xp.data()[i] = static_cast<float>(v + opt.h);
      const double lp = loss(xp);
      xp.data()[i] = static_cast<float>(v - opt.h);
      const double lm = loss(xp);
      xp.data()[i] = v;
      // The perturbation actually applied, after rounding to float32.
      const double step = static_cast<double>(static_cast<float>(v + opt.h)) -
                          static_cast<double>(static_cast<float>(v - opt.h));
      numeric[i] = (lp - lm) / step;
      analytic[i] = dx.data()[i];
    }
    EXPECT_LE(relative_error(analytic, numeric), opt.tolerance) << "dx";
  }
  // Parameter gradients.
  std::vector<ParamRef> params;
  layer.collect_parameters(params);
  for (ParamRef& p : params) {
    std::vector<double> analytic(p.value->numel()), numeric(p.value->numel());
    for (int64_t j = 0; j < p.value->numel(); ++j) {
      float& v = p.value->data()[j];
      const float saved = v;
      v = static_cast<float>(saved + opt.h);
      const double lp = loss(x);
      v = static_cast<float>(saved - opt.h);
      const double lm = loss(x);
      v = saved;
      const double step = static_cast<double>(static_cast<float>(saved + opt.h)) -
                          static_cast<double>(static_cast<float>(saved - opt.h));
      numeric[j] = (lp - lm) / step;
      analytic[j] = p.grad->data()[j];
    }
    EXPECT_LE(relative_error(analytic, numeric), opt.tolerance) << "d" << p.name;
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Conv2d

struct ConvCase {
  int64_t n, c_in, h, w, c_out, k, stride, pad;
  bool bias;
};

void PrintTo(const ConvCase& c, std::ostream* out) {
  *out << str_cat("x [", c.n, ", ", c.c_in, ", ", c.h, ", ", c.w, "] → ", c.c_out,
                  " channels, kernel ", c.k, " stride ", c.stride, " padding ", c.pad,
                  c.bias ? "" : " no bias");
}

class NnConv2dGrad : public ::testing::TestWithParam<ConvCase> {};

TEST_P(NnConv2dGrad, MatchesFiniteDifferences) {
  const ConvCase c = GetParam();
  Rng rng(11);
  Conv2d conv(c.c_in, c.c_out, c.k, c.stride, c.pad, c.bias, rng);
  const Tensor x = random_tensor({c.n, c.c_in, c.h, c.w}, 3);
  const Tensor y = grad_check(conv, x, {});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{c.n, c.c_out, (c.h + 2 * c.pad - c.k) / c.stride + 1,
                                             (c.w + 2 * c.pad - c.k) / c.stride + 1}));
}

INSTANTIATE_TEST_SUITE_P(
    NnShapes, NnConv2dGrad,
    ::testing::Values(ConvCase{2, 3, 6, 7, 4, 3, 1, 1, true},   // same padding, odd width
                      ConvCase{1, 2, 7, 9, 3, 3, 2, 0, true},   // stride 2, no padding, N = 1
                      ConvCase{2, 3, 9, 7, 2, 3, 2, 1, false},  // stride 2, padding 1, no bias
                      ConvCase{3, 2, 5, 4, 3, 1, 1, 0, true},   // 1x1
                      ConvCase{1, 1, 5, 6, 2, 5, 1, 2, true},   // 5x5 with padding 2
                      ConvCase{2, 2, 4, 5, 2, 2, 2, 0, true},   // even kernel, stride 2
                      ConvCase{2, 2, 3, 3, 2, 3, 3, 1, true},   // stride larger than the overlap
                      ConvCase{2, 3, 7, 6, 2, 3, 1, 0, true},   // stride 1, no padding (valid)
                      ConvCase{1, 2, 5, 8, 3, 3, 1, 2, true},   // stride 1, padding beyond same
                      ConvCase{2, 2, 6, 5, 2, 2, 1, 1, true},   // even kernel, stride 1
                      // From 3 input channels conv.cc runs oneDNN's convolution primitives:
                      // the odd shapes again on that path.
                      ConvCase{2, 4, 6, 7, 3, 3, 2, 0, true},   // stride 2, no padding
                      ConvCase{1, 3, 5, 8, 3, 3, 1, 2, false},  // padding beyond same
                      ConvCase{2, 4, 4, 5, 2, 2, 2, 0, true},   // even kernel, stride 2
                      ConvCase{2, 3, 6, 5, 2, 2, 1, 1, true},   // even kernel, stride 1
                      ConvCase{2, 3, 3, 3, 2, 3, 3, 1, true},   // stride larger than the overlap
                      ConvCase{2, 4, 5, 6, 3, 1, 1, 2, true},   // 1x1 with padding
                      ConvCase{1, 3, 7, 7, 2, 5, 1, 2, true}),  // 5x5 with padding 2
    [](const ::testing::TestParamInfo<ConvCase>& param_info) {
      const ConvCase& c = param_info.param;
      return str_cat("n", c.n, "c", c.c_in, "k", c.k, "s", c.stride, "p", c.pad,
                     c.bias ? "" : "nobias");
    });

// Direct float64 convolution, for the shapes too large for finite differences.
std::vector<double> conv_reference(const Tensor& x, Conv2d& conv, int64_t k, int64_t stride,
                                   int64_t pad) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = conv.weight().size(0);
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  std::vector<double> y(N * O * Ho * Wo);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          double s = conv.bias().numel() ? conv.bias().data()[o] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j) {
                const int64_t ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += static_cast<double>(x.data()[((n * C + c) * H + ih) * W + iw]) *
                     conv.weight().data()[((o * C + c) * k + i) * k + j];
              }
          y[((n * O + o) * Ho + oh) * Wo + ow] = s;
        }
  return y;
}

// Planes large enough that conv.cc's im2col budget (2^18 floats) splits the batch into chunks of
// 2 samples with a partial last chunk (4 channels at 56x56: 112896 floats per sample), or into
// single samples (32 channels at 30x30: 259200): the result must not depend on the chunking.
TEST(NnConv2d, ChunkedBatchMatchesPerSample) {
  for (const auto& [c_in, hw] : std::vector<std::pair<int64_t, int64_t>>{{4, 56}, {32, 30}}) {
    SCOPED_TRACE(str_cat("c_in ", c_in));
    Rng rng(5);
    Conv2d conv(c_in, 3, 3, 1, 1, true, rng);
    const int64_t N = 3;
    const Tensor x = random_tensor({N, c_in, hw, hw}, 9);
    const Tensor y = conv.forward(x, true);
    const std::vector<double> ref = conv_reference(x, conv, 3, 1, 1);
    std::vector<double> ours(y.data(), y.data() + y.numel());
    EXPECT_LE(relative_error(ref, ours), 1e-5);
    const Tensor g = random_tensor(y.shape(), 10);
    zero_grads(conv);
    const Tensor dx = conv.backward(g);
    const Tensor dw_batch = conv.grad_weight();
    // Per sample: forward/backward of each one alone, gradients accumulated.
    zero_grads(conv);
    const int64_t in_per = x.numel() / N, out_per = y.numel() / N;
    double dx_err = 0, dx_scale = 0;
    for (int64_t n = 0; n < N; ++n) {
      Tensor xn({1, c_in, hw, hw}), gn({1, y.size(1), y.size(2), y.size(3)});
      std::copy(x.data() + n * in_per, x.data() + (n + 1) * in_per, xn.data());
      std::copy(g.data() + n * out_per, g.data() + (n + 1) * out_per, gn.data());
      conv.forward(xn, true);
      const Tensor dxn = conv.backward(gn);
      for (int64_t i = 0; i < in_per; ++i) {
        dx_err = std::max(dx_err,
                          std::abs(static_cast<double>(dxn.data()[i]) - dx.data()[n * in_per + i]));
        dx_scale = std::max(dx_scale, std::abs(static_cast<double>(dxn.data()[i])));
      }
    }
    EXPECT_LE(dx_err, 1e-5 * dx_scale);
    std::vector<double> a(dw_batch.data(), dw_batch.data() + dw_batch.numel());
    std::vector<double> b(conv.grad_weight().data(),
                          conv.grad_weight().data() + conv.grad_weight().numel());
    EXPECT_LE(relative_error(a, b), 1e-5);
  }
}

// A training forward keeps its im2col buffer for the backward; an eval forward keeps only the
// input and the backward recomputes col. Both give the same gradients, bit for bit, also when the
// kept buffer was sized by a larger earlier batch.
TEST(NnConv2d, BackwardAfterEvalForwardMatchesTraining) {
  Rng rng(3);
  Conv2d conv(5, 6, 3, 2, 1, true, rng);
  const Tensor big = random_tensor({7, 5, 9, 8}, 4);
  conv.forward(big, true);
  conv.backward(random_tensor({7, 6, 5, 4}, 5));
  const Tensor x = random_tensor({3, 5, 9, 8}, 6);
  const Tensor g = random_tensor({3, 6, 5, 4}, 7);
  Tensor grads[2][3];                          // [training] = {dx, dW, db}
  for (const bool training : {false, true}) {  // eval first: kept_col_ still holds big's col
    zero_grads(conv);
    conv.forward(x, training);
    grads[training][0] = conv.backward(g);
    grads[training][1] = conv.grad_weight();
    grads[training][2] = conv.grad_bias();
  }
  for (int i = 0; i < 3; ++i) {
    const Tensor& a = grads[0][i];
    const Tensor& b = grads[1][i];
    ASSERT_EQ(a.shape(), b.shape());
    for (int64_t j = 0; j < a.numel(); ++j) ASSERT_EQ(a.data()[j], b.data()[j]) << i << " " << j;
  }
}

TEST(NnConv2d, ChannelsLastInputGivesTheSameResult) {
  Rng rng(1);
  Conv2d conv(3, 4, 3, 2, 1, true, rng);
  const Tensor x = random_tensor({2, 3, 7, 6}, 2);
  const Tensor y = conv.forward(x, true);
  const Tensor y_cl = conv.forward(x.to(MemoryFormat::kChannelsLast), true);
  ASSERT_EQ(y.shape(), y_cl.shape());
  EXPECT_EQ(y_cl.format(), MemoryFormat::kContiguous);
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.data()[i], y_cl.data()[i]);
}

TEST(NnConv2d, InitIsPyTorchsUniformAndDeterministic) {
  Rng a(42), b(42);
  Conv2d c1(8, 16, 3, 1, 1, true, a), c2(8, 16, 3, 1, 1, true, b);
  const double bound = 1.0 / std::sqrt(8.0 * 9.0);
  double sumsq = 0;
  for (int64_t i = 0; i < c1.weight().numel(); ++i) {
    const float v = c1.weight().data()[i];
    EXPECT_EQ(v, c2.weight().data()[i]);
    EXPECT_LE(std::abs(v), bound);
    sumsq += static_cast<double>(v) * v;
  }
  // U(−b, b) has variance b²/3.
  const double var = sumsq / static_cast<double>(c1.weight().numel());
  EXPECT_NEAR(var, bound * bound / 3, 0.1 * bound * bound / 3);
  for (int64_t i = 0; i < c1.bias().numel(); ++i) EXPECT_LE(std::abs(c1.bias().data()[i]), bound);
  Rng c(43);
  Conv2d c3(8, 16, 3, 1, 1, true, c);
  EXPECT_NE(c1.weight().data()[0], c3.weight().data()[0]);
}

// ---------------------------------------------------------------------------------------------
// Linear

TEST(NnLinear, MatchesFiniteDifferences) {
  Rng rng(3);
  Linear with_bias(5, 4, true, rng), without_bias(6, 3, false, rng), one(3, 2, true, rng);
  grad_check(with_bias, random_tensor({3, 5}, 1), {});
  grad_check(without_bias, random_tensor({2, 6}, 2), {});
  grad_check(one, random_tensor({1, 3}, 3), {});
  Linear batched(5, 2, true, rng);
  const Tensor y = grad_check(batched, random_tensor({2, 3, 5}, 4), {});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 2}));
}

TEST(NnLinear, InitBoundsAndNames) {
  Rng rng(9);
  Linear fc(10, 7, true, rng);
  std::vector<ParamRef> params;
  fc.collect_parameters(params);
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "weight");
  EXPECT_EQ(params[0].value->shape(), (std::vector<int64_t>{7, 10}));
  EXPECT_EQ(params[1].name, "bias");
  for (int64_t i = 0; i < fc.weight().numel(); ++i)
    EXPECT_LE(std::abs(fc.weight().data()[i]), 1.0 / std::sqrt(10.0));
}

// ---------------------------------------------------------------------------------------------
// ReLU, pooling, reshaping

TEST(NnReLU, MatchesFiniteDifferencesAndClamps) {
  ReLU relu;
  const Tensor x = away_from_zero({2, 3, 5, 3}, 4);
  const Tensor y = grad_check(relu, x, {});
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y.data()[i], std::max(x.data()[i], 0.0f));
  Tensor nan_input({1, 2});
  nan_input.data()[0] = std::nanf("");
  nan_input.data()[1] = -1;
  const Tensor ny = relu.forward(nan_input, true);
  EXPECT_TRUE(std::isnan(ny.data()[0]));  // PyTorch's relu keeps NaN
  EXPECT_EQ(ny.data()[1], 0.0f);
}

TEST(NnMaxPool2d, MatchesFiniteDifferences) {
  struct Case {
    int64_t k, s, p, h, w;
  };
  for (const Case& c : {Case{2, 2, 0, 6, 6}, Case{2, 2, 0, 7, 5}, Case{3, 2, 1, 7, 8},
                        Case{3, 1, 0, 5, 6}, Case{3, 2, 0, 4, 4}}) {
    MaxPool2d pool(c.k, c.s, c.p);
    const Tensor x = distinct_tensor({2, 2, c.h, c.w}, 5);
    const Tensor y = grad_check(pool, x, {});
    EXPECT_EQ(y.size(2), (c.h + 2 * c.p - c.k) / c.s + 1);
    EXPECT_EQ(y.size(3), (c.w + 2 * c.p - c.k) / c.s + 1);
  }
}

TEST(NnMaxPool2d, TiesGoToTheFirstMaximum) {
  MaxPool2d pool(2);
  Tensor x({1, 1, 2, 2});  // all equal
  const Tensor y = pool.forward(x, true);
  Tensor g({1, 1, 1, 1});
  g.data()[0] = 1;
  const Tensor dx = pool.backward(g);
  EXPECT_EQ(y.data()[0], 0.0f);
  EXPECT_EQ(dx.data()[0], 1.0f);
  EXPECT_EQ(dx.data()[1] + dx.data()[2] + dx.data()[3], 0.0f);
}

// NaN wins (the last NaN of a window, as in PyTorch's CPU kernel), and an all -inf window
// points at its first element: in the 2x2 fast path and in the general loop (3x3, stride 3).
TEST(NnMaxPool2d, NanAndInfinityFollowPyTorch) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const int64_t k : {2, 3}) {
    SCOPED_TRACE(k);
    MaxPool2d pool(k);
    Tensor x({1, 3, k, k});
    float* p = x.data();
    const int64_t area = k * k;
    for (int64_t i = 0; i < area; ++i) {
      p[i] = static_cast<float>(i);                 // channel 0: NaN at 1 and at area - 1
      p[area + i] = -inf;                           // channel 1: every value -inf
      p[2 * area + i] = static_cast<float>(i % 2);  // channel 2: ties, first maximum at 1
    }
    p[1] = nan;
    p[area - 1] = nan;
    const Tensor y = pool.forward(x, true);
    EXPECT_TRUE(std::isnan(y.data()[0]));
    EXPECT_EQ(y.data()[1], -inf);
    EXPECT_EQ(y.data()[2], 1.0f);
    Tensor g({1, 3, 1, 1});
    for (int64_t c = 0; c < 3; ++c) g.data()[c] = 1.0f;
    const Tensor dx = pool.backward(g);
    for (int64_t i = 0; i < area; ++i) {
      SCOPED_TRACE(i);
      EXPECT_EQ(dx.data()[i], i == area - 1 ? 1.0f : 0.0f);
      EXPECT_EQ(dx.data()[area + i], i == 0 ? 1.0f : 0.0f);
      EXPECT_EQ(dx.data()[2 * area + i], i == 1 ? 1.0f : 0.0f);
    }
  }
}

TEST(NnAdaptiveAvgPool2d, MatchesFiniteDifferences) {
  AdaptiveAvgPool2d global;
  const Tensor y = grad_check(global, random_tensor({2, 3, 5, 7}, 6), {});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 1, 1}));
  AdaptiveAvgPool2d overlapping(2, 3);  // 5x7 → 2x3: windows overlap
  const Tensor y2 = grad_check(overlapping, random_tensor({1, 2, 5, 7}, 7), {});
  EXPECT_EQ(y2.shape(), (std::vector<int64_t>{1, 2, 2, 3}));
}

TEST(NnAdaptiveAvgPool2d, GlobalAverage) {
  AdaptiveAvgPool2d pool;
  const Tensor x = random_tensor({1, 2, 3, 3}, 8);
  const Tensor y = pool.forward(x, false);
  for (int64_t c = 0; c < 2; ++c) {
    double s = 0;
    for (int64_t i = 0; i < 9; ++i) s += x.data()[c * 9 + i];
    EXPECT_NEAR(y.data()[c], s / 9, 1e-6);
  }
}

TEST(NnFlatten, ReshapesAndBack) {
  Flatten flatten;
  const Tensor x = random_tensor({2, 3, 2, 2}, 9);
  const Tensor y = grad_check(flatten, x, {});
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{2, 12}));
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y.data()[i], x.data()[i]);
  const Tensor y_cl = flatten.forward(x.to(MemoryFormat::kChannelsLast), true);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y_cl.data()[i], x.data()[i]);
}

TEST(NnIdentity, PassesThrough) {
  Identity identity;
  const Tensor x = random_tensor({3, 4}, 10);
  const Tensor y = grad_check(identity, x, {});
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(y.data()[i], x.data()[i]);
}

// ---------------------------------------------------------------------------------------------
// Norm layers

constexpr GradCheckOptions kSmooth{true, 1e-2, 3e-3};

// Parameters shifted away from 1 and 0, so that a gradient that ignores γ shows.
void randomize_affine(Layer& layer, uint64_t seed) {
  std::vector<ParamRef> params;
  layer.collect_parameters(params);
  for (ParamRef& p : params) {
    const Tensor r = random_tensor(p.value->shape(), seed++, 0.3);
    for (int64_t i = 0; i < r.numel(); ++i) p.value->data()[i] += r.data()[i];
  }
}

TEST(NnBatchNorm2d, MatchesFiniteDifferences) {
  BatchNorm2d bn(3);
  randomize_affine(bn, 1);
  grad_check(bn, random_tensor({2, 3, 3, 4}, 11), kSmooth);
  BatchNorm2d plain(2, 1e-5, std::nullopt, /*affine=*/false, /*track_running_stats=*/true);
  grad_check(plain, random_tensor({1, 2, 3, 3}, 12), kSmooth);  // N = 1 is fine with H·W > 1
  BatchNorm2d eval(3);
  randomize_affine(eval, 3);
  Rng(4).fill_normal(eval.running_mean().data(), 3);
  grad_check(eval, random_tensor({2, 3, 2, 3}, 13), {false, 1e-2, 3e-3});
}

TEST(NnBatchNorm2d, NamesBuffersAndRunningStats) {
  BatchNorm2d bn(4, 1e-5, 0.1);
  std::vector<ParamRef> params;
  std::vector<BufferRef> buffers;
  bn.collect_parameters(params);
  bn.collect_buffers(buffers);
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "weight");
  EXPECT_EQ(params[1].name, "bias");
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[0].name, "running_mean");
  EXPECT_EQ(buffers[1].name, "running_var");
  EXPECT_EQ(buffers[2].name, "num_batches_tracked");
  ASSERT_NE(buffers[2].i64, nullptr);
  EXPECT_EQ(buffers[2].f32, nullptr);

  Tensor x = random_tensor({4, 4, 2, 2}, 14, 2.0);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] += 3.0f;
  bn.forward(x, true);
  EXPECT_EQ(bn.num_batches_tracked(), 1);
  double mean0 = 0;
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t s = 0; s < 4; ++s) mean0 += x.data()[(n * 4 + 0) * 4 + s] / 16.0;
  EXPECT_NEAR(bn.running_mean().data()[0], 0.1 * mean0, 1e-5);
  bn.forward(x, false);  // eval leaves the statistics alone
  EXPECT_EQ(bn.num_batches_tracked(), 1);

  BatchNorm2d untracked(4, 1e-5, 0.1, false, false);
  params.clear();
  buffers.clear();
  untracked.collect_parameters(params);
  untracked.collect_buffers(buffers);
  EXPECT_TRUE(params.empty());
  EXPECT_TRUE(buffers.empty());
}

TEST(NnGroupNorm, MatchesFiniteDifferences) {
  GroupNorm gn(2, 4);
  randomize_affine(gn, 5);
  grad_check(gn, random_tensor({2, 4, 3, 3}, 15), kSmooth);
  GroupNorm plain(3, 3, 1e-5, false);
  grad_check(plain, random_tensor({1, 3, 2, 3}, 16), kSmooth);
}

TEST(NnInstanceNorm2d, MatchesFiniteDifferences) {
  InstanceNorm2d in(3, /*affine=*/true);
  randomize_affine(in, 6);
  grad_check(in, random_tensor({2, 3, 3, 4}, 17), kSmooth);
  InstanceNorm2d tracked(2, /*affine=*/false, /*track_running_stats=*/true);
  grad_check(tracked, random_tensor({1, 2, 3, 3}, 18), kSmooth);
  std::vector<BufferRef> buffers;
  tracked.collect_buffers(buffers);
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(*buffers[2].i64, 0);  // InstanceNorm never counts batches
}

class NnSyncBatchNormLayerTest : public ::testing::Test {
 protected:
  void SetUp() override { group_ = comm::make_communicator("single"); }
  std::unique_ptr<comm::Communicator> group_;
};

TEST_F(NnSyncBatchNormLayerTest, MatchesFiniteDifferencesAndBatchNorm2d) {
  SyncBatchNormOptions options;
  options.num_features = 3;
  SyncBatchNormLayer sbn(options, group_.get(), "bn1");
  EXPECT_EQ(sbn.kind(), "SyncBatchNorm");
  randomize_affine(sbn, 7);
  const Tensor x = random_tensor({2, 3, 3, 2}, 19);
  const Tensor y = grad_check(sbn, x, kSmooth);

  BatchNorm2d bn(3);
  std::vector<ParamRef> a, b;
  sbn.collect_parameters(a);
  bn.collect_parameters(b);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    *b[i].value = *a[i].value;
  }
  const Tensor y_bn = bn.forward(x, true);
  std::vector<double> ys(y.data(), y.data() + y.numel()), yb(y_bn.data(), y_bn.data() + y.numel());
  EXPECT_LE(relative_error(yb, ys), 1e-6);
  std::vector<BufferRef> buffers;
  sbn.collect_buffers(buffers);
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[0].name, "running_mean");
  EXPECT_EQ(buffers[2].name, "num_batches_tracked");
  EXPECT_EQ(*buffers[2].i64, sbn.impl().num_batches_tracked());
}

// ---------------------------------------------------------------------------------------------
// Every layer: N = 0, gradient accumulation, errors.

struct Named {
  std::string name;
  std::function<std::unique_ptr<Layer>()> make;
  std::vector<int64_t> sample;  // one sample's shape (without N)
};

std::vector<Named> all_layers() {
  static Rng rng(77);
  static std::unique_ptr<comm::Communicator> single = comm::make_communicator("single");
  SyncBatchNormOptions sbn;
  sbn.num_features = 4;
  return {
      {"Conv2d", [] { return std::make_unique<Conv2d>(4, 3, 3, 2, 1, true, rng); }, {4, 5, 6}},
      {"Linear", [] { return std::make_unique<Linear>(4, 3, true, rng); }, {4}},
      {"ReLU", [] { return std::make_unique<ReLU>(); }, {4, 5, 6}},
      {"MaxPool2d", [] { return std::make_unique<MaxPool2d>(2); }, {4, 5, 6}},
      {"AdaptiveAvgPool2d", [] { return std::make_unique<AdaptiveAvgPool2d>(); }, {4, 5, 6}},
      {"Flatten", [] { return std::make_unique<Flatten>(); }, {4, 5, 6}},
      {"Identity", [] { return std::make_unique<Identity>(); }, {4, 5, 6}},
      {"BatchNorm2d", [] { return std::make_unique<BatchNorm2d>(4); }, {4, 5, 6}},
      {"GroupNorm", [] { return std::make_unique<GroupNorm>(2, 4); }, {4, 5, 6}},
      {"InstanceNorm2d", [] { return std::make_unique<InstanceNorm2d>(4, true, true); }, {4, 5, 6}},
      {"SyncBatchNorm",
       [sbn] { return std::make_unique<SyncBatchNormLayer>(sbn, single.get(), "sbn"); },
       {4, 5, 6}},
  };
}

std::vector<int64_t> with_batch(int64_t n, std::vector<int64_t> sample) {
  sample.insert(sample.begin(), n);
  return sample;
}

TEST(NnAllLayers, KindIsPyTorchsClassName) {
  for (const Named& l : all_layers()) EXPECT_EQ(l.make()->kind(), l.name);
}

TEST(NnAllLayers, EmptyBatch) {
  for (const Named& l : all_layers()) {
    SCOPED_TRACE(l.name);
    std::unique_ptr<Layer> layer = l.make();
    // One non-empty step first, so the empty one must really add nothing.
    Tensor y = layer->forward(random_tensor(with_batch(2, l.sample), 1), true);
    layer->backward(random_tensor(y.shape(), 2));
    std::vector<ParamRef> params;
    layer->collect_parameters(params);
    std::vector<Tensor> before;
    for (ParamRef& p : params) before.push_back(*p.grad);
    for (bool training : {true, false}) {
      const Tensor x(with_batch(0, l.sample));
      const Tensor y0 = layer->forward(x, training);
      EXPECT_EQ(y0.numel(), 0);
      EXPECT_EQ(y0.size(0), 0);
      const Tensor dx = layer->backward(Tensor(y0.shape()));
      EXPECT_EQ(dx.shape(), x.shape());
    }
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t j = 0; j < before[i].numel(); ++j)
        EXPECT_EQ(params[i].grad->data()[j], before[i].data()[j]) << params[i].name;
  }
}

TEST(NnAllLayers, EmptyBatchCountsInNumBatchesTracked) {
  BatchNorm2d bn(2);
  bn.forward(Tensor({0, 2, 3, 3}), true);
  EXPECT_EQ(bn.num_batches_tracked(), 1);  // as PyTorch's module
  EXPECT_EQ(bn.running_mean().data()[0], 0.0f);
  EXPECT_EQ(bn.running_var().data()[0], 1.0f);
}

TEST(NnAllLayers, GradientsAccumulate) {
  for (const Named& l : all_layers()) {
    SCOPED_TRACE(l.name);
    std::unique_ptr<Layer> layer = l.make();
    std::vector<ParamRef> params;
    layer->collect_parameters(params);
    if (params.empty()) continue;
    const Tensor x = random_tensor(with_batch(2, l.sample), 3);
    zero_grads(*layer);
    Tensor g = random_tensor(layer->forward(x, true).shape(), 4);
    layer->backward(g);
    std::vector<Tensor> once;
    for (ParamRef& p : params) once.push_back(*p.grad);
    layer->forward(x, true);
    layer->backward(g);
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t j = 0; j < once[i].numel(); ++j)
        EXPECT_NEAR(params[i].grad->data()[j], 2 * once[i].data()[j],
                    1e-5 * (1 + std::abs(once[i].data()[j])));
  }
}

using syncbn::testing::expect_error;

TEST(NnAllLayers, BackwardWithoutForwardThrows) {
  for (const Named& l : all_layers()) {
    SCOPED_TRACE(l.name);
    std::unique_ptr<Layer> layer = l.make();
    expect_error([&] { layer->backward(Tensor({1, 1})); }, {l.name});
    // Each forward allows one backward (the saved input is released).
    const Tensor y = layer->forward(random_tensor(with_batch(2, l.sample), 5), true);
    layer->backward(Tensor(y.shape()));
    expect_error([&] { layer->backward(Tensor(y.shape())); }, {l.name});
  }
}

TEST(NnAllLayers, WrongGradShapeThrows) {
  for (const Named& l : all_layers()) {
    SCOPED_TRACE(l.name);
    std::unique_ptr<Layer> layer = l.make();
    layer->forward(random_tensor(with_batch(2, l.sample), 6), true);
    expect_error([&] { layer->backward(Tensor({3, 7})); }, {"[3, 7]"});
  }
}

TEST(NnErrors, WrongInputNamesLayerAndShapes) {
  Rng rng(1);
  Conv2d conv(32, 8, 3, 1, 1, true, rng);
  expect_error(
      [&] {
        conv.forward(Tensor({8, 16, 28, 28}), true);
      },
      {"Conv2d: expected input with 32 channels, got input of size [8, 16, 28, 28]"});
  expect_error([&] { conv.forward(Tensor({8, 32, 28}), true); }, {"Conv2d", "4D", "[8, 32, 28]"});
  expect_error(
      [&] {
        Conv2d(3, 4, 5, 1, 0, true, rng).forward(Tensor({1, 3, 4, 4}), true);
      },
      {"Conv2d", "[1, 3, 4, 4]", "kernel"});
  Linear fc(10, 2, true, rng);
  expect_error([&] { fc.forward(Tensor({4, 9}), true); }, {"Linear", "(N, 10)", "[4, 9]"});
  expect_error([&] { MaxPool2d(2).forward(Tensor({2, 3}), true); }, {"MaxPool2d", "4D", "[2, 3]"});
  expect_error([] { MaxPool2d(3, 1, 2); }, {"MaxPool2d", "half"});
  expect_error(
      [&] {
        AdaptiveAvgPool2d().forward(Tensor({2, 3, 4}), true);
      },
      {"AdaptiveAvgPool2d", "[2, 3, 4]"});
  expect_error([&] { Flatten().forward(Tensor({5}), true); }, {"Flatten", "[5]"});
  expect_error(
      [&] {
        BatchNorm2d(4).forward(Tensor({2, 3, 2, 2}), true);
      },
      {"BatchNorm2d: expected input with 4 channels, got input of size [2, 3, 2, 2]"});
  expect_error(
      [&] {
        BatchNorm2d(4).forward(Tensor({2, 4}), true);
      },
      {"BatchNorm2d", "4D", "[2, 4]"});
  expect_error(
      [&] {
        BatchNorm2d(4).forward(Tensor({1, 4, 1, 1}), true);
      },
      {"Expected more than 1 value per channel when training"});
  expect_error(
      [&] {
        GroupNorm(2, 4).forward(Tensor({2, 6, 3}), true);
      },
      {"GroupNorm", "4 channels", "[2, 6, 3]"});
  expect_error([] { GroupNorm(3, 4); }, {"GroupNorm", "divisible"});
  expect_error(
      [&] {
        InstanceNorm2d(4, true).forward(Tensor({2, 5, 3, 3}), true);
      },
      {"InstanceNorm2d", "4 channels", "[2, 5, 3, 3]"});
}

// ---------------------------------------------------------------------------------------------
// Loss

TEST(NnSoftmaxCrossEntropy, ValueGradientAndAccuracy) {
  const int64_t N = 4, K = 5;
  Tensor logits = random_tensor({N, K}, 20, 2.0);
  const std::vector<int32_t> labels = {0, 3, 4, 3};
  const double scale = 0.25;
  Tensor dlogits;
  int64_t correct = -1;
  const double loss = softmax_cross_entropy(logits, labels.data(), scale, &dlogits, &correct);

  double expected = 0;
  int64_t expected_correct = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float* row = logits.data() + i * K;
    double z = 0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(static_cast<double>(row[k]));
    expected += std::log(z) - row[labels[i]];
    expected_correct += std::max_element(row, row + K) - row == labels[i];
  }
  EXPECT_NEAR(loss, expected, 1e-12 * std::abs(expected) + 1e-12);
  EXPECT_EQ(correct, expected_correct);

  // dlogits = scale · d(Σ loss)/dlogits, by central differences of the float64 loss.
  std::vector<double> analytic(N * K), numeric(N * K);
  for (int64_t i = 0; i < N * K; ++i) {
    const float v = logits.data()[i];
    logits.data()[i] = v + 1e-2f;
    const double lp = softmax_cross_entropy(logits, labels.data(), scale, nullptr, nullptr);
    logits.data()[i] = v - 1e-2f;
    const double lm = softmax_cross_entropy(logits, labels.data(), scale, nullptr, nullptr);
    logits.data()[i] = v;
    numeric[i] =
        scale * (lp - lm) / (static_cast<double>(v + 1e-2f) - static_cast<double>(v - 1e-2f));
    analytic[i] = dlogits.data()[i];
  }
  EXPECT_LE(relative_error(analytic, numeric), 3e-3);
  // Each row of softmax − onehot sums to 0.
  for (int64_t i = 0; i < N; ++i) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += dlogits.data()[i * K + k];
    EXPECT_NEAR(s, 0.0, 1e-7);
  }
}

TEST(NnSoftmaxCrossEntropy, StableForHugeLogits) {
  Tensor logits({2, 3});
  const float values[] = {1000.0f, 0.0f, -1000.0f, 88.0f, 89.0f, 90.0f};
  std::copy(values, values + 6, logits.data());
  const int32_t labels[] = {0, 0};
  Tensor d;
  const double loss = softmax_cross_entropy(logits, labels, 1.0, &d, nullptr);
  EXPECT_TRUE(std::isfinite(loss));
  const double row1 = std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0) + 2.0;
  EXPECT_NEAR(loss, 0.0 + row1, 1e-9);
  for (int64_t i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(d.data()[i]));
}

TEST(NnSoftmaxCrossEntropy, EmptyBatchAndBadLabels) {
  Tensor d;
  int64_t correct = 5;
  EXPECT_EQ(softmax_cross_entropy(Tensor({0, 10}), nullptr, 1.0, &d, &correct), 0.0);
  EXPECT_EQ(d.shape(), (std::vector<int64_t>{0, 10}));
  EXPECT_EQ(correct, 0);
  const int32_t bad[] = {1, 10};
  expect_error(
      [&] {
        softmax_cross_entropy(Tensor({2, 10}), bad, 1.0, &d, nullptr);
      },
      {"sample 1", "label 10", "[0, 10)"});
  const int32_t negative[] = {-1};
  expect_error(
      [&] {
        softmax_cross_entropy(Tensor({1, 3}), negative, 1.0, nullptr, nullptr);
      },
      {"sample 0", "label -1"});
  expect_error(
      [&] {
        softmax_cross_entropy(Tensor({2, 3, 1}), bad, 1.0, nullptr, nullptr);
      },
      {"(N, K)", "[2, 3, 1]"});
}

}  // namespace
}  // namespace syncbn::nn

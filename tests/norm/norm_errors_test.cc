// Bad input to the norm adapters: a syncbn::Error whose message names what was wrong and what
// was expected; never a crash or silent garbage.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "../common/test_util.h"
#include "core/error.h"
#include "norm/norm.h"

namespace syncbn {
namespace {

using norm::BatchNormState;
using norm::NormSaved;

using testing::expect_error;

Tensor filled(std::vector<int64_t> shape, float v,
              MemoryFormat format = MemoryFormat::kContiguous) {
  Tensor t(std::move(shape), format);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = v + 0.01f * static_cast<float>(i % 7);
  return t;
}

TEST(NormErrors, SingleValuePerChannelInTraining) {
  NormSaved saved;
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({1, 3}, 1), {}, {}, true, &saved);
      },
      {"Expected more than 1 value per channel when training, got input size [1, 3]"});
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({1, 3, 1, 1}, 1), {}, {}, true, &saved);
      },
      {"Expected more than 1 value per channel when training", "[1, 3, 1, 1]"});
  // Without running stats eval uses batch statistics, so the same rule applies.
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({1, 3}, 1), {}, {}, false, &saved);
      },
      {"Expected more than 1 value per channel"});
  // Eval with running stats is fine for a single sample.
  Tensor rm = filled({3}, 0), rv = filled({3}, 1);
  BatchNormState state{nullptr, nullptr, &rm, &rv, nullptr};
  EXPECT_NO_THROW(norm::batch_norm_forward(filled({1, 3}, 1), state, {}, false, &saved));
  expect_error(
      [&] {
        norm::instance_norm_forward(filled({2, 3, 1}, 1), {}, {}, true, &saved);
      },
      {"Expected more than 1 spatial element when training, got input size [2, 3, 1]"});
}

TEST(NormErrors, ChannelCountMismatch) {
  Tensor x = filled({4, 3, 5}, 1);
  Tensor w4 = filled({4}, 1), b3 = filled({3}, 0), w3 = filled({3}, 1);
  Tensor rm2 = filled({2}, 0), rv3 = filled({3}, 1);
  NormSaved saved;
  expect_error(
      [&] {
        norm::batch_norm_forward(x, {&w4, &b3, nullptr, nullptr, nullptr}, {}, true, &saved);
      },
      {"batch_norm", "weight should contain 3 elements", "not 4"});
  expect_error(
      [&] {
        norm::batch_norm_forward(x, {&w3, &b3, &rm2, &rv3, nullptr}, {}, true, &saved);
      },
      {"running_mean should contain 3 elements", "not 2"});
  expect_error([&] { norm::group_norm_forward(x, 3, &w4, nullptr, 1e-5, &saved); },
               {"group_norm", "weight should contain 3 elements"});
  expect_error([&] { norm::group_norm_forward(x, 2, nullptr, nullptr, 1e-5, &saved); },
               {"divisible by num_groups", "num_groups=2"});
  Tensor dy = filled({4, 3, 6}, 1);
  norm::batch_norm_forward(x, {}, {}, true, &saved);
  expect_error([&] { norm::batch_norm_backward(dy, x, {}, saved); },
               {"grad_output of size [4, 3, 6]", "does not match input of size [4, 3, 5]"});
}

TEST(NormErrors, WrongRankOfInput) {
  NormSaved saved;
  expect_error([&] { norm::batch_norm_forward(filled({5}, 1), {}, {}, true, &saved); },
               {"expected 2D, 3D, 4D or 5D input (got 1D input"});
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({2, 2, 2, 2, 2, 2}, 1), {}, {}, true, &saved);
      },
      {"got 6D input"});
  expect_error(
      [&] {
        norm::instance_norm_forward(filled({4, 3}, 1), {}, {}, true, &saved);
      },
      {"instance_norm", "expected 3D, 4D or 5D input", "got 2D input"});
  expect_error(
      [&] {
        norm::layer_norm_forward(filled({4, 3}, 1), {5}, nullptr, nullptr, 1e-5, &saved);
      },
      {"Given normalized_shape=[5], expected input with shape [*, 5]"});
}

TEST(NormErrors, UnsupportedLayout) {
  expect_error(
      [] {
        Tensor t({4, 3, 5}, MemoryFormat::kChannelsLast);
      },
      {"channels_last memory format needs a 4-D or 5-D tensor", "[4, 3, 5]"});
  NormSaved saved;
  Tensor x = filled({2, 3, 4, 5}, 1, MemoryFormat::kChannelsLast);
  expect_error(
      [&] {
        norm::layer_norm_forward(x, {4, 5}, nullptr, nullptr, 1e-5, &saved);
      },
      {"layer_norm", "unsupported memory format channels_last", "expected a contiguous"});
  Tensor dy = filled({2, 3, 4, 5}, 1);  // contiguous gradient for a channels-last input
  norm::batch_norm_forward(x, {}, {}, true, &saved);
  expect_error([&] { norm::batch_norm_backward(dy, x, {}, saved); },
               {"(contiguous) does not match input", "(channels_last)"});
}

TEST(NormErrors, NonPositiveOrNonFiniteEps) {
  NormSaved saved;
  const Tensor x = filled({4, 3}, 1);
  for (double eps : {0.0, -1e-5, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    expect_error(
        [&] {
          norm::batch_norm_forward(x, {}, {eps, 0.1}, true, &saved);
        },
        {"batch_norm: eps must be a positive finite number"});
    expect_error([&] { norm::group_norm_forward(x, 1, nullptr, nullptr, eps, &saved); },
                 {"group_norm: eps must be a positive finite number"});
    expect_error([&] { norm::layer_norm_forward(x, {3}, nullptr, nullptr, eps, &saved); },
                 {"layer_norm: eps must be a positive finite number"});
  }
}

TEST(NormErrors, BadMomentum) {
  NormSaved saved;
  Tensor rm = filled({3}, 0), rv = filled({3}, 1);
  BatchNormState state{nullptr, nullptr, &rm, &rv, nullptr};
  for (double m : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()})
    expect_error(
        [&] {
          norm::batch_norm_forward(filled({4, 3}, 1), state, {1e-5, m}, true, &saved);
        },
        {"momentum must be in [0, 1]"});
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({4, 3}, 1), state, {1e-5, std::nullopt}, true, &saved);
      },
      {"momentum=None", "needs num_batches_tracked"});
}

TEST(NormErrors, NonFiniteParameters) {
  NormSaved saved;
  const Tensor x = filled({4, 3, 2}, 1);
  Tensor w = filled({3}, 1), b = filled({3}, 0), rm = filled({3}, 0), rv = filled({3}, 1);
  w.data()[1] = std::numeric_limits<float>::quiet_NaN();
  expect_error(
      [&] {
        norm::batch_norm_forward(x, {&w, &b, &rm, &rv, nullptr}, {}, true, &saved);
      },
      {"weight contains a non-finite value (nan) at index 1"});
  w.data()[1] = 1.0f;
  b.data()[2] = std::numeric_limits<float>::infinity();
  expect_error([&] { norm::group_norm_forward(x, 3, &w, &b, 1e-5, &saved); },
               {"bias contains a non-finite value (inf) at index 2"});
  b.data()[2] = 0.0f;
  rv.data()[0] = -1.0f;
  expect_error(
      [&] {
        norm::batch_norm_forward(x, {&w, &b, &rm, &rv, nullptr}, {}, false, &saved);
      },
      {"running_var contains a negative value", "index 0"});
  rv.data()[0] = 1.0f;
  rm.data()[2] = -std::numeric_limits<float>::infinity();
  expect_error(
      [&] {
        norm::batch_norm_forward(x, {&w, &b, &rm, &rv, nullptr}, {}, false, &saved);
      },
      {"running_mean contains a non-finite value (-inf) at index 2"});
}

TEST(NormErrors, AffineAndRunningStatsComeInPairs) {
  NormSaved saved;
  Tensor w = filled({3}, 1), rm = filled({3}, 0);
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({4, 3}, 1), {&w, nullptr, nullptr, nullptr, nullptr}, {},
                                 true, &saved);
      },
      {"weight and bias must be given together"});
  expect_error(
      [&] {
        norm::batch_norm_forward(filled({4, 3}, 1), {nullptr, nullptr, &rm, nullptr, nullptr}, {},
                                 true, &saved);
      },
      {"running_mean and running_var must be given together"});
}

}  // namespace
}  // namespace syncbn

// src/tensor: shapes and their checks, both memory formats' layout, copies, and the seeded RNG.
#include "tensor/tensor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../common/test_util.h"

namespace syncbn {
namespace {

using testing::expect_error;

TEST(Tensor, ShapeNumelAndZeroInitialisation) {
  const Tensor t({2, 3, 4, 5});
  EXPECT_EQ(t.dim(), 4);
  EXPECT_EQ(t.numel(), 120);
  EXPECT_EQ(t.size(1), 3);
  EXPECT_EQ(spatial_size(t.shape()), 20);
  EXPECT_EQ(spatial_size({7, 3}), 1);
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data()[i], 0.0f) << i;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);  // vector loads
  EXPECT_EQ(Tensor({0, 3}).numel(), 0);
  EXPECT_EQ(shape_to_string({2, 3}), "[2, 3]");
  EXPECT_EQ(shape_to_string({}), "[]");
  EXPECT_STREQ(to_string(MemoryFormat::kChannelsLast), "channels_last");
}

TEST(Tensor, RejectsBadShapesNamingThem) {
  expect_error([] { Tensor({2, -1}); }, {"[2, -1]", "negative dimension"});
  expect_error(
      [] {
        Tensor({2, 3, 4}, MemoryFormat::kChannelsLast);
      },
      {"channels_last", "4-D or 5-D", "[2, 3, 4]"});
}

TEST(Tensor, OffsetsOfBothFormats) {
  const Tensor nchw({2, 3, 4, 5});
  const Tensor nhwc({2, 3, 4, 5}, MemoryFormat::kChannelsLast);
  // Element (n=1, c=2, s=7): NCHW (n·C + c)·S + s, NHWC (n·S + s)·C + c.
  EXPECT_EQ(nchw.offset(1, 2, 7), (1 * 3 + 2) * 20 + 7);
  EXPECT_EQ(nhwc.offset(1, 2, 7), (1 * 20 + 7) * 3 + 2);
}

TEST(Tensor, ToAnotherFormatKeepsEveryValueAndRoundTrips) {
  Tensor x({2, 3, 2, 2});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(i);
  const Tensor cl = x.to(MemoryFormat::kChannelsLast);
  EXPECT_EQ(cl.format(), MemoryFormat::kChannelsLast);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t s = 0; s < 4; ++s)
        EXPECT_EQ(cl.data()[cl.offset(n, c, s)], x.data()[x.offset(n, c, s)]);
  const Tensor back = cl.to(MemoryFormat::kContiguous);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(back.data()[i], x.data()[i]);
}

TEST(Tensor, CopiesAreDeepAndMovesTakeTheStorage) {
  Tensor a({4});
  a.data()[0] = 1.0f;
  Tensor b = a;
  b.data()[0] = 2.0f;
  EXPECT_EQ(a.data()[0], 1.0f);
  a = b;
  EXPECT_EQ(a.data()[0], 2.0f);
  EXPECT_NE(a.data(), b.data());
  const float* storage = b.data();
  const Tensor c = std::move(b);
  EXPECT_EQ(c.data(), storage);
}

TEST(Rng, ASeedAndStreamNameOneSequence) {
  Rng a(42, 1), b(42, 1), other_stream(42, 2), other_seed(43, 1);
  bool stream_differs = false, seed_differs = false;
  for (int i = 0; i < 16; ++i) {
    const uint64_t v = a.next_u64();
    EXPECT_EQ(v, b.next_u64());
    stream_differs |= v != other_stream.next_u64();
    seed_differs |= v != other_seed.next_u64();
  }
  EXPECT_TRUE(stream_differs);
  EXPECT_TRUE(seed_differs);
}

TEST(Rng, UniformAndNormalHaveTheirMoments) {
  Rng rng(7);
  constexpr int kSamples = 200000;
  double sum = 0, lo = 1, hi = 0;
  for (int i = 0; i < kSamples; ++i) {
    const double u = rng.uniform();
    sum += u, lo = std::min(lo, u), hi = std::max(hi, u);
  }
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(sum / kSamples, 0.5, 0.005);
  std::vector<float> x(kSamples);
  rng.fill_normal(x.data(), kSamples, 3.0, 2.0);
  double mean = 0, sq = 0;
  for (float v : x) mean += v;
  mean /= kSamples;
  for (float v : x) sq += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 3.0, 0.02);
  EXPECT_NEAR(std::sqrt(sq / (kSamples - 1)), 2.0, 0.02);
}

}  // namespace
}  // namespace syncbn

// The distributed sampler: every sample once per epoch, the same global batches for every
// world size, even splits of partial batches, and its errors.
#include "data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "test_util.h"

namespace syncbn::data {
namespace {

using testing::expect_error;

std::vector<int64_t> concat_ranks(DistributedSampler& s, int64_t epoch, int64_t step, int world) {
  std::vector<int64_t> out;
  for (int r = 0; r < world; ++r) {
    const std::vector<int64_t> part = s.indices(epoch, step, r, world);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

TEST(RankSlice, EvenSplitOfAFullBatch) {
  for (int r = 0; r < 4; ++r) {
    const RankSlice s = rank_slice(12, r, 4);
    EXPECT_EQ(s.begin, 3 * r);
    EXPECT_EQ(s.size, 3);
  }
}

TEST(RankSlice, PartialBatchEarlierRanksGetTheExtra) {
  std::vector<int64_t> sizes, begins;
  for (int r = 0; r < 4; ++r) {
    sizes.push_back(rank_slice(7, r, 4).size);
    begins.push_back(rank_slice(7, r, 4).begin);
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{2, 2, 2, 1}));
  EXPECT_EQ(begins, (std::vector<int64_t>{0, 2, 4, 6}));
  // Fewer samples than ranks: trailing ranks hold none, at the batch's end.
  EXPECT_EQ(rank_slice(2, 1, 4).size, 1);
  EXPECT_EQ(rank_slice(2, 2, 4).size, 0);
  EXPECT_EQ(rank_slice(2, 2, 4).begin, 2);
  EXPECT_EQ(rank_slice(2, 3, 4).begin, 2);
  EXPECT_EQ(rank_slice(0, 0, 1).size, 0);
}

TEST(RankSlice, Errors) {
  expect_error([] { rank_slice(4, 0, 0); }, {"world size is 0", "at least 1"});
  expect_error([] { rank_slice(4, 4, 4); }, {"rank 4 is outside [0, 4)"});
  expect_error([] { rank_slice(4, -1, 4); }, {"rank -1"});
  expect_error([] { rank_slice(-1, 0, 4); }, {"batch size is -1"});
}

TEST(EpochPermutation, IsAPermutationFixedBySeedAndEpoch) {
  const std::vector<int64_t> a = epoch_permutation(1000, 42, 3, true);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(a, identity);
  EXPECT_EQ(a, epoch_permutation(1000, 42, 3, true));
  EXPECT_NE(a, epoch_permutation(1000, 42, 4, true));
  EXPECT_NE(a, epoch_permutation(1000, 43, 3, true));
  EXPECT_EQ(epoch_permutation(1000, 42, 3, false), identity);
  EXPECT_TRUE(epoch_permutation(0, 42, 3, true).empty());
  EXPECT_EQ(epoch_permutation(1, 42, 3, true), (std::vector<int64_t>{0}));
}

TEST(EpochPermutation, EveryPositionIsReachable) {
  // Where element 0 lands over many epochs: all of the 8 positions, none wildly over-used.
  std::vector<int> landed(8, 0);
  for (int64_t epoch = 0; epoch < 8000; ++epoch) {
    const std::vector<int64_t> p = epoch_permutation(8, 7, epoch, true);
    ++landed[static_cast<size_t>(std::find(p.begin(), p.end(), 0) - p.begin())];
  }
  for (int n : landed) {
    EXPECT_GT(n, 850);
    EXPECT_LT(n, 1150);
  }
}

TEST(EpochPermutation, Errors) {
  expect_error([] { epoch_permutation(-1, 0, 0, true); }, {"dataset size is -1"});
  expect_error([] { epoch_permutation(10, 0, -1, true); }, {"epoch is -1"});
}

TEST(DistributedSampler, StepsAndGlobalBatchSizes) {
  DistributedSampler s(103, 12, 1);
  EXPECT_EQ(s.steps_per_epoch(), 9);
  for (int64_t k = 0; k < 8; ++k) EXPECT_EQ(s.global_batch_size(k), 12);
  EXPECT_EQ(s.global_batch_size(8), 7);
  EXPECT_EQ(DistributedSampler(96, 12, 1).steps_per_epoch(), 8);
  EXPECT_EQ(DistributedSampler(0, 12, 1).steps_per_epoch(), 0);
}

TEST(DistributedSampler, EverySampleOncePerEpochForEveryWorld) {
  for (bool shuffle : {true, false}) {
    for (int world = 1; world <= 5; ++world) {
      for (int64_t per_rank : {1, 3, 8}) {
        DistributedSampler s(103, world * per_rank, 9, shuffle);
        for (int64_t epoch : {0, 1}) {
          std::vector<int64_t> seen;
          for (int64_t step = 0; step < s.steps_per_epoch(); ++step)
            for (int r = 0; r < world; ++r) {
              const std::vector<int64_t> part = s.indices(epoch, step, r, world);
              EXPECT_LE(static_cast<int64_t>(part.size()), per_rank);
              seen.insert(seen.end(), part.begin(), part.end());
            }
          ASSERT_EQ(seen.size(), 103u);
          std::sort(seen.begin(), seen.end());
          for (int64_t i = 0; i < 103; ++i) ASSERT_EQ(seen[static_cast<size_t>(i)], i);
        }
      }
    }
  }
}

TEST(DistributedSampler, GlobalBatchesDoNotDependOnWorldSize) {
  // Global batch 12 as 1x12, 2x6, 3x4, 4x3, 6x2 and 12x1 ranks, and 5 ranks splitting it
  // unevenly (a resume on a world that does not divide it).
  DistributedSampler one(103, 12, 5);
  for (int world : {2, 3, 4, 5, 6, 12}) {
    DistributedSampler many(103, 12, 5);
    for (int64_t epoch : {0, 3}) {
      for (int64_t step = 0; step < one.steps_per_epoch(); ++step) {
        EXPECT_EQ(concat_ranks(many, epoch, step, world), one.indices(epoch, step, 0, 1))
            << "world " << world << " epoch " << epoch << " step " << step;
      }
    }
  }
}

TEST(DistributedSampler, EpochsShuffleDifferently) {
  DistributedSampler s(103, 12, 5);
  EXPECT_NE(s.indices(0, 0, 0, 1), s.indices(1, 0, 0, 1));
  EXPECT_EQ(s.indices(0, 0, 0, 1), s.indices(0, 0, 0, 1));
  DistributedSampler ordered(103, 12, 5, false);
  EXPECT_EQ(ordered.indices(0, 1, 0, 1),
            (std::vector<int64_t>{12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}));
  EXPECT_EQ(ordered.indices(0, 1, 1, 3), (std::vector<int64_t>{16, 17, 18, 19}));
}

TEST(DistributedSampler, UnevenLastBatch) {
  DistributedSampler s(103, 12, 5);  // last global batch: 7 samples
  std::vector<size_t> sizes;
  for (int r = 0; r < 4; ++r) sizes.push_back(s.indices(2, 8, r, 4).size());
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 2, 1}));
  sizes.clear();
  for (int r = 0; r < 3; ++r) sizes.push_back(s.indices(2, 8, r, 3).size());
  EXPECT_EQ(sizes, (std::vector<size_t>{3, 2, 2}));
}

TEST(DistributedSampler, RanksWithZeroSamples) {
  DistributedSampler s(13, 12, 5);  // last global batch: 1 sample
  const std::vector<int64_t> last = s.indices(0, 1, 0, 4);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last, s.indices(0, 1, 0, 1));
  for (int r = 1; r < 4; ++r) EXPECT_TRUE(s.indices(0, 1, r, 4).empty()) << "rank " << r;
  // The sample not in the last batch is the one missing from the first.
  std::set<int64_t> all(last.begin(), last.end());
  for (int64_t i : s.indices(0, 0, 0, 1)) all.insert(i);
  EXPECT_EQ(all.size(), 13u);
}

TEST(DistributedSampler, Errors) {
  expect_error([] { DistributedSampler(10, 0, 1); }, {"global batch size is 0", "at least 1"});
  expect_error([] { DistributedSampler(-5, 4, 1); }, {"dataset size is -5"});
  DistributedSampler s(10, 4, 1);
  expect_error([&] { s.indices(0, 3, 0, 1); }, {"step 3 is outside [0, 3)"});
  expect_error([&] { s.indices(0, -1, 0, 1); }, {"step -1"});
  expect_error([&] { s.indices(-1, 0, 0, 1); }, {"epoch is -1"});
  expect_error([&] { s.indices(0, 0, 2, 2); }, {"rank 2 is outside [0, 2)"});
  expect_error([&] { s.indices(0, 0, 0, 0); }, {"world size is 0"});
}

TEST(UniformBelow, CoversTheRangeOnly) {
  Rng rng(3);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 5000; ++i) {
    const uint64_t v = uniform_below(rng, 5);
    ASSERT_LT(v, 5u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_GT(c, 850);
  EXPECT_EQ(uniform_below(rng, 1), 0u);
}

}  // namespace
}  // namespace syncbn::data

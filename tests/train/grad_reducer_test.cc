// train::bucket_parameters, the one bucketing rule of the CPU GradReducer and the CUDA backend's
// plan: PyTorch DDP's, in backward's order, a bucket closing once it reaches the cap.
#include "train/grad_reducer.h"

#include <gtest/gtest.h>

#include <vector>

namespace syncbn::train {
namespace {

using Buckets = std::vector<std::vector<size_t>>;

TEST(BucketParameters, ClosesABucketOnceItReachesTheCap) {
  EXPECT_EQ(bucket_parameters({400, 400, 400, 400}, 800), (Buckets{{3, 2}, {1, 0}}));
  EXPECT_EQ(bucket_parameters({400, 400, 400, 400}, 700), (Buckets{{3, 2}, {1, 0}}));
  EXPECT_EQ(bucket_parameters({400, 400, 400, 400}, 1000), (Buckets{{3, 2, 1}, {0}}));
}

TEST(BucketParameters, AParameterOverTheCapEndsItsBucket) {
  EXPECT_EQ(bucket_parameters({10, 5000, 10}, 100), (Buckets{{2, 1}, {0}}));
  EXPECT_EQ(bucket_parameters({5000, 10, 10}, 100), (Buckets{{2, 1, 0}}));
}

TEST(BucketParameters, EmptyParametersAndNoParameters) {
  EXPECT_EQ(bucket_parameters({0, 0, 0}, 1), (Buckets{{2, 1, 0}}));
  EXPECT_EQ(bucket_parameters({}, 1 << 20), Buckets{});
}

}  // namespace
}  // namespace syncbn::train

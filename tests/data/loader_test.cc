// Batch assembly: normalization, the crop-and-flip augmentation against a direct
// implementation of torchvision's definition, and independence from rank and world size.
#include "data/loader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <set>

#include "data/cifar10.h"
#include "data/fashion_mnist.h"
#include "test_util.h"

namespace syncbn::data {
namespace {

using testing::expect_error;

// A synthetic 28x28 dataset whose pixels are all distinct per image position (so a crop or
// flip is visible) and never 0 (so padding is visible).
Dataset synthetic(int64_t count) {
  Dataset ds;
  ds.info = fashion_mnist_info();
  ds.count = count;
  ds.mean = {kFashionMnistMean};
  ds.stddev = {kFashionMnistStd};
  ds.crop_padding = kFashionMnistCropPadding;
  for (int64_t i = 0; i < count; ++i) {
    for (int p = 0; p < 784; ++p) ds.pixels.push_back(static_cast<uint8_t>(1 + (p + 3 * i) % 255));
    ds.labels.push_back(static_cast<int32_t>(i % 10));
  }
  return ds;
}

// A synthetic CIFAR-shaped dataset (3x32x32), pixels distinct per position and channel, never 0.
Dataset synthetic_cifar(int64_t count) {
  Dataset ds;
  ds.info = cifar10_info();
  ds.count = count;
  ds.mean.assign(std::begin(kCifar10Mean), std::end(kCifar10Mean));
  ds.stddev.assign(std::begin(kCifar10Std), std::end(kCifar10Std));
  ds.crop_padding = kCifar10CropPadding;
  for (int64_t i = 0; i < count; ++i) {
    for (int p = 0; p < 3072; ++p)
      ds.pixels.push_back(static_cast<uint8_t>(1 + (p * 7 + 3 * i) % 255));
    ds.labels.push_back(static_cast<int32_t>(i % 10));
  }
  return ds;
}

// torchvision: pad by 2 with 0, crop 28x28 at (top, left) of the 32x32, flip left-right.
std::vector<uint8_t> reference_transform(const uint8_t* image, int top, int left, bool flip) {
  uint8_t padded[32][32] = {};
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) padded[y + 2][x + 2] = image[y * 28 + x];
  uint8_t cropped[28][28];
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) cropped[y][x] = padded[y + top][x + left];
  std::vector<uint8_t> out(784);
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x)
      out[static_cast<size_t>(y * 28 + x)] = cropped[y][flip ? 27 - x : x];
  return out;
}

double normalized(double raw) { return (raw / 255.0 - 0.2860) / 0.3530; }

TEST(Normalize, MatchesTheFormula) {
  const Dataset ds = synthetic(1);
  EXPECT_NEAR(normalize_pixel(ds, 0, 0), -0.8101983, 1e-6);
  EXPECT_NEAR(normalize_pixel(ds, 0, 255), 2.0226629, 1e-6);
  for (int v = 0; v < 256; ++v)
    EXPECT_NEAR(normalize_pixel(ds, 0, static_cast<uint8_t>(v)), normalized(v), 1e-6) << v;
}

TEST(AssembleBatch, WithoutAugmentationIsTheNormalizedImage) {
  const Dataset ds = synthetic(10);
  const std::vector<int64_t> idx = {7, 2, 7};
  const Batch b = assemble_batch(ds, idx, false, 1, 0);
  ASSERT_EQ(b.images.shape(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{7, 2, 7}));
  EXPECT_EQ(b.indices, idx);
  for (size_t i = 0; i < idx.size(); ++i)
    for (int p = 0; p < 784; ++p)
      ASSERT_NEAR(b.images.data()[i * 784 + p], normalized(ds.pixels[idx[i] * 784 + p]), 1e-6);
}

TEST(AssembleBatch, EmptyBatch) {
  const Dataset ds = synthetic(3);
  const Batch b = assemble_batch(ds, {}, true, 1, 0);
  EXPECT_EQ(b.images.shape(), (std::vector<int64_t>{0, 1, 28, 28}));
  EXPECT_TRUE(b.labels.empty());
}

TEST(AssembleBatch, IndexOutOfRange) {
  const Dataset ds = synthetic(3);
  const std::vector<int64_t> idx = {0, 3};
  expect_error([&] { assemble_batch(ds, idx, false, 1, 0); },
               {"sample index 3 is outside the dataset's [0, 3)"});
}

TEST(Augmentation, IsACropOfThePaddedImageThenAFlip) {
  const Dataset ds = synthetic(300);
  std::vector<int64_t> idx(300);
  for (int64_t i = 0; i < 300; ++i) idx[static_cast<size_t>(i)] = i;
  const Batch b = assemble_batch(ds, idx, true, 11, 4);
  std::set<std::pair<int, int>> offsets;
  int flips = 0;
  for (int64_t i = 0; i < 300; ++i) {
    const CropFlip a = augmentation_for(2, 11, 4, i);
    ASSERT_GE(a.top, 0);
    ASSERT_LE(a.top, 4);
    ASSERT_GE(a.left, 0);
    ASSERT_LE(a.left, 4);
    offsets.insert({a.top, a.left});
    flips += a.flip;
    const std::vector<uint8_t> want =
        reference_transform(&ds.pixels[i * 784], a.top, a.left, a.flip);
    for (int p = 0; p < 784; ++p)
      ASSERT_NEAR(b.images.data()[i * 784 + p], normalized(want[static_cast<size_t>(p)]), 1e-6)
          << "sample " << i << " pixel " << p;
  }
  EXPECT_EQ(offsets.size(), 25u);  // every one of the 5x5 crop positions occurs
  EXPECT_GT(flips, 110);
  EXPECT_LT(flips, 190);
}

TEST(Augmentation, PaddingIsRawZero) {
  Dataset ds = synthetic(200);
  std::fill(ds.pixels.begin(), ds.pixels.end(), 255);
  for (int64_t i = 0; i < 200; ++i) {
    const CropFlip a = augmentation_for(2, 2, 0, i);
    if (a.top != 0) continue;  // the window starts in the top padding: row 0 is padding
    const std::vector<int64_t> idx = {i};
    const Batch b = assemble_batch(ds, idx, true, 2, 0);
    EXPECT_NEAR(b.images.data()[0], normalized(0), 1e-6);
    EXPECT_NEAR(b.images.data()[14 * 28 + 14], normalized(255), 1e-6);
    return;
  }
  FAIL() << "no sample with a crop at the top";
}

TEST(Augmentation, DependsOnSeedEpochAndIndexOnly) {
  const Dataset ds = synthetic(50);
  const std::vector<int64_t> together = {3, 17, 42};
  const std::vector<int64_t> alone = {42};
  const Batch a = assemble_batch(ds, together, true, 8, 2);
  const Batch b = assemble_batch(ds, alone, true, 8, 2);
  for (int p = 0; p < 784; ++p) ASSERT_EQ(a.images.data()[2 * 784 + p], b.images.data()[p]);
  // Some of 50 samples change their augmentation with the epoch and with the seed.
  int epoch_changes = 0, seed_changes = 0;
  for (int64_t i = 0; i < 50; ++i) {
    const CropFlip base = augmentation_for(2, 8, 2, i);
    const CropFlip other_epoch = augmentation_for(2, 8, 3, i);
    const CropFlip other_seed = augmentation_for(2, 9, 2, i);
    epoch_changes += base.top != other_epoch.top || base.left != other_epoch.left ||
                     base.flip != other_epoch.flip;
    seed_changes +=
        base.top != other_seed.top || base.left != other_seed.left || base.flip != other_seed.flip;
  }
  EXPECT_GT(epoch_changes, 30);
  EXPECT_GT(seed_changes, 30);
}

// torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip + Normalize(mean, std) on one
// 3x32x32 image, in float64.
std::vector<double> reference_cifar(const uint8_t* image, int top, int left, bool flip) {
  std::vector<double> out(3072);
  for (int c = 0; c < 3; ++c) {
    uint8_t padded[40][40] = {};
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) padded[y + 4][x + 4] = image[c * 1024 + y * 32 + x];
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) {
        const uint8_t raw = padded[y + top][(flip ? 31 - x : x) + left];
        out[static_cast<size_t>(c * 1024 + y * 32 + x)] =
            (raw / 255.0 - kCifar10Mean[c]) / kCifar10Std[c];
      }
    }
  }
  return out;
}

TEST(Augmentation, CifarPadsByFourAndNormalizesPerChannel) {
  const Dataset ds = synthetic_cifar(400);
  std::vector<int64_t> idx(400);
  for (int64_t i = 0; i < 400; ++i) idx[static_cast<size_t>(i)] = i;
  const Batch plain = assemble_batch(ds, idx, false, 5, 1);
  const Batch b = assemble_batch(ds, idx, true, 5, 1);
  ASSERT_EQ(b.images.shape(), (std::vector<int64_t>{400, 3, 32, 32}));
  std::set<std::pair<int, int>> offsets;
  int flips = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const CropFlip a = augmentation_for(4, 5, 1, i);
    ASSERT_LE(a.top, 8);
    ASSERT_LE(a.left, 8);
    offsets.insert({a.top, a.left});
    flips += a.flip;
    const std::vector<double> want = reference_cifar(&ds.pixels[i * 3072], a.top, a.left, a.flip);
    const std::vector<double> unaugmented = reference_cifar(&ds.pixels[i * 3072], 4, 4, false);
    for (int p = 0; p < 3072; ++p) {
      ASSERT_NEAR(b.images.data()[i * 3072 + p], want[static_cast<size_t>(p)], 1e-5)
          << "sample " << i << " pixel " << p;
      ASSERT_NEAR(plain.images.data()[i * 3072 + p], unaugmented[static_cast<size_t>(p)], 1e-5);
    }
  }
  EXPECT_EQ(offsets.size(), 81u);  // every one of the 9x9 crop positions occurs
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
  // Channel c's padding is raw 0 normalized with channel c's statistics.
  EXPECT_NEAR(normalize_pixel(ds, 0, 0), -0.4914 / 0.2470, 1e-6);
  EXPECT_NEAR(normalize_pixel(ds, 2, 0), -0.4465 / 0.2616, 1e-6);
}

TEST(Loader, RanksTogetherMakeTheSingleProcessBatch) {
  for (const Dataset& ds : {synthetic(53), synthetic_cifar(53)}) {
    for (bool augment : {false, true}) {
      LoaderOptions options{12, 77, true, augment};
      Loader single(ds, options, 0, 1);
      EXPECT_EQ(single.steps_per_epoch(), 5);
      for (int world : {2, 3, 4, 5}) {
        std::vector<Loader> ranks;
        for (int r = 0; r < world; ++r) ranks.emplace_back(ds, options, r, world);
        for (int64_t epoch : {0, 1}) {
          for (int64_t step = 0; step < single.steps_per_epoch(); ++step) {
            const Batch whole = single.batch(epoch, step);
            EXPECT_EQ(whole.global_batch_size, step < 4 ? 12 : 5);
            std::vector<float> pixels;
            std::vector<int32_t> labels;
            for (Loader& l : ranks) {
              const Batch part = l.batch(epoch, step);
              EXPECT_EQ(part.global_batch_size, whole.global_batch_size);
              pixels.insert(pixels.end(), part.images.data(),
                            part.images.data() + part.images.numel());
              labels.insert(labels.end(), part.labels.begin(), part.labels.end());
            }
            ASSERT_EQ(labels, whole.labels) << "world " << world << " step " << step;
            ASSERT_EQ(pixels, std::vector<float>(whole.images.data(),
                                                 whole.images.data() + whole.images.numel()))
                << "world " << world << " epoch " << epoch << " step " << step;
          }
        }
      }
    }
  }
}

TEST(Loader, Errors) {
  const Dataset ds = synthetic(5);
  expect_error(
      [&] {
        Loader(ds, LoaderOptions{0, 1, true, false}, 0, 1);
      },
      {"global batch size is 0"});
  expect_error(
      [&] {
        Loader(ds, LoaderOptions{4, 1, true, false}, 3, 2);
      },
      {"rank 3 is outside [0, 2)"});
}

}  // namespace
}  // namespace syncbn::data

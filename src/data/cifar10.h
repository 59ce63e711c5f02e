// CIFAR-10, binary version (cifar-10-binary.tar.gz from
// https://www.cs.toronto.edu/~kriz/cifar.html, which unpacks to cifar-10-batches-bin/): 50000
// training images in data_batch_1.bin .. data_batch_5.bin, 10000 test images in test_batch.bin,
// 32×32 RGB, labels 0..9.
//
// Each file is a plain sequence of 3073-byte records: one label byte, then the 3072 pixel bytes
// of one image, channel by channel (1024 red, 1024 green, 1024 blue), each channel row-major;
// that is (C, H, W), the layout the Dataset keeps. The published files hold 10000 records each;
// any positive whole number of records is accepted, so that small sets in the same format work.
//
// Every problem with the files (directory or file missing, a size that is not a whole number of
// records, a label out of range, a short read) throws syncbn::Error naming the file and what was
// expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace syncbn::data {

inline constexpr int kCifar10Channels = 3;
inline constexpr int kCifar10Side = 32;
inline constexpr int kCifar10Classes = 10;
inline constexpr int64_t kCifar10RecordBytes = 1 + kCifar10Channels * kCifar10Side * kCifar10Side;
// The per-channel (R, G, B) mean and standard deviation of raw / 255 over the 50000 training
// images, to four places.
inline constexpr double kCifar10Mean[kCifar10Channels] = {0.4914, 0.4822, 0.4465};
inline constexpr double kCifar10Std[kCifar10Channels] = {0.2470, 0.2435, 0.2616};
// Augmentation: RandomCrop(32, padding=4), then the horizontal flip (He et al. 2016, §4.2).
inline constexpr int kCifar10CropPadding = 4;

// cifar10, 3×32×32, 10 classes.
DatasetInfo cifar10_info();

// The file names of a split, in the order their records are read.
std::vector<std::string> cifar10_files(Split split);

// Loads the first `limit` samples of a split (0: all of them), reading the files in the order of
// cifar10_files. Every file of the split must exist and hold a whole number of records, even
// when the limit is reached before it; labels are checked in the records that are read.
Dataset load_cifar10(const std::string& dir, Split split, int64_t limit = 0);

}  // namespace syncbn::data

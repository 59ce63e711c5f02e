// Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist package: 60000 training
// and 10000 test images of 28x28 uint8 pixels, labels 0..9.
//
// IDX layout (big-endian): a 4-byte magic 0x0000TTDD (TT = 0x08 for uint8, DD = number of
// dimensions), DD uint32 sizes, then the row-major data. Images are 0x00000803 (count, rows,
// cols), labels 0x00000801 (count). Files are read through zlib, gzip-compressed or plain.
//
// Every problem with the files (missing, not gzip, truncated, wrong magic or sizes, labels out
// of range, images and labels disagreeing) throws syncbn::Error naming the file and what was
// expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace syncbn::data {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int kFashionMnistRows = 28;
inline constexpr int kFashionMnistCols = 28;
inline constexpr int kFashionMnistClasses = 10;
// The training set's mean and std of raw / 255.
inline constexpr double kFashionMnistMean = 0.2860;
inline constexpr double kFashionMnistStd = 0.3530;
// Augmentation: RandomCrop(28, padding=2), then the horizontal flip.
inline constexpr int kFashionMnistCropPadding = 2;

// fashion_mnist, 1×28×28, 10 classes.
DatasetInfo fashion_mnist_info();

// The IDX file names of a split: {images, labels}, e.g. "train-images-idx3-ubyte.gz".
std::vector<std::string> fashion_mnist_files(Split split);

// Loads the first `limit` samples of a split (0: all of them). The headers are always checked
// in full (magic numbers, 28x28, equal image and label counts); with limit == 0 the files must
// also end exactly after the data and their gzip checksums must match.
Dataset load_fashion_mnist(const std::string& dir, Split split, int64_t limit = 0);

}  // namespace syncbn::data

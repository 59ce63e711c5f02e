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

namespace syncbn::data {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr int kFashionMnistRows = 28;
inline constexpr int kFashionMnistCols = 28;
inline constexpr int kFashionMnistClasses = 10;

enum class Split { kTrain, kTest };

// "train" / "test".
const char* to_string(Split split);
// Throws syncbn::Error naming the value and the allowed ones.
Split parse_split(const std::string& name);

struct Dataset {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;  // (count, rows, cols), raw 0..255
  std::vector<int32_t> labels;  // (count), each in [0, kFashionMnistClasses)
};

// The IDX file names of a split: {images, labels}, e.g. "train-images-idx3-ubyte.gz".
std::vector<std::string> fashion_mnist_files(Split split);

// Loads the first `limit` samples of a split (0: all of them). The headers are always checked
// in full (magic numbers, 28x28, equal image and label counts); with limit == 0 the files must
// also end exactly after the data and their gzip checksums must match.
Dataset load_fashion_mnist(const std::string& dir, Split split, int64_t limit = 0);

}  // namespace syncbn::data

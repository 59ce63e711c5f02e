// A labelled image dataset held in memory, and what turns its raw pixels into the model's input.
//
// Every format is read into the same form: uint8 pixels (count, C, H, W) and int32 labels. The
// Dataset also carries what depends on the format only: its DatasetInfo (sample shape, number
// of classes), the per-channel normalization x = (raw / 255 − mean[c]) / stddev[c] with the
// training set's statistics, and the padding of the random-crop augmentation. The loader reads
// them from here, so nothing after loading knows which format it is working on.
//
// Formats (data.format in the config):
//   fashion_mnist  the IDX files of Debian's dataset-fashion-mnist (see fashion_mnist.h)
//   cifar10        CIFAR-10's binary version (see cifar10.h)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset_info.h"

namespace syncbn::data {

enum class Split { kTrain, kTest };

// "train" / "test".
const char* to_string(Split split);
// Throws syncbn::Error naming the value and the allowed ones.
Split parse_split(const std::string& name);

enum class Format { kFashionMnist, kCifar10 };

// The data.format values: "fashion_mnist", "cifar10".
const char* to_string(Format format);
// Throws syncbn::Error naming the value and the allowed ones.
Format parse_format(const std::string& name);
// How the dataset is written in prose and plot titles: "Fashion-MNIST", "CIFAR-10".
const char* display_name(Format format);

struct Dataset {
  DatasetInfo info;
  int64_t count = 0;
  std::vector<uint8_t> pixels;  // (count, C, H, W), raw 0..255
  std::vector<int32_t> labels;  // (count), each in [0, info.num_classes)
  std::vector<double> mean;     // (C) of raw / 255 over the training set
  std::vector<double> stddev;   // (C)
  int crop_padding = 0;         // augmentation: RandomCrop((H, W), padding) + horizontal flip

  int64_t sample_size() const { return info.channels * info.height * info.width; }
};

// The sample shape and classes of `format`, known without reading any file.
DatasetInfo dataset_info(Format format);

// Loads the first `limit` samples of a split (0: all of them) from the files of `format` in
// `dir`. Every problem with the files throws syncbn::Error naming the file and what was
// expected.
Dataset load_dataset(Format format, const std::string& dir, Split split, int64_t limit = 0);

}  // namespace syncbn::data

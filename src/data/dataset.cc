#include "data/dataset.h"

#include "core/error.h"
#include "data/cifar10.h"
#include "data/fashion_mnist.h"

namespace syncbn::data {

const char* to_string(Split split) { return split == Split::kTrain ? "train" : "test"; }

Split parse_split(const std::string& name) {
  if (name == "train") return Split::kTrain;
  if (name == "test") return Split::kTest;
  throw Error(str_cat("unknown dataset split '", name, "'; expected 'train' or 'test'"));
}

const char* to_string(Format format) {
  switch (format) {
    case Format::kFashionMnist:
      return "fashion_mnist";
    case Format::kCifar10:
      return "cifar10";
  }
  SYNCBN_CHECK(false);
  return "";
}

const char* display_name(Format format) {
  switch (format) {
    case Format::kFashionMnist:
      return "Fashion-MNIST";
    case Format::kCifar10:
      return "CIFAR-10";
  }
  SYNCBN_CHECK(false);
  return "";
}

Format parse_format(const std::string& name) {
  if (name == "fashion_mnist") return Format::kFashionMnist;
  if (name == "cifar10") return Format::kCifar10;
  throw Error(str_cat("unknown dataset format '", name, "'; expected fashion_mnist or cifar10"));
}

DatasetInfo dataset_info(Format format) {
  switch (format) {
    case Format::kFashionMnist:
      return fashion_mnist_info();
    case Format::kCifar10:
      return cifar10_info();
  }
  SYNCBN_CHECK(false);
  return {};
}

Dataset load_dataset(Format format, const std::string& dir, Split split, int64_t limit) {
  switch (format) {
    case Format::kFashionMnist:
      return load_fashion_mnist(dir, split, limit);
    case Format::kCifar10:
      return load_cifar10(dir, split, limit);
  }
  SYNCBN_CHECK(false);
  return {};
}

}  // namespace syncbn::data

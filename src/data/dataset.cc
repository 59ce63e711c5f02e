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

namespace {

// Each format's config value and its name in prose.
struct FormatNames {
  Format format;
  const char* value;
  const char* display;
};
constexpr FormatNames kFormats[] = {{Format::kFashionMnist, "fashion_mnist", "Fashion-MNIST"},
                                    {Format::kCifar10, "cifar10", "CIFAR-10"}};

const FormatNames& names(Format format) {
  for (const FormatNames& f : kFormats) {
    if (f.format == format) return f;
  }
  SYNCBN_CHECK(false);
  return kFormats[0];
}

}  // namespace

const char* to_string(Format format) { return names(format).value; }

const char* display_name(Format format) { return names(format).display; }

Format parse_format(const std::string& name) {
  for (const FormatNames& f : kFormats) {
    if (name == f.value) return f.format;
  }
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

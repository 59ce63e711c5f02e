// What the rest of the program needs to know about a dataset without reading it: the shape of
// one sample and the number of classes. The model is built from this (never from constants), so
// that one config trains on Fashion-MNIST (1×28×28, 10 classes) or CIFAR-10 (3×32×32, 10).
#pragma once

#include <cstdint>
#include <string>

namespace syncbn::data {

struct DatasetInfo {
  std::string name;  // the data.format value: fashion_mnist, cifar10
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_classes = 0;
};

}  // namespace syncbn::data

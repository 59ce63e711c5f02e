// Batches for one rank: the sampler's indices turned into a normalized float32 image tensor
// and int32 labels, with optional augmentation.
//
// Normalization: (x / 255 − 0.2860) / 0.3530, Fashion-MNIST's training-set mean and std.
// Augmentation (torchvision's RandomCrop(28, padding=2) then RandomHorizontalFlip(0.5)): the
// image is zero-padded by 2 on each side with raw 0 (before normalization), a 28x28 window is
// cropped at an offset uniform in [0, 4]², then mirrored left-right with probability 1/2. The
// draws depend only on (seed, epoch, sample index), never on the rank, the world size or the
// batch a sample lands in, so R ranks see the same augmented global batch as one process.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "data/fashion_mnist.h"
#include "data/sampler.h"
#include "tensor/tensor.h"

namespace syncbn::data {

inline constexpr double kFashionMnistMean = 0.2860;
inline constexpr double kFashionMnistStd = 0.3530;
inline constexpr int kCropPadding = 2;

// The normalized value of a raw pixel.
float normalize_pixel(uint8_t raw);

// One sample's augmentation: the crop window's top-left corner in the padded image (each in
// [0, 2·kCropPadding]) and whether the crop is mirrored.
struct CropFlip {
  int top = kCropPadding;
  int left = kCropPadding;
  bool flip = false;
};
CropFlip augmentation_for(uint64_t seed, int64_t epoch, int64_t sample_index);

struct Batch {
  Tensor images;                  // (n, 1, rows, cols), normalized
  std::vector<int32_t> labels;    // (n)
  std::vector<int64_t> indices;   // (n) dataset indices, in batch order
  int64_t global_batch_size = 0;  // samples in this step over all ranks (set by Loader)
};

// Assembles the samples `indices` of `dataset` in that order. With `augment`, each sample is
// augmented by augmentation_for(seed, epoch, index). Throws syncbn::Error for an index outside
// [0, dataset.count).
Batch assemble_batch(const Dataset& dataset, std::span<const int64_t> indices, bool augment,
                     uint64_t seed, int64_t epoch);

struct LoaderOptions {
  int64_t global_batch = 0;  // world × per_rank_batch
  uint64_t seed = 0;
  bool shuffle = true;
  bool augment = false;
};

// One rank's view of a dataset: sampler plus assembly. Keeps a reference to `dataset`.
class Loader {
 public:
  Loader(const Dataset& dataset, const LoaderOptions& options, int rank, int world);

  int64_t steps_per_epoch() const { return sampler_.steps_per_epoch(); }
  int64_t global_batch_size(int64_t step) const { return sampler_.global_batch_size(step); }
  // This rank's slice of global batch `step` of `epoch`; may hold zero samples.
  Batch batch(int64_t epoch, int64_t step);

 private:
  const Dataset& dataset_;
  LoaderOptions options_;
  int rank_;
  int world_;
  DistributedSampler sampler_;
};

}  // namespace syncbn::data

// Batches for one rank: the sampler's indices turned into a normalized float32 image tensor
// and int32 labels, with optional augmentation.
//
// Normalization: channel c of a sample becomes (raw / 255 − mean[c]) / stddev[c], the dataset's
// per-channel statistics (dataset.h).
// Augmentation (torchvision's RandomCrop((H, W), padding=p) then RandomHorizontalFlip(0.5), p the
// dataset's crop_padding): the image is zero-padded by p on each side with raw 0 (before
// normalization), an H×W window is cropped at an offset uniform in [0, 2p]², then mirrored
// left-right with probability 1/2; all channels of a sample share the draw. The draws depend only
// on (seed, epoch, sample index), never on the rank, the world size or the batch a sample lands
// in, so R ranks see the same augmented global batch as one process.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "data/dataset.h"
#include "data/sampler.h"
#include "tensor/tensor.h"

namespace syncbn::data {

// The normalized value of a raw pixel of channel `channel` of `dataset`.
float normalize_pixel(const Dataset& dataset, int64_t channel, uint8_t raw);

// One sample's augmentation: the crop window's top-left corner in the image padded by
// `padding` (each in [0, 2·padding]) and whether the crop is mirrored.
struct CropFlip {
  int top = 0;
  int left = 0;
  bool flip = false;
};
CropFlip augmentation_for(int padding, uint64_t seed, int64_t epoch, int64_t sample_index);

struct Batch {
  Tensor images;                  // (n, C, H, W), normalized
  std::vector<int32_t> labels;    // (n)
  std::vector<int64_t> indices;   // (n) dataset indices, in batch order
  int64_t global_batch_size = 0;  // samples in this step over all ranks (set by Loader)
};

// Assembles the samples `indices` of `dataset` in that order. With `augment`, each sample is
// augmented by augmentation_for(dataset.crop_padding, seed, epoch, index). Throws syncbn::Error for
// an index outside [0, dataset.count).
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

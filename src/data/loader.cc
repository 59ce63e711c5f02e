#include "data/loader.h"

#include <array>
#include <cstring>

#include "core/error.h"

namespace syncbn::data {

namespace {

const std::array<float, 256>& normalization_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) {
      t[static_cast<size_t>(v)] = static_cast<float>(
          (static_cast<double>(v) / 255.0 - kFashionMnistMean) / kFashionMnistStd);
    }
    return t;
  }();
  return table;
}

}  // namespace

float normalize_pixel(uint8_t raw) { return normalization_table()[raw]; }

CropFlip augmentation_for(uint64_t seed, int64_t epoch, int64_t sample_index) {
  Rng rng(derive_seed(seed, kAugmentPurpose, epoch), static_cast<uint64_t>(sample_index));
  CropFlip a;
  a.top = static_cast<int>(uniform_below(rng, 2 * kCropPadding + 1));
  a.left = static_cast<int>(uniform_below(rng, 2 * kCropPadding + 1));
  a.flip = rng.uniform() < 0.5;
  return a;
}

Batch assemble_batch(const Dataset& dataset, std::span<const int64_t> indices, bool augment,
                     uint64_t seed, int64_t epoch) {
  const auto n = static_cast<int64_t>(indices.size());
  for (int64_t i = 0; i < n; ++i) {
    SYNCBN_REQUIRE(indices[i] >= 0 && indices[i] < dataset.count, "sample index ", indices[i],
                   " is outside the dataset's [0, ", dataset.count, ")");
  }
  const int rows = dataset.rows;
  const int cols = dataset.cols;
  const int64_t plane = int64_t{rows} * cols;
  const std::array<float, 256>& table = normalization_table();
  const float zero = table[0];

  Batch batch;
  batch.images = Tensor::empty({n, 1, rows, cols});
  batch.labels.resize(indices.size());
  batch.indices.assign(indices.begin(), indices.end());
  float* out = batch.images.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = indices[i];
    const uint8_t* src = dataset.pixels.data() + index * plane;
    float* dst = out + i * plane;
    batch.labels[static_cast<size_t>(i)] = dataset.labels[static_cast<size_t>(index)];
    if (!augment) {
      for (int64_t p = 0; p < plane; ++p) dst[p] = table[src[p]];
      continue;
    }
    const CropFlip a = augmentation_for(seed, epoch, index);
    // Output (y, x) is the cropped pixel (y, flip ? cols-1-x : x), i.e. the padded image at
    // that plus (top, left), i.e. the source at that minus the padding.
    for (int y = 0; y < rows; ++y) {
      const int sy = y + a.top - kCropPadding;
      for (int x = 0; x < cols; ++x) {
        const int cx = a.flip ? cols - 1 - x : x;
        const int sx = cx + a.left - kCropPadding;
        const bool inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols;
        dst[y * cols + x] = inside ? table[src[sy * cols + sx]] : zero;
      }
    }
  }
  return batch;
}

Loader::Loader(const Dataset& dataset, const LoaderOptions& options, int rank, int world)
    : dataset_(dataset),
      options_(options),
      rank_(rank),
      world_(world),
      sampler_(dataset.count, options.global_batch, options.seed, options.shuffle) {
  rank_slice(0, rank, world);  // validates rank and world
}

Batch Loader::batch(int64_t epoch, int64_t step) {
  const std::vector<int64_t> indices = sampler_.indices(epoch, step, rank_, world_);
  Batch b = assemble_batch(dataset_, indices, options_.augment, options_.seed, epoch);
  b.global_batch_size = sampler_.global_batch_size(step);
  return b;
}

}  // namespace syncbn::data

#include "data/loader.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace syncbn::data {

namespace {

// normalize_pixel for every raw value of every channel: (C, 256).
std::vector<float> normalization_tables(const Dataset& dataset) {
  const int64_t channels = dataset.info.channels;
  SYNCBN_CHECK(static_cast<int64_t>(dataset.mean.size()) == channels &&
               static_cast<int64_t>(dataset.stddev.size()) == channels);
  std::vector<float> tables(static_cast<size_t>(channels * 256));
  for (int64_t c = 0; c < channels; ++c) {
    for (int v = 0; v < 256; ++v)
      tables[static_cast<size_t>(c * 256 + v)] =
          normalize_pixel(dataset, c, static_cast<uint8_t>(v));
  }
  return tables;
}

}  // namespace

float normalize_pixel(const Dataset& dataset, int64_t channel, uint8_t raw) {
  const auto c = static_cast<size_t>(channel);
  return static_cast<float>((static_cast<double>(raw) / 255.0 - dataset.mean.at(c)) /
                            dataset.stddev.at(c));
}

CropFlip augmentation_for(int padding, uint64_t seed, int64_t epoch, int64_t sample_index) {
  SYNCBN_CHECK(padding >= 0);
  Rng rng(derive_seed(seed, kAugmentPurpose, epoch), static_cast<uint64_t>(sample_index));
  CropFlip a;
  a.top = static_cast<int>(uniform_below(rng, 2 * static_cast<uint64_t>(padding) + 1));
  a.left = static_cast<int>(uniform_below(rng, 2 * static_cast<uint64_t>(padding) + 1));
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
  const int64_t channels = dataset.info.channels;
  const int64_t rows = dataset.info.height;
  const int64_t cols = dataset.info.width;
  const int64_t plane = rows * cols;
  const int64_t sample = dataset.sample_size();
  const int padding = dataset.crop_padding;
  const std::vector<float> tables = normalization_tables(dataset);

  Batch batch;
  batch.images = Tensor::empty({n, channels, rows, cols});
  batch.labels.resize(indices.size());
  batch.indices.assign(indices.begin(), indices.end());
  float* out = batch.images.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = indices[i];
    batch.labels[static_cast<size_t>(i)] = dataset.labels[static_cast<size_t>(index)];
    const CropFlip a = augment ? augmentation_for(padding, seed, epoch, index) : CropFlip{};
    for (int64_t c = 0; c < channels; ++c) {
      const uint8_t* src = dataset.pixels.data() + index * sample + c * plane;
      float* dst = out + i * sample + c * plane;
      const float* table = tables.data() + c * 256;
      if (!augment) {
        for (int64_t p = 0; p < plane; ++p) dst[p] = table[src[p]];
        continue;
      }
      // Output (y, x) is the cropped pixel (y, flip ? cols-1-x : x), i.e. the padded image at
      // that plus (top, left), i.e. the source at that minus the padding.
      for (int64_t y = 0; y < rows; ++y) {
        const int64_t sy = y + a.top - padding;
        for (int64_t x = 0; x < cols; ++x) {
          const int64_t cx = a.flip ? cols - 1 - x : x;
          const int64_t sx = cx + a.left - padding;
          const bool inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols;
          dst[y * cols + x] = inside ? table[src[sy * cols + sx]] : table[0];
        }
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

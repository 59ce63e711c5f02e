// Distributed sampling whose order does not depend on the world size.
//
// Each epoch visits one global permutation of [0, count), drawn from (seed, epoch) by
// Fisher-Yates (or the identity without shuffling). Global batch k is positions
// [k·B, min((k+1)·B, count)) of that permutation, B the global batch size (world ×
// per_rank_batch). Rank r of `world` takes the r-th contiguous slice of the batch; a batch is
// split as evenly as possible (sizes differ by at most one, earlier ranks get the extra), so
// a partial last batch may leave some ranks with zero samples. Concatenating the slices of all
// ranks gives the same global batch for every world size, which is what lets SyncBN runs on
// R ranks match one process, and lets a run resume on a different number of ranks.
//
// The sampler holds no position: (epoch, step) names a batch, so resuming needs only those.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace syncbn::data {

// [begin, begin + size) of a global batch, the part one rank takes.
struct RankSlice {
  int64_t begin = 0;
  int64_t size = 0;
};

// Splits a batch of `batch_size` samples over `world` ranks as described above.
RankSlice rank_slice(int64_t batch_size, int rank, int world);

// The order of an epoch: a permutation of [0, count). Throws syncbn::Error for count < 0 or
// epoch < 0.
std::vector<int64_t> epoch_permutation(int64_t count, uint64_t seed, int64_t epoch, bool shuffle);

class DistributedSampler {
 public:
  // Throws syncbn::Error unless count >= 0 and global_batch >= 1.
  DistributedSampler(int64_t count, int64_t global_batch, uint64_t seed, bool shuffle = true);

  int64_t count() const { return count_; }
  int64_t global_batch() const { return global_batch_; }
  // ceil(count / global_batch).
  int64_t steps_per_epoch() const;
  // Samples in global batch `step`: global_batch, or fewer for the last one.
  int64_t global_batch_size(int64_t step) const;

  // Dataset indices of rank `rank`'s slice of global batch `step` in `epoch`. Throws
  // syncbn::Error for an epoch < 0, a step outside [0, steps_per_epoch()), world < 1 or a rank
  // outside [0, world). Keeps the last epoch's permutation, so it is not thread-safe.
  std::vector<int64_t> indices(int64_t epoch, int64_t step, int rank, int world);

 private:
  const std::vector<int64_t>& order(int64_t epoch);

  int64_t count_;
  int64_t global_batch_;
  uint64_t seed_;
  bool shuffle_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_order_;
};

// Random streams of the data pipeline, all derived from the run's seed: one per epoch for the
// shuffle, and for augmentation one per (epoch, sample index).
uint64_t derive_seed(uint64_t seed, uint64_t purpose, int64_t epoch);
inline constexpr uint64_t kShufflePurpose = 0x53485546464c45ull;  // "SHUFFLE"
inline constexpr uint64_t kAugmentPurpose = 0x4155474d454e54ull;  // "AUGMENT"

// Uniform integer in [0, bound) without modulo bias; bound >= 1.
uint64_t uniform_below(Rng& rng, uint64_t bound);

}  // namespace syncbn::data

#include "data/sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "core/error.h"

namespace syncbn::data {

namespace {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t purpose, int64_t epoch) {
  uint64_t h = mix64(seed + 0x9E3779B97F4A7C15ull);
  h = mix64(h ^ purpose);
  return mix64(h ^ static_cast<uint64_t>(epoch));
}

uint64_t uniform_below(Rng& rng, uint64_t bound) {
  SYNCBN_CHECK(bound >= 1);
  // Reject the top partial copy of [0, bound) in [0, 2^64) so every value is equally likely.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = rng.next_u64();
    if (r >= threshold) return r % bound;
  }
}

RankSlice rank_slice(int64_t batch_size, int rank, int world) {
  SYNCBN_REQUIRE(world >= 1, "world size is ", world, "; expected at least 1");
  SYNCBN_REQUIRE(rank >= 0 && rank < world, "rank ", rank, " is outside [0, ", world, ")");
  SYNCBN_REQUIRE(batch_size >= 0, "batch size is ", batch_size, "; expected >= 0");
  const int64_t base = batch_size / world;
  const int64_t extra = batch_size % world;
  return RankSlice{rank * base + std::min<int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

std::vector<int64_t> epoch_permutation(int64_t count, uint64_t seed, int64_t epoch, bool shuffle) {
  SYNCBN_REQUIRE(count >= 0, "dataset size is ", count, "; expected >= 0");
  SYNCBN_REQUIRE(epoch >= 0, "epoch is ", epoch, "; expected >= 0");
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  Rng rng(derive_seed(seed, kShufflePurpose, epoch));
  for (int64_t i = count - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

DistributedSampler::DistributedSampler(int64_t count, int64_t global_batch, uint64_t seed,
                                       bool shuffle)
    : count_(count), global_batch_(global_batch), seed_(seed), shuffle_(shuffle) {
  SYNCBN_REQUIRE(count >= 0, "dataset size is ", count, "; expected >= 0");
  SYNCBN_REQUIRE(global_batch >= 1, "global batch size is ", global_batch, "; expected at least 1");
}

int64_t DistributedSampler::steps_per_epoch() const {
  return (count_ + global_batch_ - 1) / global_batch_;
}

int64_t DistributedSampler::global_batch_size(int64_t step) const {
  SYNCBN_REQUIRE(step >= 0 && step < steps_per_epoch(), "step ", step, " is outside [0, ",
                 steps_per_epoch(), ") for ", count_, " samples in global batches of ",
                 global_batch_);
  return std::min(global_batch_, count_ - step * global_batch_);
}

const std::vector<int64_t>& DistributedSampler::order(int64_t epoch) {
  if (epoch != cached_epoch_) {
    cached_order_ = epoch_permutation(count_, seed_, epoch, shuffle_);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch, int64_t step, int rank, int world) {
  SYNCBN_REQUIRE(epoch >= 0, "epoch is ", epoch, "; expected >= 0");
  const int64_t batch = global_batch_size(step);
  const RankSlice slice = rank_slice(batch, rank, world);
  const std::vector<int64_t>& perm = order(epoch);
  const auto first = perm.begin() + step * global_batch_ + slice.begin;
  return std::vector<int64_t>(first, first + slice.size);
}

}  // namespace syncbn::data

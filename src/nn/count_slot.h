// The count slot of SyncBN's forward collective, shared by the CPU layer (nn/sync_batch_norm.cc),
// the CUDA layer (nn/sync_batch_norm_cuda.cc) and its decode kernel: `__host__ __device__` under
// nvcc, plain inline C++ otherwise.
//
// The slot is one float64 of the allreduced payload: the rank's element count per channel in the
// low kCountBits bits and, above it, one field per bit of a tag naming the layer and its call
// number. Each field is wide enough to hold the group size R, so after the sum every field is 0
// or R exactly when every rank sent the same tag: a rank in another layer is caught in the same
// collective, for free. All of it stays within the 53 bits a double holds exactly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/hash.h"
#include "norm/norm_math.h"  // SYNCBN_HD

namespace syncbn::nn::slot {

constexpr int kCountBits = 36;
constexpr int kTagBits = 53 - kCountBits;

struct Layout {
  int width;   // bits per tag field
  int fields;  // tag bits carried
};

inline Layout layout(int group_size) {
  int width = 0;  // std::bit_width(group_size); the .cu files are C++17
  while ((1u << width) <= static_cast<unsigned>(group_size)) ++width;
  return {width, std::min(16, kTagBits / width)};
}

// The tag of forward call `call` of layer `name` with C channels.
inline uint64_t layer_tag(const std::string& name, int64_t call, int64_t channels) {
  return fnv1a(std::to_string(call) + "/" + std::to_string(channels), fnv1a(name));
}

// Whether `count` values on each of group_size ranks sum without carrying into the tag fields.
inline bool count_fits(int64_t count, int group_size) {
  return count < (int64_t{1} << kCountBits) / group_size;
}

SYNCBN_HD double encode(int64_t count, uint64_t tag, Layout layout) {
  uint64_t slot = static_cast<uint64_t>(count);
  for (int j = 0; j < layout.fields; ++j)
    slot += ((tag >> j) & 1u) << (kCountBits + j * layout.width);
  return static_cast<double>(slot);
}

// The reduced slot: the group-wide count, and whether every tag field is 0 or group_size.
struct Decoded {
  int64_t count;
  bool same_layer;
};
SYNCBN_HD Decoded decode(double reduced, Layout layout, int group_size) {
  const uint64_t slot = static_cast<uint64_t>(reduced);
  const uint64_t mask = (uint64_t{1} << layout.width) - 1;
  bool same_layer = true;
  for (int j = 0; j < layout.fields; ++j) {
    const uint64_t field = (slot >> (kCountBits + j * layout.width)) & mask;
    if (field != 0 && field != static_cast<uint64_t>(group_size)) same_layer = false;
  }
  return {static_cast<int64_t>(slot & ((uint64_t{1} << kCountBits) - 1)), same_layer};
}

}  // namespace syncbn::nn::slot

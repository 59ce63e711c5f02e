// What the CUDA step backend (train/cuda/cuda_backend.cc) builds from the config and the host
// model, as plain data: each layer's kind, per-sample shapes and hyper-parameters; each
// parameter's place in the flat gradient array; the gradient buckets. Built in every build, so
// the CPU tests (tests/train/device_plan_test.cc) check it; the backend only turns it into device
// objects.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/model.h"

namespace syncbn::train {

// kNorm: BN (syncbn, bn) through SyncBatchNormCuda; kGroupNorm: GroupNorm, LayerNorm (one group)
// and InstanceNorm2d (one group per channel) through the norm/cuda GN stages.
enum class DeviceLayerKind {
  kConv,
  kLinear,
  kNorm,
  kGroupNorm,
  kRelu,
  kMaxPool,
  kGap,
  kPassThrough
};

// Per-sample activation shape: (C, H, W), or (F, 1, 1) after flatten.
struct SampleShape {
  int64_t c = 0, h = 1, w = 1;
  int64_t numel() const { return c * h * w; }
  bool operator==(const SampleShape&) const = default;
};

struct PlannedLayer {
  DeviceLayerKind kind = DeviceLayerKind::kPassThrough;
  SampleShape in, out;
  int64_t kernel = 1, stride = 1, padding = 0;  // conv, max pool
  int64_t groups = 0;                           // kGroupNorm
  int weight = -1, bias = -1;                   // indices into DevicePlan::params
};

struct PlannedParam {
  std::string name;  // the host model's ("3.weight")
  size_t layer = 0;
  bool is_bias = false;
  int64_t numel = 0;
  int64_t offset = 0;  // in the flat gradient (and momentum) array, parameters in order
  int bucket = -1;
};

// A range of the flat gradient array, allreduced as one: the parameters [first, last] (indices),
// consecutive, so the range is contiguous. Buckets are in the order backward completes them
// (the last parameters first).
struct PlannedBucket {
  int64_t begin = 0, end = 0;
  size_t first = 0, last = 0;
};

struct DevicePlan {
  std::vector<PlannedLayer> layers;  // one per host layer
  std::vector<PlannedParam> params;  // the host model's parameters(), in order
  std::vector<PlannedBucket> buckets;
  int64_t total_params = 0;  // elements
};

// Plans `model` (built from `config` and `info` by build_model) for the device. Buckets hold about
// bucket_bytes of float32 gradients each (at least one parameter). Throws syncbn::Error naming
// the layer for a layer kind the CUDA backend lacks.
DevicePlan plan_device_model(const Config& config, const data::DatasetInfo& info, Sequential& model,
                             int64_t bucket_bytes = int64_t{1} << 20);

}  // namespace syncbn::train

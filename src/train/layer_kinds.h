// The registry of layer kinds: for each config layer type, and for each model.norm, the one place
// that says what it does to the shape, which CPU layer it is, its PyTorch constructor and how the
// CUDA backend runs it. model.cc and cuda/device_plan.cc only look things up here.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "nn/layer.h"
#include "tensor/tensor.h"
#include "train/config.h"
#include "train/model.h"

namespace syncbn::train {

// How the CUDA backend runs a node of the plan (train/cuda/device_plan.h). kNorm: BN (syncbn,
// bn) through SyncBatchNormCuda; kGroupNorm: GroupNorm, LayerNorm (one group) and
// InstanceNorm2d (one group per channel) through the norm/cuda GN stages; kAdd: the sum of a
// residual block's two branches.
enum class DeviceLayerKind {
  kConv,
  kLinear,
  kNorm,
  kGroupNorm,
  kRelu,
  kMaxPool,
  kGap,
  kPassThrough,
  kAdd
};

struct DeviceOp {
  DeviceLayerKind kind = DeviceLayerKind::kPassThrough;
  int64_t groups = 0;  // kGroupNorm
};

// What building a layer needs beyond its spec.
struct BuildContext {
  const Config& config;
  comm::Communicator* bn_group;  // model.norm: syncbn
  Rng& rng;
  std::string path;  // the layer's dotted name (SyncBN's layer-order tag and messages)
};

struct LayerKind {
  LayerType type;
  // The output shape for `in`; throws syncbn::Error naming `where` when the layer does not fit.
  SampleShape (*output)(const LeafSpec& spec, const SampleShape& in, const Config& config,
                        const std::string& where);
  std::unique_ptr<nn::Layer> (*build)(const LeafSpec& spec, const SampleShape& in,
                                      const BuildContext& context);
  // The kind() of the layer build() makes.
  std::string (*cpu_kind)(const Config& config);
  // A PyTorch expression constructing the same module ("torch.nn.Conv2d(3, 16, 3, ...)").
  std::string (*torch)(const LeafSpec& spec, const SampleShape& in, const Config& config);
  DeviceOp (*device)(const LeafSpec& spec, const SampleShape& in, const Config& config);
};

const LayerKind& layer_kind(LayerType type);

}  // namespace syncbn::train

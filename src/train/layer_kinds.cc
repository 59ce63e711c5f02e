#include "train/layer_kinds.h"

#include "core/error.h"
#include "nn/layers.h"
#include "nn/sync_batch_norm.h"

namespace syncbn::train {
namespace {

std::string num(int64_t v) { return std::to_string(v); }

// Convolution and pooling windows: floor((size + 2·padding − kernel) / stride) + 1.
SampleShape windowed(const LeafSpec& s, const SampleShape& in, int64_t channels,
                     const std::string& where) {
  const int64_t h = (in.h + 2 * s.padding - s.kernel) / s.stride + 1;
  const int64_t w = (in.w + 2 * s.padding - s.kernel) / s.stride + 1;
  SYNCBN_REQUIRE(
      in.h + 2 * s.padding >= s.kernel && in.w + 2 * s.padding >= s.kernel && h >= 1 && w >= 1,
      where, " with kernel ", s.kernel, " gets an input of ", in.c, "x", in.h, "x", in.w,
      " that is too small");
  return {channels, h, w};
}

SampleShape same(const LeafSpec&, const SampleShape& in, const Config&, const std::string&) {
  return in;
}

// ---------------------------------------------------------------------------------------------
// The norms: what model.norm makes of a norm layer over C channels.

struct NormKind {
  Norm norm;
  std::unique_ptr<nn::Layer> (*build)(int64_t channels, const BuildContext& context);
  const char* cpu_kind;
  std::string (*torch)(int64_t channels, const Config& config);
  DeviceOp (*device)(int64_t channels, const Config& config);
};

const NormKind kNormKinds[] = {
    {Norm::kSyncBn,
     [](int64_t c, const BuildContext& ctx) -> std::unique_ptr<nn::Layer> {
       SYNCBN_CHECK(ctx.bn_group != nullptr && "model.norm: syncbn needs a BN group");
       nn::SyncBatchNormOptions options;
       options.num_features = c;
       return std::make_unique<nn::SyncBatchNormLayer>(options, ctx.bn_group, ctx.path);
     },
     "SyncBatchNorm",
     // Loads the same state; bench/torch_ddp_train.py converts it with convert_sync_batchnorm.
     [](int64_t c, const Config&) { return "torch.nn.BatchNorm2d(" + num(c) + ")"; },
     [](int64_t, const Config&) { return DeviceOp{DeviceLayerKind::kNorm}; }},
    {Norm::kBn,
     [](int64_t c, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::BatchNorm2d>(c);
     },
     "BatchNorm2d", [](int64_t c, const Config&) { return "torch.nn.BatchNorm2d(" + num(c) + ")"; },
     [](int64_t, const Config&) { return DeviceOp{DeviceLayerKind::kNorm}; }},
    {Norm::kGn,
     [](int64_t c, const BuildContext& ctx) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::GroupNorm>(ctx.config.model.gn_groups, c);
     },
     "GroupNorm",
     [](int64_t c, const Config& config) {
       return "torch.nn.GroupNorm(" + num(config.model.gn_groups) + ", " + num(c) + ")";
     },
     [](int64_t, const Config& config) {
       return DeviceOp{DeviceLayerKind::kGroupNorm, config.model.gn_groups};
     }},
    {Norm::kLn,
     [](int64_t c, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::GroupNorm>(1, c);
     },
     "GroupNorm", [](int64_t c, const Config&) { return "torch.nn.GroupNorm(1, " + num(c) + ")"; },
     [](int64_t, const Config&) {
       return DeviceOp{DeviceLayerKind::kGroupNorm, 1};
     }},
    // InstanceNorm2d(C, affine) is GroupNorm(C, C) with the same per-channel affine.
    {Norm::kIn,
     [](int64_t c, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::InstanceNorm2d>(c, /*affine=*/true);
     },
     "InstanceNorm2d",
     [](int64_t c, const Config&) {
       return "torch.nn.InstanceNorm2d(" + num(c) + ", affine=True)";
     },
     [](int64_t c, const Config&) {
       return DeviceOp{DeviceLayerKind::kGroupNorm, c};
     }},
    {Norm::kNone,
     [](int64_t, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::Identity>();
     },
     "Identity", [](int64_t, const Config&) { return std::string("torch.nn.Identity()"); },
     [](int64_t, const Config&) { return DeviceOp{DeviceLayerKind::kPassThrough}; }},
};

const NormKind& norm_kind(Norm norm) {
  for (const NormKind& k : kNormKinds)
    if (k.norm == norm) return k;
  SYNCBN_CHECK(false && "a model.norm without a registry entry");
}

// ---------------------------------------------------------------------------------------------
// The layer types.

const LayerKind kLayerKinds[] = {
    {LayerType::kConv,
     [](const LeafSpec& s, const SampleShape& in, const Config&, const std::string& where) {
       return windowed(s, in, s.out, where);
     },
     [](const LeafSpec& s, const SampleShape& in,
        const BuildContext& ctx) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::Conv2d>(in.c, s.out, s.kernel, s.stride, s.padding, s.bias,
                                           ctx.rng);
     },
     [](const Config&) { return std::string("Conv2d"); },
     [](const LeafSpec& s, const SampleShape& in, const Config&) {
       return "torch.nn.Conv2d(" + num(in.c) + ", " + num(s.out) + ", " + num(s.kernel) +
              ", stride=" + num(s.stride) + ", padding=" + num(s.padding) +
              ", bias=" + (s.bias ? "True" : "False") + ")";
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kConv};
     }},
    {LayerType::kNorm,
     [](const LeafSpec&, const SampleShape& in, const Config& config, const std::string& where) {
       SYNCBN_REQUIRE(config.model.norm != Norm::kGn || in.c % config.model.gn_groups == 0,
                      "config key 'model.gn_groups' (", config.model.gn_groups,
                      ") must divide the channels of every norm layer; ", where, " has ", in.c);
       return in;
     },
     [](const LeafSpec&, const SampleShape& in, const BuildContext& ctx) {
       return norm_kind(ctx.config.model.norm).build(in.c, ctx);
     },
     [](const Config& config) { return std::string(norm_kind(config.model.norm).cpu_kind); },
     [](const LeafSpec&, const SampleShape& in, const Config& config) {
       return norm_kind(config.model.norm).torch(in.c, config);
     },
     [](const LeafSpec&, const SampleShape& in, const Config& config) {
       return norm_kind(config.model.norm).device(in.c, config);
     }},
    {LayerType::kRelu, same,
     [](const LeafSpec&, const SampleShape&, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::ReLU>();
     },
     [](const Config&) { return std::string("ReLU"); },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return std::string("torch.nn.ReLU()");
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kRelu};
     }},
    {LayerType::kMaxPool,
     [](const LeafSpec& s, const SampleShape& in, const Config&, const std::string& where) {
       SYNCBN_REQUIRE(s.padding <= s.kernel / 2, where, ": padding ", s.padding,
                      " must be at most half of the kernel size ", s.kernel);
       return windowed(s, in, in.c, where);
     },
     [](const LeafSpec& s, const SampleShape&, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::MaxPool2d>(s.kernel, s.stride, s.padding);
     },
     [](const Config&) { return std::string("MaxPool2d"); },
     [](const LeafSpec& s, const SampleShape&, const Config&) {
       return "torch.nn.MaxPool2d(" + num(s.kernel) + ", stride=" + num(s.stride) +
              ", padding=" + num(s.padding) + ")";
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kMaxPool};
     }},
    {LayerType::kGap,
     [](const LeafSpec&, const SampleShape& in, const Config&, const std::string&) {
       return SampleShape{in.c, 1, 1};
     },
     [](const LeafSpec&, const SampleShape&, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::AdaptiveAvgPool2d>(1);
     },
     [](const Config&) { return std::string("AdaptiveAvgPool2d"); },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return std::string("torch.nn.AdaptiveAvgPool2d(1)");
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kGap};
     }},
    {LayerType::kFlatten,
     [](const LeafSpec&, const SampleShape& in, const Config&, const std::string&) {
       return SampleShape{in.numel(), 1, 1};
     },
     [](const LeafSpec&, const SampleShape&, const BuildContext&) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::Flatten>();
     },
     [](const Config&) { return std::string("Flatten"); },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return std::string("torch.nn.Flatten()");
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kPassThrough};
     }},
    {LayerType::kLinear,
     [](const LeafSpec& s, const SampleShape&, const Config&, const std::string&) {
       return SampleShape{s.out, 1, 1};
     },
     [](const LeafSpec& s, const SampleShape& in,
        const BuildContext& ctx) -> std::unique_ptr<nn::Layer> {
       return std::make_unique<nn::Linear>(in.numel(), s.out, s.bias, ctx.rng);
     },
     [](const Config&) { return std::string("Linear"); },
     [](const LeafSpec& s, const SampleShape& in, const Config&) {
       return "torch.nn.Linear(" + num(in.numel()) + ", " + num(s.out) +
              (s.bias ? "" : ", bias=False") + ")";
     },
     [](const LeafSpec&, const SampleShape&, const Config&) {
       return DeviceOp{DeviceLayerKind::kLinear};
     }},
};

}  // namespace

const LayerKind& layer_kind(LayerType type) {
  for (const LayerKind& k : kLayerKinds)
    if (k.type == type) return k;
  SYNCBN_CHECK(false && "a layer type without a registry entry");
}

}  // namespace syncbn::train

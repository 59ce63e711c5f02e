#include "train/cuda/device_plan.h"

#include "core/error.h"
#include "nn/layers.h"
#include "train/grad_reducer.h"

namespace syncbn::train {
namespace {

PlannedLayer plan_layer(const Config& config, size_t i, nn::Layer& host, const LayerSpec& spec,
                        const SampleShape& in) {
  PlannedLayer L;
  L.in = in;
  L.out = in;
  const std::string where = str_cat("model layer ", i, " (", host.kind(), ")");
  auto expect_spec = [&](LayerType type) {
    SYNCBN_REQUIRE(spec.type == type, where, ": layer_specs() has '", to_string(spec.type),
                   "' here, so the model was not built from this config");
  };
  if (auto* conv = dynamic_cast<nn::Conv2d*>(&host)) {
    expect_spec(LayerType::kConv);
    L.kind = DeviceLayerKind::kConv;
    L.kernel = spec.kernel, L.stride = spec.stride, L.padding = spec.padding;
    SYNCBN_REQUIRE(
        conv->weight().shape() == (std::vector<int64_t>{spec.out, in.c, spec.kernel, spec.kernel}),
        where, ": weight ", shape_to_string(conv->weight().shape()),
        " does not match the layer list");
    L.out = {spec.out, (in.h + 2 * L.padding - L.kernel) / L.stride + 1,
             (in.w + 2 * L.padding - L.kernel) / L.stride + 1};
  } else if (auto* linear = dynamic_cast<nn::Linear*>(&host)) {
    expect_spec(LayerType::kLinear);
    L.kind = DeviceLayerKind::kLinear;
    L.out = {spec.out, 1, 1};
    SYNCBN_REQUIRE(linear->weight().shape() == (std::vector<int64_t>{spec.out, in.numel()}), where,
                   ": weight ", shape_to_string(linear->weight().shape()),
                   " does not match the layer list");
  } else if (dynamic_cast<nn::SyncBatchNormLayer*>(&host) != nullptr ||
             dynamic_cast<nn::BatchNorm2d*>(&host) != nullptr) {
    expect_spec(LayerType::kNorm);
    L.kind = DeviceLayerKind::kNorm;
  } else if (dynamic_cast<nn::GroupNorm*>(&host) != nullptr ||
             dynamic_cast<nn::InstanceNorm2d*>(&host) != nullptr) {
    expect_spec(LayerType::kNorm);
    L.kind = DeviceLayerKind::kGroupNorm;
    // As build_model makes them: gn → GroupNorm(gn_groups, C), ln → GroupNorm(1, C),
    // in → InstanceNorm2d(C, affine) = GroupNorm(C, C) with the same per-channel affine.
    const Norm norm = config.model.norm;
    SYNCBN_CHECK(norm == Norm::kGn || norm == Norm::kLn || norm == Norm::kIn);
    L.groups = norm == Norm::kGn ? config.model.gn_groups : norm == Norm::kLn ? 1 : in.c;
  } else if (dynamic_cast<nn::ReLU*>(&host) != nullptr) {
    expect_spec(LayerType::kRelu);
    L.kind = DeviceLayerKind::kRelu;
  } else if (dynamic_cast<nn::MaxPool2d*>(&host) != nullptr) {
    expect_spec(LayerType::kMaxPool);
    L.kind = DeviceLayerKind::kMaxPool;
    L.kernel = spec.kernel, L.stride = spec.stride;  // no padding: build_model passes none
    L.out = {in.c, (in.h - L.kernel) / L.stride + 1, (in.w - L.kernel) / L.stride + 1};
  } else if (dynamic_cast<nn::AdaptiveAvgPool2d*>(&host) != nullptr) {
    expect_spec(LayerType::kGap);
    L.kind = DeviceLayerKind::kGap;
    L.out = {in.c, 1, 1};
  } else if (dynamic_cast<nn::Flatten*>(&host) != nullptr) {
    expect_spec(LayerType::kFlatten);
    L.out = {in.numel(), 1, 1};
  } else if (dynamic_cast<nn::Identity*>(&host) != nullptr) {
    expect_spec(LayerType::kNorm);  // model.norm: none
  } else {
    throw Error(str_cat(where,
                        " has no CUDA implementation; device: cuda runs Conv2d, Linear, "
                        "BatchNorm2d/SyncBatchNorm, ReLU, MaxPool2d, AdaptiveAvgPool2d(1), "
                        "Flatten and Identity"));
  }
  return L;
}

}  // namespace

DevicePlan plan_device_model(const Config& config, const data::DatasetInfo& info, Sequential& model,
                             int64_t bucket_bytes) {
  DevicePlan plan;
  const std::vector<LayerSpec> specs = layer_specs(config, info.num_classes);
  SYNCBN_REQUIRE(specs.size() == model.size(), "layer_specs() has ", specs.size(),
                 " layers, the model ", model.size());
  SampleShape shape{info.channels, info.height, info.width};
  for (size_t i = 0; i < specs.size(); ++i) {
    plan.layers.push_back(plan_layer(config, i, model.layer(i), specs[i], shape));
    shape = plan.layers.back().out;
  }

  const std::vector<nn::ParamRef> host = model.parameters();
  const std::vector<size_t> owner = model.parameter_layers();
  for (size_t k = 0; k < host.size(); ++k) {
    PlannedParam p;
    p.name = host[k].name;
    p.layer = owner[k];
    p.is_bias = p.name.ends_with(".bias");
    p.numel = host[k].value->numel();
    p.offset = plan.total_params;
    plan.total_params += p.numel;
    PlannedLayer& L = plan.layers[p.layer];
    int& slot = p.is_bias ? L.bias : L.weight;
    SYNCBN_CHECK(slot == -1);
    slot = static_cast<int>(k);
    plan.params.push_back(p);
  }

  std::vector<int64_t> grad_bytes;
  for (const PlannedParam& p : plan.params)
    grad_bytes.push_back(p.numel * static_cast<int64_t>(sizeof(float)));
  for (const std::vector<size_t>& params : bucket_parameters(grad_bytes, bucket_bytes)) {
    const PlannedParam& first = plan.params[params.back()];
    const PlannedParam& last = plan.params[params.front()];
    plan.buckets.push_back({first.offset, last.offset + last.numel, params.back(), params.front()});
    for (size_t k : params) plan.params[k].bucket = static_cast<int>(plan.buckets.size() - 1);
  }
  return plan;
}

}  // namespace syncbn::train

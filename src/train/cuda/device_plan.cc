#include "train/cuda/device_plan.h"

#include <cstdint>
#include <map>

#include "core/error.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "train/grad_reducer.h"

namespace syncbn::train {
namespace {

using Kind = ModuleSpec::Kind;

// Turns the model tree into nodes in execution order, checking each leaf against the host
// model's layer of the same path.
class Planner {
 public:
  Planner(const Config& config, Sequential& model, DevicePlan& plan)
      : config_(config), model_(model), plan_(plan) {
    for (size_t i = 0; i < model.size(); ++i) leaf_of_[model.layer_name(i)] = i;
  }

  // Appends the nodes of `m`, fed by node `input`; returns the node holding its output.
  int walk(const ModuleSpec& m, int input) {
    if (m.kind == Kind::kLayer) return leaf(m, input, m.in);
    if (m.kind == Kind::kSequential) {
      for (const ModuleSpec& c : m.children) input = walk(c, input);
      return input;
    }
    const auto type = m.kind == Kind::kBasicBlock ? nn::ResidualBlock::Type::kBasic
                                                  : nn::ResidualBlock::Type::kBottleneck;
    int main = input;
    SampleShape shape = m.in;
    for (const std::string& name : nn::ResidualBlock::main_path(type)) {
      const ModuleSpec* c = m.child(name);
      SYNCBN_CHECK(c != nullptr);
      main = leaf(*c, main, shape);
      shape = plan_.layers[static_cast<size_t>(main)].out;
    }
    const ModuleSpec* downsample = m.child("downsample");
    const int shortcut = downsample != nullptr ? walk(*downsample, input) : input;
    PlannedLayer add;
    add.kind = DeviceLayerKind::kAdd;
    add.name = m.path + ".add";
    add.in = add.out = shape;
    add.input = main;
    add.shortcut = shortcut;
    SYNCBN_REQUIRE(shape_of(shortcut) == shape, add.name, ": the shortcut's shape differs");
    plan_.layers.push_back(add);
    const int sum = static_cast<int>(plan_.layers.size() - 1);
    return leaf(*m.child("relu"), sum, shape);
  }

  size_t leaves_seen() const { return leaf_nodes_.size(); }
  // The first node that runs host leaf i.
  size_t node_of_leaf(size_t i) const { return leaf_nodes_.at(i); }

 private:
  SampleShape shape_of(int node) const {
    if (node == kModelInput) return plan_.layers.empty() ? SampleShape{} : plan_.layers[0].in;
    return plan_.layers[static_cast<size_t>(node)].out;
  }

  int leaf(const ModuleSpec& m, int input, const SampleShape& in) {
    const LayerKind& kind = layer_kind(m.layer.type);
    auto found = leaf_of_.find(m.path);
    SYNCBN_REQUIRE(found != leaf_of_.end(), "model layer '", m.path,
                   "' is missing from the host model, so it was not built from this config");
    nn::Layer& host = model_.layer(found->second);
    const std::string where = str_cat("model layer '", m.path, "' (", host.kind(), ")");
    SYNCBN_REQUIRE(host.kind() == kind.cpu_kind(config_), where, ": the config makes a ",
                   kind.cpu_kind(config_), " there, so the model was not built from this config");
    PlannedLayer L;
    const DeviceOp op = kind.device(m.layer, in, config_);
    L.kind = op.kind;
    L.groups = op.groups;
    L.name = m.path;
    L.leaf = static_cast<int>(found->second);
    L.in = in;
    L.out = kind.output(m.layer, in, config_, where);
    L.input = input;
    L.kernel = m.layer.kernel, L.stride = m.layer.stride, L.padding = m.layer.padding;
    if (auto* conv = dynamic_cast<nn::Conv2d*>(&host)) {
      const std::vector<int64_t> want = {L.out.c, in.c, L.kernel, L.kernel};
      SYNCBN_REQUIRE(conv->weight().shape() == want, where, ": weight ",
                     shape_to_string(conv->weight().shape()), " does not match the config's ",
                     shape_to_string(want));
    }
    if (auto* linear = dynamic_cast<nn::Linear*>(&host)) {
      const std::vector<int64_t> want = {L.out.c, in.numel()};
      SYNCBN_REQUIRE(linear->weight().shape() == want, where, ": weight ",
                     shape_to_string(linear->weight().shape()), " does not match the config's ",
                     shape_to_string(want));
    }
    plan_.layers.push_back(L);
    const int node = static_cast<int>(plan_.layers.size() - 1);
    if (leaf_nodes_.size() <= found->second) leaf_nodes_.resize(found->second + 1, SIZE_MAX);
    if (leaf_nodes_[found->second] == SIZE_MAX)
      leaf_nodes_[found->second] = static_cast<size_t>(node);
    return node;
  }

  const Config& config_;
  Sequential& model_;
  DevicePlan& plan_;
  std::map<std::string, size_t> leaf_of_;
  std::vector<size_t> leaf_nodes_;
};

}  // namespace

DevicePlan plan_device_model(const Config& config, const data::DatasetInfo& info, Sequential& model,
                             int64_t bucket_bytes) {
  DevicePlan plan;
  const ModuleSpec spec = model_spec(config, info);
  Planner planner(config, model, plan);
  planner.walk(spec, kModelInput);
  for (size_t i = 0; i < model.size(); ++i) {
    SYNCBN_REQUIRE(i < planner.leaves_seen() && planner.node_of_leaf(i) != SIZE_MAX,
                   "model layer '", model.layer_name(i), "' (", model.layer(i).kind(),
                   ") is not part of the configured model");
  }
  for (PlannedLayer& L : plan.layers) {
    if (L.input != kModelInput) ++plan.layers[static_cast<size_t>(L.input)].consumers;
    if (L.kind == DeviceLayerKind::kAdd && L.shortcut != kModelInput)
      ++plan.layers[static_cast<size_t>(L.shortcut)].consumers;
  }

  const std::vector<nn::ParamRef> host = model.parameters();
  const std::vector<size_t> owner = model.parameter_layers();
  for (size_t k = 0; k < host.size(); ++k) {
    PlannedParam p;
    p.name = host[k].name;
    p.layer = planner.node_of_leaf(owner[k]);
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

#include "train/model.h"

#include <utility>

#include "core/error.h"
#include "data/dataset.h"
#include "nn/layers.h"
#include "train/layer_kinds.h"

namespace syncbn::train {

// ---------------------------------------------------------------------------------------------
// The model as the trainer holds it.

Sequential::Sequential() : root_(std::make_unique<nn::Sequential>()) {}

Sequential::Sequential(std::unique_ptr<nn::Container> root) : root_(std::move(root)) {
  SYNCBN_CHECK(root_ != nullptr);
  index();
}

void Sequential::add(std::unique_ptr<nn::Layer> layer) {
  root_->add(std::to_string(root_->children().size()), std::move(layer));
  index();
}

void Sequential::index() {
  leaves_.clear();
  names_.clear();
  leaf_index_.clear();
  auto visit = [&](auto&& self, nn::Container& node, const std::string& prefix) -> void {
    for (const nn::Container::Child& c : node.children()) {
      const std::string path = prefix.empty() ? c.name : prefix + "." + c.name;
      if (auto* container = dynamic_cast<nn::Container*>(c.layer.get())) {
        self(self, *container, path);
      } else {
        leaf_index_[c.layer.get()] = leaves_.size();
        leaves_.push_back(c.layer.get());
        names_.push_back(path);
      }
    }
  };
  visit(visit, *root_, "");
}

Tensor Sequential::forward(const Tensor& x, bool training) { return root_->forward(x, training); }

Tensor Sequential::backward(const Tensor& dy, const std::function<void(size_t)>& on_layer_done) {
  // Set for each backward: the model may have moved since the last one.
  hook_ = [&](nn::Layer& leaf) {
    auto it = leaf_index_.find(&leaf);
    if (it != leaf_index_.end() && on_layer_done) on_layer_done(it->second);
  };
  root_->set_backward_hook(&hook_);
  Tensor dx = root_->backward(dy);
  root_->set_backward_hook(nullptr);
  return dx;
}

std::vector<nn::ParamRef> Sequential::parameters() {
  std::vector<nn::ParamRef> all;
  root_->collect_parameters(all);
  return all;
}

std::vector<nn::BufferRef> Sequential::buffers() {
  std::vector<nn::BufferRef> all;
  root_->collect_buffers(all);
  return all;
}

std::vector<size_t> Sequential::parameter_layers() {
  std::vector<size_t> owners;
  for (size_t i = 0; i < leaves_.size(); ++i) {
    std::vector<nn::ParamRef> mine;
    leaves_[i]->collect_parameters(mine);
    owners.insert(owners.end(), mine.size(), i);
  }
  return owners;
}

// ---------------------------------------------------------------------------------------------
// The configured tree.

const ModuleSpec* ModuleSpec::child(const std::string& child_name) const {
  for (const ModuleSpec& c : children)
    if (c.name == child_name) return &c;
  return nullptr;
}

std::vector<LayerSpec> layer_specs(const Config& config, int64_t num_classes) {
  if (config.model.preset == "list") return config.model.layers;
  if (config.model.preset != "small_cnn") return {};
  using T = LayerType;
  auto conv = [](int64_t out) { return LayerSpec{T::kConv, out, 3, 1, 1}; };
  const LayerSpec norm{T::kNorm}, relu{T::kRelu}, pool{T::kMaxPool, 0, 2, 2, 0};
  const LayerSpec gap{T::kGap}, flatten{T::kFlatten}, linear{T::kLinear, num_classes};
  return {conv(32), norm, relu, conv(32), norm,      relu, pool, conv(64), norm,    relu,
          conv(64), norm, relu, pool,     conv(128), norm, relu, gap,      flatten, linear};
}

namespace {

using Kind = ModuleSpec::Kind;

std::string join_path(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "." + name;
}

ModuleSpec container(Kind kind, const std::string& parent, std::string name, std::string pyclass,
                     const SampleShape& in) {
  ModuleSpec m;
  m.kind = kind;
  m.path = join_path(parent, name);
  m.name = std::move(name);
  m.pyclass = std::move(pyclass);
  m.in = m.out = in;
  return m;
}

const ModuleSpec& add_leaf_at(const Config& config, ModuleSpec& parent, std::string name,
                              const LeafSpec& spec, const std::string& where) {
  ModuleSpec m;
  m.kind = Kind::kLayer;
  m.path = join_path(parent.path, name);
  m.name = std::move(name);
  m.layer = spec;
  m.in = parent.out;
  const std::string at =
      where.empty() ? str_cat("model layer '", m.path, "' (", to_string(spec.type), ")") : where;
  m.out = layer_kind(spec.type).output(spec, m.in, config, at);
  parent.out = m.out;
  parent.children.push_back(std::move(m));
  return parent.children.back();
}

void add_child(ModuleSpec& parent, ModuleSpec child) {
  parent.out = child.out;
  parent.children.push_back(std::move(child));
}

void require_classes(const SampleShape& out, const data::DatasetInfo& info) {
  SYNCBN_REQUIRE(out.h == 1 && out.w == 1 && out.c == info.num_classes, "the model must end with ",
                 info.num_classes, " outputs (one per class of ", info.name, "), got ", out.c, "x",
                 out.h, "x", out.w);
}

// small_cnn and the list form: children "0", "1", ...
ModuleSpec chain_spec(const Config& config, const data::DatasetInfo& info) {
  const std::vector<LayerSpec> specs = layer_specs(config, info.num_classes);
  ModuleSpec root =
      container(Kind::kSequential, "", "", "Sequential", {info.channels, info.height, info.width});
  bool flat = false;
  for (size_t i = 0; i < specs.size(); ++i) {
    const LayerSpec& s = specs[i];
    const std::string where = str_cat("model layer ", i, " (", to_string(s.type), ")");
    SYNCBN_REQUIRE(!flat || s.type == LayerType::kLinear || s.type == LayerType::kRelu ||
                       s.type == LayerType::kNorm,
                   where, " needs an image input (C, H, W), but the input here is flat (",
                   root.out.numel(), ")");
    SYNCBN_REQUIRE(flat || s.type != LayerType::kLinear, where,
                   " needs a flat input; add a flatten layer before it");
    LeafSpec leaf{s.type, s.out, s.kernel, s.stride, s.padding, true};
    if (s.type == LayerType::kConv) {
      // The small_cnn rule: a conv followed by a norm (other than none) has no bias.
      leaf.bias = !(i + 1 < specs.size() && specs[i + 1].type == LayerType::kNorm &&
                    config.model.norm != Norm::kNone);
    }
    add_leaf_at(config, root, std::to_string(i), leaf, where);
    flat = flat || s.type == LayerType::kFlatten || s.type == LayerType::kLinear;
  }
  SYNCBN_REQUIRE(flat, "the model must end with a flat output of ", info.num_classes,
                 " values (one per class); add flatten and linear layers");
  require_classes(root.out, info);
  return root;
}

struct ResNetLayout {
  Kind block;
  std::vector<int64_t> blocks;  // per stage
  std::vector<int64_t> planes;  // per stage
  bool cifar;                   // He et al.'s CIFAR network (3x3 stem of 16 channels)
};

ResNetLayout resnet_layout(const std::string& preset) {
  auto cifar = [](int64_t n) {
    return ResNetLayout{Kind::kBasicBlock, {n, n, n}, {16, 32, 64}, true};
  };
  if (preset == "resnet20") return cifar(3);
  if (preset == "resnet32") return cifar(5);
  if (preset == "resnet56") return cifar(9);
  if (preset == "resnet110") return cifar(18);
  const std::vector<int64_t> planes = {64, 128, 256, 512};
  if (preset == "resnet18") return {Kind::kBasicBlock, {2, 2, 2, 2}, planes, false};
  if (preset == "resnet34") return {Kind::kBasicBlock, {3, 4, 6, 3}, planes, false};
  SYNCBN_CHECK(preset == "resnet50");
  return {Kind::kBottleneck, {3, 4, 6, 3}, planes, false};
}

}  // namespace

void add_leaf(const Config& config, ModuleSpec& parent, std::string name, const LeafSpec& spec) {
  add_leaf_at(config, parent, std::move(name), spec, "");
}

ModuleSpec block_spec(const Config& config, Kind kind, const std::string& parent, std::string name,
                      const SampleShape& in, int64_t planes, int64_t stride) {
  const bool bias = config.model.norm == Norm::kNone;
  auto conv = [&](int64_t out, int64_t k, int64_t s) {
    return LeafSpec{LayerType::kConv, out, k, s, k / 2, bias};
  };
  const LeafSpec norm{LayerType::kNorm}, relu{LayerType::kRelu};
  ModuleSpec b = container(kind, parent, std::move(name),
                           kind == Kind::kBasicBlock ? "BasicBlock" : "Bottleneck", in);
  int64_t out_c = planes;
  if (kind == Kind::kBasicBlock) {
    add_leaf(config, b, "conv1", conv(planes, 3, stride));
    add_leaf(config, b, "bn1", norm);
    add_leaf(config, b, "relu", relu);
    add_leaf(config, b, "conv2", conv(planes, 3, 1));
    add_leaf(config, b, "bn2", norm);
  } else {
    out_c = planes * 4;
    add_leaf(config, b, "conv1", conv(planes, 1, 1));
    add_leaf(config, b, "bn1", norm);
    add_leaf(config, b, "conv2", conv(planes, 3, stride));
    add_leaf(config, b, "bn2", norm);
    add_leaf(config, b, "conv3", conv(out_c, 1, 1));
    add_leaf(config, b, "bn3", norm);
    add_leaf(config, b, "relu", relu);
  }
  const SampleShape main_out = b.out;
  if (stride != 1 || in.c != out_c) {
    ModuleSpec d = container(Kind::kSequential, b.path, "downsample", "Sequential", in);
    add_leaf(config, d, "0", conv(out_c, 1, stride));
    add_leaf(config, d, "1", norm);
    SYNCBN_CHECK(d.out == main_out);
    b.children.push_back(std::move(d));
  }
  b.out = main_out;
  return b;
}

namespace {

ModuleSpec resnet_spec(const Config& config, const data::DatasetInfo& info) {
  const ResNetLayout layout = resnet_layout(config.model.preset);
  const bool bias = config.model.norm == Norm::kNone;
  ModuleSpec root =
      container(Kind::kSequential, "", "", "ResNet", {info.channels, info.height, info.width});
  const bool small_stem = layout.cifar || config.model.stem == Stem::kCifar;
  const int64_t stem_c = layout.planes[0];
  if (small_stem) {
    add_leaf(config, root, "conv1", {LayerType::kConv, stem_c, 3, 1, 1, bias});
  } else {
    add_leaf(config, root, "conv1", {LayerType::kConv, stem_c, 7, 2, 3, bias});
  }
  add_leaf(config, root, "bn1", {LayerType::kNorm});
  add_leaf(config, root, "relu", {LayerType::kRelu});
  if (!small_stem) add_leaf(config, root, "maxpool", {LayerType::kMaxPool, 0, 3, 2, 1});
  for (size_t stage = 0; stage < layout.blocks.size(); ++stage) {
    ModuleSpec layer = container(Kind::kSequential, "", "layer" + std::to_string(stage + 1),
                                 "Sequential", root.out);
    for (int64_t i = 0; i < layout.blocks[stage]; ++i) {
      const int64_t stride = stage > 0 && i == 0 ? 2 : 1;
      add_child(layer, block_spec(config, layout.block, layer.path, std::to_string(i), layer.out,
                                  layout.planes[stage], stride));
    }
    add_child(root, std::move(layer));
  }
  add_leaf(config, root, "avgpool", {LayerType::kGap});
  add_leaf(config, root, "flatten", {LayerType::kFlatten});
  add_leaf(config, root, "fc", {LayerType::kLinear, info.num_classes});
  require_classes(root.out, info);
  return root;
}

// ---------------------------------------------------------------------------------------------
// CPU modules from the tree.

std::unique_ptr<nn::Layer> build_node(const ModuleSpec& m, const Config& config,
                                      comm::Communicator* bn_group, Rng& rng) {
  if (m.kind == Kind::kLayer)
    return layer_kind(m.layer.type).build(m.layer, m.in, {config, bn_group, rng, m.path});
  std::unique_ptr<nn::Container> node;
  nn::ResidualBlock* block = nullptr;
  if (m.kind == Kind::kSequential) {
    node = std::make_unique<nn::Sequential>(m.pyclass);
  } else {
    auto b = std::make_unique<nn::ResidualBlock>(m.kind == Kind::kBasicBlock
                                                     ? nn::ResidualBlock::Type::kBasic
                                                     : nn::ResidualBlock::Type::kBottleneck);
    block = b.get();
    node = std::move(b);
  }
  for (const ModuleSpec& c : m.children) node->add(c.name, build_node(c, config, bn_group, rng));
  if (block != nullptr) block->finish();
  return node;
}

// ---------------------------------------------------------------------------------------------
// PyTorch code.

constexpr const char* kBasicBlockCode = R"(class BasicBlock(torch.nn.Module):
    """torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, conv1, bn1, conv2, bn2, downsample=None):
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.relu = torch.nn.ReLU()
        self.conv2 = conv2
        self.bn2 = bn2
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


)";

constexpr const char* kBottleneckCode = R"(class Bottleneck(torch.nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv), expansion 4."""

    def __init__(self, conv1, bn1, conv2, bn2, conv3, bn3, downsample=None):
        super().__init__()
        self.conv1 = conv1
        self.bn1 = bn1
        self.conv2 = conv2
        self.bn2 = bn2
        self.conv3 = conv3
        self.bn3 = bn3
        self.relu = torch.nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


)";

bool uses(const ModuleSpec& m, Kind kind) {
  if (m.kind == kind) return true;
  for (const ModuleSpec& c : m.children)
    if (uses(c, kind)) return true;
  return false;
}

std::string torch_expr(const ModuleSpec& m, const Config& config, int indent) {
  if (m.kind == Kind::kLayer) return layer_kind(m.layer.type).torch(m.layer, m.in, config);
  const std::string pad(static_cast<size_t>(indent + 4), ' ');
  std::string code = (m.kind == Kind::kSequential ? "torch.nn.Sequential" : m.pyclass) + "(\n";
  for (const ModuleSpec& c : m.children) {
    if (m.kind != Kind::kSequential && c.name == "relu") continue;  // the block makes its own
    code += pad;
    if (m.kind != Kind::kSequential) code += c.name + "=";
    code += torch_expr(c, config, indent + 4) + ",\n";
  }
  return code + std::string(static_cast<size_t>(indent), ' ') + ")";
}

}  // namespace

ModuleSpec model_spec(const Config& config, const data::DatasetInfo& info) {
  SYNCBN_REQUIRE(info.channels >= 1 && info.height >= 1 && info.width >= 1 && info.num_classes >= 1,
                 "dataset '", info.name, "' has samples of ", info.channels, "x", info.height, "x",
                 info.width, " and ", info.num_classes, " classes; expected positive sizes");
  if (config.model.preset == "small_cnn" || config.model.preset == "list")
    return chain_spec(config, info);
  return resnet_spec(config, info);
}

Sequential build_model(const Config& config, const data::DatasetInfo& info,
                       comm::Communicator* bn_group) {
  return build_model(model_spec(config, info), config, bn_group);
}

Sequential build_model(const ModuleSpec& spec, const Config& config, comm::Communicator* bn_group) {
  SYNCBN_CHECK(spec.kind == Kind::kSequential);
  Rng rng(config.seed, /*stream=*/0x6d6f64656cull);  // "model"
  auto root = std::make_unique<nn::Sequential>(spec.pyclass);
  for (const ModuleSpec& c : spec.children) root->add(c.name, build_node(c, config, bn_group, rng));
  return Sequential(std::move(root));
}

std::string torch_module_code(const Config& config, const data::DatasetInfo& info) {
  return torch_module_code(
      model_spec(config, info), config,
      str_cat(config.model.preset, " (model.norm: ", to_string(config.model.norm), ") for ",
              info.channels, "x", info.height, "x", info.width, " inputs and ", info.num_classes,
              " classes"));
}

std::string torch_module_code(const ModuleSpec& spec, const Config& config,
                              const std::string& description) {
  std::string code = "import torch\n\n\n";
  if (uses(spec, Kind::kBasicBlock)) code += kBasicBlockCode;
  if (uses(spec, Kind::kBottleneck)) code += kBottleneckCode;
  code += "class SyncbnModel(torch.nn.Module):\n";
  code += "    \"\"\"syncbn's " + description + ".\"\"\"\n\n";
  code += "    def __init__(self):\n        super().__init__()\n";
  for (const ModuleSpec& c : spec.children)
    code += "        self.add_module(\"" + c.name + "\", " + torch_expr(c, config, 8) + ")\n";
  code +=
      "\n    def forward(self, x):\n        for module in self.children():\n"
      "            x = module(x)\n        return x\n\n\nmodel = SyncbnModel()\n";
  return code;
}

std::string torch_sequential_code(const Config& config) {
  return torch_module_code(config, data::dataset_info(data::parse_format(config.data.format)));
}

}  // namespace syncbn::train

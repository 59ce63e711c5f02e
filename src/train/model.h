// The model: a tree of modules (nn/module.h) with PyTorch's state-dict names, built from the
// config for a dataset's sample shape and classes.
//
//   small_cnn, list     a chain whose children are named "0", "1", ... (torch.nn.Sequential)
//   resnet20/32/56/110  He et al. 2016 §4.2: conv1 3x3/1 16, bn1, relu, layer1..3 of n
//                       BasicBlocks (16, 32, 64 channels; the first block of layer2 and layer3
//                       has stride 2 and a projection shortcut), avgpool, flatten, fc;
//                       n = 3, 5, 9, 18
//   resnet18/34/50      torchvision's ResNet: conv1 7x7/2, bn1, relu, maxpool 3x3/2, layer1..4
//                       (BasicBlock [2,2,2,2], [3,4,6,3]; Bottleneck [3,4,6,3] with expansion 4),
//                       avgpool, flatten, fc; model.stem: cifar makes conv1 3x3/1 and drops maxpool
//
// Names follow torchvision ("layer2.0.downsample.1.running_var"); flatten has no state, so a
// torchvision state dict has exactly our names. model.norm makes every norm of the network,
// downsample's included; a conv that feeds a norm has no bias (with norm none it has one).
//
// Each layer kind is registered once (train/layer_kinds.h): its output shape, its CPU layer, its
// PyTorch constructor and how the CUDA backend runs it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset_info.h"
#include "nn/layer.h"
#include "nn/module.h"
#include "train/config.h"

namespace syncbn::train {

// Per-sample activation shape: (C, H, W), or (F, 1, 1) after flatten.
struct SampleShape {
  int64_t c = 0, h = 1, w = 1;
  int64_t numel() const { return c * h * w; }
  bool operator==(const SampleShape&) const = default;
};

// One leaf of the model tree.
struct LeafSpec {
  LayerType type = LayerType::kRelu;
  int64_t out = 0;  // conv: output channels; linear: output features
  int64_t kernel = 1, stride = 1, padding = 0;
  bool bias = true;  // conv, linear
};

// A node of the model tree, with the shapes resolved for the dataset.
struct ModuleSpec {
  enum class Kind { kLayer, kSequential, kBasicBlock, kBottleneck };
  Kind kind = Kind::kLayer;
  std::string name;     // in its parent ("conv1", "0", "downsample"); "" for the root
  std::string path;     // dotted from the root ("layer2.0.conv1"); "" for the root
  std::string pyclass;  // kSequential: the PyTorch class ("Sequential"; the root: "ResNet", ...)
  LeafSpec layer;       // kLayer
  SampleShape in, out;
  std::vector<ModuleSpec> children;  // registration order

  const ModuleSpec* child(const std::string& child_name) const;
};

// The configured tree for `info`. Throws syncbn::Error naming the layer for a model that does not
// fit the input (too small, a linear layer on an image, not one output per class, gn_groups not
// dividing a norm's channels).
ModuleSpec model_spec(const Config& config, const data::DatasetInfo& info);

// torchvision's BasicBlock(in.c, planes, stride) or Bottleneck (expansion 4, stride on the 3x3
// conv), named `name` under `parent`; downsample = conv1x1(stride) + norm when the shape changes.
ModuleSpec block_spec(const Config& config, ModuleSpec::Kind kind, const std::string& parent,
                      std::string name, const SampleShape& in, int64_t planes, int64_t stride);
// Appends a leaf to `parent` (kSequential), fed with parent.out, which becomes the leaf's output.
void add_leaf(const Config& config, ModuleSpec& parent, std::string name, const LeafSpec& spec);

// The model as the trainer holds it: the root module and its leaves in state-dict order.
class Sequential {
 public:
  Sequential();  // an empty chain
  explicit Sequential(std::unique_ptr<nn::Container> root);
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  // Appends a child to the root, named by its index (a chain, as torch.nn.Sequential).
  void add(std::unique_ptr<nn::Layer> layer);

  nn::Container& root() { return *root_; }
  // The leaves (layers that are no container), in state-dict order, and their dotted paths.
  size_t size() const { return leaves_.size(); }
  nn::Layer& layer(size_t i) { return *leaves_.at(i); }
  const std::string& layer_name(size_t i) const { return names_.at(i); }

  Tensor forward(const Tensor& x, bool training);
  // After each leaf's backward, on_layer_done(leaf index) is called (the gradient reducer starts
  // buckets whose gradients are final).
  Tensor backward(const Tensor& dy, const std::function<void(size_t)>& on_layer_done = {});

  // Parameters and buffers under their dotted names, in state-dict order.
  std::vector<nn::ParamRef> parameters();
  std::vector<nn::BufferRef> buffers();
  // For each parameter (in parameters() order), the index of its leaf.
  std::vector<size_t> parameter_layers();

 private:
  void index();

  std::unique_ptr<nn::Container> root_;
  std::vector<nn::Layer*> leaves_;
  std::vector<std::string> names_;
  std::unordered_map<const nn::Layer*, size_t> leaf_index_;
  nn::BackwardHook hook_;
};

// The configured layers of the chain presets: the list form, or small_cnn spelled out as one
// (ending in num_classes outputs). Empty for the residual presets.
std::vector<LayerSpec> layer_specs(const Config& config, int64_t num_classes);

// Builds the configured model for the samples and classes of `info`. bn_group is the SyncBN
// group (used when model.norm is syncbn; not owned). Initial weights come from Rng(seed):
// identical on every rank. Throws as model_spec().
Sequential build_model(const Config& config, const data::DatasetInfo& info,
                       comm::Communicator* bn_group);
// The model of a tree made by hand (tests of single blocks); the root must be kSequential.
Sequential build_model(const ModuleSpec& spec, const Config& config, comm::Communicator* bn_group);

// A self-contained Python program (import torch, the block classes it uses, the model class)
// that ends with `model = SyncbnModel()`: a torch.nn.Module whose state_dict() has exactly the
// names and shapes of ours (SyncBN as BatchNorm2d), for interop tests and the README.
std::string torch_module_code(const Config& config, const data::DatasetInfo& info);
std::string torch_module_code(const ModuleSpec& spec, const Config& config,
                              const std::string& description);
// torch_module_code for the dataset of config.data.format.
std::string torch_sequential_code(const Config& config);

}  // namespace syncbn::train

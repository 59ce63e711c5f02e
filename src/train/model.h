// The model: a sequence of layers with the state-dict names of a torch.nn.Sequential
// ("0.weight", "1.running_mean", ...), built from the config (preset small_cnn or the list form).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset_info.h"
#include "nn/layer.h"
#include "train/config.h"

namespace syncbn::train {

class Sequential {
 public:
  void add(std::unique_ptr<nn::Layer> layer) { layers_.push_back(std::move(layer)); }
  size_t size() const { return layers_.size(); }
  nn::Layer& layer(size_t i) { return *layers_.at(i); }

  Tensor forward(const Tensor& x, bool training);
  // Backward through every layer in reverse; after layer i's backward, on_layer_done(i) is called
  // (the gradient reducer starts buckets whose gradients are final).
  Tensor backward(const Tensor& dy, const std::function<void(size_t)>& on_layer_done = {});

  // Parameters and buffers named "<index>.<name>", in registration order.
  std::vector<nn::ParamRef> parameters();
  std::vector<nn::BufferRef> buffers();
  // For each parameter (in parameters() order), the index of its layer.
  std::vector<size_t> parameter_layers();

 private:
  std::vector<std::unique_ptr<nn::Layer>> layers_;
};

// The configured layers: the list form, or the small_cnn preset spelled out as one (ending in
// num_classes outputs).
std::vector<LayerSpec> layer_specs(const Config& config, int64_t num_classes);

// Builds the configured model for the samples and classes of `info`. bn_group is the SyncBN
// group (used when model.norm is syncbn; not owned). Initial weights come from Rng(seed):
// identical on every rank. Throws syncbn::Error naming the layer when the model does not fit the
// input (too small, or not ending in one output per class).
Sequential build_model(const Config& config, const data::DatasetInfo& info,
                       comm::Communicator* bn_group);

// A PyTorch expression that builds the same model for `info` (for interop tests and the README).
std::string torch_module_code(const Config& config, const data::DatasetInfo& info);
// torch_module_code for the dataset of config.data.format.
std::string torch_sequential_code(const Config& config);

}  // namespace syncbn::train

#include "train/model.h"

#include "core/error.h"
#include "nn/layers.h"

namespace syncbn::train {

Tensor Sequential::forward(const Tensor& x, bool training) {
  Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h, training);
  return h;
}

Tensor Sequential::backward(const Tensor& dy, const std::function<void(size_t)>& on_layer_done) {
  Tensor g = dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    g = layers_[i]->backward(g);
    if (on_layer_done) on_layer_done(i);
  }
  return g;
}

std::vector<nn::ParamRef> Sequential::parameters() {
  std::vector<nn::ParamRef> all;
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<nn::ParamRef> mine;
    layers_[i]->collect_parameters(mine);
    for (nn::ParamRef& p : mine) {
      p.name = std::to_string(i) + "." + p.name;
      all.push_back(p);
    }
  }
  return all;
}

std::vector<nn::BufferRef> Sequential::buffers() {
  std::vector<nn::BufferRef> all;
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<nn::BufferRef> mine;
    layers_[i]->collect_buffers(mine);
    for (nn::BufferRef& b : mine) {
      b.name = std::to_string(i) + "." + b.name;
      all.push_back(b);
    }
  }
  return all;
}

std::vector<size_t> Sequential::parameter_layers() {
  std::vector<size_t> owners;
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<nn::ParamRef> mine;
    layers_[i]->collect_parameters(mine);
    owners.insert(owners.end(), mine.size(), i);
  }
  return owners;
}

std::vector<LayerSpec> layer_specs(const Config& config) {
  if (config.model.preset != "small_cnn") return config.model.layers;
  auto conv = [](int64_t out) { return LayerSpec{"conv", out, 3, 1, 1}; };
  const LayerSpec norm{"norm"}, relu{"relu"}, pool{"maxpool", 0, 2, 2, 0};
  return {conv(32),  norm, relu, conv(32), norm,        relu,          pool,
          conv(64),  norm, relu, conv(64), norm,        relu,          pool,
          conv(128), norm, relu, {"gap"},  {"flatten"}, {"linear", 10}};
}

namespace {

// Walks the specs with the activation shape, calling visit(index, spec, shape_in, conv_bias).
// Shapes: {C, H, W} for images, {F} after flatten. Throws for layers that do not fit.
template <typename Visit>
void walk(const Config& config, Visit&& visit) {
  const std::vector<LayerSpec> specs = layer_specs(config);
  std::vector<int64_t> shape = {1, 28, 28};
  for (size_t i = 0; i < specs.size(); ++i) {
    const LayerSpec& s = specs[i];
    const std::string where = "model layer " + std::to_string(i) + " (" + s.type + ")";
    const bool image = shape.size() == 3;
    SYNCBN_REQUIRE(image || s.type == "linear" || s.type == "relu" || s.type == "norm", where,
                   " needs an image input (C, H, W), but the input here is flat ",
                   shape_to_string(shape));
    const bool next_is_norm =
        i + 1 < specs.size() && specs[i + 1].type == "norm" && config.model.norm != "none";
    visit(i, s, shape, !next_is_norm);
    if (s.type == "conv" || s.type == "maxpool") {
      const int64_t pad = s.type == "conv" ? s.padding : 0;
      const int64_t h = (shape[1] + 2 * pad - s.kernel) / s.stride + 1;
      const int64_t w = (shape[2] + 2 * pad - s.kernel) / s.stride + 1;
      SYNCBN_REQUIRE(h >= 1 && w >= 1, where, " with kernel ", s.kernel, " gets an input of ",
                     shape_to_string(shape), " that is too small");
      shape = {s.type == "conv" ? s.out : shape[0], h, w};
    } else if (s.type == "gap") {
      shape = {shape[0], 1, 1};
    } else if (s.type == "flatten") {
      shape = {shape[0] * shape[1] * shape[2]};
    } else if (s.type == "linear") {
      SYNCBN_REQUIRE(!image, where, " needs a flat input; add a flatten layer before it");
      shape = {s.out};
    }
  }
  SYNCBN_REQUIRE(shape.size() == 1 && shape[0] == 10,
                 "the model must end with 10 outputs (one per class), got ",
                 shape_to_string(shape));
}

}  // namespace

Sequential build_model(const Config& config, comm::Communicator* bn_group) {
  Sequential model;
  Rng rng(config.seed, /*stream=*/0x6d6f64656cull);  // "model"
  walk(config, [&](size_t i, const LayerSpec& s, const std::vector<int64_t>& in, bool conv_bias) {
    const int64_t c = in[0];
    if (s.type == "conv") {
      model.add(
          std::make_unique<nn::Conv2d>(c, s.out, s.kernel, s.stride, s.padding, conv_bias, rng));
    } else if (s.type == "linear") {
      model.add(std::make_unique<nn::Linear>(c, s.out, true, rng));
    } else if (s.type == "relu") {
      model.add(std::make_unique<nn::ReLU>());
    } else if (s.type == "maxpool") {
      model.add(std::make_unique<nn::MaxPool2d>(s.kernel, s.stride));
    } else if (s.type == "gap") {
      model.add(std::make_unique<nn::AdaptiveAvgPool2d>(1));
    } else if (s.type == "flatten") {
      model.add(std::make_unique<nn::Flatten>());
    } else if (s.type == "norm") {
      const std::string& norm = config.model.norm;
      if (norm == "syncbn") {
        SYNCBN_CHECK(bn_group != nullptr);
        nn::SyncBatchNormOptions options;
        options.num_features = c;
        model.add(std::make_unique<nn::SyncBatchNormLayer>(options, bn_group, std::to_string(i)));
      } else if (norm == "bn") {
        model.add(std::make_unique<nn::BatchNorm2d>(c));
      } else if (norm == "gn") {
        SYNCBN_REQUIRE(c % config.model.gn_groups == 0, "config key 'model.gn_groups' (",
                       config.model.gn_groups,
                       ") must divide the channels of every norm layer; layer ", i, " has ", c);
        model.add(std::make_unique<nn::GroupNorm>(config.model.gn_groups, c));
      } else if (norm == "ln") {
        model.add(std::make_unique<nn::GroupNorm>(1, c));
      } else if (norm == "in") {
        model.add(std::make_unique<nn::InstanceNorm2d>(c, /*affine=*/true));
      } else {
        model.add(std::make_unique<nn::Identity>());
      }
    }
  });
  return model;
}

std::string torch_sequential_code(const Config& config) {
  std::string code = "torch.nn.Sequential(";
  walk(config, [&](size_t i, const LayerSpec& s, const std::vector<int64_t>& in, bool conv_bias) {
    const std::string c = std::to_string(in[0]);
    std::string layer;
    if (s.type == "conv") {
      layer = "torch.nn.Conv2d(" + c + ", " + std::to_string(s.out) + ", " +
              std::to_string(s.kernel) + ", stride=" + std::to_string(s.stride) +
              ", padding=" + std::to_string(s.padding) +
              ", bias=" + (conv_bias ? "True" : "False") + ")";
    } else if (s.type == "linear") {
      layer = "torch.nn.Linear(" + c + ", " + std::to_string(s.out) + ")";
    } else if (s.type == "relu") {
      layer = "torch.nn.ReLU()";
    } else if (s.type == "maxpool") {
      layer =
          "torch.nn.MaxPool2d(" + std::to_string(s.kernel) + ", " + std::to_string(s.stride) + ")";
    } else if (s.type == "gap") {
      layer = "torch.nn.AdaptiveAvgPool2d(1)";
    } else if (s.type == "flatten") {
      layer = "torch.nn.Flatten()";
    } else {
      const std::string& norm = config.model.norm;
      if (norm == "syncbn" || norm == "bn") layer = "torch.nn.BatchNorm2d(" + c + ")";
      if (norm == "gn")
        layer = "torch.nn.GroupNorm(" + std::to_string(config.model.gn_groups) + ", " + c + ")";
      if (norm == "ln") layer = "torch.nn.GroupNorm(1, " + c + ")";
      if (norm == "in") layer = "torch.nn.InstanceNorm2d(" + c + ", affine=True)";
      if (norm == "none") layer = "torch.nn.Identity()";
    }
    code += (i ? ", " : "") + layer;
  });
  return code + ")";
}

}  // namespace syncbn::train

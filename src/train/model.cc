#include "train/model.h"

#include "core/error.h"
#include "data/dataset.h"
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

std::vector<LayerSpec> layer_specs(const Config& config, int64_t num_classes) {
  if (config.model.preset != "small_cnn") return config.model.layers;
  using T = LayerType;
  auto conv = [](int64_t out) { return LayerSpec{T::kConv, out, 3, 1, 1}; };
  const LayerSpec norm{T::kNorm}, relu{T::kRelu}, pool{T::kMaxPool, 0, 2, 2, 0};
  const LayerSpec gap{T::kGap}, flatten{T::kFlatten}, linear{T::kLinear, num_classes};
  return {conv(32), norm, relu, conv(32), norm,      relu, pool, conv(64), norm,    relu,
          conv(64), norm, relu, pool,     conv(128), norm, relu, gap,      flatten, linear};
}

namespace {

// Walks the specs with the activation shape, calling visit(index, spec, shape_in, conv_bias).
// Shapes: {C, H, W} for images, {F} after flatten. Throws for layers that do not fit.
template <typename Visit>
void walk(const Config& config, const data::DatasetInfo& info, Visit&& visit) {
  SYNCBN_REQUIRE(info.channels >= 1 && info.height >= 1 && info.width >= 1 && info.num_classes >= 1,
                 "dataset '", info.name, "' has samples of ", info.channels, "x", info.height, "x",
                 info.width, " and ", info.num_classes, " classes; expected positive sizes");
  const std::vector<LayerSpec> specs = layer_specs(config, info.num_classes);
  std::vector<int64_t> shape = {info.channels, info.height, info.width};
  for (size_t i = 0; i < specs.size(); ++i) {
    const LayerSpec& s = specs[i];
    const std::string where = str_cat("model layer ", i, " (", to_string(s.type), ")");
    const bool image = shape.size() == 3;
    SYNCBN_REQUIRE(image || s.type == LayerType::kLinear || s.type == LayerType::kRelu ||
                       s.type == LayerType::kNorm,
                   where, " needs an image input (C, H, W), but the input here is flat ",
                   shape_to_string(shape));
    const bool next_is_norm = i + 1 < specs.size() && specs[i + 1].type == LayerType::kNorm &&
                              config.model.norm != Norm::kNone;
    visit(i, s, shape, !next_is_norm);
    const bool conv = s.type == LayerType::kConv;
    if (conv || s.type == LayerType::kMaxPool) {
      const int64_t pad = conv ? s.padding : 0;
      const int64_t h = (shape[1] + 2 * pad - s.kernel) / s.stride + 1;
      const int64_t w = (shape[2] + 2 * pad - s.kernel) / s.stride + 1;
      SYNCBN_REQUIRE(h >= 1 && w >= 1, where, " with kernel ", s.kernel, " gets an input of ",
                     shape_to_string(shape), " that is too small");
      shape = {conv ? s.out : shape[0], h, w};
    } else if (s.type == LayerType::kGap) {
      shape = {shape[0], 1, 1};
    } else if (s.type == LayerType::kFlatten) {
      shape = {shape[0] * shape[1] * shape[2]};
    } else if (s.type == LayerType::kLinear) {
      SYNCBN_REQUIRE(!image, where, " needs a flat input; add a flatten layer before it");
      shape = {s.out};
    }
  }
  SYNCBN_REQUIRE(shape.size() == 1 && shape[0] == info.num_classes, "the model must end with ",
                 info.num_classes, " outputs (one per class of ", info.name, "), got ",
                 shape_to_string(shape));
}

}  // namespace

Sequential build_model(const Config& config, const data::DatasetInfo& info,
                       comm::Communicator* bn_group) {
  Sequential model;
  Rng rng(config.seed, /*stream=*/0x6d6f64656cull);  // "model"
  walk(config, info,
       [&](size_t i, const LayerSpec& s, const std::vector<int64_t>& in, bool conv_bias) {
         const int64_t c = in[0];
         if (s.type == LayerType::kConv) {
           model.add(std::make_unique<nn::Conv2d>(c, s.out, s.kernel, s.stride, s.padding,
                                                  conv_bias, rng));
         } else if (s.type == LayerType::kLinear) {
           model.add(std::make_unique<nn::Linear>(c, s.out, true, rng));
         } else if (s.type == LayerType::kRelu) {
           model.add(std::make_unique<nn::ReLU>());
         } else if (s.type == LayerType::kMaxPool) {
           model.add(std::make_unique<nn::MaxPool2d>(s.kernel, s.stride));
         } else if (s.type == LayerType::kGap) {
           model.add(std::make_unique<nn::AdaptiveAvgPool2d>(1));
         } else if (s.type == LayerType::kFlatten) {
           model.add(std::make_unique<nn::Flatten>());
         } else if (s.type == LayerType::kNorm) {
           const Norm norm = config.model.norm;
           if (norm == Norm::kSyncBn) {
             SYNCBN_CHECK(bn_group != nullptr);
             nn::SyncBatchNormOptions options;
             options.num_features = c;
             model.add(
                 std::make_unique<nn::SyncBatchNormLayer>(options, bn_group, std::to_string(i)));
           } else if (norm == Norm::kBn) {
             model.add(std::make_unique<nn::BatchNorm2d>(c));
           } else if (norm == Norm::kGn) {
             SYNCBN_REQUIRE(c % config.model.gn_groups == 0, "config key 'model.gn_groups' (",
                            config.model.gn_groups,
                            ") must divide the channels of every norm layer; layer ", i, " has ",
                            c);
             model.add(std::make_unique<nn::GroupNorm>(config.model.gn_groups, c));
           } else if (norm == Norm::kLn) {
             model.add(std::make_unique<nn::GroupNorm>(1, c));
           } else if (norm == Norm::kIn) {
             model.add(std::make_unique<nn::InstanceNorm2d>(c, /*affine=*/true));
           } else {
             model.add(std::make_unique<nn::Identity>());
           }
         }
       });
  return model;
}

std::string torch_module_code(const Config& config, const data::DatasetInfo& info) {
  std::string code = "torch.nn.Sequential(";
  walk(config, info,
       [&](size_t i, const LayerSpec& s, const std::vector<int64_t>& in, bool conv_bias) {
         const std::string c = std::to_string(in[0]);
         std::string layer;
         if (s.type == LayerType::kConv) {
           layer = "torch.nn.Conv2d(" + c + ", " + std::to_string(s.out) + ", " +
                   std::to_string(s.kernel) + ", stride=" + std::to_string(s.stride) +
                   ", padding=" + std::to_string(s.padding) +
                   ", bias=" + (conv_bias ? "True" : "False") + ")";
         } else if (s.type == LayerType::kLinear) {
           layer = "torch.nn.Linear(" + c + ", " + std::to_string(s.out) + ")";
         } else if (s.type == LayerType::kRelu) {
           layer = "torch.nn.ReLU()";
         } else if (s.type == LayerType::kMaxPool) {
           layer = "torch.nn.MaxPool2d(" + std::to_string(s.kernel) + ", " +
                   std::to_string(s.stride) + ")";
         } else if (s.type == LayerType::kGap) {
           layer = "torch.nn.AdaptiveAvgPool2d(1)";
         } else if (s.type == LayerType::kFlatten) {
           layer = "torch.nn.Flatten()";
         } else {
           const Norm norm = config.model.norm;
           if (norm == Norm::kSyncBn || norm == Norm::kBn)
             layer = "torch.nn.BatchNorm2d(" + c + ")";
           if (norm == Norm::kGn)
             layer =
                 "torch.nn.GroupNorm(" + std::to_string(config.model.gn_groups) + ", " + c + ")";
           if (norm == Norm::kLn) layer = "torch.nn.GroupNorm(1, " + c + ")";
           if (norm == Norm::kIn) layer = "torch.nn.InstanceNorm2d(" + c + ", affine=True)";
           if (norm == Norm::kNone) layer = "torch.nn.Identity()";
         }
         code += (i ? ", " : "") + layer;
       });
  return code + ")";
}

std::string torch_sequential_code(const Config& config) {
  return torch_module_code(config, data::dataset_info(data::parse_format(config.data.format)));
}

}  // namespace syncbn::train

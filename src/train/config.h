// The run configuration: YAML (yaml-cpp), validated strictly. Every error names the key and
// what is allowed; unknown keys are errors. `--set key=value` overrides are applied to the YAML
// tree before validation, so they are checked exactly like the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/lr_schedule.h"

namespace syncbn::train {

// The closed sets of names a config can use, parsed once here; to_string gives the config
// spelling back (for the canonical YAML and messages).
enum class Device { kCpu, kCuda };                       // cpu, cuda
enum class Norm { kSyncBn, kBn, kGn, kLn, kIn, kNone };  // syncbn, bn, gn, ln, in, none
enum class Stem { kImageNet, kCifar };                   // imagenet, cifar
enum class LayerType { kConv, kNorm, kRelu, kMaxPool, kGap, kFlatten, kLinear };
// conv, norm, relu, maxpool, gap, flatten, linear

const char* to_string(Device device);
const char* to_string(Norm norm);
const char* to_string(Stem stem);
const char* to_string(LayerType type);
// `value` as a Norm; throws syncbn::Error naming `key` and the allowed names.
Norm parse_norm(const std::string& value, const std::string& key = "model.norm");

// The model presets: small_cnn, list (model.layers), resnet20/32/56/110 (He et al. 2016, CIFAR
// layout), resnet18/34/50 (torchvision's layout).
bool is_model_preset(const std::string& name);

// One entry of the list form of model.layers.
struct LayerSpec {
  LayerType type = LayerType::kConv;
  int64_t out = 0;  // conv: output channels; linear: output features
  int64_t kernel = 3;
  int64_t stride = 1;
  int64_t padding = 0;
  // Bias follows the small_cnn rule: a conv followed by a norm (other than none) has none;
  // other convs and every linear have one.
};

struct Config {
  uint64_t seed = 0;
  // Where each rank trains: cpu, or cuda (one GPU per rank; train/step_backend.h).
  Device device = Device::kCpu;
  struct Data {
    std::string format =
        "fashion_mnist";  // the files in dir: fashion_mnist, cifar10 (data/dataset.h)
    std::string dir = "/usr/share/datasets/fashion-mnist";
    int64_t train_limit = 0;  // 0 = all
    int64_t test_limit = 0;   // 0 = all (evaluation on the first test_limit test images)
    bool shuffle = true;
    bool augment = false;
  } data;
  struct Model {
    std::string preset = "small_cnn";  // is_model_preset(); "list": the layers below
    Norm norm = Norm::kSyncBn;         // every norm of the network, downsample's included
    Stem stem = Stem::kImageNet;       // resnet18/34/50: cifar = conv1 3x3/1 and no max pool
    int64_t bn_group_size = 0;         // 0 = the whole world
    int64_t gn_groups = 8;
    std::vector<LayerSpec> layers;
  } model;
  struct Train {
    int64_t per_rank_batch = 8;
    int64_t epochs = 0;  // exactly one of epochs / steps is > 0
    int64_t steps = 0;
    double lr = 0.1;
    double momentum = 0.9;
    bool nesterov = false;
    double weight_decay = 5e-4;
    optim::ScheduleKind schedule = optim::ScheduleKind::kCosine;
    int64_t warmup_steps = 0;
    int64_t step_size = 1000;       // schedule: step
    double gamma = 0.1;             // schedule: step
    double min_lr = 0.0;            // schedule: cosine
    int64_t eval_every_epochs = 1;  // 0 = only after the last step
    int64_t log_every = 50;
    int64_t threads = 1;  // OpenMP threads per rank (our kernels and oneDNN's GEMMs)
  } train;
  struct Checkpoint {
    std::string dir;          // "" = no checkpoints (syncbn train --checkpoint-dir sets it)
    int64_t every_steps = 0;  // 0 = only at the end of the run
    int64_t keep_last = 3;
  } checkpoint;
  // What the overrides changed beyond the key they name (train.steps=20 clears the file's
  // train.epochs): one line each, for rank 0's first log lines. Not part of to_yaml or the hash.
  std::vector<std::string> notes;
};

// Parses and validates YAML text with `overrides` ("a.b=value") applied first, in order.
// Mutually exclusive keys (train.epochs / train.steps; model.layers with a model.preset other
// than list): the one set last wins, an override over the file and a later override over an
// earlier one, and the other is cleared with a note in Config::notes. Within the file alone both
// set is still an error. Throws syncbn::Error naming the key.
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    const std::string& source = "config");
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The effective configuration as canonical YAML (every key, fixed order) and its FNV-1a hash:
// what all ranks must agree on.
std::string to_yaml(const Config& config);
uint64_t config_hash(const Config& config);

}  // namespace syncbn::train

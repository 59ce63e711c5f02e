// The run configuration: defaults, overrides, canonical form, and every kind of rejection.
#include "train/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "../common/test_util.h"
#include "core/error.h"
#include "data/dataset.h"
#include "nn/layers.h"
#include "nn/sync_batch_norm.h"
#include "train/model.h"

namespace syncbn::train {
namespace {

const data::DatasetInfo kFashionMnist = data::dataset_info(data::Format::kFashionMnist);

using syncbn::testing::expect_error;

constexpr const char* kMinimal = "train:\n  steps: 10\n";

TEST(Config, DefaultsAndValues) {
  const Config c = parse_config(
      "seed: 5\ndata:\n  train_limit: 100\n  augment: true\nmodel:\n  norm: gn\n  gn_groups: 4\n"
      "train:\n  epochs: 3\n  per_rank_batch: 4\n  schedule: step\n  nesterov: true\n");
  EXPECT_EQ(c.seed, 5u);
  EXPECT_EQ(c.data.train_limit, 100);
  EXPECT_TRUE(c.data.augment);
  EXPECT_TRUE(c.data.shuffle);
  EXPECT_EQ(c.model.norm, Norm::kGn);
  EXPECT_EQ(c.model.gn_groups, 4);
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.train.per_rank_batch, 4);
  EXPECT_EQ(c.train.schedule, optim::ScheduleKind::kStep);
  EXPECT_TRUE(c.train.nesterov);
}

TEST(Config, OverridesApplyBeforeValidation) {
  const Config c = parse_config(kMinimal, {"train.lr=0.25", "model.norm=bn", "data.dir=/tmp/x"});
  EXPECT_DOUBLE_EQ(c.train.lr, 0.25);
  EXPECT_EQ(c.model.norm, Norm::kBn);
  EXPECT_EQ(c.data.dir, "/tmp/x");
  expect_error([] { parse_config(kMinimal, {"train.lr"}); }, "--set expects key=value");
  expect_error([] { parse_config(kMinimal, {"train.bogus=1"}); },
               "unknown config key 'train.bogus'");
}

// A key set on the command line over its mutually exclusive partner from the file (or from an
// earlier --set): the last one wins, the partner is cleared, and a note says so.
TEST(Config, StepsAndEpochsTheLastSetWins) {
  constexpr const char* kEpochs = "train:\n  epochs: 2\n  warmup_steps: 200\n";
  const Config steps = parse_config(kEpochs, {"train.steps=20"});
  EXPECT_EQ(steps.train.steps, 20);
  EXPECT_EQ(steps.train.epochs, 0);
  ASSERT_EQ(steps.notes.size(), 1u);
  EXPECT_EQ(steps.notes[0], "--set train.steps=20 replaces train.epochs=2 (train.epochs cleared)");

  const Config epochs = parse_config("train:\n  steps: 500\n", {"train.epochs=3"});
  EXPECT_EQ(epochs.train.epochs, 3);
  EXPECT_EQ(epochs.train.steps, 0);
  ASSERT_EQ(epochs.notes.size(), 1u);
  EXPECT_NE(epochs.notes[0].find("replaces train.steps=500"), std::string::npos);

  // Both on the command line: the later one wins, whichever it is.
  const Config later_steps = parse_config(kEpochs, {"train.epochs=5", "train.steps=7"});
  EXPECT_EQ(later_steps.train.steps, 7);
  EXPECT_EQ(later_steps.train.epochs, 0);
  const Config later_epochs = parse_config(kEpochs, {"train.steps=7", "train.epochs=5"});
  EXPECT_EQ(later_epochs.train.epochs, 5);
  EXPECT_EQ(later_epochs.train.steps, 0);
  EXPECT_EQ(later_epochs.notes.size(), 2u);

  // Setting the key the file already uses replaces nothing; the canonical YAML's zero is "unset".
  EXPECT_TRUE(parse_config(kEpochs, {"train.epochs=4"}).notes.empty());
  EXPECT_TRUE(parse_config(to_yaml(steps), {"train.steps=9"}).notes.empty());
  EXPECT_EQ(parse_config(to_yaml(steps), {"train.epochs=1"}).train.steps, 0);

  // The same rule for model.layers: a preset other than list clears them.
  const Config preset =
      parse_config(std::string(kMinimal) + "model:\n  preset: list\n  layers:\n    - {type: gap}\n",
                   {"model.preset=small_cnn"});
  EXPECT_EQ(preset.model.preset, "small_cnn");
  EXPECT_TRUE(preset.model.layers.empty());
  ASSERT_EQ(preset.notes.size(), 1u);
  EXPECT_NE(preset.notes[0].find("model.layers cleared"), std::string::npos);
}

TEST(Config, RejectsWithTheKeyAndWhatIsAllowed) {
  expect_error([] { parse_config("train: [1, 2"); }, "not valid YAML");
  expect_error(
      [] { parse_config(std::string(kMinimal) + "optimizer: sgd\n"); },
      "unknown config key 'optimizer'; allowed keys here: checkpoint, data, device, model, "
      "seed, train");
  expect_error(
      [] { parse_config(kMinimal, {"model.norm=batchnorm"}); },
      "config key 'model.norm' must be one of bn, gn, in, ln, none, syncbn, got 'batchnorm'");
  expect_error([] { parse_config(kMinimal, {"train.lr=fast"}); },
               "config key 'train.lr' must be a number, got 'fast'");
  expect_error([] { parse_config(kMinimal, {"train.momentum=1.5"}); },
               "config key 'train.momentum' must be in [0, 1], got 1.5");
  expect_error([] { parse_config(kMinimal, {"train.per_rank_batch=0"}); },
               "config key 'train.per_rank_batch' must be in [1, 65536]");
  expect_error([] { parse_config("train:\n  steps: 10\n  epochs: 2\n"); },
               "set exactly one of train.epochs and train.steps");
  expect_error([] { parse_config("seed: 1\n"); },
               "set exactly one of train.epochs and train.steps");
  expect_error([] { parse_config(kMinimal, {"train.schedule=linear"}); },
               "config key 'train.schedule' must be one of constant, cosine, step");
  expect_error(
      [] {
        parse_config(kMinimal, {"train.nesterov=true", "train.momentum=0"});
      },
      "train.nesterov needs train.momentum > 0");
  expect_error([] { parse_config(kMinimal, {"model.preset=list"}); },
               "'model.layers' must list the layers");
  expect_error([] { load_config("/nonexistent/config.yaml"); },
               "cannot read config file '/nonexistent/config.yaml'");
}

TEST(Config, Device) {
  EXPECT_EQ(parse_config(kMinimal).device, Device::kCpu);
  EXPECT_EQ(parse_config(kMinimal, {"device=cuda"}).device, Device::kCuda);
  EXPECT_EQ(parse_config("device: cuda\n" + std::string(kMinimal), {"model.norm=bn"}).device,
            Device::kCuda);
  expect_error([] { parse_config(kMinimal, {"device=gpu"}); },
               "config key 'device' must be one of cpu, cuda, got 'gpu'");
  expect_error([] { parse_config(kMinimal, {"device=[cuda]"}); },
               "config key 'device' must be a device name");
  for (const char* norm : {"syncbn", "bn", "gn", "ln", "in", "none"}) {
    EXPECT_EQ(parse_config(kMinimal, {"device=cuda", std::string("model.norm=") + norm}).device,
              Device::kCuda);
  }
  const Config cuda = parse_config(kMinimal, {"device=cuda"});
  EXPECT_EQ(parse_config(to_yaml(cuda)).device, Device::kCuda);
  EXPECT_NE(config_hash(cuda), config_hash(parse_config(kMinimal)));
}

TEST(Config, DataFormat) {
  const Config c = parse_config(kMinimal);
  EXPECT_EQ(c.data.format, "fashion_mnist");
  EXPECT_NE(to_yaml(c).find("format: fashion_mnist"), std::string::npos);
  EXPECT_EQ(parse_config(to_yaml(c)).data.format, "fashion_mnist");
  expect_error([] { parse_config(kMinimal, {"data.format=mnist"}); },
               "config key 'data.format' must be one of cifar10, fashion_mnist, got 'mnist'");
  const Config cifar = parse_config(kMinimal, {"data.format=cifar10", "data.dir=/data/cifar"});
  EXPECT_EQ(cifar.data.format, "cifar10");
  EXPECT_EQ(parse_config(to_yaml(cifar)).data.format, "cifar10");
  Config same_dir = c;
  same_dir.data.dir = "/data/cifar";
  EXPECT_NE(config_hash(cifar), config_hash(same_dir));  // the format alone changes the hash
  expect_error([] { parse_config(kMinimal, {"data.format=cifar10"}); },
               "config key 'data.dir' must be set with data.format: cifar10");
}

TEST(Config, CanonicalYamlRoundTripsAndHashesTheEffectiveConfig) {
  const Config a = parse_config(kMinimal, {"train.lr=0.3"});
  const Config b = parse_config(to_yaml(a));
  EXPECT_EQ(to_yaml(a), to_yaml(b));
  EXPECT_EQ(config_hash(a), config_hash(b));
  EXPECT_NE(config_hash(a), config_hash(parse_config(kMinimal, {"train.lr=0.31"})));
}

TEST(Model, ListFormAndShapeErrors) {
  const Config list = parse_config(
      "model:\n  preset: list\n  norm: bn\n  layers:\n"
      "    - {type: conv, out: 8, kernel: 3, padding: 1}\n    - {type: norm}\n"
      "    - {type: relu}\n    - {type: gap}\n    - {type: flatten}\n    - {type: linear, out: "
      "10}\n"
      "train:\n  steps: 1\n");
  const std::string code = torch_module_code(list, kFashionMnist);
  for (const char* line :
       {"import torch\n", "class SyncbnModel(torch.nn.Module):\n",
        "self.add_module(\"0\", torch.nn.Conv2d(1, 8, 3, stride=1, padding=1, bias=False))\n",
        "self.add_module(\"1\", torch.nn.BatchNorm2d(8))\n",
        "self.add_module(\"3\", torch.nn.AdaptiveAvgPool2d(1))\n",
        "self.add_module(\"5\", torch.nn.Linear(8, 10))\n", "\nmodel = SyncbnModel()\n"}) {
    EXPECT_NE(code.find(line), std::string::npos) << line << " is not in\n" << code;
  }
  EXPECT_EQ(code.find("class BasicBlock"), std::string::npos);  // only the classes it uses
  Sequential model = build_model(list, kFashionMnist, nullptr);
  EXPECT_EQ(model.size(), 6u);
  EXPECT_EQ(model.parameters().size(), 5u);  // conv weight, bn weight/bias, linear weight/bias
  const Config bad = parse_config(
      "model:\n  preset: list\n  norm: none\n  layers:\n    - {type: linear, out: 10}\n"
      "train:\n  steps: 1\n");
  expect_error([&] { build_model(bad, kFashionMnist, nullptr); }, "needs a flat input");
  const Config gn = parse_config(kMinimal, {"model.norm=gn", "model.gn_groups=5"});
  expect_error([&] { build_model(gn, kFashionMnist, nullptr); },
               "'model.gn_groups' (5) must divide");
}

TEST(Model, SmallCnnHasPyTorchNames) {
  Sequential model = build_model(parse_config(kMinimal, {"model.norm=bn"}), kFashionMnist, nullptr);
  ASSERT_EQ(model.size(), 20u);
  std::vector<std::string> names;
  for (const nn::ParamRef& p : model.parameters()) names.push_back(p.name);
  EXPECT_EQ(names.front(), "0.weight");  // conv followed by a norm: no bias
  EXPECT_EQ(names[1], "1.weight");
  EXPECT_EQ(names.back(), "19.bias");
  std::vector<std::string> buffers;
  for (const nn::BufferRef& b : model.buffers()) buffers.push_back(b.name);
  EXPECT_EQ(buffers[0], "1.running_mean");
  EXPECT_EQ(buffers[2], "1.num_batches_tracked");
  Sequential plain =
      build_model(parse_config(kMinimal, {"model.norm=none"}), kFashionMnist, nullptr);
  EXPECT_EQ(plain.parameters()[1].name, "0.bias");  // no norm after the conv: it has a bias
}

// torchvision's names and sizes: a torchvision state dict converted to safetensors has exactly
// these (checked against PyTorch itself by tests/torch_ref/model_torch_test.cc).
TEST(Model, ResNetPresetsHaveTorchvisionNamesAndSizes) {
  const data::DatasetInfo cifar{"cifar10", 3, 32, 32, 10};
  auto count = [](Sequential& m) {
    int64_t n = 0;
    for (const nn::ParamRef& p : m.parameters()) n += p.value->numel();
    return n;
  };
  // torchvision's resnet18/34/50 (11689512, 21797672, 25557032 parameters for 1000 classes)
  // with a 10-class fc.
  struct Case {
    const char* preset;
    int64_t params;
  };
  for (const Case& c :
       {Case{"resnet18", 11181642}, Case{"resnet34", 21289802}, Case{"resnet50", 23528522}}) {
    Sequential m = build_model(
        parse_config(kMinimal, {std::string("model.preset=") + c.preset, "model.norm=bn"}), cifar,
        nullptr);
    EXPECT_EQ(count(m), c.params) << c.preset;
  }
  Sequential r50 = build_model(parse_config(kMinimal, {"model.preset=resnet50", "model.norm=bn"}),
                               cifar, nullptr);
  std::vector<std::string> names;
  for (const nn::BufferRef& b : r50.buffers()) names.push_back(b.name);
  for (const char* want : {"bn1.running_mean", "layer1.0.downsample.1.running_var",
                           "layer2.0.downsample.1.num_batches_tracked", "layer4.2.bn3.running_var"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  EXPECT_EQ(r50.parameters().front().name, "conv1.weight");  // feeds a norm: no bias
  EXPECT_EQ(r50.parameters().back().name, "fc.bias");

  // resnet20: 16-32-64 channels, 3 BasicBlocks per stage, projection shortcuts at layer2.0 and
  // layer3.0 only; SyncBN layers named by their path.
  auto world = comm::make_communicator("single");
  auto group = nn::make_bn_group(*world, 0);
  Sequential r20 =
      build_model(parse_config(kMinimal, {"model.preset=resnet20"}), cifar, group.get());
  std::vector<std::string> leaves;
  for (size_t i = 0; i < r20.size(); ++i) leaves.push_back(r20.layer_name(i));
  EXPECT_EQ(leaves.front(), "conv1");
  EXPECT_EQ(leaves.back(), "fc");
  EXPECT_EQ(std::count_if(leaves.begin(), leaves.end(),
                          [](const std::string& n) { return n.ends_with("downsample.0"); }),
            2);
  EXPECT_NE(std::find(leaves.begin(), leaves.end(), "layer3.2.bn2"), leaves.end());
  EXPECT_EQ(r20.layer(0).kind(), "Conv2d");
  auto* bn = dynamic_cast<nn::SyncBatchNormLayer*>(&r20.layer(1));
  ASSERT_NE(bn, nullptr);
  EXPECT_EQ(bn->impl().name(), "bn1");
  EXPECT_EQ(count(r20), 272474);  // conv/bn/fc of He et al.'s 0.27M network, with projections

  // A dataset without a sample shape.
  expect_error(
      [&] {
        build_model(parse_config(kMinimal, {"model.preset=resnet50", "model.norm=bn"}),
                    {"empty", 1, 0, 2, 10}, nullptr);
      },
      "dataset 'empty' has samples of 1x0x2 and 10 classes; expected positive sizes");
  expect_error([] { parse_config(kMinimal, {"model.preset=resnet19"}); },
               "config key 'model.preset' must be one of list, resnet110, resnet18");
  expect_error([] { parse_config(kMinimal, {"model.stem=tiny"}); },
               "config key 'model.stem' must be one of cifar, imagenet, got 'tiny'");
}

}  // namespace
}  // namespace syncbn::train

// The CUDA backend's plan of the model (train/cuda/device_plan.h), on the CPU: the layer list
// agrees with the host model for every preset and norm it runs, the shapes are the host layers'
// own, the parameters tile the flat gradient array, the buckets tile it in backward's order, and a
// layer without a CUDA implementation is refused by name.
#include "train/cuda/device_plan.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/error.h"
#include "data/dataset.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/sync_batch_norm.h"

namespace syncbn::train {
namespace {

const data::DatasetInfo kFashionMnist = data::dataset_info(data::Format::kFashionMnist);

constexpr const char* kSteps = "train:\n  steps: 1\n";
constexpr const char* kList =
    "model:\n  preset: list\n  norm: bn\n  layers:\n"
    "    - {type: conv, out: 6, kernel: 5, stride: 2, padding: 2}\n    - {type: norm}\n"
    "    - {type: relu}\n    - {type: maxpool, kernel: 3, stride: 2}\n"
    "    - {type: conv, out: 7, kernel: 3}\n    - {type: relu}\n    - {type: gap}\n"
    "    - {type: flatten}\n    - {type: linear, out: 12}\n    - {type: relu}\n"
    "    - {type: linear, out: 10}\n"
    "train:\n  steps: 1\n";

// Runs the host model on one sample and checks every planned output shape against the host's.
void expect_shapes_match_host(const DevicePlan& plan, Sequential& model) {
  Tensor x({2, 1, 28, 28});
  for (size_t i = 0; i < model.size(); ++i) {
    x = model.layer(i).forward(x, /*training=*/true);
    const SampleShape& out = plan.layers[i].out;
    std::vector<int64_t> want = {2, out.c, out.h, out.w};
    if (x.dim() == 2) want = {2, out.numel()};
    EXPECT_EQ(x.shape(), want) << "layer " << i << " (" << model.layer(i).kind() << ")";
    if (i + 1 < model.size()) {
      EXPECT_EQ(plan.layers[i + 1].in, out) << i;
    }
  }
}

void expect_flat_tiling(const DevicePlan& plan, Sequential& model) {
  const std::vector<nn::ParamRef> host = model.parameters();
  ASSERT_EQ(plan.params.size(), host.size());
  int64_t offset = 0;
  for (size_t k = 0; k < host.size(); ++k) {
    const PlannedParam& p = plan.params[k];
    EXPECT_EQ(p.name, host[k].name);
    EXPECT_EQ(p.numel, host[k].value->numel());
    EXPECT_EQ(p.offset, offset);
    offset += p.numel;
    const PlannedLayer& L = plan.layers[p.layer];
    EXPECT_EQ(p.is_bias ? L.bias : L.weight, static_cast<int>(k)) << p.name;
  }
  EXPECT_EQ(plan.total_params, offset);
  // Buckets: backward's order (last parameters first), contiguous, covering every element once.
  ASSERT_FALSE(plan.buckets.empty());
  int64_t end = plan.total_params;
  size_t next_last = host.size() - 1;
  for (size_t b = 0; b < plan.buckets.size(); ++b) {
    const PlannedBucket& bucket = plan.buckets[b];
    EXPECT_EQ(bucket.end, end) << b;
    EXPECT_EQ(bucket.last, next_last) << b;
    EXPECT_LE(bucket.first, bucket.last);
    EXPECT_EQ(bucket.begin, plan.params[bucket.first].offset);
    for (size_t k = bucket.first; k <= bucket.last; ++k)
      EXPECT_EQ(plan.params[k].bucket, static_cast<int>(b)) << k;
    end = bucket.begin;
    next_last = bucket.first - 1;
  }
  EXPECT_EQ(end, 0);
}

TEST(DevicePlan, SmallCnnForEveryNormTheCudaBackendRuns) {
  auto world = comm::make_communicator("single");
  auto group = nn::make_bn_group(*world, 1);
  for (const char* norm : {"syncbn", "bn", "gn", "ln", "in", "none"}) {
    const Config config = parse_config(
        kSteps, {"device=cuda", std::string("model.norm=") + norm, "model.gn_groups=4"});
    Sequential model = build_model(config, kFashionMnist, group.get());
    const DevicePlan plan =
        plan_device_model(config, kFashionMnist, model, /*bucket_bytes=*/64 << 10);
    ASSERT_EQ(plan.layers.size(), 20u) << norm;
    EXPECT_EQ(plan.layers[0].kind, DeviceLayerKind::kConv);
    EXPECT_EQ(plan.layers[0].out, (SampleShape{32, 28, 28}));
    EXPECT_EQ(plan.layers[6].kind, DeviceLayerKind::kMaxPool);
    EXPECT_EQ(plan.layers[6].out, (SampleShape{32, 14, 14}));
    const std::string n = norm;
    const DeviceLayerKind norm_kind = n == "none"                  ? DeviceLayerKind::kPassThrough
                                      : n == "syncbn" || n == "bn" ? DeviceLayerKind::kNorm
                                                                   : DeviceLayerKind::kGroupNorm;
    EXPECT_EQ(plan.layers[1].kind, norm_kind) << norm;
    EXPECT_EQ(plan.layers[15].groups, n == "gn" ? 4 : n == "ln" ? 1 : n == "in" ? 128 : 0) << norm;
    EXPECT_EQ(plan.layers[18].out, (SampleShape{128, 1, 1}));  // flatten
    EXPECT_EQ(plan.layers[19].kind, DeviceLayerKind::kLinear);
    EXPECT_EQ(plan.layers[0].bias >= 0, std::string(norm) == "none") << norm;
    EXPECT_GT(plan.buckets.size(), 1u) << norm;  // 64 KiB buckets: several
    expect_shapes_match_host(plan, model);
    expect_flat_tiling(plan, model);
  }
}

TEST(DevicePlan, ListFormWithStridesPaddingAndOneBucket) {
  const Config config = parse_config(kList, {"device=cuda"});
  Sequential model = build_model(config, kFashionMnist, nullptr);
  const DevicePlan plan = plan_device_model(config, kFashionMnist, model);
  EXPECT_EQ(plan.layers[0].out, (SampleShape{6, 14, 14}));
  EXPECT_EQ(plan.layers[3].out, (SampleShape{6, 6, 6}));
  EXPECT_EQ(plan.layers[4].out, (SampleShape{7, 4, 4}));
  EXPECT_EQ(plan.buckets.size(), 1u);  // a few KiB of parameters
  expect_shapes_match_host(plan, model);
  expect_flat_tiling(plan, model);
}

// Runs the plan's graph on the CPU with the host model's own layers (a fresh ReLU for each use,
// the CPU block's add for kAdd): every node's shape is the planned one and the output is the
// host model's, bitwise.
void expect_graph_matches_host(const DevicePlan& plan, Sequential& model,
                               const data::DatasetInfo& info, const std::string& what) {
  Tensor x({2, info.channels, info.height, info.width});
  Rng(3).fill_normal(x.data(), x.numel());
  std::vector<Tensor> out(plan.layers.size());
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const PlannedLayer& L = plan.layers[i];
    const Tensor& in = L.input == kModelInput ? x : out[static_cast<size_t>(L.input)];
    ASSERT_EQ(in.numel(), 2 * L.in.numel()) << what << " node " << i << " " << L.name;
    if (L.kind == DeviceLayerKind::kAdd) {
      out[i] = nn::add_tensors(in, out[static_cast<size_t>(L.shortcut)], L.name);
    } else if (L.kind == DeviceLayerKind::kRelu) {
      nn::ReLU relu;
      out[i] = relu.forward(in, false);
    } else {
      ASSERT_GE(L.leaf, 0) << L.name;
      EXPECT_EQ(model.layer_name(static_cast<size_t>(L.leaf)), L.name);
      out[i] = model.layer(static_cast<size_t>(L.leaf)).forward(in, /*training=*/false);
    }
    ASSERT_EQ(out[i].numel(), 2 * L.out.numel()) << what << " node " << i << " " << L.name;
  }
  const Tensor want = model.forward(x, /*training=*/false);
  ASSERT_EQ(out.back().shape(), want.shape()) << what;
  for (int64_t k = 0; k < want.numel(); ++k)
    ASSERT_EQ(out.back().data()[k], want.data()[k]) << what << " logit " << k;
  // Consumers: every node but the last is read; the branch points are the blocks' inputs.
  std::vector<int> readers(plan.layers.size(), 0);
  for (const PlannedLayer& L : plan.layers) {
    if (L.input != kModelInput) ++readers[static_cast<size_t>(L.input)];
    if (L.kind == DeviceLayerKind::kAdd) ++readers[static_cast<size_t>(L.shortcut)];
  }
  for (size_t i = 0; i < plan.layers.size(); ++i)
    EXPECT_EQ(plan.layers[i].consumers, readers[i]) << what << " " << plan.layers[i].name;
  EXPECT_EQ(plan.layers.back().consumers, 0);
}

TEST(DevicePlan, EveryResNetPresetIsAGraphOfTheHostModel) {
  auto world = comm::make_communicator("single");
  auto group = nn::make_bn_group(*world, 1);
  const data::DatasetInfo cifar{"cifar10", 3, 32, 32, 10};
  struct Case {
    const char* preset;
    int blocks;
    int downsamples;
  };
  for (const Case& c : {Case{"resnet20", 9, 2}, Case{"resnet32", 15, 2}, Case{"resnet56", 27, 2},
                        Case{"resnet110", 54, 2}, Case{"resnet18", 8, 3}, Case{"resnet34", 16, 3},
                        Case{"resnet50", 16, 4}}) {
    for (const char* norm : {"syncbn", "gn"}) {
      const std::string what = std::string(c.preset) + " " + norm;
      const Config config =
          parse_config(kSteps, {"device=cuda", std::string("model.preset=") + c.preset,
                                std::string("model.norm=") + norm, "model.gn_groups=4"});
      Sequential model = build_model(config, cifar, group.get());
      const DevicePlan plan = plan_device_model(config, cifar, model, /*bucket_bytes=*/256 << 10);
      int adds = 0, branch_points = 0, downsample_convs = 0;
      for (const PlannedLayer& L : plan.layers) {
        adds += L.kind == DeviceLayerKind::kAdd;
        branch_points += L.consumers > 1;
        downsample_convs += L.name.ends_with("downsample.0");
        if (L.kind == DeviceLayerKind::kAdd) {
          EXPECT_EQ(plan.layers[static_cast<size_t>(L.input)].out,
                    L.shortcut == kModelInput ? SampleShape{}
                                              : plan.layers[static_cast<size_t>(L.shortcut)].out);
        }
      }
      EXPECT_EQ(adds, c.blocks) << what;
      EXPECT_EQ(branch_points, c.blocks) << what;  // each block's input feeds both branches
      EXPECT_EQ(downsample_convs, c.downsamples) << what;
      expect_graph_matches_host(plan, model, cifar, what);
      expect_flat_tiling(plan, model);
    }
  }
  // The cifar stem of resnet18: no max pool, conv1 3x3/1.
  const Config stem = parse_config(kSteps, {"model.preset=resnet18", "model.stem=cifar"});
  Sequential model = build_model(stem, cifar, group.get());
  const DevicePlan plan = plan_device_model(stem, cifar, model);
  EXPECT_EQ(plan.layers[0].out, (SampleShape{64, 32, 32}));
  for (const PlannedLayer& L : plan.layers) EXPECT_NE(L.kind, DeviceLayerKind::kMaxPool);
}

// A layer the config does not make (every kind build_model makes has a CUDA node): a stand-in
// defined here.
class Softsign final : public nn::Layer {
 public:
  std::string kind() const override { return "Softsign"; }
  Tensor forward(const Tensor& x, bool) override { return x; }
  Tensor backward(const Tensor& dy) override { return dy; }
};

TEST(DevicePlan, RefusesAModelTheConfigDoesNotDescribe) {
  const Config config = parse_config(
      "model:\n  preset: list\n  layers:\n    - {type: relu}\n    - {type: flatten}\n"
      "    - {type: linear, out: 10}\ntrain:\n  steps: 1\n");
  Sequential model;
  model.add(std::make_unique<Softsign>());
  try {
    plan_device_model(config, kFashionMnist, model);
    ADD_FAILURE() << "Softsign was planned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "model layer '0' (Softsign): the config makes a ReLU there, so the model was "
                  "not built from this config"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace syncbn::train

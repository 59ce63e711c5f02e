// Containers (nn/module.h): state-dict names of nested children, the backward hook, the residual
// block's sum and branch-point gradient, and the errors they raise.
#include "nn/module.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "core/error.h"
#include "nn/layers.h"
#include "tensor/tensor.h"

namespace syncbn::nn {
namespace {

using syncbn::testing::expect_error;

// A BasicBlock of `channels` channels with an identity shortcut (downsample: a 1x1 conv + BN).
std::unique_ptr<ResidualBlock> basic_block(int64_t channels, bool downsample, Rng& rng) {
  auto block = std::make_unique<ResidualBlock>(ResidualBlock::Type::kBasic);
  block->add("conv1", std::make_unique<Conv2d>(channels, channels, 3, 1, 1, false, rng));
  block->add("bn1", std::make_unique<BatchNorm2d>(channels));
  block->add("relu", std::make_unique<ReLU>());
  block->add("conv2", std::make_unique<Conv2d>(channels, channels, 3, 1, 1, false, rng));
  block->add("bn2", std::make_unique<BatchNorm2d>(channels));
  if (downsample) {
    auto d = std::make_unique<Sequential>();
    d->add("0", std::make_unique<Conv2d>(channels, channels, 1, 1, 0, false, rng));
    d->add("1", std::make_unique<BatchNorm2d>(channels));
    block->add("downsample", std::move(d));
  }
  block->finish();
  return block;
}

TEST(NnModule, NestedNamesInRegistrationOrder) {
  Rng rng(1);
  Sequential root("ResNet");
  root.add("conv1", std::make_unique<Conv2d>(2, 4, 3, 1, 1, false, rng));
  auto layer = std::make_unique<Sequential>();
  layer->add("0", basic_block(4, true, rng));
  root.add("layer1", std::move(layer));
  std::vector<ParamRef> params;
  root.collect_parameters(params);
  std::vector<BufferRef> buffers;
  root.collect_buffers(buffers);
  ASSERT_EQ(params.size(), 10u);
  EXPECT_EQ(params[0].name, "conv1.weight");
  EXPECT_EQ(params[1].name, "layer1.0.conv1.weight");
  EXPECT_EQ(params[2].name, "layer1.0.bn1.weight");
  EXPECT_EQ(params[8].name, "layer1.0.downsample.1.weight");
  EXPECT_EQ(buffers.back().name, "layer1.0.downsample.1.num_batches_tracked");
  EXPECT_EQ(root.kind(), "ResNet");
  expect_error([&] { root.add("conv1", std::make_unique<ReLU>()); },
               "ResNet: a second child named 'conv1'");
}

TEST(NnModule, ResidualBlockSumsBranchesAndTheirGradients) {
  Rng rng(2);
  for (bool downsample : {false, true}) {
    auto block = basic_block(3, downsample, rng);
    std::vector<std::string> hooked;
    const BackwardHook hook = [&](Layer& leaf) { hooked.push_back(leaf.kind()); };
    block->set_backward_hook(&hook);
    Tensor x({2, 3, 5, 5});
    rng.fill_normal(x.data(), x.numel());
    const Tensor y = block->forward(x, /*training=*/true);
    // y = relu(main(x) + shortcut(x)), main and shortcut recomputed from the children.
    Tensor h = x;
    for (const char* name : {"conv1", "bn1", "relu", "conv2", "bn2"}) {
      Layer* child = block->child(name);
      if (std::string(name) == "relu") {
        ReLU relu;
        h = relu.forward(h, true);
      } else {
        h = child->forward(h, true);
      }
    }
    const Tensor s = downsample ? block->child("downsample")->forward(x, true) : x;
    const Tensor sum = add_tensors(h, s, "test");
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_EQ(y.data()[i], sum.data()[i] > 0 ? sum.data()[i] : 0.0f) << i;

    block->forward(x, true);  // the children's saved state is the block's again
    Tensor dy(y.shape());
    rng.fill_normal(dy.data(), dy.numel());
    const Tensor dx = block->backward(dy);
    EXPECT_EQ(dx.shape(), x.shape());
    // Every leaf with parameters reported (the block's own ReLUs are reported too).
    const size_t convs = static_cast<size_t>(std::count(hooked.begin(), hooked.end(), "Conv2d"));
    EXPECT_EQ(convs, downsample ? 3u : 2u);
    expect_error([&] { block->backward(dy); }, "BasicBlock: backward called without a forward");
  }
}

TEST(NnModule, AddRefusesDifferentShapes) {
  expect_error(
      [] {
        add_tensors(Tensor({2, 3}), Tensor({2, 4}), "Bottleneck");
      },
      "Bottleneck: the residual branch gives [2, 3] but the shortcut gives [2, 4]");
}

}  // namespace
}  // namespace syncbn::nn

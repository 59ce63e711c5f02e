// State dicts: PyTorch names from ParamRef/BufferRef, save and load through safetensors, and
// load errors worded like PyTorch's load_state_dict that leave the model untouched.
#include "ckpt/state_dict.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace syncbn::ckpt {
namespace {

using testing::expect_error;

Tensor filled(std::vector<int64_t> shape, float start) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = start + 0.5f * static_cast<float>(i);
  return t;
}

// The state of torch.nn.Sequential(Conv2d(1, C, 3), BatchNorm2d(C)), held by a stand-in for
// the real layers: only collect_parameters / collect_buffers matter here.
class FakeConv : public nn::Layer {
 public:
  FakeConv(int64_t c, float start)
      : weight(filled({c, 1, 3, 3}, start)), bias(filled({c}, -start)) {}
  std::string kind() const override { return "Conv2d"; }
  Tensor forward(const Tensor& x, bool) override { return x; }
  Tensor backward(const Tensor& dy) override { return dy; }
  void collect_parameters(std::vector<nn::ParamRef>& out) override {
    out.push_back({"weight", &weight, nullptr});
    out.push_back({"bias", &bias, nullptr});
  }
  Tensor weight, bias;
};

class FakeBn : public nn::Layer {
 public:
  FakeBn(int64_t c, float start)
      : weight(filled({c}, start)),
        bias(filled({c}, start + 1)),
        running_mean(filled({c}, start + 2)),
        running_var(filled({c}, start + 3)),
        num_batches_tracked(static_cast<int64_t>(start * 10)) {}
  std::string kind() const override { return "BatchNorm2d"; }
  Tensor forward(const Tensor& x, bool) override { return x; }
  Tensor backward(const Tensor& dy) override { return dy; }
  void collect_parameters(std::vector<nn::ParamRef>& out) override {
    out.push_back({"weight", &weight, nullptr});
    out.push_back({"bias", &bias, nullptr});
  }
  void collect_buffers(std::vector<nn::BufferRef>& out) override {
    out.push_back({"running_mean", &running_mean, nullptr});
    out.push_back({"running_var", &running_var, nullptr});
    out.push_back({"num_batches_tracked", nullptr, &num_batches_tracked});
  }
  Tensor weight, bias, running_mean, running_var;
  int64_t num_batches_tracked;
};

struct Model {
  Model(int64_t c, float start) : conv(c, start), bn(c, start + 10) {
    append_layer_state("0", conv, state);
    append_layer_state("1", bn, state);
  }
  FakeConv conv;
  FakeBn bn;
  std::vector<StateSlot> state;
};

std::vector<float> values(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

TEST(StateDict, PyTorchNamesAndOrder) {
  Model m(4, 1);
  std::vector<std::string> names;
  for (const StateSlot& s : m.state) names.push_back(s.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                      "1.running_var", "1.num_batches_tracked"}));
  std::vector<StateSlot> bare;
  append_state("", {{"weight", &m.conv.weight, nullptr}}, {}, bare);
  EXPECT_EQ(bare.at(0).name, "weight");
}

TEST(StateDict, EntriesHaveShapesAndDtypes) {
  Model m(4, 1);
  const std::vector<TensorEntry> entries = state_entries(m.state);
  ASSERT_EQ(entries.size(), 7u);
  EXPECT_EQ(entries[0].shape, (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(entries[0].dtype, DType::kF32);
  EXPECT_EQ(f32_values(entries[0]), values(m.conv.weight));
  EXPECT_EQ(entries[6].dtype, DType::kI64);
  EXPECT_TRUE(entries[6].shape.empty());
  EXPECT_EQ(i64_values(entries[6]), std::vector<int64_t>{110});
}

TEST(StateDict, SaveAndLoadThroughAFile) {
  testing::ScratchDir dir;
  const std::string path = dir.file("m.safetensors");
  Model saved(4, 1);
  write_safetensors(path, state_entries(saved.state), {{"format", "pt"}});
  Model loaded(4, 100);
  ASSERT_NE(values(loaded.conv.weight), values(saved.conv.weight));
  load_state(read_safetensors(path), loaded.state, path);
  EXPECT_EQ(values(loaded.conv.weight), values(saved.conv.weight));
  EXPECT_EQ(values(loaded.conv.bias), values(saved.conv.bias));
  EXPECT_EQ(values(loaded.bn.weight), values(saved.bn.weight));
  EXPECT_EQ(values(loaded.bn.bias), values(saved.bn.bias));
  EXPECT_EQ(values(loaded.bn.running_mean), values(saved.bn.running_mean));
  EXPECT_EQ(values(loaded.bn.running_var), values(saved.bn.running_var));
  EXPECT_EQ(loaded.bn.num_batches_tracked, saved.bn.num_batches_tracked);
}

TEST(StateDict, LoadsIntoAChannelsLastTensor) {
  Tensor source = filled({2, 3, 2, 2}, 0);
  Tensor target = Tensor({2, 3, 2, 2}, MemoryFormat::kChannelsLast);
  std::vector<StateSlot> from, to;
  append_state("0", {{"weight", &source, nullptr}}, {}, from);
  append_state("0", {{"weight", &target, nullptr}}, {}, to);
  load_state(state_entries(from), to, "mem");
  EXPECT_EQ(target.format(), MemoryFormat::kChannelsLast);
  EXPECT_EQ(values(target.to(MemoryFormat::kContiguous)), values(source));
}

TEST(StateDict, ReportsEveryProblemAndChangesNothing) {
  Model saved(4, 1);
  std::vector<TensorEntry> entries = state_entries(saved.state);
  entries.erase(entries.begin() + 1);                                          // 0.bias missing
  entries.push_back(f32_entry("2.weight", {1}, std::vector<float>{1}));        // unexpected
  entries[0] = f32_entry("0.weight", {8, 1, 3, 3}, std::vector<float>(72));    // size mismatch
  entries[5] = f32_entry("1.num_batches_tracked", {}, std::vector<float>{3});  // dtype mismatch
  Model target(4, 100);
  const Model before(4, 100);
  expect_error([&] { load_state(entries, target.state, "ckpt.safetensors"); },
               {"Error(s) in loading state_dict from ckpt.safetensors:",
                "\n\tMissing key(s) in state_dict: \"0.bias\".",
                "\n\tUnexpected key(s) in state_dict: \"2.weight\".",
                "\n\tsize mismatch for 0.weight: copying a param with shape [8, 1, 3, 3] from "
                "checkpoint, the shape in current model is [4, 1, 3, 3].",
                "\n\tdtype mismatch for 1.num_batches_tracked: the checkpoint has F32, the model "
                "expects I64."});
  EXPECT_EQ(values(target.bn.weight), values(before.bn.weight));  // nothing loaded
  EXPECT_EQ(target.bn.num_batches_tracked, before.bn.num_batches_tracked);
}

TEST(StateDict, NonStrictIgnoresMissingAndUnexpectedOnly) {
  Model saved(4, 1);
  std::vector<TensorEntry> entries = state_entries(saved.state);
  entries.erase(entries.begin() + 1);
  entries.push_back(f32_entry("2.weight", {1}, std::vector<float>{1}));
  Model target(4, 100);
  const std::vector<float> bias_before = values(target.conv.bias);
  load_state(entries, target.state, "mem", /*strict=*/false);
  EXPECT_EQ(values(target.conv.weight), values(saved.conv.weight));
  EXPECT_EQ(values(target.conv.bias), bias_before);
  entries[0] = f32_entry("0.weight", {2}, std::vector<float>(2));
  expect_error([&] { load_state(entries, target.state, "mem", false); },
               {"size mismatch for 0.weight"});
}

TEST(StateDict, DuplicateNames) {
  Model m(2, 1);
  std::vector<TensorEntry> entries = state_entries(m.state);
  entries.push_back(entries[0]);
  expect_error([&] { load_state(entries, m.state, "mem"); },
               {"Duplicate key in state_dict: \"0.weight\""});
  std::vector<StateSlot> twice = m.state;
  twice.push_back(m.state[0]);
  expect_error([&] { load_state(state_entries(m.state), twice, "mem"); },
               {"two state-dict entries named 0.weight"});
}

}  // namespace
}  // namespace syncbn::ckpt

// safetensors files exchanged with PyTorch 1.13 (/usr/bin/python3 with Debian's python3-torch):
// a state dict written here loads into torch.nn.Sequential(Conv2d, BatchNorm2d) with
// load_state_dict(strict=True), and one written by Python loads here, values exact both ways.
// torch_interop.py reads and writes the format with its own struct/json code.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "ckpt/state_dict.h"
#include "test_util.h"

namespace syncbn::ckpt {
namespace {

constexpr const char* kPython = "/usr/bin/python3";

int run_python(const std::string& mode, const std::string& model, const std::string& values) {
  const std::string command =
      str_cat(kPython, " ", SYNCBN_SOURCE_DIR, "/tests/ckpt/torch_interop.py ", mode, " '", model,
              "' '", values, "'");
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The state of Sequential(Conv2d(2, 4, 3), BatchNorm2d(4)).
struct SequentialState {
  Tensor conv_weight{std::vector<int64_t>{4, 2, 3, 3}}, conv_bias{std::vector<int64_t>{4}};
  Tensor bn_weight{std::vector<int64_t>{4}}, bn_bias{std::vector<int64_t>{4}};
  Tensor running_mean{std::vector<int64_t>{4}}, running_var{std::vector<int64_t>{4}};
  int64_t num_batches_tracked = 0;

  std::vector<StateSlot> slots() {
    std::vector<StateSlot> out;
    append_state("0", {{"weight", &conv_weight, nullptr}, {"bias", &conv_bias, nullptr}}, {}, out);
    append_state("1", {{"weight", &bn_weight, nullptr}, {"bias", &bn_bias, nullptr}},
                 {{"running_mean", &running_mean, nullptr},
                  {"running_var", &running_var, nullptr},
                  {"num_batches_tracked", nullptr, &num_batches_tracked}},
                 out);
    return out;
  }
};

TEST(TorchInterop, CppFileLoadsIntoTorchSequential) {
  testing::ScratchDir dir;
  SequentialState s;
  Rng rng(2024);
  for (Tensor* t : {&s.conv_weight, &s.conv_bias, &s.bn_weight, &s.bn_bias, &s.running_mean})
    rng.fill_normal(t->data(), t->numel());
  for (int64_t i = 0; i < 4; ++i)
    s.running_var.data()[i] = 0.5f + static_cast<float>(rng.uniform());
  s.num_batches_tracked = 1234567890123;  // needs more than 32 bits

  const std::string model = dir.file("cpp.safetensors");
  const std::string values = dir.file("cpp_values.txt");
  write_safetensors(model, state_entries(s.slots()),
                    {{"format", "pt"}, {"producer", "syncbn \xe2\x9c\x93"}});
  std::ofstream out(values);
  for (const StateSlot& slot : s.slots()) {
    out << slot.name << (slot.f32 ? " F32" : " I64");
    if (slot.f32) {
      for (int64_t i = 0; i < slot.f32->numel(); ++i) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), " %.9g", static_cast<double>(slot.f32->data()[i]));
        out << buf;
      }
    } else {
      out << " " << *slot.i64;
    }
    out << "\n";
  }
  out.close();
  EXPECT_EQ(run_python("check", model, values), 0) << "torch_interop.py check failed; see above";
}

TEST(TorchInterop, TorchFileLoadsHere) {
  testing::ScratchDir dir;
  const std::string model = dir.file("py.safetensors");
  const std::string values = dir.file("py_values.txt");
  ASSERT_EQ(run_python("write", model, values), 0) << "torch_interop.py write failed; see above";

  Metadata metadata;
  const std::vector<TensorEntry> entries = read_safetensors(model, &metadata);
  EXPECT_EQ(metadata.at("format"), "pt");
  EXPECT_EQ(metadata.at("note"),
            "gr\xc3\xb6\xc3\x9f"
            "e \xe2\x9c\x93");  // from \u escapes
  SequentialState s;
  load_state(entries, s.slots(), model);
  EXPECT_EQ(s.num_batches_tracked, 2);

  std::ifstream in(values);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    std::istringstream fields(line);
    std::string name, dtype;
    fields >> name >> dtype;
    for (const StateSlot& slot : s.slots()) {
      if (slot.name != name) continue;
      EXPECT_EQ(dtype, slot.f32 ? "F32" : "I64") << name;
      if (slot.i64) {
        int64_t v = 0;
        fields >> v;
        EXPECT_EQ(*slot.i64, v) << name;
        continue;
      }
      for (int64_t i = 0; i < slot.f32->numel(); ++i) {
        double v = 0;
        ASSERT_TRUE(fields >> v) << name << " has too few values";
        EXPECT_EQ(slot.f32->data()[i], static_cast<float>(v)) << name << "[" << i << "]";
      }
      double extra;
      EXPECT_FALSE(fields >> extra) << name << " has too many values";
    }
  }
  EXPECT_EQ(lines, 7);
  // Running stats moved off their defaults, so the comparison above is not trivially 0 and 1.
  EXPECT_NE(s.running_mean.data()[0], 0.0f);
  EXPECT_NE(s.running_var.data()[0], 1.0f);
}

}  // namespace
}  // namespace syncbn::ckpt

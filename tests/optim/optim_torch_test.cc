// src/optim against PyTorch 1.13 (STYLE.md rule 10). make_optim_reference.py writes the
// reference at test time (its docstring documents the file); this binary reads it from
// $SYNCBN_OPTIM_REF, else SYNCBN_OPTIM_REF_DEFAULT (the build directory), when a test first needs
// it, never when it is built or its tests are listed.
//
// SGD: the same initial values, gradients and per-step learning rates go through our SGD, and
// after every step each parameter and momentum buffer must match torch.optim.SGD's float32
// result to
//
//   max_i |ours_i − torch_i| <= 1e-6 · max_i |torch_i|
//
// (a few float32 ulps of the array's largest value). Both sides do the same float32 operations
// and fuse the same multiply-adds, so against Debian's AVX2 build the difference is exactly 0;
// the tolerance leaves room for a PyTorch build without FMA. Every configuration is
// replayed with the 4-D parameter contiguous and channels-last, and straight through or resumed
// half-way from a saved SgdState in a fresh optimizer. Error cases: our message must equal
// PyTorch's. Schedules: lr_at(s) for every step must match PyTorch's schedulers to 1e-12·base_lr.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "../common/torch_reference.h"
#include "core/error.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "tensor/tensor.h"

#ifndef SYNCBN_OPTIM_REF_DEFAULT
#define SYNCBN_OPTIM_REF_DEFAULT "optim_torch_ref.safetensors"
#endif

namespace syncbn::optim {
namespace {

// ---------------------------------------------------------------------------------------------
// The reference file.

using testing::RefArray;
using testing::RefCase;

struct RefFile {
  std::string path;
  std::string error;                       // empty when the file was read completely
  std::map<std::string, RefCase> records;  // by case id, KIND.ID
};

std::string ref_path() {
  const char* env = std::getenv("SYNCBN_OPTIM_REF");
  return env && *env ? env : SYNCBN_OPTIM_REF_DEFAULT;
}

RefFile read_ref_file(const std::string& path) {
  RefFile file;
  file.path = path;
  try {
    for (RefCase& r : testing::read_reference_cases(
             path, "make_optim_reference.py, the optim.make_reference test"))
      file.records[r.id] = std::move(r);
  } catch (const std::exception& e) {
    file.error = e.what();
  }
  return file;
}

const RefFile& ref_file() {
  static const RefFile file = read_ref_file(ref_path());
  return file;
}

const RefCase& record(const std::string& kind, const std::string& id) {
  const RefFile& file = ref_file();
  SYNCBN_REQUIRE(file.error.empty(), file.error);
  auto it = file.records.find(kind + "." + id);
  SYNCBN_REQUIRE(it != file.records.end(), file.path, " has no ", kind, " record '", id, "'");
  return it->second;
}

// max_i |ours_i − ref_i| / max_i |ref_i| (0 for an empty or all-zero reference that we match).
double relative_error(const Tensor& ours_any_format, const RefArray& ref) {
  const Tensor ours = ours_any_format.to(MemoryFormat::kContiguous);
  EXPECT_EQ(ours.shape(), ref.dims);
  if (ours.shape() != ref.dims) return INFINITY;
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.values.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(ours.data()[i]) - ref.values[i]));
    scale = std::max(scale, std::abs(ref.values[i]));
  }
  if (diff == 0.0) return 0.0;
  return scale > 0.0 ? diff / scale : INFINITY;
}

constexpr double kSgdTolerance = 1e-6;
constexpr double kScheduleTolerance = 1e-12;

// The ids make_optim_reference.py writes; FileHoldsEveryRecord checks the two lists agree.
const std::vector<std::string> kSgdIds = {"plain",        "momentum",     "momentum_dampening",
                                          "nesterov",     "weight_decay", "all_nesterov",
                                          "all_dampening"};
const std::vector<std::string> kSgdErrorIds = {
    "negative_lr",           "negative_lr_fraction",      "negative_momentum",
    "negative_weight_decay", "nesterov_without_momentum", "nesterov_with_dampening"};
const std::vector<std::string> kScheduleIds = {
    "constant_warmup",    "constant",          "step_warmup", "step",
    "step_size_one",      "cosine_warmup",     "cosine",      "cosine_warmup_one",
    "cosine_single_step", "cosine_min_is_base"};

TEST(OptimTorchRefFile, FileHoldsEveryRecord) {
  const RefFile& file = ref_file();
  ASSERT_TRUE(file.error.empty()) << file.error;
  std::set<std::string> expected;
  for (const auto& id : kSgdIds) expected.insert("sgd." + id);
  for (const auto& id : kSgdErrorIds) expected.insert("sgd_error." + id);
  for (const auto& id : kScheduleIds) expected.insert("schedule." + id);
  std::set<std::string> found;
  for (const auto& [key, r] : file.records) found.insert(key);
  EXPECT_EQ(found, expected) << "make_optim_reference.py and optim_torch_test.cc disagree on the "
                                "records; add new ones to both";
}

// ---------------------------------------------------------------------------------------------
// SGD trajectories.

SgdOptions options_of(const RefCase& r) {
  SgdOptions o;
  if (r.attrs.count("lr")) o.lr = r.attr_double("lr");
  o.momentum = r.attr_double("momentum");
  o.dampening = r.attr_double("dampening");
  o.weight_decay = r.attr_double("weight_decay");
  o.nesterov = r.attr_int("nesterov") != 0;
  return o;
}

// (record id, 4-D parameter channels-last, resume half-way from a saved state)
using SgdParam = std::tuple<std::string, bool, bool>;

class TorchSgd : public ::testing::TestWithParam<SgdParam> {};

TEST_P(TorchSgd, MatchesTrajectory) {
  const auto& [id, channels_last, resume] = GetParam();
  const RefCase& r = record("sgd", id);
  const SgdOptions options = options_of(r);
  const int64_t steps = r.attr_int("steps");
  const size_t count = static_cast<size_t>(r.attr_int("params"));
  const RefArray& lrs = r.array("lr");
  ASSERT_EQ(lrs.values.size(), static_cast<size_t>(steps));
  const bool has_momentum = options.momentum != 0.0;

  auto format_of = [&](const Tensor& t) {
    return channels_last && t.dim() == 4 ? MemoryFormat::kChannelsLast : MemoryFormat::kContiguous;
  };
  std::vector<Tensor> values, grads;
  for (size_t j = 0; j < count; ++j) {
    Tensor init = r.tensor(str_cat("p.", j, ".init"));
    const MemoryFormat format = format_of(init);
    values.push_back(init.to(format));
    grads.push_back(Tensor(init.shape(), format));
  }
  auto param_refs = [&](std::vector<Tensor>& vals, std::vector<Tensor>& grds) {
    std::vector<nn::ParamRef> refs;
    for (size_t j = 0; j < count; ++j)
      refs.push_back({r.attr(str_cat("name.", j)), &vals[j], &grds[j]});
    return refs;
  };

  // A resumed run continues in fresh tensors and a fresh optimizer, from copies of the values and
  // of the saved state, as a checkpoint restore would.
  std::vector<Tensor> resumed_values, resumed_grads;
  auto sgd = std::make_unique<SGD>(param_refs(values, grads), options);
  std::vector<Tensor>* current = &values;
  std::vector<Tensor>* current_grads = &grads;
  double worst = 0.0;
  for (int64_t k = 0; k < steps; ++k) {
    if (resume && k == steps / 2) {
      resumed_values = values;
      resumed_grads = grads;
      SgdState saved = sgd->state();
      sgd = std::make_unique<SGD>(param_refs(resumed_values, resumed_grads), options);
      sgd->load_state(std::move(saved));
      current = &resumed_values;
      current_grads = &resumed_grads;
    }
    // Layers add their gradients into the grad tensors, so zero_grad must clear last step's.
    sgd->zero_grad();
    for (size_t j = 0; j < count; ++j) {
      Tensor& grad = (*current_grads)[j];
      const Tensor g = r.tensor(str_cat("grad.", j, ".", k)).to(grad.format());
      for (int64_t i = 0; i < g.numel(); ++i) grad.data()[i] += g.data()[i];
    }
    sgd->step(lrs.values[static_cast<size_t>(k)]);

    EXPECT_EQ(sgd->step_count(), k + 1);
    EXPECT_EQ(sgd->momentum_initialized(), has_momentum);
    ASSERT_EQ(sgd->momentum_buffers().size(), has_momentum ? count : 0);
    for (size_t j = 0; j < count; ++j) {
      const double err = relative_error((*current)[j], r.array(str_cat("p.", j, ".", k)));
      worst = std::max(worst, err);
      EXPECT_LE(err, kSgdTolerance)
          << "parameter " << j << " (" << r.attr(str_cat("name.", j)) << ") after step " << k + 1;
      if (!has_momentum) continue;
      const Tensor& buf = sgd->momentum_buffers()[j];
      EXPECT_EQ(buf.format(), (*current)[j].format());
      const double buf_err = relative_error(buf, r.array(str_cat("buf.", j, ".", k)));
      worst = std::max(worst, buf_err);
      EXPECT_LE(buf_err, kSgdTolerance) << "momentum buffer of parameter " << j << " ("
                                        << r.attr(str_cat("name.", j)) << ") after step " << k + 1;
    }
  }
  RecordProperty("worst_relative_error", str_cat(worst));
  std::printf("worst relative error vs torch.optim.SGD: %.3g\n", worst);
}

std::string sgd_param_name(const ::testing::TestParamInfo<SgdParam>& info) {
  const auto& [id, channels_last, resume] = info.param;
  return id + (channels_last ? "_channels_last" : "_contiguous") + (resume ? "_resumed" : "");
}

INSTANTIATE_TEST_SUITE_P(Configs, TorchSgd,
                         ::testing::Combine(::testing::ValuesIn(kSgdIds), ::testing::Bool(),
                                            ::testing::Bool()),
                         sgd_param_name);

// ---------------------------------------------------------------------------------------------
// Options torch.optim.SGD rejects: the same message, from validate() and from the constructor.

class TorchSgdError : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchSgdError, SameMessage) {
  const RefCase& r = record("sgd_error", GetParam());
  const SgdOptions options = options_of(r);
  const std::string& expected = r.attr("torch_error");
  try {
    validate(options);
    ADD_FAILURE() << "validate accepted options PyTorch rejects with: " << expected;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
  Tensor value({2}), grad({2});
  try {
    SGD sgd({{"w", &value, &grad}}, options);
    ADD_FAILURE() << "SGD accepted options PyTorch rejects with: " << expected;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TorchSgdError, ::testing::ValuesIn(kSgdErrorIds));

// ---------------------------------------------------------------------------------------------
// Schedules: warmup (LinearLR) followed by StepLR / CosineAnnealingLR / a constant rate.

class TorchSchedule : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchSchedule, MatchesEveryStep) {
  const RefCase& r = record("schedule", GetParam());
  LrSchedule schedule;
  schedule.kind = parse_schedule_kind(r.attr("kind"));
  schedule.base_lr = r.attr_double("base_lr");
  schedule.warmup_steps = r.attr_int("warmup_steps");
  schedule.total_steps = r.attr_int("total_steps");
  schedule.step_size = r.attr_int("step_size");
  schedule.gamma = r.attr_double("gamma");
  schedule.min_lr = r.attr_double("min_lr");
  const RefArray& lrs = r.array("lr");
  ASSERT_EQ(lrs.values.size(), static_cast<size_t>(schedule.total_steps));
  for (int64_t s = 1; s <= schedule.total_steps; ++s) {
    const double expected = lrs.values[static_cast<size_t>(s - 1)];
    EXPECT_NEAR(schedule.lr_at(s), expected, kScheduleTolerance * schedule.base_lr)
        << "step " << s << " of " << schedule.total_steps << " (warmup " << schedule.warmup_steps
        << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TorchSchedule, ::testing::ValuesIn(kScheduleIds));

}  // namespace
}  // namespace syncbn::optim

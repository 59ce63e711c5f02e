// The layers of nn/layers.h against PyTorch 1.13 (STYLE.md rule 10): Conv2d, Linear, MaxPool2d,
// AdaptiveAvgPool2d, ReLU and softmax_cross_entropy, on the cases torch_layers.py writes at test
// time (its docstring documents the file). The file is $SYNCBN_NN_TORCH_CASES, else
// SYNCBN_NN_TORCH_CASES_DEFAULT (the build directory); it is read when a test runs, so test
// discovery never needs it, and a missing or short file fails every test.
//
// Error measure, per array, ours o (float32) against the float64 reference r:
//
//   err = max_i |o_i − r_i| / max_j |r_j|
//
// i.e. the worst absolute error in units of the array's largest value. Elementwise relative error
// would be meaningless here: a conv output or weight gradient is a sum of many float32 products
// of both signs, so its rounding error scales with the size of the terms (≈ the largest outputs),
// not with the (possibly tiny) result. Tolerances: forward outputs and the loss 1e-5, gradients
// 1e-4. float32 accumulation of K terms errs by ~√K·6e-8 of the term size; the largest sums here
// (dW over N·Ho·Wo = 6272 and 9408 positions, K = 288 and 576 in the forward) stay near 1e-6.
// A wrong index or a missing term is off by O(1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "../common/torch_reference.h"
#include "core/error.h"
#include "nn/layers.h"
#include "tensor/tensor.h"

#ifndef SYNCBN_NN_TORCH_CASES_DEFAULT
#define SYNCBN_NN_TORCH_CASES_DEFAULT "nn_torch_layers.safetensors"
#endif

namespace syncbn::nn {
namespace {

constexpr double kForwardTolerance = 1e-5;
constexpr double kGradTolerance = 1e-4;

using testing::RefArray;
using testing::RefCase;

const std::vector<RefCase>& all_cases() {
  static const std::vector<RefCase> cases = [] {
    const char* env = std::getenv("SYNCBN_NN_TORCH_CASES");
    return testing::read_reference_cases(env && *env ? env : SYNCBN_NN_TORCH_CASES_DEFAULT,
                                         "tests/nn/torch_layers.py");
  }();
  return cases;
}

// The cases of one op; fails the test when the file has fewer than `at_least`.
std::vector<const RefCase*> cases_of(const std::string& op, size_t at_least) {
  std::vector<const RefCase*> out;
  for (const RefCase& c : all_cases())
    if (c.attr("op") == op) out.push_back(&c);
  EXPECT_GE(out.size(), at_least) << "too few " << op << " cases in the reference file";
  return out;
}

double max_error(const Tensor& ours, const RefArray& ref) {
  EXPECT_EQ(ours.shape(), ref.dims);
  if (ours.shape() != ref.dims) return INFINITY;
  double err = 0, scale = 0;
  for (int64_t i = 0; i < ours.numel(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(ours.data()[i]) - ref.values[i]));
    scale = std::max(scale, std::abs(ref.values[i]));
  }
  return scale > 0 ? err / scale : err;
}

// Records the worst error per array kind over all cases, printed at the end of each test.
class Worst {
 public:
  void check(const std::string& name, const Tensor& ours, const RefArray& ref, double tolerance) {
    const double err = max_error(ours, ref);
    EXPECT_LE(err, tolerance) << name;
    worst_[name] = std::max(worst_[name], err);
  }
  ~Worst() {
    for (const auto& [name, err] : worst_) std::printf("  max err %-8s %.3g\n", name.c_str(), err);
  }

 private:
  std::map<std::string, double> worst_;
};

void copy_into(Tensor& dst, const Tensor& src) {
  ASSERT_EQ(dst.shape(), src.shape());
  std::copy(src.data(), src.data() + src.numel(), dst.data());
}

// Forward y, backward dx and the parameter gradients of one case.
void check_layer(Layer& layer, const RefCase& c, Worst& worst) {
  const Tensor y = layer.forward(c.tensor("x"), true);
  worst.check("y", y, c.array("y"), kForwardTolerance);
  std::vector<ParamRef> params;
  layer.collect_parameters(params);
  for (ParamRef& p : params) std::fill(p.grad->data(), p.grad->data() + p.grad->numel(), 0.0f);
  const Tensor dx = layer.backward(c.tensor("dy"));
  worst.check("dx", dx, c.array("dx"), kGradTolerance);
  for (ParamRef& p : params)
    worst.check(str_cat("d", p.name), *p.grad, c.array(str_cat("d", p.name)), kGradTolerance);
}

TEST(TorchLayers, Conv2d) {
  Worst worst;
  for (const RefCase* c : cases_of("conv2d", 9)) {
    SCOPED_TRACE(c->id);
    Rng rng(0);
    Conv2d conv(c->attr_int("in"), c->attr_int("out"), c->attr_int("kernel"), c->attr_int("stride"),
                c->attr_int("padding"), c->attr_int("bias") != 0, rng);
    copy_into(conv.weight(), c->tensor("weight"));
    if (c->attr_int("bias")) copy_into(conv.bias(), c->tensor("bias"));
    check_layer(conv, *c, worst);
  }
}

TEST(TorchLayers, Linear) {
  Worst worst;
  for (const RefCase* c : cases_of("linear", 4)) {
    SCOPED_TRACE(c->id);
    Rng rng(0);
    Linear fc(c->attr_int("in"), c->attr_int("out"), c->attr_int("bias") != 0, rng);
    copy_into(fc.weight(), c->tensor("weight"));
    if (c->attr_int("bias")) copy_into(fc.bias(), c->tensor("bias"));
    check_layer(fc, *c, worst);
  }
}

TEST(TorchLayers, MaxPool2d) {
  Worst worst;
  for (const RefCase* c : cases_of("max_pool2d", 5)) {
    SCOPED_TRACE(c->id);
    MaxPool2d pool(c->attr_int("kernel"), c->attr_int("stride"), c->attr_int("padding"));
    check_layer(pool, *c, worst);
  }
}

TEST(TorchLayers, AdaptiveAvgPool2d) {
  Worst worst;
  for (const RefCase* c : cases_of("adaptive_avg_pool2d", 4)) {
    SCOPED_TRACE(c->id);
    AdaptiveAvgPool2d pool(c->attr_int("out_h"), c->attr_int("out_w"));
    check_layer(pool, *c, worst);
  }
}

TEST(TorchLayers, ReLU) {
  Worst worst;
  for (const RefCase* c : cases_of("relu", 2)) {
    SCOPED_TRACE(c->id);
    ReLU relu;
    check_layer(relu, *c, worst);
  }
}

// F.cross_entropy(reduction="mean") = our sum / N, and its gradient = ours with scale 1/N.
TEST(TorchLayers, CrossEntropy) {
  Worst worst;
  for (const RefCase* c : cases_of("cross_entropy", 4)) {
    SCOPED_TRACE(c->id);
    const Tensor logits = c->tensor("logits");
    const int64_t N = logits.size(0);
    std::vector<int32_t> labels;
    for (double v : c->array("labels").values) labels.push_back(static_cast<int32_t>(v));
    Tensor dlogits;
    int64_t correct = -1;
    const double loss = softmax_cross_entropy(logits, labels.data(), 1.0 / static_cast<double>(N),
                                              &dlogits, &correct);
    Tensor mean({1});
    mean.data()[0] = static_cast<float>(loss / static_cast<double>(N));
    worst.check("loss", mean, c->array("loss"), kForwardTolerance);
    worst.check("dlogits", dlogits, c->array("dlogits"), kGradTolerance);
    EXPECT_EQ(correct, c->attr_int("correct"));
  }
}

}  // namespace
}  // namespace syncbn::nn

#include "optim/sgd.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "core/error.h"
#include "nn/sgd_math.h"

namespace syncbn::optim {
namespace {

// Below this many elements a parameter is updated on one thread: fork/join costs more.
constexpr int64_t kParallelGrain = 1 << 15;

// Shortest string that reads back as `value` ("-1", "-0.5", "1e-05").
std::string format_number(double value) {
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, result.ptr);
}

void require_lr(double lr) {
  SYNCBN_REQUIRE(std::isfinite(lr) && lr >= 0.0, "Invalid learning rate: ", format_number(lr));
}

// The update of one parameter (nn/sgd_math.h); nothing else is contracted (-ffp-contract=off).
void update(const nn::math::SgdStep& u, float* value, const float* grad, float* buf,
            int64_t count) {
#pragma omp parallel for schedule(static) if (count >= kParallelGrain)
  for (int64_t i = 0; i < count; ++i) nn::math::sgd_update_element(u, value, grad, buf, i);
}

}  // namespace

void validate(const SgdOptions& options) {
  require_lr(options.lr);
  SYNCBN_REQUIRE(std::isfinite(options.momentum) && options.momentum >= 0.0,
                 "Invalid momentum value: ", format_number(options.momentum));
  SYNCBN_REQUIRE(std::isfinite(options.weight_decay) && options.weight_decay >= 0.0,
                 "Invalid weight_decay value: ", format_number(options.weight_decay));
  SYNCBN_REQUIRE(std::isfinite(options.dampening),
                 "Invalid dampening value: ", format_number(options.dampening));
  SYNCBN_REQUIRE(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
                 "Nesterov momentum requires a momentum and zero dampening");
}

SGD::SGD(std::vector<nn::ParamRef> params, SgdOptions options)
    : params_(std::move(params)), options_(options) {
  validate(options_);
  std::set<const Tensor*> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    const nn::ParamRef& p = params_[i];
    const std::string what = str_cat("SGD parameter ", i, " ('", p.name, "')");
    SYNCBN_REQUIRE(p.value != nullptr, what, " has no value tensor");
    SYNCBN_REQUIRE(p.grad != nullptr, what, " has no grad tensor");
    SYNCBN_REQUIRE(p.grad->shape() == p.value->shape(), what, ": grad shape ",
                   shape_to_string(p.grad->shape()), " differs from the value's ",
                   shape_to_string(p.value->shape()));
    SYNCBN_REQUIRE(p.grad->format() == p.value->format(), what, ": grad memory format ",
                   to_string(p.grad->format()), " differs from the value's ",
                   to_string(p.value->format()));
    SYNCBN_REQUIRE(seen.insert(p.value).second, what,
                   " appears more than once; expected each tensor once");
  }
}

std::vector<std::string> SGD::param_names() const {
  std::vector<std::string> names;
  names.reserve(params_.size());
  for (const nn::ParamRef& p : params_) names.push_back(p.name);
  return names;
}

void SGD::step(double lr) {
  require_lr(lr);
  const nn::math::SgdStep u =
      nn::math::sgd_step(lr, options_.momentum, options_.dampening, options_.weight_decay,
                         options_.nesterov, !state_.momentum_initialized);
  if (u.has_momentum && !state_.momentum_initialized) {
    state_.momentum_buffers.clear();
    for (const nn::ParamRef& p : params_)
      state_.momentum_buffers.push_back(Tensor::empty(p.value->shape(), p.value->format()));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    float* buf = u.has_momentum ? state_.momentum_buffers[i].data() : nullptr;
    update(u, params_[i].value->data(), params_[i].grad->data(), buf, params_[i].value->numel());
  }
  if (u.has_momentum) state_.momentum_initialized = true;
  ++state_.step_count;
}

void SGD::zero_grad() {
  for (const nn::ParamRef& p : params_) {
    if (p.grad->numel() > 0)
      std::memset(p.grad->data(), 0, static_cast<size_t>(p.grad->numel()) * sizeof(float));
  }
}

void SGD::load_state(SgdState state) {
  SYNCBN_REQUIRE(state.step_count >= 0, "SGD state: step count ", state.step_count,
                 " is negative; expected >= 0");
  const size_t expected = state.momentum_initialized ? params_.size() : 0;
  SYNCBN_REQUIRE(state.momentum_buffers.size() == expected,
                 "SGD state: ", state.momentum_buffers.size(), " momentum buffers, expected ",
                 expected, " (", params_.size(), " parameters, momentum buffers ",
                 state.momentum_initialized ? "initialised" : "not initialised", ")");
  for (size_t i = 0; i < state.momentum_buffers.size(); ++i) {
    Tensor& buf = state.momentum_buffers[i];
    const Tensor& value = *params_[i].value;
    SYNCBN_REQUIRE(buf.shape() == value.shape(), "SGD state: momentum buffer of parameter ", i,
                   " ('", params_[i].name, "') has shape ", shape_to_string(buf.shape()),
                   ", expected ", shape_to_string(value.shape()));
    if (buf.format() != value.format()) buf = buf.to(value.format());
  }
  state_ = std::move(state);
}

}  // namespace syncbn::optim

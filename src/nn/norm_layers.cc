// BatchNorm2d and InstanceNorm2d (over NormBase), GroupNorm and SyncBatchNormLayer: thin Layers
// over norm/norm.h and nn::SyncBatchNorm, which own the math (DESIGN.md §1). These keep the
// parameters and buffers under PyTorch's names, check the input against the layer's configuration,
// handle the empty batch, and add the adapters' dγ, dβ into the gradients.
#include <cmath>

#include "core/error.h"
#include "nn/layer_util.h"
#include "nn/layers.h"

namespace syncbn::nn {
namespace {

void check_options(const std::string& kind, int64_t features, double eps,
                   const std::optional<double>& momentum) {
  SYNCBN_REQUIRE(features >= 1, kind, ": num_features must be >= 1, got ", features);
  SYNCBN_REQUIRE(std::isfinite(eps) && eps > 0, kind,
                 ": eps must be a positive finite number, got ", eps);
  SYNCBN_REQUIRE(!momentum || (std::isfinite(*momentum) && *momentum >= 0 && *momentum <= 1), kind,
                 ": momentum must be in [0, 1] (or None), got ", momentum.value_or(0));
}

void check_input(const Tensor& x, int64_t dims, int64_t channels, const std::string& kind) {
  SYNCBN_REQUIRE(x.dim() == dims, kind, ": expected ", dims, "D input (N, ", channels,
                 dims == 4 ? ", H, W)" : ", ...)", ", got input of size ",
                 shape_to_string(x.shape()));
  SYNCBN_REQUIRE(x.size(1) == channels, kind, ": expected input with ", channels,
                 " channels, got input of size ", shape_to_string(x.shape()));
}

Tensor ones(int64_t n) {
  Tensor t({n});
  for (int64_t i = 0; i < n; ++i) t.data()[i] = 1.0f;
  return t;
}

void accumulate(Tensor& grad, const Tensor& delta) {
  for (int64_t i = 0; i < grad.numel(); ++i) grad.data()[i] += delta.data()[i];
}

// dy in x's memory format (the norm adapters require it).
Tensor grad_like(const Tensor& dy, const Tensor& x) {
  return dy.format() == x.format() ? dy : dy.to(x.format());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// NormBase

NormBase::NormBase(const char* kind, int64_t num_features, const norm::BatchNormOptions& options,
                   bool affine, bool track_running_stats, BackwardAdapter adapter_backward)
    : num_features_(num_features),
      options_(options),
      affine_(affine),
      track_running_stats_(track_running_stats),
      adapter_backward_(adapter_backward) {
  check_options(kind, num_features, options.eps, options.momentum);
  if (affine_) {
    weight_ = ones(num_features);
    bias_ = Tensor({num_features});
    grad_weight_ = Tensor({num_features});
    grad_bias_ = Tensor({num_features});
  }
  if (track_running_stats_) {
    running_mean_ = Tensor({num_features});
    running_var_ = ones(num_features);
  }
}

norm::BatchNormState NormBase::state() {
  norm::BatchNormState s;
  if (affine_) s.weight = &weight_, s.bias = &bias_;
  if (track_running_stats_) {
    s.running_mean = &running_mean_;
    s.running_var = &running_var_;
    s.num_batches_tracked = &num_batches_tracked_;
  }
  return s;
}

void NormBase::collect_parameters(std::vector<ParamRef>& out) {
  if (!affine_) return;
  out.push_back({"weight", &weight_, &grad_weight_});
  out.push_back({"bias", &bias_, &grad_bias_});
}

void NormBase::collect_buffers(std::vector<BufferRef>& out) {
  if (!track_running_stats_) return;
  out.push_back({"running_mean", &running_mean_, nullptr});
  out.push_back({"running_var", &running_var_, nullptr});
  out.push_back({"num_batches_tracked", nullptr, &num_batches_tracked_});
}

Tensor NormBase::backward(const Tensor& dy) {
  detail::require_forward(have_saved_, kind());
  detail::require_grad_shape(dy, saved_x_.shape(), kind());
  Tensor dx;
  if (saved_x_.numel() == 0) {
    dx = Tensor::empty(saved_x_.shape(), saved_x_.format());
  } else {
    norm::NormGrads grads = adapter_backward_(grad_like(dy, saved_x_), saved_x_, state(), saved_);
    if (affine_) {
      accumulate(grad_weight_, grads.dweight);
      accumulate(grad_bias_, grads.dbias);
    }
    dx = std::move(grads.dx);
  }
  saved_x_ = Tensor();
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// BatchNorm2d

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, std::optional<double> momentum,
                         bool affine, bool track_running_stats)
    : NormBase("BatchNorm2d", num_features, {eps, momentum}, affine, track_running_stats,
               norm::batch_norm_backward) {}

Tensor BatchNorm2d::forward(const Tensor& x, bool training) {
  check_input(x, 4, num_features_, kind());
  have_saved_ = false;
  Tensor y;
  if (x.numel() == 0) {  // PyTorch's module counts the batch; F.batch_norm returns it unchanged.
    if (training && track_running_stats_) ++num_batches_tracked_;
    y = Tensor::empty(x.shape(), x.format());
  } else {
    y = norm::batch_norm_forward(x, state(), options_, training, &saved_);
  }
  saved_x_ = x;
  have_saved_ = true;
  return y;
}

// ---------------------------------------------------------------------------------------------
// GroupNorm

GroupNorm::GroupNorm(int64_t num_groups, int64_t num_channels, double eps, bool affine)
    : num_groups_(num_groups), num_channels_(num_channels), eps_(eps), affine_(affine) {
  check_options(kind(), num_channels, eps, std::nullopt);
  SYNCBN_REQUIRE(num_groups >= 1 && num_channels % num_groups == 0,
                 "GroupNorm: num_channels must be divisible by num_groups, got num_channels ",
                 num_channels, " and num_groups ", num_groups);
  if (affine_) {
    weight_ = ones(num_channels);
    bias_ = Tensor({num_channels});
    grad_weight_ = Tensor({num_channels});
    grad_bias_ = Tensor({num_channels});
  }
}

void GroupNorm::collect_parameters(std::vector<ParamRef>& out) {
  if (!affine_) return;
  out.push_back({"weight", &weight_, &grad_weight_});
  out.push_back({"bias", &bias_, &grad_bias_});
}

Tensor GroupNorm::forward(const Tensor& x, bool /*training*/) {
  SYNCBN_REQUIRE(x.dim() >= 2, kind(), ": expected input of at least 2 dimensions (N, ",
                 num_channels_, ", ...), got input of size ", shape_to_string(x.shape()));
  SYNCBN_REQUIRE(x.size(1) == num_channels_, kind(), ": expected input with ", num_channels_,
                 " channels, got input of size ", shape_to_string(x.shape()));
  have_saved_ = false;
  Tensor y = x.numel() == 0 ? Tensor::empty(x.shape(), x.format())
                            : norm::group_norm_forward(x, num_groups_, affine_ ? &weight_ : nullptr,
                                                       affine_ ? &bias_ : nullptr, eps_, &saved_);
  saved_x_ = x;
  have_saved_ = true;
  return y;
}

Tensor GroupNorm::backward(const Tensor& dy) {
  detail::require_forward(have_saved_, kind());
  detail::require_grad_shape(dy, saved_x_.shape(), kind());
  Tensor dx;
  if (saved_x_.numel() == 0) {
    dx = Tensor::empty(saved_x_.shape(), saved_x_.format());
  } else {
    norm::NormGrads grads = norm::group_norm_backward(
        grad_like(dy, saved_x_), saved_x_, num_groups_, affine_ ? &weight_ : nullptr, saved_);
    if (affine_) {
      accumulate(grad_weight_, grads.dweight);
      accumulate(grad_bias_, grads.dbias);
    }
    dx = std::move(grads.dx);
  }
  saved_x_ = Tensor();
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// InstanceNorm2d

InstanceNorm2d::InstanceNorm2d(int64_t num_features, bool affine, bool track_running_stats,
                               double eps, double momentum)
    : NormBase("InstanceNorm2d", num_features, {eps, momentum}, affine, track_running_stats,
               norm::instance_norm_backward) {}

Tensor InstanceNorm2d::forward(const Tensor& x, bool training) {
  check_input(x, 4, num_features_, kind());
  have_saved_ = false;
  Tensor y = x.numel() == 0 ? Tensor::empty(x.shape(), x.format())
                            : norm::instance_norm_forward(
                                  x, state(), options_, training || !track_running_stats_, &saved_);
  saved_x_ = x;
  have_saved_ = true;
  return y;
}

// ---------------------------------------------------------------------------------------------
// SyncBatchNormLayer

SyncBatchNormLayer::SyncBatchNormLayer(const SyncBatchNormOptions& options,
                                       comm::Communicator* group, std::string name)
    : impl_(options, group, std::move(name)), group_size_(group->size()) {}

void SyncBatchNormLayer::collect_parameters(std::vector<ParamRef>& out) {
  if (!impl_.options().affine) return;
  out.push_back({"weight", &impl_.weight(), &impl_.grad_weight()});
  out.push_back({"bias", &impl_.bias(), &impl_.grad_bias()});
}

void SyncBatchNormLayer::collect_buffers(std::vector<BufferRef>& out) {
  if (!impl_.options().track_running_stats) return;
  out.push_back({"running_mean", &impl_.running_mean(), nullptr});
  out.push_back({"running_var", &impl_.running_var(), nullptr});
  out.push_back({"num_batches_tracked", nullptr, &impl_.num_batches_tracked()});
}

Tensor SyncBatchNormLayer::forward(const Tensor& x, bool training) {
  have_forward_ = false;
  empty_forward_ = group_size_ == 1 && x.numel() == 0;
  if (!empty_forward_) {
    Tensor y = impl_.forward(x, training);
    have_forward_ = true;
    return y;
  }
  // Alone in the group with nothing to normalize: PyTorch's module takes the F.batch_norm path,
  // which counts the batch and returns the empty input.
  norm::bn_geometry(x, "SyncBatchNorm");
  SYNCBN_REQUIRE(x.size(1) == impl_.options().num_features, "SyncBatchNorm '", impl_.name(),
                 "': expected input with ", impl_.options().num_features,
                 " channels, got input of size ", shape_to_string(x.shape()));
  if (training && impl_.options().track_running_stats) ++impl_.num_batches_tracked();
  empty_shape_ = x.shape();
  have_forward_ = true;
  return Tensor::empty(x.shape(), x.format());
}

Tensor SyncBatchNormLayer::backward(const Tensor& dy) {
  detail::require_forward(have_forward_, kind());
  have_forward_ = false;
  if (!empty_forward_) return impl_.backward(dy);
  detail::require_grad_shape(dy, empty_shape_, kind());
  return Tensor::empty(dy.shape(), dy.format());
}

}  // namespace syncbn::nn

#include "nn/sync_batch_norm.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "nn/count_slot.h"

namespace syncbn::nn {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::unique_ptr<comm::Communicator> make_bn_group(comm::Communicator& world, int bn_group_size) {
  SYNCBN_REQUIRE(bn_group_size >= 0, "bn_group_size must be >= 0 (0 = the whole world), got ",
                 bn_group_size);
  const int group = bn_group_size == 0 ? world.size() : bn_group_size;
  SYNCBN_REQUIRE(world.size() % group == 0, "bn_group_size ", group,
                 " does not divide the world size ", world.size(),
                 "; expected a divisor of the world size (or 0 for the whole world)");
  return comm::split_consecutive(world, group);
}

void validate(const SyncBatchNormOptions& options, const std::string& layer_name) {
  SYNCBN_REQUIRE(options.num_features >= 1, "SyncBatchNorm '", layer_name,
                 "': num_features must be >= 1, got ", options.num_features);
  SYNCBN_REQUIRE(std::isfinite(options.eps) && options.eps > 0, "SyncBatchNorm '", layer_name,
                 "': eps must be a positive finite number, got ", options.eps);
  SYNCBN_REQUIRE(!options.momentum || (*options.momentum >= 0 && *options.momentum <= 1),
                 "SyncBatchNorm '", layer_name, "': momentum must be in [0, 1] or None, got ",
                 options.momentum.value_or(0));
}

SyncBatchNorm::SyncBatchNorm(const SyncBatchNormOptions& options, comm::Communicator* group,
                             std::string name)
    : options_(options), group_(group), name_(std::move(name)) {
  SYNCBN_CHECK(group_ != nullptr);
  validate(options_, name_);
  const int64_t C = options_.num_features;
  if (options_.affine) {
    weight_ = Tensor({C});
    bias_ = Tensor({C});
    grad_weight_ = Tensor({C});
    grad_bias_ = Tensor({C});
    for (int64_t c = 0; c < C; ++c) weight_.data()[c] = 1.0f;
  }
  if (options_.track_running_stats) {
    running_mean_ = Tensor({C});
    running_var_ = Tensor({C});
    for (int64_t c = 0; c < C; ++c) running_var_.data()[c] = 1.0f;
  }
}

norm::BatchNormState SyncBatchNorm::state() {
  norm::BatchNormState s;
  if (options_.affine) s.weight = &weight_, s.bias = &bias_;
  if (options_.track_running_stats) {
    s.running_mean = &running_mean_;
    s.running_var = &running_var_;
    s.num_batches_tracked = &num_batches_tracked_;
  }
  return s;
}

Tensor SyncBatchNorm::forward(const Tensor& x, bool training) {
  const norm::BnGeometry g = norm::bn_geometry(x, "SyncBatchNorm");
  const int64_t C = options_.num_features;
  SYNCBN_REQUIRE(g.c == C, "SyncBatchNorm '", name_, "': expected input with ", C,
                 " channels, got input of size ", shape_to_string(x.shape()));
  const bool batch_stats = training || !options_.track_running_stats;
  const norm::BatchNormOptions bn_options{options_.eps, options_.momentum};
  if (!batch_stats) {  // Running statistics: a purely local pass, no collective.
    saved_x_ = x;
    have_saved_ = true;
    return norm::batch_norm_forward(x, state(), bn_options, /*training=*/false, &saved_);
  }

  // Stage 1 (local) and the one collective: [n, Σx (C), Σx² (C)] in float64.
  std::vector<double> payload(2 * C + 1);
  norm::bn_stats(x.data(), g, payload.data() + 1, payload.data() + 1 + C);
  const slot::Layout layout = slot::layout(group_->size());
  SYNCBN_REQUIRE(slot::count_fits(g.count(), group_->size()), "SyncBatchNorm '", name_,
                 "': ", g.count(), " values per channel on one rank is too many");
  payload[0] = slot::encode(g.count(), slot::layer_tag(name_, calls_, C), layout);
  const auto comm_start = std::chrono::steady_clock::now();
  group_->allreduce_sum(payload.data(), static_cast<int64_t>(payload.size()));
  counters_.comm_seconds += seconds_since(comm_start);
  ++counters_.forward_collectives;
  counters_.forward_bytes += static_cast<int64_t>(payload.size() * sizeof(double));
  ++calls_;

  const slot::Decoded reduced = slot::decode(payload[0], layout, group_->size());
  SYNCBN_REQUIRE(reduced.same_layer, "SyncBatchNorm '", name_, "' (forward call ", calls_,
                 ", C=", C,
                 "): the ranks of the BN group are not all in the same layer; they called "
                 "SyncBN layers in a different order or with different channel counts");
  const int64_t count = reduced.count;
  SYNCBN_REQUIRE(count > 1, "Expected more than 1 value per channel when training, got input size ",
                 shape_to_string(x.shape()), " on rank ", group_->rank(), " (", count,
                 " values per channel over the BN group of ", group_->size(), " ranks)");

  // Stage 2 and 3: global statistics, running update (identical on every rank), normalize.
  std::vector<double> mean(C), var(C);
  norm::bn_gather_stats(C, count, payload.data() + 1, payload.data() + 1 + C, mean.data(),
                        var.data());
  if (training && options_.track_running_stats) {
    ++num_batches_tracked_;
    const double factor =
        options_.momentum ? *options_.momentum : 1.0 / static_cast<double>(num_batches_tracked_);
    norm::bn_update_running(C, count, factor, mean.data(), var.data(), running_mean_.data(),
                            running_var_.data());
  }
  saved_.count = count;
  saved_.batch_stats = true;
  saved_.mean.resize(C);
  saved_.invstd.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    saved_.mean[c] = static_cast<float>(mean[c]);
    saved_.invstd[c] = static_cast<float>(1.0 / std::sqrt(var[c] + options_.eps));
  }
  Tensor y = Tensor::empty(x.shape(), x.format());
  norm::bn_elemt(x.data(), g, saved_.mean.data(), saved_.invstd.data(),
                 options_.affine ? weight_.data() : nullptr,
                 options_.affine ? bias_.data() : nullptr, y.data());
  saved_x_ = x;
  have_saved_ = true;
  return y;
}

Tensor SyncBatchNorm::backward(const Tensor& dy) {
  SYNCBN_REQUIRE(have_saved_, "SyncBatchNorm '", name_, "': backward called before forward");
  const Tensor& x = saved_x_;
  const norm::BnGeometry g = norm::bn_geometry(x, "SyncBatchNorm");
  SYNCBN_REQUIRE(dy.shape() == x.shape() && dy.format() == x.format(), "SyncBatchNorm '", name_,
                 "': grad_output of size ", shape_to_string(dy.shape()),
                 " does not match input of size ", shape_to_string(x.shape()));
  const int64_t C = options_.num_features;

  // Stage 4 (local): [sum_dy (C), sum_dy_xmu (C)]; dγ, dβ from the local part.
  std::vector<double> payload(2 * C);
  norm::bn_backward_reduce(dy.data(), x.data(), g, saved_.mean.data(), payload.data(),
                           payload.data() + C);
  if (options_.affine) {
    for (int64_t c = 0; c < C; ++c) {
      grad_weight_.data()[c] += static_cast<float>(payload[C + c] * saved_.invstd[c]);
      grad_bias_.data()[c] += static_cast<float>(payload[c]);
    }
  }
  Tensor dx = Tensor::empty(x.shape(), x.format());
  const float* weight = options_.affine ? weight_.data() : nullptr;
  if (!saved_.batch_stats) {  // Eval: statistics are constants, nothing to exchange.
    norm::bn_backward_elemt(dy.data(), x.data(), g, saved_.mean.data(), saved_.invstd.data(),
                            weight, nullptr, nullptr, saved_.count, dx.data());
    return dx;
  }
  const auto comm_start = std::chrono::steady_clock::now();
  group_->allreduce_sum(payload.data(), static_cast<int64_t>(payload.size()));
  counters_.comm_seconds += seconds_since(comm_start);
  ++counters_.backward_collectives;
  counters_.backward_bytes += static_cast<int64_t>(payload.size() * sizeof(double));

  // Stage 5: dx with the group-wide sums and count.
  norm::bn_backward_elemt(dy.data(), x.data(), g, saved_.mean.data(), saved_.invstd.data(), weight,
                          payload.data(), payload.data() + C, saved_.count, dx.data());
  return dx;
}

}  // namespace syncbn::nn

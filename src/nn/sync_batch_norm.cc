#include "nn/sync_batch_norm.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "nn/count_slot.h"

namespace syncbn::nn {
namespace {

// One of the layer's collectives, timed and counted.
void allreduce_counted(comm::Communicator& group, double* payload, int64_t size,
                       SyncBnCounters& counters, int64_t& collectives, int64_t& bytes) {
  const auto start = std::chrono::steady_clock::now();
  group.allreduce_sum(payload, size);
  counters.comm_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++collectives;
  bytes += size * static_cast<int64_t>(sizeof(double));
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

  // The pipeline of norm/bn_pipeline.h; its one collective carries the count slot
  // (nn/count_slot.h).
  const slot::Layout layout = slot::layout(group_->size());
  SYNCBN_REQUIRE(slot::count_fits(g.count(), group_->size()), "SyncBatchNorm '", name_,
                 "': ", g.count(), " values per channel on one rank is too many");
  const norm::BnReduce reduce = [&](double* payload, int64_t size) {
    payload[0] = slot::encode(g.count(), slot::layer_tag(name_, calls_, C), layout);
    allreduce_counted(*group_, payload, size, counters_, counters_.forward_collectives,
                      counters_.forward_bytes);
    ++calls_;
    const slot::Decoded reduced = slot::decode(payload[0], layout, group_->size());
    SYNCBN_REQUIRE(reduced.same_layer, "SyncBatchNorm '", name_, "' (forward call ", calls_,
                   ", C=", C,
                   "): the ranks of the BN group are not all in the same layer; they called "
                   "SyncBN layers in a different order or with different channel counts");
    SYNCBN_REQUIRE(reduced.count > 1,
                   "Expected more than 1 value per channel when training, got input size ",
                   shape_to_string(x.shape()), " on rank ", group_->rank(), " (", reduced.count,
                   " values per channel over the BN group of ", group_->size(), " ranks)");
    return reduced.count;
  };
  norm::BnRunning running;
  if (training && options_.track_running_stats) {
    running = {running_mean_.data(), running_var_.data(), options_.momentum, &num_batches_tracked_};
  }
  Tensor y = Tensor::empty(x.shape(), x.format());
  norm::bn_forward_batch_stats(x.data(), g, options_.eps, running,
                               options_.affine ? weight_.data() : nullptr,
                               options_.affine ? bias_.data() : nullptr, reduce, &saved_, y.data());
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
  Tensor dx = Tensor::empty(x.shape(), x.format());
  norm::bn_backward(
      dy.data(), x.data(), g, saved_, options_.affine ? weight_.data() : nullptr,
      [&](double* payload, int64_t size) {
        allreduce_counted(*group_, payload, size, counters_, counters_.backward_collectives,
                          counters_.backward_bytes);
        return saved_.count;
      },
      options_.affine ? grad_weight_.data() : nullptr,
      options_.affine ? grad_bias_.data() : nullptr, dx.data());
  return dx;
}

}  // namespace syncbn::nn

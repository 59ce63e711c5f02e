// SyncBatchNorm: BatchNorm whose statistics span every rank of a BN group (DESIGN.md §1-§2).
//
// The layer is the stage pipeline of norm/kernels.h with one collective between stages per pass:
//
//   forward   bn_stats → allreduce [n, Σx (C), Σx² (C)] (float64, 8·(2C+1) bytes)
//             → bn_gather_stats → running-stat update → bn_elemt
//   backward  bn_backward_reduce → allreduce [sum_dy (C), sum_dy_xmu (C)] (8·2C bytes)
//             → bn_backward_elemt
//
// dγ and dβ come from the local sums (before the allreduce) and are accumulated into
// grad_weight / grad_bias; they are reduced later with the other parameter gradients. Eval mode
// uses the running statistics and makes no collective. A rank with no samples still joins both
// collectives and contributes zeros, so uneven and empty per-rank batches are exact.
//
// Layer identity check: the count slot of the forward payload also carries a small tag
// (hash of the layer name, its call index and C) spread over bit fields that sum to 0 or R
// exactly when every rank sent the same tag. Every rank decodes the same reduced value, so a
// mismatch — ranks calling SyncBN layers in a different order — raises the same error on
// every rank instead of silently mixing statistics. Channel-count mismatches usually also
// change the allreduce's length, which MPI reports as an error on at least one rank; the tag
// covers the cases where it does not.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "norm/norm.h"
#include "tensor/tensor.h"

namespace syncbn::nn {

struct SyncBatchNormOptions {
  int64_t num_features = 0;
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // nullopt: cumulative average
  bool affine = true;
  bool track_running_stats = true;
};

// Throws syncbn::Error naming the layer if num_features, eps or momentum is out of range (the
// CPU and the CUDA layer accept the same options).
void validate(const SyncBatchNormOptions& options, const std::string& layer_name);

// What this layer has sent through its group since construction or reset.
struct SyncBnCounters {
  int64_t forward_collectives = 0;
  int64_t backward_collectives = 0;
  int64_t forward_bytes = 0;  // payload bytes per rank
  int64_t backward_bytes = 0;
  // Wall time spent inside the two allreduces, waiting for slower ranks included: what SyncBN
  // costs over local BN at the collectives (the batch-size study reports it per step).
  double comm_seconds = 0;
};

class SyncBatchNorm {
 public:
  // group: the BN group (see make_bn_group); not owned, must outlive the layer. name identifies
  // the layer in error messages and in the cross-rank identity check. Throws syncbn::Error for
  // num_features < 1, eps <= 0 or momentum outside [0, 1].
  SyncBatchNorm(const SyncBatchNormOptions& options, comm::Communicator* group, std::string name);

  // Collective over the group when batch statistics are used (training, or no running stats).
  // x: (N, C, *spatial), 2-D to 5-D, any N >= 0 on this rank.
  Tensor forward(const Tensor& x, bool training);
  // Collective when the last forward used batch statistics. Returns dx; adds dγ, dβ (local)
  // to grad_weight / grad_bias.
  Tensor backward(const Tensor& dy);

  Tensor& weight() { return weight_; }              // (C) ones
  Tensor& bias() { return bias_; }                  // (C) zeros
  Tensor& running_mean() { return running_mean_; }  // (C) zeros
  Tensor& running_var() { return running_var_; }    // (C) ones
  int64_t& num_batches_tracked() { return num_batches_tracked_; }
  Tensor& grad_weight() { return grad_weight_; }
  Tensor& grad_bias() { return grad_bias_; }
  const SyncBnCounters& counters() const { return counters_; }
  const std::string& name() const { return name_; }
  const SyncBatchNormOptions& options() const { return options_; }

 private:
  norm::BatchNormState state();

  SyncBatchNormOptions options_;
  comm::Communicator* group_;
  std::string name_;
  Tensor weight_, bias_, running_mean_, running_var_, grad_weight_, grad_bias_;
  int64_t num_batches_tracked_ = 0;
  int64_t calls_ = 0;  // forward passes with batch statistics, for the identity tag
  SyncBnCounters counters_;

  // Saved by forward for backward.
  Tensor saved_x_;
  norm::NormSaved saved_;
  bool have_saved_ = false;
};

// The BN group of this rank: bn_group_size consecutive ranks of world share statistics
// (1: local BN; 0 or world.size(): global SyncBN). Collective over world. Throws syncbn::Error
// on every rank when world.size() is not divisible by bn_group_size.
std::unique_ptr<comm::Communicator> make_bn_group(comm::Communicator& world, int bn_group_size);

}  // namespace syncbn::nn

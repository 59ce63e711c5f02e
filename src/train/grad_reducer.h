// Gradient reduction over the world in buckets, overlapped with backward (DESIGN.md §2).
//
// Parameters are grouped, in reverse registration order (the order backward produces their
// gradients), into buckets of about `bucket_bytes`. When the last parameter of a bucket is
// marked ready, its gradients are packed into the bucket's buffer and a non-blocking allreduce
// starts; finish() waits for every bucket in order and unpacks the sums. Every rank builds the
// same buckets from the same parameter list, so the collectives match across ranks.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "nn/layer.h"

namespace syncbn::train {

// The buckets of parameters whose gradients have grad_bytes[k] bytes, as PyTorch's DDP forms
// them: in backward's order (the last parameter first), a bucket closing once it holds at least
// bucket_bytes, so every bucket has at least one parameter. Each bucket lists its parameter
// indices in descending order; together they hold every index once. Used by GradReducer and by
// the CUDA backend's plan (train/cuda/device_plan.h).
std::vector<std::vector<size_t>> bucket_parameters(const std::vector<int64_t>& grad_bytes,
                                                   int64_t bucket_bytes);

class GradReducer {
 public:
  // params: every parameter of the model, in registration order. world: not owned.
  GradReducer(std::vector<nn::ParamRef> params, comm::Communicator* world,
              int64_t bucket_bytes = 1 << 20);

  // Marks params[index]'s gradient final for this step; may start a bucket's allreduce.
  void mark_ready(size_t index);
  // Marks every parameter not yet marked, waits for all buckets, writes the sums back.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<float> buffer;
    size_t pending = 0;  // parameters not yet ready this step
    comm::Request request;
    bool started = false;
  };
  void start(Bucket& bucket);

  std::vector<nn::ParamRef> params_;
  comm::Communicator* world_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index → bucket index
  std::vector<bool> ready_;
};

}  // namespace syncbn::train

#include "train/grad_reducer.h"

#include <algorithm>

#include "core/error.h"

namespace syncbn::train {

GradReducer::GradReducer(std::vector<nn::ParamRef> params, comm::Communicator* world,
                         int64_t bucket_bytes)
    : params_(std::move(params)),
      world_(world),
      bucket_of_(params_.size()),
      ready_(params_.size(), false) {
  SYNCBN_CHECK(world_ != nullptr);
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t size = params_[k].grad->numel() * static_cast<int64_t>(sizeof(float));
    if (buckets_.empty() || (bytes > 0 && bytes + size > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += size;
  }
  for (Bucket& b : buckets_) {
    int64_t n = 0;
    for (size_t k : b.params) n += params_[k].grad->numel();
    b.buffer.resize(static_cast<size_t>(n));
    b.pending = b.params.size();
  }
}

void GradReducer::start(Bucket& bucket) {
  float* out = bucket.buffer.data();
  for (size_t k : bucket.params) {
    const Tensor& g = *params_[k].grad;
    out = std::copy(g.data(), g.data() + g.numel(), out);
  }
  bucket.request = world_->allreduce_sum_async(bucket.buffer.data(), bucket.buffer.data(),
                                               static_cast<int64_t>(bucket.buffer.size()));
  bucket.started = true;
}

void GradReducer::mark_ready(size_t index) {
  SYNCBN_CHECK(index < params_.size());
  if (ready_[index]) return;
  ready_[index] = true;
  Bucket& bucket = buckets_[bucket_of_[index]];
  if (--bucket.pending == 0) start(bucket);
}

void GradReducer::finish() {
  for (size_t k = params_.size(); k-- > 0;) mark_ready(k);
  for (Bucket& bucket : buckets_) {
    bucket.request.wait();
    const float* in = bucket.buffer.data();
    for (size_t k : bucket.params) {
      Tensor& g = *params_[k].grad;
      std::copy(in, in + g.numel(), g.data());
      in += g.numel();
    }
    bucket.started = false;
    bucket.pending = bucket.params.size();
  }
  std::fill(ready_.begin(), ready_.end(), false);
}

}  // namespace syncbn::train

#include "train/grad_reducer.h"

#include <algorithm>

#include "core/error.h"

namespace syncbn::train {

std::vector<std::vector<size_t>> bucket_parameters(const std::vector<int64_t>& grad_bytes,
                                                   int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = bucket_bytes;  // closes the (absent) bucket before the first parameter
  for (size_t k = grad_bytes.size(); k-- > 0;) {
    if (bytes >= bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(k);
    bytes += grad_bytes[k];
  }
  return buckets;
}

GradReducer::GradReducer(std::vector<nn::ParamRef> params, comm::Communicator* world,
                         int64_t bucket_bytes)
    : params_(std::move(params)),
      world_(world),
      bucket_of_(params_.size()),
      ready_(params_.size(), false) {
  SYNCBN_CHECK(world_ != nullptr);
  std::vector<int64_t> grad_bytes;
  for (const nn::ParamRef& p : params_)
    grad_bytes.push_back(p.grad->numel() * static_cast<int64_t>(sizeof(float)));
  for (std::vector<size_t>& members : bucket_parameters(grad_bytes, bucket_bytes)) {
    Bucket& b = buckets_.emplace_back();
    b.params = std::move(members);
    int64_t n = 0;
    for (size_t k : b.params) {
      n += params_[k].grad->numel();
      bucket_of_[k] = buckets_.size() - 1;
    }
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

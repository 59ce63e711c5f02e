#include "nn/sync_batch_norm_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "core/error.h"
#include "nn/count_slot.h"
#include "nn/sync_batch_norm_cuda_kernels.h"
#include "norm/bn_pipeline.h"
#include "norm/cuda/kernels_cuda.h"

namespace syncbn::nn {
namespace {

namespace kernels = cuda_detail;

cudaStream_t to_cuda(CUstream_st* stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Starts no wait: drops the requests that have completed (test() is non-blocking).
void drop_completed(std::vector<comm::Request>& pending) {
  std::erase_if(pending, [](comm::Request& request) { return request.test(); });
}

// The stages of norm/cuda/kernels_cuda.h (float32 activations, float64 sums) and the layer's
// per-channel kernels on the layer's stream, for norm/bn_pipeline.h.
struct DeviceStages {
  using Count = const double*;
  CUstream_st* stream;
  template <class... A>
  void stats(A... a) const {
    norm::cuda::bn_stats<float, double>(a..., stream);
  }
  template <class... A>
  void gather_stats(A... a) const {
    norm::cuda::bn_gather_stats(a..., stream);
  }
  template <class... A>
  void update_running(A... a) const {
    norm::cuda::bn_update_running(a..., stream);
  }
  template <class... A>
  void save_stats(A... a) const {
    kernels::save_stats(a..., stream);
  }
  template <class... A>
  void elemt(A... a) const {
    norm::cuda::bn_elemt<float>(a..., stream);
  }
  template <class... A>
  void backward_reduce(A... a) const {
    norm::cuda::bn_backward_reduce<float, double>(a..., stream);
  }
  template <class... A>
  void accumulate_affine_grads(A... a) const {
    kernels::accumulate_affine_grads(a..., stream);
  }
  template <class... A>
  void backward_elemt(A... a) const {
    norm::cuda::bn_backward_elemt<float>(a..., stream);
  }
};

}  // namespace

SyncBatchNormCuda::SyncBatchNormCuda(const SyncBatchNormOptions& options, comm::Communicator* group,
                                     std::string name)
    : options_(options), group_(group), name_(std::move(name)) {
  SYNCBN_CHECK(group_ != nullptr);
  validate(options_, name_);
  const int64_t C = options_.num_features;
  SYNCBN_REQUIRE(group_->memory_space() == comm::MemorySpace::kCudaDevice, "SyncBatchNorm '", name_,
                 "' on CUDA needs a communicator with device buffers (nccl), got ",
                 comm::to_string(group_->backend()));
  stream_ = group_->cuda_stream();

  // Float64 first (payloads, statistics, count), then float32 (parameters, buffers, gradients,
  // saved statistics), then the status word.
  const size_t doubles = static_cast<size_t>(6 * C + 2);
  const size_t floats = static_cast<size_t>(8 * C);
  const size_t bytes = doubles * sizeof(double) + floats * sizeof(float) + sizeof(unsigned);
  SYNCBN_CUDA_CHECK(cudaMalloc(&device_, bytes));
  double* d = static_cast<double*>(device_);
  forward_payload_ = d;
  backward_payload_ = d + 2 * C + 1;
  mean_ = d + 4 * C + 1;
  var_ = d + 5 * C + 1;
  count_ = d + 6 * C + 1;
  float* f = reinterpret_cast<float*>(d + doubles);
  if (options_.affine) {
    weight_ = f, bias_ = f + C, grad_weight_ = f + 2 * C, grad_bias_ = f + 3 * C;
  }
  if (options_.track_running_stats) running_mean_ = f + 4 * C, running_var_ = f + 5 * C;
  saved_mean_ = f + 6 * C;
  saved_invstd_ = f + 7 * C;
  status_device_ = reinterpret_cast<unsigned*>(f + floats);
  SYNCBN_CUDA_CHECK(cudaMemsetAsync(device_, 0, bytes, to_cuda(stream_)));
  if (weight_ != nullptr) kernels::fill(weight_, C, 1.0f, stream_);
  if (running_var_ != nullptr) kernels::fill(running_var_, C, 1.0f, stream_);
  SYNCBN_CUDA_CHECK(cudaStreamSynchronize(to_cuda(stream_)));  // construction, not a step
}

SyncBatchNormCuda::~SyncBatchNormCuda() {
  try {
    for (comm::Request& request : pending_) request.wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "syncbn: SyncBatchNorm '%s': %s\n", name_.c_str(), e.what());
  }
  cudaStreamSynchronize(to_cuda(stream_));
  cudaFree(device_);
}

void SyncBatchNormCuda::forward(const float* x, const norm::BnGeometry& g, bool training,
                                float* y) {
  const int64_t C = options_.num_features;
  SYNCBN_REQUIRE(g.c == C, "SyncBatchNorm '", name_, "': expected input with ", C,
                 " channels, got ", g.c);
  const bool batch_stats = training || !options_.track_running_stats;
  saved_x_ = x;
  saved_g_ = g;
  saved_batch_stats_ = batch_stats;
  have_saved_ = true;
  const norm::BnBuffers b{weight_,     bias_,         nullptr, nullptr,
                          saved_mean_, saved_invstd_, mean_,   var_};
  if (!batch_stats) {  // Running statistics: a purely local pass, no collective.
    norm::pipeline::forward_running_stats(DeviceStages{stream_}, x, g, options_.eps, running_mean_,
                                          running_var_, b, y);
    return;
  }

  // The pipeline of norm/bn_pipeline.h; its one collective carries the count slot
  // (nn/count_slot.h), decoded and checked on the device.
  const slot::Layout layout = slot::layout(group_->size());
  SYNCBN_REQUIRE(slot::count_fits(g.count(), group_->size()), "SyncBatchNorm '", name_,
                 "': ", g.count(), " values per channel on one rank is too many");
  const auto reduce = [&](double* payload, int64_t size) -> const double* {
    kernels::set_scalar(payload, slot::encode(g.count(), slot::layer_tag(name_, calls_, C), layout),
                        stream_);
    allreduce_async(payload, size, counters_.forward_collectives, counters_.forward_bytes);
    ++calls_;
    kernels::decode_slot(payload, layout, group_->size(), count_, status_device_, stream_);
    return count_;
  };
  norm::BnRunning running;
  if (training && options_.track_running_stats) {
    running = {running_mean_, running_var_, options_.momentum, &num_batches_tracked_};
  }
  norm::pipeline::forward_batch_stats(DeviceStages{stream_}, x, g, options_.eps, running, b, reduce,
                                      forward_payload_, y);
}

void SyncBatchNormCuda::backward(const float* dy, float* dx) {
  SYNCBN_REQUIRE(have_saved_, "SyncBatchNorm '", name_, "': backward called before forward");
  const norm::BnBuffers b{weight_, bias_, grad_weight_, grad_bias_, saved_mean_, saved_invstd_};
  norm::pipeline::backward(
      DeviceStages{stream_}, dy, saved_x_, saved_g_, saved_batch_stats_, count_, b,
      [&](double* payload, int64_t size) {
        allreduce_async(payload, size, counters_.backward_collectives, counters_.backward_bytes);
        return count_;
      },
      backward_payload_, dx);
}

void SyncBatchNormCuda::allreduce_async(double* payload, int64_t size, int64_t& collectives,
                                        int64_t& bytes) {
  drop_completed(pending_);
  pending_.push_back(group_->allreduce_sum_async(payload, payload, size));
  ++collectives;
  bytes += size * static_cast<int64_t>(sizeof(double));
}

void SyncBatchNormCuda::finish() {
  for (comm::Request& request : pending_) request.wait();
  pending_.clear();
  const cudaStream_t s = to_cuda(stream_);
  unsigned status = 0;
  SYNCBN_CUDA_CHECK(
      cudaMemcpyAsync(&status, status_device_, sizeof(status), cudaMemcpyDeviceToHost, s));
  SYNCBN_CUDA_CHECK(cudaStreamSynchronize(s));
  if (status == 0) return;
  SYNCBN_CUDA_CHECK(cudaMemsetAsync(status_device_, 0, sizeof(unsigned), s));
  SYNCBN_REQUIRE((status & kernels::kLayerMismatch) == 0, "SyncBatchNorm '", name_,
                 "': the ranks of the BN group were not all in the same layer in a forward pass "
                 "since the last finish(); they called SyncBN layers in a different order or with "
                 "different channel counts");
  SYNCBN_REQUIRE((status & kernels::kTooFewValues) == 0,
                 "Expected more than 1 value per channel when training (SyncBatchNorm '", name_,
                 "' on rank ", group_->rank(),
                 ": at most 1 value per channel over the BN group of ", group_->size(),
                 " ranks in a forward pass since the last finish())");
}

}  // namespace syncbn::nn

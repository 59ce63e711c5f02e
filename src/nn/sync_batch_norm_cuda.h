// SyncBatchNormCuda: the SyncBatchNorm of nn/sync_batch_norm.h on device buffers, through a
// Communicator whose buffers are CUDA device memory (the nccl backend). Same math, the same stage
// pipeline (norm/bn_pipeline.h), one collective per pass, the same identity tag in the count slot:
//
//   forward   bn_stats → allreduce [slot, Σx (C), Σx² (C)] (float64, 8·(2C+1) bytes)
//             → decode the slot (count, tag check) → bn_gather_stats → running update → bn_elemt
//   backward  bn_backward_reduce → dγ, dβ += local sums → allreduce [sum_dy, sum_dy_xmu] (8·2C)
//             → bn_backward_elemt
//
// Everything is enqueued on the communicator's stream (group->cuda_stream()); the collectives
// are the non-blocking allreduce, ordered on that stream, so forward and backward never wait on
// the host. The group-wide count stays on the device (norm/cuda/kernels_cuda.h takes it by
// pointer). What the CPU layer checks on the host after the collective — fewer than 2 values per
// channel, ranks in different layers — is found by a device kernel and recorded in a status word;
// finish() synchronizes the stream once, waits for the collectives, and throws syncbn::Error
// naming the problem. Call it once per step, where the step synchronizes anyway (reading the
// loss); until then outputs of a failed step are garbage, never silently mixed statistics.
//
// Buffers: x must stay valid and unchanged from forward until backward (it is not copied). All
// tensors are float32, contiguous (N, C, S) or channels-last per the BnGeometry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "nn/sync_batch_norm.h"
#include "norm/kernels.h"

namespace syncbn::nn {

class SyncBatchNormCuda {
 public:
  // group: memory_space() must be kCudaDevice; not owned, must outlive the layer. The current
  // CUDA device must be the communicator's. Throws syncbn::Error like SyncBatchNorm's
  // constructor for bad options, and for a host-memory communicator.
  SyncBatchNormCuda(const SyncBatchNormOptions& options, comm::Communicator* group,
                    std::string name);
  ~SyncBatchNormCuda();
  SyncBatchNormCuda(const SyncBatchNormCuda&) = delete;
  SyncBatchNormCuda& operator=(const SyncBatchNormCuda&) = delete;

  // Collective over the group when batch statistics are used. x, y: device, shape g (any
  // N >= 0 on this rank). y may alias x only in eval mode (backward needs x).
  void forward(const float* x, const norm::BnGeometry& g, bool training, float* y);
  // Collective when the last forward used batch statistics. dx may alias dy. Adds the local dγ,
  // dβ to grad_weight / grad_bias.
  void backward(const float* dy, float* dx);
  // Synchronizes the stream, waits for this layer's collectives and throws syncbn::Error for a
  // problem the device found since the last finish(). The only host synchronization.
  void finish();

  // Device pointers, (C) each; null when the option is off.
  float* weight() const { return weight_; }
  float* bias() const { return bias_; }
  float* running_mean() const { return running_mean_; }
  float* running_var() const { return running_var_; }
  float* grad_weight() const { return grad_weight_; }
  float* grad_bias() const { return grad_bias_; }
  int64_t num_batches_tracked() const { return num_batches_tracked_; }
  const SyncBnCounters& counters() const { return counters_; }
  const std::string& name() const { return name_; }

 private:
  // Enqueues an in-place allreduce of payload on the stream and counts it.
  void allreduce_async(double* payload, int64_t size, int64_t& collectives, int64_t& bytes);

  SyncBatchNormOptions options_;
  comm::Communicator* group_;
  std::string name_;
  CUstream_st* stream_ = nullptr;

  // One device allocation, carved up (see the constructor).
  void* device_ = nullptr;
  double* forward_payload_ = nullptr;   // (2C + 1): slot, Σx, Σx²
  double* backward_payload_ = nullptr;  // (2C): sum_dy, sum_dy_xmu
  double* mean_ = nullptr;              // (C) float64
  double* var_ = nullptr;               // (C) float64, biased
  double* count_ = nullptr;             // (1) group-wide n
  float *weight_ = nullptr, *bias_ = nullptr, *running_mean_ = nullptr, *running_var_ = nullptr;
  float *grad_weight_ = nullptr, *grad_bias_ = nullptr;
  float *saved_mean_ = nullptr, *saved_invstd_ = nullptr;  // (C) float32, for elemt/backward
  // Status word (device): kernels set bits, finish() reads and clears them.
  unsigned* status_device_ = nullptr;

  int64_t num_batches_tracked_ = 0;
  int64_t calls_ = 0;
  SyncBnCounters counters_;
  std::vector<comm::Request> pending_;

  const float* saved_x_ = nullptr;
  norm::BnGeometry saved_g_;
  bool saved_batch_stats_ = false;
  bool have_saved_ = false;
};

}  // namespace syncbn::nn

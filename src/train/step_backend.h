// Where the training step runs. The loop (train/trainer.cc) is the same for every device: it
// loads data, schedules the learning rate, reports metrics, evaluates and checkpoints; a
// StepBackend does the step itself. The host model (Sequential) and optimizer (SGD) stay the
// reference copy that evaluation, checkpoints and weight export read: a backend that keeps its
// own copy (a GPU) brings them up to date in to_host() and takes them over in from_host().
//
//   cpu   the host model's layers and optim::SGD, gradients through GradReducer (trainer.cc)
//   cuda  cuDNN, cuBLAS, nn/cuda kernels and SyncBatchNormCuda on one GPU per rank, gradients
//         through NCCL (train/cuda/cuda_backend.cc); a build without CUDA has a stand-in that
//         throws (cuda_backend_unavailable.cc)
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "data/loader.h"
#include "optim/sgd.h"
#include "train/config.h"
#include "train/model.h"

namespace syncbn::train {

class StepBackend {
 public:
  virtual ~StepBackend() = default;
  // One step on this rank's slice of the global batch: forward, softmax cross-entropy scaled by
  // 1/global batch (so that the sum of the ranks' gradients is the global batch's), backward,
  // gradient allreduce over the world, SGD with learning rate lr. Collective over the world.
  virtual void step(const data::Batch& batch, double lr) = 0;
  // Σ over this rank's samples of the last step's loss.
  virtual double last_loss_sum() = 0;
  // Seconds this rank has spent inside SyncBN allreduces (0 where they are not timed).
  virtual double sync_bn_comm_seconds() = 0;
  // Brings the host model's parameters and buffers and the optimizer state up to date.
  virtual void to_host() {}
  // Takes over the host model and optimizer state (after --init-from or a resume).
  virtual void from_host() {}
};

// The CPU step over `model` and `sgd` (not owned; they must outlive the backend).
std::unique_ptr<StepBackend> make_cpu_backend(Sequential& model, optim::SGD& sgd,
                                              comm::Communicator& world);

// Throws syncbn::Error on this rank when device: cuda cannot run here: a build without the CUDA
// backend (naming how to build one), or no visible CUDA device. Local; the trainer calls it
// inside agree() so that every rank stops.
void require_cuda_device();

// The CUDA step: one GPU per rank (the rank's index on its node), a copy of the model and
// optimizer state on it. Collective over world (makes NCCL communicators). Call
// require_cuda_device() first.
// `info`: the dataset the model was built for (build_model).
std::unique_ptr<StepBackend> make_cuda_backend(const Config& config, const data::DatasetInfo& info,
                                               Sequential& model, optim::SGD& sgd,
                                               comm::Communicator& world);

}  // namespace syncbn::train

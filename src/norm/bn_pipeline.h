// The BN pipeline (STYLE.md rule 1), written once for every device: plain BN and SyncBN on the
// host (norm/norm.cc, nn/sync_batch_norm.cc) and SyncBN on a CUDA stream
// (nn/sync_batch_norm_cuda.cc). The stages of norm/kernels.h with one reduction between the local
// and the global ones; plain BN is SyncBN over a world of one.
//
//   forward:   stats → reduce [count slot, Σx (C), Σx² (C)] → gather_stats → update_running
//              → save_stats (mean, math::bn_invstd) → elemt
//   eval:      save_running_stats → elemt                                (nothing reduced)
//   backward:  backward_reduce → dγ, dβ += local sums → reduce [Σdy (C), Σdy·(x − mean) (C)]
//              → backward_elemt                                          (eval: nothing reduced)
//
// `stages` runs the stages where the buffers live; Stages::Count is how it passes the group-wide
// count: an int64_t on the host, a device pointer to a double on CUDA (reading it on the host
// would synchronize the stream). reduce(payload, size) sums the float64 payload over the BN group
// in place and returns the group-wide count; in the forward payload[0] is its own slot (SyncBN's
// count and layer tag), in the backward the result is unused. Plain BN's reduce returns the local
// count. Every pointer is (C) and lives where the stages run, unless noted.
#pragma once

#include <cstdint>
#include <optional>

#include "core/error.h"
#include "norm/kernels.h"

namespace syncbn::norm {

// The running statistics to update in a training forward; mean == nullptr: none. The factor is
// momentum, or 1/num_batches_tracked for momentum=None (cumulative average);
// *num_batches_tracked (host memory) is incremented when given, as PyTorch does whenever it
// tracks.
struct BnRunning {
  float* mean = nullptr;
  float* var = nullptr;  // unbiased
  std::optional<double> momentum;
  int64_t* num_batches_tracked = nullptr;  // may be null only with a momentum
};

// A layer's per-channel buffers for one pass. weight, bias and their gradients are null without
// affine; the gradients are accumulated from this rank's sums.
struct BnBuffers {
  const float* weight = nullptr;
  const float* bias = nullptr;
  float* grad_weight = nullptr;
  float* grad_bias = nullptr;
  float* saved_mean = nullptr;    // written by the forward, read by the backward
  float* saved_invstd = nullptr;  // likewise
  double* mean = nullptr;         // float64 scratch of the forward with batch statistics
  double* var = nullptr;          // likewise, biased
};

namespace pipeline {

// Forward with batch statistics; payload: (2C + 1). Returns the group-wide count.
template <class Stages, class Reduce>
typename Stages::Count forward_batch_stats(const Stages& stages, const float* x,
                                           const BnGeometry& g, double eps,
                                           const BnRunning& running, const BnBuffers& b,
                                           const Reduce& reduce, double* payload, float* y) {
  const int64_t C = g.c;
  double* sum = payload + 1;
  double* sumsq = sum + C;
  stages.stats(x, g, sum, sumsq);
  const typename Stages::Count count = reduce(payload, 2 * C + 1);
  stages.gather_stats(C, count, sum, sumsq, b.mean, b.var);
  if (running.mean != nullptr) {
    if (running.num_batches_tracked != nullptr) ++*running.num_batches_tracked;
    SYNCBN_CHECK(running.momentum || running.num_batches_tracked != nullptr);
    const double factor = running.momentum
                              ? *running.momentum
                              : 1.0 / static_cast<double>(*running.num_batches_tracked);
    stages.update_running(C, count, factor, b.mean, b.var, running.mean, running.var);
  }
  stages.save_stats(C, b.mean, b.var, eps, b.saved_mean, b.saved_invstd);
  stages.elemt(x, g, b.saved_mean, b.saved_invstd, b.weight, b.bias, y);
  return count;
}

// Forward with the running statistics (eval): no reduction.
template <class Stages>
void forward_running_stats(const Stages& stages, const float* x, const BnGeometry& g, double eps,
                           const float* running_mean, const float* running_var, const BnBuffers& b,
                           float* y) {
  stages.save_stats(g.c, running_mean, running_var, eps, b.saved_mean, b.saved_invstd);
  stages.elemt(x, g, b.saved_mean, b.saved_invstd, b.weight, b.bias, y);
}

// Backward of either forward (batch_stats says which); payload: (2C); count: the forward's.
// dx is overwritten.
template <class Stages, class Reduce>
void backward(const Stages& stages, const float* dy, const float* x, const BnGeometry& g,
              bool batch_stats, typename Stages::Count count, const BnBuffers& b,
              const Reduce& reduce, double* payload, float* dx) {
  const int64_t C = g.c;
  double* sum_dy = payload;
  double* sum_dy_xmu = payload + C;
  stages.backward_reduce(dy, x, g, b.saved_mean, sum_dy, sum_dy_xmu);
  if (b.grad_weight != nullptr) {
    stages.accumulate_affine_grads(C, sum_dy, sum_dy_xmu, b.saved_invstd, b.grad_weight,
                                   b.grad_bias);
  }
  if (!batch_stats) {  // Eval: the statistics are constants, nothing to exchange.
    stages.backward_elemt(dy, x, g, b.saved_mean, b.saved_invstd, b.weight, nullptr, nullptr, count,
                          dx);
    return;
  }
  reduce(payload, 2 * C);
  stages.backward_elemt(dy, x, g, b.saved_mean, b.saved_invstd, b.weight, sum_dy, sum_dy_xmu, count,
                        dx);
}

}  // namespace pipeline
}  // namespace syncbn::norm

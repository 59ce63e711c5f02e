// Tensor adapters over the normalization stages (norm/kernels.h): they check shapes, layouts
// and parameters, throw syncbn::Error with a message naming what was wrong, and call the
// stages. Semantics follow PyTorch 1.13's F.batch_norm, F.group_norm, F.layer_norm and
// F.instance_norm, including their defaults and error messages.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "norm/bn_pipeline.h"
#include "norm/kernels.h"
#include "tensor/tensor.h"

namespace syncbn::norm {

struct BatchNormOptions {
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // nullopt: cumulative moving average (momentum=None)
};

// One layer's parameters and buffers, borrowed. weight/bias null: affine = false.
// running_mean/running_var null: track_running_stats = false. num_batches_tracked may be null
// only when momentum is set (PyTorch increments it whenever it tracks running stats).
struct BatchNormState {
  const Tensor* weight = nullptr;  // (C)
  const Tensor* bias = nullptr;    // (C)
  Tensor* running_mean = nullptr;  // (C)
  Tensor* running_var = nullptr;   // (C)
  int64_t* num_batches_tracked = nullptr;
};

// What a forward pass keeps for its backward.
struct NormSaved {
  std::vector<float> mean;    // BN: (C); GN/IN: (N·G); LN: (rows)
  std::vector<float> invstd;  // same shape as mean
  int64_t count = 0;          // elements in each reduction set
  bool batch_stats = true;    // false: running statistics were used (eval)
};

struct NormGrads {
  Tensor dx;       // like x
  Tensor dweight;  // like weight; empty when affine = false
  Tensor dbias;    // like bias;   empty when affine = false
};

// The BN geometry of x, checked: 2-D to 5-D, channels_last only for 4-D/5-D, C == channels.
// `op` names the caller in messages.
BnGeometry bn_geometry(const Tensor& x, const char* op);

// The BN pipeline of norm/bn_pipeline.h on the host, for plain BN (batch_norm_forward,
// batch_norm_backward) and SyncBN (nn/sync_batch_norm.cc), whose reduce is a collective.
using BnReduce = std::function<int64_t(double* payload, int64_t size)>;

// Forward with batch statistics: fills saved (mean, invstd, count, batch_stats) and y.
void bn_forward_batch_stats(const float* x, const BnGeometry& g, double eps,
                            const BnRunning& running, const float* weight, const float* bias,
                            const BnReduce& reduce, NormSaved* saved, float* y);
// Forward with the running statistics (eval): no reduction.
void bn_forward_running_stats(const float* x, const BnGeometry& g, double eps,
                              const float* running_mean, const float* running_var,
                              const float* weight, const float* bias, NormSaved* saved, float* y);
// Backward of either forward: dx overwritten, grad_weight/grad_bias (null without affine)
// accumulated from this rank's sums. With running statistics nothing is reduced.
void bn_backward(const float* dy, const float* x, const BnGeometry& g, const NormSaved& saved,
                 const float* weight, const BnReduce& reduce, float* grad_weight, float* grad_bias,
                 float* dx);

// F.batch_norm. Batch statistics are used when training or when there are no running stats;
// then running stats (if any) are updated in place when training.
Tensor batch_norm_forward(const Tensor& x, const BatchNormState& state,
                          const BatchNormOptions& options, bool training, NormSaved* saved);
NormGrads batch_norm_backward(const Tensor& dy, const Tensor& x, const BatchNormState& state,
                              const NormSaved& saved);

// F.group_norm: groups must divide C; weight/bias (C) or null.
Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor* weight, const Tensor* bias,
                          double eps, NormSaved* saved);
NormGrads group_norm_backward(const Tensor& dy, const Tensor& x, int64_t groups,
                              const Tensor* weight, const NormSaved& saved);

// F.layer_norm over the trailing dims `normalized_shape`; weight/bias of that shape or null.
// Contiguous tensors only.
Tensor layer_norm_forward(const Tensor& x, const std::vector<int64_t>& normalized_shape,
                          const Tensor* weight, const Tensor* bias, double eps, NormSaved* saved);
NormGrads layer_norm_backward(const Tensor& dy, const Tensor& x,
                              const std::vector<int64_t>& normalized_shape, const Tensor* weight,
                              const NormSaved& saved);

// F.instance_norm: (N, C, *spatial) with at least one spatial dim. use_input_stats is the
// module's `training or not track_running_stats`; with input stats and running buffers the
// buffers are updated with the batch average of the per-instance statistics.
Tensor instance_norm_forward(const Tensor& x, const BatchNormState& state,
                             const BatchNormOptions& options, bool use_input_stats,
                             NormSaved* saved);
NormGrads instance_norm_backward(const Tensor& dy, const Tensor& x, const BatchNormState& state,
                                 const NormSaved& saved);

}  // namespace syncbn::norm

// The layers of a CNN, each a Layer (nn/layer.h) with PyTorch 1.13's semantics, kind() its
// PyTorch class name and its parameters and buffers under PyTorch's names, plus the loss.
//
//   Conv2d, Linear          oneDNN: Conv2d its convolution primitives (im2col + sgemm for
//                           one-channel inputs), Linear sgemm; PyTorch's default init
//   ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten, Identity
//   BatchNorm2d, GroupNorm, InstanceNorm2d      over the norm/norm.h adapters
//   SyncBatchNormLayer      kind "SyncBatchNorm": nn::SyncBatchNorm as a Layer
//   softmax_cross_entropy   the loss, with its gradient
//
// Inputs of the wrong rank or channel count throw syncbn::Error naming the layer kind and the
// expected and actual shapes; so does backward without a forward before it, or with a grad of
// the wrong shape. A forward keeps what its backward needs (a copy of the input, or a mask) until
// that backward, which releases it. Every layer accepts N = 0: empty outputs and gradients, and
// nothing added to parameter gradients. A channels-last input is accepted: Conv2d, Linear, the
// pools and Flatten return contiguous outputs, ReLU, Identity and the norms keep x's format.
//
// Threads: the elementwise, pooling, im2col/col2im and loss loops split their work statically
// over OpenMP threads with each output written by one thread, so their results do not depend on
// OMP_NUM_THREADS; the GEMMs and convolution primitives (oneDNN, on the same OpenMP threads) are
// bitwise reproducible for a given thread count but not across counts (the norm kernels: for a
// given OpenMP thread count, norm/parallel.h).
//
// Parameters are initialised from the Rng given to the constructor as PyTorch does
// (kaiming_uniform_(a=√5): weight and bias ~ U(−1/√fan_in, 1/√fan_in)): deterministic for a seed,
// not bitwise PyTorch's values. Norm layers start at weight = 1, bias = 0, running_mean = 0,
// running_var = 1, num_batches_tracked = 0.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "nn/layer.h"
#include "nn/sync_batch_norm.h"
#include "norm/norm.h"
#include "tensor/tensor.h"

namespace syncbn::nn {

// ---------------------------------------------------------------------------------------------
// Convolution and fully connected.

// torch.nn.Conv2d(in, out, kernel, stride, padding, bias=bias): square kernel, zero padding,
// no dilation or groups. x (N, in, H, W) → y (N, out, Ho, Wo), Ho = (H + 2·padding − kernel) /
// stride + 1 (floor). weight (out, in, kernel, kernel), bias (out).
class Conv2d : public Layer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
         int64_t padding, bool bias, Rng& rng);
  std::string kind() const override { return "Conv2d"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;
  void collect_parameters(std::vector<ParamRef>& out) override;

  Tensor& weight() { return weight_; }            // (out, in, k, k)
  Tensor& bias() { return bias_; }                // (out); empty without bias
  Tensor& grad_weight() { return grad_weight_; }  // like weight
  Tensor& grad_bias() { return grad_bias_; }      // like bias

 private:
  int64_t in_channels_, out_channels_, kernel_, stride_, padding_;
  bool has_bias_;
  Tensor weight_, bias_, grad_weight_, grad_bias_;
  // From the last forward until backward: its input shape, and either col (keep_col_, training
  // forwards) or a copy of its input. kept_col_ is reused from step to step.
  std::vector<int64_t> in_shape_;
  bool keep_col_ = false;
  std::vector<float> kept_col_;
  Tensor saved_x_;
  bool have_saved_ = false;
  // oneDNN convolution primitives and their buffers, one plan per recent input shape (conv.cc);
  // saved_plan_ is the last forward's, which holds what its backward needs.
  struct Plan;
  std::vector<std::shared_ptr<Plan>> plans_;
  std::shared_ptr<Plan> saved_plan_;
};

// torch.nn.Linear(in, out, bias=bias): x (*, in) → y (*, out), y = x·Wᵀ + b.
// weight (out, in), bias (out).
class Linear : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng);
  std::string kind() const override { return "Linear"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;
  void collect_parameters(std::vector<ParamRef>& out) override;

  Tensor& weight() { return weight_; }            // (out, in)
  Tensor& bias() { return bias_; }                // (out); empty without bias
  Tensor& grad_weight() { return grad_weight_; }  // like weight
  Tensor& grad_bias() { return grad_bias_; }      // like bias

 private:
  int64_t in_features_, out_features_;
  bool has_bias_;
  Tensor weight_, bias_, grad_weight_, grad_bias_;
  Tensor saved_x_;
  bool have_saved_ = false;
};

// ---------------------------------------------------------------------------------------------
// Activations, pooling, reshaping.

// torch.nn.ReLU: y = max(x, 0) (NaN stays NaN); dx = dy where y > 0, else 0. Any shape; y keeps
// x's memory format.
class ReLU : public Layer {
 public:
  std::string kind() const override { return "ReLU"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  std::vector<int64_t> shape_;
  MemoryFormat format_ = MemoryFormat::kContiguous;
  std::vector<uint8_t> positive_;  // y > 0, per stored element of the last forward
  bool have_saved_ = false;
};

// torch.nn.MaxPool2d(kernel, stride, padding): stride defaults to kernel (stride = 0 here),
// padding with −∞, floor output size. Ties go to the first maximum in window order and NaN wins,
// as in PyTorch; backward routes dy to those argmax positions (accumulating where windows
// overlap).
class MaxPool2d : public Layer {
 public:
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0);
  std::string kind() const override { return "MaxPool2d"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  int64_t kernel_, stride_, padding_;
  std::vector<int64_t> in_shape_, out_shape_;
  std::vector<int32_t> argmax_;  // per output: h·W + w within its input plane
  bool have_saved_ = false;
};

// torch.nn.AdaptiveAvgPool2d((output_h, output_w)): output cell (i, j) averages input rows
// [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉) and the same for columns. Default 1x1: the global average.
class AdaptiveAvgPool2d : public Layer {
 public:
  explicit AdaptiveAvgPool2d(int64_t output_size = 1)
      : AdaptiveAvgPool2d(output_size, output_size) {}
  AdaptiveAvgPool2d(int64_t output_h, int64_t output_w);
  std::string kind() const override { return "AdaptiveAvgPool2d"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  int64_t out_h_, out_w_;
  std::vector<int64_t> in_shape_;
  bool have_saved_ = false;
};

// torch.nn.Flatten(): (N, d1, d2, ...) → (N, d1·d2·...).
class Flatten : public Layer {
 public:
  std::string kind() const override { return "Flatten"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  std::vector<int64_t> in_shape_;
  MemoryFormat in_format_ = MemoryFormat::kContiguous;
  bool have_saved_ = false;
};

// torch.nn.Identity: y = x, dx = dy.
class Identity : public Layer {
 public:
  std::string kind() const override { return "Identity"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  std::vector<int64_t> shape_;
  bool have_saved_ = false;
};

// ---------------------------------------------------------------------------------------------
// Normalization (the math lives in norm/; DESIGN.md §1).

// What torch.nn.BatchNorm2d and InstanceNorm2d share, as PyTorch's _NormBase: parameters weight,
// bias (affine) and buffers running_mean, running_var, num_batches_tracked (track_running_stats)
// under PyTorch's names, and the backward through a norm/norm.h adapter. x (N, C, H, W).
class NormBase : public Layer {
 public:
  Tensor backward(const Tensor& dy) override;
  void collect_parameters(std::vector<ParamRef>& out) override;
  void collect_buffers(std::vector<BufferRef>& out) override;

  Tensor& weight() { return weight_; }
  Tensor& bias() { return bias_; }
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }
  int64_t& num_batches_tracked() { return num_batches_tracked_; }

 protected:
  using BackwardAdapter = norm::NormGrads (*)(const Tensor& dy, const Tensor& x,
                                              const norm::BatchNormState& state,
                                              const norm::NormSaved& saved);
  // kind: the class name for messages (kind() is not callable yet).
  NormBase(const char* kind, int64_t num_features, const norm::BatchNormOptions& options,
           bool affine, bool track_running_stats, BackwardAdapter adapter_backward);
  norm::BatchNormState state();

  int64_t num_features_;
  norm::BatchNormOptions options_;
  bool affine_, track_running_stats_;
  Tensor weight_, bias_, grad_weight_, grad_bias_, running_mean_, running_var_;
  int64_t num_batches_tracked_ = 0;
  Tensor saved_x_;  // the forward's input, kept for the backward
  norm::NormSaved saved_;
  bool have_saved_ = false;

 private:
  BackwardAdapter adapter_backward_;
};

// torch.nn.BatchNorm2d: momentum nullopt = cumulative average (None). Statistics are local to
// this process; see SyncBatchNormLayer. An empty batch returns an empty output and, training
// with running stats, still counts in num_batches_tracked (PyTorch increments it before looking
// at the input).
class BatchNorm2d : public NormBase {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5,
                       std::optional<double> momentum = 0.1, bool affine = true,
                       bool track_running_stats = true);
  std::string kind() const override { return "BatchNorm2d"; }
  Tensor forward(const Tensor& x, bool training) override;
};

// torch.nn.GroupNorm(num_groups, num_channels, eps, affine): x (N, C, *), C divisible by
// num_groups. Parameters weight, bias (affine); no buffers.
class GroupNorm : public Layer {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true);
  std::string kind() const override { return "GroupNorm"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;
  void collect_parameters(std::vector<ParamRef>& out) override;

  Tensor& weight() { return weight_; }
  Tensor& bias() { return bias_; }

 private:
  int64_t num_groups_, num_channels_;
  double eps_;
  bool affine_;
  Tensor weight_, bias_, grad_weight_, grad_bias_;
  Tensor saved_x_;
  norm::NormSaved saved_;
  bool have_saved_ = false;
};

// torch.nn.InstanceNorm2d(num_features, eps, momentum, affine, track_running_stats). affine has
// no default here: PyTorch's is false, and a model that wants the affine variant must say so.
// num_batches_tracked is never incremented, as in PyTorch. An empty batch leaves the running
// stats alone (PyTorch would overwrite them with NaN, the mean of no instances).
class InstanceNorm2d : public NormBase {
 public:
  InstanceNorm2d(int64_t num_features, bool affine, bool track_running_stats = false,
                 double eps = 1e-5, double momentum = 0.1);
  std::string kind() const override { return "InstanceNorm2d"; }
  Tensor forward(const Tensor& x, bool training) override;
};

// torch.nn.SyncBatchNorm as a Layer: kind "SyncBatchNorm", the state-dict names of BatchNorm2d.
// forward/backward are collective over `group` exactly as nn::SyncBatchNorm's (every rank of the
// group must call them, also with N = 0). With a group of one rank an empty batch returns an
// empty output without the "more than 1 value" error, as PyTorch's module (which then falls back
// to F.batch_norm) does.
class SyncBatchNormLayer : public Layer {
 public:
  // group: not owned, must outlive the layer; name: see nn::SyncBatchNorm.
  SyncBatchNormLayer(const SyncBatchNormOptions& options, comm::Communicator* group,
                     std::string name);
  std::string kind() const override { return "SyncBatchNorm"; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;
  void collect_parameters(std::vector<ParamRef>& out) override;
  void collect_buffers(std::vector<BufferRef>& out) override;

  SyncBatchNorm& impl() { return impl_; }

 private:
  SyncBatchNorm impl_;
  int group_size_;
  std::vector<int64_t> empty_shape_;  // set when the last forward took the empty local path
  bool empty_forward_ = false;
  bool have_forward_ = false;
};

// ---------------------------------------------------------------------------------------------
// Loss.

// Softmax cross-entropy of logits (N, K) against labels[0..N) in [0, K):
//
//   returns  Σ_i −log softmax(logits_i)[label_i]    (a sum over the N rows, float64; each row's
//                                                    log-sum-exp is taken around its maximum)
//   *dlogits = scale · (softmax(logits) − onehot(labels))     (N, K), overwritten; skipped if null
//   *correct = #{i : argmax_k logits_ik == label_i}           (first maximum); skipped if null
//
// The trainer passes scale = 1/global_batch, so that the sum of every rank's dlogits is the
// gradient of the global batch's mean loss. N = 0 returns 0. A label outside [0, K) throws
// syncbn::Error naming the sample and the label.
double softmax_cross_entropy(const Tensor& logits, const int32_t* labels, double scale,
                             Tensor* dlogits, int64_t* correct);

}  // namespace syncbn::nn

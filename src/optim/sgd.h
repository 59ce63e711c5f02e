// Stochastic gradient descent with PyTorch 1.13's torch.optim.SGD update rule (the per-tensor
// path, foreach=False), over one group of parameters. For every parameter p with gradient ∇p,
// with lr the learning rate of this step:
//
//   g = ∇p + weight_decay·p                     (every parameter, BatchNorm's included)
//   if momentum != 0:
//     buf = g                                   first step: a copy of g, not zeros
//     buf = momentum·buf + (1 − dampening)·g    later steps
//     g   = g + momentum·buf   if nesterov,   else   g = buf
//   p = p − lr·g
//
// Arithmetic is float32 in the order PyTorch's ops take, with the scalars rounded to float32 as
// PyTorch does: each "x + a·y" is one fused multiply-add, as in PyTorch's AVX2/AVX-512 CPU
// kernels, and momentum·buf is rounded before its add (mul_ then add_). Against Debian's
// python3-torch 1.13 (AVX2) the trajectories are bit-identical. Every element is updated
// independently, so the result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/layer.h"
#include "tensor/tensor.h"

namespace syncbn::optim {

struct SgdOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

// Throws syncbn::Error with PyTorch's message for options torch.optim.SGD rejects:
// "Invalid learning rate: -1", "Invalid momentum value: -0.5", "Invalid weight_decay value: ...",
// "Nesterov momentum requires a momentum and zero dampening". Values are printed in their
// shortest round-trip form. Non-finite lr, momentum or weight_decay are rejected too, with the
// same wording (PyTorch lets NaN through), and so is a non-finite dampening ("Invalid dampening
// value: nan"); a negative dampening is allowed, as in PyTorch.
void validate(const SgdOptions& options);

// What a checkpoint must keep to resume SGD exactly: PyTorch's state[p]["momentum_buffer"].
struct SgdState {
  // step() calls so far.
  int64_t step_count = 0;
  // Whether the buffers hold values. False until the first step with momentum != 0 (PyTorch
  // has no "momentum_buffer" entry then); the next step then starts them from a copy of g.
  bool momentum_initialized = false;
  // One per parameter, in the order (and with the names) of SGD::param_names(), each with its
  // parameter's shape and memory format. Empty while momentum_initialized is false.
  std::vector<Tensor> momentum_buffers = {};
};

class SGD {
 public:
  // Validates the options (see validate()) and the parameters: each needs a value and a grad
  // of the same shape and memory format, and no value may appear twice. The tensors must
  // outlive the optimizer; they are not copied.
  SGD(std::vector<nn::ParamRef> params, SgdOptions options);

  // One update of every parameter with learning rate lr (set by the schedule for this step).
  // Throws syncbn::Error for lr < 0 or non-finite, naming it as PyTorch does.
  void step(double lr);
  // One update with options().lr.
  void step() { step(options_.lr); }

  // Sets every gradient to zero (PyTorch 1.13's zero_grad(set_to_none=False)).
  void zero_grad();

  const SgdOptions& options() const { return options_; }
  const std::vector<nn::ParamRef>& params() const { return params_; }
  // The parameters' names, in order, as given in the ParamRefs.
  std::vector<std::string> param_names() const;

  int64_t step_count() const { return state_.step_count; }
  bool momentum_initialized() const { return state_.momentum_initialized; }
  // Aligned with params(); empty while !momentum_initialized().
  const std::vector<Tensor>& momentum_buffers() const { return state_.momentum_buffers; }

  // The whole optimizer state, for a checkpoint.
  const SgdState& state() const { return state_; }
  // Restores a state saved by state() (or read from a checkpoint). Throws syncbn::Error, naming
  // the parameter and what was expected, for a negative step count, a buffer count other than
  // the parameter count (0 when !momentum_initialized), or a buffer whose shape differs from its
  // parameter's; a buffer in another memory format is converted to the parameter's.
  void load_state(SgdState state);

 private:
  std::vector<nn::ParamRef> params_;
  SgdOptions options_;
  SgdState state_;
};

}  // namespace syncbn::optim

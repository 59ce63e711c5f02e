// Layers with forward and backward, PyTorch's module semantics, and the state-dict names of a
// torch.nn.Sequential of the same layers.
//
// Activations are float32 Tensors in contiguous layout: (N, C, H, W) for images, (N, F) after
// Flatten. A layer keeps what its backward needs from the last forward; backward(dy) returns dx
// and ADDS the parameter gradients into the grad tensors (zeroed by the optimizer or the caller),
// so gradients of a step accumulate the way PyTorch's .grad does. N may be 0 on a rank (an
// empty slice of the last global batch): every layer must accept it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace syncbn::nn {

// A parameter: its value and its gradient (same shape). `name` is the PyTorch attribute name
// inside the layer ("weight", "bias").
struct ParamRef {
  std::string name;
  Tensor* value = nullptr;
  Tensor* grad = nullptr;
};

// A buffer of the state dict: float32 (running_mean, running_var) or int64
// (num_batches_tracked). Exactly one of f32 / i64 is set.
struct BufferRef {
  std::string name;
  Tensor* f32 = nullptr;
  int64_t* i64 = nullptr;
};

class Layer {
 public:
  virtual ~Layer() = default;
  // PyTorch's class name ("Conv2d", "BatchNorm2d", "ReLU", ...).
  virtual std::string kind() const = 0;
  // Throws syncbn::Error for an input of the wrong shape, naming the layer and what it expected.
  virtual Tensor forward(const Tensor& x, bool training) = 0;
  virtual Tensor backward(const Tensor& dy) = 0;
  // Appended to out, in PyTorch's registration order (weight before bias).
  virtual void collect_parameters(std::vector<ParamRef>& /*out*/) {}
  virtual void collect_buffers(std::vector<BufferRef>& /*out*/) {}
};

}  // namespace syncbn::nn

// Containers: Layers that own named children, so that a model is a tree of modules with the
// state-dict names PyTorch gives the same tree ("layer2.0.downsample.1.running_var").
//
//   Sequential      torch.nn.Sequential, or any module whose forward applies its children in
//                   registration order (kind() names the PyTorch class, e.g. "ResNet")
//   ResidualBlock   torchvision's BasicBlock and Bottleneck: y = relu(main(x) + shortcut(x)),
//                   the shortcut being the child "downsample" or the identity
//
// A container has no parameters or buffers of its own: collect_parameters / collect_buffers
// return its children's, each name prefixed with the child's name and a dot, children in
// registration order. That is the order of PyTorch's state_dict() for such a tree.
//
// The backward hook (set on the root, passed down to every container below it) is called after
// the backward of every leaf layer with parameters, so that the gradient reducer can start the
// buckets whose gradients are final; in a residual block the main path's leaves finish before
// the shortcut's.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/layer.h"
#include "nn/layers.h"

namespace syncbn::nn {

// Called with each leaf layer whose backward has just run.
using BackwardHook = std::function<void(Layer&)>;

class Container : public Layer {
 public:
  struct Child {
    std::string name;
    std::unique_ptr<Layer> layer;
  };

  // Registers `layer` under `name` (unique among this container's children) and returns it.
  Layer& add(std::string name, std::unique_ptr<Layer> layer);
  const std::vector<Child>& children() const { return children_; }
  // The child called `name`, or nullptr.
  Layer* child(const std::string& name) const;

  void collect_parameters(std::vector<ParamRef>& out) override;
  void collect_buffers(std::vector<BufferRef>& out) override;

  // `hook` (not owned, may be null) for this container and every container below it.
  void set_backward_hook(const BackwardHook* hook);

 protected:
  // child.backward(dy), then the hook when child is a leaf.
  Tensor backward_child(Layer& child, const Tensor& dy);

 private:
  std::vector<Child> children_;
  const BackwardHook* hook_ = nullptr;
};

// Applies the children in registration order; backward in reverse.
class Sequential : public Container {
 public:
  explicit Sequential(std::string kind = "Sequential") : kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

 private:
  std::string kind_;
};

// A residual block with torchvision's children and forward:
//
//   BasicBlock   conv1 bn1 relu conv2 bn2 [downsample]
//                y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
//   Bottleneck   conv1 bn1 conv2 bn2 conv3 bn3 relu [downsample]
//                y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))
//
// shortcut = downsample when present, else the identity. The block runs the ReLUs on instances
// of its own (PyTorch reuses the one `relu` module; ours keep their mask for backward).
// Backward: dz = relu'(dy); the main path's backward from dz; the shortcut's from dz; dx is the
// sum of the two (the branch point's gradients accumulate).
class ResidualBlock : public Container {
 public:
  enum class Type { kBasic, kBottleneck };
  // Children are registered by the caller in torchvision's order (add()), then finish()
  // checks that every child the type needs is there.
  explicit ResidualBlock(Type type) : type_(type) {}
  std::string kind() const override { return type_ == Type::kBasic ? "BasicBlock" : "Bottleneck"; }
  void finish();

  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy) override;

  Type type() const { return type_; }
  // The main path's child names in execution order ("relu" where a ReLU runs).
  static const std::vector<std::string>& main_path(Type type);

 private:
  Type type_;
  std::vector<Layer*> main_;                  // execution order
  std::vector<std::unique_ptr<ReLU>> relus_;  // the main path's ReLUs, then the output's
  Layer* downsample_ = nullptr;
  std::vector<int64_t> out_shape_;
  bool have_forward_ = false;
};

// out = a + b, elementwise, in logical order (either may be channels-last; out is contiguous).
// Throws syncbn::Error naming `who` when the shapes differ.
Tensor add_tensors(const Tensor& a, const Tensor& b, const std::string& who);

}  // namespace syncbn::nn

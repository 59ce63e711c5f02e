#include "nn/module.h"

#include "core/error.h"
#include "nn/layer_util.h"

namespace syncbn::nn {

Layer& Container::add(std::string name, std::unique_ptr<Layer> layer) {
  SYNCBN_CHECK(layer != nullptr);
  SYNCBN_REQUIRE(child(name) == nullptr, kind(), ": a second child named '", name, "'");
  if (auto* container = dynamic_cast<Container*>(layer.get())) container->set_backward_hook(hook_);
  children_.push_back({std::move(name), std::move(layer)});
  return *children_.back().layer;
}

Layer* Container::child(const std::string& name) const {
  for (const Child& c : children_)
    if (c.name == name) return c.layer.get();
  return nullptr;
}

// What the children's collect() appends to out, each name prefixed with the child's and a dot.
template <typename Ref>
static void collect_prefixed(const std::vector<Container::Child>& children,
                             void (Layer::*collect)(std::vector<Ref>&), std::vector<Ref>& out) {
  for (const Container::Child& c : children) {
    const size_t first = out.size();
    ((*c.layer).*collect)(out);
    for (size_t i = first; i < out.size(); ++i) out[i].name = c.name + "." + out[i].name;
  }
}

void Container::collect_parameters(std::vector<ParamRef>& out) {
  collect_prefixed(children_, &Layer::collect_parameters, out);
}

void Container::collect_buffers(std::vector<BufferRef>& out) {
  collect_prefixed(children_, &Layer::collect_buffers, out);
}

void Container::set_backward_hook(const BackwardHook* hook) {
  hook_ = hook;
  for (Child& c : children_)
    if (auto* container = dynamic_cast<Container*>(c.layer.get()))
      container->set_backward_hook(hook);
}

Tensor Container::backward_child(Layer& child, const Tensor& dy) {
  Tensor dx = child.backward(dy);
  if (hook_ != nullptr && *hook_ && dynamic_cast<Container*>(&child) == nullptr) (*hook_)(child);
  return dx;
}

Tensor Sequential::forward(const Tensor& x, bool training) {
  Tensor h = x;
  for (const Child& c : children()) h = c.layer->forward(h, training);
  return h;
}

Tensor Sequential::backward(const Tensor& dy) {
  Tensor g = dy;
  for (size_t i = children().size(); i-- > 0;) g = backward_child(*children()[i].layer, g);
  return g;
}

const std::vector<std::string>& ResidualBlock::main_path(Type type) {
  static const std::vector<std::string> basic = {"conv1", "bn1", "relu", "conv2", "bn2"};
  static const std::vector<std::string> bottleneck = {"conv1", "bn1",  "relu",  "conv2",
                                                      "bn2",   "relu", "conv3", "bn3"};
  return type == Type::kBasic ? basic : bottleneck;
}

void ResidualBlock::finish() {
  main_.clear();
  relus_.clear();
  for (const std::string& name : main_path(type_)) {
    Layer* layer = child(name);
    SYNCBN_CHECK(layer != nullptr && "a residual block without one of its children");
    if (name == "relu") {
      relus_.push_back(std::make_unique<ReLU>());
      layer = relus_.back().get();
    }
    main_.push_back(layer);
  }
  relus_.push_back(std::make_unique<ReLU>());  // the output's
  downsample_ = child("downsample");
}

Tensor add_tensors(const Tensor& a, const Tensor& b, const std::string& who) {
  SYNCBN_REQUIRE(a.shape() == b.shape(), who, ": the residual branch gives ",
                 shape_to_string(a.shape()), " but the shortcut gives ", shape_to_string(b.shape()),
                 "; expected the same shape");
  const detail::Contiguous ac(a), bc(b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = ac.get().data();
  const float* pb = bc.get().data();
  float* po = out.data();
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
  return out;
}

Tensor ResidualBlock::forward(const Tensor& x, bool training) {
  SYNCBN_CHECK(!main_.empty() && "ResidualBlock::finish() was not called");
  Tensor h = x;
  for (Layer* layer : main_) h = layer->forward(h, training);
  const Tensor shortcut = downsample_ != nullptr ? downsample_->forward(x, training) : x;
  Tensor y = relus_.back()->forward(add_tensors(h, shortcut, kind()), training);
  out_shape_ = y.shape();
  have_forward_ = true;
  return y;
}

Tensor ResidualBlock::backward(const Tensor& dy) {
  detail::require_forward(have_forward_, kind());
  detail::require_grad_shape(dy, out_shape_, kind());
  have_forward_ = false;
  const Tensor dz = relus_.back()->backward(dy);
  Tensor g = dz;
  for (size_t i = main_.size(); i-- > 0;) g = backward_child(*main_[i], g);
  const Tensor d_shortcut = downsample_ != nullptr ? backward_child(*downsample_, dz) : dz;
  return add_tensors(g, d_shortcut, kind());
}

}  // namespace syncbn::nn

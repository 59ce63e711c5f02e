// Checks and small helpers shared by the layer implementations (nn/layers.h). Internal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "tensor/tensor.h"

namespace syncbn::nn::detail {

// x itself when contiguous, else a contiguous copy: the layers compute in logical row-major
// order and accept channels-last inputs by converting them once.
class Contiguous {
 public:
  explicit Contiguous(const Tensor& x) : ptr_(&x) {
    if (x.format() != MemoryFormat::kContiguous) {
      owned_ = x.to(MemoryFormat::kContiguous);
      ptr_ = &owned_;
    }
  }
  const Tensor& get() const { return *ptr_; }

 private:
  Tensor owned_;
  const Tensor* ptr_;
};

// The input a backward needs, saved by forward as a contiguous copy.
inline Tensor contiguous_copy(const Tensor& x) {
  return x.format() == MemoryFormat::kContiguous ? Tensor(x) : x.to(MemoryFormat::kContiguous);
}

inline void require_forward(bool have_saved, const std::string& kind) {
  SYNCBN_REQUIRE(have_saved, kind,
                 ": backward called without a forward before it (each forward allows one "
                 "backward)");
}

inline void require_grad_shape(const Tensor& dy, const std::vector<int64_t>& expected,
                               const std::string& kind) {
  SYNCBN_REQUIRE(dy.shape() == expected, kind, ": expected grad_output of size ",
                 shape_to_string(expected), " (the size of the last forward's output), got ",
                 shape_to_string(dy.shape()));
}

// A Tensor of `shape` holding `src`'s values in logical order (a reshape; same numel).
inline Tensor reshaped(const Tensor& src, std::vector<int64_t> shape) {
  const Contiguous c(src);
  Tensor out = Tensor::empty(std::move(shape));
  SYNCBN_CHECK(out.numel() == src.numel());
  const float* in = c.get().data();
  float* o = out.data();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] = in[i];
  return out;
}

// U(−bound, bound) from rng, in order.
inline void fill_uniform(Tensor& t, double bound, Rng& rng) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(bound * (2.0 * rng.uniform() - 1.0));
}

}  // namespace syncbn::nn::detail

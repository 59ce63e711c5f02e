// The per-element SGD update (optim/sgd.h states the rule), shared by optim::SGD (optim/sgd.cc)
// and the CUDA trainer's kernel (nn/cuda/layers_cuda.cu): `__host__ __device__` under nvcc,
// plain inline C++ otherwise, so the CPU tests run exactly what the kernel runs. It lives in nn
// because nn/cuda may not include optim (STYLE.md rule 7).
#pragma once

#include <cmath>
#include <cstdint>

#include "norm/norm_math.h"  // SYNCBN_HD

namespace syncbn::nn::math {

// One step's scalars, rounded to float32 as PyTorch does.
struct SgdStep {
  float weight_decay = 0;
  float momentum = 0;
  float one_minus_dampening = 1;
  float neg_lr = 0;
  bool has_weight_decay = false;
  bool has_momentum = false;
  bool first_momentum_step = false;  // buf = g (a copy), as PyTorch's first step
  bool nesterov = false;
};

// The scalars of a step with learning rate lr and the options of optim::SgdOptions;
// first_momentum_step: the momentum buffers hold nothing yet.
inline SgdStep sgd_step(double lr, double momentum, double dampening, double weight_decay,
                        bool nesterov, bool first_momentum_step) {
  SgdStep u;
  u.weight_decay = static_cast<float>(weight_decay);
  u.momentum = static_cast<float>(momentum);
  u.one_minus_dampening = static_cast<float>(1.0 - dampening);
  u.neg_lr = static_cast<float>(-lr);
  u.has_weight_decay = weight_decay != 0.0;
  u.has_momentum = momentum != 0.0;
  u.first_momentum_step = first_momentum_step;
  u.nesterov = nesterov;
  return u;
}

// A float32 product rounded on its own, never fused into a following add: PyTorch's mul_ then
// add_ (nvcc contracts a·b + c into an FMA by default; the CPU build uses -ffp-contract=off).
SYNCBN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Element i: every PyTorch `x.add(y, alpha=a)` is a fused multiply-add, as PyTorch's
// AVX2/AVX-512 CPU kernels compute it (Vectorized<float>::fmadd). buf is unused without momentum.
SYNCBN_HD void sgd_update_element(const SgdStep& u, float* value, const float* grad, float* buf,
                                  int64_t i) {
  float g = grad[i];
  if (u.has_weight_decay) g = std::fma(u.weight_decay, value[i], g);
  if (u.has_momentum) {
    float b = g;
    if (!u.first_momentum_step) b = std::fma(u.one_minus_dampening, g, mul_rn(buf[i], u.momentum));
    buf[i] = b;
    g = u.nesterov ? std::fma(u.momentum, b, g) : b;
  }
  value[i] = std::fma(u.neg_lr, g, value[i]);
}

}  // namespace syncbn::nn::math

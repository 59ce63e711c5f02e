// The per-row math of softmax cross-entropy, shared by the CPU loss (nn/loss.cc) and the CUDA
// kernel (nn/cuda/layers_cuda.cu): `__host__ __device__` under nvcc, plain inline C++
// otherwise, so the CPU tests run exactly what the kernel runs.
#pragma once

#include <cmath>
#include <cstdint>

#include "norm/norm_math.h"  // SYNCBN_HD

namespace syncbn::nn::math {

// Row z (K logits) with target `label`: returns −log softmax(z)[label] in float64 (log-sum-exp
// around the first maximum, whose index goes to *argmax). With d, also writes the gradient of
// scale · loss: d[k] = scale · (softmax(z)[k] − [k == label]).
SYNCBN_HD double softmax_xent_row(const float* z, int64_t K, int64_t label, double scale, float* d,
                                  int64_t* argmax) {
  int64_t best = 0;
  for (int64_t k = 1; k < K; ++k)
    if (z[k] > z[best]) best = k;
  const double m = z[best];
  double sum = 0.0;
  for (int64_t k = 0; k < K; ++k) sum += std::exp(static_cast<double>(z[k]) - m);
  const double lse = m + std::log(sum);
  if (d != nullptr) {
    for (int64_t k = 0; k < K; ++k)
      d[k] = static_cast<float>(
          scale * (std::exp(static_cast<double>(z[k]) - lse) - (k == label ? 1.0 : 0.0)));
  }
  *argmax = best;
  return lse - z[label];
}

}  // namespace syncbn::nn::math

// Straightforward float64 references for the norm tests: loops over (n, c, s) in logical order,
// written from DESIGN.md §1 without sharing code with src/norm.
#pragma once

#include <cmath>
#include <vector>

#include "tensor/tensor.h"

namespace syncbn::testing {

// Logical-order float64 copy of a tensor's values, index (n·C + c)·S + s.
inline std::vector<double> logical(const Tensor& t) {
  const int64_t N = t.size(0), C = t.dim() > 1 ? t.size(1) : 1, S = spatial_size(t.shape());
  std::vector<double> out(t.numel());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s) out[(n * C + c) * S + s] = t.data()[t.offset(n, c, s)];
  return out;
}

struct RefBn {
  std::vector<double> y, mean, var;  // var biased
};

// Batch statistics BN over logical x (N, C, S), optional affine.
inline RefBn ref_bn_forward(const std::vector<double>& x, int64_t N, int64_t C, int64_t S,
                            const std::vector<double>* w, const std::vector<double>* b,
                            double eps) {
  RefBn r{std::vector<double>(x.size()), std::vector<double>(C), std::vector<double>(C)};
  const double n = static_cast<double>(N * S);
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t s = 0; s < S; ++s) sum += x[(i * C + c) * S + s];
    const double mean = sum / n;
    double sq = 0;  // two-pass variance
    for (int64_t i = 0; i < N; ++i)
      for (int64_t s = 0; s < S; ++s) {
        const double d = x[(i * C + c) * S + s] - mean;
        sq += d * d;
      }
    r.mean[c] = mean;
    r.var[c] = sq / n;
    const double invstd = 1.0 / std::sqrt(r.var[c] + eps);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t s = 0; s < S; ++s) {
        const int64_t k = (i * C + c) * S + s;
        r.y[k] = (x[k] - mean) * invstd * (w ? (*w)[c] : 1.0) + (b ? (*b)[c] : 0.0);
      }
  }
  return r;
}

// Group statistics over logical x (N, C, S): groups of C/G channels per batch item.
inline std::vector<double> ref_gn_forward(const std::vector<double>& x, int64_t N, int64_t C,
                                          int64_t S, int64_t G, const std::vector<double>* w,
                                          const std::vector<double>* b, double eps) {
  std::vector<double> y(x.size());
  const int64_t cpg = C / G;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t g = 0; g < G; ++g) {
      double sum = 0, sq = 0;
      const int64_t begin = (i * C + g * cpg) * S, end = begin + cpg * S;
      for (int64_t k = begin; k < end; ++k) sum += x[k];
      const double mean = sum / static_cast<double>(cpg * S);
      for (int64_t k = begin; k < end; ++k) sq += (x[k] - mean) * (x[k] - mean);
      const double invstd = 1.0 / std::sqrt(sq / static_cast<double>(cpg * S) + eps);
      for (int64_t k = begin; k < end; ++k) {
        const int64_t c = (k / S) % C;
        y[k] = (x[k] - mean) * invstd * (w ? (*w)[c] : 1.0) + (b ? (*b)[c] : 0.0);
      }
    }
  return y;
}

}  // namespace syncbn::testing

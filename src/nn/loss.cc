// Softmax cross-entropy (nn/layers.h). Per row i, with m_i = max_k z_ik:
//
//   lse_i  = m_i + log Σ_k exp(z_ik − m_i)          (float64; no exp overflows)
//   loss_i = lse_i − z_i,label_i
//   dz_ik  = scale · (exp(z_ik − lse_i) − [k == label_i])
//
// Rows are independent and split statically over threads; the N losses are summed in row order
// afterwards, so the result does not depend on the thread count.
#include <cmath>
#include <vector>

#include "core/error.h"
#include "nn/layer_util.h"
#include "nn/layers.h"
#include "nn/loss_math.h"
#include "norm/parallel.h"

namespace syncbn::nn {

double softmax_cross_entropy(const Tensor& logits, const int32_t* labels, double scale,
                             Tensor* dlogits, int64_t* correct) {
  SYNCBN_REQUIRE(logits.dim() == 2 && logits.size(1) >= 1,
                 "softmax_cross_entropy: expected logits of size (N, K) with K >= 1, got ",
                 shape_to_string(logits.shape()));
  const int64_t N = logits.size(0), K = logits.size(1);
  SYNCBN_REQUIRE(N == 0 || labels != nullptr, "softmax_cross_entropy: no labels for ", N,
                 " samples");
  for (int64_t i = 0; i < N; ++i) {
    SYNCBN_REQUIRE(labels[i] >= 0 && labels[i] < K, "softmax_cross_entropy: sample ", i,
                   " has label ", labels[i], ", expected a class in [0, ", K, ")");
  }
  const detail::Contiguous zc(logits);
  const float* z = zc.get().data();
  if (dlogits != nullptr) *dlogits = Tensor::empty({N, K});
  float* dz = dlogits != nullptr ? dlogits->data() : nullptr;
  std::vector<double> loss(static_cast<size_t>(N));
  std::vector<uint8_t> hit(static_cast<size_t>(N));
#pragma omp parallel for schedule(static) num_threads(norm::thread_count_for(N* K * 8))
  for (int64_t i = 0; i < N; ++i) {
    int64_t argmax = 0;
    loss[i] = math::softmax_xent_row(z + i * K, K, labels[i], scale,
                                     dz != nullptr ? dz + i * K : nullptr, &argmax);
    hit[i] = argmax == labels[i];
  }
  double total = 0.0;
  int64_t hits = 0;
  for (int64_t i = 0; i < N; ++i) {
    total += loss[i];
    hits += hit[i];
  }
  if (correct != nullptr) *correct = hits;
  return total;
}

}  // namespace syncbn::nn

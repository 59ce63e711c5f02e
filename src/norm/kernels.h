// Normalization stages, declared once; norm/*_cpu.cc implements them on the host and
// norm/cuda implements the same list in the same order (STYLE.md rules 1-4).
//
// ---------------------------------------------------------------------------------------------
// BatchNorm. x is (N, C, *spatial) seen as N·S "rows" per channel; S = prod(spatial) (1 for 2-D).
// Per channel c, over the reduction set S_c of count n (every rank of the BN group for SyncBN):
//
//   mean = Σx / n,  var = Σx²/n − mean²  (biased; sums in float64, so |mean|/std up to 1e4 keeps
//                                         var accurate),  invstd = 1/sqrt(var + eps)
//   y    = (x − mean)·invstd·γ + β                       (γ = 1, β = 0 without weight/bias)
//   running_mean ← (1−m)·running_mean + m·mean
//   running_var  ← (1−m)·running_var  + m·var·n/(n−1)    (unbiased)
//
// Backward, sums over the same set S_c:
//   sum_dy = Σ dy,  sum_dy_xmu = Σ dy·(x − mean)
//   dx = γ·invstd·(dy − sum_dy/n − (x − mean)·invstd²·sum_dy_xmu/n)
//   dγ = invstd·sum_dy_xmu(local),  dβ = sum_dy(local)
// In eval mode (running stats) mean and invstd are constants, so dx = γ·invstd·dy.
//
// Stage outputs are overwritten, never accumulated. All stages are deterministic for a given
// thread count. Collectives happen only between stages (nn/sync_batch_norm).
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cstdint>

namespace syncbn::norm {

// How an (N, C, *spatial) activation sits in memory.
struct BnGeometry {
  int64_t n = 0;                           // batch
  int64_t c = 0;                           // channels
  int64_t s = 1;                           // prod(spatial); 1 for (N, C)
  bool channels_last = false;              // (N, *spatial, C) in memory
  int64_t count() const { return n * s; }  // elements per channel
};

// Stage 1: local per-channel sums.             x (N,C,S) → sum (C), sumsq (C), float64.
void bn_stats(const float* x, const BnGeometry& g, double* sum, double* sumsq);

// Stage 2: global sums → statistics. count is the group-wide n (> 0).
// mean (C), var (C): biased variance; both float64.
void bn_gather_stats(int64_t channels, int64_t count, const double* sum, const double* sumsq,
                     double* mean, double* var);

// Running-stat update with factor m (momentum, or 1/num_batches_tracked for momentum=None).
// var is biased; it is made unbiased with count (> 1) here.
void bn_update_running(int64_t channels, int64_t count, double factor, const double* mean,
                       const double* var, float* running_mean, float* running_var);

// Stage 3: y = (x − mean)·invstd·γ + β. weight/bias may be null (affine = false).
// mean, invstd, weight, bias: (C). y may alias x.
void bn_elemt(const float* x, const BnGeometry& g, const float* mean, const float* invstd,
              const float* weight, const float* bias, float* y);

// Stage 4: local sum_dy (C) and sum_dy_xmu (C), float64.
void bn_backward_reduce(const float* dy, const float* x, const BnGeometry& g, const float* mean,
                        double* sum_dy, double* sum_dy_xmu);

// Stage 5: dx from the group-wide sums and count. With sum_dy == sum_dy_xmu == nullptr the batch
// statistics are treated as constants (eval mode): dx = γ·invstd·dy. dx may alias dy.
void bn_backward_elemt(const float* dy, const float* x, const BnGeometry& g, const float* mean,
                       const float* invstd, const float* weight, const double* sum_dy,
                       const double* sum_dy_xmu, int64_t count, float* dx);

// ---------------------------------------------------------------------------------------------
// GroupNorm family. x is (N, C, S); channels split into G groups of C/G consecutive channels.
// Statistics per (n, g) over D = (C/G)·S elements, biased variance:
//   y = (x − mean_ng)·invstd_ng·γ_c + β_c
// Backward with xhat = (x − mean)·invstd and dxhat = dy·γ_c, means over the group's D elements:
//   dx = invstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat))
//   dγ_c = Σ_n,s dy·xhat,   dβ_c = Σ_n,s dy
// InstanceNorm is G = C; LayerNorm over all of (C, S) with a per-element affine is
// ln_* below, the same math with one group per row and an affine of D elements.
// ---------------------------------------------------------------------------------------------

// mean (N·G), invstd (N·G) in float32 from float64 sums; var (N·G, biased) optional.
void gn_stats(const float* x, const BnGeometry& g, int64_t groups, double eps, float* mean,
              float* invstd, double* var);

// y = (x − mean)·invstd·γ_c + β_c. weight/bias (C) may be null. y may alias x.
void gn_elemt(const float* x, const BnGeometry& g, int64_t groups, const float* mean,
              const float* invstd, const float* weight, const float* bias, float* y);

// dx (N,C,S); dweight, dbias (C), each may be null. Overwritten.
void gn_backward(const float* dy, const float* x, const BnGeometry& g, int64_t groups,
                 const float* mean, const float* invstd, const float* weight, float* dx,
                 float* dweight, float* dbias);

// LayerNorm over the trailing D elements of each of M rows; weight/bias (D) may be null.
void ln_forward(const float* x, int64_t rows, int64_t d, double eps, const float* weight,
                const float* bias, float* y, float* mean, float* invstd);
void ln_backward(const float* dy, const float* x, int64_t rows, int64_t d, const float* mean,
                 const float* invstd, const float* weight, float* dx, float* dweight, float* dbias);

}  // namespace syncbn::norm

// Math shared by the CPU stages (norm/*_cpu.cc) and the CUDA stages (norm/cuda/*.cu): the
// per-element formulas, the per-channel coefficients, the merge of partial statistics, the
// index math of both layouts and the split of a range for 16-byte vector loads. Everything here
// is `__host__ __device__` under nvcc and plain inline C++ otherwise, so the CPU tests
// (tests/norm/norm_math_test.cc) exercise exactly what the kernels run.
//
// Statistics are carried two ways (see kernels.h for the math):
//   SumStats<double>:  n, Σx, Σx² in float64 — what the CPU and the float64 CUDA path use and
//                      what SyncBN allreduces. Accurate for |mean|/std up to ~1e4 because float64
//                      has 53 bits: Σx²/n − mean² loses ~2·log2(|mean|/std) of them.
//   Welford<float>:    n, mean, M2 (Chan et al. merge) — the float32-statistics CUDA path, where
//                      Σx² in float32 would lose the variance entirely for |mean|/std ≳ 1e3.
// Both convert to the float64 sums (to_sums) at the end of a block, so every path hands the same
// [Σx, Σx²] to bn_gather_stats and to the collective.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SYNCBN_HD __host__ __device__ __forceinline__
#else
#define SYNCBN_HD inline
#endif

namespace syncbn::norm::math {

// ---------------------------------------------------------------------------------------------
// Index math. x is (N, C, S) logically. Contiguous: element (n, c, s) at (n·C + c)·S + s.
// Channels-last: at (n·S + s)·C + c. `S == 1` makes both the same (N, C) matrix.

SYNCBN_HD int64_t element_offset(int64_t n, int64_t c, int64_t s, int64_t C, int64_t S,
                                 bool channels_last) {
  return channels_last ? (n * S + s) * C + c : (n * C + c) * S + s;
}

// The channel of flat element i.
SYNCBN_HD int64_t channel_of(int64_t i, int64_t C, int64_t S, bool channels_last) {
  return channels_last ? i % C : (i / S) % C;
}

// The batch item of flat element i.
SYNCBN_HD int64_t batch_of(int64_t i, int64_t C, int64_t S) { return i / (C * S); }

// Channel c of a contiguous tensor is N runs of S consecutive elements, run n starting here.
SYNCBN_HD int64_t channel_run_begin(int64_t n, int64_t c, int64_t C, int64_t S) {
  return (n * C + c) * S;
}

// A channel's runs cut into pieces of at most piece_len elements, numbered n·pieces_per_run + p:
// the CUDA reductions hand pieces to blocks so that a few long runs still fill the device.
struct Piece {
  int64_t begin;  // flat element offset
  int64_t len;
};
SYNCBN_HD int64_t pieces_per_run(int64_t S, int64_t piece_len) {
  return (S + piece_len - 1) / piece_len;
}
SYNCBN_HD Piece channel_piece(int64_t item, int64_t c, int64_t C, int64_t S, int64_t piece_len) {
  const int64_t per_run = pieces_per_run(S, piece_len);
  const int64_t n = item / per_run, p = item % per_run;
  const int64_t first = p * piece_len;
  const int64_t len = S - first < piece_len ? S - first : piece_len;
  return {channel_run_begin(n, c, C, S) + first, len};
}

// ---------------------------------------------------------------------------------------------
// Splitting a range of `count` elements of `elem_bytes` each, starting at byte address `addr`,
// for 16-byte vector loads: head elements before the first 16-byte boundary, body in whole
// vectors, tail after the last. A range that can never be aligned (addr not a multiple of
// elem_bytes) is all head.
struct VecSplit {
  int64_t head;     // scalar elements at the start
  int64_t vectors;  // 16-byte vectors after the head
  int64_t tail;     // scalar elements at the end
};
inline constexpr int kVecBytes = 16;

SYNCBN_HD VecSplit split_for_vectors(uint64_t addr, int64_t count, int elem_bytes) {
  if (count <= 0) return {0, 0, 0};
  if (addr % static_cast<uint64_t>(elem_bytes) != 0) return {count, 0, 0};
  const int64_t per_vec = kVecBytes / elem_bytes;
  const uint64_t misalign = addr % kVecBytes;
  int64_t head = misalign == 0 ? 0 : static_cast<int64_t>((kVecBytes - misalign) / elem_bytes);
  if (head > count) head = count;
  const int64_t vectors = (count - head) / per_vec;
  return {head, vectors, count - head - vectors * per_vec};
}

// Thread `tid` of `threads` visits a split range: body(index, vectors) once per scalar element
// (vectors == false) or per 16-byte vector of per_vec elements starting at index (true). Head,
// vectors and tail are each dealt round-robin; every element is visited once.
template <typename Body>
SYNCBN_HD void for_each_split_item(const VecSplit& split, int per_vec, int64_t tid, int64_t threads,
                                   Body&& body) {
  for (int64_t i = tid; i < split.head; i += threads) body(i, false);
  for (int64_t v = tid; v < split.vectors; v += threads) body(split.head + v * per_vec, true);
  const int64_t tail_begin = split.head + split.vectors * per_vec;
  for (int64_t i = tid; i < split.tail; i += threads) body(tail_begin + i, false);
}

// Arrays read or written together at the same element offsets can use vectors only when they
// share their 16-byte misalignment: then a split computed for one fits all of them.
SYNCBN_HD bool co_aligned(uint64_t a, uint64_t b) { return (a - b) % kVecBytes == 0; }
SYNCBN_HD VecSplit scalar_split(int64_t count) { return {count > 0 ? count : 0, 0, 0}; }

// Rows of C elements (channels-last, or (N, C)) can be read as 16-byte vectors of channels when
// the base is 16-byte aligned, every row starts on a boundary (C a multiple of the elements per
// vector) and the other arrays are co-aligned.
SYNCBN_HD bool rows_vectorizable(uint64_t base, int64_t C, int elem_bytes, bool all_co_aligned) {
  return all_co_aligned && base % kVecBytes == 0 && C % (kVecBytes / elem_bytes) == 0;
}

// ---------------------------------------------------------------------------------------------
// Partial statistics and their merge. Every accumulator has push (one value), merge (another
// partition, possibly empty) and to_sums (float64 count-weighted sums).

template <typename Acc>
struct SumStats {
  int64_t count = 0;
  Acc sum = 0, sumsq = 0;
  SYNCBN_HD void push(Acc v) {
    ++count;
    sum += v;
    sumsq += v * v;
  }
  SYNCBN_HD void merge(const SumStats& o) {
    count += o.count;
    sum += o.sum;
    sumsq += o.sumsq;
  }
  SYNCBN_HD void to_sums(double& s, double& ss) const {
    s = static_cast<double>(sum);
    ss = static_cast<double>(sumsq);
  }
};

template <typename Acc>
struct Welford {
  int64_t count = 0;
  Acc mean = 0, m2 = 0;  // m2 = Σ (x − mean)²
  SYNCBN_HD void push(Acc v) {
    ++count;
    const Acc delta = v - mean;
    mean += delta / static_cast<Acc>(count);
    m2 += delta * (v - mean);
  }
  // Chan et al.: n = na + nb, δ = mean_b − mean_a, mean = mean_a + δ·nb/n,
  // M2 = M2_a + M2_b + δ²·na·nb/n. Either side may be empty.
  SYNCBN_HD void merge(const Welford& o) {
    if (o.count == 0) return;
    if (count == 0) {
      *this = o;
      return;
    }
    const int64_t n = count + o.count;
    const Acc nb_over_n = static_cast<Acc>(o.count) / static_cast<Acc>(n);
    const Acc delta = o.mean - mean;
    mean += delta * nb_over_n;
    m2 += o.m2 + delta * delta * static_cast<Acc>(count) * nb_over_n;
    count = n;
  }
  // Σx = n·mean, Σx² = M2 + n·mean², formed in float64.
  SYNCBN_HD void to_sums(double& s, double& ss) const {
    const double n = static_cast<double>(count), m = static_cast<double>(mean);
    s = n * m;
    ss = static_cast<double>(m2) + n * m * m;
  }
};

// Two plain sums, for backward: Σ dy and Σ dy·(x − mean) need no centering.
template <typename Acc>
struct PairSums {
  Acc a = 0, b = 0;
  SYNCBN_HD void push(Acc va, Acc vb) {
    a += va;
    b += vb;
  }
  SYNCBN_HD void merge(const PairSums& o) {
    a += o.a;
    b += o.b;
  }
};

// ---------------------------------------------------------------------------------------------
// BatchNorm per-channel formulas (kernels.h).

// Stage 2: mean and biased variance from float64 sums. Rounding can leave a tiny negative
// variance for a constant channel; it is clamped to 0.
SYNCBN_HD void bn_mean_var(double sum, double sumsq, double inv_count, double& mean, double& var) {
  mean = sum * inv_count;
  const double v = sumsq * inv_count - mean * mean;
  var = v > 0.0 ? v : 0.0;
}

SYNCBN_HD float bn_invstd(double var, double eps) {
  return static_cast<float>(1.0 / std::sqrt(var + eps));
}

// running ← (1 − m)·running + m·batch·unbias (unbias = n/(n − 1) for the variance, else 1).
SYNCBN_HD float running_update(float running, double batch, double factor, double unbias = 1.0) {
  return static_cast<float>((1.0 - factor) * running + factor * batch * unbias);
}

// Stage 3: y = (x − mean)·scale + shift with scale = invstd·γ, shift = β. Subtracting the mean
// first keeps y accurate when |mean| ≫ std. relu: max(y, 0), the fused BN+ReLU.
SYNCBN_HD float bn_scale(float invstd, const float* weight, int64_t c) {
  return invstd * (weight != nullptr ? weight[c] : 1.0f);
}
SYNCBN_HD float bn_shift(const float* bias, int64_t c) { return bias != nullptr ? bias[c] : 0.0f; }
SYNCBN_HD float bn_normalize(float x, float mean, float scale, float shift) {
  return (x - mean) * scale + shift;
}
SYNCBN_HD float relu(float y) { return y > 0.0f ? y : 0.0f; }

// Stage 5: dx = (dy − mean_dy − (x − mean)·k)·scale with mean_dy = sum_dy/n,
// k = invstd²·sum_dy_xmu/n, scale = γ·invstd (float64 in, float32 out). Eval mode (no sums):
// mean_dy = k = 0.
struct BnBackwardCoef {
  float mean_dy, k, scale;
};
SYNCBN_HD BnBackwardCoef bn_backward_coef(float invstd, const float* weight, int64_t c,
                                          const double* sum_dy, const double* sum_dy_xmu,
                                          double count) {
  const double is = invstd;
  BnBackwardCoef r{0.0f, 0.0f, static_cast<float>(is * (weight != nullptr ? weight[c] : 1.0f))};
  if (sum_dy != nullptr) {
    r.mean_dy = static_cast<float>(sum_dy[c] / count);
    r.k = static_cast<float>(is * is * sum_dy_xmu[c] / count);
  }
  return r;
}
SYNCBN_HD float bn_backward_element(float dy, float x, float mean, const BnBackwardCoef& k) {
  return (dy - k.mean_dy - (x - mean) * k.k) * k.scale;
}

// ---------------------------------------------------------------------------------------------
// GroupNorm / LayerNorm backward coefficients (kernels.h): per (n, c) of group g with D elements,
// A = Σ_c∈g γ_c·Σ_s dy, B = Σ_c∈g γ_c·Σ_s dy·(x − mean):
//   dx = p·dy + q·(x − mean) + r,  p = σ·γ_c, q = −σ³·B/D, r = −σ·A/D.
struct GnBackwardCoef {
  float p, q, r;
};
SYNCBN_HD GnBackwardCoef gn_backward_coef(double sigma, double gamma, double A, double B,
                                          double D) {
  return {static_cast<float>(sigma * gamma), static_cast<float>(-sigma * sigma * sigma * B / D),
          static_cast<float>(-sigma * A / D)};
}
SYNCBN_HD float gn_backward_element(float dy, float x, float mean, const GnBackwardCoef& k) {
  return k.p * dy + k.q * (x - mean) + k.r;
}

}  // namespace syncbn::norm::math

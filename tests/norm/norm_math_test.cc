// The host/device math of norm/norm_math.h on the CPU: every branch the CUDA kernels take —
// index math of both layouts, the split of channel runs into pieces, the 16-byte vector split and
// the thread walk over it, the Welford/Chan merge (empty partitions, |mean|/std ~ 1e4) and the
// per-element formulas — against straightforward float64 computations.
#include "norm/norm_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace syncbn::norm::math {
namespace {

TEST(NormMathIndex, ContiguousAndChannelsLastOffsetsRoundTrip) {
  for (bool channels_last : {false, true}) {
    for (int64_t C : {1, 3, 4, 7}) {
      for (int64_t S : {1, 5, 8}) {
        const int64_t N = 3;
        std::vector<int> seen(N * C * S, 0);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t s = 0; s < S; ++s) {
              const int64_t i = element_offset(n, c, s, C, S, channels_last);
              ASSERT_GE(i, 0);
              ASSERT_LT(i, N * C * S);
              ++seen[i];
              EXPECT_EQ(channel_of(i, C, S, channels_last), c) << "i=" << i;
              EXPECT_EQ(batch_of(i, C, S), n) << "i=" << i;
            }
        for (int count : seen) ASSERT_EQ(count, 1);  // a bijection
      }
    }
  }
  // The two layouts differ exactly when there is a spatial extent.
  EXPECT_EQ(element_offset(1, 2, 3, 4, 5, false), (1 * 4 + 2) * 5 + 3);
  EXPECT_EQ(element_offset(1, 2, 3, 4, 5, true), (1 * 5 + 3) * 4 + 2);
  EXPECT_EQ(element_offset(1, 2, 0, 4, 1, true), element_offset(1, 2, 0, 4, 1, false));
}

// Every element of channel c, over all its pieces, exactly once, and nothing of another channel.
TEST(NormMathIndex, ChannelPiecesCoverEachChannelOnce) {
  for (int64_t S : {1, 3, 4, 17, 64, 100}) {
    for (int64_t piece_len : {1, 4, 16, 1000}) {
      const int64_t N = 3, C = 5;
      for (int64_t c = 0; c < C; ++c) {
        std::vector<int> seen(N * C * S, 0);
        const int64_t items = N * pieces_per_run(S, piece_len);
        for (int64_t item = 0; item < items; ++item) {
          const Piece p = channel_piece(item, c, C, S, piece_len);
          ASSERT_GT(p.len, 0);
          ASSERT_LE(p.len, piece_len);
          for (int64_t i = p.begin; i < p.begin + p.len; ++i) {
            ASSERT_EQ(channel_of(i, C, S, false), c);
            ++seen[i];
          }
        }
        int64_t total = 0;
        for (int count : seen) {
          ASSERT_LE(count, 1);
          total += count;
        }
        EXPECT_EQ(total, N * S) << "S=" << S << " piece_len=" << piece_len;
      }
    }
  }
}

TEST(NormMathVector, SplitHeadVectorsTail) {
  // float at an aligned address: no head; 10 = 2 vectors + 2 tail.
  VecSplit s = split_for_vectors(0x1000, 10, 4);
  EXPECT_EQ(s.head, 0);
  EXPECT_EQ(s.vectors, 2);
  EXPECT_EQ(s.tail, 2);
  // One float past the boundary: 3 head elements to reach the next one.
  s = split_for_vectors(0x1004, 10, 4);
  EXPECT_EQ(s.head, 3);
  EXPECT_EQ(s.vectors, 1);
  EXPECT_EQ(s.tail, 3);
  // Shorter than the head: all head.
  s = split_for_vectors(0x1008, 1, 4);
  EXPECT_EQ(s.head, 1);
  EXPECT_EQ(s.vectors, 0);
  EXPECT_EQ(s.tail, 0);
  // 16-bit elements: 8 per vector.
  s = split_for_vectors(0x1002, 20, 2);
  EXPECT_EQ(s.head, 7);
  EXPECT_EQ(s.vectors, 1);
  EXPECT_EQ(s.tail, 5);
  // An address that is not a multiple of the element size can never be vectorized.
  s = split_for_vectors(0x1001, 20, 4);
  EXPECT_EQ(s.head, 20);
  EXPECT_EQ(s.vectors, 0);
  // Empty range.
  s = split_for_vectors(0x1000, 0, 4);
  EXPECT_EQ(s.head + s.vectors + s.tail, 0);
}

// The walk each CUDA thread makes over a split range: all threads together visit every element
// once, vectors start on 16-byte boundaries, for sizes not divisible by 4 and any thread count.
TEST(NormMathVector, ThreadWalkVisitsEveryElementOnceWithAlignedVectors) {
  for (int elem_bytes : {2, 4}) {
    const int per_vec = kVecBytes / elem_bytes;
    for (int64_t count : {0, 1, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 1023}) {
      for (uint64_t offset_elems = 0; offset_elems < 9; ++offset_elems) {
        const uint64_t addr = 0x10000 + offset_elems * elem_bytes;
        const VecSplit split = split_for_vectors(addr, count, elem_bytes);
        ASSERT_EQ(split.head + split.vectors * per_vec + split.tail, count);
        ASSERT_LT(split.tail, per_vec);
        for (int threads : {1, 2, 3, 32, 256}) {
          std::vector<int> seen(count, 0);
          for (int tid = 0; tid < threads; ++tid) {
            for_each_split_item(split, per_vec, tid, threads, [&](int64_t i, bool vectors) {
              const int64_t len = vectors ? per_vec : 1;
              if (vectors) {
                EXPECT_EQ((addr + i * elem_bytes) % kVecBytes, 0u) << "misaligned vector at " << i;
              }
              for (int64_t k = i; k < i + len; ++k) {
                ASSERT_GE(k, 0);
                ASSERT_LT(k, count);
                ++seen[k];
              }
            });
          }
          for (int64_t k = 0; k < count; ++k) {
            ASSERT_EQ(seen[k], 1) << "count=" << count << " offset=" << offset_elems
                                  << " threads=" << threads << " k=" << k;
          }
        }
      }
    }
  }
}

TEST(NormMathVector, CoAlignmentAndRowVectors) {
  EXPECT_TRUE(co_aligned(0x1004, 0x2004));
  EXPECT_TRUE(co_aligned(0x1000, 0x2010));
  EXPECT_FALSE(co_aligned(0x1004, 0x2008));
  const VecSplit s = scalar_split(7);
  EXPECT_EQ(s.head, 7);
  EXPECT_EQ(s.vectors + s.tail, 0);
  EXPECT_EQ(scalar_split(-1).head, 0);
  EXPECT_TRUE(rows_vectorizable(0x1000, 8, 4, true));
  EXPECT_TRUE(rows_vectorizable(0x1000, 16, 2, true));
  EXPECT_FALSE(rows_vectorizable(0x1000, 12, 2, true));  // 12 halves: rows not on boundaries
  EXPECT_FALSE(rows_vectorizable(0x1000, 6, 4, true));   // C not a multiple of 4
  EXPECT_FALSE(rows_vectorizable(0x1004, 8, 4, true));   // base not aligned
  EXPECT_FALSE(rows_vectorizable(0x1000, 8, 4, false));  // another array misaligned
  // When rows are vectorizable, every row start is a vector boundary.
  for (int64_t row = 0; row < 5; ++row) EXPECT_EQ((0x1000 + row * 8 * 4) % kVecBytes, 0);
}

// Welford over partitions, merged in a tree like a block reduction, against two-pass float64.
template <typename Acc>
void check_welford(double mean, double stddev, double rel_tol) {
  std::mt19937_64 rng(42);
  std::normal_distribution<double> dist(mean, stddev);
  const int parts = 37;
  std::vector<std::vector<Acc>> data(parts);
  double sum = 0.0;
  int64_t n = 0;
  for (int p = 0; p < parts; ++p) {
    const int len = p % 5 == 0 ? 0 : 1 + (p * 13) % 50;  // some partitions empty
    for (int i = 0; i < len; ++i) {
      data[p].push_back(static_cast<Acc>(dist(rng)));
      sum += static_cast<double>(data[p].back());
      ++n;
    }
  }
  const double ref_mean = sum / static_cast<double>(n);
  double ref_m2 = 0.0;
  for (const auto& part : data)
    for (Acc v : part) ref_m2 += (static_cast<double>(v) - ref_mean) * (v - ref_mean);

  std::vector<Welford<Acc>> partial(parts);
  for (int p = 0; p < parts; ++p)
    for (Acc v : data[p]) partial[p].push(v);
  for (int stride = 1; stride < parts; stride *= 2)  // tree merge, as in shared memory
    for (int p = 0; p + stride < parts; p += 2 * stride) partial[p].merge(partial[p + stride]);
  const Welford<Acc>& w = partial[0];
  EXPECT_EQ(w.count, n);
  EXPECT_NEAR(w.mean, ref_mean, std::abs(ref_mean) * 1e-6 + stddev * 1e-6);
  EXPECT_NEAR(static_cast<double>(w.m2) / n, ref_m2 / n, ref_m2 / n * rel_tol);

  // And through the float64 sums every path hands to bn_gather_stats, which lose about
  // (|mean|/std)²·2⁻⁵³ of the variance: 1e-8 relative at 1e4.
  double s, ss, m, var;
  w.to_sums(s, ss);
  bn_mean_var(s, ss, 1.0 / static_cast<double>(n), m, var);
  const double sums_tol = std::max(rel_tol, 1e-16 * (mean / stddev) * (mean / stddev) * 10);
  EXPECT_NEAR(var, ref_m2 / n, ref_m2 / n * sums_tol);
}

TEST(NormMathStats, WelfordMergeMatchesTwoPass) {
  check_welford<double>(0.5, 2.0, 1e-12);
  check_welford<float>(0.5, 2.0, 1e-5);
}

// |mean|/std = 1e4: float32 Σx² would lose the variance entirely; Welford in float32 keeps it to
// a few float32 ulps of the mean's scale relative to std, and float64 sums keep it to ~1e-8.
TEST(NormMathStats, LargeMeanOverStd) {
  check_welford<double>(1e4, 1.0, 1e-9);
  check_welford<float>(1e4, 1.0, 5e-3);
  check_welford<float>(-3e4, 3.0, 5e-3);

  SumStats<double> sums;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> dist(1e4, 1.0);
  std::vector<double> xs(4096);
  for (double& v : xs) v = static_cast<float>(dist(rng));
  for (double v : xs) sums.push(v);
  double mean_ref = 0, m2 = 0;
  for (double v : xs) mean_ref += v;
  mean_ref /= xs.size();
  for (double v : xs) m2 += (v - mean_ref) * (v - mean_ref);
  double s, ss, mean, var;
  sums.to_sums(s, ss);
  bn_mean_var(s, ss, 1.0 / xs.size(), mean, var);
  EXPECT_NEAR(mean, mean_ref, 1e-9);
  EXPECT_NEAR(var, m2 / xs.size(), 1e-4 * (m2 / xs.size()));
}

TEST(NormMathStats, EmptyPartitions) {
  Welford<float> empty, a;
  a.push(3.0f);
  a.push(5.0f);
  Welford<float> left = empty;
  left.merge(a);  // empty ← a
  EXPECT_EQ(left.count, 2);
  EXPECT_FLOAT_EQ(left.mean, 4.0f);
  EXPECT_FLOAT_EQ(left.m2, 2.0f);
  Welford<float> right = a;
  right.merge(empty);  // a ← empty
  EXPECT_EQ(right.count, 2);
  EXPECT_FLOAT_EQ(right.mean, 4.0f);
  EXPECT_FLOAT_EQ(right.m2, 2.0f);
  Welford<float> both;
  both.merge(empty);
  EXPECT_EQ(both.count, 0);
  double s = -1, ss = -1;
  both.to_sums(s, ss);
  EXPECT_EQ(s, 0.0);
  EXPECT_EQ(ss, 0.0);

  SumStats<double> sa, sb;
  sa.push(1.0);
  sa.merge(sb);
  sb.merge(sa);
  EXPECT_EQ(sb.count, 1);
  EXPECT_EQ(sb.sum, 1.0);
  EXPECT_EQ(sb.sumsq, 1.0);
  PairSums<double> pa, pb;
  pa.push(2.0, 3.0);
  pb.merge(pa);
  pb.push(1.0, -1.0);
  EXPECT_EQ(pb.a, 3.0);
  EXPECT_EQ(pb.b, 2.0);
}

TEST(NormMathBn, MeanVarClampsAndRunningUpdate) {
  double mean, var;
  bn_mean_var(6.0, 20.0, 0.5, mean, var);  // x = {2, 4}
  EXPECT_EQ(mean, 3.0);
  EXPECT_EQ(var, 1.0);
  bn_mean_var(3.0 * 0.1, 3.0 * 0.1 * 0.1 * (1 - 1e-16), 1.0 / 3.0, mean, var);
  EXPECT_GE(var, 0.0);  // rounding below zero is clamped
  EXPECT_FLOAT_EQ(bn_invstd(3.0, 1.0), 0.5f);
  EXPECT_FLOAT_EQ(running_update(1.0f, 3.0, 0.25), 1.5f);
  EXPECT_FLOAT_EQ(running_update(1.0f, 3.0, 0.25, 2.0), 2.25f);
  EXPECT_FLOAT_EQ(running_update(7.0f, 3.0, 1.0), 3.0f);  // momentum 1: the batch value
}

TEST(NormMathBn, NormalizeAndBackwardElementMatchFloat64) {
  const float weight[2] = {2.0f, -0.5f}, bias[2] = {0.25f, 1.0f};
  // Affine and not.
  EXPECT_FLOAT_EQ(bn_scale(0.5f, weight, 1), -0.25f);
  EXPECT_FLOAT_EQ(bn_scale(0.5f, nullptr, 1), 0.5f);
  EXPECT_FLOAT_EQ(bn_shift(bias, 1), 1.0f);
  EXPECT_FLOAT_EQ(bn_shift(nullptr, 1), 0.0f);
  EXPECT_FLOAT_EQ(bn_normalize(3.0f, 1.0f, 0.5f, 0.25f), 1.25f);
  EXPECT_FLOAT_EQ(relu(-1.0f), 0.0f);
  EXPECT_FLOAT_EQ(relu(0.0f), 0.0f);
  EXPECT_FLOAT_EQ(relu(2.0f), 2.0f);
  // |mean| ≫ std: subtracting first keeps y exact where x·scale − mean·scale would not be.
  EXPECT_FLOAT_EQ(bn_normalize(10001.0f, 10000.0f, 1000.0f, 0.0f), 1000.0f);

  // Backward element against the three-term formula in float64.
  const double sum_dy[2] = {0.0, 3.0}, sum_dy_xmu[2] = {0.0, -2.0};
  const double n = 8.0;
  const float invstd = 0.8f, mean = 0.5f, x = 1.75f, dy = 0.3f;
  const BnBackwardCoef k = bn_backward_coef(invstd, weight, 1, sum_dy, sum_dy_xmu, n);
  const double ref =
      weight[1] * static_cast<double>(invstd) *
      (dy - sum_dy[1] / n - (x - mean) * static_cast<double>(invstd) * invstd * sum_dy_xmu[1] / n);
  EXPECT_NEAR(bn_backward_element(dy, x, mean, k), ref, 1e-6);
  // Eval mode: dx = γ·invstd·dy.
  const BnBackwardCoef eval = bn_backward_coef(invstd, nullptr, 1, nullptr, nullptr, n);
  EXPECT_EQ(eval.mean_dy, 0.0f);
  EXPECT_EQ(eval.k, 0.0f);
  EXPECT_FLOAT_EQ(bn_backward_element(dy, x, mean, eval), invstd * dy);
}

TEST(NormMathGn, BackwardCoefficientsMatchFormula) {
  const double sigma = 0.7, gamma = 1.5, A = 0.2, B = -0.4, D = 12.0;
  const GnBackwardCoef k = gn_backward_coef(sigma, gamma, A, B, D);
  const float dy = 0.9f, x = -0.3f, mean = 0.1f;
  const double ref =
      sigma * gamma * dy - sigma * sigma * sigma * B / D * (x - mean) - sigma * A / D;
  EXPECT_NEAR(gn_backward_element(dy, x, mean, k), ref, 1e-6);
}

}  // namespace
}  // namespace syncbn::norm::math

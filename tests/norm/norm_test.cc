// CPU norm kernels against the float64 references in reference.h, finite differences in
// float64, the numerical-stability case, and determinism across runs.
#include "norm/norm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "reference.h"

namespace syncbn {
namespace {

using norm::BatchNormOptions;
using norm::BatchNormState;
using norm::NormSaved;
using testing::logical;

// max_i |a_i − b_i| / max_i |b_i|: the error relative to the tensor's scale, so that elements
// near zero do not dominate. Zero when both are zero.
double scaled_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? err / scale : err;
}

std::vector<double> to_double(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, double mean = 0.0,
                     double stddev = 1.0, MemoryFormat format = MemoryFormat::kContiguous) {
  Tensor t(std::move(shape));
  Rng(seed).fill_normal(t.data(), t.numel(), mean, stddev);
  return t.to(format);
}

// Gradient of L(p) = Σ dy·f(p) by central differences in float64.
std::vector<double> numeric_grad(
    const std::function<std::vector<double>(const std::vector<double>&)>& f, std::vector<double> p,
    const std::vector<double>& dy) {
  const double h = 1e-5;
  std::vector<double> grad(p.size());
  auto loss = [&](const std::vector<double>& q) {
    const std::vector<double> y = f(q);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
    return l;
  };
  for (size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss(p);
    p[i] = keep - h;
    const double down = loss(p);
    p[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

struct BnCase {
  std::vector<int64_t> shape;
  MemoryFormat format;
  bool affine;
  bool track;
};

// Short descriptions in test listings instead of gtest's byte dump.
void PrintTo(const BnCase& c, std::ostream* os) { *os << shape_to_string(c.shape); }

std::string case_name(const ::testing::TestParamInfo<BnCase>& info) {
  std::string name;
  for (int64_t d : info.param.shape) name += std::to_string(d) + "x";
  name.pop_back();
  name += info.param.format == MemoryFormat::kChannelsLast ? "_cl" : "_nchw";
  name += info.param.affine ? "_affine" : "_noaffine";
  name += info.param.track ? "_track" : "_notrack";
  return name;
}

class BatchNormRef : public ::testing::TestWithParam<BnCase> {};

TEST_P(BatchNormRef, TrainingForwardBackwardMatchFloat64AndFiniteDifferences) {
  const BnCase& p = GetParam();
  const int64_t N = p.shape[0], C = p.shape[1], S = spatial_size(p.shape);
  Tensor x = random_tensor(p.shape, 1, 0.5, 2.0, p.format);
  Tensor dy = random_tensor(p.shape, 2, 0.0, 1.0, p.format);
  Tensor w = random_tensor({C}, 3, 1.0, 0.3), b = random_tensor({C}, 4, 0.0, 0.5);
  Tensor rm = random_tensor({C}, 5), rv = random_tensor({C}, 6, 0.0, 1.0);
  for (int64_t c = 0; c < C; ++c) rv.data()[c] = std::abs(rv.data()[c]) + 0.5f;
  const Tensor rm0 = rm, rv0 = rv;
  int64_t tracked = 3;
  BatchNormState state;
  if (p.affine) state.weight = &w, state.bias = &b;
  if (p.track)
    state.running_mean = &rm, state.running_var = &rv, state.num_batches_tracked = &tracked;
  BatchNormOptions options{1e-3, 0.25};

  NormSaved saved;
  const Tensor y = norm::batch_norm_forward(x, state, options, /*training=*/true, &saved);
  const auto xd = logical(x), dyd = logical(dy);
  const auto wd = to_double(w), bd = to_double(b);
  const auto* wp = p.affine ? &wd : nullptr;
  const auto* bp = p.affine ? &bd : nullptr;
  const testing::RefBn ref = testing::ref_bn_forward(xd, N, C, S, wp, bp, options.eps);
  EXPECT_LT(scaled_error(logical(y), ref.y), 1e-6);

  if (p.track) {
    EXPECT_EQ(tracked, 4);
    const double n = static_cast<double>(N * S);
    std::vector<double> want_rm(C), want_rv(C);
    for (int64_t c = 0; c < C; ++c) {
      want_rm[c] = 0.75 * rm0.data()[c] + 0.25 * ref.mean[c];
      want_rv[c] = 0.75 * rv0.data()[c] + 0.25 * ref.var[c] * n / (n - 1);
    }
    EXPECT_LT(scaled_error(to_double(rm), want_rm), 1e-6);
    EXPECT_LT(scaled_error(to_double(rv), want_rv), 1e-6);
  }

  const norm::NormGrads grads = norm::batch_norm_backward(dy, x, state, saved);
  const auto f_x = [&](const std::vector<double>& q) {
    return testing::ref_bn_forward(q, N, C, S, wp, bp, options.eps).y;
  };
  EXPECT_LT(scaled_error(logical(grads.dx), numeric_grad(f_x, xd, dyd)), 1e-4);
  if (p.affine) {
    const auto f_w = [&](const std::vector<double>& q) {
      return testing::ref_bn_forward(xd, N, C, S, &q, bp, options.eps).y;
    };
    const auto f_b = [&](const std::vector<double>& q) {
      return testing::ref_bn_forward(xd, N, C, S, wp, &q, options.eps).y;
    };
    EXPECT_LT(scaled_error(to_double(grads.dweight), numeric_grad(f_w, wd, dyd)), 1e-4);
    EXPECT_LT(scaled_error(to_double(grads.dbias), numeric_grad(f_b, bd, dyd)), 1e-4);
  } else {
    EXPECT_EQ(grads.dweight.numel(), 0);
  }
}

TEST_P(BatchNormRef, EvalUsesRunningStatsOrBatchStatsWithoutThem) {
  const BnCase& p = GetParam();
  const int64_t N = p.shape[0], C = p.shape[1], S = spatial_size(p.shape);
  Tensor x = random_tensor(p.shape, 11, -1.0, 1.5, p.format);
  Tensor dy = random_tensor(p.shape, 12, 0.0, 1.0, p.format);
  Tensor w = random_tensor({C}, 13, 1.0, 0.3), b = random_tensor({C}, 14);
  Tensor rm = random_tensor({C}, 15), rv = random_tensor({C}, 16);
  for (int64_t c = 0; c < C; ++c) rv.data()[c] = std::abs(rv.data()[c]) + 0.1f;
  const Tensor rm0 = rm, rv0 = rv;
  BatchNormState state;
  if (p.affine) state.weight = &w, state.bias = &b;
  if (p.track) state.running_mean = &rm, state.running_var = &rv;
  const double eps = 1e-5;
  NormSaved saved;
  const Tensor y = norm::batch_norm_forward(x, state, {eps, 0.1}, /*training=*/false, &saved);
  const auto xd = logical(x), dyd = logical(dy);
  const auto wd = to_double(w), bd = to_double(b);
  const auto* wp = p.affine ? &wd : nullptr;
  const auto* bp = p.affine ? &bd : nullptr;
  // Running stats never change in eval.
  EXPECT_EQ(to_double(rm), to_double(rm0));
  EXPECT_EQ(to_double(rv), to_double(rv0));
  const auto forward = [&](const std::vector<double>& q) {
    if (!p.track) return testing::ref_bn_forward(q, N, C, S, wp, bp, eps).y;
    std::vector<double> out(q.size());
    for (size_t k = 0; k < q.size(); ++k) {
      const int64_t c = (static_cast<int64_t>(k) / S) % C;
      out[k] = (q[k] - rm0.data()[c]) / std::sqrt(rv0.data()[c] + eps) * (wp ? wd[c] : 1.0) +
               (bp ? bd[c] : 0.0);
    }
    return out;
  };
  EXPECT_LT(scaled_error(logical(y), forward(xd)), 1e-6);
  const norm::NormGrads grads = norm::batch_norm_backward(dy, x, state, saved);
  EXPECT_LT(scaled_error(logical(grads.dx), numeric_grad(forward, xd, dyd)), 1e-4);
  (void)N;
}

std::vector<BnCase> bn_cases() {
  std::vector<BnCase> cases;
  const std::vector<std::vector<int64_t>> shapes = {{5, 3},       {7, 1},         {5, 4, 7},
                                                    {1, 3, 5},    {4, 3, 5, 6},   {1, 3, 4, 5},
                                                    {3, 5, 1, 1}, {2, 3, 3, 4, 5}};
  for (const auto& shape : shapes)
    for (bool affine : {true, false})
      for (bool track : {true, false}) {
        cases.push_back({shape, MemoryFormat::kContiguous, affine, track});
        if (shape.size() >= 4) cases.push_back({shape, MemoryFormat::kChannelsLast, affine, track});
      }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormRef, ::testing::ValuesIn(bn_cases()), case_name);

TEST(BatchNorm, MomentumNoneIsACumulativeAverage) {
  const int64_t C = 3;
  Tensor rm({C}), rv({C});
  for (int64_t c = 0; c < C; ++c) rv.data()[c] = 1.0f;
  int64_t tracked = 0;
  BatchNormState state{nullptr, nullptr, &rm, &rv, &tracked};
  std::vector<double> mean_sum(C, 0.0), var_sum(C, 0.0);
  for (int step = 0; step < 4; ++step) {
    Tensor x = random_tensor({6, C, 5}, 100 + step, step, 1.0 + step);
    NormSaved saved;
    norm::batch_norm_forward(x, state, {1e-5, std::nullopt}, true, &saved);
    const auto ref = testing::ref_bn_forward(logical(x), 6, C, 5, nullptr, nullptr, 1e-5);
    for (int64_t c = 0; c < C; ++c) {
      mean_sum[c] += ref.mean[c];
      var_sum[c] += ref.var[c] * 30.0 / 29.0;
    }
  }
  EXPECT_EQ(tracked, 4);
  for (int64_t c = 0; c < C; ++c) {
    // With factor 1/k at step k the running value is the plain average of the batch stats.
    EXPECT_NEAR(rm.data()[c], mean_sum[c] / 4, 1e-5);
    EXPECT_NEAR(rv.data()[c], var_sum[c] / 4, 1e-4);
  }
}

// 10000 + N(0, 1): float32 E[x²] − E[x]² loses every digit of the variance here.
TEST(BatchNorm, VarianceIsAccurateForLargeMeanSmallSpread) {
  for (MemoryFormat format : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
    const std::vector<int64_t> shape = {64, 4, 32, 32};
    Tensor x = random_tensor(shape, 7, 10000.0, 1.0, format);
    Tensor rm({4}), rv({4});
    int64_t tracked = 0;
    BatchNormState state{nullptr, nullptr, &rm, &rv, &tracked};
    NormSaved saved;
    const Tensor y = norm::batch_norm_forward(x, state, {1e-5, 1.0}, true, &saved);
    const auto ref = testing::ref_bn_forward(logical(x), 64, 4, 1024, nullptr, nullptr, 1e-5);
    const double n = 64.0 * 1024;
    for (int64_t c = 0; c < 4; ++c) {
      const double want = ref.var[c] * n / (n - 1);
      EXPECT_NEAR(rv.data()[c], want, 1e-3 * want) << "channel " << c;
      EXPECT_NEAR(rm.data()[c], ref.mean[c], 1e-3);
    }
    EXPECT_LT(scaled_error(logical(y), ref.y), 1e-3);
  }
}

TEST(BatchNorm, ThreadCountDoesNotChangeResultsBeyondRounding) {
  Tensor x = random_tensor({16, 8, 30, 30}, 21, 3.0, 2.0);
  Tensor dy = random_tensor({16, 8, 30, 30}, 22);
  const int threads = omp_get_max_threads();
  std::vector<std::vector<double>> outs;
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    NormSaved saved;
    const Tensor y = norm::batch_norm_forward(x, {}, {}, true, &saved);
    outs.push_back(to_double(y));
    outs.push_back(to_double(norm::batch_norm_backward(dy, x, {}, saved).dx));
  }
  omp_set_num_threads(threads);
  for (size_t i = 2; i < outs.size(); ++i) EXPECT_LT(scaled_error(outs[i], outs[i % 2]), 1e-6);
}

TEST(BatchNorm, RepeatedRunsAreBitwiseIdentical) {
  Tensor x = random_tensor({8, 16, 20, 20}, 31, 1.0, 3.0, MemoryFormat::kChannelsLast);
  Tensor dy = random_tensor({8, 16, 20, 20}, 32, 0.0, 1.0, MemoryFormat::kChannelsLast);
  std::vector<double> first_y, first_dx;
  for (int run = 0; run < 3; ++run) {
    NormSaved saved;
    const Tensor y = norm::batch_norm_forward(x, {}, {}, true, &saved);
    const Tensor dx = norm::batch_norm_backward(dy, x, {}, saved).dx;
    if (run == 0) {
      first_y = to_double(y);
      first_dx = to_double(dx);
    } else {
      EXPECT_EQ(to_double(y), first_y);
      EXPECT_EQ(to_double(dx), first_dx);
    }
  }
}

// ---- GroupNorm, InstanceNorm, LayerNorm ----

struct GnCase {
  std::vector<int64_t> shape;
  int64_t groups;
  MemoryFormat format;
  bool affine;
};

void PrintTo(const GnCase& c, std::ostream* os) {
  *os << shape_to_string(c.shape) << " groups " << c.groups;
}

class GroupNormRef : public ::testing::TestWithParam<GnCase> {};

TEST_P(GroupNormRef, ForwardBackwardMatchFloat64AndFiniteDifferences) {
  const GnCase& p = GetParam();
  const int64_t N = p.shape[0], C = p.shape[1], S = spatial_size(p.shape);
  Tensor x = random_tensor(p.shape, 41, 2.0, 3.0, p.format);
  Tensor dy = random_tensor(p.shape, 42, 0.0, 1.0, p.format);
  Tensor w = random_tensor({C}, 43, 1.0, 0.5), b = random_tensor({C}, 44);
  const Tensor* wt = p.affine ? &w : nullptr;
  const Tensor* bt = p.affine ? &b : nullptr;
  const double eps = 1e-4;
  NormSaved saved;
  const Tensor y = norm::group_norm_forward(x, p.groups, wt, bt, eps, &saved);
  const auto xd = logical(x), dyd = logical(dy), wd = to_double(w), bd = to_double(b);
  const auto* wp = p.affine ? &wd : nullptr;
  const auto* bp = p.affine ? &bd : nullptr;
  const auto f_x = [&](const std::vector<double>& q) {
    return testing::ref_gn_forward(q, N, C, S, p.groups, wp, bp, eps);
  };
  EXPECT_LT(scaled_error(logical(y), f_x(xd)), 1e-6);
  const norm::NormGrads grads = norm::group_norm_backward(dy, x, p.groups, wt, saved);
  EXPECT_LT(scaled_error(logical(grads.dx), numeric_grad(f_x, xd, dyd)), 1e-4);
  if (p.affine) {
    const auto f_w = [&](const std::vector<double>& q) {
      return testing::ref_gn_forward(xd, N, C, S, p.groups, &q, bp, eps);
    };
    const auto f_b = [&](const std::vector<double>& q) {
      return testing::ref_gn_forward(xd, N, C, S, p.groups, wp, &q, eps);
    };
    EXPECT_LT(scaled_error(to_double(grads.dweight), numeric_grad(f_w, wd, dyd)), 1e-4);
    EXPECT_LT(scaled_error(to_double(grads.dbias), numeric_grad(f_b, bd, dyd)), 1e-4);
  }
}

std::vector<GnCase> gn_cases() {
  std::vector<GnCase> cases;
  for (bool affine : {true, false}) {
    cases.push_back({{3, 6, 5}, 3, MemoryFormat::kContiguous, affine});
    cases.push_back({{2, 4, 3, 5}, 1, MemoryFormat::kContiguous, affine});
    cases.push_back({{2, 4, 3, 5}, 4, MemoryFormat::kChannelsLast, affine});
    cases.push_back({{1, 6, 2, 3, 2}, 2, MemoryFormat::kChannelsLast, affine});
    cases.push_back({{4, 3}, 3, MemoryFormat::kContiguous, affine});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupNormRef, ::testing::ValuesIn(gn_cases()));

TEST(InstanceNorm, TrainingMatchesPerInstanceStatsAndUpdatesRunningAverage) {
  const int64_t N = 3, C = 2, S = 12;
  Tensor x = random_tensor({N, C, 3, 4}, 51, 1.0, 2.0);
  Tensor dy = random_tensor({N, C, 3, 4}, 52);
  Tensor w = random_tensor({C}, 53, 1.0, 0.5), b = random_tensor({C}, 54);
  Tensor rm({C}), rv({C});
  for (int64_t c = 0; c < C; ++c) rv.data()[c] = 1.0f;
  BatchNormState state{&w, &b, &rm, &rv, nullptr};
  NormSaved saved;
  const Tensor y = norm::instance_norm_forward(x, state, {1e-5, 0.5}, true, &saved);
  const auto xd = logical(x), dyd = logical(dy), wd = to_double(w), bd = to_double(b);
  const auto f_x = [&](const std::vector<double>& q) {
    return testing::ref_gn_forward(q, N, C, S, C, &wd, &bd, 1e-5);
  };
  EXPECT_LT(scaled_error(logical(y), f_x(xd)), 1e-6);
  for (int64_t c = 0; c < C; ++c) {
    double mean_avg = 0, var_avg = 0;
    for (int64_t n = 0; n < N; ++n) {
      const auto ref = testing::ref_bn_forward(
          std::vector<double>(xd.begin() + (n * C + c) * S, xd.begin() + (n * C + c + 1) * S), 1, 1,
          S, nullptr, nullptr, 1e-5);
      mean_avg += ref.mean[0] / N;
      var_avg += ref.var[0] * S / (S - 1) / N;
    }
    EXPECT_NEAR(rm.data()[c], 0.5 * mean_avg, 1e-5);
    EXPECT_NEAR(rv.data()[c], 0.5 + 0.5 * var_avg, 1e-5);
  }
  const norm::NormGrads grads = norm::instance_norm_backward(dy, x, state, saved);
  EXPECT_LT(scaled_error(logical(grads.dx), numeric_grad(f_x, xd, dyd)), 1e-4);
}

TEST(LayerNorm, ForwardBackwardMatchFiniteDifferences) {
  const int64_t rows = 6, D = 20;
  Tensor x = random_tensor({2, 3, 4, 5}, 61, -2.0, 2.0);
  Tensor dy = random_tensor({2, 3, 4, 5}, 62);
  Tensor w = random_tensor({4, 5}, 63, 1.0, 0.5), b = random_tensor({4, 5}, 64);
  NormSaved saved;
  const Tensor y = norm::layer_norm_forward(x, {4, 5}, &w, &b, 1e-5, &saved);
  const auto xd = to_double(x), dyd = to_double(dy), wd = to_double(w), bd = to_double(b);
  const auto ln = [&](const std::vector<double>& q, const std::vector<double>& wq,
                      const std::vector<double>& bq) {
    std::vector<double> out(q.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < D; ++i) mean += q[r * D + i] / D;
      for (int64_t i = 0; i < D; ++i) var += (q[r * D + i] - mean) * (q[r * D + i] - mean) / D;
      for (int64_t i = 0; i < D; ++i)
        out[r * D + i] = (q[r * D + i] - mean) / std::sqrt(var + 1e-5) * wq[i] + bq[i];
    }
    return out;
  };
  EXPECT_LT(scaled_error(to_double(y), ln(xd, wd, bd)), 1e-6);
  const norm::NormGrads grads = norm::layer_norm_backward(dy, x, {4, 5}, &w, saved);
  const auto f_x = [&](const std::vector<double>& q) { return ln(q, wd, bd); };
  const auto f_w = [&](const std::vector<double>& q) { return ln(xd, q, bd); };
  const auto f_b = [&](const std::vector<double>& q) { return ln(xd, wd, q); };
  EXPECT_LT(scaled_error(to_double(grads.dx), numeric_grad(f_x, xd, dyd)), 1e-4);
  EXPECT_LT(scaled_error(to_double(grads.dweight), numeric_grad(f_w, wd, dyd)), 1e-4);
  EXPECT_LT(scaled_error(to_double(grads.dbias), numeric_grad(f_b, bd, dyd)), 1e-4);
}

}  // namespace
}  // namespace syncbn

// SyncBatchNorm under mpirun: the defining property (R ranks × per-rank batches give the same
// y, dx, running stats and reduced dγ/dβ as plain BN on the concatenated batch), the
// communication counters, and the fail-fast paths. Run with -np 1, 2, 3 and 4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/error.h"
#include "nn/sync_batch_norm.h"
#include "norm/norm.h"

namespace syncbn {
namespace {

// The world communicator, made per test: every MPI communicator must be freed before the
// harness finalizes MPI.
class SyncBatchNormTest : public ::testing::Test {
 protected:
  void SetUp() override { world_ = comm::make_communicator("mpi"); }
  comm::Communicator& world() { return *world_; }
  std::unique_ptr<comm::Communicator> world_;
};

double scaled_error(const float* a, const float* b, int64_t n) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? err / scale : err;
}

int64_t sample_size(const Tensor& t) {
  int64_t s = 1;
  for (int64_t d = 1; d < t.dim(); ++d) s *= t.size(d);
  return s;
}

// Samples [begin, end) of a batch tensor, in the same memory format: both formats keep each
// sample contiguous, so samples are copied whole.
Tensor batch_slice(const Tensor& t, int64_t begin, int64_t end) {
  std::vector<int64_t> shape = t.shape();
  shape[0] = end - begin;
  Tensor out(shape, t.format());
  const int64_t per = sample_size(t);
  std::copy(t.data() + begin * per, t.data() + end * per, out.data());
  return out;
}

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, double mean, double stddev,
                     MemoryFormat format) {
  Tensor t(std::move(shape));
  Rng(seed).fill_normal(t.data(), t.numel(), mean, stddev);
  return t.to(format);
}

struct Layout {
  std::vector<int64_t> sample_shape;  // (C, *spatial)
  MemoryFormat format;
};

std::string describe(const Layout& l, const std::vector<int64_t>& batches, int group, bool affine,
                     bool momentum_none) {
  std::string s = "sample " + shape_to_string(l.sample_shape) + " " + to_string(l.format) +
                  " batches " + shape_to_string(batches) + " G=" + std::to_string(group) +
                  (affine ? " affine" : " no-affine") + (momentum_none ? " momentum=None" : "");
  return s;
}

// One equivalence case on this world: each rank r holds batches[r] samples; groups of `group`
// consecutive ranks share statistics. Two training steps, then an eval step.
void check_equivalence(comm::Communicator& w, const Layout& layout,
                       const std::vector<int64_t>& batches, int group, bool affine,
                       bool momentum_none) {
  const int R = w.size(), r = w.rank();
  ASSERT_EQ(static_cast<int>(batches.size()), R);
  const std::string what = describe(layout, batches, group, affine, momentum_none);
  const int64_t C = layout.sample_shape[0];
  auto bn_group = nn::make_bn_group(w, group);

  // The group's concatenated batch and this rank's place in it.
  const int first = r / group * group;
  int64_t group_n = 0, offset = 0;
  for (int q = first; q < first + group; ++q) {
    if (q < r) offset += batches[q];
    group_n += batches[q];
  }
  std::vector<int64_t> global_shape = {group_n};
  global_shape.insert(global_shape.end(), layout.sample_shape.begin(), layout.sample_shape.end());

  nn::SyncBatchNormOptions options;
  options.num_features = C;
  options.affine = affine;
  options.eps = 1e-4;
  options.momentum = momentum_none ? std::nullopt : std::optional<double>(0.3);
  nn::SyncBatchNorm layer(options, bn_group.get(), "bn");
  Tensor ref_w({C}), ref_b({C}), ref_rm({C}), ref_rv({C});
  int64_t ref_tracked = 0;
  Rng(99).fill_normal(ref_w.data(), C, 1.0, 0.2);
  Rng(98).fill_normal(ref_b.data(), C, 0.0, 0.5);
  for (int64_t c = 0; c < C; ++c) ref_rv.data()[c] = 1.0f;
  if (affine) {
    layer.weight() = ref_w;
    layer.bias() = ref_b;
  }
  norm::BatchNormState ref_state{affine ? &ref_w : nullptr, affine ? &ref_b : nullptr, &ref_rm,
                                 &ref_rv, &ref_tracked};

  for (int step = 0; step < 3; ++step) {
    const bool training = step < 2;
    // Same data on every rank of the group (seeded by group and step): the reference sees it all.
    const uint64_t seed = 1000 * static_cast<uint64_t>(first + 1) + static_cast<uint64_t>(step);
    const Tensor x_all = random_tensor(global_shape, seed, 2.0 + step, 1.5, layout.format);
    const Tensor dy_all = random_tensor(global_shape, seed + 500, 0.0, 1.0, layout.format);
    const Tensor x = batch_slice(x_all, offset, offset + batches[r]);
    const Tensor dy = batch_slice(dy_all, offset, offset + batches[r]);

    if (training && group_n * (sample_size(x_all) / C) <= 1) {
      // Global n == 1: every rank of the group must raise PyTorch's message.
      try {
        layer.forward(x, training);
        ADD_FAILURE() << what << ": expected the n == 1 error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Expected more than 1 value per channel"),
                  std::string::npos)
            << e.what();
      }
      return;
    }
    if (affine) {
      std::fill(layer.grad_weight().data(), layer.grad_weight().data() + C, 0.0f);
      std::fill(layer.grad_bias().data(), layer.grad_bias().data() + C, 0.0f);
    }
    const Tensor y = layer.forward(x, training);
    const Tensor dx = layer.backward(dy);

    norm::NormSaved saved;
    const Tensor y_ref =
        norm::batch_norm_forward(x_all, ref_state, {1e-4, options.momentum}, training, &saved);
    const norm::NormGrads g_ref = norm::batch_norm_backward(dy_all, x_all, ref_state, saved);
    const Tensor y_ref_slice = batch_slice(y_ref, offset, offset + batches[r]);
    const Tensor dx_ref_slice = batch_slice(g_ref.dx, offset, offset + batches[r]);
    EXPECT_LT(scaled_error(y.data(), y_ref_slice.data(), y.numel()), 1e-5)
        << what << " step " << step << ": y";
    EXPECT_LT(scaled_error(dx.data(), dx_ref_slice.data(), dx.numel()), 1e-5)
        << what << " step " << step << ": dx";
    EXPECT_LT(scaled_error(layer.running_mean().data(), ref_rm.data(), C), 1e-5) << what;
    EXPECT_LT(scaled_error(layer.running_var().data(), ref_rv.data(), C), 1e-5) << what;
    EXPECT_EQ(layer.num_batches_tracked(), ref_tracked) << what;
    if (affine) {
      // dγ, dβ are local; reduced over the group they equal plain BN's.
      std::vector<float> grads(2 * C);
      std::copy(layer.grad_weight().data(), layer.grad_weight().data() + C, grads.begin());
      std::copy(layer.grad_bias().data(), layer.grad_bias().data() + C, grads.begin() + C);
      bn_group->allreduce_sum(grads.data(), 2 * C);
      EXPECT_LT(scaled_error(grads.data(), g_ref.dweight.data(), C), 1e-5) << what << ": dgamma";
      EXPECT_LT(scaled_error(grads.data() + C, g_ref.dbias.data(), C), 1e-5) << what << ": dbeta";
    }
  }
}

std::vector<Layout> layouts() {
  return {{{5}, MemoryFormat::kContiguous},          {{3, 7}, MemoryFormat::kContiguous},
          {{4, 3, 5}, MemoryFormat::kContiguous},    {{4, 3, 5}, MemoryFormat::kChannelsLast},
          {{3, 2, 3, 2}, MemoryFormat::kContiguous}, {{3, 2, 3, 2}, MemoryFormat::kChannelsLast}};
}

// Per-rank batch patterns of the issue, cut or cycled to the world size.
std::vector<std::vector<int64_t>> batch_patterns(int R) {
  std::vector<std::vector<int64_t>> out;
  for (const std::vector<int64_t>& base :
       {std::vector<int64_t>{7, 8, 9, 5}, {0, 4, 4, 4}, {1, 1, 1, 1}, {3, 3, 3, 3}}) {
    std::vector<int64_t> b(R);
    for (int q = 0; q < R; ++q) b[q] = base[q % 4];
    out.push_back(b);
  }
  return out;
}

TEST_F(SyncBatchNormTest, MatchesPlainBatchNormOnTheConcatenatedBatch) {
  const int R = world().size();
  for (int group : {1, 2, 4}) {
    if (R % group != 0) continue;
    for (const Layout& layout : layouts())
      for (const auto& batches : batch_patterns(R))
        for (bool affine : {true, false})
          for (bool momentum_none : {false, true})
            check_equivalence(world(), layout, batches, group, affine, momentum_none);
  }
}

TEST_F(SyncBatchNormTest, WholeWorldGroupMatchesPlainBatchNorm) {
  const int R = world().size();
  check_equivalence(world(), {{4, 3, 5}, MemoryFormat::kChannelsLast}, std::vector<int64_t>(R, 2),
                    R, true, false);
  check_equivalence(world(), {{6}, MemoryFormat::kContiguous}, batch_patterns(R)[0], 0 + R, true,
                    true);
}

TEST_F(SyncBatchNormTest, OneCollectivePerPassWithConstantPayload) {
  comm::Communicator& w = world();
  for (int64_t C : {1, 16, 64}) {
    auto group = nn::make_bn_group(w, 0);
    nn::SyncBatchNormOptions options;
    options.num_features = C;
    nn::SyncBatchNorm layer(options, group.get(), "counted");
    const Tensor x = random_tensor({3, C, 4, 4}, 5 + w.rank(), 0, 1, MemoryFormat::kContiguous);
    const Tensor dy = random_tensor({3, C, 4, 4}, 9 + w.rank(), 0, 1, MemoryFormat::kContiguous);
    group->reset_counters();
    layer.forward(x, true);
    EXPECT_EQ(group->counters().allreduce_calls, 1);
    EXPECT_EQ(group->counters().collective_calls(), 1);
    EXPECT_EQ(group->counters().bytes, 8 * (2 * C + 1));
    layer.backward(dy);
    EXPECT_EQ(group->counters().allreduce_calls, 2);
    EXPECT_EQ(group->counters().bytes, 8 * (2 * C + 1) + 8 * 2 * C);
    EXPECT_EQ(layer.counters().forward_collectives, 1);
    EXPECT_EQ(layer.counters().backward_collectives, 1);
    EXPECT_EQ(layer.counters().forward_bytes, 8 * (2 * C + 1));
    EXPECT_EQ(layer.counters().backward_bytes, 8 * 2 * C);
    // Eval with running stats: no collective at all, forward or backward.
    layer.forward(x, false);
    layer.backward(dy);
    EXPECT_EQ(group->counters().collective_calls(), 2);
    EXPECT_EQ(layer.counters().forward_collectives, 1);
  }
}

TEST_F(SyncBatchNormTest, GroupSizeMustDivideTheWorld) {
  comm::Communicator& w = world();
  for (int group = 2; group <= w.size() + 1; ++group) {
    if (w.size() % group == 0) continue;
    try {
      nn::make_bn_group(w, group);
      ADD_FAILURE() << "bn_group_size " << group << " with world " << w.size() << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("does not divide the world size"), std::string::npos)
          << e.what();
    }
  }
}

TEST_F(SyncBatchNormTest, BadOptionsAreRefusedWithTheLayerName) {
  struct Case {
    nn::SyncBatchNormOptions options;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{.num_features = 0}, "SyncBatchNorm 'bn7': num_features must be >= 1, got 0"},
      {{.num_features = 4, .eps = 0}, "SyncBatchNorm 'bn7': eps must be a positive finite"},
      {{.num_features = 4, .eps = NAN}, "SyncBatchNorm 'bn7': eps must be a positive finite"},
      {{.num_features = 4, .momentum = 1.5}, "SyncBatchNorm 'bn7': momentum must be in [0, 1]"},
  };
  for (const Case& c : cases) {
    try {
      nn::SyncBatchNorm layer(c.options, &world(), "bn7");
      ADD_FAILURE() << "accepted; expected: " << c.message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    }
  }
  // In range: momentum None (cumulative average) and 0 are both fine.
  EXPECT_NO_THROW(nn::SyncBatchNorm({.num_features = 4, .momentum = std::nullopt}, &world(), "a"));
  EXPECT_NO_THROW(nn::SyncBatchNorm({.num_features = 4, .momentum = 0.0}, &world(), "b"));
}

TEST_F(SyncBatchNormTest, GlobalSingleValueRaisesOnEveryRank) {
  comm::Communicator& w = world();
  auto group = nn::make_bn_group(w, 0);
  nn::SyncBatchNormOptions options;
  options.num_features = 3;
  nn::SyncBatchNorm layer(options, group.get(), "single");
  const Tensor x({w.rank() == 0 ? 1 : 0, 3});
  try {
    layer.forward(x, true);
    ADD_FAILURE() << "global n == 1 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Expected more than 1 value per channel when training"),
              std::string::npos)
        << e.what();
  }
  // The group is still usable: nobody was left inside a collective.
  double one = 1;
  group->allreduce_sum(&one, 1);
  EXPECT_EQ(one, w.size());
}

TEST_F(SyncBatchNormTest, LayersCalledInDifferentOrderFailOnEveryRank) {
  comm::Communicator& w = world();
  ASSERT_GE(w.size(), 2) << "registered for two or more ranks only";
  auto group = nn::make_bn_group(w, 0);
  nn::SyncBatchNormOptions options;
  options.num_features = 4;
  nn::SyncBatchNorm first(options, group.get(), "layer1.bn");
  nn::SyncBatchNorm second(options, group.get(), "layer2.bn");
  const Tensor x = random_tensor({2, 4, 3}, 3, 0, 1, MemoryFormat::kContiguous);
  // Rank 0 runs first then second; the others the other way round.
  nn::SyncBatchNorm& a = w.rank() == 0 ? first : second;
  try {
    a.forward(x, true);
    ADD_FAILURE() << "mismatched layer order accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not all in the same layer"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(a.name()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace syncbn

// SGD without PyTorch: a hand-computed update, the optimizer state (what a checkpoint saves and
// restores), zero_grad, thread-count independence and every error. optim_torch_test compares
// whole trajectories with torch.optim.SGD.

#include "optim/sgd.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "tensor/tensor.h"

namespace syncbn::optim {
namespace {

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a syncbn::Error";
  return "";
}

Tensor filled(std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t(std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  for (size_t i = 0; i < values.size(); ++i) t.data()[i] = values[i];
  return t;
}

std::vector<float> values_of(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

// Two steps of momentum 0.5, dampening 0.5, weight decay 0.1, lr 0.1 then 0.2, in float32 as
// the update rule of sgd.h spells it out. Values chosen so every intermediate is exact.
TEST(Sgd, HandComputedMomentumDampeningWeightDecay) {
  Tensor w = filled({2}, {1.0f, -2.0f});
  Tensor dw = filled({2}, {0.5f, 0.25f});
  SGD sgd({{"w", &w, &dw}}, {.lr = 0.1, .momentum = 0.5, .dampening = 0.5, .weight_decay = 0.125});
  // g = (0.5 + 0.125, 0.25 − 0.25) = (0.625, 0); buf = g; w −= 0.25·g.
  sgd.step(0.25);
  EXPECT_EQ(values_of(sgd.momentum_buffers()[0]), (std::vector<float>{0.625f, 0.0f}));
  EXPECT_EQ(values_of(w), (std::vector<float>{1.0f - 0.15625f, -2.0f}));
  // g = (0.5 + 0.125·0.84375, 0.25 − 0.25) = (0.60546875, 0);
  // buf = 0.5·buf + 0.5·g = (0.615234375, 0); w −= 0.5·buf.
  sgd.step(0.5);
  EXPECT_EQ(values_of(sgd.momentum_buffers()[0]), (std::vector<float>{0.615234375f, 0.0f}));
  EXPECT_EQ(values_of(w), (std::vector<float>{0.84375f - 0.3076171875f, -2.0f}));
  EXPECT_EQ(sgd.step_count(), 2);
}

TEST(Sgd, NesterovLooksAhead) {
  Tensor w = filled({1}, {0.0f});
  Tensor dw = filled({1}, {1.0f});
  SGD sgd({{"w", &w, &dw}}, {.lr = 1.0, .momentum = 0.5, .nesterov = true});
  sgd.step();  // buf = 1, g = 1 + 0.5·1
  EXPECT_EQ(w.data()[0], -1.5f);
  sgd.step();  // buf = 0.5 + 1 = 1.5, g = 1 + 0.75
  EXPECT_EQ(w.data()[0], -3.25f);
}

TEST(Sgd, NoMomentumKeepsNoBuffers) {
  Tensor w = filled({3}, {1, 2, 3});
  Tensor dw = filled({3}, {1, 1, 1});
  SGD sgd({{"w", &w, &dw}}, {.lr = 0.5});
  sgd.step();
  EXPECT_FALSE(sgd.momentum_initialized());
  EXPECT_TRUE(sgd.momentum_buffers().empty());
  EXPECT_EQ(values_of(w), (std::vector<float>{0.5f, 1.5f, 2.5f}));
}

TEST(Sgd, ZeroGradClearsEveryGradient) {
  Tensor a = filled({2}, {1, 2}), da = filled({2}, {3, 4});
  Tensor b({2, 3, 2, 2}, MemoryFormat::kChannelsLast),
      db({2, 3, 2, 2}, MemoryFormat::kChannelsLast);
  for (int64_t i = 0; i < db.numel(); ++i) db.data()[i] = 1.0f + static_cast<float>(i);
  SGD sgd({{"a", &a, &da}, {"b", &b, &db}}, {});
  sgd.zero_grad();
  EXPECT_EQ(values_of(da), (std::vector<float>{0, 0}));
  EXPECT_EQ(values_of(db), std::vector<float>(24, 0.0f));
  EXPECT_EQ(values_of(a), (std::vector<float>{1, 2}));  // values untouched
}

TEST(Sgd, NamesFollowTheParams) {
  Tensor a({1}), da({1}), b({1}), db({1});
  SGD sgd({{"0.weight", &a, &da}, {"0.bias", &b, &db}}, {});
  EXPECT_EQ(sgd.param_names(), (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_EQ(sgd.params()[1].value, &b);
}

// Save after 3 steps, restore into a fresh optimizer over copies, and both continue identically.
TEST(Sgd, StateRestoresExactly) {
  Rng rng(7);
  const SgdOptions options{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3};
  Tensor w({4, 3, 3, 3}, MemoryFormat::kChannelsLast), dw(w.shape(), w.format());
  Tensor b({4}), db({4});
  rng.fill_normal(w.data(), w.numel());
  rng.fill_normal(b.data(), b.numel());
  SGD sgd({{"w", &w, &dw}, {"b", &b, &db}}, options);
  auto fill_grads = [&](Tensor& g1, Tensor& g2, uint64_t step) {
    Rng grads(100 + step);
    grads.fill_normal(g1.data(), g1.numel());
    grads.fill_normal(g2.data(), g2.numel());
  };
  for (uint64_t k = 0; k < 3; ++k) {
    fill_grads(dw, db, k);
    sgd.step(0.1 * static_cast<double>(k + 1));
  }
  Tensor w2 = w, dw2 = dw, b2 = b, db2 = db;
  SGD resumed({{"w", &w2, &dw2}, {"b", &b2, &db2}}, options);
  SgdState saved = sgd.state();
  // A checkpoint reader may hand back contiguous buffers; they are converted.
  saved.momentum_buffers[0] = saved.momentum_buffers[0].to(MemoryFormat::kContiguous);
  resumed.load_state(saved);
  EXPECT_EQ(resumed.step_count(), 3);
  EXPECT_EQ(resumed.momentum_buffers()[0].format(), MemoryFormat::kChannelsLast);
  for (uint64_t k = 3; k < 6; ++k) {
    fill_grads(dw, db, k);
    fill_grads(dw2, db2, k);
    sgd.step(0.05);
    resumed.step(0.05);
  }
  EXPECT_EQ(values_of(w2), values_of(w));
  EXPECT_EQ(values_of(b2), values_of(b));
  EXPECT_EQ(values_of(resumed.momentum_buffers()[0]), values_of(sgd.momentum_buffers()[0]));
  EXPECT_EQ(values_of(resumed.momentum_buffers()[1]), values_of(sgd.momentum_buffers()[1]));
  EXPECT_EQ(resumed.step_count(), 6);

  // A state with uninitialised buffers restarts momentum from a copy of g, like a fresh run.
  Tensor w3 = filled({1}, {0}), dw3 = filled({1}, {2});
  SGD fresh({{"w", &w3, &dw3}}, {.momentum = 0.5, .dampening = 0.5});
  fresh.load_state({.step_count = 10});
  fresh.step(1.0);
  EXPECT_EQ(w3.data()[0], -2.0f);
  EXPECT_EQ(fresh.step_count(), 11);
}

TEST(Sgd, SameResultOnAnyThreadCount) {
  const int64_t count = 3 << 16;  // above the parallel grain
  auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor w({count}), dw({count});
    Rng rng(3);
    rng.fill_normal(w.data(), count);
    SGD sgd({{"w", &w, &dw}}, {.momentum = 0.9, .weight_decay = 1e-4, .nesterov = true});
    for (int k = 0; k < 3; ++k) {
      rng.fill_normal(dw.data(), count);
      sgd.step(0.1);
    }
    omp_set_num_threads(before);
    return values_of(w);
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(SgdErrors, Options) {
  EXPECT_EQ(error_of([] { validate({.lr = -1}); }), "Invalid learning rate: -1");
  EXPECT_EQ(error_of([] { validate({.lr = NAN}); }), "Invalid learning rate: nan");
  EXPECT_EQ(error_of([] { validate({.momentum = -0.5}); }), "Invalid momentum value: -0.5");
  EXPECT_EQ(error_of([] { validate({.momentum = INFINITY}); }), "Invalid momentum value: inf");
  EXPECT_EQ(error_of([] { validate({.weight_decay = -1e-05}); }),
            "Invalid weight_decay value: -1e-05");
  EXPECT_EQ(error_of([] { validate({.dampening = NAN}); }), "Invalid dampening value: nan");
  EXPECT_EQ(error_of([] { validate({.nesterov = true}); }),
            "Nesterov momentum requires a momentum and zero dampening");
  EXPECT_EQ(error_of([] { validate({.momentum = 0.9, .dampening = 0.1, .nesterov = true}); }),
            "Nesterov momentum requires a momentum and zero dampening");
  // PyTorch allows a negative dampening, and so do we.
  EXPECT_NO_THROW(validate({.momentum = 0.9, .dampening = -0.5}));
  EXPECT_NO_THROW(validate({.lr = 0.0}));
}

TEST(SgdErrors, StepLr) {
  Tensor w({1}), dw({1});
  SGD sgd({{"w", &w, &dw}}, {});
  EXPECT_EQ(error_of([&] { sgd.step(-0.25); }), "Invalid learning rate: -0.25");
  EXPECT_EQ(error_of([&] { sgd.step(INFINITY); }), "Invalid learning rate: inf");
  EXPECT_EQ(sgd.step_count(), 0);
}

TEST(SgdErrors, Params) {
  Tensor w({2, 3}), dw({2, 3}), wrong({3, 2});
  Tensor cl({1, 2, 2, 2}, MemoryFormat::kChannelsLast), contiguous({1, 2, 2, 2});
  EXPECT_EQ(error_of([&] {
              SGD({{"w", nullptr, &dw}}, {});
            }),
            "SGD parameter 0 ('w') has no value tensor");
  EXPECT_EQ(error_of([&] {
              SGD({{"w", &w, &dw}, {"b", &w, nullptr}}, {});
            }),
            "SGD parameter 1 ('b') has no grad tensor");
  EXPECT_EQ(error_of([&] {
              SGD({{"w", &w, &wrong}}, {});
            }),
            "SGD parameter 0 ('w'): grad shape [3, 2] differs from the value's [2, 3]");
  EXPECT_EQ(error_of([&] {
              SGD({{"c", &cl, &contiguous}}, {});
            }),
            "SGD parameter 0 ('c'): grad memory format contiguous differs from the value's "
            "channels_last");
  EXPECT_EQ(error_of([&] {
              SGD({{"w", &w, &dw}, {"w", &w, &dw}}, {});
            }),
            "SGD parameter 1 ('w') appears more than once; expected each tensor once");
}

TEST(SgdErrors, LoadState) {
  Tensor w({2, 3}), dw({2, 3}), b({3}), db({3});
  SGD sgd({{"w", &w, &dw}, {"b", &b, &db}}, {.momentum = 0.9});
  EXPECT_EQ(error_of([&] { sgd.load_state({.step_count = -1}); }),
            "SGD state: step count -1 is negative; expected >= 0");
  EXPECT_EQ(
      error_of([&] {
        sgd.load_state(
            {.step_count = 1, .momentum_initialized = true, .momentum_buffers = {Tensor({2, 3})}});
      }),
      "SGD state: 1 momentum buffers, expected 2 (2 parameters, momentum buffers "
      "initialised)");
  EXPECT_EQ(error_of([&] {
              sgd.load_state({.step_count = 1, .momentum_buffers = {Tensor({2, 3})}});
            }),
            "SGD state: 1 momentum buffers, expected 0 (2 parameters, momentum buffers not "
            "initialised)");
  EXPECT_EQ(error_of([&] {
              sgd.load_state({.step_count = 1,
                              .momentum_initialized = true,
                              .momentum_buffers = {Tensor({2, 3}), Tensor({4})}});
            }),
            "SGD state: momentum buffer of parameter 1 ('b') has shape [4], expected [3]");
  // A failed load leaves the state as it was.
  EXPECT_EQ(sgd.step_count(), 0);
  EXPECT_FALSE(sgd.momentum_initialized());
}

}  // namespace
}  // namespace syncbn::optim

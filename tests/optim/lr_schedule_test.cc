// LR schedules without PyTorch: warmup, the shapes of the three kinds at a few hand-computed
// points, and every validation error. optim_torch_test compares every step with PyTorch.

#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace syncbn::optim {
namespace {

// The message of the syncbn::Error `fn` throws; a test failure if it throws none.
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

LrSchedule make(ScheduleKind kind, double base_lr, int64_t warmup, int64_t total) {
  LrSchedule s;
  s.kind = kind;
  s.base_lr = base_lr;
  s.warmup_steps = warmup;
  s.total_steps = total;
  return s;
}

TEST(ScheduleKind, ParsesAndPrints) {
  for (ScheduleKind kind : {ScheduleKind::kConstant, ScheduleKind::kStep, ScheduleKind::kCosine})
    EXPECT_EQ(parse_schedule_kind(to_string(kind)), kind);
  EXPECT_STREQ(to_string(ScheduleKind::kCosine), "cosine");
}

TEST(ScheduleKind, UnknownNameListsTheAllowedOnes) {
  EXPECT_EQ(error_of([] { parse_schedule_kind("linear"); }),
            "unknown LR schedule 'linear'; expected one of: constant, step, cosine");
  EXPECT_EQ(error_of([] { parse_schedule_kind("Cosine"); }),
            "unknown LR schedule 'Cosine'; expected one of: constant, step, cosine");
  EXPECT_EQ(error_of([] { parse_schedule_kind(""); }),
            "unknown LR schedule ''; expected one of: constant, step, cosine");
}

TEST(LrSchedule, WarmupRisesLinearlyToBaseLr) {
  for (ScheduleKind kind : {ScheduleKind::kConstant, ScheduleKind::kStep, ScheduleKind::kCosine}) {
    LrSchedule s = make(kind, 0.8, 4, 20);
    s.step_size = 1;
    s.gamma = 0.5;
    EXPECT_DOUBLE_EQ(s.lr_at(1), 0.2) << to_string(kind);
    EXPECT_DOUBLE_EQ(s.lr_at(2), 0.4) << to_string(kind);
    EXPECT_DOUBLE_EQ(s.lr_at(3), 0.6) << to_string(kind);
    EXPECT_DOUBLE_EQ(s.lr_at(4), 0.8) << to_string(kind);
    // The first step after warmup repeats base_lr (PyTorch's last_epoch = 0).
    EXPECT_DOUBLE_EQ(s.lr_at(5), 0.8) << to_string(kind);
  }
}

TEST(LrSchedule, WarmupOfOneStepIsBaseLr) {
  const LrSchedule s = make(ScheduleKind::kConstant, 0.3, 1, 3);
  EXPECT_EQ(s.lr_at(1), 0.3);
  EXPECT_EQ(s.lr_at(3), 0.3);
}

TEST(LrSchedule, WarmupCanFillTheRun) {
  const LrSchedule s = make(ScheduleKind::kStep, 1.0, 5, 5);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 0.2);
  EXPECT_DOUBLE_EQ(s.lr_at(5), 1.0);
}

// A warmup longer than the run is shortened to it (PyTorch's schedulers accept one), with a note.
TEST(LrSchedule, WarmupLongerThanTheRunIsShortened) {
  LrSchedule s;
  s.kind = ScheduleKind::kStep;
  s.total_steps = 20;
  s.warmup_steps = 200;
  EXPECT_EQ(s.fit_warmup_to_run(),
            "train.warmup_steps (200) is longer than the run (20 steps): shortened to 20");
  EXPECT_EQ(s.warmup_steps, 20);
  EXPECT_NO_THROW(s.validate());
  EXPECT_EQ(s.fit_warmup_to_run(), "");  // nothing left to shorten

  LrSchedule cosine;
  cosine.kind = ScheduleKind::kCosine;
  cosine.total_steps = 20;
  cosine.warmup_steps = 20;  // the cosine needs one step after warmup
  EXPECT_NE(cosine.fit_warmup_to_run(), "");
  EXPECT_EQ(cosine.warmup_steps, 19);
  EXPECT_NO_THROW(cosine.validate());

  LrSchedule fits;
  fits.total_steps = 20;
  fits.warmup_steps = 5;
  EXPECT_EQ(fits.fit_warmup_to_run(), "");
  EXPECT_EQ(fits.warmup_steps, 5);
}

TEST(LrSchedule, ConstantWithoutWarmup) {
  const LrSchedule s = make(ScheduleKind::kConstant, 0.05, 0, 7);
  for (int64_t step = 1; step <= 7; ++step) EXPECT_EQ(s.lr_at(step), 0.05);
}

TEST(LrSchedule, StepDecaysEveryStepSizeStepsAfterWarmup) {
  LrSchedule s = make(ScheduleKind::kStep, 1.0, 2, 12);
  s.step_size = 3;
  s.gamma = 0.1;
  // Steps 3, 4, 5 are e = 0, 1, 2; steps 6, 7, 8 are e = 3, 4, 5; ...
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(5), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(6), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(8), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(9), 0.01);
  EXPECT_DOUBLE_EQ(s.lr_at(12), 0.001);
}

TEST(LrSchedule, CosineFromBaseTowardsMinLr) {
  LrSchedule s = make(ScheduleKind::kCosine, 1.0, 0, 4);
  s.min_lr = 0.2;
  // T = 4, e = step − 1: min + (base − min)(1 + cos(π e / 4)) / 2.
  EXPECT_DOUBLE_EQ(s.lr_at(1), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(2), 0.2 + 0.8 * (1 + std::cos(std::numbers::pi / 4)) / 2);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 0.6);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 0.2 + 0.8 * (1 + std::cos(3 * std::numbers::pi / 4)) / 2);
  // Monotone and above min_lr over a longer run with warmup.
  LrSchedule long_run = make(ScheduleKind::kCosine, 0.5, 10, 1000);
  long_run.min_lr = 0.01;
  for (int64_t step = 11; step < 1000; ++step) {
    EXPECT_GT(long_run.lr_at(step), long_run.lr_at(step + 1));
    EXPECT_GT(long_run.lr_at(step + 1), 0.01);
  }
}

TEST(LrSchedule, StepOutsideTheRunIsAnError) {
  const LrSchedule s = make(ScheduleKind::kCosine, 0.1, 2, 10);
  EXPECT_EQ(error_of([&] { s.lr_at(0); }),
            "LR schedule 'cosine': step 0 is outside [1, total_steps = 10]");
  EXPECT_EQ(error_of([&] { s.lr_at(11); }),
            "LR schedule 'cosine': step 11 is outside [1, total_steps = 10]");
  EXPECT_EQ(error_of([&] { s.lr_at(-3); }),
            "LR schedule 'cosine': step -3 is outside [1, total_steps = 10]");
}

// Every validation error, from validate() and from lr_at() (which validates).
void expect_invalid(const LrSchedule& s, const std::string& message) {
  EXPECT_EQ(error_of([&] { s.validate(); }), message);
  EXPECT_EQ(error_of([&] { s.lr_at(1); }), message);
}

TEST(LrScheduleValidation, BaseLr) {
  expect_invalid(make(ScheduleKind::kConstant, -0.5, 0, 10),
                 "LR schedule 'constant': base_lr is -0.5, expected a finite value >= 0");
  expect_invalid(make(ScheduleKind::kStep, std::nan(""), 0, 10),
                 "LR schedule 'step': base_lr is nan, expected a finite value >= 0");
  expect_invalid(make(ScheduleKind::kCosine, INFINITY, 0, 10),
                 "LR schedule 'cosine': base_lr is inf, expected a finite value >= 0");
  EXPECT_EQ(make(ScheduleKind::kConstant, 0.0, 0, 1).lr_at(1), 0.0);
}

TEST(LrScheduleValidation, Steps) {
  expect_invalid(make(ScheduleKind::kConstant, 0.1, 0, 0),
                 "LR schedule 'constant': total_steps is 0, expected >= 1");
  expect_invalid(make(ScheduleKind::kConstant, 0.1, -1, 10),
                 "LR schedule 'constant': warmup_steps is -1, expected >= 0");
  expect_invalid(make(ScheduleKind::kStep, 0.1, 11, 10),
                 "LR schedule 'step': warmup_steps (11) exceeds total_steps (10)");
}

TEST(LrScheduleValidation, StepSizeAndGamma) {
  LrSchedule s = make(ScheduleKind::kStep, 0.1, 0, 10);
  s.step_size = 0;
  expect_invalid(s, "LR schedule 'step': step_size is 0, expected >= 1");
  s.step_size = -4;
  expect_invalid(s, "LR schedule 'step': step_size is -4, expected >= 1");
  s.step_size = 2;
  s.gamma = 0.0;
  expect_invalid(s, "LR schedule 'step': gamma is 0, expected a finite value > 0");
  s.gamma = -0.1;
  expect_invalid(s, "LR schedule 'step': gamma is -0.1, expected a finite value > 0");
  s.gamma = std::nan("");
  expect_invalid(s, "LR schedule 'step': gamma is nan, expected a finite value > 0");
  // Other kinds do not look at step_size and gamma.
  s.kind = ScheduleKind::kConstant;
  s.step_size = 0;
  EXPECT_NO_THROW(s.validate());
}

TEST(LrScheduleValidation, Cosine) {
  expect_invalid(make(ScheduleKind::kCosine, 0.1, 10, 10),
                 "LR schedule 'cosine': warmup_steps (10) must be less than total_steps (10) so "
                 "that the cosine phase has at least one step");
  LrSchedule s = make(ScheduleKind::kCosine, 0.1, 0, 10);
  s.min_lr = -0.01;
  expect_invalid(s,
                 "LR schedule 'cosine': min_lr is -0.01, expected a finite value in [0, "
                 "base_lr = 0.1]");
  s.min_lr = 0.2;
  expect_invalid(s,
                 "LR schedule 'cosine': min_lr is 0.2, expected a finite value in [0, "
                 "base_lr = 0.1]");
  s.min_lr = INFINITY;
  expect_invalid(s,
                 "LR schedule 'cosine': min_lr is inf, expected a finite value in [0, "
                 "base_lr = 0.1]");
  // Other kinds do not look at min_lr.
  s.kind = ScheduleKind::kStep;
  EXPECT_NO_THROW(s.validate());
}

}  // namespace
}  // namespace syncbn::optim

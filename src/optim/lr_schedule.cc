#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace syncbn::optim {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "step") return ScheduleKind::kStep;
  if (name == "cosine") return ScheduleKind::kCosine;
  throw Error(str_cat("unknown LR schedule '", name, "'; expected one of: constant, step, cosine"));
}

const char* to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant:
      return "constant";
    case ScheduleKind::kStep:
      return "step";
    case ScheduleKind::kCosine:
      return "cosine";
  }
  SYNCBN_CHECK(false && "unknown ScheduleKind");
}

void LrSchedule::validate() const {
  const std::string what = str_cat("LR schedule '", to_string(kind), "': ");
  SYNCBN_REQUIRE(std::isfinite(base_lr) && base_lr >= 0.0, what, "base_lr is ", base_lr,
                 ", expected a finite value >= 0");
  SYNCBN_REQUIRE(total_steps >= 1, what, "total_steps is ", total_steps, ", expected >= 1");
  SYNCBN_REQUIRE(warmup_steps >= 0, what, "warmup_steps is ", warmup_steps, ", expected >= 0");
  SYNCBN_REQUIRE(warmup_steps <= total_steps, what, "warmup_steps (", warmup_steps,
                 ") exceeds total_steps (", total_steps, ")");
  if (kind == ScheduleKind::kStep) {
    SYNCBN_REQUIRE(step_size >= 1, what, "step_size is ", step_size, ", expected >= 1");
    SYNCBN_REQUIRE(std::isfinite(gamma) && gamma > 0.0, what, "gamma is ", gamma,
                   ", expected a finite value > 0");
  }
  if (kind == ScheduleKind::kCosine) {
    SYNCBN_REQUIRE(warmup_steps < total_steps, what, "warmup_steps (", warmup_steps,
                   ") must be less than total_steps (", total_steps,
                   ") so that the cosine phase has at least one step");
    SYNCBN_REQUIRE(std::isfinite(min_lr) && min_lr >= 0.0 && min_lr <= base_lr, what, "min_lr is ",
                   min_lr, ", expected a finite value in [0, base_lr = ", base_lr, "]");
  }
}

std::string LrSchedule::fit_warmup_to_run() {
  const int64_t longest =
      std::max<int64_t>(0, kind == ScheduleKind::kCosine ? total_steps - 1 : total_steps);
  if (warmup_steps <= longest) return "";
  const std::string note =
      str_cat("train.warmup_steps (", warmup_steps, ") is longer than the run (", total_steps,
              " steps): shortened to ", longest);
  warmup_steps = longest;
  return note;
}

double LrSchedule::lr_at(int64_t step) const {
  validate();
  SYNCBN_REQUIRE(step >= 1 && step <= total_steps, "LR schedule '", to_string(kind), "': step ",
                 step, " is outside [1, total_steps = ", total_steps, "]");
  if (step <= warmup_steps)
    return base_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  // PyTorch's last_epoch for the scheduler that takes over after warmup (lr_schedule.h).
  const int64_t e = step - warmup_steps - 1;
  switch (kind) {
    case ScheduleKind::kConstant:
      return base_lr;
    case ScheduleKind::kStep:
      return base_lr * std::pow(gamma, static_cast<double>(e / step_size));
    case ScheduleKind::kCosine: {
      const double period = static_cast<double>(total_steps - warmup_steps);
      return min_lr + (base_lr - min_lr) *
                          (1.0 + std::cos(std::numbers::pi * static_cast<double>(e) / period)) /
                          2.0;
    }
  }
  SYNCBN_CHECK(false && "unknown ScheduleKind");
}

}  // namespace syncbn::optim

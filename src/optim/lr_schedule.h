// Learning-rate schedules as a pure function of the step, so a resumed run needs only the step
// count to get the same learning rates back.
//
// Steps are counted from 1: lr_at(s) is the learning rate of the s-th optimizer step, for
// 1 <= s <= total_steps. With W = warmup_steps:
//
//   warmup, 1 <= s <= W:   lr = base_lr · s / W      (base_lr/W at step 1, base_lr at step W)
//   after,  W <  s:        e = s − W − 1             (0 at the first step after warmup)
//     constant:  lr = base_lr
//     step:      lr = base_lr · gamma^floor(e / step_size)
//     cosine:    lr = min_lr + (base_lr − min_lr) · (1 + cos(π · e / T)) / 2,   T = total_steps − W
//
// e is PyTorch's last_epoch: the number of scheduler.step() calls made before the optimizer step
// that uses the rate, when the scheduler is stepped once after every optimizer step. So the
// steps after warmup get exactly the rates of torch.optim.lr_scheduler.StepLR(step_size, gamma)
// and CosineAnnealingLR(T_max=T, eta_min=min_lr) started at base_lr (up to rounding: PyTorch
// computes them recursively), and the warmup those of LinearLR(start_factor=1/W, end_factor=1,
// total_iters=W−1). The cosine phase runs e = 0 .. T−1, so its last step is still just above
// min_lr (PyTorch reaches eta_min at last_epoch = T, after the last step). The first step after
// warmup repeats base_lr, as chaining those schedulers does.
#pragma once

#include <cstdint>
#include <string>

namespace syncbn::optim {

enum class ScheduleKind { kConstant, kStep, kCosine };

// "constant", "step" or "cosine"; anything else throws syncbn::Error naming the allowed values.
ScheduleKind parse_schedule_kind(const std::string& name);
const char* to_string(ScheduleKind kind);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::kConstant;
  double base_lr = 0.1;
  int64_t warmup_steps = 0;  // 0: no warmup
  int64_t total_steps = 1;   // the steps of the whole run, warmup included
  int64_t step_size = 1;     // step: decay every step_size steps after warmup
  double gamma = 0.1;        // step: decay factor
  double min_lr = 0.0;       // cosine: the rate the cosine decays towards

  // Throws syncbn::Error, naming the field, its value and what was expected, unless:
  // base_lr is finite and >= 0; 0 <= warmup_steps <= total_steps; total_steps >= 1;
  // step: step_size >= 1 and gamma finite and > 0; cosine: warmup_steps < total_steps (the
  // cosine needs a step) and 0 <= min_lr <= base_lr. Fields of the other kinds are not looked at.
  void validate() const;

  // Shortens a warmup longer than the run to the longest one it allows (total_steps; for cosine
  // total_steps − 1, which leaves the cosine its one step), as PyTorch's schedulers accept such
  // a warmup. Returns a note saying what changed, or "" when nothing did.
  std::string fit_warmup_to_run();

  // The rate of step `step` (see above). Validates, and throws syncbn::Error for a step outside
  // [1, total_steps].
  double lr_at(int64_t step) const;
};

}  // namespace syncbn::optim

// Test hooks of the training loop, read once from the environment. They exist so that tests can
// make a real `syncbn train` under mpirun fail, die, hang or slow down at a chosen point; a run
// without these variables pays one predictable branch per hook. A trailing ":G" limits a hook to
// launch generation G (launch/run.sh relaunches with G + 1):
//
//   SYNCBN_TEST_FAIL_AT=STAGE:N:R[:G]  rank R throws a syncbn::Error in STAGE of step N, where
//                                      STAGE is forward, backward, allreduce (the gradient
//                                      allreduce), eval or checkpoint; the other ranks are then
//                                      inside a collective (tests/train/failpoint_test.py).
//   SYNCBN_TEST_KILL_AT_STEP=N:R[:G]   rank R sends itself SIGKILL right after step N (and its
//                                      checkpoint, if one is due): a rank dying mid-run.
//   SYNCBN_TEST_HANG_AT_STEP=N:R[:G]   rank R stops making progress after step N (alive, its
//                                      training thread sleeping forever; the others then wait in
//                                      the next collective): a stuck rank, for the supervisor's
//                                      stall detection. N = the step it starts from (0): stuck
//                                      before the first step.
//   SYNCBN_TEST_STEP_SLEEP_MS=T        every rank sleeps T ms after each step: a slow run, so a
//                                      test can act while it is still training.
//   SYNCBN_TEST_FORGET_POSITION=1      a resume restores the weights but restarts the data order
//                                      from the beginning: the negative control of the resume
//                                      test.
#pragma once

#include <cstdint>

namespace syncbn::train::test_hooks {

enum class Stage { kForward, kBackward, kAllreduce, kEval, kCheckpoint };

// Reads the variables for this rank and launch generation (once, before the step loop).
void configure(int rank, int64_t generation);

// The loop's two calls: before step `step` starts (steps count from 1; `first` marks the first
// step of this launch), and after it is done (metrics, eval and checkpoint included).
void step_begins(int64_t step, bool first);
void step_done(int64_t step);

// Throws syncbn::Error when SYNCBN_TEST_FAIL_AT names this stage, the current step and this rank.
inline bool g_failpoint_armed = false;
void fail_at_slow(Stage stage);
inline void fail_at(Stage stage) {
  if (g_failpoint_armed) fail_at_slow(stage);
}

bool forget_position();

}  // namespace syncbn::train::test_hooks

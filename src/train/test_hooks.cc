#include "train/test_hooks.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"

namespace syncbn::train::test_hooks {
namespace {

struct Point {
  int64_t step = -1;
  bool on = false;
};

struct Hooks {
  int rank = 0;
  int64_t current_step = 0;
  Point kill, hang, fail;
  Stage fail_stage = Stage::kForward;
  const char* fail_spec = "";
  int64_t step_sleep_ms = 0;
  bool forget_position = false;
};

Hooks g_hooks;

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::kForward:
      return "forward";
    case Stage::kBackward:
      return "backward";
    case Stage::kAllreduce:
      return "allreduce";
    case Stage::kEval:
      return "eval";
    case Stage::kCheckpoint:
      return "checkpoint";
  }
  return "?";
}

// "N:R" or "N:R:G" (after `prefix_fields` leading text fields already consumed); a hook for
// another rank or generation stays off. A malformed value is a broken test: say so and stop.
Point parse_point(const char* name, const char* spec, int rank, int64_t generation) {
  long long step = -1, gen = -1;
  int hook_rank = -1, used = 0;
  const int fields = std::sscanf(spec, "%lld:%d%n:%lld%n", &step, &hook_rank, &used, &gen, &used);
  SYNCBN_REQUIRE(fields >= 2 && spec[used] == '\0', name, "='", spec,
                 "': expected STEP:RANK or STEP:RANK:GENERATION");
  Point p;
  p.step = step;
  p.on = hook_rank == rank && (fields == 2 || gen == generation);
  return p;
}

[[noreturn]] void hang_forever() {
  for (;;) ::pause();
}

}  // namespace

void configure(int rank, int64_t generation) {
  g_hooks = Hooks{};
  g_hooks.rank = rank;
  if (const char* spec = std::getenv("SYNCBN_TEST_KILL_AT_STEP"))
    g_hooks.kill = parse_point("SYNCBN_TEST_KILL_AT_STEP", spec, rank, generation);
  if (const char* spec = std::getenv("SYNCBN_TEST_HANG_AT_STEP"))
    g_hooks.hang = parse_point("SYNCBN_TEST_HANG_AT_STEP", spec, rank, generation);
  if (const char* spec = std::getenv("SYNCBN_TEST_FAIL_AT")) {
    const char* colon = std::strchr(spec, ':');
    const std::string stage(spec, colon ? static_cast<size_t>(colon - spec) : std::strlen(spec));
    bool known = false;
    for (Stage s :
         {Stage::kForward, Stage::kBackward, Stage::kAllreduce, Stage::kEval, Stage::kCheckpoint}) {
      if (stage == stage_name(s)) g_hooks.fail_stage = s, known = true;
    }
    SYNCBN_REQUIRE(known && colon != nullptr, "SYNCBN_TEST_FAIL_AT='", spec,
                   "': expected STAGE:STEP:RANK[:GENERATION] with STAGE one of forward, "
                   "backward, allreduce, eval, checkpoint");
    g_hooks.fail = parse_point("SYNCBN_TEST_FAIL_AT", colon + 1, rank, generation);
    g_hooks.fail_spec = spec;
  }
  if (const char* sleep = std::getenv("SYNCBN_TEST_STEP_SLEEP_MS"))
    g_hooks.step_sleep_ms = std::max<int64_t>(0, std::atoll(sleep));
  const char* forget = std::getenv("SYNCBN_TEST_FORGET_POSITION");
  g_hooks.forget_position = forget != nullptr && std::string(forget) == "1";
  g_failpoint_armed = g_hooks.fail.on;
}

void step_begins(int64_t step, bool first) {
  g_hooks.current_step = step;
  if (first && g_hooks.hang.on && g_hooks.hang.step == step - 1) hang_forever();
}

void step_done(int64_t step) {
  const Hooks& h = g_hooks;
  if (h.kill.on && h.kill.step == step) ::raise(SIGKILL);
  if (h.step_sleep_ms > 0) ::usleep(static_cast<useconds_t>(h.step_sleep_ms * 1000));
  if (h.hang.on && h.hang.step == step) hang_forever();
}

void fail_at_slow(Stage stage) {
  const Hooks& h = g_hooks;
  if (stage != h.fail_stage || h.current_step != h.fail.step) return;
  throw Error(str_cat("test failpoint SYNCBN_TEST_FAIL_AT=", h.fail_spec, ": ", stage_name(stage),
                      " of step ", h.current_step, " failed on rank ", h.rank));
}

bool forget_position() { return g_hooks.forget_position; }

}  // namespace syncbn::train::test_hooks

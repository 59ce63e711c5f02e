// The trainer's link to the coordinator while it trains: a background thread, so that the step
// loop never waits on the coordinator (DESIGN.md §4, "Control plane, not data plane").
//
//   BackgroundClient bg(options);         // after the Join; starts the thread
//   bg.progress(step);                    // every step: the heartbeat carries the last one
//   bg.report_metrics(report);            // rank 0, every log_every steps
//   bg.put_checkpoint(step, bytes);       // rank 0: spilled to disk, then uploaded
//   bg.check();                           // every step: throws what the coordinator refused
//   BackgroundClient::Summary s = bg.finish(wait);  // at the end: drains what it can
//
// The thread sends a heartbeat about every heartbeat_interval carrying the last step the
// training thread reported, so a rank whose training is stuck shows as one whose step stops
// moving (the supervisor judges progress by the step, not by the heartbeat's arrival).
// Metrics wait in a queue of at most max_queued_metrics reports (the oldest dropped, counted).
// Each checkpoint is first written durably to the spill directory (coordinator/spill_dir.h),
// then uploaded oldest first and removed from the spill once committed (files a previous launch
// left there too). put_checkpoint blocks
// only when two checkpoints already wait to be written to disk.
//
// While the coordinator does not answer (UNAVAILABLE or a deadline), the thread keeps
// everything (bounded as above) and tries again with backoff; `log` gets one line when it goes
// away and one when it is back. A refusal that retrying cannot fix (a stale generation: a newer
// launch replaced this one) is kept and thrown by check() on the training thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/client.h"
#include "coordinator/types.h"

namespace syncbn::coordinator {

struct BackgroundOptions {
  ClientOptions client;  // how to reach the coordinator (its retry limit is not used)
  std::string run_id;
  int32_t rank = 0;
  int64_t generation = 0;
  std::string spill_dir;  // needed by put_checkpoint
  int64_t keep_last = kDefaultKeepLast;
  // What every upload says besides step, size and CRC: config_hash, world_size, format_version
  // (run_id and generation come from above). Files a previous launch left in the spill
  // directory are uploaded as this launch's.
  CheckpointMeta checkpoint_meta;
  size_t max_queued_metrics = 1024;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds max_retry_backoff{2000};
  std::function<void(const std::string&)> log;  // warnings; none when empty
};

class BackgroundClient {
 public:
  explicit BackgroundClient(BackgroundOptions options);
  ~BackgroundClient();  // stops the thread; what was not sent stays in the spill directory
  BackgroundClient(const BackgroundClient&) = delete;
  BackgroundClient& operator=(const BackgroundClient&) = delete;

  // The last step the training thread finished; touch(): it is working (an evaluation batch,
  // the end of the run). Both count as progress for the supervisor.
  void progress(int64_t step);
  void touch();
  void report_metrics(MetricsReport report);
  void put_checkpoint(int64_t step, std::string data);
  // Throws ClientError when the coordinator refused this rank for good.
  void check() const;

  struct Summary {
    bool drained = false;                // everything was sent and committed
    bool coordinator_reachable = false;  // at the last attempt
    std::vector<int64_t> spilled_steps;  // checkpoints still in the spill directory
    int64_t dropped_metrics = 0;         // reports dropped from the full queue over the run
  };
  // Sends what is left: waits while the coordinator answers and work remains, and at most
  // `wait_unreachable` in all while it does not. Then stops the thread.
  Summary finish(std::chrono::milliseconds wait_unreachable);

  const std::string& spill_dir() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace syncbn::coordinator

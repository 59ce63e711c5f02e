// The coordinator's state machine, apart from any transport (STYLE.md rule 6): runs, their
// launch generations, membership, heartbeats, recent metrics, and checkpoint metadata checks in
// front of the CheckpointStore. Every method validates every field of its request and throws
// ServiceError with the code the peer is answered with.
//
// Generations. Each launch of a run (the first, and every relaunch after a failure) has a
// generation number. The first Join of a newer generation, by any rank, fixes the run's config
// (YAML and hash), world size and keep_last for that generation and forgets the older
// generation's ranks; a request from an older generation is refused with kFailedPrecondition.
// Ranks of the current generation whose config hash or world size differ are refused with
// kFailedPrecondition and a message naming both values.
//
// Runs (id, generation, config, world size, keep_last) are kept in <state_dir>/runs.sqlite, so
// a restarted coordinator still refuses stale generations; membership and heartbeats are kept
// in memory only (a heartbeat from a rank of the current generation that has not joined since
// the coordinator started is accepted and makes it a member).
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/checkpoint_store.h"
#include "coordinator/sqlite_db.h"
#include "coordinator/types.h"

namespace syncbn::coordinator {

class CoordinatorState {
 public:
  struct Options {
    std::string state_dir;
    int32_t default_keep_last = kDefaultKeepLast;  // for runs that join with keep_last 0
    int64_t max_checkpoint_bytes = kDefaultMaxCheckpointBytes;
    // Bounds on what peers can make the coordinator keep (RESOURCE_EXHAUSTED past them).
    int64_t max_runs = kDefaultMaxRuns;                 // runs known at once
    int64_t max_config_bytes = kDefaultMaxConfigBytes;  // per Join's config YAML
    int64_t metrics_per_run = kDefaultMetricsPerRun;    // recent reports kept per run
    std::function<void(const std::string&)> log;        // default: stderr
    std::function<int64_t()> now_unix_ms;               // default: the system clock (tests fake it)
  };

  explicit CoordinatorState(Options options);
  ~CoordinatorState();

  JoinReply join(const JoinRequest& request);
  // Returns the run's current generation.
  int64_t heartbeat(const HeartbeatRequest& request);
  void report_metrics(MetricsReport report);

  // PutCheckpoint: chunks go into an Upload (Upload::append validates them), then
  // commit_checkpoint validates the metadata against the run and commits it. `meta.run_id`,
  // step, generation, config_hash, world_size, format_version, size_bytes and crc32c come from
  // the peer; created_unix_ms is set here.
  std::unique_ptr<Upload> begin_checkpoint_upload() { return store_->begin_upload(); }
  CheckpointMeta commit_checkpoint(Upload& upload, const CheckpointMeta& meta);

  // The newest valid checkpoint of a run, or the one at `step`; kNotFound when there is none.
  CheckpointStore::OpenCheckpoint open_checkpoint(const std::string& run_id,
                                                  std::optional<int64_t> step);
  std::vector<CheckpointMeta> list_checkpoints(const std::string& run_id);

  // One run (kNotFound if unknown) or, with an empty id, every run, by id.
  std::vector<RunStatus> run_status(const std::string& run_id);

  CheckpointStore& store() { return *store_; }

 private:
  struct Member {
    RankStatus status;
    int64_t activity = 0;  // the last heartbeat's
  };
  struct Run {
    int64_t generation = 0;
    int32_t world_size = 0;
    uint64_t config_hash = 0;
    std::string config_yaml;
    int32_t keep_last = 0;
    int32_t fixed_by_rank = -1;  // the rank whose Join fixed this generation (-1: restored)
    std::map<int32_t, Member> members;
    std::deque<MetricsReport> recent_metrics;
  };

  Run& current_run(const std::string& run_id, int64_t generation, int32_t rank,
                   const char* request);                     // requires mutex_
  void save_run(const std::string& run_id, const Run& run);  // requires mutex_
  int64_t now() const { return now_unix_ms_(); }

  Options options_;
  std::function<int64_t()> now_unix_ms_;
  std::unique_ptr<CheckpointStore> store_;
  std::mutex mutex_;  // guards runs_ and runs_db_
  std::unique_ptr<Database> runs_db_;
  std::map<std::string, Run> runs_;
};

}  // namespace syncbn::coordinator

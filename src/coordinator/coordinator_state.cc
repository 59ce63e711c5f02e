#include "coordinator/coordinator_state.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <utility>

#include "coordinator/status.h"
#include "core/hash.h"

namespace syncbn::coordinator {
namespace {

std::string hex64(uint64_t value) { return "0x" + syncbn::hex64(value); }

void require_range(const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    fail(Code::kInvalidArgument, field, " = ", value, " is out of range: expected ", lo, " to ",
         hi);
  }
}

// Host names are shown by `syncbn status`: printable ASCII only, so no terminal escapes.
void validate_host(const std::string& host) {
  if (host.size() > kMaxHostBytes) {
    fail(Code::kInvalidArgument, "host has ", host.size(), " bytes; at most ", kMaxHostBytes,
         " are allowed");
  }
  for (const char c : host) {
    if (c < 0x21 || c > 0x7E) fail(Code::kInvalidArgument, "host contains a non-printable byte");
  }
}

void validate_metric_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxMetricNameBytes) {
    fail(Code::kInvalidArgument, "metric names have 1 to ", kMaxMetricNameBytes, " characters");
  }
  for (const char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-' || c == '/';
    if (!ok) fail(Code::kInvalidArgument, "metric name '", name, "' must match [A-Za-z0-9_./-]+");
  }
}

}  // namespace

CoordinatorState::CoordinatorState(Options options) : options_(std::move(options)) {
  SYNCBN_REQUIRE(options_.default_keep_last >= 1 && options_.default_keep_last <= kMaxKeepLast,
                 "--keep-last must be 1 to ", kMaxKeepLast, ", got ", options_.default_keep_last);
  now_unix_ms_ = options_.now_unix_ms ? options_.now_unix_ms : [] {
    return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
  };
  store_ = std::make_unique<CheckpointStore>(
      CheckpointStore::Options{options_.state_dir, options_.max_checkpoint_bytes, options_.log});
  runs_db_ = std::make_unique<Database>(options_.state_dir + "/runs.sqlite");
  runs_db_->exec(
      "CREATE TABLE IF NOT EXISTS runs ("
      "  run_id TEXT PRIMARY KEY NOT NULL, generation INTEGER NOT NULL,"
      "  world_size INTEGER NOT NULL, config_hash INTEGER NOT NULL,"
      "  config_yaml TEXT NOT NULL, keep_last INTEGER NOT NULL) WITHOUT ROWID");
  Statement select(*runs_db_,
                   "SELECT run_id, generation, world_size, config_hash, config_yaml, keep_last "
                   "FROM runs");
  while (select.step()) {
    const std::string run_id = select.column_text(0);
    if (!is_valid_run_id(run_id)) continue;
    Run& run = runs_[run_id];
    run.generation = select.column_int(1);
    run.world_size = static_cast<int32_t>(select.column_int(2));
    run.config_hash = static_cast<uint64_t>(select.column_int(3));
    run.config_yaml = select.column_text(4);
    run.keep_last = static_cast<int32_t>(select.column_int(5));
  }
}

CoordinatorState::~CoordinatorState() = default;

void CoordinatorState::save_run(const std::string& run_id, const Run& run) {
  Statement(*runs_db_,
            "INSERT OR REPLACE INTO runs (run_id, generation, world_size, config_hash, "
            "config_yaml, keep_last) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
      .bind(1, run_id)
      .bind(2, run.generation)
      .bind(3, int64_t{run.world_size})
      .bind(4, static_cast<int64_t>(run.config_hash))
      .bind(5, run.config_yaml)
      .bind(6, int64_t{run.keep_last})
      .run();
}

JoinReply CoordinatorState::join(const JoinRequest& request) {
  validate_run_id(request.run_id);
  require_range("world_size", request.world_size, 1, kMaxWorldSize);
  require_range("rank", request.rank, 0, request.world_size - 1);
  require_range("generation", request.generation, 0, kMaxGeneration);
  require_range("pid", request.pid, 0, kMaxPid);
  require_range("keep_last", request.keep_last, 0, kMaxKeepLast);
  validate_host(request.host);
  if (request.config_yaml.empty()) fail(Code::kInvalidArgument, "config_yaml is empty");
  if (static_cast<int64_t>(request.config_yaml.size()) > options_.max_config_bytes) {
    fail(Code::kResourceExhausted, "config_yaml has ", request.config_yaml.size(),
         " bytes; this coordinator takes at most ", options_.max_config_bytes,
         " (--max-config-bytes)");
  }
  // The hash is the run's identity: it must be the hash of the YAML it comes with, or a Join
  // could pair the run's public hash with another config, which later ranks would receive.
  if (fnv1a(request.config_yaml) != request.config_hash) {
    fail(Code::kInvalidArgument, "config_hash ", hex64(request.config_hash),
         " is not the hash of the config_yaml sent with it (", hex64(fnv1a(request.config_yaml)),
         ")");
  }
  std::lock_guard lock(mutex_);
  auto found = runs_.find(request.run_id);
  if (found == runs_.end() && static_cast<int64_t>(runs_.size()) >= options_.max_runs) {
    fail(Code::kResourceExhausted, "run '", request.run_id, "' is new, and this coordinator keeps ",
         options_.max_runs, " runs already (--max-runs)");
  }
  if (found != runs_.end() && request.generation > found->second.generation + 1) {
    fail(Code::kFailedPrecondition, "rank ", request.rank, " of run '", request.run_id,
         "' joins with generation ", request.generation, ", but a relaunch advances the run's ",
         "generation ", found->second.generation, " by one, to ", found->second.generation + 1);
  }
  if (found == runs_.end() || request.generation > found->second.generation) {
    // The first Join of a new run or of a newer generation fixes the run for that generation.
    Run fresh;
    fresh.generation = request.generation;
    fresh.world_size = request.world_size;
    fresh.config_hash = request.config_hash;
    fresh.config_yaml = request.config_yaml;
    fresh.keep_last = request.keep_last > 0 ? request.keep_last : options_.default_keep_last;
    fresh.fixed_by_rank = request.rank;
    if (found != runs_.end()) fresh.recent_metrics = std::move(found->second.recent_metrics);
    save_run(request.run_id, fresh);
    found = runs_.insert_or_assign(request.run_id, std::move(fresh)).first;
  }
  Run& run = found->second;
  const std::string who = str_cat("rank ", request.rank, " of run '", request.run_id, "'");
  if (request.generation < run.generation) {
    fail(Code::kFailedPrecondition, who, " joins with generation ", request.generation,
         ", older than the run's current generation ", run.generation,
         ": a newer launch has replaced it");
  }
  const std::string fixed_by =
      run.fixed_by_rank >= 0 ? str_cat(" (fixed by rank ", run.fixed_by_rank, ")") : "";
  std::string differences;
  if (request.config_hash != run.config_hash) {
    differences += str_cat("config hash ", hex64(request.config_hash), " differs from the run's ",
                           hex64(run.config_hash));
  }
  if (request.world_size != run.world_size) {
    if (!differences.empty()) differences += "; ";
    differences +=
        str_cat("world size ", request.world_size, " differs from the run's ", run.world_size);
  }
  if (!differences.empty()) {
    fail(Code::kFailedPrecondition, who, ", generation ", request.generation,
         ", refused: ", differences, fixed_by);
  }

  RankStatus& status = run.members[request.rank].status;
  status.rank = request.rank;
  status.host = request.host;
  status.pid = request.pid;
  status.generation = request.generation;
  status.joined_unix_ms = now();

  JoinReply reply;
  reply.config_yaml = run.config_yaml;
  reply.config_hash = run.config_hash;
  reply.generation = run.generation;
  reply.world_size = run.world_size;
  reply.keep_last = run.keep_last;
  reply.newest_checkpoint = store_->newest(request.run_id);
  return reply;
}

CoordinatorState::Run& CoordinatorState::current_run(const std::string& run_id, int64_t generation,
                                                     int32_t rank, const char* request) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) {
    fail(Code::kNotFound, request, ": run '", run_id, "' is unknown: join it first");
  }
  Run& run = found->second;
  if (generation < run.generation) {
    fail(Code::kFailedPrecondition, request, " from rank ", rank, " of run '", run_id,
         "' with stale generation ", generation, ": the run's current generation is ",
         run.generation);
  }
  if (generation > run.generation) {
    fail(Code::kFailedPrecondition, request, " from rank ", rank, " of run '", run_id,
         "' with generation ", generation, ", which has not joined yet (current generation ",
         run.generation, ")");
  }
  if (rank >= run.world_size) {
    fail(Code::kInvalidArgument, request, ": rank ", rank, " is out of range for world size ",
         run.world_size);
  }
  return run;
}

int64_t CoordinatorState::heartbeat(const HeartbeatRequest& request) {
  validate_run_id(request.run_id);
  require_range("rank", request.rank, 0, kMaxWorldSize - 1);
  require_range("generation", request.generation, 0, kMaxGeneration);
  require_range("step", request.step, 0, kMaxStep);
  std::lock_guard lock(mutex_);
  Run& run = current_run(request.run_id, request.generation, request.rank, "heartbeat");
  Member& member = run.members[request.rank];
  RankStatus& status = member.status;
  status.rank = request.rank;
  status.generation = request.generation;
  status.last_heartbeat_unix_ms = now();
  if (status.last_progress_unix_ms == 0 || request.step != status.last_step ||
      request.activity != member.activity) {
    status.last_progress_unix_ms = status.last_heartbeat_unix_ms;
  }
  member.activity = request.activity;
  status.last_step = request.step;
  return run.generation;
}

void CoordinatorState::report_metrics(MetricsReport report) {
  validate_run_id(report.run_id);
  require_range("rank", report.rank, 0, kMaxWorldSize - 1);
  require_range("generation", report.generation, 0, kMaxGeneration);
  require_range("step", report.step, 0, kMaxStep);
  if (report.values.size() > kMaxMetricsPerReport) {
    fail(Code::kInvalidArgument, "a metrics report has ", report.values.size(), " values; at most ",
         kMaxMetricsPerReport, " are allowed");
  }
  for (const auto& [name, value] : report.values) validate_metric_name(name);
  std::lock_guard lock(mutex_);
  Run& run = current_run(report.run_id, report.generation, report.rank, "metrics report");
  report.received_unix_ms = now();
  run.recent_metrics.push_back(std::move(report));
  while (static_cast<int64_t>(run.recent_metrics.size()) > options_.metrics_per_run)
    run.recent_metrics.pop_front();
}

CheckpointMeta CoordinatorState::commit_checkpoint(Upload& upload, const CheckpointMeta& meta) {
  validate_run_id(meta.run_id);
  require_range("step", meta.step, 0, kMaxStep);
  require_range("generation", meta.generation, 0, kMaxGeneration);
  require_range("world_size", meta.world_size, 1, kMaxWorldSize);
  require_range("format_version", meta.format_version, 1, kMaxFormatVersion);
  require_range("size_bytes", meta.size_bytes, 1, options_.max_checkpoint_bytes);
  int32_t keep_last = 0;
  {
    std::lock_guard lock(mutex_);
    Run& run = current_run(meta.run_id, meta.generation, 0, "checkpoint");
    if (meta.config_hash != run.config_hash) {
      fail(Code::kFailedPrecondition, "checkpoint step ", meta.step, " of run '", meta.run_id,
           "': config hash ", hex64(meta.config_hash), " differs from the run's ",
           hex64(run.config_hash));
    }
    if (meta.world_size != run.world_size) {
      fail(Code::kFailedPrecondition, "checkpoint step ", meta.step, " of run '", meta.run_id,
           "': world size ", meta.world_size, " differs from the run's ", run.world_size);
    }
    keep_last = run.keep_last;
  }
  // The store serializes commits itself; a Join of a newer generation racing with this commit
  // only means the checkpoint was the old generation's last one.
  return store_->commit(upload, meta, keep_last);
}

CheckpointStore::OpenCheckpoint CoordinatorState::open_checkpoint(const std::string& run_id,
                                                                  std::optional<int64_t> step) {
  validate_run_id(run_id);
  if (step) require_range("step", *step, 0, kMaxStep);
  auto checkpoint = store_->open(run_id, step);
  if (!checkpoint) {
    if (step) fail(Code::kNotFound, "run '", run_id, "' has no valid checkpoint at step ", *step);
    fail(Code::kNotFound, "run '", run_id, "' has no valid checkpoint");
  }
  return std::move(*checkpoint);
}

std::vector<CheckpointMeta> CoordinatorState::list_checkpoints(const std::string& run_id) {
  validate_run_id(run_id);
  std::vector<CheckpointMeta> list = store_->list(run_id);
  if (list.empty()) {
    std::lock_guard lock(mutex_);
    if (!runs_.count(run_id)) fail(Code::kNotFound, "run '", run_id, "' is unknown");
  }
  return list;
}

std::vector<RunStatus> CoordinatorState::run_status(const std::string& run_id) {
  if (!run_id.empty()) validate_run_id(run_id);
  std::vector<RunStatus> result;
  std::lock_guard lock(mutex_);
  if (!run_id.empty() && !runs_.count(run_id)) {
    fail(Code::kNotFound, "run '", run_id, "' is unknown");
  }
  const int64_t now_ms = now();
  for (const auto& [id, run] : runs_) {
    if (!run_id.empty() && id != run_id) continue;
    RunStatus status;
    status.run_id = id;
    status.generation = run.generation;
    status.world_size = run.world_size;
    status.config_hash = run.config_hash;
    status.keep_last = run.keep_last;
    for (const auto& [rank, member] : run.members) {
      RankStatus rank_status = member.status;
      if (rank_status.last_heartbeat_unix_ms > 0) {
        rank_status.heartbeat_age_ms = now_ms - rank_status.last_heartbeat_unix_ms;
        rank_status.progress_age_ms = now_ms - rank_status.last_progress_unix_ms;
      }
      status.ranks.push_back(rank_status);
    }
    const auto checkpoints = store_->list(id);
    status.checkpoint_count = static_cast<int64_t>(checkpoints.size());
    if (!checkpoints.empty()) status.newest_checkpoint = checkpoints.front();
    // Every run's status must fit one reply (4 MiB) however many runs there are: the status of
    // all runs carries each run's newest report only, that of one run all it keeps.
    if (!run_id.empty()) {
      status.recent_metrics.assign(run.recent_metrics.begin(), run.recent_metrics.end());
    } else if (!run.recent_metrics.empty()) {
      status.recent_metrics.push_back(run.recent_metrics.back());
    }
    result.push_back(std::move(status));
  }
  return result;
}

}  // namespace syncbn::coordinator

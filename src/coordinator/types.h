// Plain types of the coordinator, shared by the service logic, the gRPC adapter, the client
// and the CLI, so that none of them needs the generated protobuf classes in its interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncbn::coordinator {

// Bounds on every field a peer sends (the issue: "sizes, counts and steps bounded").
inline constexpr int64_t kMaxChunkBytes = int64_t{2} << 20;    // per PutCheckpoint chunk
inline constexpr int64_t kMaxMessageBytes = int64_t{4} << 20;  // gRPC's default, kept
inline constexpr int64_t kDefaultMaxCheckpointBytes = int64_t{16} << 30;
inline constexpr int64_t kMaxStep = int64_t{1} << 50;
inline constexpr int64_t kMaxGeneration = int64_t{1} << 50;
inline constexpr int32_t kMaxWorldSize = 1 << 16;
inline constexpr int32_t kMaxFormatVersion = 1 << 20;
inline constexpr size_t kMaxConfigBytes = size_t{1} << 20;
inline constexpr int64_t kDefaultMaxConfigBytes = int64_t{256} << 10;
inline constexpr int64_t kDefaultMaxRuns = 256;
inline constexpr size_t kMaxHostBytes = 255;
inline constexpr int64_t kMaxPid = int64_t{1} << 32;
inline constexpr size_t kMaxMetricsPerReport = 64;
inline constexpr size_t kMaxMetricNameBytes = 64;
inline constexpr size_t kRecentMetricsPerRun = 32;
inline constexpr int64_t kDefaultMetricsPerRun = kRecentMetricsPerRun;
inline constexpr int32_t kMaxKeepLast = 1000;
inline constexpr int32_t kDefaultKeepLast = 3;

// Run ids match [A-Za-z0-9_.-]{1,64} and are not made of dots only ("." and ".." would be path
// components). Throws ServiceError(kInvalidArgument) naming the id otherwise.
bool is_valid_run_id(std::string_view run_id);
void validate_run_id(std::string_view run_id);

// What the manifest records for one committed checkpoint.
struct CheckpointMeta {
  std::string run_id;
  int64_t step = 0;
  int64_t generation = 0;
  uint64_t config_hash = 0;
  int32_t world_size = 0;
  int32_t format_version = 0;
  int64_t size_bytes = 0;
  uint32_t crc32c = 0;          // of the whole payload
  int64_t created_unix_ms = 0;  // set by the store at commit
};

struct JoinRequest {
  std::string run_id;
  int32_t rank = 0;
  int32_t world_size = 0;
  int64_t generation = 0;  // the launch generation: a relaunch after a failure uses a larger one
  std::string host;
  int64_t pid = 0;
  std::string config_yaml;  // this rank's effective config (canonical YAML)
  uint64_t config_hash = 0;
  int32_t keep_last = 0;  // checkpoints the run keeps; 0 = the coordinator's --keep-last
};

struct JoinReply {
  std::string config_yaml;  // the run's config for this generation (the same for every rank)
  uint64_t config_hash = 0;
  int64_t generation = 0;
  int32_t world_size = 0;
  int32_t keep_last = 0;
  std::optional<CheckpointMeta> newest_checkpoint;  // the newest valid one, if any
};

struct HeartbeatRequest {
  std::string run_id;
  int32_t rank = 0;
  int64_t generation = 0;
  int64_t step = 0;      // the last step this rank completed
  int64_t activity = 0;  // advances as the rank works: a change is progress, like a new step
};

struct MetricsReport {
  std::string run_id;
  int32_t rank = 0;
  int64_t generation = 0;
  int64_t step = 0;
  std::vector<std::pair<std::string, double>> values;  // e.g. {"loss", 0.31}
  int64_t received_unix_ms = 0;                        // set by the coordinator
};

struct RankStatus {
  int32_t rank = 0;
  std::string host;
  int64_t pid = 0;
  int64_t generation = 0;
  int64_t joined_unix_ms = 0;
  int64_t last_heartbeat_unix_ms = 0;  // 0: none yet
  int64_t heartbeat_age_ms = -1;       // by the coordinator's clock; -1: none yet
  int64_t last_step = -1;              // -1: no heartbeat yet
  int64_t last_progress_unix_ms = 0;   // when last_step last changed; 0: no heartbeat yet
  int64_t progress_age_ms = -1;        // now - last_progress_unix_ms; -1: no heartbeat yet
};

struct RunStatus {
  std::string run_id;
  int64_t generation = 0;
  int32_t world_size = 0;
  uint64_t config_hash = 0;
  int32_t keep_last = 0;
  std::vector<RankStatus> ranks;  // the ranks that joined this generation, by rank
  std::optional<CheckpointMeta> newest_checkpoint;
  int64_t checkpoint_count = 0;
  std::vector<MetricsReport> recent_metrics;  // oldest first
};

}  // namespace syncbn::coordinator

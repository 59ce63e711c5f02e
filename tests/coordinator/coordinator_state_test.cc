#include "coordinator/coordinator_state.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/hash.h"
#include "test_util.h"

namespace syncbn::coordinator {
namespace {

using testing::code_of;
using testing::random_bytes;
using testing::ScratchDir;

class CoordinatorStateTest : public ::testing::Test {
 protected:
  CoordinatorState::Options options() {
    CoordinatorState::Options o;
    o.state_dir = dir_.path();
    o.log = [](const std::string&) {};
    o.now_unix_ms = [this] { return clock_ms_; };
    return o;
  }
  // The hash of the YAML join_request sends for config `id` (the coordinator checks it).
  static uint64_t hash_of(uint64_t id) { return fnv1a("seed: " + std::to_string(id) + "\n"); }
  static JoinRequest join_request(int32_t rank, int64_t generation = 1, uint64_t hash = 0xABC,
                                  int32_t world_size = 2) {
    JoinRequest r;
    r.run_id = "run-1";
    r.rank = rank;
    r.world_size = world_size;
    r.generation = generation;
    r.host = "node" + std::to_string(rank);
    r.pid = 1000 + rank;
    r.config_yaml = "seed: " + std::to_string(hash) + "\n";
    r.config_hash = hash_of(hash);
    return r;
  }
  static CheckpointMeta put_meta(const std::string& data, int64_t step, int64_t generation = 1) {
    CheckpointMeta meta = testing::meta_for("run-1", step, data);
    meta.generation = generation;
    meta.config_hash = hash_of(0xABC);
    return meta;
  }
  CheckpointMeta put(CoordinatorState& state, const CheckpointMeta& meta, const std::string& data) {
    auto upload = testing::upload_bytes(state.store(), data);
    return state.commit_checkpoint(*upload, meta);
  }

  ScratchDir dir_;
  int64_t clock_ms_ = 1'700'000'000'000;
};

TEST_F(CoordinatorStateTest, FirstJoinFixesTheConfigForEveryRank) {
  CoordinatorState state(options());
  const JoinReply first = state.join(join_request(1));
  EXPECT_EQ(first.config_hash, hash_of(0xABC));
  EXPECT_EQ(first.config_yaml, "seed: 2748\n");
  EXPECT_EQ(first.generation, 1);
  EXPECT_EQ(first.world_size, 2);
  EXPECT_EQ(first.keep_last, kDefaultKeepLast);
  EXPECT_FALSE(first.newest_checkpoint.has_value());
  const JoinReply reply = state.join(join_request(0));
  EXPECT_EQ(reply.config_yaml, first.config_yaml);
  // Joining again (a retried call) is fine.
  EXPECT_NO_THROW(state.join(join_request(0)));
}

TEST_F(CoordinatorStateTest, DisagreeingRankIsRefusedSayingWhatDiffers) {
  CoordinatorState state(options());
  state.join(join_request(0));
  std::string message;
  EXPECT_EQ(code_of([&] { state.join(join_request(1, 1, 0xDEF)); }, &message),
            Code::kFailedPrecondition);
  EXPECT_NE(message.find(str_cat("config hash 0x", syncbn::hex64(hash_of(0xDEF)),
                                 " differs from the run's 0x", syncbn::hex64(hash_of(0xABC)))),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_EQ(code_of([&] { state.join(join_request(1, 1, 0xABC, 4)); }, &message),
            Code::kFailedPrecondition);
  EXPECT_NE(message.find("world size 4 differs from the run's 2"), std::string::npos) << message;
  EXPECT_EQ(code_of([&] { state.join(join_request(1, 1, 0xDEF, 4)); }, &message),
            Code::kFailedPrecondition);
  EXPECT_NE(message.find("config hash"), std::string::npos) << message;
  EXPECT_NE(message.find("world size"), std::string::npos) << message;
}

TEST_F(CoordinatorStateTest, NewerGenerationReplacesOlderIsRefused) {
  CoordinatorState state(options());
  state.join(join_request(0, 1));
  state.join(join_request(1, 1));
  // A relaunch with another world size and config.
  const JoinReply reply = state.join(join_request(0, 2, 0x123, 1));
  EXPECT_EQ(reply.generation, 2);
  EXPECT_EQ(reply.world_size, 1);
  EXPECT_EQ(reply.config_hash, hash_of(0x123));
  std::string message;
  EXPECT_EQ(code_of([&] { state.join(join_request(1, 1)); }, &message), Code::kFailedPrecondition);
  EXPECT_NE(message.find("older than the run's current generation 2"), std::string::npos)
      << message;
  EXPECT_EQ(code_of(
                [&] {
                  state.heartbeat({"run-1", 1, 1, 10});
                },
                &message),
            Code::kFailedPrecondition);
  EXPECT_NE(message.find("stale generation 1"), std::string::npos) << message;
  const auto status = state.run_status("run-1");
  ASSERT_EQ(status.size(), 1u);
  ASSERT_EQ(status[0].ranks.size(), 1u);  // generation 1's ranks are forgotten
  EXPECT_EQ(status[0].ranks[0].generation, 2);
}

TEST_F(CoordinatorStateTest, GenerationsSurviveARestart) {
  {
    CoordinatorState state(options());
    state.join(join_request(0, 5));
  }
  CoordinatorState state(options());
  EXPECT_EQ(code_of([&] { state.join(join_request(0, 4)); }), Code::kFailedPrecondition);
  EXPECT_EQ(code_of([&] { state.join(join_request(0, 5, 0x999)); }), Code::kFailedPrecondition);
  // A rank of the current generation may heartbeat without re-joining the restarted coordinator.
  EXPECT_EQ(state.heartbeat({"run-1", 1, 5, 7}), 5);
  EXPECT_EQ(state.join(join_request(0, 5)).config_hash, hash_of(0xABC));
}

// What peers can make the coordinator keep is bounded, each bound configurable.
TEST_F(CoordinatorStateTest, LiveRunsConfigSizeAndMetricsPerRunAreBounded) {
  CoordinatorState::Options o = options();
  o.max_runs = 2;
  o.max_config_bytes = 100;
  o.metrics_per_run = 3;
  CoordinatorState state(o);
  for (const char* id : {"a", "b"}) {
    JoinRequest r = join_request(0);
    r.run_id = id;
    state.join(r);
  }
  JoinRequest third = join_request(0);
  third.run_id = "c";
  EXPECT_EQ(code_of([&] { state.join(third); }), Code::kResourceExhausted);
  JoinRequest again = join_request(1);
  again.run_id = "a";
  state.join(again);  // a known run is no new run
  JoinRequest big = join_request(0);
  big.run_id = "b";
  big.config_yaml.assign(101, 'x');
  EXPECT_EQ(code_of([&] { state.join(big); }), Code::kResourceExhausted);
  for (int i = 0; i < 10; ++i) state.report_metrics({"a", 0, 1, i, {{"loss", 1.0 * i}}, 0});
  EXPECT_EQ(state.run_status("a")[0].recent_metrics.size(), 3u);
  EXPECT_EQ(state.run_status("a")[0].recent_metrics.front().step, 7);
}

// GetRunStatus of every run carries each run's newest metrics only, so its size grows with the
// number of runs, not with their metrics (30 runs used to exceed gRPC's 4 MiB).
TEST_F(CoordinatorStateTest, StatusOfAllRunsHoldsTheNewestMetricsOnly) {
  CoordinatorState state(options());
  state.join(join_request(0));
  for (int i = 0; i < 20; ++i) state.report_metrics({"run-1", 0, 1, i, {{"loss", 1.0 * i}}, 0});
  const auto all = state.run_status("");
  ASSERT_EQ(all[0].recent_metrics.size(), 1u);
  EXPECT_EQ(all[0].recent_metrics[0].step, 19);
  EXPECT_EQ(state.run_status("run-1")[0].recent_metrics.size(), 20u);
}

// A relaunch advances the generation by one: a Join that jumps ahead (to lock the real relaunch
// out) is refused.
// A config hash must be the hash of the YAML it comes with: a Join pairing the run's public hash
// with another YAML (which the next legitimate rank would receive) is refused.
TEST_F(CoordinatorStateTest, ConfigHashMustBeTheHashOfItsYaml) {
  CoordinatorState state(options());
  JoinRequest forged = join_request(0);
  forged.config_yaml = "model: EVIL\n";
  EXPECT_EQ(code_of([&] { state.join(forged); }), Code::kInvalidArgument);
  EXPECT_EQ(state.join(join_request(1)).config_yaml, "seed: 2748\n");
}

TEST_F(CoordinatorStateTest, JoinAdvancesTheGenerationByOneAtMost) {
  CoordinatorState state(options());
  state.join(join_request(0, 1));
  EXPECT_EQ(code_of([&] { state.join(join_request(0, int64_t{1} << 50)); }),
            Code::kFailedPrecondition);
  EXPECT_EQ(code_of([&] { state.join(join_request(0, 3)); }), Code::kFailedPrecondition);
  EXPECT_EQ(state.join(join_request(0, 2)).generation, 2);
}

// As the proto says: NOT_FOUND for a run the coordinator does not know; a known run without
// checkpoints lists none.
TEST_F(CoordinatorStateTest, ListCheckpointsOfAnUnknownRunIsNotFound) {
  CoordinatorState state(options());
  EXPECT_EQ(code_of([&] { state.list_checkpoints("nope"); }), Code::kNotFound);
  state.join(join_request(0));
  EXPECT_TRUE(state.list_checkpoints("run-1").empty());
}

// NaN and Inf metrics are accepted and kept as they are: a diverging run's loss is NaN, and the
// status must show it, not refuse the report or turn it into a number.
TEST_F(CoordinatorStateTest, NanAndInfMetricsAreKeptAsTheyAre) {
  CoordinatorState state(options());
  state.join(join_request(0));
  state.report_metrics({"run-1",
                        0,
                        1,
                        5,
                        {{"loss", std::numeric_limits<double>::quiet_NaN()},
                         {"lr", std::numeric_limits<double>::infinity()}},
                        0});
  const MetricsReport m = state.run_status("run-1")[0].recent_metrics.at(0);
  EXPECT_TRUE(std::isnan(m.values[0].second));
  EXPECT_TRUE(std::isinf(m.values[1].second));
}

// Heartbeats come from a background thread of the rank, so they keep arriving while its
// training is stuck: progress is judged by the step (and the activity counter) they carry.
TEST_F(CoordinatorStateTest, ProgressAgeCountsFromTheLastChangeOfStepOrActivity) {
  CoordinatorState state(options());
  state.join(join_request(0));
  state.heartbeat({"run-1", 0, 1, 5, 1});
  EXPECT_EQ(state.run_status("run-1")[0].ranks[0].progress_age_ms, 0);
  clock_ms_ += 3000;
  state.heartbeat({"run-1", 0, 1, 5, 1});  // alive, stuck at step 5
  clock_ms_ += 2000;
  state.heartbeat({"run-1", 0, 1, 5, 1});
  RankStatus rank = state.run_status("run-1")[0].ranks[0];
  EXPECT_EQ(rank.heartbeat_age_ms, 0);
  EXPECT_EQ(rank.progress_age_ms, 5000);
  state.heartbeat({"run-1", 0, 1, 5, 2});  // working at step 5 (evaluating)
  clock_ms_ += 1000;
  EXPECT_EQ(state.run_status("run-1")[0].ranks[0].progress_age_ms, 1000);
  clock_ms_ += 1000;
  state.heartbeat({"run-1", 0, 1, 6, 2});  // the next step
  EXPECT_EQ(state.run_status("run-1")[0].ranks[0].progress_age_ms, 0);
}

TEST_F(CoordinatorStateTest, HeartbeatsAndMetricsShowInStatus) {
  CoordinatorState state(options());
  state.join(join_request(0));
  clock_ms_ += 1000;
  state.join(join_request(1));
  state.heartbeat({"run-1", 0, 1, 42});
  state.report_metrics({"run-1", 0, 1, 42, {{"loss", 0.5}, {"train/acc", 0.9}}, 0});
  clock_ms_ += 2500;
  const std::string data = random_bytes(1000, 1);
  put(state, put_meta(data, 40), data);
  const auto all = state.run_status("");
  ASSERT_EQ(all.size(), 1u);
  const RunStatus& run = all[0];
  EXPECT_EQ(run.run_id, "run-1");
  EXPECT_EQ(run.generation, 1);
  EXPECT_EQ(run.world_size, 2);
  EXPECT_EQ(run.config_hash, hash_of(0xABC));
  ASSERT_EQ(run.ranks.size(), 2u);
  EXPECT_EQ(run.ranks[0].host, "node0");
  EXPECT_EQ(run.ranks[0].pid, 1000);
  EXPECT_EQ(run.ranks[0].last_step, 42);
  EXPECT_EQ(run.ranks[0].heartbeat_age_ms, 2500);
  EXPECT_EQ(run.ranks[1].last_step, -1);
  EXPECT_EQ(run.ranks[1].heartbeat_age_ms, -1);
  ASSERT_TRUE(run.newest_checkpoint.has_value());
  EXPECT_EQ(run.newest_checkpoint->step, 40);
  EXPECT_EQ(run.checkpoint_count, 1);
  ASSERT_EQ(run.recent_metrics.size(), 1u);
  EXPECT_EQ(run.recent_metrics[0].values[1].first, "train/acc");
  for (int i = 0; i < 40; ++i) state.report_metrics({"run-1", 1, 1, i, {{"loss", 1.0 * i}}, 0});
  EXPECT_EQ(state.run_status("run-1")[0].recent_metrics.size(), kRecentMetricsPerRun);
  EXPECT_EQ(state.run_status("run-1")[0].recent_metrics.back().step, 39);
  EXPECT_EQ(code_of([&] { state.run_status("nope"); }), Code::kNotFound);
  EXPECT_EQ(code_of([&] {
              state.report_metrics({"run-1", 0, 1, 1, {{"bad name!", 1}}, 0});
            }),
            Code::kInvalidArgument);
  // The join reply points at the newest checkpoint, for resuming ranks.
  EXPECT_EQ(state.join(join_request(0)).newest_checkpoint->step, 40);
}

TEST_F(CoordinatorStateTest, EveryFieldIsValidated) {
  CoordinatorState state(options());
  state.join(join_request(0));
  auto join_with = [&](auto&& change) {
    JoinRequest r = join_request(1);
    change(r);
    return code_of([&] { state.join(r); });
  };
  EXPECT_EQ(join_with([](JoinRequest& r) { r.run_id = "../etc"; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.run_id = ".."; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.run_id = "."; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.run_id = "a b"; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.run_id = std::string(65, 'r'); }),
            Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.rank = -1; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.rank = 2; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.world_size = 0; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.world_size = kMaxWorldSize + 1; }),
            Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.generation = -1; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.pid = -5; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.host = "evil\x1b[2J"; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.config_yaml.clear(); }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.config_yaml.assign(kMaxConfigBytes + 1, 'x'); }),
            Code::kResourceExhausted);
  EXPECT_EQ(join_with([](JoinRequest& r) { r.keep_last = -1; }), Code::kInvalidArgument);
  EXPECT_EQ(join_with([](JoinRequest&) {}), Code::kOk);
  EXPECT_EQ(code_of([&] { state.heartbeat({"run-1", 0, 1, -1}); }), Code::kInvalidArgument);
  EXPECT_EQ(code_of([&] {
              state.heartbeat({"run-1", 0, 1, kMaxStep + 1});
            }),
            Code::kInvalidArgument);
  EXPECT_EQ(code_of([&] { state.heartbeat({"run-1", 5, 1, 1}); }), Code::kInvalidArgument);
  EXPECT_EQ(code_of([&] { state.heartbeat({"ghost", 0, 1, 1}); }), Code::kNotFound);
  EXPECT_EQ(code_of([&] { state.heartbeat({"run-1", 0, 2, 1}); }), Code::kFailedPrecondition);
}

TEST_F(CoordinatorStateTest, CheckpointMetadataIsValidated) {
  CoordinatorState state(options());
  const std::string data = random_bytes(5000, 2);
  EXPECT_EQ(code_of([&] { put(state, put_meta(data, 1), data); }), Code::kNotFound);
  state.join(join_request(0, 3));
  auto put_with = [&](auto&& change, std::string* message = nullptr) {
    CheckpointMeta meta = put_meta(data, 10, 3);
    change(meta);
    return code_of([&] { put(state, meta, data); }, message);
  };
  std::string message;
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.generation = 2; }, &message),
            Code::kFailedPrecondition);
  EXPECT_NE(message.find("stale generation 2"), std::string::npos) << message;
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.generation = 4; }), Code::kFailedPrecondition);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.config_hash = 1; }), Code::kFailedPrecondition);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.world_size = 3; }), Code::kFailedPrecondition);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.step = -1; }), Code::kInvalidArgument);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.step = kMaxStep + 1; }), Code::kInvalidArgument);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.size_bytes = -5000; }), Code::kInvalidArgument);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.size_bytes = int64_t{1} << 62; }),
            Code::kInvalidArgument);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.format_version = 0; }), Code::kInvalidArgument);
  EXPECT_EQ(put_with([](CheckpointMeta& m) { m.run_id = "../run-1"; }), Code::kInvalidArgument);
  EXPECT_TRUE(state.list_checkpoints("run-1").empty());
  EXPECT_EQ(put_with([](CheckpointMeta&) {}), Code::kOk);
  EXPECT_EQ(put_with([](CheckpointMeta&) {}, &message), Code::kAlreadyExists);
  EXPECT_NE(message.find("step 10"), std::string::npos) << message;
  ASSERT_EQ(state.list_checkpoints("run-1").size(), 1u);
  auto opened = state.open_checkpoint("run-1", std::nullopt);
  EXPECT_EQ(read_checkpoint(opened), data);
  EXPECT_EQ(code_of([&] { state.open_checkpoint("run-1", 11); }), Code::kNotFound);
  EXPECT_EQ(code_of([&] { state.open_checkpoint("other", std::nullopt); }), Code::kNotFound);
  EXPECT_EQ(code_of([&] { state.open_checkpoint("..", std::nullopt); }), Code::kInvalidArgument);
}

TEST_F(CoordinatorStateTest, RunKeepsItsOwnKeepLast) {
  CoordinatorState state(options());
  JoinRequest r = join_request(0);
  r.keep_last = 1;
  EXPECT_EQ(state.join(r).keep_last, 1);
  for (int step = 1; step <= 3; ++step) {
    const std::string data = "step" + std::to_string(step);
    put(state, put_meta(data, step), data);
  }
  ASSERT_EQ(state.list_checkpoints("run-1").size(), 1u);
  EXPECT_EQ(state.list_checkpoints("run-1")[0].step, 3);
}

}  // namespace
}  // namespace syncbn::coordinator

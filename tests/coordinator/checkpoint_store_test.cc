#include "coordinator/checkpoint_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "coordinator/failpoint.h"
#include "test_util.h"

namespace syncbn::coordinator {
namespace {

using testing::code_of;
using testing::listing;
using testing::put;
using testing::random_bytes;
using testing::ScratchDir;

CheckpointStore::Options quiet(const std::string& dir) {
  CheckpointStore::Options options;
  options.dir = dir;
  options.log = [](const std::string&) {};
  return options;
}

// The newest checkpoint the store serves, read back whole; "" when none.
std::string served(CheckpointStore& store, const std::string& run_id, int64_t* step = nullptr) {
  auto checkpoint = store.open(run_id);
  if (!checkpoint) return "";
  if (step) *step = checkpoint->meta.step;
  return read_checkpoint(*checkpoint);
}

// The files of the run's directory are exactly the manifest's checkpoints, and tmp/ is empty.
void expect_consistent(CheckpointStore& store, const std::string& run_id) {
  std::vector<std::string> expected;
  for (const auto& meta : store.list(run_id)) {
    expected.push_back(
        std::filesystem::path(store.checkpoint_path(run_id, meta.step)).filename().string());
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(listing(store.dir() + "/checkpoints/" + run_id), expected);
  EXPECT_TRUE(listing(store.dir() + "/tmp").empty());
}

TEST(CheckpointStore, CommitsServesAndListsNewestFirst) {
  ScratchDir dir;
  CheckpointStore store(quiet(dir.path()));
  EXPECT_FALSE(store.open("run").has_value());
  const std::string a = random_bytes(300000, 1), b = random_bytes(5, 2);
  const CheckpointMeta committed = put(store, "run", 10, a);
  EXPECT_GT(committed.created_unix_ms, 0);
  put(store, "run", 20, b);
  int64_t step = -1;
  EXPECT_EQ(served(store, "run", &step), b);
  EXPECT_EQ(step, 20);
  auto at_10 = store.open("run", 10);
  ASSERT_TRUE(at_10.has_value());
  EXPECT_EQ(read_checkpoint(*at_10), a);
  EXPECT_EQ(at_10->meta.crc32c, crc32c(a));
  EXPECT_EQ(at_10->meta.config_hash, 0xC0FFEEu);
  EXPECT_FALSE(store.open("run", 15).has_value());
  const auto list = store.list("run");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].step, 20);
  EXPECT_EQ(list[1].step, 10);
  expect_consistent(store, "run");
}

TEST(CheckpointStore, SurvivesReopen) {
  ScratchDir dir;
  const std::string a = random_bytes(70000, 3);
  {
    CheckpointStore store(quiet(dir.path()));
    put(store, "run", 1, a);
  }
  CheckpointStore store(quiet(dir.path()));
  EXPECT_TRUE(store.recovery_report().empty());
  EXPECT_EQ(served(store, "run"), a);
}

TEST(CheckpointStore, DuplicateStepIsRefusedAndLeavesNoTemporary) {
  ScratchDir dir;
  CheckpointStore store(quiet(dir.path()));
  put(store, "run", 5, "first");
  std::string message;
  EXPECT_EQ(code_of([&] { put(store, "run", 5, "second"); }, &message), Code::kAlreadyExists);
  EXPECT_NE(message.find("step 5"), std::string::npos) << message;
  EXPECT_EQ(served(store, "run"), "first");
  expect_consistent(store, "run");
}

TEST(CheckpointStore, KeepsLastKAndNeverPrunesTheNewest) {
  ScratchDir dir;
  CheckpointStore store(quiet(dir.path()));
  for (int step = 1; step <= 5; ++step) put(store, "run", step, "ckpt" + std::to_string(step), 2);
  auto list = store.list("run");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].step, 5);
  EXPECT_EQ(list[1].step, 4);
  expect_consistent(store, "run");
  // keep_last 1: an older step committed after the newest keeps both (the newest is never
  // pruned, nor the one just committed); the next newer one prunes both.
  put(store, "run", 3, "older", 1);
  list = store.list("run");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].step, 5);
  EXPECT_EQ(list[1].step, 3);
  put(store, "run", 6, "six", 1);
  list = store.list("run");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].step, 6);
  expect_consistent(store, "run");
  // Other runs are untouched by pruning.
  put(store, "other", 1, "x", 1);
  EXPECT_EQ(served(store, "run"), "six");
}

TEST(Upload, ChunkErrorsAreStatedAndCommitNothing) {
  ScratchDir dir;
  CheckpointStore::Options options = quiet(dir.path());
  options.max_checkpoint_bytes = 1000;
  CheckpointStore store(options);
  put(store, "run", 1, "previous");
  const std::string data = random_bytes(600, 4);
  const std::string_view first = std::string_view(data).substr(0, 300);
  const std::string_view second = std::string_view(data).substr(300);
  struct Case {
    const char* name;
    Code code;
    std::function<void()> body;
  };
  const std::vector<Case> cases = {
      {"gap", Code::kInvalidArgument,
       [&] {
         auto u = store.begin_upload();
         u->append(0, first, crc32c(first));
         u->append(301, second, crc32c(second));
       }},
      {"overlap", Code::kInvalidArgument,
       [&] {
         auto u = store.begin_upload();
         u->append(0, first, crc32c(first));
         u->append(299, second, crc32c(second));
       }},
      {"negative offset", Code::kInvalidArgument,
       [&] { store.begin_upload()->append(-1, first, crc32c(first)); }},
      {"empty chunk", Code::kInvalidArgument, [&] { store.begin_upload()->append(0, "", 0); }},
      {"oversized chunk", Code::kInvalidArgument,
       [&] {
         const std::string big(kMaxChunkBytes + 1, 'x');
         store.begin_upload()->append(0, big, crc32c(big));
       }},
      {"chunk crc", Code::kDataLoss,
       [&] { store.begin_upload()->append(0, first, crc32c(first) ^ 1); }},
      {"over the size bound", Code::kResourceExhausted,
       [&] {
         auto u = store.begin_upload();
         u->append(0, data, crc32c(data));
         u->append(600, data, crc32c(data));
       }},
      {"whole crc", Code::kDataLoss,
       [&] {
         auto u = testing::upload_bytes(store, data, 256);
         CheckpointMeta meta = testing::meta_for("run", 2, data);
         meta.crc32c ^= 0x80;
         store.commit(*u, meta, 3);
       }},
      {"declared size", Code::kInvalidArgument,
       [&] {
         auto u = testing::upload_bytes(store, data, 256);
         CheckpointMeta meta = testing::meta_for("run", 2, data);
         meta.size_bytes += 1;
         store.commit(*u, meta, 3);
       }},
      {"ended early", Code::kInvalidArgument,
       [&] {
         auto u = store.begin_upload();
         u->append(0, first, crc32c(first));
         store.commit(*u, testing::meta_for("run", 2, data), 3);
       }},
      {"append after failure", Code::kFailedPrecondition,
       [&] {
         auto u = store.begin_upload();
         EXPECT_EQ(code_of([&] { u->append(5, first, crc32c(first)); }), Code::kInvalidArgument);
         u->append(0, first, crc32c(first));
       }},
  };
  for (const Case& c : cases) {
    std::string message;
    EXPECT_EQ(code_of(c.body, &message), c.code) << c.name << ": " << message;
    EXPECT_FALSE(message.empty()) << c.name;
    EXPECT_EQ(served(store, "run"), "previous") << c.name;
    expect_consistent(store, "run");
  }
  // A dropped upload (the stream ended without a commit message) leaves nothing behind.
  {
    auto u = store.begin_upload();
    u->append(0, first, crc32c(first));
    EXPECT_EQ(listing(dir.sub("tmp")).size(), 1u);
  }
  expect_consistent(store, "run");
  EXPECT_EQ(store.list("run").size(), 1u);
}

TEST(CheckpointStore, FailedFsyncAbandonsTheCheckpoint) {
  ScratchDir dir;
  CheckpointStore store(quiet(dir.path()));
  put(store, "run", 1, "previous");
  ::setenv("SYNCBN_FAILPOINT", "fsync_error", 1);
  std::string message;
  const Code code = code_of([&] { put(store, "run", 2, "new"); }, &message);
  ::unsetenv("SYNCBN_FAILPOINT");
  EXPECT_EQ(code, Code::kInternal);
  EXPECT_NE(message.find("fsync failed"), std::string::npos) << message;
  EXPECT_NE(message.find("abandoned"), std::string::npos) << message;
  EXPECT_EQ(served(store, "run"), "previous");
  expect_consistent(store, "run");
  // A fresh upload of the same step (a new descriptor) then succeeds.
  put(store, "run", 2, "new");
  EXPECT_EQ(served(store, "run"), "new");
}

// Crash tests: a child process commits with SYNCBN_FAILPOINT set and dies at that point of the
// protocol (_exit(77), as if killed); the parent reopens the store.
struct CrashCase {
  const char* point;
  bool committed;  // whether the new checkpoint is expected after reopening
};
void PrintTo(const CrashCase& c, std::ostream* os) { *os << c.point; }

class CheckpointStoreCrash : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CheckpointStoreCrash, ReopensToNewOrPreviousNeverBroken) {
  // The default "fast" death-test style forks right here: the store is closed, no threads run.
  const CrashCase& c = GetParam();
  ScratchDir dir;
  const std::string previous = random_bytes(200000, 5), next = random_bytes(250000, 6);
  {
    CheckpointStore store(quiet(dir.path()));
    put(store, "run", 1, random_bytes(1000, 7), 2);
    put(store, "run", 2, previous, 2);
  }
  // keep_last 2: committing step 3 prunes step 1 (the mid_prune point lies in that pruning).
  EXPECT_EXIT(
      {
        ::setenv("SYNCBN_FAILPOINT", c.point, 1);
        CheckpointStore store(quiet(dir.path()));
        put(store, "run", 3, next, 2);
        std::_Exit(0);  // not reached when the failpoint fires
      },
      ::testing::ExitedWithCode(kFailpointExitCode), "failpoint hit");
  CheckpointStore store(quiet(dir.path()));
  int64_t step = -1;
  const std::string got = served(store, "run", &step);
  if (c.committed) {
    EXPECT_EQ(step, 3);
    EXPECT_EQ(got, next);
  } else {
    EXPECT_EQ(step, 2);
    EXPECT_EQ(got, previous);
  }
  expect_consistent(store, "run");
  // Every checkpoint the manifest lists verifies.
  for (const auto& meta : store.list("run")) {
    EXPECT_TRUE(store.open("run", meta.step).has_value()) << "step " << meta.step;
  }
  // And the store keeps working: the step can be committed (again).
  if (!c.committed) put(store, "run", 3, next, 2);
  EXPECT_EQ(served(store, "run"), next);
}

INSTANTIATE_TEST_SUITE_P(
    Failpoints, CheckpointStoreCrash,
    ::testing::Values(CrashCase{"after_temp_write", false}, CrashCase{"after_fsync", false},
                      CrashCase{"after_rename", false}, CrashCase{"after_dir_fsync", false},
                      CrashCase{"after_manifest", true}, CrashCase{"mid_prune", true}),
    [](const auto& param_info) { return std::string(param_info.param.point); });

// Corruption of the newest checkpoint on disk: truncation at random offsets and single bit
// flips at random positions, each detected on reopen and on open(), the previous one served.
class CheckpointStoreCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    CheckpointStore store(quiet(dir_.path()));
    put(store, "run", 1, previous_);
    put(store, "run", 2, newest_);
    newest_path_ = store.checkpoint_path("run", 2);
  }
  // Corrupts the newest file, reopens, and checks the previous one is served.
  void check(const std::function<void(int fd)>& corrupt, bool reopen, const std::string& what) {
    std::optional<CheckpointStore> open_before;
    if (!reopen) open_before.emplace(quiet(dir_.path()));
    {
      const int fd = ::open(newest_path_.c_str(), O_RDWR);
      ASSERT_GE(fd, 0);
      corrupt(fd);
      ::close(fd);
    }
    if (reopen) {
      std::vector<std::string> log;
      CheckpointStore::Options options = quiet(dir_.path());
      options.log = [&](const std::string& line) { log.push_back(line); };
      CheckpointStore store(options);
      EXPECT_EQ(store.recovery_report().size(), 1u) << what;
      if (!store.recovery_report().empty()) {
        EXPECT_NE(store.recovery_report()[0].find("checkpoint step 2 of run 'run' skipped"),
                  std::string::npos)
            << store.recovery_report()[0];
      }
      check_previous_served(store, what);
    } else {
      check_previous_served(*open_before, what);
    }
  }
  void check_previous_served(CheckpointStore& store, const std::string& what) {
    int64_t step = -1;
    EXPECT_EQ(served(store, "run", &step), previous_) << what;
    EXPECT_EQ(step, 1) << what;
    EXPECT_EQ(store.list("run").size(), 1u) << what;
    EXPECT_EQ(listing(dir_.sub("quarantine")).size(), expect_quarantined_) << what;
    // The step can be saved again.
    put(store, "run", 2, newest_);
    EXPECT_EQ(served(store, "run"), newest_) << what;
  }

  ScratchDir dir_;
  const std::string previous_ = random_bytes(40000, 8);
  const std::string newest_ = random_bytes(50000, 9);
  std::string newest_path_;
  size_t expect_quarantined_ = 1;
};

TEST_F(CheckpointStoreCorruption, TruncationAtRandomOffsetsIsDetected) {
  std::mt19937_64 random(20240601);
  for (int trial = 0; trial < 24; ++trial) {
    const off_t length = static_cast<off_t>(random() % newest_.size());
    const bool reopen = trial % 3 != 2;  // most on reopen, some while the store is open
    check([&](int fd) { ASSERT_EQ(::ftruncate(fd, length), 0); }, reopen,
          "truncated to " + std::to_string(length));
    std::filesystem::remove_all(dir_.sub("quarantine"));
    std::filesystem::create_directory(dir_.sub("quarantine"));
  }
}

TEST_F(CheckpointStoreCorruption, BitFlipsAtRandomPositionsAreDetected) {
  std::mt19937_64 random(424242);
  for (int trial = 0; trial < 24; ++trial) {
    const off_t byte = static_cast<off_t>(random() % newest_.size());
    const int bit = static_cast<int>(random() % 8);
    const bool reopen = trial % 3 != 2;
    check(
        [&](int fd) {
          unsigned char value = 0;
          ASSERT_EQ(::pread(fd, &value, 1, byte), 1);
          value ^= static_cast<unsigned char>(1u << bit);
          ASSERT_EQ(::pwrite(fd, &value, 1, byte), 1);
        },
        reopen, "bit " + std::to_string(bit) + " of byte " + std::to_string(byte));
    std::filesystem::remove_all(dir_.sub("quarantine"));
    std::filesystem::create_directory(dir_.sub("quarantine"));
  }
}

TEST_F(CheckpointStoreCorruption, MissingFileAndAppendedBytesAreDetected) {
  expect_quarantined_ = 0;
  check([&](int) { ::unlink(newest_path_.c_str()); }, true, "removed");
  expect_quarantined_ = 1;
  check([&](int fd) { ASSERT_EQ(::pwrite(fd, "x", 1, 50000), 1); }, true, "appended");
}

TEST(CheckpointStore, RecoveryRemovesTemporariesAndUncommittedFiles) {
  ScratchDir dir;
  {
    CheckpointStore store(quiet(dir.path()));
    put(store, "run", 1, "one");
  }
  std::ofstream(dir.sub("tmp/upload-1-2-3.part")) << "partial";
  std::ofstream(dir.sub("checkpoints/run/step-000000000000009.ckpt")) << "never committed";
  std::ofstream(dir.sub("checkpoints/run/stray")) << "?";
  CheckpointStore store(quiet(dir.path()));
  EXPECT_EQ(store.recovery_report().size(), 3u);
  EXPECT_EQ(served(store, "run"), "one");
  expect_consistent(store, "run");
}

TEST(CheckpointStore, RunIdsNeverBecomePaths) {
  ScratchDir dir;
  CheckpointStore store(quiet(dir.path()));
  for (const std::string& bad :
       std::vector<std::string>{"../escape", "..", ".", "", "a/b", std::string(65, 'a')}) {
    EXPECT_EQ(code_of([&] { put(store, bad, 1, "x"); }), Code::kInvalidArgument) << bad;
    EXPECT_EQ(code_of([&] { store.open(bad); }), Code::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(listing(dir.sub("checkpoints")).empty());
  EXPECT_FALSE(std::filesystem::exists(dir.sub("escape")));
}

}  // namespace
}  // namespace syncbn::coordinator

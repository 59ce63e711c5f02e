// Durable storage of checkpoints under a state directory, with a SQLite manifest.
//
// Layout of the state directory:
//   manifest.sqlite                 the manifest (WAL, synchronous=FULL): one row per checkpoint
//   tmp/                            uploads in progress; emptied on open
//   checkpoints/<run_id>/step-<step, 15 digits>.ckpt
//   quarantine/                     checkpoints found corrupt, kept for inspection
//
// The commit protocol (CheckpointStore::commit), whose last step is the commit point:
//   1. the payload is already in tmp/ (Upload); its size and CRC32C are checked
//   2. fsync(payload)            a failure abandons the checkpoint: an fsync is never retried on
//                                the same descriptor (after a failed fsync the page cache may
//                                have dropped the dirty pages and a second fsync "succeeds")
//   3. rename into checkpoints/<run_id>/
//   4. fsync(checkpoints/<run_id>/)
//   5. INSERT of the manifest row — the commit point
//   6. pruning to the last K by step (rows deleted first, then files; the newest and the
//      checkpoint just committed are never pruned)
// A crash anywhere leaves either the previous state or the new one: on open, temporaries are
// removed, files without a manifest row (crash between 3 and 5, or during 6) are removed, and
// every manifest row is verified (size and whole-file CRC32C); a truncated, corrupt or missing
// file is reported, its row deleted and the file moved to quarantine/, so the previous valid
// checkpoint is served. open() verifies again before serving, so corruption that happens while
// the coordinator runs is caught too.
//
// Thread-safe: uploads run concurrently; commits, listings and opens are serialized on a mutex
// (checksums of whole files are computed outside it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/posix_file.h"
#include "coordinator/sqlite_db.h"
#include "coordinator/types.h"

namespace syncbn::coordinator {

class CheckpointStore;

// One checkpoint being received, chunk by chunk, into a temporary file. Destroying an Upload
// that was not committed removes the file: nothing of it is ever visible.
class Upload {
 public:
  ~Upload();
  Upload(const Upload&) = delete;
  Upload& operator=(const Upload&) = delete;

  // Appends one chunk. `offset` must equal the bytes received so far (a gap or an overlap is
  // kInvalidArgument), the data must be 1..kMaxChunkBytes bytes (kInvalidArgument) and match
  // `crc32c` (kDataLoss). After any error the upload is dead and every later call fails.
  void append(int64_t offset, std::string_view data, uint32_t crc32c);

  int64_t size() const { return size_; }
  uint32_t crc32c() const { return crc_; }

 private:
  friend class CheckpointStore;
  Upload(UniqueFd fd, std::string temp_path, int64_t max_bytes);
  void abandon();  // closes and unlinks the temporary file

  UniqueFd fd_;
  std::string temp_path_;  // empty once renamed or removed
  int64_t max_bytes_;
  int64_t size_ = 0;
  uint32_t crc_ = 0;
  bool dead_ = false;
};

class CheckpointStore {
 public:
  struct Options {
    std::string dir;  // created if missing
    int64_t max_checkpoint_bytes = kDefaultMaxCheckpointBytes;
    // Where recovery findings and pruning failures go; default: stderr.
    std::function<void(const std::string&)> log;
  };

  // Opens the store and recovers (see the top of this file). Throws ServiceError(kInternal)
  // when the directory or the manifest cannot be used.
  explicit CheckpointStore(Options options);
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // What open found: one line per removed temporary/orphan and per skipped checkpoint.
  const std::vector<std::string>& recovery_report() const { return recovery_report_; }

  std::unique_ptr<Upload> begin_upload();

  // Commits `upload` as checkpoint (meta.run_id, meta.step) by the protocol above, then prunes
  // the run to its newest `keep_last` (>= 1) checkpoints. meta.size_bytes and meta.crc32c must
  // match what was received (kInvalidArgument / kDataLoss); an existing step is kAlreadyExists.
  // The metadata itself is validated by the caller (CoordinatorState). Returns the row written.
  // On any error nothing is committed and the upload is gone.
  CheckpointMeta commit(Upload& upload, CheckpointMeta meta, int32_t keep_last);

  // The manifest's checkpoints of a run, newest (highest step) first.
  std::vector<CheckpointMeta> list(std::string_view run_id) const;
  std::optional<CheckpointMeta> newest(std::string_view run_id) const;

  // A checkpoint file opened for reading, verified against its manifest row when opened. Read
  // it with read_at(fd.get(), ...); pruning after open does not disturb an open descriptor.
  struct OpenCheckpoint {
    CheckpointMeta meta;
    UniqueFd fd;
  };

  // The newest checkpoint of `run_id` that verifies, or the one at `step`. A checkpoint that
  // fails verification is reported and quarantined; without `step` the next older one is tried.
  // nullopt when the run has no valid checkpoint (or none at `step`).
  std::optional<OpenCheckpoint> open(std::string_view run_id,
                                     std::optional<int64_t> step = std::nullopt);

  const std::string& dir() const { return dir_; }
  std::string checkpoint_path(std::string_view run_id, int64_t step) const;

 private:
  void recover();
  void quarantine(const CheckpointMeta& meta, const std::string& problem);
  void prune(const std::string& run_id, int32_t keep_last, int64_t keep_step);
  void log(const std::string& message) const;

  std::string dir_;
  int64_t max_checkpoint_bytes_;
  std::function<void(const std::string&)> log_;
  std::vector<std::string> recovery_report_;
  mutable std::mutex mutex_;  // guards db_ and the files under checkpoints/
  std::unique_ptr<Database> db_;
};

// Reads the whole checkpoint (for tests and small tools; servers stream with read_at).
std::string read_checkpoint(const CheckpointStore::OpenCheckpoint& checkpoint);

// Size and CRC32C of the open file compared with `meta`; a description of the problem, or
// nullopt when it matches.
std::optional<std::string> verify_checkpoint_file(int fd, const CheckpointMeta& meta);

}  // namespace syncbn::coordinator

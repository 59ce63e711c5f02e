#include "coordinator/checkpoint_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <utility>

#include "coordinator/crc32c.h"
#include "coordinator/failpoint.h"
#include "coordinator/status.h"
#include "core/escape.h"

namespace syncbn::coordinator {
namespace fs = std::filesystem;

namespace {

constexpr size_t kVerifyBlockBytes = size_t{1} << 20;

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string step_file_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof(name), "step-%015" PRId64 ".ckpt", step);
  return name;
}

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08" PRIx32, value);
  return text;
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    fail(Code::kInternal, errno_message("cannot create directory", path, errno));
  }
}

// Row columns in this order: see kSelectColumns.
constexpr const char* kSelectColumns =
    "run_id, step, generation, config_hash, world_size, format_version, size_bytes, crc32c, "
    "created_unix_ms";

CheckpointMeta read_row(const Statement& row) {
  CheckpointMeta meta;
  meta.run_id = row.column_text(0);
  meta.step = row.column_int(1);
  meta.generation = row.column_int(2);
  meta.config_hash = static_cast<uint64_t>(row.column_int(3));
  meta.world_size = static_cast<int32_t>(row.column_int(4));
  meta.format_version = static_cast<int32_t>(row.column_int(5));
  meta.size_bytes = row.column_int(6);
  meta.crc32c = static_cast<uint32_t>(row.column_int(7));
  meta.created_unix_ms = row.column_int(8);
  return meta;
}

std::string describe(const CheckpointMeta& meta) {
  return str_cat("checkpoint step ", meta.step, " of run '", meta.run_id, "'");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Upload

Upload::Upload(UniqueFd fd, std::string temp_path, int64_t max_bytes)
    : fd_(std::move(fd)), temp_path_(std::move(temp_path)), max_bytes_(max_bytes) {}

Upload::~Upload() { abandon(); }

void Upload::abandon() {
  dead_ = true;
  fd_.reset();
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

void Upload::append(int64_t offset, std::string_view data, uint32_t crc32c_of_data) {
  if (dead_) fail(Code::kFailedPrecondition, "the upload already failed or was committed");
  const auto size = static_cast<int64_t>(data.size());
  auto refuse = [&](Code code, const auto&... message) {
    abandon();
    fail(code, message...);
  };
  if (offset < 0) refuse(Code::kInvalidArgument, "chunk offset ", offset, " is negative");
  if (size == 0) refuse(Code::kInvalidArgument, "empty chunk at offset ", offset);
  if (size > kMaxChunkBytes) {
    refuse(Code::kInvalidArgument, "chunk at offset ", offset, " has ", size, " bytes; at most ",
           kMaxChunkBytes, " are allowed");
  }
  if (offset > size_) {
    refuse(Code::kInvalidArgument, "chunk at offset ", offset, " leaves a gap: ", size_,
           " bytes were received, so the next chunk must start at ", size_);
  }
  if (offset < size_) {
    refuse(Code::kInvalidArgument, "chunk at offset ", offset, " overlaps ", size_ - offset,
           " bytes already received: the next chunk must start at ", size_);
  }
  if (size_ + size > max_bytes_) {
    refuse(Code::kResourceExhausted, "checkpoint exceeds ", max_bytes_, " bytes at offset ",
           offset);
  }
  const uint32_t actual = coordinator::crc32c(data);
  if (actual != crc32c_of_data) {
    refuse(Code::kDataLoss, "chunk at offset ", offset, " (", size, " bytes) has CRC32C ",
           hex32(actual), " but the chunk says ", hex32(crc32c_of_data));
  }
  if (const int err = write_all(fd_.get(), data.data(), data.size()); err != 0) {
    refuse(err == ENOSPC || err == EDQUOT ? Code::kResourceExhausted : Code::kInternal,
           errno_message("cannot write checkpoint upload", temp_path_, err));
  }
  size_ += size;
  crc_ = crc32c_extend(crc_, data.data(), data.size());
}

// ---------------------------------------------------------------------------------------------
// CheckpointStore

CheckpointStore::CheckpointStore(Options options)
    : dir_(std::move(options.dir)),
      max_checkpoint_bytes_(options.max_checkpoint_bytes),
      log_(std::move(options.log)) {
  SYNCBN_REQUIRE(!dir_.empty(), "the coordinator's state directory is not set");
  if (!log_) {
    log_ = [](const std::string& message) {
      std::fprintf(stderr, "syncbn coordinator: %s\n", escape_control(message).c_str());
    };
  }
  make_dir(dir_);
  make_dir(dir_ + "/tmp");
  make_dir(dir_ + "/checkpoints");
  make_dir(dir_ + "/quarantine");
  db_ = std::make_unique<Database>(dir_ + "/manifest.sqlite");
  db_->exec(
      "CREATE TABLE IF NOT EXISTS checkpoints ("
      "  run_id TEXT NOT NULL, step INTEGER NOT NULL, generation INTEGER NOT NULL,"
      "  config_hash INTEGER NOT NULL, world_size INTEGER NOT NULL,"
      "  format_version INTEGER NOT NULL, size_bytes INTEGER NOT NULL,"
      "  crc32c INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,"
      "  PRIMARY KEY (run_id, step)) WITHOUT ROWID");
  recover();
}

CheckpointStore::~CheckpointStore() = default;

void CheckpointStore::log(const std::string& message) const { log_(message); }

std::string CheckpointStore::checkpoint_path(std::string_view run_id, int64_t step) const {
  SYNCBN_CHECK(is_valid_run_id(run_id));  // callers validated it: a run id never escapes dir_
  return str_cat(dir_, "/checkpoints/", run_id, "/", step_file_name(step));
}

void CheckpointStore::recover() {
  std::lock_guard lock(mutex_);
  auto report = [&](const std::string& line) {
    recovery_report_.push_back(line);
    log(line);
  };

  // 1. Uploads that never reached the rename.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ + "/tmp", ec)) {
    fs::remove_all(entry.path(), ec);
    report("removed leftover temporary " + entry.path().string());
  }

  // 2. Every manifest row: does its file exist with the recorded size and checksum?
  std::vector<CheckpointMeta> rows;
  {
    Statement select(*db_, str_cat("SELECT ", kSelectColumns, " FROM checkpoints"));
    while (select.step()) rows.push_back(read_row(select));
  }
  std::set<std::pair<std::string, int64_t>> valid;
  for (const CheckpointMeta& meta : rows) {
    if (!is_valid_run_id(meta.run_id)) {
      // Only our own code writes rows, so this means a hand-edited manifest: drop the row
      // without touching any path built from it.
      Statement(*db_, "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2")
          .bind(1, meta.run_id)
          .bind(2, meta.step)
          .run();
      report("dropped a manifest row with an invalid run id");
      continue;
    }
    const std::string path = checkpoint_path(meta.run_id, meta.step);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::optional<std::string> problem;
    if (!fd.valid()) {
      problem = errno_message("cannot open", path, errno);
    } else {
      problem = verify_checkpoint_file(fd.get(), meta);
    }
    if (problem) {
      quarantine(meta, *problem);
      report(str_cat(describe(meta), " skipped: ", *problem));
    } else {
      valid.emplace(meta.run_id, meta.step);
    }
  }

  // 3. Files without a manifest row: a crash after the rename, before the manifest commit, or
  //    during pruning. They were never committed (or already pruned).
  for (const auto& run_dir : fs::directory_iterator(dir_ + "/checkpoints", ec)) {
    const std::string run_id = run_dir.path().filename().string();
    if (!is_valid_run_id(run_id) || run_dir.is_symlink() || !run_dir.is_directory()) {
      report("ignoring unexpected entry " + run_dir.path().string());
      continue;
    }
    bool removed = false;
    for (const auto& file : fs::directory_iterator(run_dir.path(), ec)) {
      const std::string name = file.path().filename().string();
      int64_t step = -1;
      char tail = 0;
      const bool named_like_ours =
          std::sscanf(name.c_str(), "step-%15" SCNd64 ".ckp%c", &step, &tail) == 2 && tail == 't' &&
          name == step_file_name(step);
      if (named_like_ours && valid.count({run_id, step})) continue;
      fs::remove_all(file.path(), ec);
      removed = true;
      report("removed uncommitted file " + file.path().string());
    }
    if (removed) fsync_dir(run_dir.path().string());
  }
}

void CheckpointStore::quarantine(const CheckpointMeta& meta, const std::string& problem) {
  Statement(*db_, "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2")
      .bind(1, meta.run_id)
      .bind(2, meta.step)
      .run();
  const std::string from = checkpoint_path(meta.run_id, meta.step);
  const std::string to = str_cat(dir_, "/quarantine/", meta.run_id, ".", step_file_name(meta.step),
                                 ".", now_unix_ms());
  if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) ::unlink(from.c_str());
  log(str_cat(describe(meta), " is corrupt (", problem, "); moved to ", to));
}

std::unique_ptr<Upload> CheckpointStore::begin_upload() {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 random(std::random_device{}());
  const std::string path = str_cat(dir_, "/tmp/upload-", ::getpid(), "-", counter++, "-",
                                   random() & 0xFFFFFFFFu, ".part");
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) fail(Code::kInternal, errno_message("cannot create", path, errno));
  return std::unique_ptr<Upload>(new Upload(std::move(fd), path, max_checkpoint_bytes_));
}

CheckpointMeta CheckpointStore::commit(Upload& upload, CheckpointMeta meta, int32_t keep_last) {
  SYNCBN_CHECK(keep_last >= 1);
  validate_run_id(meta.run_id);
  if (upload.dead_) fail(Code::kFailedPrecondition, "the upload already failed or was committed");
  // Any throw below leaves `upload` abandoned (its destructor or abandon() removes the file).
  auto refuse = [&](Code code, const auto&... message) {
    upload.abandon();
    fail(code, message...);
  };
  if (meta.size_bytes != upload.size()) {
    refuse(Code::kInvalidArgument, "the checkpoint declares ", meta.size_bytes, " bytes but ",
           upload.size(), " were received");
  }
  if (meta.crc32c != upload.crc32c()) {
    refuse(Code::kDataLoss, "the checkpoint's CRC32C is ", hex32(upload.crc32c()),
           " but the commit message says ", hex32(meta.crc32c));
  }
  failpoint("after_temp_write");

  // 2. fsync once: on failure the data may be lost from the page cache already, so the only
  //    safe answer is to give up this checkpoint (the rank retries with a fresh upload).
  const int sync_err = failpoint_error("fsync_error")   ? EIO
                       : ::fsync(upload.fd_.get()) != 0 ? errno
                                                        : 0;
  if (sync_err != 0) {
    refuse(Code::kInternal,
           errno_message("fsync failed for checkpoint upload", upload.temp_path_, sync_err),
           "; the checkpoint was abandoned");
  }
  if (const int err = upload.fd_.close(); err != 0) {
    refuse(Code::kInternal, errno_message("close failed for", upload.temp_path_, err),
           "; the checkpoint was abandoned");
  }
  failpoint("after_fsync");

  std::lock_guard lock(mutex_);
  {
    Statement exists(*db_, "SELECT 1 FROM checkpoints WHERE run_id = ?1 AND step = ?2");
    exists.bind(1, meta.run_id).bind(2, meta.step);
    if (exists.step()) {
      refuse(Code::kAlreadyExists, describe(meta), " is already committed");
    }
  }
  const std::string run_dir = str_cat(dir_, "/checkpoints/", meta.run_id);
  if (::mkdir(run_dir.c_str(), 0700) == 0) {
    if (const int err = fsync_dir(dir_ + "/checkpoints"); err != 0) {
      refuse(Code::kInternal, errno_message("fsync failed for", dir_ + "/checkpoints", err));
    }
  } else if (errno != EEXIST) {
    refuse(Code::kInternal, errno_message("cannot create directory", run_dir, errno));
  }

  // 3. rename: from here the file is named like a checkpoint but not committed.
  const std::string path = checkpoint_path(meta.run_id, meta.step);
  if (::rename(upload.temp_path_.c_str(), path.c_str()) != 0) {
    refuse(Code::kInternal, errno_message("cannot rename checkpoint upload to", path, errno));
  }
  upload.temp_path_.clear();
  upload.dead_ = true;
  auto unlink_and_fail = [&](const std::string& message) {
    ::unlink(path.c_str());
    fail(Code::kInternal, message, "; the checkpoint was abandoned");
  };
  failpoint("after_rename");

  // 4. The directory entry itself.
  if (const int err = fsync_dir(run_dir); err != 0) {
    unlink_and_fail(errno_message("fsync failed for directory", run_dir, err));
  }
  failpoint("after_dir_fsync");

  // 5. The commit point.
  meta.created_unix_ms = now_unix_ms();
  try {
    Statement(*db_, str_cat("INSERT INTO checkpoints (", kSelectColumns,
                            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"))
        .bind(1, meta.run_id)
        .bind(2, meta.step)
        .bind(3, meta.generation)
        .bind(4, static_cast<int64_t>(meta.config_hash))
        .bind(5, int64_t{meta.world_size})
        .bind(6, int64_t{meta.format_version})
        .bind(7, meta.size_bytes)
        .bind(8, int64_t{meta.crc32c})
        .bind(9, meta.created_unix_ms)
        .run();
  } catch (const ServiceError& e) {
    unlink_and_fail(e.what());
  }
  failpoint("after_manifest");

  // 6. Pruning never undoes the commit: its failures are logged and cleaned up on next open.
  try {
    prune(meta.run_id, keep_last, meta.step);
  } catch (const Error& e) {
    log(str_cat("pruning run '", meta.run_id, "' failed: ", e.what()));
  }
  return meta;
}

void CheckpointStore::prune(const std::string& run_id, int32_t keep_last, int64_t keep_step) {
  std::vector<int64_t> victims;
  {
    Transaction transaction(*db_);
    Statement steps(*db_, "SELECT step FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC");
    steps.bind(1, run_id);
    int64_t rank = 0;
    while (steps.step()) {
      const int64_t step = steps.column_int(0);
      // rank 0 is the newest; `keep_step` is the checkpoint just committed.
      if (rank++ >= keep_last && step != keep_step) victims.push_back(step);
    }
    for (const int64_t step : victims) {
      Statement(*db_, "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2")
          .bind(1, run_id)
          .bind(2, step)
          .run();
    }
    transaction.commit();
  }
  if (victims.empty()) return;
  failpoint("mid_prune");
  for (const int64_t step : victims) ::unlink(checkpoint_path(run_id, step).c_str());
  fsync_dir(str_cat(dir_, "/checkpoints/", run_id));
}

std::vector<CheckpointMeta> CheckpointStore::list(std::string_view run_id) const {
  std::lock_guard lock(mutex_);
  Statement select(*db_, str_cat("SELECT ", kSelectColumns,
                                 " FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC"));
  select.bind(1, run_id);
  std::vector<CheckpointMeta> result;
  while (select.step()) result.push_back(read_row(select));
  return result;
}

std::optional<CheckpointMeta> CheckpointStore::newest(std::string_view run_id) const {
  std::lock_guard lock(mutex_);
  Statement select(*db_, str_cat("SELECT ", kSelectColumns,
                                 " FROM checkpoints WHERE run_id = ?1 ORDER BY step DESC LIMIT 1"));
  select.bind(1, run_id);
  if (!select.step()) return std::nullopt;
  return read_row(select);
}

std::optional<CheckpointStore::OpenCheckpoint> CheckpointStore::open(std::string_view run_id,
                                                                     std::optional<int64_t> step) {
  validate_run_id(run_id);
  for (;;) {
    OpenCheckpoint checkpoint;
    {
      std::lock_guard lock(mutex_);
      Statement select(*db_, str_cat("SELECT ", kSelectColumns, " FROM checkpoints WHERE ",
                                     step ? "run_id = ?1 AND step = ?2"
                                          : "run_id = ?1 ORDER BY step DESC LIMIT 1"));
      select.bind(1, run_id);
      if (step) select.bind(2, *step);
      if (!select.step()) return std::nullopt;
      checkpoint.meta = read_row(select);
      const std::string path = checkpoint_path(run_id, checkpoint.meta.step);
      checkpoint.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!checkpoint.fd.valid()) {
        quarantine(checkpoint.meta, errno_message("cannot open", path, errno));
        continue;
      }
    }
    // The checksum of the whole file outside the lock; the descriptor stays valid even if the
    // file is pruned meanwhile.
    const std::optional<std::string> problem =
        verify_checkpoint_file(checkpoint.fd.get(), checkpoint.meta);
    if (!problem) return checkpoint;
    std::lock_guard lock(mutex_);
    Statement still(*db_, "SELECT crc32c FROM checkpoints WHERE run_id = ?1 AND step = ?2");
    still.bind(1, run_id).bind(2, checkpoint.meta.step);
    if (still.step() && static_cast<uint32_t>(still.column_int(0)) == checkpoint.meta.crc32c) {
      quarantine(checkpoint.meta, *problem);
    }
  }
}

std::optional<std::string> verify_checkpoint_file(int fd, const CheckpointMeta& meta) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_message("cannot stat", describe(meta), errno);
  if (st.st_size != meta.size_bytes) {
    return st.st_size < meta.size_bytes
               ? str_cat("truncated: ", st.st_size, " of ", meta.size_bytes, " bytes")
               : str_cat("size ", st.st_size, " bytes, the manifest says ", meta.size_bytes);
  }
  std::vector<char> block(kVerifyBlockBytes);
  uint32_t crc = 0;
  for (int64_t offset = 0; offset < meta.size_bytes;) {
    const int64_t n = read_at(fd, block.data(), block.size(), offset);
    if (n < 0) return errno_message("cannot read", describe(meta), static_cast<int>(-n));
    if (n == 0) return str_cat("truncated while reading at ", offset);
    crc = crc32c_extend(crc, block.data(), static_cast<size_t>(n));
    offset += n;
  }
  if (crc != meta.crc32c) {
    return str_cat("CRC32C ", hex32(crc), ", the manifest says ", hex32(meta.crc32c));
  }
  return std::nullopt;
}

std::string read_checkpoint(const CheckpointStore::OpenCheckpoint& checkpoint) {
  std::string data(static_cast<size_t>(checkpoint.meta.size_bytes), '\0');
  const int64_t n = read_at(checkpoint.fd.get(), data.data(), data.size(), 0);
  if (n != checkpoint.meta.size_bytes) {
    fail(Code::kDataLoss, describe(checkpoint.meta), ": read ", n, " of ",
         checkpoint.meta.size_bytes, " bytes");
  }
  return data;
}

}  // namespace syncbn::coordinator

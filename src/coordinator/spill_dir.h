// Checkpoints kept on local disk while the coordinator cannot take them (DESIGN.md §4, "Control
// plane, not data plane"): the trainer's background client writes each checkpoint here first and
// uploads it, oldest first, whenever the coordinator answers; `syncbn ckpt push` uploads what a
// run left behind.
//
// One file per checkpoint, step-<step, 12 digits>-<CRC32C of the bytes, 8 hex>.safetensors,
// written like the coordinator's store writes: a temporary file, fsync, rename, directory fsync.
// The CRC in the name is checked on every read, so a torn or flipped file is never uploaded or
// resumed from. The newest keep_last are kept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace syncbn::coordinator {

class SpillDir {
 public:
  struct Entry {
    int64_t step = 0;
    uint32_t crc32c = 0;
    std::string path;
  };

  SpillDir(std::string dir, int64_t keep_last);
  const std::string& dir() const { return dir_; }

  // Durably writes `data` as the checkpoint of `step` (replacing one of the same step), then
  // removes all but the newest keep_last. Throws syncbn::Error naming the file and the errno.
  void save(int64_t step, std::string_view data);

  // The checkpoint files, oldest first (files of other names are ignored).
  std::vector<Entry> list() const;

  // The bytes of `entry` when they match its CRC32C; else nullopt and `problem` says why.
  std::optional<std::string> read(const Entry& entry, std::string* problem) const;

  void remove(const Entry& entry) const;

 private:
  std::string dir_;
  int64_t keep_last_;
};

}  // namespace syncbn::coordinator

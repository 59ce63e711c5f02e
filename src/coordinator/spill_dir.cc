#include "coordinator/spill_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "coordinator/crc32c.h"
#include "coordinator/posix_file.h"
#include "core/error.h"

namespace syncbn::coordinator {
namespace {

namespace fs = std::filesystem;

std::optional<SpillDir::Entry> parse_name(const std::string& name) {
  long long step = -1;
  unsigned crc = 0;
  int used = 0;
  if (std::sscanf(name.c_str(), "step-%12lld-%8x.safetensors%n", &step, &crc, &used) != 2 ||
      static_cast<size_t>(used) != name.size() || name.size() != 38 || step < 0) {
    return std::nullopt;
  }
  SpillDir::Entry entry;
  entry.step = step;
  entry.crc32c = crc;
  return entry;
}

}  // namespace

SpillDir::SpillDir(std::string dir, int64_t keep_last)
    : dir_(std::move(dir)), keep_last_(std::max<int64_t>(1, keep_last)) {}

void SpillDir::save(int64_t step, std::string_view data) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SYNCBN_REQUIRE(!ec, "cannot create the spill directory '", dir_, "': ", ec.message());
  char name[64];
  std::snprintf(name, sizeof(name), "step-%012lld-%08x.safetensors", static_cast<long long>(step),
                crc32c(data));
  const std::string final_path = (fs::path(dir_) / name).string();
  const std::string temp_path = final_path + ".tmp";
  {
    UniqueFd fd(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    SYNCBN_REQUIRE(fd.get() >= 0, errno_message("cannot create", temp_path, errno));
    int err = write_all(fd.get(), data.data(), data.size());
    if (err == 0 && ::fsync(fd.get()) != 0) err = errno;
    if (err != 0) {
      ::unlink(temp_path.c_str());
      throw Error(errno_message("cannot write the checkpoint", temp_path, err));
    }
  }
  // An older file of the same step (another CRC) is replaced by this one.
  for (const Entry& e : list())
    if (e.step == step && e.path != final_path) remove(e);
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_path.c_str());
    throw Error(errno_message("cannot rename the checkpoint to", final_path, err));
  }
  const int err = fsync_dir(dir_);
  SYNCBN_REQUIRE(err == 0, errno_message("cannot fsync the spill directory", dir_, err));
  const std::vector<Entry> entries = list();
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < entries.size(); ++i) remove(entries[i]);
}

std::vector<SpillDir::Entry> SpillDir::list() const {
  std::vector<Entry> entries;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    std::optional<Entry> entry = parse_name(it->path().filename().string());
    if (!entry) continue;
    entry->path = it->path().string();
    entries.push_back(std::move(*entry));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.step < b.step; });
  return entries;
}

std::optional<std::string> SpillDir::read(const Entry& entry, std::string* problem) const {
  UniqueFd fd(::open(entry.path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) {
    *problem = errno_message("cannot read", entry.path, errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode)) {
    *problem = "'" + entry.path + "' is not a regular file";
    return std::nullopt;
  }
  std::string data(static_cast<size_t>(st.st_size), '\0');
  const int64_t got = read_at(fd.get(), data.data(), data.size(), 0);
  if (got != st.st_size) {
    *problem = got < 0 ? errno_message("cannot read", entry.path, static_cast<int>(-got))
                       : str_cat("'", entry.path, "' is shorter than it was");
    return std::nullopt;
  }
  if (crc32c(data) != entry.crc32c) {
    *problem = str_cat("'", entry.path, "' is damaged: its CRC32C does not match its name");
    return std::nullopt;
  }
  return data;
}

void SpillDir::remove(const Entry& entry) const {
  std::error_code ec;
  fs::remove(entry.path, ec);
  fsync_dir(dir_);
}

}  // namespace syncbn::coordinator

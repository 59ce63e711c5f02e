// Thin RAII over POSIX file descriptors, for the store's commit protocol (fsync, rename,
// directory fsync), where std::fstream hides the errors that matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "core/unique_fd.h"

namespace syncbn::coordinator {

using syncbn::UniqueFd;

// "<what> '<path>': <strerror(err)>".
std::string errno_message(const std::string& what, const std::string& path, int err);

// Writes all of [data, data+size) at the current offset (retrying short writes and EINTR).
// Returns 0 or an errno.
int write_all(int fd, const void* data, size_t size);

// Reads up to `size` bytes at `offset`, retrying short reads and EINTR until EOF. Returns the
// number of bytes read, or -errno.
int64_t read_at(int fd, void* data, size_t size, int64_t offset);

// Opens `dir` read-only and fsyncs it, so that entries created, renamed or removed in it are
// durable. Returns 0 or an errno.
int fsync_dir(const std::string& dir);

}  // namespace syncbn::coordinator

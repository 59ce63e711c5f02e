#include "core/unique_fd.h"

#include <errno.h>
#include <unistd.h>

namespace syncbn {

void UniqueFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int UniqueFd::close() {
  if (fd_ < 0) return 0;
  const int rc = ::close(std::exchange(fd_, -1));
  // After close(2) fails the descriptor is released anyway on Linux: never close it again.
  return rc == 0 ? 0 : errno;
}

}  // namespace syncbn

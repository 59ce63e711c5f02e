#include "coordinator/failpoint.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace syncbn::coordinator {
namespace {

// Read on every call (a getenv beside an fsync costs nothing) so tests can set it in a child.
bool armed(std::string_view name) {
  const char* value = std::getenv("SYNCBN_FAILPOINT");
  return value != nullptr && name == value;
}

}  // namespace

void failpoint(std::string_view name) {
  if (!armed(name)) return;
  static constexpr char kMessage[] = "syncbn: failpoint hit, exiting\n";
  // write(2), not stdio: nothing buffered may reach the disk after the "crash".
  [[maybe_unused]] const ssize_t ignored = ::write(2, kMessage, sizeof(kMessage) - 1);
  ::_exit(kFailpointExitCode);
}

bool failpoint_error(std::string_view name) { return armed(name); }

}  // namespace syncbn::coordinator

#include "core/error.h"

#include <cstdio>
#include <cstdlib>

namespace syncbn {

void check_failed(const char* file, int line, const char* expr) {
  std::fprintf(stderr, "syncbn: internal check failed at %s:%d: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace syncbn

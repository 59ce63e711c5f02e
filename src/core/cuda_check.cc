#include "core/cuda_check.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace syncbn {

void gpu_call_failed(const char* file, int line, const char* call, const char* what) {
  char host[256] = "?";
  if (gethostname(host, sizeof(host)) != 0) host[0] = '?', host[1] = '\0';
  host[sizeof(host) - 1] = '\0';
  const char* rank = "?";
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"}) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') {
      rank = value;
      break;
    }
  }
  std::fprintf(stderr, "syncbn: %s rank %s: %s:%d: %s failed: %s\n", host, rank, file, line, call,
               what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace syncbn

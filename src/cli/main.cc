// The one `syncbn` binary: `syncbn train | coordinator | study | status | ckpt ...`.
#include <cstdio>
#include <cstring>
#include <string>

namespace {

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: syncbn <command> [options]\n"
               "\n"
               "commands:\n"
               "  version      print the version\n"
               "  train        data-parallel training under mpirun (not built yet)\n"
               "  coordinator  the gRPC coordinator (not built yet)\n"
               "  study        the per-rank batch-size study (not built yet)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    print_usage(stdout);
    return 0;
  }
  if (command == "version" || command == "--version") {
    std::printf("syncbn 0.1.0\n");
    return 0;
  }
  if (command == "train" || command == "coordinator" || command == "study") {
    std::fprintf(stderr, "syncbn: '%s' is not built yet in this version\n", command.c_str());
    return 3;
  }
  std::fprintf(stderr,
               "syncbn: unknown command '%s'; expected one of: version, train, "
               "coordinator, study\n",
               command.c_str());
  return 2;
}

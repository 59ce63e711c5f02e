// `syncbn coordinator` and `syncbn status` without main.cc, for the tests:
//   coordinator_cli coordinator --listen ... / coordinator_cli status --coordinator ...
#include <cstdio>
#include <string>

#include "cli/commands.h"

int main(int argc, char** argv) {
  const std::string command = argc >= 2 ? argv[1] : "";
  if (command == "coordinator") return coordinator_command(argc, argv);
  if (command == "status") return status_command(argc, argv);
  std::fprintf(stderr, "usage: %s coordinator|status [options]\n", argv[0]);
  return 2;
}

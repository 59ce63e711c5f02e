// Subcommands of the `syncbn` binary implemented outside main.cc. Each takes main's argc/argv
// (argv[1] is the command name, options start at argv[2]) and returns the process exit code:
// 0 on success, 1 on an error (reported on stderr), 2 on a usage error.
#pragma once

// `syncbn coordinator --state-dir DIR [--listen ADDR] [--token-file F]
//                     [--tls-cert C --tls-key K [--tls-client-ca CA]] [--keep-last K]`
// Serves until SIGINT or SIGTERM. Prints `listening on HOST:PORT` (the real port when ADDR
// ends in :0) on stdout once it accepts calls.
int coordinator_command(int argc, char** argv);

// `syncbn status --coordinator ADDR [--run ID] [--token-file F] [--tls-ca F]`
// (ADDR defaults to $SYNCBN_COORDINATOR): runs, ranks, heartbeats, checkpoints, metrics.
int status_command(int argc, char** argv);

// `syncbn ckpt list|inspect|export`: checkpoints from the coordinator or a file (ckpt_command.cc).
int ckpt_command(int argc, char** argv);

// `syncbn study --config FILE --out DIR [--dry-run] [--mpirun PATH]`: the batch-size study
// (study_command.cc, src/study).
int study_command(int argc, char** argv);

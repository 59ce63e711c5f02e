// Running a study: each run launched like training (`mpirun -np W syncbn train ...`) as a child
// process with its own log, results.csv appended as runs finish, the summaries rewritten after
// each, SIGINT/SIGTERM stopping the running run.
#pragma once

#include <string>

#include "core/error.h"
#include "study/config.h"

namespace syncbn::study {

struct StudyOptions {
  std::string out_dir;
  std::string train_binary;  // the syncbn binary to launch (default: this process's executable)
  std::string mpirun = "mpirun";
  bool dry_run = false;  // list the runs, launch nothing
};

// Runs the study; returns when every run is in results.csv. Throws syncbn::Error when a run
// fails (after printing the tail of its log) or the output directory holds another study.
// Throws StudyInterrupted on SIGINT/SIGTERM (the running run is stopped; finished runs stay).
class StudyInterrupted : public Error {
 public:
  explicit StudyInterrupted(int signal_number, const std::string& what)
      : Error(what), signal_number_(signal_number) {}
  int signal_number() const { return signal_number_; }

 private:
  int signal_number_;
};
void run_study(const StudyConfig& study, const StudyOptions& options);

}  // namespace syncbn::study

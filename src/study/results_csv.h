// results.csv, the study's record of finished runs: one row per run, appended as runs finish.
#pragma once

#include <string>
#include <vector>

#include "study/runs.h"

namespace syncbn::study {

struct RunResult {
  RunSpec spec;
  double lr = 0;
  int64_t steps = 0;
  int64_t epochs = 0;
  double test_error = 0;  // 1 − accuracy, in [0, 1]
  double test_loss = 0;
  double images_per_s = 0;
  double sync_bn_comm_ms = 0;  // per step, rank 0, forward + backward over all SyncBN layers
  double wall_s = 0;           // the whole mpirun, start-up and evaluation included
  std::string study_hash;
  std::string config_hash;  // 16 hex digits of the run's training config
};

// results.csv: a header line, then one line per run.
std::string csv_header();
std::string csv_row(const RunResult& result);
// Throws syncbn::Error naming the line and column for a wrong header or a malformed row.
std::vector<RunResult> parse_results_csv(const std::string& text, const std::string& source);

}  // namespace syncbn::study

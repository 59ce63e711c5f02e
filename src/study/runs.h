// The runs of a study: the sweep expanded, each run's learning rate (the LR scaling rule) and
// training config, and the study hash that identifies what the runs share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "study/config.h"
#include "train/config.h"

namespace syncbn::study {

// One training run of the study.
struct RunSpec {
  std::string norm;
  int64_t per_rank_batch = 0;
  // The effective BN group: syncbn 1..world_size, bn 1, 0 for norms without batch statistics.
  int64_t bn_group_size = 0;
  uint64_t seed = 0;
  int world_size = 0;

  int64_t global_batch() const { return per_rank_batch * world_size; }
  // The series it belongs to: "bn", "syncbn" (group = world), "syncbn-g2", "gn", ...
  std::string label() const;
  // Unique within a study, used as the resume key and the run's directory: "syncbn-g2-b4-s1".
  std::string name() const;
};

// Every run, seeds outermost (a study stopped early has whole sweeps for its first seeds), then
// per-rank batch, norm and BN group size in config order.
std::vector<RunSpec> expand_runs(const StudyConfig& study);
double run_lr(const StudyConfig& study, int64_t global_batch);
// The training config of one run: the base with norm, BN group, per-rank batch, seed, lr (and
// warmup) set, checkpoints off.
train::Config run_config(const StudyConfig& study, const RunSpec& run);
// 16 hex digits identifying what every run shares: base config, world size, LR rule.
std::string study_hash(const StudyConfig& study);

}  // namespace syncbn::study

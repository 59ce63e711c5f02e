#include <cmath>
#include <sstream>

#include "core/hash.h"
#include "study/study.h"

namespace syncbn::study {

std::string RunSpec::label() const {
  if (norm == "syncbn" && bn_group_size != world_size)
    return "syncbn-g" + std::to_string(bn_group_size);
  return norm;
}

std::string RunSpec::name() const {
  return label() + "-b" + std::to_string(per_rank_batch) + "-s" + std::to_string(seed);
}

std::vector<RunSpec> expand_runs(const StudyConfig& study) {
  std::vector<RunSpec> runs;
  for (uint64_t seed : study.seeds) {
    for (int64_t batch : study.per_rank_batches) {
      for (const std::string& norm : study.norms) {
        std::vector<int64_t> groups = {0};
        if (norm == "syncbn") groups = study.bn_group_sizes;
        if (norm == "bn") groups = {1};
        for (int64_t g : groups) {
          RunSpec run;
          run.norm = norm;
          run.per_rank_batch = batch;
          run.bn_group_size = norm == "syncbn" && g == 0 ? study.world_size : g;
          run.seed = seed;
          run.world_size = study.world_size;
          runs.push_back(run);
        }
      }
    }
  }
  return runs;
}

double run_lr(const StudyConfig& study, int64_t global_batch) {
  const double ratio = study.lr.base_batch > 0 ? static_cast<double>(global_batch) /
                                                     static_cast<double>(study.lr.base_batch)
                                               : 1.0;
  switch (study.lr.rule) {
    case LrRule::kLinear:
      return study.lr.base_lr * ratio;
    case LrRule::kSqrt:
      return study.lr.base_lr * std::sqrt(ratio);
    case LrRule::kFixed:
      break;
  }
  return study.lr.base_lr;
}

train::Config run_config(const StudyConfig& study, const RunSpec& run) {
  train::Config c = study.base;
  c.seed = run.seed;
  c.model.norm = train::parse_norm(run.norm);
  c.model.bn_group_size = c.model.norm == train::Norm::kSyncBn ? run.bn_group_size : 0;
  c.train.per_rank_batch = run.per_rank_batch;
  c.train.lr = run_lr(study, run.global_batch());
  if (study.lr.warmup_epochs >= 0) {
    const int64_t steps_per_epoch =
        (c.data.train_limit + run.global_batch() - 1) / run.global_batch();
    c.train.warmup_steps =
        std::llround(study.lr.warmup_epochs * static_cast<double>(steps_per_epoch));
  }
  c.checkpoint.dir.clear();
  return c;
}

std::string study_hash(const StudyConfig& study) {
  train::Config neutral = study.base;
  neutral.seed = 0;
  neutral.model.norm = train::Norm::kNone;
  neutral.model.bn_group_size = 0;
  neutral.train.per_rank_batch = 1;
  neutral.train.lr = 0;
  neutral.checkpoint = train::Config::Checkpoint{};
  if (study.lr.warmup_epochs >= 0) neutral.train.warmup_steps = 0;
  std::ostringstream lr;
  lr.precision(17);
  lr << "world_size " << study.world_size << "\nlr " << rule_name(study.lr.rule) << " "
     << study.lr.base_lr << " " << study.lr.base_batch << " " << study.lr.warmup_epochs << "\n";
  return hex64(fnv1a(train::to_yaml(neutral) + lr.str()));
}

}  // namespace syncbn::study

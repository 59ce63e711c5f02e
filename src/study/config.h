// The batch-size study (`syncbn study`): per-rank batch × norm (× bn_group_size) × seed at a fixed
// world size, each run launched like training (`mpirun -np W syncbn train ...`), results appended
// to DIR/results.csv as runs finish, summarized as a Markdown table and a plot of test error vs
// per-rank batch (SVG, and PNG rendered from it with librsvg).
//
// The study config (YAML, validated like the training config: unknown keys and bad values are
// errors naming the key and what is allowed):
//
//   base: fashion_mnist.yaml    # the training config: a path (relative to this file) or a mapping
//   set: [train.epochs=2]       # optional overrides of the base, like `syncbn train --set`
//   world_size: 4
//   per_rank_batch: [1, 2, 4, 8, 16, 32]
//   norms: [bn, syncbn, gn]     # bn = local BN, syncbn = BN over the BN group; also ln, in, none
//   bn_group_size: [0, 2]       # optional, syncbn only; 0 = the whole world (the default)
//   seeds: [1, 2]
//   lr:                         # optional; default: the base's train.lr for every run
//     rule: linear              # linear: base_lr·B/base_batch, sqrt: base_lr·sqrt(B/base_batch),
//     base_lr: 0.05             # fixed: base_lr (B = global batch = world_size·per_rank_batch)
//     base_batch: 32
//     warmup_epochs: 0.5        # optional: warmup_steps = round(warmup_epochs · steps per epoch)
//
// Resuming: every row of results.csv carries the study hash (base config with the swept fields
// neutral, world size, LR rule). A rerun skips the runs already there; an output directory
// holding rows of a different study is refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace syncbn::study {

// What `norms` may list (model.norm values).
inline const std::vector<std::string> kNorms = {"bn", "syncbn", "gn", "ln", "in", "none"};

enum class LrRule { kFixed, kLinear, kSqrt };

struct StudyConfig {
  train::Config base;       // the base training config with `set` applied
  std::string base_source;  // its path, or "inline"
  int world_size = 0;
  std::vector<int64_t> per_rank_batches;
  std::vector<std::string> norms;
  std::vector<int64_t> bn_group_sizes = {0};  // syncbn runs only
  std::vector<uint64_t> seeds;
  struct Lr {
    LrRule rule = LrRule::kFixed;
    double base_lr = 0;
    int64_t base_batch = 0;
    double warmup_epochs = -1;  // < 0: keep the base's train.warmup_steps
  } lr;
};

// yaml_text is the study config; source names it in messages; relative base paths are resolved
// against base_dir. Throws syncbn::Error naming the key and the allowed values.
StudyConfig parse_study_config(const std::string& yaml_text, const std::string& source,
                               const std::string& base_dir);
StudyConfig load_study_config(const std::string& path);

// "linear", "sqrt", "fixed".
const char* rule_name(LrRule rule);

}  // namespace syncbn::study

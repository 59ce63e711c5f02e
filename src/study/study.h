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

#include "core/error.h"
#include "train/config.h"

namespace syncbn::study {

// ---------------------------------------------------------------------------------------------
// study/config.cc: the study config.

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

// ---------------------------------------------------------------------------------------------
// study/runs.cc: the runs, their LR (the scaling rule) and training configs, the study hash.

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

// ---------------------------------------------------------------------------------------------
// study/run_metrics.cc: one run's metrics file (train/metrics.h) summed up.

// What one run's metrics file says. images_per_s and sync_bn_comm_ms average the train windows
// weighted by their steps, leaving out the first window (start-up) when there are several.
struct RunMetrics {
  int64_t steps = 0;
  double test_loss = 0;
  double test_accuracy = 0;
  double images_per_s = 0;
  double sync_bn_comm_ms = 0;
};
RunMetrics parse_metrics(const std::string& jsonl, const std::string& source);

// ---------------------------------------------------------------------------------------------
// study/results_csv.cc: results.csv, one row per finished run.

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

// ---------------------------------------------------------------------------------------------
// study/summary.cc: statistics over seeds, the Markdown table, the plot (SVG, PNG).

// Mean and sample standard deviation (n − 1; 0 for a single value).
struct MeanStd {
  double mean = 0;
  double std = 0;
  int n = 0;
};
MeanStd mean_std(const std::vector<double>& values);

// One line of the plot: test error (in %) per per-rank batch, over seeds.
struct Series {
  std::string label;
  std::vector<int64_t> per_rank_batches;  // ascending
  std::vector<MeanStd> error_pct;
};
// Series in order of first appearance of their label in results.
std::vector<Series> error_series(const std::vector<RunResult>& results);

// results.md: test error mean ± std per norm × per-rank batch, then throughput and SyncBN
// communication time. `about` is a line describing the study.
std::string results_markdown(const std::vector<RunResult>& results, const std::string& about);
// The plot: log2 x axis (per-rank batch), test error (%) on y, error bars of one std, legend.
// Every series is one <polyline class="series" data-label="...">.
std::string error_plot_svg(const std::vector<Series>& series, const std::string& title);
// Renders SVG text to a PNG file (librsvg + cairo) at `scale` times its size, white background.
void render_svg_to_png(const std::string& svg, const std::string& png_path, double scale = 2.0);

// ---------------------------------------------------------------------------------------------
// study/runner.cc: launching the runs (fork/exec of mpirun, one log each, SIGINT/SIGTERM).

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

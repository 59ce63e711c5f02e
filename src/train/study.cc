#include "train/study.h"

#include <cairo.h>
#include <fcntl.h>
#include <librsvg/rsvg.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "ckpt/json.h"
#include "core/hash.h"
#include "core/unique_fd.h"

namespace syncbn::train {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kNorms = {"bn", "syncbn", "gn", "ln", "in", "none"};

std::string join(const std::vector<std::string>& names, const char* sep = ", ") {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : sep) + n;
  return out;
}

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  SYNCBN_REQUIRE(in.good(), "cannot read ", what, " '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes through a temporary file and a rename, so readers never see half a file.
void write_atomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    SYNCBN_REQUIRE(out.good(), "cannot write '", tmp, "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  SYNCBN_REQUIRE(!ec, "cannot rename '", tmp, "' to '", path, "': ", ec.message());
}

// ---------------------------------------------------------------------------------------------
// The study config.

std::string key_error(const std::string& source, const std::string& key,
                      const std::string& expected, const YAML::Node& got) {
  std::string shown = got.IsScalar() ? "'" + got.Scalar() + "'"
                                     : "a " + std::string(got.IsSequence() ? "list" : "mapping");
  return str_cat(source, ": study key '", key, "' must be ", expected, ", got ", shown);
}

template <typename T>
T scalar(const YAML::Node& node, const std::string& source, const std::string& key,
         const std::string& expected) {
  try {
    SYNCBN_REQUIRE(node.IsScalar(), key_error(source, key, expected, node));
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw Error(key_error(source, key, expected, node));
  }
}

// A non-empty list of scalars without duplicates (a single scalar is a list of one).
template <typename T>
std::vector<T> scalar_list(const YAML::Node& node, const std::string& source,
                           const std::string& key, const std::string& expected_item) {
  SYNCBN_REQUIRE(node && !node.IsNull(), source, ": study key '", key,
                 "' is required: a non-empty list of ", expected_item);
  std::vector<T> out;
  if (node.IsScalar()) {
    out.push_back(scalar<T>(node, source, key, expected_item));
  } else {
    SYNCBN_REQUIRE(node.IsSequence(), key_error(source, key, "a list of " + expected_item, node));
    for (size_t i = 0; i < node.size(); ++i)
      out.push_back(scalar<T>(node[i], source, key + "[" + std::to_string(i) + "]", expected_item));
  }
  SYNCBN_REQUIRE(!out.empty(), source, ": study key '", key, "' must be a non-empty list of ",
                 expected_item, ", got an empty list");
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      SYNCBN_REQUIRE(!(out[i] == out[j]), source, ": study key '", key, "' lists ", out[i],
                     " twice");
  return out;
}

void check_keys(const YAML::Node& node, const std::string& source, const std::string& where,
                const std::vector<std::string>& allowed) {
  std::set<std::string> seen;
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    // yaml-cpp keeps duplicate keys and answers lookups with the first: refuse them instead.
    SYNCBN_REQUIRE(seen.insert(key).second, source, ": study key '",
                   where.empty() ? key : where + "." + key, "' appears twice");
    SYNCBN_REQUIRE(std::find(allowed.begin(), allowed.end(), key) != allowed.end(), source,
                   ": unknown study key '", where.empty() ? key : where + "." + key,
                   "'; allowed keys", where.empty() ? "" : " in '" + where + "'", ": ",
                   join(allowed));
  }
}

LrRule parse_rule(const std::string& text, const std::string& source) {
  if (text == "fixed") return LrRule::kFixed;
  if (text == "linear") return LrRule::kLinear;
  if (text == "sqrt") return LrRule::kSqrt;
  throw Error(str_cat(source, ": study key 'lr.rule' must be one of linear, sqrt, fixed, got '",
                      text, "'"));
}

const char* rule_name(LrRule rule) {
  switch (rule) {
    case LrRule::kLinear:
      return "linear";
    case LrRule::kSqrt:
      return "sqrt";
    case LrRule::kFixed:
      break;
  }
  return "fixed";
}

}  // namespace

StudyConfig parse_study_config(const std::string& yaml_text, const std::string& source,
                               const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(str_cat(source, ": not valid YAML: ", e.what()));
  }
  SYNCBN_REQUIRE(root.IsMap(), source,
                 ": a study config must be a mapping with keys base, set, world_size, "
                 "per_rank_batch, norms, bn_group_size, seeds, lr");
  check_keys(
      root, source, "",
      {"base", "set", "world_size", "per_rank_batch", "norms", "bn_group_size", "seeds", "lr"});
  StudyConfig study;

  // The base training config, with `set` applied and validated by the training config's rules.
  std::vector<std::string> overrides;
  if (root["set"] && !root["set"].IsNull())
    overrides = scalar_list<std::string>(root["set"], source, "set", "key=value overrides");
  const YAML::Node base = root["base"];
  SYNCBN_REQUIRE(base && !base.IsNull(), source,
                 ": study key 'base' is required: the training config, as a path or a mapping");
  std::string base_text;
  if (base.IsScalar()) {
    fs::path path = base.Scalar();
    if (path.is_relative()) path = fs::path(base_dir) / path;
    study.base_source = path.lexically_normal().string();
    std::ifstream in(study.base_source);
    SYNCBN_REQUIRE(in.good(), source, ": study key 'base': cannot read the training config '",
                   study.base_source, "'");
    std::stringstream text;
    text << in.rdbuf();
    base_text = text.str();
  } else {
    SYNCBN_REQUIRE(base.IsMap(), key_error(source, "base", "a path or a mapping", base));
    study.base_source = "inline";
    base_text = YAML::Dump(base);
  }
  try {
    study.base = parse_config(base_text, overrides, study.base_source);
  } catch (const Error& e) {
    throw Error(str_cat(source, ": study key 'base' (", study.base_source, "): ", e.what()));
  }

  SYNCBN_REQUIRE(root["world_size"], source,
                 ": study key 'world_size' is required: the number of ranks of every run");
  study.world_size =
      scalar<int>(root["world_size"], source, "world_size", "an integer in [1, 1024]");
  SYNCBN_REQUIRE(study.world_size >= 1 && study.world_size <= 1024, source,
                 ": study key 'world_size' must be an integer in [1, 1024], got ",
                 study.world_size);

  study.per_rank_batches = scalar_list<int64_t>(root["per_rank_batch"], source, "per_rank_batch",
                                                "integers in [1, 65536]");
  for (int64_t b : study.per_rank_batches)
    SYNCBN_REQUIRE(b >= 1 && b <= 65536, source,
                   ": study key 'per_rank_batch' must hold integers in [1, 65536], got ", b);

  study.norms = scalar_list<std::string>(root["norms"], source, "norms",
                                         "norm names (one of " + join(kNorms) + ")");
  for (const std::string& n : study.norms)
    SYNCBN_REQUIRE(std::find(kNorms.begin(), kNorms.end(), n) != kNorms.end(), source,
                   ": study key 'norms' must list norms among ", join(kNorms), ", got '", n, "'");

  if (root["bn_group_size"] && !root["bn_group_size"].IsNull()) {
    study.bn_group_sizes = scalar_list<int64_t>(root["bn_group_size"], source, "bn_group_size",
                                                "divisors of world_size (0 = the whole world)");
    for (int64_t g : study.bn_group_sizes)
      SYNCBN_REQUIRE(g == 0 || (g >= 1 && g <= study.world_size && study.world_size % g == 0),
                     source, ": study key 'bn_group_size' must hold divisors of world_size ",
                     study.world_size, " (or 0 = the whole world), got ", g);
    std::set<int64_t> effective;
    for (int64_t g : study.bn_group_sizes) effective.insert(g == 0 ? study.world_size : g);
    SYNCBN_REQUIRE(effective.size() == study.bn_group_sizes.size(), source,
                   ": study key 'bn_group_size' lists the whole world twice (0 and ",
                   study.world_size, ")");
  }

  study.seeds = scalar_list<uint64_t>(root["seeds"], source, "seeds", "non-negative integers");

  study.lr.base_lr = study.base.train.lr;
  if (const YAML::Node lr = root["lr"]; lr && !lr.IsNull()) {
    SYNCBN_REQUIRE(lr.IsMap(), key_error(source, "lr",
                                         "a mapping with keys rule, base_lr, base_batch, "
                                         "warmup_epochs",
                                         lr));
    check_keys(lr, source, "lr", {"rule", "base_lr", "base_batch", "warmup_epochs"});
    SYNCBN_REQUIRE(lr["rule"], source, ": study key 'lr.rule' is required: linear, sqrt or fixed");
    study.lr.rule = parse_rule(
        scalar<std::string>(lr["rule"], source, "lr.rule", "one of linear, sqrt, fixed"), source);
    if (lr["base_lr"])
      study.lr.base_lr = scalar<double>(lr["base_lr"], source, "lr.base_lr", "a positive number");
    SYNCBN_REQUIRE(study.lr.base_lr > 0 && study.lr.base_lr <= 1e3, source,
                   ": study key 'lr.base_lr' must be a positive number (at most 1000), got ",
                   study.lr.base_lr);
    if (lr["base_batch"])
      study.lr.base_batch =
          scalar<int64_t>(lr["base_batch"], source, "lr.base_batch", "a positive integer");
    SYNCBN_REQUIRE(study.lr.rule == LrRule::kFixed || study.lr.base_batch >= 1, source,
                   ": study key 'lr.base_batch' is required with lr.rule ",
                   rule_name(study.lr.rule),
                   ": the global batch at which lr.base_lr holds, a positive integer");
    if (lr["warmup_epochs"]) {
      study.lr.warmup_epochs =
          scalar<double>(lr["warmup_epochs"], source, "lr.warmup_epochs", "a non-negative number");
      SYNCBN_REQUIRE(study.lr.warmup_epochs >= 0 && study.lr.warmup_epochs <= 1e4, source,
                     ": study key 'lr.warmup_epochs' must be a non-negative number, got ",
                     study.lr.warmup_epochs);
      SYNCBN_REQUIRE(study.base.data.train_limit > 0, source,
                     ": study key 'lr.warmup_epochs' needs data.train_limit > 0 in the base "
                     "config (the epoch length in images)");
    }
  }
  return study;
}

StudyConfig load_study_config(const std::string& path) {
  const std::string text = read_text(path, "the study config");
  return parse_study_config(text, path, fs::path(path).parent_path().string());
}

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

Config run_config(const StudyConfig& study, const RunSpec& run) {
  Config c = study.base;
  c.seed = run.seed;
  c.model.norm = parse_norm(run.norm);
  c.model.bn_group_size = c.model.norm == Norm::kSyncBn ? run.bn_group_size : 0;
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
  Config neutral = study.base;
  neutral.seed = 0;
  neutral.model.norm = Norm::kNone;
  neutral.model.bn_group_size = 0;
  neutral.train.per_rank_batch = 1;
  neutral.train.lr = 0;
  neutral.checkpoint = Config::Checkpoint{};
  if (study.lr.warmup_epochs >= 0) neutral.train.warmup_steps = 0;
  std::ostringstream lr;
  lr.precision(17);
  lr << "world_size " << study.world_size << "\nlr " << rule_name(study.lr.rule) << " "
     << study.lr.base_lr << " " << study.lr.base_batch << " " << study.lr.warmup_epochs << "\n";
  return hex64(fnv1a(to_yaml(neutral) + lr.str()));
}

// ---------------------------------------------------------------------------------------------
// Metrics and results.csv.

RunMetrics parse_metrics(const std::string& jsonl, const std::string& source) {
  struct Window {
    int64_t steps;
    double seconds_per_image;
    double comm_ms;
  };
  std::vector<Window> windows;
  RunMetrics m;
  bool have_eval = false;
  int64_t last_step = 0;
  std::istringstream lines(jsonl);
  int line_number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    ckpt::json::Value record;
    try {
      record = ckpt::json::parse(line);
    } catch (const Error& e) {
      throw Error(str_cat(source, " line ", line_number, ": not JSON: ", e.what()));
    }
    auto number = [&](const char* key) {
      const ckpt::json::Value* v = record.is_object() ? record.find(key) : nullptr;
      SYNCBN_REQUIRE(v != nullptr && (v->kind() == ckpt::json::Value::Kind::kInt ||
                                      v->kind() == ckpt::json::Value::Kind::kDouble),
                     source, " line ", line_number, ": expected a number '", key, "'");
      return v->as_double();
    };
    const ckpt::json::Value* kind = record.is_object() ? record.find("kind") : nullptr;
    SYNCBN_REQUIRE(kind != nullptr && kind->is_string(), source, " line ", line_number,
                   ": expected a \"kind\" string");
    if (kind->as_string() == "train") {
      const auto step = static_cast<int64_t>(number("step"));
      const double ips = number("images_per_s");
      const ckpt::json::Value* comm = record.find("sync_bn_comm_ms");
      windows.push_back(
          {step - last_step, ips > 0 ? 1.0 / ips : 0.0, comm != nullptr ? comm->as_double() : 0.0});
      last_step = step;
      m.steps = std::max(m.steps, step);
    } else if (kind->as_string() == "eval") {
      m.test_loss = number("loss");
      m.test_accuracy = number("accuracy");
      have_eval = true;
    }
  }
  SYNCBN_REQUIRE(have_eval, source, ": no \"eval\" record (the run did not finish)");
  SYNCBN_REQUIRE(!windows.empty(), source, ": no \"train\" record");
  // Time per image weighted by each window's steps (full global batches): Σ steps / Σ steps·s.
  const size_t first = windows.size() > 1 ? 1 : 0;
  double steps = 0, step_seconds = 0, comm = 0;
  for (size_t i = first; i < windows.size(); ++i) {
    const auto s = static_cast<double>(windows[i].steps);
    steps += s;
    step_seconds += s * windows[i].seconds_per_image;
    comm += s * windows[i].comm_ms;
  }
  m.images_per_s = step_seconds > 0 ? steps / step_seconds : 0.0;
  m.sync_bn_comm_ms = steps > 0 ? comm / steps : 0.0;
  return m;
}

namespace {

const std::vector<std::string> kColumns = {"run",
                                           "norm",
                                           "per_rank_batch",
                                           "bn_group_size",
                                           "seed",
                                           "world_size",
                                           "global_batch",
                                           "lr",
                                           "steps",
                                           "epochs",
                                           "test_error",
                                           "test_loss",
                                           "images_per_s",
                                           "sync_bn_comm_ms",
                                           "wall_s",
                                           "study_hash",
                                           "config_hash"};

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, sep)) fields.push_back(field);
  if (!line.empty() && line.back() == sep) fields.emplace_back();
  return fields;
}

std::string format(const char* fmt, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), fmt, value);
  return text;
}

}  // namespace

std::string csv_header() { return join(kColumns, ",") + "\n"; }

std::string csv_row(const RunResult& r) {
  const RunSpec& s = r.spec;
  const std::vector<std::string> fields = {
      s.name(),
      s.norm,
      std::to_string(s.per_rank_batch),
      s.bn_group_size > 0 ? std::to_string(s.bn_group_size) : "",
      std::to_string(s.seed),
      std::to_string(s.world_size),
      std::to_string(s.global_batch()),
      format("%.9g", r.lr),
      std::to_string(r.steps),
      std::to_string(r.epochs),
      format("%.6f", r.test_error),
      format("%.6f", r.test_loss),
      format("%.1f", r.images_per_s),
      format("%.4f", r.sync_bn_comm_ms),
      format("%.1f", r.wall_s),
      r.study_hash,
      r.config_hash};
  return join(fields, ",") + "\n";
}

std::vector<RunResult> parse_results_csv(const std::string& text, const std::string& source) {
  std::istringstream lines(text);
  std::string header;
  std::getline(lines, header);
  SYNCBN_REQUIRE(header + "\n" == csv_header(), source, ": unexpected header '", header,
                 "'; expected '", join(kColumns, ","),
                 "' (written by another version of syncbn study? use another --out directory)");
  std::vector<RunResult> results;
  int line_number = 1;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    const std::vector<std::string> f = split(line, ',');
    SYNCBN_REQUIRE(f.size() == kColumns.size(), source, " line ", line_number, ": ", f.size(),
                   " columns, expected ", kColumns.size());
    auto integer = [&](size_t i, bool empty_ok = false) -> int64_t {
      if (empty_ok && f[i].empty()) return 0;
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(f[i].c_str(), &end, 10);
      SYNCBN_REQUIRE(!f[i].empty() && *end == '\0' && errno == 0, source, " line ", line_number,
                     ": column '", kColumns[i], "' must be an integer, got '", f[i], "'");
      return v;
    };
    auto real = [&](size_t i) {
      char* end = nullptr;
      const double v = std::strtod(f[i].c_str(), &end);
      SYNCBN_REQUIRE(!f[i].empty() && *end == '\0' && std::isfinite(v), source, " line ",
                     line_number, ": column '", kColumns[i], "' must be a number, got '", f[i],
                     "'");
      return v;
    };
    RunResult r;
    r.spec.norm = f[1];
    SYNCBN_REQUIRE(std::find(kNorms.begin(), kNorms.end(), r.spec.norm) != kNorms.end(), source,
                   " line ", line_number, ": column 'norm' must be one of ", join(kNorms),
                   ", got '", f[1], "'");
    r.spec.per_rank_batch = integer(2);
    r.spec.bn_group_size = integer(3, /*empty_ok=*/true);
    r.spec.seed = static_cast<uint64_t>(integer(4));
    r.spec.world_size = static_cast<int>(integer(5));
    SYNCBN_REQUIRE(r.spec.per_rank_batch >= 1 && r.spec.world_size >= 1 &&
                       integer(6) == r.spec.global_batch() && f[0] == r.spec.name(),
                   source, " line ", line_number,
                   ": inconsistent run (name, batch, world size and global batch disagree)");
    r.lr = real(7);
    r.steps = integer(8);
    r.epochs = integer(9);
    r.test_error = real(10);
    r.test_loss = real(11);
    r.images_per_s = real(12);
    r.sync_bn_comm_ms = real(13);
    r.wall_s = real(14);
    r.study_hash = f[15];
    r.config_hash = f[16];
    results.push_back(r);
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Summaries: the table and the plot.

MeanStd mean_std(const std::vector<double>& values) {
  MeanStd m;
  m.n = static_cast<int>(values.size());
  if (values.empty()) return m;
  double sum = 0;
  for (double v : values) sum += v;
  m.mean = sum / m.n;
  if (m.n < 2) return m;
  double squares = 0;
  for (double v : values) squares += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(squares / (m.n - 1));
  return m;
}

namespace {

// label → per-rank batch → the runs' values of `field`, labels in order of first appearance.
template <typename Field>
std::vector<std::pair<std::string, std::map<int64_t, std::vector<double>>>> group_by(
    const std::vector<RunResult>& results, Field field) {
  std::vector<std::pair<std::string, std::map<int64_t, std::vector<double>>>> groups;
  for (const RunResult& r : results) {
    const std::string label = r.spec.label();
    auto it =
        std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == label; });
    if (it == groups.end()) it = groups.insert(groups.end(), {label, {}});
    it->second[r.spec.per_rank_batch].push_back(field(r));
  }
  return groups;
}

}  // namespace

std::vector<Series> error_series(const std::vector<RunResult>& results) {
  std::vector<Series> out;
  for (const auto& [label, by_batch] :
       group_by(results, [](const RunResult& r) { return 100.0 * r.test_error; })) {
    Series s;
    s.label = label;
    for (const auto& [batch, values] : by_batch) {
      s.per_rank_batches.push_back(batch);
      s.error_pct.push_back(mean_std(values));
    }
    out.push_back(s);
  }
  return out;
}

std::string results_markdown(const std::vector<RunResult>& results, const std::string& about) {
  std::set<int64_t> batches;
  std::map<int64_t, int64_t> global_batch;
  double total_wall = 0;
  for (const RunResult& r : results) {
    batches.insert(r.spec.per_rank_batch);
    global_batch[r.spec.per_rank_batch] = r.spec.global_batch();
    total_wall += r.wall_s;
  }
  const auto errors = group_by(results, [](const RunResult& r) { return 100.0 * r.test_error; });
  const auto speed = group_by(results, [](const RunResult& r) { return r.images_per_s; });
  const auto comm = group_by(results, [](const RunResult& r) { return r.sync_bn_comm_ms; });

  std::ostringstream md;
  md << "## Test error (%) vs per-rank batch size\n\n" << about << "\n\n";
  md << "Mean ± sample std over seeds (number of runs in parentheses).\n\n";
  md << "| per-rank batch | global batch |";
  for (const auto& g : errors) md << " " << g.first << " |";
  md << "\n| ---: | ---: |";
  for (size_t i = 0; i < errors.size(); ++i) md << " ---: |";
  md << "\n";
  char cell[96];
  for (int64_t b : batches) {
    md << "| " << b << " | " << global_batch[b] << " |";
    for (const auto& g : errors) {
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
        continue;
      }
      const MeanStd m = mean_std(it->second);
      if (m.n > 1) {
        std::snprintf(cell, sizeof(cell), " %.2f ± %.2f (%d) |", m.mean, m.std, m.n);
      } else {
        std::snprintf(cell, sizeof(cell), " %.2f (1) |", m.mean);
      }
      md << cell;
    }
    md << "\n";
  }

  md << "\n## Throughput (images/s) and SyncBN communication (ms/step)\n\n";
  md << "Means over seeds; communication is rank 0's time inside the SyncBN allreduces per "
        "training step (forward and backward, all layers, waiting for slower ranks included).\n\n";
  md << "| per-rank batch |";
  size_t columns = 0;
  for (const auto& g : speed) md << " " << g.first << " img/s |", ++columns;
  for (const auto& g : comm) {
    if (g.first.rfind("syncbn", 0) == 0) md << " " << g.first << " comm ms/step |", ++columns;
  }
  md << "\n| ---: |";
  for (size_t i = 0; i < columns; ++i) md << " ---: |";
  md << "\n";
  for (int64_t b : batches) {
    md << "| " << b << " |";
    for (const auto& g : speed) {
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
      } else {
        std::snprintf(cell, sizeof(cell), " %.0f |", mean_std(it->second).mean);
        md << cell;
      }
    }
    for (const auto& g : comm) {
      if (g.first.rfind("syncbn", 0) != 0) continue;
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
      } else {
        std::snprintf(cell, sizeof(cell), " %.3f |", mean_std(it->second).mean);
        md << cell;
      }
    }
    md << "\n";
  }
  std::snprintf(cell, sizeof(cell), "%.1f", total_wall / 60.0);
  md << "\n" << results.size() << " runs, " << cell << " min of run time in total.\n";
  return md.str();
}

namespace {

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// A round tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10.0 * magnitude;
}

std::string color_of(const std::string& label, size_t index) {
  if (label == "bn") return "#d62728";
  if (label == "syncbn") return "#1f77b4";
  if (label == "gn") return "#2ca02c";
  static const char* kOthers[] = {"#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                                  "#7f7f7f", "#bcbd22", "#17becf"};
  return kOthers[index % (sizeof(kOthers) / sizeof(kOthers[0]))];
}

}  // namespace

std::string error_plot_svg(const std::vector<Series>& series, const std::string& title) {
  constexpr double kWidth = 760, kHeight = 480;
  constexpr double kLeft = 72, kRight = 150, kTop = 48, kBottom = 64;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

  int64_t min_batch = 0, max_batch = 0;
  double lo = INFINITY, hi = -INFINITY;
  for (const Series& s : series) {
    for (size_t i = 0; i < s.per_rank_batches.size(); ++i) {
      const int64_t b = s.per_rank_batches[i];
      min_batch = min_batch == 0 ? b : std::min(min_batch, b);
      max_batch = std::max(max_batch, b);
      lo = std::min(lo, s.error_pct[i].mean - s.error_pct[i].std);
      hi = std::max(hi, s.error_pct[i].mean + s.error_pct[i].std);
    }
  }
  if (max_batch == 0) min_batch = 1, max_batch = 1, lo = 0, hi = 100;
  const double x_lo = std::floor(std::log2(static_cast<double>(min_batch))) - 0.3;
  const double x_hi = std::ceil(std::log2(static_cast<double>(max_batch))) + 0.3;
  if (hi - lo < 1.0) lo -= 0.5, hi += 0.5;
  const double y_step = nice_step(hi - lo, 6);
  const double y_lo = std::max(0.0, std::floor(lo / y_step) * y_step);
  const double y_hi = std::ceil(hi / y_step) * y_step;
  auto px = [&](double batch) {
    return kLeft + (std::log2(batch) - x_lo) / (x_hi - x_lo) * kPlotW;
  };
  auto py = [&](double pct) { return kTop + (y_hi - pct) / (y_hi - y_lo) * kPlotH; };

  std::ostringstream svg;
  svg.setf(std::ios::fixed);
  svg.precision(2);
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"28\" text-anchor=\"middle\" "
      << "font-size=\"15\">" << xml_escape(title) << "</text>\n";

  // Grid, ticks and tick labels.
  svg << "<g class=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (double y = y_lo; y <= y_hi + 1e-9 * y_step; y += y_step)
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << py(y) << "\" x2=\"" << kLeft + kPlotW
        << "\" y2=\"" << py(y) << "\"/>\n";
  for (double k = std::ceil(x_lo); k <= x_hi; k += 1)
    svg << "<line x1=\"" << px(std::exp2(k)) << "\" y1=\"" << kTop << "\" x2=\"" << px(std::exp2(k))
        << "\" y2=\"" << kTop + kPlotH << "\"/>\n";
  svg << "</g>\n<g class=\"ticks\" fill=\"black\">\n";
  const int y_decimals = y_step >= 1 ? 0 : (y_step >= 0.1 ? 1 : 2);
  for (double y = y_lo; y <= y_hi + 1e-9 * y_step; y += y_step) {
    svg << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << py(y) << "\" x2=\"" << kLeft << "\" y2=\""
        << py(y) << "\" stroke=\"black\"/>\n";
    char label[32];
    std::snprintf(label, sizeof(label), "%.*f", y_decimals, y);
    svg << "<text x=\"" << kLeft - 8 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << label
        << "</text>\n";
  }
  for (double k = std::ceil(x_lo); k <= x_hi; k += 1) {
    const double x = px(std::exp2(k));
    svg << "<line x1=\"" << x << "\" y1=\"" << kTop + kPlotH << "\" x2=\"" << x << "\" y2=\""
        << kTop + kPlotH + 5 << "\" stroke=\"black\"/>\n"
        << "<text x=\"" << x << "\" y=\"" << kTop + kPlotH + 20 << "\" text-anchor=\"middle\">"
        << static_cast<int64_t>(std::llround(std::exp2(k))) << "</text>\n";
  }
  svg << "</g>\n"
      << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kPlotW << "\" height=\""
      << kPlotH << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"" << kHeight - 18
      << "\" text-anchor=\"middle\">per-rank batch size (log2 scale)</text>\n"
      << "<text transform=\"translate(20 " << kTop + kPlotH / 2
      << ") rotate(-90)\" text-anchor=\"middle\">test error (%)</text>\n";

  // The series: error bars (±1 std), the line, markers; then the legend.
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const std::string color = color_of(s.label, i);
    const std::string label = xml_escape(s.label);
    svg << "<g class=\"errorbars\" data-label=\"" << label << "\" stroke=\"" << color
        << "\" stroke-width=\"1.2\">\n";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j) {
      const MeanStd& m = s.error_pct[j];
      if (m.std <= 0) continue;
      const double x = px(static_cast<double>(s.per_rank_batches[j]));
      const double y0 = py(m.mean - m.std), y1 = py(m.mean + m.std);
      svg << "<line x1=\"" << x << "\" y1=\"" << y0 << "\" x2=\"" << x << "\" y2=\"" << y1
          << "\"/><line x1=\"" << x - 4 << "\" y1=\"" << y0 << "\" x2=\"" << x + 4 << "\" y2=\""
          << y0 << "\"/><line x1=\"" << x - 4 << "\" y1=\"" << y1 << "\" x2=\"" << x + 4
          << "\" y2=\"" << y1 << "\"/>\n";
    }
    svg << "</g>\n<polyline class=\"series\" data-label=\"" << label << "\" fill=\"none\" stroke=\""
        << color << "\" stroke-width=\"2\" points=\"";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j)
      svg << (j ? " " : "") << px(static_cast<double>(s.per_rank_batches[j])) << ","
          << py(s.error_pct[j].mean);
    svg << "\"/>\n<g class=\"markers\" fill=\"" << color << "\">\n";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j)
      svg << "<circle cx=\"" << px(static_cast<double>(s.per_rank_batches[j])) << "\" cy=\""
          << py(s.error_pct[j].mean) << "\" r=\"3.5\"/>\n";
    svg << "</g>\n";
  }
  const double legend_x = kLeft + kPlotW + 16;
  svg << "<g class=\"legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = kTop + 12 + 22.0 * static_cast<double>(i);
    const std::string color = color_of(series[i].label, i);
    svg << "<line x1=\"" << legend_x << "\" y1=\"" << y << "\" x2=\"" << legend_x + 26 << "\" y2=\""
        << y << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>"
        << "<circle cx=\"" << legend_x + 13 << "\" cy=\"" << y << "\" r=\"3.5\" fill=\"" << color
        << "\"/><text x=\"" << legend_x + 34 << "\" y=\"" << y + 4 << "\">"
        << xml_escape(series[i].label) << "</text>\n";
  }
  svg << "<text x=\"" << legend_x << "\" y=\"" << kTop + 12 + 22.0 * series.size() + 8
      << "\" font-size=\"11\" fill=\"#555555\">bars: ±1 std over seeds</text>\n";
  svg << "</g>\n</svg>\n";
  return svg.str();
}

void render_svg_to_png(const std::string& svg, const std::string& png_path, double scale) {
  GError* error = nullptr;
  std::unique_ptr<RsvgHandle, void (*)(gpointer)> handle(
      rsvg_handle_new_from_data(reinterpret_cast<const guint8*>(svg.data()), svg.size(), &error),
      g_object_unref);
  if (handle == nullptr) {
    const std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    throw Error("cannot parse the SVG for '" + png_path + "': " + message);
  }
  gdouble width = 0, height = 0;
  SYNCBN_REQUIRE(rsvg_handle_get_intrinsic_size_in_pixels(handle.get(), &width, &height) &&
                     width > 0 && height > 0,
                 "the SVG for '", png_path, "' has no width and height in pixels");
  const int w = static_cast<int>(std::lround(width * scale));
  const int h = static_cast<int>(std::lround(height * scale));
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h), cairo_surface_destroy);
  std::unique_ptr<cairo_t, void (*)(cairo_t*)> cr(cairo_create(surface.get()), cairo_destroy);
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  const RsvgRectangle viewport = {0, 0, static_cast<double>(w), static_cast<double>(h)};
  if (!rsvg_handle_render_document(handle.get(), cr.get(), &viewport, &error)) {
    const std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    throw Error("cannot render the SVG for '" + png_path + "': " + message);
  }
  cairo_surface_flush(surface.get());
  const std::string tmp = png_path + ".tmp";
  const cairo_status_t status = cairo_surface_write_to_png(surface.get(), tmp.c_str());
  SYNCBN_REQUIRE(status == CAIRO_STATUS_SUCCESS, "cannot write '", tmp,
                 "': ", cairo_status_to_string(status));
  std::error_code ec;
  fs::rename(tmp, png_path, ec);
  SYNCBN_REQUIRE(!ec, "cannot rename '", tmp, "' to '", png_path, "': ", ec.message());
}

// ---------------------------------------------------------------------------------------------
// Running the study.

namespace {

volatile sig_atomic_t g_signal = 0;
volatile pid_t g_child = 0;

void on_signal(int signal_number) {
  g_signal = signal_number;
  const pid_t child = g_child;
  if (child > 0) ::kill(child, SIGTERM);  // mpirun stops its ranks
}

// SIGINT/SIGTERM handlers for the study's lifetime, restored on destruction.
class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    struct sigaction action = {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalScope() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

// Runs argv with stdout and stderr to log_path; returns the wait status. The child gets SIGTERM
// when the study dies, even by SIGKILL (PR_SET_PDEATHSIG), so no run outlives its study.
int run_logged(const std::vector<std::string>& argv, const std::string& log_path) {
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  SYNCBN_REQUIRE(log.get() >= 0, "cannot write the run log '", log_path,
                 "': ", std::strerror(errno));
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  SYNCBN_REQUIRE(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {  // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(null.get(), STDIN_FILENO);
    ::dup2(log.get(), STDOUT_FILENO);
    ::dup2(log.get(), STDERR_FILENO);
    ::execvp(args[0], args.data());
    const char* message = "syncbn study: cannot execute ";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, message, std::strlen(message));
    n = ::write(STDERR_FILENO, args[0], std::strlen(args[0]));
    n = ::write(STDERR_FILENO, "\n", 1);
    ::_exit(127);
  }
  g_child = pid;
  if (g_signal != 0) ::kill(pid, SIGTERM);  // a signal that arrived just before the fork
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    SYNCBN_CHECK(errno == EINTR);
  }
  g_child = 0;
  return status;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return str_cat("killed by signal ", WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string tail_lines(const std::string& text, int lines) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (int n = 0; n < lines && pos > 0; ++n) {
    const size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return text.substr(pos == 0 ? 0 : pos + 1);
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", s / 60, s % 60);
  }
  return text;
}

std::string describe_lr(const StudyConfig& study) {
  char text[160];
  switch (study.lr.rule) {
    case LrRule::kLinear:
      std::snprintf(text, sizeof(text), "lr %.4g × global batch / %lld", study.lr.base_lr,
                    static_cast<long long>(study.lr.base_batch));
      break;
    case LrRule::kSqrt:
      std::snprintf(text, sizeof(text), "lr %.4g × sqrt(global batch / %lld)", study.lr.base_lr,
                    static_cast<long long>(study.lr.base_batch));
      break;
    case LrRule::kFixed:
      std::snprintf(text, sizeof(text), "lr %.4g for every batch size", study.lr.base_lr);
      break;
  }
  return text;
}

std::string describe_study(const StudyConfig& study) {
  const Config& b = study.base;
  std::ostringstream about;
  about << "Fashion-MNIST, " << b.model.preset << ", world size " << study.world_size << ", ";
  if (b.train.epochs > 0) {
    about << b.train.epochs << " epoch" << (b.train.epochs == 1 ? "" : "s");
  } else {
    about << b.train.steps << " steps";
  }
  about << " on " << (b.data.train_limit > 0 ? std::to_string(b.data.train_limit) : "all")
        << " training images, test error on "
        << (b.data.test_limit > 0 ? std::to_string(b.data.test_limit) : "all 10000")
        << " test images; " << describe_lr(study);
  if (study.lr.warmup_epochs > 0) about << ", warmup " << study.lr.warmup_epochs << " epochs";
  about << "; base config " << study.base_source << ".";
  return about.str();
}

void write_outputs(const StudyConfig& study, const std::vector<RunResult>& results,
                   const fs::path& dir) {
  if (results.empty()) return;
  write_atomically((dir / "results.md").string(),
                   "# Batch-size study\n\n" + results_markdown(results, describe_study(study)));
  const std::string svg = error_plot_svg(error_series(results),
                                         "Fashion-MNIST test error vs per-rank batch (world size " +
                                             std::to_string(study.world_size) + ")");
  write_atomically((dir / "error_vs_batch.svg").string(), svg);
  render_svg_to_png(svg, (dir / "error_vs_batch.png").string());
}

// Appends one line with a single write and fsyncs it: a crash leaves whole rows, at worst a
// torn last line, which the next start drops.
void append_line(const std::string& path, const std::string& line) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  SYNCBN_REQUIRE(fd.get() >= 0, "cannot append to '", path, "': ", std::strerror(errno));
  const ssize_t n = ::write(fd.get(), line.data(), line.size());
  SYNCBN_REQUIRE(n == static_cast<ssize_t>(line.size()), "cannot append to '", path,
                 "': ", std::strerror(errno));
  SYNCBN_REQUIRE(::fsync(fd.get()) == 0, "cannot fsync '", path, "': ", std::strerror(errno));
}

}  // namespace

void run_study(const StudyConfig& study, const StudyOptions& options) {
  SYNCBN_REQUIRE(!options.out_dir.empty(), "syncbn study needs --out DIR");
  const fs::path dir = options.out_dir;
  const std::string csv_path = (dir / "results.csv").string();
  const std::string hash = study_hash(study);
  const std::vector<RunSpec> runs = expand_runs(study);

  // What an earlier invocation finished.
  std::vector<RunResult> done;
  if (fs::exists(csv_path)) {
    std::string text = read_text(csv_path, "the results");
    if (!text.empty() && text.back() != '\n') {
      const size_t keep = text.rfind('\n') + 1;  // 0 when even the header is torn
      std::printf("study: dropping a torn last line of %s\n", csv_path.c_str());
      if (!options.dry_run) fs::resize_file(csv_path, keep);
      text.resize(keep);
    }
    if (!text.empty()) done = parse_results_csv(text, csv_path);
    for (const RunResult& r : done)
      SYNCBN_REQUIRE(r.study_hash == hash, csv_path, " holds run ", r.spec.name(),
                     " of a different study (study hash ", r.study_hash, ", this config has ", hash,
                     "): the base config, world size or LR rule changed; compare with ",
                     (dir / "study.yaml").string(),
                     ", and use another --out directory or remove the old results");
  }
  std::set<std::string> finished;
  for (const RunResult& r : done) finished.insert(r.spec.name());
  size_t to_run = 0;
  for (const RunSpec& r : runs) to_run += finished.count(r.name()) == 0;
  std::printf("study: %zu runs (%zu already in %s, %zu to run), world size %d, output in %s\n",
              runs.size(), runs.size() - to_run, csv_path.c_str(), to_run, study.world_size,
              dir.string().c_str());
  if (options.dry_run) {
    for (const RunSpec& r : runs) {
      const Config c = run_config(study, r);
      std::printf("  %-22s global batch %-5lld lr %-10.6g warmup %lld%s\n", r.name().c_str(),
                  static_cast<long long>(r.global_batch()), c.train.lr,
                  static_cast<long long>(c.train.warmup_steps),
                  finished.count(r.name()) ? "  (done)" : "");
    }
    return;
  }

  fs::create_directories(dir / "runs");
  if (!fs::exists(csv_path) || fs::file_size(csv_path) == 0) append_line(csv_path, csv_header());
  {
    YAML::Emitter meta;
    meta << YAML::BeginMap << YAML::Key << "study_hash" << YAML::Value << hash;
    meta << YAML::Key << "world_size" << YAML::Value << study.world_size;
    meta << YAML::Key << "lr" << YAML::Value << describe_lr(study);
    meta << YAML::Key << "warmup_epochs" << YAML::Value << study.lr.warmup_epochs;
    meta << YAML::Key << "base_source" << YAML::Value << study.base_source << YAML::EndMap;
    write_atomically((dir / "study.yaml").string(),
                     std::string("# What every run of this study shares (the swept fields are "
                                 "set per run).\n") +
                         meta.c_str() + "\n---\n" + to_yaml(study.base));
  }

  std::vector<RunResult> shown;  // the rows of this sweep, in results.csv order
  auto refresh_shown = [&] {
    shown.clear();
    std::set<std::string> names;
    for (const RunSpec& r : runs) names.insert(r.name());
    for (const RunResult& r : done)
      if (names.erase(r.spec.name())) shown.push_back(r);  // the first row of a run counts
  };
  refresh_shown();

  const int cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  SignalScope signals;
  double spent = 0;
  size_t launched = 0, remaining = to_run;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSpec& run = runs[i];
    const std::string name = run.name();
    if (finished.count(name)) {
      std::printf("[%zu/%zu] %s: skipped, already in results.csv\n", i + 1, runs.size(),
                  name.c_str());
      continue;
    }
    const fs::path run_dir = dir / "runs" / name;
    fs::create_directories(run_dir);
    const Config config = run_config(study, run);
    const std::string config_path = (run_dir / "config.yaml").string();
    const std::string metrics_path = (run_dir / "metrics.jsonl").string();
    const std::string log_path = (run_dir / "train.log").string();
    write_atomically(config_path, to_yaml(config));
    // New files, not truncated ones: a process of a killed earlier attempt that has not exited
    // yet keeps writing to its own (now unlinked) files.
    fs::remove(metrics_path);
    fs::remove(log_path);

    std::vector<std::string> argv = {
        options.mpirun,        "-np",  std::to_string(study.world_size),
        "--bind-to",           "none", "--mca",
        "mpi_yield_when_idle", "1"};
    if (study.world_size > cpus) argv.push_back("--oversubscribe");
    if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
    argv.insert(argv.end(), {options.train_binary, "train", "--config", config_path,
                             "--metrics-out", metrics_path, "--no-progress"});

    std::printf("[%zu/%zu] %s: running (global batch %lld, lr %.4g)\n", i + 1, runs.size(),
                name.c_str(), static_cast<long long>(run.global_batch()), config.train.lr);
    std::fflush(stdout);
    const auto start = std::chrono::steady_clock::now();
    const int status = run_logged(argv, log_path);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (g_signal != 0) {
      const int sig = g_signal;
      write_outputs(study, shown, dir);
      throw StudyInterrupted(
          sig, str_cat("interrupted by signal ", sig, " during run ", name, "; ", shown.size(),
                       " finished runs are in ", csv_path, "; rerun the same command to continue"));
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      std::string log;
      try {
        log = read_text(log_path, "the run log");
      } catch (const Error&) {
      }
      std::fprintf(stderr, "syncbn study: run %s failed (%s); last lines of %s:\n%s\n",
                   name.c_str(), describe_status(status).c_str(), log_path.c_str(),
                   tail_lines(log, 20).c_str());
      write_outputs(study, shown, dir);
      throw Error(str_cat("run ", name, " failed (", describe_status(status), "); its log is ",
                          log_path, ". Finished runs are kept in ", csv_path,
                          "; rerun the same command to retry from this run"));
    }

    RunResult result;
    result.spec = run;
    result.lr = config.train.lr;
    result.epochs = config.train.epochs;
    const RunMetrics m = parse_metrics(read_text(metrics_path, "the run's metrics"), metrics_path);
    result.steps = m.steps;
    result.test_error = 1.0 - m.test_accuracy;
    result.test_loss = m.test_loss;
    result.images_per_s = m.images_per_s;
    result.sync_bn_comm_ms = m.sync_bn_comm_ms;
    result.wall_s = wall;
    result.study_hash = hash;
    result.config_hash = hex64(config_hash(config));
    append_line(csv_path, csv_row(result));
    done.push_back(result);
    refresh_shown();
    write_outputs(study, shown, dir);

    spent += wall;
    ++launched;
    --remaining;
    std::printf("[%zu/%zu] %s: test error %.2f%%, %.0f img/s, SyncBN comm %.3f ms/step, %.1f s",
                i + 1, runs.size(), name.c_str(), 100.0 * result.test_error, result.images_per_s,
                result.sync_bn_comm_ms, wall);
    if (remaining > 0)
      std::printf(" (ETA %s)", format_duration(spent / static_cast<double>(launched) *
                                               static_cast<double>(remaining))
                                   .c_str());
    std::printf("\n");
    std::fflush(stdout);
  }
  write_outputs(study, shown, dir);
  std::printf(
      "study: done, %zu runs in %s; wrote results.md, error_vs_batch.svg, "
      "error_vs_batch.png\n",
      shown.size(), csv_path.c_str());
}

}  // namespace syncbn::train

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "study/study.h"
#include "study/text.h"

namespace syncbn::study {
namespace {

namespace fs = std::filesystem;

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

}  // namespace

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
    study.base = train::parse_config(base_text, overrides, study.base_source);
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

}  // namespace syncbn::study

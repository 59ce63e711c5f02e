#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "core/hash.h"

namespace syncbn::train {
namespace {

template <typename E>
using Names = std::initializer_list<std::pair<E, const char*>>;

constexpr Names<Device> kDevices = {{Device::kCpu, "cpu"}, {Device::kCuda, "cuda"}};
constexpr Names<Norm> kNorms = {{Norm::kSyncBn, "syncbn"}, {Norm::kBn, "bn"},
                                {Norm::kGn, "gn"},         {Norm::kLn, "ln"},
                                {Norm::kIn, "in"},         {Norm::kNone, "none"}};
constexpr Names<Stem> kStems = {{Stem::kImageNet, "imagenet"}, {Stem::kCifar, "cifar"}};
constexpr Names<LayerType> kLayerTypes = {
    {LayerType::kConv, "conv"},       {LayerType::kNorm, "norm"}, {LayerType::kRelu, "relu"},
    {LayerType::kMaxPool, "maxpool"}, {LayerType::kGap, "gap"},   {LayerType::kFlatten, "flatten"},
    {LayerType::kLinear, "linear"}};
constexpr Names<optim::ScheduleKind> kSchedules = {{optim::ScheduleKind::kConstant, "constant"},
                                                   {optim::ScheduleKind::kStep, "step"},
                                                   {optim::ScheduleKind::kCosine, "cosine"}};
const std::set<std::string> kPresets = {"small_cnn", "list",     "resnet20", "resnet32", "resnet56",
                                        "resnet110", "resnet18", "resnet34", "resnet50"};

template <typename E>
const char* name_of(E value, Names<E> names) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  SYNCBN_CHECK(false && "an enum value without a config name");
}

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Reads a map node, checking that every key is known; `path` names the map in messages.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string path, std::set<std::string> allowed)
      : node_(node), path_(std::move(path)), allowed_(std::move(allowed)) {
    if (!node_ || node_.IsNull()) return;
    SYNCBN_REQUIRE(node_.IsMap(), where(""), " must be a mapping with keys ", join(allowed_));
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      SYNCBN_REQUIRE(allowed_.count(key), "unknown config key '", where(key),
                     "'; allowed keys here: ", join(allowed_));
    }
  }

  std::string where(const std::string& key) const {
    if (path_.empty()) return key;
    return key.empty() ? path_ : path_ + "." + key;
  }

  YAML::Node child(const std::string& key) const {
    return node_ && node_.IsMap() ? node_[key] : YAML::Node();
  }

  template <typename T>
  void read(const std::string& key, T& out, const char* expected) const {
    const YAML::Node v = child(key);
    if (!v || v.IsNull()) return;
    try {
      SYNCBN_REQUIRE(v.IsScalar(), "config key '", where(key), "' must be ", expected);
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      throw Error(
          str_cat("config key '", where(key), "' must be ", expected, ", got '", v.Scalar(), "'"));
    }
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::set<std::string> allowed_;
};

void require_choice(const std::string& key, const std::string& value,
                    const std::set<std::string>& allowed) {
  SYNCBN_REQUIRE(allowed.count(value), "config key '", key, "' must be one of ", join(allowed),
                 ", got '", value, "'");
}

template <typename E>
E parse_enum(const std::string& key, const std::string& value, Names<E> names) {
  std::set<std::string> allowed;
  for (const auto& [v, name] : names) {
    if (value == name) return v;
    allowed.insert(name);
  }
  require_choice(key, value, allowed);
  SYNCBN_CHECK(false && "require_choice accepted an unknown name");
}

// Reads key (a string, default `fallback`) from `reader` and parses it as one of `names`.
template <typename E>
E read_enum(const MapReader& reader, const std::string& key, E fallback, Names<E> names,
            const char* expected) {
  std::string value = name_of(fallback, names);
  reader.read(key, value, expected);
  return parse_enum(reader.where(key), value, names);
}

void require_range(const std::string& key, double value, double lo, double hi,
                   const char* expected) {
  SYNCBN_REQUIRE(value >= lo && value <= hi, "config key '", key, "' must be ", expected, ", got ",
                 value);
}

// The pairs of keys that exclude each other: setting `key` (to a value other than `keep_if`)
// clears `partner`. A user who sets one of them on the command line means it.
struct ExclusiveKeys {
  const char* key;
  const char* partner;
  const char* keep_if;  // the value of `key` that still uses `partner` ("" = none)
};
constexpr ExclusiveKeys kExclusiveKeys[] = {
    {"train.steps", "train.epochs", ""},
    {"train.epochs", "train.steps", ""},
    {"model.preset", "model.layers", "list"},
};

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    SYNCBN_REQUIRE(!part.empty(), "--set: malformed key '", key, "'");
    parts.push_back(part);
  }
  SYNCBN_REQUIRE(!parts.empty() && key.back() != '.', "--set: malformed key '", key, "'");
  return parts;
}

// The node at `parts` (all but the last created as maps when `create`), or an undefined node.
YAML::Node walk(YAML::Node root, const std::vector<std::string>& parts, const std::string& key,
                bool create) {
  // yaml-cpp nodes are handles: walk with copies that alias the tree.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      if (!create) return YAML::Node(YAML::NodeType::Undefined);
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    SYNCBN_REQUIRE(next.IsMap(), "--set ", key, ": '", parts[i], "' is not a mapping");
    chain.push_back(next);
  }
  return chain.back();
}

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// "a.b.c=value": sets root[a][b][c] to the scalar value (parsed as YAML, so numbers stay numbers),
// and clears the key it excludes (kExclusiveKeys), noting that in `notes`.
void apply_override(YAML::Node& root, const std::string& assignment,
                    std::vector<std::string>& notes) {
  const size_t eq = assignment.find('=');
  SYNCBN_REQUIRE(eq != std::string::npos && eq > 0, "--set expects key=value, got '", assignment,
                 "'");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw Error(str_cat("--set ", key, ": cannot parse the value: ", e.what()));
  }
  const std::vector<std::string> parts = split_key(key);
  walk(root, parts, key, /*create=*/true)[parts.back()] = value;

  for (const ExclusiveKeys& pair : kExclusiveKeys) {
    if (key != pair.key) continue;
    if (*pair.keep_if != '\0' && value.IsScalar() && value.Scalar() == pair.keep_if) continue;
    const std::vector<std::string> partner = split_key(pair.partner);
    YAML::Node parent = walk(root, partner, pair.partner, /*create=*/false);
    if (!parent.IsDefined() || !parent.IsMap()) continue;
    const YAML::Node old = parent[partner.back()];
    if (!old.IsDefined() || old.IsNull()) continue;
    // A zero is how the canonical YAML (to_yaml) spells "not set": nothing to replace.
    if (old.IsScalar() && old.Scalar() == "0") continue;
    notes.push_back(str_cat("--set ", key, "=", scalar_text(value), " replaces ", pair.partner, "=",
                            scalar_text(old), " (", pair.partner, " cleared)"));
    parent.remove(partner.back());
  }
}

std::vector<LayerSpec> read_layers(const YAML::Node& node) {
  std::vector<LayerSpec> layers;
  if (!node || node.IsNull()) return layers;
  SYNCBN_REQUIRE(node.IsSequence(), "config key 'model.layers' must be a list of layers");
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string path = "model.layers[" + std::to_string(i) + "]";
    MapReader r(node[i], path, {"type", "out", "kernel", "stride", "padding"});
    LayerSpec spec;
    SYNCBN_REQUIRE(r.child("type").IsDefined(), "config key '", path,
                   ".type' is missing; every layer needs a type");
    spec.type = read_enum(r, "type", LayerType::kConv, kLayerTypes, "a layer type");
    r.read("out", spec.out, "an integer");
    if (spec.type == LayerType::kMaxPool) spec.kernel = 2, spec.stride = 2;
    r.read("kernel", spec.kernel, "an integer");
    r.read("stride", spec.stride, "an integer");
    r.read("padding", spec.padding, "an integer");
    if (spec.type == LayerType::kConv || spec.type == LayerType::kLinear)
      require_range(path + ".out", static_cast<double>(spec.out), 1, 1 << 16, "in [1, 65536]");
    require_range(path + ".kernel", static_cast<double>(spec.kernel), 1, 15, "in [1, 15]");
    require_range(path + ".stride", static_cast<double>(spec.stride), 1, 15, "in [1, 15]");
    require_range(path + ".padding", static_cast<double>(spec.padding), 0, 15, "in [0, 15]");
    layers.push_back(spec);
  }
  return layers;
}

}  // namespace

const char* to_string(Device device) { return name_of(device, kDevices); }
const char* to_string(Norm norm) { return name_of(norm, kNorms); }
const char* to_string(Stem stem) { return name_of(stem, kStems); }
const char* to_string(LayerType type) { return name_of(type, kLayerTypes); }
Norm parse_norm(const std::string& value, const std::string& key) {
  return parse_enum(key, value, kNorms);
}
bool is_model_preset(const std::string& name) { return kPresets.count(name) > 0; }

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(str_cat(source, ": not valid YAML: ", e.what()));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  Config c;
  for (const std::string& o : overrides) apply_override(root, o, c.notes);

  MapReader top(root, "", {"seed", "device", "data", "model", "train", "checkpoint"});
  top.read("seed", c.seed, "a non-negative integer");
  c.device = read_enum(top, "device", c.device, kDevices, "a device name");

  MapReader data(top.child("data"), "data",
                 {"format", "dir", "train_limit", "test_limit", "shuffle", "augment"});
  data.read("format", c.data.format, "a dataset format");
  require_choice("data.format", c.data.format, {"cifar10", "fashion_mnist"});
  const YAML::Node dir = data.child("dir");
  // The default dir is where Debian's dataset-fashion-mnist puts its files; CIFAR-10 has no
  // standard place.
  SYNCBN_REQUIRE(c.data.format != "cifar10" || (dir && !dir.IsNull()),
                 "config key 'data.dir' must be set with data.format: cifar10, to the "
                 "cifar-10-batches-bin directory of CIFAR-10's binary version (data_batch_1.bin .. "
                 "data_batch_5.bin, test_batch.bin)");
  data.read("dir", c.data.dir, "a directory path");
  data.read("train_limit", c.data.train_limit, "an integer (0 = all)");
  data.read("test_limit", c.data.test_limit, "an integer (0 = all)");
  data.read("shuffle", c.data.shuffle, "true or false");
  data.read("augment", c.data.augment, "true or false");
  require_range("data.train_limit", static_cast<double>(c.data.train_limit), 0, 1e9, ">= 0");
  require_range("data.test_limit", static_cast<double>(c.data.test_limit), 0, 1e9, ">= 0");

  MapReader model(top.child("model"), "model",
                  {"preset", "norm", "stem", "bn_group_size", "gn_groups", "layers"});
  model.read("preset", c.model.preset, "a preset name");
  c.model.norm = read_enum(model, "norm", c.model.norm, kNorms, "a norm name");
  c.model.stem = read_enum(model, "stem", c.model.stem, kStems, "a stem name");
  model.read("bn_group_size", c.model.bn_group_size, "an integer (0 = the whole world)");
  model.read("gn_groups", c.model.gn_groups, "a positive integer");
  c.model.layers = read_layers(model.child("layers"));
  require_choice("model.preset", c.model.preset, kPresets);
  require_range("model.bn_group_size", static_cast<double>(c.model.bn_group_size), 0, 1 << 20,
                ">= 0 (0 = the whole world)");
  require_range("model.gn_groups", static_cast<double>(c.model.gn_groups), 1, 1 << 16, ">= 1");
  SYNCBN_REQUIRE(c.model.preset == "list" || c.model.layers.empty(),
                 "config key 'model.layers' is only used with model.preset: list");
  SYNCBN_REQUIRE(c.model.preset != "list" || !c.model.layers.empty(),
                 "config key 'model.layers' must list the layers when model.preset is list");

  MapReader t(top.child("train"), "train",
              {"per_rank_batch", "epochs", "steps", "lr", "momentum", "nesterov", "weight_decay",
               "schedule", "warmup_steps", "step_size", "gamma", "min_lr", "eval_every_epochs",
               "log_every", "threads"});
  t.read("per_rank_batch", c.train.per_rank_batch, "a positive integer");
  t.read("epochs", c.train.epochs, "an integer");
  t.read("steps", c.train.steps, "an integer");
  t.read("lr", c.train.lr, "a number");
  t.read("momentum", c.train.momentum, "a number");
  t.read("nesterov", c.train.nesterov, "true or false");
  t.read("weight_decay", c.train.weight_decay, "a number");
  c.train.schedule = read_enum(t, "schedule", c.train.schedule, kSchedules, "a schedule name");
  t.read("warmup_steps", c.train.warmup_steps, "an integer");
  t.read("step_size", c.train.step_size, "a positive integer");
  t.read("gamma", c.train.gamma, "a number");
  t.read("min_lr", c.train.min_lr, "a number");
  t.read("eval_every_epochs", c.train.eval_every_epochs, "an integer (0 = only at the end)");
  t.read("log_every", c.train.log_every, "a positive integer");
  t.read("threads", c.train.threads, "a positive integer");
  require_range("train.per_rank_batch", static_cast<double>(c.train.per_rank_batch), 1, 1 << 16,
                "in [1, 65536]");
  require_range("train.epochs", static_cast<double>(c.train.epochs), 0, 1e6, ">= 0");
  require_range("train.steps", static_cast<double>(c.train.steps), 0, 1e9, ">= 0");
  SYNCBN_REQUIRE((c.train.epochs > 0) != (c.train.steps > 0),
                 "config: set exactly one of train.epochs and train.steps to a positive value "
                 "(got epochs=",
                 c.train.epochs, ", steps=", c.train.steps,
                 "); `--set train.steps=N` or `--set train.epochs=N` chooses one and clears the "
                 "other");
  require_range("train.lr", c.train.lr, 0, 1e3, "a non-negative number");
  require_range("train.momentum", c.train.momentum, 0, 1, "in [0, 1]");
  require_range("train.weight_decay", c.train.weight_decay, 0, 1, "in [0, 1]");
  require_range("train.warmup_steps", static_cast<double>(c.train.warmup_steps), 0, 1e9, ">= 0");
  require_range("train.step_size", static_cast<double>(c.train.step_size), 1, 1e9, ">= 1");
  require_range("train.gamma", c.train.gamma, 0, 1, "in [0, 1]");
  require_range("train.min_lr", c.train.min_lr, 0, 1e3, "a non-negative number");
  require_range("train.eval_every_epochs", static_cast<double>(c.train.eval_every_epochs), 0, 1e6,
                ">= 0");
  require_range("train.log_every", static_cast<double>(c.train.log_every), 1, 1e9, ">= 1");
  require_range("train.threads", static_cast<double>(c.train.threads), 1, 256, "in [1, 256]");
  SYNCBN_REQUIRE(!c.train.nesterov || c.train.momentum > 0,
                 "config: train.nesterov needs train.momentum > 0");

  MapReader ck(top.child("checkpoint"), "checkpoint", {"dir", "every_steps", "keep_last"});
  ck.read("dir", c.checkpoint.dir, "a directory path");
  ck.read("every_steps", c.checkpoint.every_steps, "an integer (0 = only at the end)");
  ck.read("keep_last", c.checkpoint.keep_last, "a positive integer");
  require_range("checkpoint.every_steps", static_cast<double>(c.checkpoint.every_steps), 0, 1e9,
                ">= 0");
  require_range("checkpoint.keep_last", static_cast<double>(c.checkpoint.keep_last), 1, 1e6,
                ">= 1");
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  SYNCBN_REQUIRE(in.good(), "cannot read config file '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), overrides, path);
}

std::string to_yaml(const Config& c) {
  YAML::Emitter out;
  out.SetDoublePrecision(17);
  out << YAML::BeginMap;
  out << YAML::Key << "seed" << YAML::Value << c.seed;
  out << YAML::Key << "device" << YAML::Value << to_string(c.device);
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "format" << YAML::Value << c.data.format;
  out << YAML::Key << "dir" << YAML::Value << c.data.dir;
  out << YAML::Key << "train_limit" << YAML::Value << c.data.train_limit;
  out << YAML::Key << "test_limit" << YAML::Value << c.data.test_limit;
  out << YAML::Key << "shuffle" << YAML::Value << c.data.shuffle;
  out << YAML::Key << "augment" << YAML::Value << c.data.augment;
  out << YAML::EndMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "preset" << YAML::Value << c.model.preset;
  out << YAML::Key << "norm" << YAML::Value << to_string(c.model.norm);
  out << YAML::Key << "stem" << YAML::Value << to_string(c.model.stem);
  out << YAML::Key << "bn_group_size" << YAML::Value << c.model.bn_group_size;
  out << YAML::Key << "gn_groups" << YAML::Value << c.model.gn_groups;
  if (!c.model.layers.empty()) {
    out << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
    for (const LayerSpec& l : c.model.layers) {
      out << YAML::Flow << YAML::BeginMap;
      out << YAML::Key << "type" << YAML::Value << to_string(l.type);
      out << YAML::Key << "out" << YAML::Value << l.out;
      out << YAML::Key << "kernel" << YAML::Value << l.kernel;
      out << YAML::Key << "stride" << YAML::Value << l.stride;
      out << YAML::Key << "padding" << YAML::Value << l.padding;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  const Config::Train& t = c.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "per_rank_batch" << YAML::Value << t.per_rank_batch;
  out << YAML::Key << "epochs" << YAML::Value << t.epochs;
  out << YAML::Key << "steps" << YAML::Value << t.steps;
  out << YAML::Key << "lr" << YAML::Value << t.lr;
  out << YAML::Key << "momentum" << YAML::Value << t.momentum;
  out << YAML::Key << "nesterov" << YAML::Value << t.nesterov;
  out << YAML::Key << "weight_decay" << YAML::Value << t.weight_decay;
  out << YAML::Key << "schedule" << YAML::Value << optim::to_string(t.schedule);
  out << YAML::Key << "warmup_steps" << YAML::Value << t.warmup_steps;
  out << YAML::Key << "step_size" << YAML::Value << t.step_size;
  out << YAML::Key << "gamma" << YAML::Value << t.gamma;
  out << YAML::Key << "min_lr" << YAML::Value << t.min_lr;
  out << YAML::Key << "eval_every_epochs" << YAML::Value << t.eval_every_epochs;
  out << YAML::Key << "log_every" << YAML::Value << t.log_every;
  out << YAML::Key << "threads" << YAML::Value << t.threads;
  out << YAML::EndMap;
  out << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "dir" << YAML::Value << c.checkpoint.dir;
  out << YAML::Key << "every_steps" << YAML::Value << c.checkpoint.every_steps;
  out << YAML::Key << "keep_last" << YAML::Value << c.checkpoint.keep_last;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

uint64_t config_hash(const Config& config) { return fnv1a(to_yaml(config)); }

}  // namespace syncbn::train

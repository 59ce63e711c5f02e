#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "ckpt/safetensors.h"
#include "ckpt/state_dict.h"
#include "core/error.h"
#include "core/escape.h"
#include "core/hash.h"

namespace syncbn::train {
namespace {

namespace fs = std::filesystem;

uint64_t fnv1a(const std::vector<ckpt::TensorEntry>& entries) {
  uint64_t h = kFnv1aOffset;
  for (const ckpt::TensorEntry& e : entries) {
    h = syncbn::fnv1a(e.name, h);
    h = syncbn::fnv1a({reinterpret_cast<const char*>(e.bytes.data()), e.bytes.size()}, h);
  }
  return h;
}

std::vector<ckpt::StateSlot> model_slots(Sequential& model) {
  std::vector<ckpt::StateSlot> slots;
  for (size_t i = 0; i < model.size(); ++i)
    ckpt::append_layer_state("model." + model.layer_name(i), model.layer(i), slots);
  return slots;
}

const std::string& meta(const ckpt::Metadata& m, const std::string& key,
                        const std::string& source) {
  auto it = m.find(key);
  SYNCBN_REQUIRE(it != m.end(), source, ": not a syncbn checkpoint (metadata '", key,
                 "' is missing)");
  return it->second;
}

int64_t meta_int(const ckpt::Metadata& m, const std::string& key, const std::string& source) {
  const std::string& v = meta(m, key, source);
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    SYNCBN_REQUIRE(used == v.size(), "");
    return x;
  } catch (const std::exception&) {
    throw Error(str_cat(source, ": metadata '", key, "' is not an integer: '", v, "'"));
  }
}

// What a resumed run must share with the run that wrote the checkpoint.
void check_compatible(const Config& saved, const Config& now, int64_t saved_global_batch,
                      int64_t now_global_batch, const std::string& source) {
  auto differ = [&](const char* what, const std::string& a, const std::string& b) {
    SYNCBN_REQUIRE(a == b, "cannot resume from ", source, ": ", what, " differs (checkpoint: ", a,
                   ", now: ", b, ")");
  };
  differ("model.preset", saved.model.preset, now.model.preset);
  differ("model.norm", to_string(saved.model.norm), to_string(now.model.norm));
  differ("model.gn_groups", std::to_string(saved.model.gn_groups),
         std::to_string(now.model.gn_groups));
  Config a = saved, b = now;  // compare the layer lists through their canonical form
  a.train = b.train = Config::Train{};
  a.data = b.data = Config::Data{};
  a.checkpoint = b.checkpoint = Config::Checkpoint{};  // where and how often to save may change
  a.seed = b.seed = 0;
  a.model.bn_group_size = b.model.bn_group_size = 0;
  differ("model (layers)", to_yaml(a), to_yaml(b));
  differ("seed", std::to_string(saved.seed), std::to_string(now.seed));
  differ("data.format", saved.data.format, now.data.format);
  differ("data.dir", saved.data.dir, now.data.dir);
  differ("data.train_limit", std::to_string(saved.data.train_limit),
         std::to_string(now.data.train_limit));
  differ("data.shuffle", saved.data.shuffle ? "true" : "false",
         now.data.shuffle ? "true" : "false");
  differ("data.augment", saved.data.augment ? "true" : "false",
         now.data.augment ? "true" : "false");
  differ("the global batch (world size × train.per_rank_batch)", std::to_string(saved_global_batch),
         std::to_string(now_global_batch));
}

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  SYNCBN_REQUIRE(fd >= 0, "cannot open '", path, "' to fsync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  SYNCBN_REQUIRE(rc == 0, "fsync of '", path, "' failed");
}

}  // namespace

std::vector<uint8_t> encode_checkpoint(const Config& config, int world_size, int64_t step,
                                       int64_t steps_per_epoch, Sequential& model,
                                       const optim::SGD& sgd) {
  std::vector<ckpt::TensorEntry> entries = ckpt::state_entries(model_slots(model));
  const optim::SgdState& state = sgd.state();
  if (state.momentum_initialized) {
    const std::vector<std::string> names = sgd.param_names();
    for (size_t k = 0; k < names.size(); ++k)
      entries.push_back(ckpt::f32_entry("optim.momentum." + names[k], state.momentum_buffers[k]));
  }
  const ckpt::Metadata metadata = {
      {"format_version", std::to_string(kCheckpointFormatVersion)},
      {"step", std::to_string(step)},
      {"epoch", std::to_string(step / steps_per_epoch)},
      {"step_in_epoch", std::to_string(step % steps_per_epoch)},
      {"global_batch", std::to_string(world_size * config.train.per_rank_batch)},
      {"world_size", std::to_string(world_size)},
      {"seed", std::to_string(config.seed)},
      {"config_hash", std::to_string(config_hash(config))},
      {"config", to_yaml(config)},
      {"optimizer_steps", std::to_string(state.step_count)},
      {"momentum_initialized", state.momentum_initialized ? "1" : "0"},
      {"payload_fnv1a64", std::to_string(fnv1a(entries))},
  };
  return ckpt::encode_safetensors(entries, metadata);
}

int64_t restore_checkpoint(const std::vector<uint8_t>& payload, const std::string& source,
                           const Config& config, int world_size, Sequential& model,
                           optim::SGD& sgd) {
  ckpt::Metadata m;
  std::vector<ckpt::TensorEntry> entries = ckpt::decode_safetensors(payload, source, &m);
  SYNCBN_REQUIRE(meta_int(m, "format_version", source) == kCheckpointFormatVersion, source,
                 ": checkpoint format version ", meta(m, "format_version", source), ", expected ",
                 kCheckpointFormatVersion);
  SYNCBN_REQUIRE(meta(m, "payload_fnv1a64", source) == std::to_string(fnv1a(entries)), source,
                 ": checksum mismatch: the checkpoint is damaged");
  const Config saved = parse_config(meta(m, "config", source), {}, source + " (saved config)");
  check_compatible(saved, config, meta_int(m, "global_batch", source),
                   world_size * config.train.per_rank_batch, source);
  const int64_t step = meta_int(m, "step", source);

  // Split model and optimizer entries; load the model strictly (all or nothing).
  std::vector<ckpt::TensorEntry> model_entries;
  std::map<std::string, const ckpt::TensorEntry*> momentum;
  for (const ckpt::TensorEntry& e : entries) {
    if (e.name.rfind("optim.momentum.", 0) == 0) {
      momentum[e.name.substr(15)] = &e;
    } else {
      model_entries.push_back(e);
    }
  }
  optim::SgdState state;
  state.step_count = meta_int(m, "optimizer_steps", source);
  state.momentum_initialized = meta(m, "momentum_initialized", source) == "1";
  if (state.momentum_initialized) {
    for (const std::string& name : sgd.param_names()) {
      auto it = momentum.find(name);
      SYNCBN_REQUIRE(it != momentum.end(), source, ": momentum buffer for '", name, "' is missing");
      state.momentum_buffers.push_back(ckpt::to_tensor(*it->second));
    }
  }
  ckpt::load_state(model_entries, model_slots(model), source, /*strict=*/true);
  sgd.load_state(std::move(state));
  return step;
}

bool verify_checkpoint(std::span<const uint8_t> payload, const std::string& source,
                       std::string* problem) {
  try {
    ckpt::Metadata m;
    const std::vector<ckpt::TensorEntry> entries = ckpt::decode_safetensors(payload, source, &m);
    SYNCBN_REQUIRE(meta_int(m, "format_version", source) == kCheckpointFormatVersion, source,
                   ": checkpoint format version ", meta(m, "format_version", source), ", expected ",
                   kCheckpointFormatVersion);
    SYNCBN_REQUIRE(meta(m, "payload_fnv1a64", source) == std::to_string(fnv1a(entries)), source,
                   ": checksum mismatch: the checkpoint is damaged");
    for (const char* key : {"step", "epoch", "step_in_epoch", "global_batch", "world_size", "seed",
                            "optimizer_steps"}) {
      SYNCBN_REQUIRE(meta_int(m, key, source) >= 0, source, ": metadata '", key, "' is negative");
    }
    const Config saved = parse_config(meta(m, "config", source), {}, source + " (saved config)");
    SYNCBN_REQUIRE(meta(m, "config_hash", source) == std::to_string(config_hash(saved)), source,
                   ": metadata 'config_hash' is not the hash of its 'config'");
    return true;
  } catch (const Error& e) {
    *problem = e.what();
    return false;
  }
}

int64_t checkpoint_step(std::span<const uint8_t> payload, const std::string& source) {
  ckpt::Metadata m;
  ckpt::decode_safetensors(payload, source, &m);
  return meta_int(m, "step", source);
}

CheckpointDir::CheckpointDir(std::string dir, int64_t keep_last)
    : dir_(std::move(dir)), keep_last_(std::max<int64_t>(1, keep_last)) {}

void CheckpointDir::save(int64_t step, const std::vector<uint8_t>& payload) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SYNCBN_REQUIRE(!ec, "cannot create the checkpoint directory '", dir_, "': ", ec.message());
  char name[64];
  std::snprintf(name, sizeof(name), "step-%012lld.safetensors", static_cast<long long>(step));
  const std::string final_path = (fs::path(dir_) / name).string();
  const std::string temp_path = final_path + ".tmp";
  {
    std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(payload.data()),
              static_cast<std::streamsize>(payload.size()));
    SYNCBN_REQUIRE(out.good(), "cannot write the checkpoint '", temp_path, "'");
  }
  fsync_path(temp_path, O_RDONLY);
  fs::rename(temp_path, final_path, ec);
  SYNCBN_REQUIRE(!ec, "cannot rename '", temp_path, "': ", ec.message());
  fsync_path(dir_, O_RDONLY | O_DIRECTORY);

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < files.size(); ++i)
    fs::remove(files[i], ec);
}

std::optional<std::vector<uint8_t>> CheckpointDir::newest_valid(std::string* source) const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return std::nullopt;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir_))
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  std::sort(files.rbegin(), files.rend());
  for (const fs::path& path : files) {
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    std::string problem;
    if (verify_checkpoint(bytes, path.string(), &problem)) {
      if (source) *source = path.string();
      return bytes;
    }
    std::fprintf(stderr, "syncbn: skipping damaged checkpoint: %s\n",
                 escape_control(problem).c_str());
  }
  return std::nullopt;
}

}  // namespace syncbn::train

// `syncbn ckpt list|inspect|export|push`: training checkpoints, at the coordinator or in files.
//
// A checkpoint read from a file is verified exactly as one from the coordinator before anything
// is printed or exported (train::verify_checkpoint: strict safetensors, the payload checksum,
// complete syncbn metadata); every string that came from the file or the network is printed
// with its control characters escaped. Exit codes: 0 done, 1 the coordinator failed or refused,
// 2 bad usage or a bad file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/safetensors.h"
#include "cli/commands.h"
#include "coordinator/client.h"
#include "coordinator/crc32c.h"
#include "coordinator/posix_file.h"
#include "coordinator/spill_dir.h"
#include "coordinator/token.h"
#include "core/error.h"
#include "core/escape.h"
#include "train/checkpoint.h"

namespace {

namespace coord = syncbn::coordinator;
using syncbn::escape_control;

constexpr const char* kCkptUsage =
    "usage: syncbn ckpt list    --coordinator ADDR --run ID\n"
    "       syncbn ckpt inspect (--coordinator ADDR --run ID [--step N] | --file CKPT)\n"
    "       syncbn ckpt export  (--coordinator ADDR --run ID [--step N] | --file CKPT) --out W\n"
    "       syncbn ckpt push    --coordinator ADDR --run ID DIR\n"
    "\n"
    "  list     the run's committed checkpoints, newest first\n"
    "  inspect  a checkpoint's metadata, config and tensors (verified first)\n"
    "  export   a checkpoint's model weights as safetensors with PyTorch state-dict names,\n"
    "           like `syncbn train --export-weights` (verified first)\n"
    "  push     uploads the checkpoints a run kept in its spill directory DIR while the\n"
    "           coordinator was unreachable, oldest first (the files are kept)\n"
    "\n"
    "options:\n"
    "  --coordinator ADDR  host:port of the coordinator\n"
    "  --run ID            the run id\n"
    "  --step N            a given step instead of the newest valid checkpoint\n"
    "  --file CKPT         a checkpoint file instead of the coordinator\n"
    "  --out W             where export writes the weights\n"
    "  --token-file F      the coordinator's token (a 0600 file)\n"
    "  -h, --help          this help\n"
    "\n"
    "environment:\n"
    "  SYNCBN_COORDINATOR             ADDR when --coordinator is not given\n"
    "  SYNCBN_COORDINATOR_TOKEN_FILE  F when --token-file is not given\n"
    "\n"
    "exit status: 0 done, 1 the coordinator failed or refused, 2 bad usage or a bad file\n";

// A usage or input problem: exit 2.
class UsageError : public syncbn::Error {
 public:
  using Error::Error;
};

struct CkptArgs {
  std::string action, coordinator, run, file, out, token_file, dir;
  std::optional<int64_t> step;
};

int64_t parse_step(const std::string& value) {
  size_t used = 0;
  long long step = -1;
  try {
    step = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || step < 0) {
    throw UsageError("--step expects a non-negative integer, got '" + escape_control(value) + "'");
  }
  return step;
}

CkptArgs parse(int argc, char** argv) {
  CkptArgs a;
  if (argc < 3) throw UsageError(std::string("syncbn ckpt needs an action\n") + kCkptUsage);
  a.action = argv[2];
  if (a.action != "list" && a.action != "inspect" && a.action != "export" && a.action != "push") {
    throw UsageError("unknown ckpt action '" + escape_control(a.action) +
                     "'; expected list, inspect, export or push\n" + kCkptUsage);
  }
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (a.action == "push" && flag.rfind("--", 0) != 0) {
      if (!a.dir.empty()) throw UsageError("syncbn ckpt push takes one directory");
      a.dir = flag;
      continue;
    }
    if (i + 1 >= argc) throw UsageError("option " + escape_control(flag) + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--coordinator") {
      a.coordinator = value;
    } else if (flag == "--run") {
      a.run = value;
    } else if (flag == "--file") {
      a.file = value;
    } else if (flag == "--out") {
      a.out = value;
    } else if (flag == "--token-file") {
      a.token_file = value;
    } else if (flag == "--step") {
      a.step = parse_step(value);
    } else {
      throw UsageError("unknown option '" + escape_control(flag) + "' for syncbn ckpt " + a.action +
                       "\n" + kCkptUsage);
    }
  }
  if (a.coordinator.empty() && a.file.empty())
    if (const char* env = std::getenv("SYNCBN_COORDINATOR")) a.coordinator = env;
  if (a.token_file.empty())
    if (const char* env = std::getenv("SYNCBN_COORDINATOR_TOKEN_FILE")) a.token_file = env;
  if (a.action == "export" && a.out.empty()) throw UsageError("syncbn ckpt export needs --out W");
  if (a.action == "push" && a.dir.empty())
    throw UsageError("syncbn ckpt push needs the spill directory DIR");
  if ((a.action == "list" || a.action == "push") && (a.coordinator.empty() || a.run.empty()))
    throw UsageError("syncbn ckpt " + a.action + " needs --coordinator ADDR --run ID");
  if (a.file.empty() && (a.coordinator.empty() || a.run.empty()))
    throw UsageError("syncbn ckpt " + a.action +
                     " needs --file CKPT or --coordinator ADDR --run ID");
  return a;
}

coord::Client make_client(const CkptArgs& a) {
  coord::ClientOptions options;
  options.address = a.coordinator;
  options.unavailable_limit = std::chrono::milliseconds(10'000);
  if (!a.token_file.empty()) options.token = coord::read_token_file(a.token_file);
  return coord::Client(options);
}

// The whole file, refused before reading when it is not a regular file or larger than any
// checkpoint the coordinator accepts.
std::vector<uint8_t> read_checkpoint_file(const std::string& path) {
  syncbn::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    throw UsageError(coord::errno_message("cannot read the checkpoint file", path, errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw UsageError("the checkpoint file '" + escape_control(path) +
                     "' is not a regular file (a directory or a device?)");
  }
  if (st.st_size > coord::kDefaultMaxCheckpointBytes) {
    throw UsageError(syncbn::str_cat("the checkpoint file '", escape_control(path), "' has ",
                                     st.st_size, " bytes; a checkpoint has at most ",
                                     coord::kDefaultMaxCheckpointBytes));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  const int64_t got = coord::read_at(fd.get(), bytes.data(), bytes.size(), 0);
  if (got != st.st_size) {
    throw UsageError(got < 0 ? coord::errno_message("cannot read", path, static_cast<int>(-got))
                             : "the checkpoint file '" + escape_control(path) + "' changed size");
  }
  return bytes;
}

std::vector<uint8_t> fetch(const CkptArgs& a, std::string* source) {
  std::vector<uint8_t> bytes;
  if (!a.file.empty()) {
    bytes = read_checkpoint_file(a.file);
    *source = a.file;
  } else {
    auto client = make_client(a);
    auto c = client.get_checkpoint(a.run, a.step);
    SYNCBN_REQUIRE(c.has_value(), "run '", a.run, "' at ", a.coordinator, " has no checkpoint",
                   a.step ? " at step " + std::to_string(*a.step) : std::string());
    *source = "run '" + a.run + "' step " + std::to_string(c->meta.step);
    bytes.assign(c->data.begin(), c->data.end());
  }
  std::string problem;
  if (!syncbn::train::verify_checkpoint(bytes, *source, &problem)) {
    throw UsageError("refusing " + escape_control(*source) + ": " + escape_control(problem));
  }
  return bytes;
}

int list(const CkptArgs& a) {
  auto client = make_client(a);
  const auto checkpoints = client.list_checkpoints(a.run);
  std::printf("%-10s %-11s %-12s %-10s %s\n", "step", "generation", "bytes", "world", "crc32c");
  for (const auto& m : checkpoints)
    std::printf("%-10lld %-11lld %-12lld %-10d %08x\n", static_cast<long long>(m.step),
                static_cast<long long>(m.generation), static_cast<long long>(m.size_bytes),
                m.world_size, m.crc32c);
  return 0;
}

int inspect(const std::string& source, const std::vector<uint8_t>& bytes) {
  syncbn::ckpt::Metadata metadata;
  const auto entries = syncbn::ckpt::decode_safetensors(bytes, source, &metadata);
  std::printf("%s: %zu bytes, %zu tensors\n", escape_control(source).c_str(), bytes.size(),
              entries.size());
  for (const auto& [key, value] : metadata)
    if (key != "config")
      std::printf("  %s: %s\n", escape_control(key).c_str(), escape_control(value).c_str());
  if (auto it = metadata.find("config"); it != metadata.end()) {
    std::printf("config:\n");
    size_t begin = 0;
    while (begin < it->second.size()) {
      size_t end = it->second.find('\n', begin);
      if (end == std::string::npos) end = it->second.size();
      std::printf("%s\n", escape_control(it->second.substr(begin, end - begin)).c_str());
      begin = end + 1;
    }
  }
  for (const auto& e : entries) {
    std::string shape = "[";
    for (size_t i = 0; i < e.shape.size(); ++i) {
      if (i > 0) shape += ", ";
      shape += std::to_string(e.shape[i]);
    }
    std::printf("  %-40s %s %s]\n", escape_control(e.name).c_str(),
                syncbn::ckpt::to_string(e.dtype), shape.c_str());
  }
  return 0;
}

int export_weights(const CkptArgs& a, const std::string& source,
                   const std::vector<uint8_t>& bytes) {
  auto entries = syncbn::ckpt::decode_safetensors(bytes, source, nullptr);
  std::vector<syncbn::ckpt::TensorEntry> weights;
  for (auto& e : entries) {
    if (e.name.rfind("model.", 0) != 0) continue;
    e.name = e.name.substr(6);
    weights.push_back(std::move(e));
  }
  if (weights.empty()) throw UsageError(escape_control(source) + ": no model weights in it");
  syncbn::ckpt::write_safetensors(a.out, weights, {{"format", "pt"}});
  std::printf("wrote %zu tensors from %s to %s\n", weights.size(), escape_control(source).c_str(),
              escape_control(a.out).c_str());
  return 0;
}

// Uploads DIR's checkpoints oldest first, as the run's current generation. A step the
// coordinator already holds with the same bytes counts as pushed.
int push(const CkptArgs& a) {
  const coord::SpillDir spill(a.dir, coord::kMaxKeepLast);
  const std::vector<coord::SpillDir::Entry> entries = spill.list();
  if (entries.empty())
    throw UsageError("no checkpoint files (step-*.safetensors) in '" + escape_control(a.dir) + "'");
  auto client = make_client(a);
  const std::vector<coord::RunStatus> runs = client.get_run_status(a.run);
  SYNCBN_REQUIRE(runs.size() == 1, "run '", a.run, "' is unknown at ", a.coordinator);
  const coord::RunStatus& run = runs[0];
  int refused = 0;
  for (const coord::SpillDir::Entry& entry : entries) {
    std::string problem;
    const std::optional<std::string> data = spill.read(entry, &problem);
    const std::vector<uint8_t> bytes =
        data ? std::vector<uint8_t>(data->begin(), data->end()) : std::vector<uint8_t>();
    if (!data || !syncbn::train::verify_checkpoint(bytes, entry.path, &problem)) {
      std::fprintf(stderr, "syncbn ckpt push: skipping %s\n", escape_control(problem).c_str());
      ++refused;
      continue;
    }
    coord::CheckpointMeta meta;
    meta.run_id = a.run;
    meta.step = entry.step;
    meta.generation = run.generation;
    meta.config_hash = run.config_hash;
    meta.world_size = run.world_size;
    meta.format_version = syncbn::train::kCheckpointFormatVersion;
    try {
      client.put_checkpoint(*data, meta);
      std::printf("pushed step %lld (%zu bytes) to run '%s' at %s\n",
                  static_cast<long long>(entry.step), data->size(), a.run.c_str(),
                  a.coordinator.c_str());
    } catch (const coord::ClientError& e) {
      bool same = false;
      if (e.code() == coord::Code::kAlreadyExists)
        for (const auto& c : client.list_checkpoints(a.run))
          same = same || (c.step == entry.step && c.crc32c == entry.crc32c);
      if (!same) throw;
      std::printf("step %lld is already committed with the same bytes\n",
                  static_cast<long long>(entry.step));
    }
  }
  return refused == 0 ? 0 : 2;
}

}  // namespace

int ckpt_command(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help" || (i == 2 && arg == "help")) {
      std::fputs(kCkptUsage, stdout);
      return 0;
    }
  }
  try {
    const CkptArgs a = parse(argc, argv);
    if (a.action == "list") return list(a);
    if (a.action == "push") return push(a);
    std::string source;
    const std::vector<uint8_t> bytes = fetch(a, &source);
    if (a.action == "inspect") return inspect(source, bytes);
    return export_weights(a, source, bytes);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "syncbn ckpt: error: %s\n", e.what());
    return 2;
  } catch (const coord::ClientError& e) {
    std::fprintf(stderr, "syncbn ckpt: error: %s\n", escape_control(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "syncbn ckpt: error: %s\n", escape_control(e.what()).c_str());
    return 2;
  }
}

// `syncbn ckpt list|inspect|export`: training checkpoints, from the coordinator or a file.
//
//   syncbn ckpt list    --coordinator ADDR --run ID
//   syncbn ckpt inspect (--coordinator ADDR --run ID [--step N] | --file CKPT)
//   syncbn ckpt export  (--coordinator ADDR --run ID [--step N] | --file CKPT) --out W
//
// export writes the model's weights as safetensors with torch.nn.Sequential names (the
// "model." prefix of the checkpoint dropped), the same format as `syncbn train
// --export-weights`.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/safetensors.h"
#include "cli/commands.h"
#include "coordinator/client.h"
#include "core/error.h"

namespace {

constexpr const char* kCkptUsage =
    "usage: syncbn ckpt list    --coordinator ADDR --run ID\n"
    "       syncbn ckpt inspect (--coordinator ADDR --run ID [--step N] | --file CKPT)\n"
    "       syncbn ckpt export  (--coordinator ADDR --run ID [--step N] | --file CKPT) --out W\n"
    "  (ADDR defaults to $SYNCBN_COORDINATOR; --token-file F for a coordinator that needs one)\n";

struct CkptArgs {
  std::string action, coordinator, run, file, out, token_file;
  std::optional<int64_t> step;
};

CkptArgs parse(int argc, char** argv) {
  CkptArgs a;
  SYNCBN_REQUIRE(argc >= 3, kCkptUsage);
  a.action = argv[2];
  SYNCBN_REQUIRE(a.action == "list" || a.action == "inspect" || a.action == "export",
                 "unknown ckpt action '", a.action, "'; expected list, inspect or export\n",
                 kCkptUsage);
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    SYNCBN_REQUIRE(i + 1 < argc, "option ", flag, " needs a value");
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
      try {
        a.step = std::stoll(value);
      } catch (const std::exception&) {
        throw syncbn::Error("--step expects an integer, got '" + value + "'");
      }
    } else {
      throw syncbn::Error("unknown option '" + flag + "' for syncbn ckpt\n" + kCkptUsage);
    }
  }
  if (a.coordinator.empty() && a.file.empty())
    if (const char* env = std::getenv("SYNCBN_COORDINATOR")) a.coordinator = env;
  SYNCBN_REQUIRE(a.action != "export" || !a.out.empty(), "syncbn ckpt export needs --out W");
  SYNCBN_REQUIRE(a.file.empty() || a.action != "list", "syncbn ckpt list needs a coordinator");
  SYNCBN_REQUIRE(!a.file.empty() || (!a.coordinator.empty() && !a.run.empty()), "syncbn ckpt ",
                 a.action, " needs --file CKPT or --coordinator ADDR --run ID");
  return a;
}

syncbn::coordinator::Client make_client(const CkptArgs& a) {
  syncbn::coordinator::ClientOptions options;
  options.address = a.coordinator;
  if (!a.token_file.empty()) {
    std::ifstream in(a.token_file);
    SYNCBN_REQUIRE(in.good(), "cannot read the token file '", a.token_file, "'");
    std::getline(in, options.token);
  }
  return syncbn::coordinator::Client(options);
}

std::vector<uint8_t> fetch(const CkptArgs& a, std::string* source) {
  if (!a.file.empty()) {
    std::ifstream in(a.file, std::ios::binary);
    SYNCBN_REQUIRE(in.good(), "cannot read the checkpoint file '", a.file, "'");
    *source = a.file;
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  auto client = make_client(a);
  auto c = client.get_checkpoint(a.run, a.step);
  SYNCBN_REQUIRE(c.has_value(), "run '", a.run, "' at ", a.coordinator, " has no checkpoint",
                 a.step ? " at step " + std::to_string(*a.step) : std::string());
  *source = "run '" + a.run + "' step " + std::to_string(c->meta.step);
  return {c->data.begin(), c->data.end()};
}

}  // namespace

int ckpt_command(int argc, char** argv) {
  try {
    const CkptArgs a = parse(argc, argv);
    if (a.action == "list") {
      auto client = make_client(a);
      const auto list = client.list_checkpoints(a.run);
      std::printf("%-10s %-11s %-12s %-10s %s\n", "step", "generation", "bytes", "world", "crc32c");
      for (const auto& m : list)
        std::printf("%-10lld %-11lld %-12lld %-10d %08x\n", static_cast<long long>(m.step),
                    static_cast<long long>(m.generation), static_cast<long long>(m.size_bytes),
                    m.world_size, m.crc32c);
      return 0;
    }
    std::string source;
    const std::vector<uint8_t> bytes = fetch(a, &source);
    syncbn::ckpt::Metadata metadata;
    std::vector<syncbn::ckpt::TensorEntry> entries =
        syncbn::ckpt::decode_safetensors(bytes, source, &metadata);
    if (a.action == "inspect") {
      std::printf("%s: %zu bytes, %zu tensors\n", source.c_str(), bytes.size(), entries.size());
      for (const auto& [key, value] : metadata)
        if (key != "config") std::printf("  %s: %s\n", key.c_str(), value.c_str());
      if (auto it = metadata.find("config"); it != metadata.end())
        std::printf("config:\n%s", it->second.c_str());
      for (const auto& e : entries) {
        std::string shape = "[";
        for (size_t i = 0; i < e.shape.size(); ++i)
          shape += (i ? ", " : "") + std::to_string(e.shape[i]);
        std::printf("  %-40s %s %s\n", e.name.c_str(), syncbn::ckpt::to_string(e.dtype),
                    (shape + "]").c_str());
      }
      return 0;
    }
    std::vector<syncbn::ckpt::TensorEntry> weights;
    for (auto& e : entries) {
      if (e.name.rfind("model.", 0) != 0) continue;
      e.name = e.name.substr(6);
      weights.push_back(std::move(e));
    }
    SYNCBN_REQUIRE(!weights.empty(), source, ": no model weights in this checkpoint");
    syncbn::ckpt::write_safetensors(a.out, weights, {{"format", "pt"}});
    std::printf("wrote %zu tensors from %s to %s\n", weights.size(), source.c_str(), a.out.c_str());
    return 0;
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn ckpt: error: %s\n", e.what());
    return 1;
  }
}

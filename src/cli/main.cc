// The one `syncbn` binary: `syncbn train | coordinator | study | status | ckpt ...`.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "core/error.h"
#include "train/config.h"
#include "train/model.h"
#include "train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: syncbn <command> [options]\n"
    "\n"
    "commands:\n"
    "  train        data-parallel training; run under mpirun:\n"
    "                 mpirun -np 4 syncbn train --config configs/fashion_mnist.yaml\n"
    "  coordinator  the gRPC coordinator: syncbn coordinator --state-dir DIR [--listen ADDR]\n"
    "  status       a coordinator's runs: syncbn status --coordinator ADDR [--run ID]\n"
    "  ckpt         checkpoints: syncbn ckpt list|inspect|export (see syncbn ckpt)\n"
    "  study        the batch-size study: syncbn study --config FILE --out DIR\n"
    "  model        print the configured model as a PyTorch expression:\n"
    "                 syncbn model --config FILE [--set key=value ...] --torch\n"
    "  version      print the version\n"
    "\n"
    "syncbn train --config FILE [--set key=value ...] [--init-from WEIGHTS]\n"
    "             [--export-weights WEIGHTS] [--metrics-out FILE] [--no-progress]\n"
    "             [--checkpoint-dir DIR] [--resume] [--coordinator ADDR] [--run-id ID]\n"
    "             [--generation N] [--token-file F]\n"
    "  (environment: SYNCBN_COORDINATOR, SYNCBN_RUN_ID, SYNCBN_GENERATION,\n"
    "   SYNCBN_COORDINATOR_TOKEN_FILE)\n";

struct TrainArgs {
  std::string config;
  std::string coordinator;  // --coordinator, else $SYNCBN_COORDINATOR
  std::string token_file;   // --token-file, else $SYNCBN_COORDINATOR_TOKEN_FILE
  std::vector<std::string> overrides;
  syncbn::train::TrainOptions options;
};

TrainArgs parse_train_args(int argc, char** argv) {
  TrainArgs args;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      SYNCBN_REQUIRE(i + 1 < argc, "option ", flag, " needs a value");
      return argv[++i];
    };
    if (flag == "--config") {
      args.config = value();
    } else if (flag == "--set") {
      args.overrides.push_back(value());
    } else if (flag == "--init-from") {
      args.options.init_from = value();
    } else if (flag == "--export-weights") {
      args.options.export_weights = value();
    } else if (flag == "--metrics-out") {
      args.options.metrics_out = value();
    } else if (flag == "--coordinator") {
      args.coordinator = value();
    } else if (flag == "--run-id") {
      args.options.run_id = value();
    } else if (flag == "--generation") {
      const std::string g = value();
      try {
        args.options.generation = std::stoll(g);
      } catch (const std::exception&) {
        throw syncbn::Error("--generation expects an integer, got '" + g + "'");
      }
    } else if (flag == "--token-file") {
      args.token_file = value();
    } else if (flag == "--resume") {
      args.options.resume = true;
    } else if (flag == "--checkpoint-dir") {
      args.overrides.push_back("checkpoint.dir=" + value());
    } else if (flag == "--no-progress") {
      args.options.progress = false;
    } else {
      throw syncbn::Error("unknown option '" + flag + "' for syncbn train\n" + kUsage);
    }
  }
  SYNCBN_REQUIRE(!args.config.empty(), "syncbn train needs --config FILE\n", kUsage);
  auto from_env = [](std::string& field, const char* name) {
    const char* v = std::getenv(name);
    if (field.empty() && v != nullptr) field = v;
  };
  from_env(args.coordinator, "SYNCBN_COORDINATOR");
  from_env(args.token_file, "SYNCBN_COORDINATOR_TOKEN_FILE");
  from_env(args.options.run_id, "SYNCBN_RUN_ID");
  if (const char* g = std::getenv("SYNCBN_GENERATION"); g && args.options.generation == 0)
    args.options.generation = std::atoll(g);
  if (args.options.run_id.empty()) args.options.run_id = "default";
  return args;
}

// The token file's first line, without surrounding whitespace.
std::string read_token(const std::string& path) {
  std::ifstream in(path);
  SYNCBN_REQUIRE(in.good(), "cannot read the token file '", path, "'");
  std::string token;
  std::getline(in, token);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  SYNCBN_REQUIRE(!token.empty(), "the token file '", path, "' is empty");
  return token;
}

// Every rank runs this; an error seen by any rank stops every rank with a non-zero exit and a
// message naming what was wrong (no MPI abort, no rank left waiting).
int train_command(int argc, char** argv) {
  syncbn::comm::MpiEnvironment mpi(&argc, &argv);
  int rank = 0;
  try {
    auto world = syncbn::comm::make_communicator("mpi");
    rank = world->rank();
    const TrainArgs args = parse_train_args(argc, argv);
    syncbn::train::Config config;
    syncbn::train::agree(*world,
                         [&] { config = syncbn::train::load_config(args.config, args.overrides); });
    TrainArgs run_args = args;
    if (!args.coordinator.empty()) {
      syncbn::coordinator::ClientOptions client_options;
      client_options.address = args.coordinator;
      syncbn::train::agree(*world, [&] {
        if (!args.token_file.empty()) client_options.token = read_token(args.token_file);
      });
      run_args.options.coordinator = std::make_shared<syncbn::coordinator::Client>(client_options);
      config = syncbn::train::join_run(*run_args.options.coordinator, args.options.run_id,
                                       args.options.generation, config, *world);
    }
    const syncbn::train::TrainResult result =
        syncbn::train::run_training(config, *world, run_args.options);
    if (rank == 0) {
      std::printf("final test accuracy %.2f%% (loss %.4f) after %lld steps\n",
                  100.0 * result.final_accuracy, result.final_loss,
                  static_cast<long long>(result.steps));
    }
    return 0;
  } catch (const syncbn::PeerError& e) {
    std::fprintf(stderr, "syncbn train: [rank %d] stopped: %s\n", rank, e.what());
    return 1;
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn train: [rank %d] error: %s\n", rank, e.what());
    return 1;
  }
}

// `syncbn model --config FILE [--set k=v ...] --torch`: the torch.nn.Sequential whose
// state dict matches our exported weights.
int model_command(int argc, char** argv) {
  try {
    std::string config_path;
    std::vector<std::string> overrides;
    bool torch = false;
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      SYNCBN_REQUIRE(flag == "--torch" || i + 1 < argc, "option ", flag, " needs a value");
      if (flag == "--config") {
        config_path = argv[++i];
      } else if (flag == "--set") {
        overrides.push_back(argv[++i]);
      } else if (flag == "--torch") {
        torch = true;
      } else {
        throw syncbn::Error("unknown option '" + flag + "' for syncbn model\n" + kUsage);
      }
    }
    SYNCBN_REQUIRE(!config_path.empty() && torch, "usage: syncbn model --config FILE --torch");
    const auto config = syncbn::train::load_config(config_path, overrides);
    std::printf("%s\n", syncbn::train::torch_sequential_code(config).c_str());
    return 0;
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn model: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "version" || command == "--version") {
    std::printf("syncbn 0.1.0\n");
    return 0;
  }
  if (command == "train") {
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        std::fputs(kUsage, stdout);
        return 0;
      }
    }
    return train_command(argc, argv);
  }
  if (command == "model") return model_command(argc, argv);
  if (command == "coordinator") return coordinator_command(argc, argv);
  if (command == "status") return status_command(argc, argv);
  if (command == "ckpt") return ckpt_command(argc, argv);
  if (command == "study") return study_command(argc, argv);
  std::fprintf(stderr,
               "syncbn: unknown command '%s'; expected one of: train, coordinator, status, ckpt, "
               "study, model, version\n%s",
               command.c_str(), kUsage);
  return 2;
}

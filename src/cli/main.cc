// The one `syncbn` binary: `syncbn train | coordinator | study | status | ckpt | model ...`.
// Each command has its own usage (`syncbn <command> --help`); a mistake in the command line
// prints it and exits 2, an error while running exits 1.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "coordinator/token.h"
#include "core/error.h"
#include "train/config.h"
#include "train/model.h"
#include "train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: syncbn <command> [options]      (syncbn <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  train        data-parallel training; run under mpirun:\n"
    "                 mpirun -np 4 syncbn train --config configs/fashion_mnist.yaml\n"
    "  coordinator  the gRPC coordinator: syncbn coordinator --state-dir DIR [--listen ADDR]\n"
    "  status       a coordinator's runs: syncbn status --coordinator ADDR [--run ID]\n"
    "  ckpt         checkpoints: syncbn ckpt list|inspect|export|push\n"
    "  study        the batch-size study: syncbn study --config FILE --out DIR\n"
    "  model        print the configured model as PyTorch code: syncbn model --config FILE "
    "--torch\n"
    "  version      print the version\n";

constexpr const char* kTrainUsage =
    "usage: mpirun -np N syncbn train --config FILE [options]\n"
    "\n"
    "Data-parallel training, one process per rank; every rank gets the same options.\n"
    "\n"
    "options:\n"
    "  --config FILE          the YAML run configuration (required; see configs/)\n"
    "  --set KEY=VALUE        override one config key, e.g. --set train.steps=20; repeatable,\n"
    "                         the last one wins; train.steps and train.epochs clear each other\n"
    "  --init-from W          start from these safetensors weights instead of the seed's init\n"
    "  --export-weights W     write the final weights as safetensors (PyTorch state_dict names)\n"
    "  --metrics-out FILE     write metrics as JSON lines (rank 0)\n"
    "  --checkpoint-dir DIR   checkpoint into DIR (the same as --set checkpoint.dir=DIR)\n"
    "  --resume               continue from the newest valid checkpoint\n"
    "  --coordinator ADDR     join the run at this coordinator (host:port or unix:PATH)\n"
    "  --run-id ID            the run's id at the coordinator (default: default)\n"
    "  --generation N         the launch generation (each restart counts up by one)\n"
    "  --token-file F         the coordinator's token (a file of mode 0600)\n"
    "  --no-progress          no progress bar or step lines\n"
    "  -h, --help             print this help and exit\n"
    "\n"
    "environment (read when the option is not given):\n"
    "  SYNCBN_COORDINATOR, SYNCBN_RUN_ID, SYNCBN_GENERATION, SYNCBN_COORDINATOR_TOKEN_FILE\n";

constexpr const char* kModelUsage =
    "usage: syncbn model --config FILE [--set KEY=VALUE ...] --torch\n"
    "\n"
    "Prints the configured model as PyTorch code whose state_dict() has the names and shapes of\n"
    "the weights syncbn exports (--export-weights, syncbn ckpt export).\n"
    "\n"
    "options:\n"
    "  --config FILE      the YAML run configuration (required)\n"
    "  --set KEY=VALUE    override one config key (repeatable)\n"
    "  --torch            print PyTorch code (required: the one output format)\n"
    "  -h, --help         print this help and exit\n";

// A mistake in the command line: reported with the command's usage, exit status 2.
struct UsageError : syncbn::Error {
  using syncbn::Error::Error;
};

bool is_help(const std::string& flag) { return flag == "-h" || flag == "--help"; }

// The whole of `value` as an integer: "12abc" and "" are refused.
int64_t parse_integer(const std::string& what, const std::string& value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size())
    throw UsageError(what + " expects an integer, got '" + value + "'");
  return v;
}

struct TrainArgs {
  bool help = false;
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
      if (i + 1 >= argc) throw UsageError("option " + flag + " needs a value");
      return argv[++i];
    };
    if (is_help(flag)) {
      args.help = true;
      return args;
    } else if (flag == "--config") {
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
      args.options.generation = parse_integer("--generation", value());
    } else if (flag == "--token-file") {
      args.token_file = value();
    } else if (flag == "--resume") {
      args.options.resume = true;
    } else if (flag == "--checkpoint-dir") {
      args.overrides.push_back("checkpoint.dir=" + value());
    } else if (flag == "--no-progress") {
      args.options.progress = false;
    } else {
      throw UsageError("unknown option '" + flag + "'");
    }
  }
  if (args.config.empty()) throw UsageError("--config FILE is required");
  auto from_env = [](std::string& field, const char* name) {
    const char* v = std::getenv(name);
    if (field.empty() && v != nullptr) field = v;
  };
  from_env(args.coordinator, "SYNCBN_COORDINATOR");
  from_env(args.token_file, "SYNCBN_COORDINATOR_TOKEN_FILE");
  from_env(args.options.run_id, "SYNCBN_RUN_ID");
  if (const char* g = std::getenv("SYNCBN_GENERATION"); g && args.options.generation == 0)
    args.options.generation = parse_integer("SYNCBN_GENERATION", g);
  if (args.options.run_id.empty()) args.options.run_id = "default";
  return args;
}

// Every rank runs this; an error seen by any rank stops every rank with a non-zero exit and a
// message naming what was wrong (no MPI abort, no rank left waiting).
int train_command(int argc, char** argv) {
  // The command line is the same on every rank: each one reports a mistake in it and exits
  // before MPI starts, so no rank waits for another.
  TrainArgs args;
  try {
    args = parse_train_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "syncbn train: %s\n%s", e.what(), kTrainUsage);
    return 2;
  }
  if (args.help) {
    std::fputs(kTrainUsage, stdout);
    return 0;
  }
  syncbn::comm::MpiEnvironment mpi(&argc, &argv);
  int rank = 0;
  try {
    auto world = syncbn::comm::make_communicator("mpi");
    rank = world->rank();
    syncbn::train::Config config;
    syncbn::train::agree(*world,
                         [&] { config = syncbn::train::load_config(args.config, args.overrides); });
    if (rank == 0)
      for (const std::string& note : config.notes) std::printf("note: %s\n", note.c_str());
    TrainArgs run_args = args;
    if (!args.coordinator.empty()) {
      syncbn::coordinator::ClientOptions client_options;
      client_options.address = args.coordinator;
      syncbn::train::agree(*world, [&] {
        if (!args.token_file.empty())
          client_options.token = syncbn::coordinator::read_token_file(args.token_file);
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

// `syncbn model --config FILE [--set k=v ...] --torch`: PyTorch code whose state dict matches
// our exported weights.
int model_command(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool torch = false;
  try {
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      if (is_help(flag)) {
        std::fputs(kModelUsage, stdout);
        return 0;
      }
      if (flag == "--torch") {
        torch = true;
        continue;
      }
      if (flag != "--config" && flag != "--set") throw UsageError("unknown option '" + flag + "'");
      if (i + 1 >= argc) throw UsageError("option " + flag + " needs a value");
      if (flag == "--config") config_path = argv[++i];
      if (flag == "--set") overrides.emplace_back(argv[++i]);
    }
    if (config_path.empty()) throw UsageError("--config FILE is required");
    if (!torch) throw UsageError("--torch is required (the one output format)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "syncbn model: %s\n%s", e.what(), kModelUsage);
    return 2;
  }
  try {
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
  if (command == "train") return train_command(argc, argv);
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

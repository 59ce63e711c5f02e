// The one `syncbn` binary: `syncbn train | coordinator | study | status | ckpt ...`.
#include <cstdio>
#include <cstring>
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
    "  model        print the configured model as a PyTorch expression:\n"
    "                 syncbn model --config FILE [--set key=value ...] --torch\n"
    "  version      print the version\n"
    "\n"
    "syncbn train --config FILE [--set key=value ...] [--init-from WEIGHTS]\n"
    "             [--export-weights WEIGHTS] [--metrics-out FILE] [--no-progress]\n"
    "             [--checkpoint-dir DIR] [--resume]\n";

struct TrainArgs {
  std::string config;
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
  return args;
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
    const syncbn::train::TrainResult result =
        syncbn::train::run_training(config, *world, args.options);
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
  std::fprintf(stderr,
               "syncbn: unknown command '%s'; expected one of: train, coordinator, status, model, "
               "version\n%s",
               command.c_str(), kUsage);
  return 2;
}

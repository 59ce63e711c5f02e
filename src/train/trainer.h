// The training loop: data-parallel SGD over the world with SyncBN (or the configured norm),
// exact global-batch semantics, bucketed gradient allreduce overlapped with backward, metrics as
// JSON lines, evaluation over the test set distributed across ranks.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "coordinator/client.h"
#include "train/config.h"

namespace syncbn::train {

struct TrainOptions {
  std::string init_from;       // safetensors to start from ("" = fresh init from the seed)
  std::string export_weights;  // safetensors written by rank 0 at the end ("" = none)
  std::string metrics_out;     // JSON lines written by rank 0 ("" = none)
  bool progress = true;        // rank 0 prints progress (a bar on a terminal, lines otherwise)
  bool resume = false;         // continue from the newest valid checkpoint
  // With a coordinator (see join_run), checkpoints go to it instead of checkpoint.dir, every
  // rank heartbeats its progress, and rank 0 reports its metrics.
  std::shared_ptr<coordinator::Client> coordinator;
  std::string run_id;
  int64_t generation = 0;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t resumed_from = 0;   // the checkpoint's step when resuming, else 0
  double final_loss = 0;      // test-set mean loss of the last evaluation
  double final_accuracy = 0;  // test-set accuracy of the last evaluation
};

// Runs `body` (local work that may fail on some ranks only: reading files) and then agrees with
// every rank, in one allreduce, on whether all succeeded. A rank whose body threw rethrows its
// syncbn::Error; the others throw syncbn::PeerError. So a failure on any rank stops every rank
// instead of leaving some waiting in the next collective. Collective over world.
void agree(comm::Communicator& world, const std::function<void()>& body);

// Joins the run at the coordinator: every rank sends its own config and gets the run's, the
// same for every rank (a rank whose config hash, world size or generation differs is refused,
// and then every rank stops). Collective over world.
Config join_run(coordinator::Client& client, const std::string& run_id, int64_t generation,
                const Config& own, comm::Communicator& world);

// Collective over world. Throws syncbn::Error for bad input (data, weights, config/model
// mismatch); such errors are raised on every rank that sees them.
TrainResult run_training(const Config& config, comm::Communicator& world,
                         const TrainOptions& options);

}  // namespace syncbn::train

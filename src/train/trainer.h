// The training loop: data-parallel SGD over the world with SyncBN (or the configured norm),
// exact global-batch semantics, bucketed gradient allreduce overlapped with backward, metrics as
// JSON lines, evaluation over the test set distributed across ranks.
#pragma once

#include <chrono>
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
  // rank heartbeats its progress, and rank 0 reports its metrics, all through a background
  // thread (coordinator/background_client.h): training never waits on the coordinator.
  std::shared_ptr<coordinator::Client> coordinator;
  std::string run_id;
  int64_t generation = 0;
  // Where rank 0 keeps checkpoints until the coordinator has them (coordinator/spill_dir.h);
  // "" = $SYNCBN_SPILL_DIR, else spill-<run_id> beside --export-weights (or --metrics-out, or in
  // the working directory). --resume looks there too and takes the newer checkpoint.
  std::string spill_dir;
  // How long the end of the run waits for an unreachable coordinator before it leaves the
  // checkpoints in the spill directory and says how to upload them.
  std::chrono::milliseconds coordinator_final_wait{10'000};
};

struct TrainResult {
  int64_t steps = 0;
  int64_t resumed_from = 0;   // the checkpoint's step when resuming, else 0
  double final_loss = 0;      // test-set mean loss of the last evaluation
  double final_accuracy = 0;  // test-set accuracy of the last evaluation
};

// How a run fails without hanging (DESIGN.md §4, "No hang, ever"):
//
//  * Errors every rank can detect together (config, files, weights, the checkpoint to resume
//    from, a refused Join) are raised inside agree(): every rank then stops with AgreedError (the
//    rank that saw the problem, with its message) or PeerError (the others), exits 1, and no
//    rank is left waiting. No abort, no noise.
//  * Any other error (a failure in forward, backward, the gradient allreduce, evaluation,
//    checkpointing, the coordinator refusing this rank mid-run, std::bad_alloc, ...) is seen by
//    one rank while the others are, or soon will be, inside a collective that can never
//    complete. run_training() prints "[rank R] error: <message>" and calls MPI_Abort: mpirun then
//    ends every rank within seconds and exits non-zero. The abort happens before the training
//    state is destroyed, since destructors would wait for collectives in flight.
//  * A rank that dies (a signal, the OOM killer) is noticed by mpirun, which ends the others; a
//    rank that is alive but stuck is found by launch/run.sh through its heartbeats' step.
//
// tests/train/failpoint_test.py makes one rank fail in each stage (SYNCBN_TEST_FAIL_AT, see
// train/test_hooks.h) under mpirun -np 2 and 4 and checks that the job ends within seconds.

// Thrown by agree() on a rank whose own body failed: every other rank throws PeerError.
class AgreedError : public Error {
 public:
  explicit AgreedError(const std::string& what) : Error(what) {}
};

// Runs `body` (local work that may fail on some ranks only: reading files) and then agrees with
// every rank, in one allreduce, on whether all succeeded. A rank whose body threw a syncbn::Error
// throws AgreedError with its message; the others throw syncbn::PeerError. So a failure on any
// rank stops every rank instead of leaving some waiting in the next collective. Collective over
// world.
void agree(comm::Communicator& world, const std::function<void()>& body);

// Joins the run at the coordinator: every rank sends its own config and gets the run's, the
// same for every rank (a rank whose config hash, world size or generation differs is refused,
// and then every rank stops). Collective over world.
Config join_run(coordinator::Client& client, const std::string& run_id, int64_t generation,
                const Config& own, comm::Communicator& world);

// Collective over world. Throws AgreedError or PeerError for bad input (data, weights,
// config/model mismatch), on every rank; any other error aborts the job (see above), unless the
// world has one rank, where it is thrown.
TrainResult run_training(const Config& config, comm::Communicator& world,
                         const TrainOptions& options);

}  // namespace syncbn::train

// Training checkpoints: everything needed to continue bit for bit, as one safetensors payload.
//
//   tensors   "model.<name>"           parameters and buffers (PyTorch state-dict names)
//             "optim.momentum.<name>"  SGD momentum buffers, once initialised
//   metadata  format_version, step (completed steps), epoch, step_in_epoch, global_batch,
//             world_size, seed, config_hash, config (the canonical YAML), optimizer_steps,
//             momentum_initialized, payload_fnv1a64 (a checksum of the tensor bytes)
//
// The data order and the augmentation draws are pure functions of (seed, epoch, sample index),
// so (seed, step) is the whole RNG and sampler state. Under local BN ranks hold different
// running statistics; the checkpoint holds rank 0's, as the exported weights do.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "optim/sgd.h"
#include "train/config.h"
#include "train/model.h"

namespace syncbn::train {

inline constexpr int kCheckpointFormatVersion = 1;

std::vector<uint8_t> encode_checkpoint(const Config& config, int world_size, int64_t step,
                                       int64_t steps_per_epoch, Sequential& model,
                                       const optim::SGD& sgd);

// Checks that the checkpoint belongs to this run (same model, norm, data, seed and global batch;
// the world size may differ), then loads it into model and sgd and returns the completed step.
// Throws syncbn::Error naming the difference or the damage; then nothing is changed.
int64_t restore_checkpoint(const std::vector<uint8_t>& payload, const std::string& source,
                           const Config& config, int world_size, Sequential& model,
                           optim::SGD& sgd);

// Whether `payload` is a syncbn checkpoint whose tensors match its checksum (payload_fnv1a64)
// and whose metadata is complete and consistent: the check the coordinator's files, the spill
// directory's and `syncbn ckpt inspect/export --file` all pass before use. On failure
// `problem` says what is wrong, naming `source`.
bool verify_checkpoint(std::span<const uint8_t> payload, const std::string& source,
                       std::string* problem);

// The step a checkpoint holds (completed steps); throws syncbn::Error when it has none.
int64_t checkpoint_step(std::span<const uint8_t> payload, const std::string& source);

// Checkpoints as files in a directory: step-<N>.safetensors, written to a temporary file,
// fsynced, renamed, and the directory fsynced; the last keep_last are kept (the newest always).
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int64_t keep_last);
  void save(int64_t step, const std::vector<uint8_t>& payload);
  // The newest checkpoint that decodes and passes its checksum; damaged ones are reported on
  // stderr and skipped. nullopt when there is none.
  std::optional<std::vector<uint8_t>> newest_valid(std::string* source) const;

 private:
  std::string dir_;
  int64_t keep_last_;
};

}  // namespace syncbn::train

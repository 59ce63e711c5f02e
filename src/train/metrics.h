// The metrics file of `syncbn train --metrics-out FILE`: JSON lines, one record per line, written
// by rank 0 (train/trainer.cc) and read back by the study (study/run_metrics.h) and by people.
//
//   {"kind":"train","step":S,"epoch":E,"loss":L,"lr":LR,"images_per_s":I,"sync_bn_comm_ms":C}
//       after step S, for the window of steps since the previous train record: the loss of
//       step S, the learning rate it used, images per second over the window, and rank 0's time
//       inside SyncBN allreduces per step (0 without SyncBN layers)
//   {"kind":"eval","step":S,"epoch":E,"loss":L,"accuracy":A}
//       test loss and accuracy (in [0, 1]) of the model after step S
//
// Numbers are written as PyTorch users read them: loss, lr and accuracy to 9 significant digits,
// images_per_s to 0.1, sync_bn_comm_ms to 0.0001; a non-finite value (a diverged loss) as null.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace syncbn::train {

struct MetricsRecord {
  enum class Kind { kTrain, kEval };
  Kind kind = Kind::kTrain;
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double lr = 0;               // train
  double images_per_s = 0;     // train
  double sync_bn_comm_ms = 0;  // train
  double accuracy = 0;         // eval
};

// One line of the file, without the newline.
std::string metrics_line(const MetricsRecord& record);

// Reads one line. What a reader needs is required (train: step and images_per_s; eval: loss and
// accuracy); other fields read 0 when absent (files from before they were written) and NaN when
// null.
// Returns nullopt for a record of another kind. Throws syncbn::Error naming `where` (the file and
// line) for a line that is not JSON or lacks a required field.
std::optional<MetricsRecord> parse_metrics_line(const std::string& line, const std::string& where);

}  // namespace syncbn::train

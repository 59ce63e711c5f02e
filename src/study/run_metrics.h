// One run's metrics file (train/metrics.h) summed up for the study.
#pragma once

#include <cstdint>
#include <string>

namespace syncbn::study {

// What one run's metrics file says. images_per_s and sync_bn_comm_ms average the train windows
// weighted by their steps, leaving out the first window (start-up) when there are several.
struct RunMetrics {
  int64_t steps = 0;
  double test_loss = 0;
  double test_accuracy = 0;
  double images_per_s = 0;
  double sync_bn_comm_ms = 0;
};
RunMetrics parse_metrics(const std::string& jsonl, const std::string& source);

}  // namespace syncbn::study

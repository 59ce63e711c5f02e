#include <algorithm>
#include <optional>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "study/study.h"
#include "train/metrics.h"

namespace syncbn::study {

RunMetrics parse_metrics(const std::string& jsonl, const std::string& source) {
  struct Window {
    int64_t steps;
    double seconds_per_image;
    double comm_ms;
  };
  std::vector<Window> windows;
  RunMetrics m;
  bool have_eval = false;
  int64_t last_step = 0;
  std::istringstream lines(jsonl);
  int line_number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    const std::optional<train::MetricsRecord> record =
        train::parse_metrics_line(line, str_cat(source, " line ", line_number));
    if (!record) continue;
    if (record->kind == train::MetricsRecord::Kind::kTrain) {
      const double ips = record->images_per_s;
      windows.push_back(
          {record->step - last_step, ips > 0 ? 1.0 / ips : 0.0, record->sync_bn_comm_ms});
      last_step = record->step;
      m.steps = std::max(m.steps, record->step);
    } else {
      m.test_loss = record->loss;
      m.test_accuracy = record->accuracy;
      have_eval = true;
    }
  }
  SYNCBN_REQUIRE(have_eval, source, ": no \"eval\" record (the run did not finish)");
  SYNCBN_REQUIRE(!windows.empty(), source, ": no \"train\" record");
  // Time per image weighted by each window's steps (full global batches): Σ steps / Σ steps·s.
  const size_t first = windows.size() > 1 ? 1 : 0;
  double steps = 0, step_seconds = 0, comm = 0;
  for (size_t i = first; i < windows.size(); ++i) {
    const auto s = static_cast<double>(windows[i].steps);
    steps += s;
    step_seconds += s * windows[i].seconds_per_image;
    comm += s * windows[i].comm_ms;
  }
  m.images_per_s = step_seconds > 0 ? steps / step_seconds : 0.0;
  m.sync_bn_comm_ms = steps > 0 ? comm / steps : 0.0;
  return m;
}

}  // namespace syncbn::study

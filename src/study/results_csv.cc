#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/error.h"
#include "study/study.h"
#include "study/text.h"

namespace syncbn::study {

namespace {

const std::vector<std::string> kColumns = {"run",
                                           "norm",
                                           "per_rank_batch",
                                           "bn_group_size",
                                           "seed",
                                           "world_size",
                                           "global_batch",
                                           "lr",
                                           "steps",
                                           "epochs",
                                           "test_error",
                                           "test_loss",
                                           "images_per_s",
                                           "sync_bn_comm_ms",
                                           "wall_s",
                                           "study_hash",
                                           "config_hash"};

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, sep)) fields.push_back(field);
  if (!line.empty() && line.back() == sep) fields.emplace_back();
  return fields;
}

std::string format(const char* fmt, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), fmt, value);
  return text;
}

}  // namespace

std::string csv_header() { return join(kColumns, ",") + "\n"; }

std::string csv_row(const RunResult& r) {
  const RunSpec& s = r.spec;
  const std::vector<std::string> fields = {
      s.name(),
      s.norm,
      std::to_string(s.per_rank_batch),
      s.bn_group_size > 0 ? std::to_string(s.bn_group_size) : "",
      std::to_string(s.seed),
      std::to_string(s.world_size),
      std::to_string(s.global_batch()),
      format("%.9g", r.lr),
      std::to_string(r.steps),
      std::to_string(r.epochs),
      format("%.6f", r.test_error),
      format("%.6f", r.test_loss),
      format("%.1f", r.images_per_s),
      format("%.4f", r.sync_bn_comm_ms),
      format("%.1f", r.wall_s),
      r.study_hash,
      r.config_hash};
  return join(fields, ",") + "\n";
}

std::vector<RunResult> parse_results_csv(const std::string& text, const std::string& source) {
  std::istringstream lines(text);
  std::string header;
  std::getline(lines, header);
  SYNCBN_REQUIRE(header + "\n" == csv_header(), source, ": unexpected header '", header,
                 "'; expected '", join(kColumns, ","),
                 "' (written by another version of syncbn study? use another --out directory)");
  std::vector<RunResult> results;
  int line_number = 1;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    const std::vector<std::string> f = split(line, ',');
    SYNCBN_REQUIRE(f.size() == kColumns.size(), source, " line ", line_number, ": ", f.size(),
                   " columns, expected ", kColumns.size());
    auto integer = [&](size_t i, bool empty_ok = false) -> int64_t {
      if (empty_ok && f[i].empty()) return 0;
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(f[i].c_str(), &end, 10);
      SYNCBN_REQUIRE(!f[i].empty() && *end == '\0' && errno == 0, source, " line ", line_number,
                     ": column '", kColumns[i], "' must be an integer, got '", f[i], "'");
      return v;
    };
    auto real = [&](size_t i) {
      char* end = nullptr;
      const double v = std::strtod(f[i].c_str(), &end);
      SYNCBN_REQUIRE(!f[i].empty() && *end == '\0' && std::isfinite(v), source, " line ",
                     line_number, ": column '", kColumns[i], "' must be a number, got '", f[i],
                     "'");
      return v;
    };
    RunResult r;
    r.spec.norm = f[1];
    SYNCBN_REQUIRE(std::find(kNorms.begin(), kNorms.end(), r.spec.norm) != kNorms.end(), source,
                   " line ", line_number, ": column 'norm' must be one of ", join(kNorms),
                   ", got '", f[1], "'");
    r.spec.per_rank_batch = integer(2);
    r.spec.bn_group_size = integer(3, /*empty_ok=*/true);
    r.spec.seed = static_cast<uint64_t>(integer(4));
    r.spec.world_size = static_cast<int>(integer(5));
    SYNCBN_REQUIRE(r.spec.per_rank_batch >= 1 && r.spec.world_size >= 1 &&
                       integer(6) == r.spec.global_batch() && f[0] == r.spec.name(),
                   source, " line ", line_number,
                   ": inconsistent run (name, batch, world size and global batch disagree)");
    r.lr = real(7);
    r.steps = integer(8);
    r.epochs = integer(9);
    r.test_error = real(10);
    r.test_loss = real(11);
    r.images_per_s = real(12);
    r.sync_bn_comm_ms = real(13);
    r.wall_s = real(14);
    r.study_hash = f[15];
    r.config_hash = f[16];
    results.push_back(r);
  }
  return results;
}

}  // namespace syncbn::study

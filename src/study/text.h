// Small text helpers of the study's files. Internal to src/study.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace syncbn::study {

inline std::string join(const std::vector<std::string>& names, const char* sep = ", ") {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : sep) + n;
  return out;
}

inline std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  SYNCBN_REQUIRE(in.good(), "cannot read ", what, " '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace syncbn::study

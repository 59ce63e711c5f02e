// Helpers for the coordinator tests: a scratch directory, payloads, uploads in chunks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "coordinator/checkpoint_store.h"
#include "coordinator/crc32c.h"
#include "coordinator/status.h"

namespace syncbn::coordinator::testing {

using syncbn::testing::ScratchDir;

inline std::string random_bytes(size_t size, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::string data(size, '\0');
  for (char& c : data) c = static_cast<char>(random() & 0xFF);
  return data;
}

// Names of the entries of `dir` (empty when it does not exist).
inline std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline CheckpointMeta meta_for(const std::string& run_id, int64_t step, const std::string& data) {
  CheckpointMeta meta;
  meta.run_id = run_id;
  meta.step = step;
  meta.generation = 1;
  meta.config_hash = 0xC0FFEE;
  meta.world_size = 2;
  meta.format_version = 1;
  meta.size_bytes = static_cast<int64_t>(data.size());
  meta.crc32c = crc32c(data);
  return meta;
}

// Streams `data` into an Upload in chunks of `chunk` bytes, as the gRPC adapter would.
inline std::unique_ptr<Upload> upload_bytes(CheckpointStore& store, const std::string& data,
                                            size_t chunk = 64 << 10) {
  auto upload = store.begin_upload();
  for (size_t offset = 0; offset < data.size(); offset += chunk) {
    const std::string_view piece = std::string_view(data).substr(offset, chunk);
    upload->append(static_cast<int64_t>(offset), piece, crc32c(piece));
  }
  return upload;
}

inline CheckpointMeta put(CheckpointStore& store, const std::string& run_id, int64_t step,
                          const std::string& data, int32_t keep_last = 3) {
  auto upload = upload_bytes(store, data);
  return store.commit(*upload, meta_for(run_id, step, data), keep_last);
}

// Runs `body` and returns the code of the ServiceError it throws (kOk when it does not throw);
// the message goes to *message.
template <typename Body>
Code code_of(Body&& body, std::string* message = nullptr) {
  try {
    body();
  } catch (const ServiceError& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return Code::kOk;
}

}  // namespace syncbn::coordinator::testing

// Helpers for the data tests: a scratch directory, IDX files written by the test itself, and
// checking error messages.
#pragma once

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "core/error.h"

namespace syncbn::data::testing {

using syncbn::testing::expect_error;
using syncbn::testing::read_file;
using syncbn::testing::ScratchDir;
using syncbn::testing::write_file;

inline void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

// An IDX image file of `count` images; pixel (i, p) = (i * 7 + p) % 256.
inline std::vector<uint8_t> idx_images(uint32_t count, uint32_t rows = 28, uint32_t cols = 28,
                                       uint32_t magic = 0x00000803) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  put_be32(out, count);
  put_be32(out, rows);
  put_be32(out, cols);
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t p = 0; p < rows * cols; ++p)
      out.push_back(static_cast<uint8_t>((i * 7 + p) % 256));
  return out;
}

inline std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels,
                                       uint32_t magic = 0x00000801) {
  std::vector<uint8_t> out;
  put_be32(out, magic);
  put_be32(out, static_cast<uint32_t>(labels.size()));
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

inline void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path);
  const int written = gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  const int closed = gzclose(f);
  if (written != static_cast<int>(bytes.size()) || closed != Z_OK)
    throw std::runtime_error("cannot write " + path);
}

// CIFAR-10 binary records for samples [first, first + count): label of sample i is
// labels(i), pixel byte (i, p) = (i * 5 + p) % 256 over the 3072 CHW bytes.
template <typename LabelOf>
std::vector<uint8_t> cifar_records(uint32_t first, uint32_t count, LabelOf labels) {
  std::vector<uint8_t> out;
  for (uint32_t i = first; i < first + count; ++i) {
    out.push_back(static_cast<uint8_t>(labels(i)));
    for (uint32_t p = 0; p < 3072; ++p) out.push_back(static_cast<uint8_t>((i * 5 + p) % 256));
  }
  return out;
}
inline std::vector<uint8_t> cifar_records(uint32_t first, uint32_t count) {
  return cifar_records(first, count, [](uint32_t i) { return i % 10; });
}

inline std::string run_command(const std::string& command) {
  struct PClose {
    void operator()(FILE* f) const { pclose(f); }
  };
  std::string out;
  {
    std::unique_ptr<FILE, PClose> pipe(popen(command.c_str(), "r"));
    if (!pipe) throw std::runtime_error("popen failed: " + command);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), pipe.get())) > 0) out.append(buf, n);
    const int status = pclose(pipe.release());
    EXPECT_EQ(status, 0) << "command failed: " << command;
  }
  return out;
}

}  // namespace syncbn::data::testing

// safetensors files (https://github.com/huggingface/safetensors), the format PyTorch users
// exchange weights in:
//
//   8 bytes     N, the header length, little-endian uint64
//   N bytes     JSON: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [2, 3],
//               "data_offsets": [begin, end]}, ...}, padded with spaces
//   the rest    the data section: each tensor's row-major little-endian bytes at
//               [begin, end) relative to its start
//
// Reading is strict: N at most kMaxHeaderBytes and within the file, valid JSON, known keys
// and dtypes, byte ranges that match dtype × shape and tile the data section exactly (no
// overlap, no gap, no bytes after the last tensor, nothing missing). Each problem throws a
// syncbn::Error naming the file (or `source`) and what was expected.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace syncbn::ckpt {

inline constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

// F64 is read for the PyTorch reference files of the tests; checkpoints hold F32 and I64.
enum class DType { kF32, kF64, kI64 };

// "F32" / "F64" / "I64", the safetensors names.
const char* to_string(DType dtype);
int64_t dtype_size(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // [] for a scalar
  std::vector<uint8_t> bytes;  // numel × dtype_size, row-major, little-endian

  int64_t numel() const;
};

using Metadata = std::map<std::string, std::string>;

// The whole file in memory, e.g. to stream to the coordinator. Throws syncbn::Error for
// duplicate or empty names, the reserved name "__metadata__", a negative dimension, or bytes
// that do not match dtype × shape. Data is laid out in the order of `entries`.
std::vector<uint8_t> encode_safetensors(const std::vector<TensorEntry>& entries,
                                        const Metadata& metadata = {});
// Entries in data-section order; `source` names the bytes in error messages.
std::vector<TensorEntry> decode_safetensors(std::span<const uint8_t> file,
                                            const std::string& source,
                                            Metadata* metadata = nullptr);

// Writes to a temporary file next to `path`, fsyncs it, then renames it over `path`, so a
// crash leaves either the old file or the new one.
void write_safetensors(const std::string& path, const std::vector<TensorEntry>& entries,
                       const Metadata& metadata = {});
// Checks the header against the file size before reading the data.
std::vector<TensorEntry> read_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Entries from values, and values back (throwing syncbn::Error on a dtype mismatch).
TensorEntry f32_entry(std::string name, const Tensor& value);  // logical (NCHW) order
TensorEntry f32_entry(std::string name, std::vector<int64_t> shape, std::span<const float> values);
TensorEntry i64_entry(std::string name, std::vector<int64_t> shape,
                      std::span<const int64_t> values);
std::vector<float> f32_values(const TensorEntry& entry);
std::vector<int64_t> i64_values(const TensorEntry& entry);
Tensor to_tensor(const TensorEntry& entry);  // an F32 entry as a contiguous Tensor

// The entry named `name`, or nullptr.
const TensorEntry* find_entry(const std::vector<TensorEntry>& entries, std::string_view name);

}  // namespace syncbn::ckpt

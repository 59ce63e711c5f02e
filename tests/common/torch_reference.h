// PyTorch reference cases, as tests/common/torch_ref.py's CaseWriter writes them (its docstring
// documents the file): one safetensors file of named cases, each with string attributes and
// arrays, read with src/ckpt's strict safetensors reader.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace syncbn::testing {

struct RefArray {
  std::vector<int64_t> dims;
  std::vector<double> values;  // float32 inputs and integers are exact as doubles
};

struct RefCase {
  std::string id;
  std::map<std::string, std::string> attrs;
  std::map<std::string, RefArray> arrays;

  bool has(const std::string& key) const { return attrs.count(key) > 0; }
  bool has_array(const std::string& name) const { return arrays.count(name) > 0; }
  // Each throws syncbn::Error naming the case when the attribute or array is missing.
  const std::string& attr(const std::string& key) const;
  int64_t attr_int(const std::string& key) const;
  double attr_double(const std::string& key) const;
  std::vector<int64_t> attr_dims(const std::string& key) const;  // "2,3,7" -> {2, 3, 7}
  const RefArray& array(const std::string& name) const;
  Tensor tensor(const std::string& name) const;  // float32, contiguous
};

// The cases of `path` in the order they were written. Throws syncbn::Error for a missing file
// (naming `producer`, the script that writes it), a file the safetensors reader rejects, or a
// name or attribute that belongs to no listed case.
std::vector<RefCase> read_reference_cases(const std::string& path, const std::string& producer);

}  // namespace syncbn::testing

#include "torch_reference.h"

#include <cstring>
#include <filesystem>
#include <sstream>

#include "ckpt/safetensors.h"
#include "core/error.h"

namespace syncbn::testing {

const std::string& RefCase::attr(const std::string& key) const {
  auto it = attrs.find(key);
  SYNCBN_REQUIRE(it != attrs.end(), "case ", id, " has no attribute '", key, "'");
  return it->second;
}

int64_t RefCase::attr_int(const std::string& key) const { return std::stoll(attr(key)); }

double RefCase::attr_double(const std::string& key) const { return std::stod(attr(key)); }

std::vector<int64_t> RefCase::attr_dims(const std::string& key) const {
  std::vector<int64_t> dims;
  std::stringstream in(attr(key));
  for (std::string item; std::getline(in, item, ',');) dims.push_back(std::stoll(item));
  return dims;
}

const RefArray& RefCase::array(const std::string& name) const {
  auto it = arrays.find(name);
  SYNCBN_REQUIRE(it != arrays.end(), "case ", id, " has no array '", name, "'");
  return it->second;
}

Tensor RefCase::tensor(const std::string& name) const {
  const RefArray& a = array(name);
  Tensor t(a.dims);
  for (size_t i = 0; i < a.values.size(); ++i) t.data()[i] = static_cast<float>(a.values[i]);
  return t;
}

namespace {

template <typename T>
void append_values(const ckpt::TensorEntry& e, std::vector<double>& out) {
  for (size_t i = 0; i < e.bytes.size(); i += sizeof(T)) {
    T v;
    std::memcpy(&v, e.bytes.data() + i, sizeof(T));
    out.push_back(static_cast<double>(v));
  }
}

}  // namespace

std::vector<RefCase> read_reference_cases(const std::string& path, const std::string& producer) {
  SYNCBN_REQUIRE(std::filesystem::exists(path), "cannot open PyTorch reference file ", path,
                 " (written by ", producer, ")");
  ckpt::Metadata metadata;
  const std::vector<ckpt::TensorEntry> entries = ckpt::read_safetensors(path, &metadata);
  auto listed = metadata.find("cases");
  SYNCBN_REQUIRE(listed != metadata.end(), path, ": no \"cases\" in the metadata");
  std::vector<RefCase> cases;
  std::map<std::string, size_t> index;
  std::stringstream ids(listed->second);
  for (std::string id; std::getline(ids, id, ',');) {
    index[id] = cases.size();
    cases.push_back(RefCase{id, {}, {}});
  }
  // "ID/NAME" -> the case ID and NAME.
  auto split = [&](const std::string& name) -> std::pair<RefCase*, std::string> {
    const size_t slash = name.find('/');
    auto it = slash == std::string::npos ? index.end() : index.find(name.substr(0, slash));
    SYNCBN_REQUIRE(it != index.end(), path, ": '", name,
                   "' belongs to no case listed in the metadata's \"cases\"");
    return {&cases[it->second], name.substr(slash + 1)};
  };
  for (const auto& [key, value] : metadata) {
    if (key == "cases" || key == "producer") continue;
    auto [c, attr] = split(key);
    c->attrs[attr] = value;
  }
  for (const ckpt::TensorEntry& e : entries) {
    auto [c, name] = split(e.name);
    RefArray& a = c->arrays[name];
    a.dims = e.shape;
    if (e.dtype == ckpt::DType::kF32) {
      append_values<float>(e, a.values);
    } else if (e.dtype == ckpt::DType::kF64) {
      append_values<double>(e, a.values);
    } else {
      append_values<int64_t>(e, a.values);
    }
  }
  return cases;
}

}  // namespace syncbn::testing

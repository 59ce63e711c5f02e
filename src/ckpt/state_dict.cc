#include "ckpt/state_dict.h"

#include <cstring>
#include <map>

#include "core/error.h"

namespace syncbn::ckpt {

namespace {

std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) {
    if (!out.empty()) out += ", ";
    out += "\"" + n + "\"";
  }
  return out;
}

}  // namespace

void append_state(const std::string& prefix, const std::vector<nn::ParamRef>& params,
                  const std::vector<nn::BufferRef>& buffers, std::vector<StateSlot>& out) {
  for (const nn::ParamRef& p : params) {
    SYNCBN_CHECK(p.value != nullptr);
    out.push_back(StateSlot{join_name(prefix, p.name), p.value, nullptr});
  }
  for (const nn::BufferRef& b : buffers) {
    SYNCBN_CHECK((b.f32 != nullptr) != (b.i64 != nullptr));
    out.push_back(StateSlot{join_name(prefix, b.name), b.f32, b.i64});
  }
}

void append_layer_state(const std::string& prefix, nn::Layer& layer, std::vector<StateSlot>& out) {
  std::vector<nn::ParamRef> params;
  std::vector<nn::BufferRef> buffers;
  layer.collect_parameters(params);
  layer.collect_buffers(buffers);
  append_state(prefix, params, buffers, out);
}

std::vector<TensorEntry> state_entries(const std::vector<StateSlot>& state) {
  std::vector<TensorEntry> out;
  out.reserve(state.size());
  for (const StateSlot& s : state) {
    if (s.f32) {
      out.push_back(f32_entry(s.name, *s.f32));
    } else {
      out.push_back(i64_entry(s.name, {}, std::span<const int64_t>(s.i64, 1)));
    }
  }
  return out;
}

void load_state(const std::vector<TensorEntry>& entries, const std::vector<StateSlot>& state,
                const std::string& source, bool strict) {
  std::map<std::string, const TensorEntry*> by_name;
  std::vector<std::string> problems;
  for (const TensorEntry& e : entries) {
    if (!by_name.emplace(e.name, &e).second)
      problems.push_back(str_cat("Duplicate key in state_dict: \"", e.name, "\"."));
  }
  std::map<std::string, const StateSlot*> slots;
  for (const StateSlot& s : state) {
    SYNCBN_REQUIRE(slots.emplace(s.name, &s).second, "the model has two state-dict entries named ",
                   s.name);
  }

  std::vector<std::string> missing, unexpected, mismatches;
  for (const StateSlot& s : state) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) {
      missing.push_back(s.name);
      continue;
    }
    const TensorEntry& e = *it->second;
    const DType want = s.f32 ? DType::kF32 : DType::kI64;
    const std::vector<int64_t> want_shape = s.f32 ? s.f32->shape() : std::vector<int64_t>{};
    if (e.dtype != want) {
      mismatches.push_back(str_cat("dtype mismatch for ", s.name, ": the checkpoint has ",
                                   to_string(e.dtype), ", the model expects ", to_string(want),
                                   "."));
    } else if (e.shape != want_shape) {
      mismatches.push_back(str_cat(
          "size mismatch for ", s.name, ": copying a param with shape ", shape_to_string(e.shape),
          " from checkpoint, the shape in current model is ", shape_to_string(want_shape), "."));
    }
  }
  for (const TensorEntry& e : entries)
    if (!slots.count(e.name)) unexpected.push_back(e.name);

  if (strict && !missing.empty())
    problems.push_back(str_cat("Missing key(s) in state_dict: ", quoted_list(missing), "."));
  if (strict && !unexpected.empty())
    problems.push_back(str_cat("Unexpected key(s) in state_dict: ", quoted_list(unexpected), "."));
  problems.insert(problems.end(), mismatches.begin(), mismatches.end());
  if (!problems.empty()) {
    std::string message = str_cat("Error(s) in loading state_dict from ", source, ":");
    for (const std::string& p : problems) message += "\n\t" + p;
    throw Error(message);
  }

  for (const StateSlot& s : state) {
    auto it = by_name.find(s.name);
    if (it == by_name.end()) continue;
    const TensorEntry& e = *it->second;
    if (s.i64) {
      std::memcpy(s.i64, e.bytes.data(), sizeof(int64_t));
    } else if (s.f32->format() == MemoryFormat::kContiguous) {
      if (!e.bytes.empty()) std::memcpy(s.f32->data(), e.bytes.data(), e.bytes.size());
    } else {
      *s.f32 = to_tensor(e).to(s.f32->format());
    }
  }
}

}  // namespace syncbn::ckpt

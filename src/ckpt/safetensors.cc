#include "ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/json.h"
#include "core/unique_fd.h"

namespace syncbn::ckpt {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this build copies it as is");

const char* to_string(DType dtype) {
  return dtype == DType::kF32 ? "F32" : dtype == DType::kF64 ? "F64" : "I64";
}

int64_t dtype_size(DType dtype) { return dtype == DType::kF32 ? 4 : 8; }

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

constexpr const char* kMetadataKey = "__metadata__";

// A tensor's header record before its bytes are read.
struct Record {
  TensorEntry entry;  // bytes empty
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct Header {
  std::vector<Record> records;  // sorted by data offset
  Metadata metadata;
};

// "an integer", "a string", ... for messages.
std::string a_kind(const json::Value& v) {
  const std::string name = json::kind_name(v.kind());
  if (v.kind() == json::Value::Kind::kNull) return name;
  return (name[0] == 'a' || name[0] == 'i' || name[0] == 'o' ? "an " : "a ") + name;
}

std::string offsets_string(uint64_t begin, uint64_t end) {
  return str_cat("[", begin, ", ", end, "]");
}

uint64_t non_negative_int(const json::Value& v, const std::string& source,
                          const std::string& what) {
  SYNCBN_REQUIRE(v.is_int() && v.as_int() >= 0, source, ": ", what,
                 " must hold non-negative integers, got ", a_kind(v),
                 v.is_int() ? str_cat(" ", v.as_int()) : std::string());
  return static_cast<uint64_t>(v.as_int());
}

Record parse_record(const std::string& source, const std::string& name, const json::Value& info,
                    uint64_t data_bytes) {
  const std::string what = str_cat("tensor ", json::quote(name));
  SYNCBN_REQUIRE(info.is_object(), source, ": ", what, " must be described by a JSON object, got ",
                 a_kind(info));
  for (const auto& [key, value] : info.as_object()) {
    SYNCBN_REQUIRE(key == "dtype" || key == "shape" || key == "data_offsets", source, ": ", what,
                   " has unknown field ", json::quote(key),
                   "; expected dtype, shape and data_offsets");
  }
  const json::Value* dtype = info.find("dtype");
  const json::Value* shape = info.find("shape");
  const json::Value* offsets = info.find("data_offsets");
  SYNCBN_REQUIRE(dtype && shape && offsets, source, ": ", what, " lacks ",
                 !dtype   ? "dtype"
                 : !shape ? "shape"
                          : "data_offsets",
                 "; expected dtype, shape and data_offsets");

  Record r;
  r.entry.name = name;
  SYNCBN_REQUIRE(dtype->is_string(), source, ": ", what, " has a dtype that is ", a_kind(*dtype),
                 ", expected a string");
  if (dtype->as_string() == "F32") {
    r.entry.dtype = DType::kF32;
  } else if (dtype->as_string() == "F64") {
    r.entry.dtype = DType::kF64;
  } else if (dtype->as_string() == "I64") {
    r.entry.dtype = DType::kI64;
  } else {
    throw Error(str_cat(source, ": ", what, " has unsupported dtype ",
                        json::quote(dtype->as_string()), "; expected F32, F64 or I64"));
  }

  SYNCBN_REQUIRE(shape->is_array(), source, ": ", what, " has a shape that is ", a_kind(*shape),
                 ", expected an array");
  for (const json::Value& d : shape->as_array())
    r.entry.shape.push_back(static_cast<int64_t>(non_negative_int(d, source, what + " shape")));
  // numel × dtype size, without overflow; a size past 2^64 can never match the offsets.
  const bool empty =
      std::find(r.entry.shape.begin(), r.entry.shape.end(), 0) != r.entry.shape.end();
  uint64_t need = empty ? 0 : static_cast<uint64_t>(dtype_size(r.entry.dtype));
  bool too_large = false;
  for (int64_t d : r.entry.shape) {
    const auto size = static_cast<uint64_t>(d);
    if (need != 0 && size > std::numeric_limits<uint64_t>::max() / need) too_large = true;
    if (!too_large) need *= size;
  }

  SYNCBN_REQUIRE(offsets->is_array() && offsets->as_array().size() == 2, source, ": ", what,
                 " needs data_offsets [begin, end]");
  r.begin = non_negative_int(offsets->as_array()[0], source, what + " data_offsets");
  r.end = non_negative_int(offsets->as_array()[1], source, what + " data_offsets");
  SYNCBN_REQUIRE(r.begin <= r.end, source, ": ", what, " has data_offsets ",
                 offsets_string(r.begin, r.end), " with begin after end");
  SYNCBN_REQUIRE(!too_large && r.end - r.begin == need, source, ": ", what, " has data_offsets ",
                 offsets_string(r.begin, r.end), " (", r.end - r.begin, " bytes), but dtype ",
                 to_string(r.entry.dtype), " and shape ", shape_to_string(r.entry.shape), " need ",
                 too_large ? std::string("more than 2^64") : std::to_string(need), " bytes");
  SYNCBN_REQUIRE(r.end <= data_bytes, source, ": truncated: ", what, " has data_offsets ",
                 offsets_string(r.begin, r.end), " but the data section holds only ", data_bytes,
                 " bytes");
  return r;
}

Header parse_header(const std::string& source, std::string_view text, uint64_t data_bytes) {
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    throw Error(str_cat(source, ": safetensors header is not valid JSON: ", e.what()));
  }
  SYNCBN_REQUIRE(root.is_object(), source, ": safetensors header must be a JSON object, got ",
                 a_kind(root));
  Header header;
  for (const auto& [name, value] : root.as_object()) {
    if (name == kMetadataKey) {
      SYNCBN_REQUIRE(value.is_object(), source, ": ", kMetadataKey, " must be an object, got ",
                     a_kind(value));
      for (const auto& [key, item] : value.as_object()) {
        SYNCBN_REQUIRE(item.is_string(), source, ": ", kMetadataKey, " value ", json::quote(key),
                       " is ", a_kind(item), ", expected a string");
        header.metadata[key] = item.as_string();
      }
      continue;
    }
    header.records.push_back(parse_record(source, name, value, data_bytes));
  }
  // The byte ranges must tile [0, data_bytes): no overlap, no gap, nothing left over.
  std::stable_sort(header.records.begin(), header.records.end(),
                   [](const Record& a, const Record& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t next = 0;
  const Record* previous = nullptr;
  for (const Record& r : header.records) {
    const std::string what = str_cat("tensor ", json::quote(r.entry.name), " at data_offsets ",
                                     offsets_string(r.begin, r.end));
    SYNCBN_REQUIRE(r.begin >= next, source, ": ", what, " overlaps tensor ",
                   json::quote(previous ? previous->entry.name : std::string()), " at ",
                   offsets_string(previous ? previous->begin : 0, next));
    SYNCBN_REQUIRE(r.begin == next, source, ": ", what, " leaves ", r.begin - next,
                   " unused bytes before it; expected tensors packed from offset ", next);
    next = r.end;
    previous = &r;
  }
  SYNCBN_REQUIRE(next == data_bytes, source, ": ", data_bytes - next,
                 " bytes after the last tensor; expected the data section to end at ", next);
  return header;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The header length prefix, checked against the size of what follows it.
uint64_t checked_header_length(const std::string& source, const uint8_t* prefix,
                               uint64_t file_bytes) {
  const uint64_t n = read_le64(prefix);
  SYNCBN_REQUIRE(n <= kMaxHeaderBytes, source, ": safetensors header length ", n,
                 " exceeds the limit of ", kMaxHeaderBytes, " bytes; not a safetensors file?");
  SYNCBN_REQUIRE(n <= file_bytes - 8, source, ": truncated: header length ", n, " but only ",
                 file_bytes - 8, " bytes follow the length prefix");
  return n;
}

std::string encode_header(const std::vector<TensorEntry>& entries, const Metadata& metadata) {
  json::Value::Object root;
  if (!metadata.empty()) {
    json::Value::Object meta;
    for (const auto& [key, value] : metadata) meta.emplace_back(key, json::Value::string(value));
    root.emplace_back(kMetadataKey, json::Value::object(std::move(meta)));
  }
  std::vector<std::string_view> names;
  int64_t offset = 0;
  for (const TensorEntry& e : entries) {
    SYNCBN_REQUIRE(!e.name.empty(), "safetensors: a tensor has an empty name");
    SYNCBN_REQUIRE(e.name != kMetadataKey, "safetensors: ", kMetadataKey,
                   " is reserved and cannot name a tensor");
    SYNCBN_REQUIRE(std::find(names.begin(), names.end(), e.name) == names.end(),
                   "safetensors: duplicate tensor name ", json::quote(e.name));
    names.push_back(e.name);
    json::Value::Array shape;
    for (int64_t d : e.shape) {
      SYNCBN_REQUIRE(d >= 0, "safetensors: tensor ", json::quote(e.name), " has shape ",
                     shape_to_string(e.shape), " with a negative dimension");
      shape.push_back(json::Value::integer(d));
    }
    const int64_t bytes = e.numel() * dtype_size(e.dtype);
    SYNCBN_REQUIRE(static_cast<int64_t>(e.bytes.size()) == bytes, "safetensors: tensor ",
                   json::quote(e.name), " holds ", e.bytes.size(), " bytes, but dtype ",
                   to_string(e.dtype), " and shape ", shape_to_string(e.shape), " need ", bytes);
    json::Value::Object info;
    info.emplace_back("dtype", json::Value::string(to_string(e.dtype)));
    info.emplace_back("shape", json::Value::array(std::move(shape)));
    info.emplace_back("data_offsets", json::Value::array({json::Value::integer(offset),
                                                          json::Value::integer(offset + bytes)}));
    root.emplace_back(e.name, json::Value::object(std::move(info)));
    offset += bytes;
  }
  std::string text = json::serialize(json::Value::object(std::move(root)));
  // Padding keeps the data section 8-byte aligned, as the safetensors library does.
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

void append_le64(std::vector<uint8_t>& out, uint64_t v) {
  const size_t at = out.size();
  out.resize(at + 8);
  std::memcpy(out.data() + at, &v, 8);
}

void write_all(int fd, const uint8_t* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    SYNCBN_REQUIRE(n > 0, path, ": write failed: ", std::strerror(errno));
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// Reads exactly `size` bytes at `offset`; false at end of file.
bool read_at(int fd, uint8_t* data, size_t size, uint64_t offset, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    SYNCBN_REQUIRE(n >= 0, path, ": read failed: ", std::strerror(errno));
    if (n == 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

std::vector<uint8_t> encode_safetensors(const std::vector<TensorEntry>& entries,
                                        const Metadata& metadata) {
  const std::string header = encode_header(entries, metadata);
  std::vector<uint8_t> out;
  size_t total = 8 + header.size();
  for (const TensorEntry& e : entries) total += e.bytes.size();
  out.reserve(total);
  append_le64(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  for (const TensorEntry& e : entries) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
  return out;
}

std::vector<TensorEntry> decode_safetensors(std::span<const uint8_t> file,
                                            const std::string& source, Metadata* metadata) {
  SYNCBN_REQUIRE(file.size() >= 8, source,
                 ": truncated: a safetensors file starts with an 8-byte header length, got ",
                 file.size(), " bytes");
  const uint64_t n = checked_header_length(source, file.data(), file.size());
  const std::string_view text(reinterpret_cast<const char*>(file.data() + 8), n);
  Header header = parse_header(source, text, file.size() - 8 - n);
  const uint8_t* data = file.data() + 8 + n;
  std::vector<TensorEntry> out;
  out.reserve(header.records.size());
  for (Record& r : header.records) {
    r.entry.bytes.assign(data + r.begin, data + r.end);
    out.push_back(std::move(r.entry));
  }
  if (metadata) *metadata = std::move(header.metadata);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorEntry>& entries,
                       const Metadata& metadata) {
  const std::vector<uint8_t> bytes = encode_safetensors(entries, metadata);
  static std::atomic<uint64_t> counter{0};
  const std::string temp = str_cat(path, ".tmp.", ::getpid(), ".", counter++);
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
  SYNCBN_REQUIRE(fd.get() >= 0, temp, ": cannot create: ", std::strerror(errno));
  // Removes the temporary file unless it was renamed into place.
  struct Unlink {
    const std::string& path;
    bool armed = true;
    ~Unlink() {
      if (armed) ::unlink(path.c_str());
    }
  } cleanup{temp};
  write_all(fd.get(), bytes.data(), bytes.size(), temp);
  SYNCBN_REQUIRE(::fsync(fd.get()) == 0, temp, ": fsync failed: ", std::strerror(errno));
  SYNCBN_REQUIRE(fd.close() == 0, temp, ": close failed: ", std::strerror(errno));
  SYNCBN_REQUIRE(::rename(temp.c_str(), path.c_str()) == 0, "cannot rename ", temp, " to ", path,
                 ": ", std::strerror(errno));
  cleanup.armed = false;
  // Make the rename itself durable.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::filesystem::path dir = parent.empty() ? std::filesystem::path(".") : parent;
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
}

std::vector<TensorEntry> read_safetensors(const std::string& path, Metadata* metadata) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  SYNCBN_REQUIRE(fd.get() >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  SYNCBN_REQUIRE(::fstat(fd.get(), &st) == 0, path, ": cannot stat: ", std::strerror(errno));
  SYNCBN_REQUIRE(S_ISREG(st.st_mode), path, ": not a regular file");
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  uint8_t prefix[8];
  SYNCBN_REQUIRE(file_bytes >= 8 && read_at(fd.get(), prefix, 8, 0, path), path,
                 ": truncated: a safetensors file starts with an 8-byte header length, got ",
                 file_bytes, " bytes");
  const uint64_t n = checked_header_length(path, prefix, file_bytes);
  std::string text(n, '\0');
  SYNCBN_REQUIRE(read_at(fd.get(), reinterpret_cast<uint8_t*>(text.data()), n, 8, path), path,
                 ": truncated while reading the header (the file shrank?)");
  Header header = parse_header(path, text, file_bytes - 8 - n);
  std::vector<TensorEntry> out;
  out.reserve(header.records.size());
  for (Record& r : header.records) {
    r.entry.bytes.resize(r.end - r.begin);
    SYNCBN_REQUIRE(
        read_at(fd.get(), r.entry.bytes.data(), r.entry.bytes.size(), 8 + n + r.begin, path), path,
        ": truncated while reading tensor ", json::quote(r.entry.name), " (the file shrank?)");
    out.push_back(std::move(r.entry));
  }
  if (metadata) *metadata = std::move(header.metadata);
  return out;
}

TensorEntry f32_entry(std::string name, const Tensor& value) {
  if (value.format() != MemoryFormat::kContiguous)
    return f32_entry(std::move(name), value.to(MemoryFormat::kContiguous));
  return f32_entry(std::move(name), value.shape(),
                   std::span<const float>(value.data(), static_cast<size_t>(value.numel())));
}

TensorEntry f32_entry(std::string name, std::vector<int64_t> shape, std::span<const float> values) {
  TensorEntry e{std::move(name), DType::kF32, std::move(shape), {}};
  SYNCBN_REQUIRE(static_cast<int64_t>(values.size()) == e.numel(), "tensor ", json::quote(e.name),
                 ": ", values.size(), " values for shape ", shape_to_string(e.shape));
  e.bytes.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
  return e;
}

TensorEntry i64_entry(std::string name, std::vector<int64_t> shape,
                      std::span<const int64_t> values) {
  TensorEntry e{std::move(name), DType::kI64, std::move(shape), {}};
  SYNCBN_REQUIRE(static_cast<int64_t>(values.size()) == e.numel(), "tensor ", json::quote(e.name),
                 ": ", values.size(), " values for shape ", shape_to_string(e.shape));
  e.bytes.resize(values.size() * sizeof(int64_t));
  if (!values.empty()) std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
  return e;
}

std::vector<float> f32_values(const TensorEntry& entry) {
  SYNCBN_REQUIRE(entry.dtype == DType::kF32, "tensor ", json::quote(entry.name), " has dtype ",
                 to_string(entry.dtype), ", expected F32");
  SYNCBN_CHECK(entry.bytes.size() == static_cast<size_t>(entry.numel()) * sizeof(float));
  std::vector<float> out(entry.bytes.size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), entry.bytes.data(), entry.bytes.size());
  return out;
}

std::vector<int64_t> i64_values(const TensorEntry& entry) {
  SYNCBN_REQUIRE(entry.dtype == DType::kI64, "tensor ", json::quote(entry.name), " has dtype ",
                 to_string(entry.dtype), ", expected I64");
  SYNCBN_CHECK(entry.bytes.size() == static_cast<size_t>(entry.numel()) * sizeof(int64_t));
  std::vector<int64_t> out(entry.bytes.size() / sizeof(int64_t));
  if (!out.empty()) std::memcpy(out.data(), entry.bytes.data(), entry.bytes.size());
  return out;
}

Tensor to_tensor(const TensorEntry& entry) {
  const std::vector<float> values = f32_values(entry);
  Tensor t = Tensor::empty(entry.shape);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

const TensorEntry* find_entry(const std::vector<TensorEntry>& entries, std::string_view name) {
  for (const TensorEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

}  // namespace syncbn::ckpt

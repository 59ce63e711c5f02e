// safetensors reading and writing: round trips, the exact bytes the format prescribes, and
// every way a file can be malformed.
#include "ckpt/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>

#include "test_util.h"

namespace syncbn::ckpt {
namespace {

using testing::expect_error;
using testing::ScratchDir;

std::vector<TensorEntry> sample_entries() {
  const std::vector<float> w = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -0.0f};
  const std::vector<int64_t> n = {7};
  const std::vector<int64_t> big = {INT64_MIN, -1, INT64_MAX};
  return {f32_entry("0.weight", {2, 3}, w), i64_entry("1.num_batches_tracked", {}, n),
          i64_entry("big", {3}, big), f32_entry("empty", {0, 4}, std::span<const float>())};
}

void expect_same(const std::vector<TensorEntry>& a, const std::vector<TensorEntry>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].dtype, b[i].dtype);
    EXPECT_EQ(a[i].shape, b[i].shape);
    EXPECT_EQ(a[i].bytes, b[i].bytes) << a[i].name;
  }
}

// A file from a header text and a data section, the length prefix computed here.
std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data) {
  // Byte by byte: GCC 12 misreads vector::insert here as out of bounds (-Warray-bounds).
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + data.size());
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  for (const char c : header) out.push_back(static_cast<uint8_t>(c));
  for (const uint8_t b : data) out.push_back(b);
  return out;
}

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

TEST(Safetensors, RoundTripInMemoryAndOnDisk) {
  const std::vector<TensorEntry> entries = sample_entries();
  const Metadata metadata = {{"format", "pt"},
                             {"note",
                              "gr\xc3\xb6\xc3\x9f"
                              "e \"q\"\n"}};
  Metadata got;
  expect_same(decode_safetensors(encode_safetensors(entries, metadata), "mem", &got), entries);
  EXPECT_EQ(got, metadata);

  ScratchDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, entries, metadata);
  got.clear();
  expect_same(read_safetensors(path, &got), entries);
  EXPECT_EQ(got, metadata);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"model.safetensors"});  // no temp file left

  // Overwriting replaces the file.
  write_safetensors(path, {entries[1]});
  expect_same(read_safetensors(path), {entries[1]});
  EXPECT_EQ(dir.listing().size(), 1u);
}

TEST(Safetensors, ValuesRoundTrip) {
  const std::vector<TensorEntry> entries = sample_entries();
  EXPECT_EQ(f32_values(entries[0]), (std::vector<float>{1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -0.0f}));
  EXPECT_EQ(i64_values(entries[2]), (std::vector<int64_t>{INT64_MIN, -1, INT64_MAX}));
  EXPECT_EQ(entries[1].numel(), 1);
  EXPECT_EQ(entries[3].numel(), 0);
  expect_error([&] { f32_values(entries[1]); },
               {"tensor \"1.num_batches_tracked\" has dtype I64, expected F32"});
  expect_error([&] { i64_values(entries[0]); }, {"has dtype F32, expected I64"});
  const Tensor t = to_tensor(entries[0]);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.data()[3], 3.25f);
  EXPECT_EQ(find_entry(entries, "big"), &entries[2]);
  EXPECT_EQ(find_entry(entries, "nope"), nullptr);
  expect_error(
      [] {
        f32_entry("x", {2, 2}, std::vector<float>(3));
      },
      {"tensor \"x\": 3 values for shape [2, 2]"});
}

TEST(Safetensors, ChannelsLastTensorIsStoredInLogicalOrder) {
  Tensor t({1, 2, 2, 2});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(i);  // NCHW order
  const TensorEntry e = f32_entry("x", t.to(MemoryFormat::kChannelsLast));
  EXPECT_EQ(f32_values(e), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(Safetensors, ExactBytesFollowTheFormat) {
  // One I64 scalar and one F32 vector, laid out by hand from the format description.
  const std::vector<int64_t> n = {258};
  const std::vector<float> v = {1.0f};
  const std::vector<uint8_t> file =
      encode_safetensors({i64_entry("n", {}, n), f32_entry("v", {1}, v)}, {{"k", "v"}});
  const std::string header =
      "{\"__metadata__\":{\"k\":\"v\"},\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":"
      "[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
  std::string padded = header;
  padded.resize((header.size() + 7) / 8 * 8, ' ');
  // 258 as int64, then 1.0f, both little-endian.
  const std::vector<uint8_t> data = {2, 1, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x80, 0x3f};
  EXPECT_EQ(file, raw_file(padded, data));
  EXPECT_EQ(padded.size() % 8, 0u);
}

TEST(Safetensors, AcceptsHeadersFromOtherWriters) {
  // Whitespace, padding, key order, \u escapes in names, data laid out in another order.
  const std::string header =
      "{ \"b\\u00e9\" : {\"shape\": [2], \"data_offsets\": [8, 16], \"dtype\": \"F32\"},\n"
      "  \"a\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]} }    ";
  std::vector<uint8_t> data = zeros(16);
  data[0] = 5;
  const std::vector<TensorEntry> got = decode_safetensors(raw_file(header, data), "mem");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].name, "a");  // data-section order
  EXPECT_EQ(i64_values(got[0]), std::vector<int64_t>{5});
  EXPECT_EQ(got[1].name, "b\xc3\xa9");
  EXPECT_EQ(got[1].shape, std::vector<int64_t>{2});
  EXPECT_TRUE(decode_safetensors(raw_file("{}", {}), "mem").empty());
}

TEST(Safetensors, RejectsBadLengthPrefix) {
  expect_error([] { decode_safetensors(zeros(5), "f.st"); },
               {"f.st: truncated: a safetensors file starts with an 8-byte header length, got 5"});
  std::vector<uint8_t> huge = zeros(64);
  huge[4] = 1;  // 2^32
  expect_error([&] { decode_safetensors(huge, "f.st"); },
               {"f.st: safetensors header length 4294967296 exceeds the limit of 104857600"});
  std::vector<uint8_t> longer = raw_file("{}", {});
  longer[0] = 40;
  expect_error([&] { decode_safetensors(longer, "f.st"); },
               {"f.st: truncated: header length 40 but only 2 bytes follow"});
}

TEST(Safetensors, RejectsBadHeaders) {
  const std::vector<uint8_t> d8 = zeros(8);
  struct Case {
    std::string header;
    std::vector<uint8_t> data;
    std::string fragment;
  };
  const std::string ok_info = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";
  const std::vector<Case> cases = {
      {"{\"a\":", d8, "safetensors header is not valid JSON: invalid JSON at byte 5"},
      {"{\"a\":{" + ok_info + "},\"a\":{" + ok_info + "}}", d8, "duplicate object key \"a\""},
      {"[1,2]", {}, "safetensors header must be a JSON object, got an array"},
      {"{\"__metadata__\":[]}", {}, "__metadata__ must be an object, got an array"},
      {"{\"__metadata__\":{\"k\":1}}", {}, "__metadata__ value \"k\" is an integer"},
      {"{\"a\":[]}", d8, "tensor \"a\" must be described by a JSON object, got an array"},
      {"{\"a\":{" + ok_info + ",\"extra\":1}}", d8, "tensor \"a\" has unknown field \"extra\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", d8, "tensor \"a\" lacks data_offsets"},
      {"{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", d8,
       "tensor \"a\" has unsupported dtype \"F16\"; expected F32, F64 or I64"},
      {"{\"a\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}}", d8,
       "has a dtype that is an integer, expected a string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", d8,
       "has a shape that is an integer, expected an array"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", d8,
       "tensor \"a\" shape must hold non-negative integers, got an integer -2"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", d8,
       "shape must hold non-negative integers, got a number"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", d8,
       "needs data_offsets [begin, end]"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", d8,
       "has data_offsets [8, 0] with begin after end"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", d8,
       "data_offsets must hold non-negative integers"},
      {"{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", d8,
       "tensor \"a\" has data_offsets [0, 8] (8 bytes), but dtype I64 and shape [2] need 16 bytes"},
      {"{\"a\":{\"dtype\":\"I64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
       {},
       "need more than 2^64 bytes"},
      {"{\"a\":{" + ok_info + "},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
       zeros(12), "tensor \"b\" at data_offsets [4, 12] overlaps tensor \"a\" at [0, 8]"},
      {"{\"a\":{" + ok_info + "},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
       zeros(16), "tensor \"b\" at data_offsets [12, 16] leaves 4 unused bytes before it"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", d8,
       "leaves 4 unused bytes before it; expected tensors packed from offset 0"},
      {"{\"a\":{" + ok_info + "}}", zeros(12),
       "4 bytes after the last tensor; expected the data section to end at 8"},
      {"{\"a\":{" + ok_info + "}}", zeros(6),
       "truncated: tensor \"a\" has data_offsets [0, 8] but the data section holds only 6 bytes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("header: " + c.header);
    expect_error([&] { decode_safetensors(raw_file(c.header, c.data), "f.st"); },
                 {"f.st: ", c.fragment});
  }
}

TEST(Safetensors, RejectsTruncatedFiles) {
  ScratchDir dir;
  const std::string path = dir.file("cut.safetensors");
  std::vector<uint8_t> file = encode_safetensors(sample_entries());
  for (size_t keep : {size_t{0}, size_t{7}, size_t{8}, size_t{40}, file.size() - 1}) {
    SCOPED_TRACE(keep);
    const std::vector<uint8_t> cut(file.begin(), file.begin() + static_cast<ptrdiff_t>(keep));
    testing::write_file(path, cut);
    expect_error([&] { read_safetensors(path); }, {path, "truncated"});
    expect_error([&] { decode_safetensors(cut, "mem"); }, {"mem: ", "truncated"});
  }
  expect_error([&] { read_safetensors(dir.file("absent")); }, {"absent: cannot open"});
  expect_error([&] { read_safetensors(dir.path()); }, {"not a regular file"});
}

TEST(Safetensors, WriterRejectsInvalidEntries) {
  const std::vector<float> v = {1, 2};
  expect_error(
      [&] {
        encode_safetensors({f32_entry("a", {2}, v), f32_entry("a", {2}, v)});
      },
      {"duplicate tensor name \"a\""});
  expect_error([&] { encode_safetensors({f32_entry("__metadata__", {2}, v)}); },
               {"__metadata__ is reserved"});
  expect_error([&] { encode_safetensors({f32_entry("", {2}, v)}); }, {"empty name"});
  TensorEntry bad = f32_entry("w", {2}, v);
  bad.shape = {3};
  expect_error([&] { encode_safetensors({bad}); },
               {"tensor \"w\" holds 8 bytes, but dtype F32 and shape [3] need 12"});
  bad.shape = {-2};
  expect_error([&] { encode_safetensors({bad}); }, {"negative dimension"});
  expect_error([&] { write_safetensors("/nonexistent-dir/x.safetensors", {}); },
               {"/nonexistent-dir/x.safetensors.tmp.", "cannot create"});
}

}  // namespace
}  // namespace syncbn::ckpt

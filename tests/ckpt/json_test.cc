// The JSON reader and writer: every value kind, every escape, and rejection of what RFC 8259
// does not allow.
#include "core/json.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace syncbn::json {
namespace {

using testing::expect_error;

TEST(Json, ParsesEveryKind) {
  const Value v = parse(
      " {\"a\": [1, -2, 0, 3.5, -0.25e2, 1E3, true, false, null],\n\t\"b\": {\"c\": \"d\"},"
      " \"e\": [], \"f\": {}, \"big\": 123456789012345678901234} \r\n");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.as_object().size(), 5u);
  EXPECT_EQ(v.as_object()[0].first, "a");  // document order
  const Value::Array& a = v.find("a")->as_array();
  ASSERT_EQ(a.size(), 9u);
  EXPECT_EQ(a[0].as_int(), 1);
  EXPECT_EQ(a[1].as_int(), -2);
  EXPECT_EQ(a[2].as_int(), 0);
  EXPECT_EQ(a[3].kind(), Value::Kind::kDouble);
  EXPECT_EQ(a[3].as_double(), 3.5);
  EXPECT_EQ(a[4].as_double(), -25.0);
  EXPECT_EQ(a[5].kind(), Value::Kind::kDouble);
  EXPECT_EQ(a[5].as_double(), 1000.0);
  EXPECT_TRUE(a[6].as_bool());
  EXPECT_FALSE(a[7].as_bool());
  EXPECT_EQ(a[8].kind(), Value::Kind::kNull);
  EXPECT_EQ(v.find("b")->find("c")->as_string(), "d");
  EXPECT_TRUE(v.find("e")->as_array().empty());
  EXPECT_TRUE(v.find("f")->as_object().empty());
  // Past int64: a double, not a silently wrapped integer.
  EXPECT_EQ(v.find("big")->kind(), Value::Kind::kDouble);
  EXPECT_DOUBLE_EQ(v.find("big")->as_double(), 1.23456789012345678901234e23);
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(parse("-9223372036854775808").as_int(), INT64_MIN);
  EXPECT_EQ(parse("9223372036854775807").as_int(), INT64_MAX);
}

TEST(Json, StringEscapesAndUtf8) {
  EXPECT_EQ(parse(R"("q\" b\\ s\/ \b\f\n\r\t")").as_string(), "q\" b\\ s/ \b\f\n\r\t");
  EXPECT_EQ(parse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(parse(R"("\ud83d\ude00")").as_string(), "\xf0\x9f\x98\x80");  // U+1F600
  EXPECT_EQ(parse("\"gr\xc3\xb6\xc3\x9f"
                  "e \xe2\x9c\x93\"")
                .as_string(),
            "gr\xc3\xb6\xc3\x9f"
            "e \xe2\x9c\x93");
  EXPECT_EQ(parse(R"("\u0000")").as_string(), std::string(1, '\0'));
}

TEST(Json, SerializeRoundTrips) {
  const std::string text =
      "{\"name\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\",\"n\":[-1,0,9007199254740993],"
      "\"x\":0.5,\"t\":true,\"f\":false,\"z\":null,\"o\":{}}";
  EXPECT_EQ(serialize(parse(text)), text);
  EXPECT_EQ(quote("tab\there"), "\"tab\\there\"");
  EXPECT_EQ(quote(std::string("\x1f", 1)), "\"\\u001f\"");
}

TEST(Json, RejectsInvalidDocuments) {
  struct Case {
    std::string text;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"", "unexpected end of input"},
      {"   ", "unexpected end of input"},
      {"{", "expected a string as object key"},
      {"{\"a\" 1}", "expected ':' after an object key"},
      {"{\"a\":1,}", "expected a string as object key"},
      {"[1,]", "expected a JSON value"},
      {"[1 2]", "expected ']' or ',' in an array"},
      {"{\"a\":1 \"b\":2}", "expected '}' or ',' in an object"},
      {"{a:1}", "expected a string as object key"},
      {"{\"a\":1,\"a\":2}", "duplicate object key \"a\""},
      {"01", "unexpected data after the JSON value"},
      {"-", "expected digits in a number"},
      {"1.", "expected digits after '.'"},
      {"1e", "expected digits in an exponent"},
      {"1e999", "number out of range"},
      {"NaN", "expected a JSON value"},
      {"tru", "expected a JSON value"},
      {"\"abc", "unterminated string"},
      {"\"a\\x\"", "invalid escape '\\x'"},
      {"\"a\\u12g4\"", "expected 4 hex digits"},
      {"\"a\\u12\"", "expected 4 hex digits"},
      {"\"a\\u12", "unterminated string"},
      {"\"\\ud83d\"", "unpaired high surrogate"},
      {"\"\\ude00\"", "unpaired low surrogate"},
      {"\"\\ud83d\\u0041\"", "unpaired high surrogate"},
      {"\"a\nb\"", "unescaped control character"},
      {"\"\xff\"", "invalid UTF-8"},
      {"\"\xc0\x80\"", "invalid UTF-8"},          // overlong NUL
      {"\"\xed\xa0\x80\"", "invalid UTF-8"},      // an encoded surrogate
      {"\"\xf4\x90\x80\x80\"", "invalid UTF-8"},  // past U+10FFFF
      {"\"\xe2\x82\"", "invalid UTF-8"},
      {"{} {}", "unexpected data after the JSON value"},
      {"[] x", "unexpected data after the JSON value"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("input: " + c.text);
    expect_error([&] { parse(c.text); }, {"invalid JSON at byte ", c.fragment});
  }
}

TEST(Json, ErrorGivesTheByteOffset) {
  expect_error([] { parse("{\"a\": [1, 2,, 3]}"); }, {"invalid JSON at byte 12: "});
}

TEST(Json, NestingIsBounded) {
  const std::string ok = std::string(kMaxDepth, '[') + std::string(kMaxDepth, ']');
  EXPECT_NO_THROW(parse(ok));
  const std::string deep = std::string(kMaxDepth + 1, '[') + std::string(kMaxDepth + 1, ']');
  expect_error([&] { parse(deep); }, {"nesting deeper than 64 levels"});
  expect_error([] { parse(std::string(100000, '[')); }, {"nesting deeper than"});
  std::string objects;
  for (int i = 0; i <= kMaxDepth; ++i) objects += "{\"a\":";
  expect_error([&] { parse(objects); }, {"nesting deeper than 64 levels"});
}

}  // namespace
}  // namespace syncbn::json

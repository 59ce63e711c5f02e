// A small, strict JSON (RFC 8259) reader and writer, used for every JSON the project reads or
// writes: safetensors headers (untrusted input, hence the strictness), the metrics lines
// (train/metrics.h) and `syncbn status --json`. Objects, arrays, strings with every escape,
// integers, numbers, true/false/null. Input must be valid UTF-8; duplicate object keys, trailing
// commas, comments, leading zeros, NaN and nesting deeper than kMaxDepth are rejected with a
// syncbn::Error giving the byte offset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace syncbn::json {

inline constexpr int kMaxDepth = 64;

class Value {
 public:
  enum class Kind { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  using Array = std::vector<Value>;
  // Members in document order; keys are unique.
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;  // null
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);  // must be finite
  static Value string(std::string v);
  static Value array(Array v);
  static Value object(Object v);

  Kind kind() const { return kind_; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  // Accessors for the matching kind (a mismatch is a programming error: check kind() first).
  bool as_bool() const;
  int64_t as_int() const;
  double as_double() const;  // kInt or kDouble
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  // The member named `key` of an object, or nullptr.
  const Value* find(std::string_view key) const;

 private:
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  Array array_;
  Object object_;
};

// "null", "bool", "integer", "number", "string", "array", "object".
const char* kind_name(Value::Kind kind);

// Parses one JSON value surrounded by optional whitespace. Integers without fraction or
// exponent that fit in int64 become kInt, other numbers kDouble.
Value parse(std::string_view text);

// Compact JSON ({"a":[1,2]}); strings keep non-ASCII UTF-8 as is and escape '"', '\' and
// control characters.
std::string serialize(const Value& value);
std::string quote(std::string_view text);

}  // namespace syncbn::json

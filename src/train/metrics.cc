#include "train/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "core/error.h"
#include "core/json.h"

namespace syncbn::train {
namespace {

// `value` as printf's `format` rounds it, or null when it is not finite.
json::Value rounded(double value, const char* format) {
  if (!std::isfinite(value)) return json::Value();
  char text[64];
  std::snprintf(text, sizeof(text), format, value);
  return json::Value::number(std::strtod(text, nullptr));
}

}  // namespace

std::string metrics_line(const MetricsRecord& r) {
  const bool train = r.kind == MetricsRecord::Kind::kTrain;
  json::Value::Object o = {{"kind", json::Value::string(train ? "train" : "eval")},
                           {"step", json::Value::integer(r.step)},
                           {"epoch", json::Value::integer(r.epoch)},
                           {"loss", rounded(r.loss, "%.9g")}};
  if (train) {
    o.emplace_back("lr", rounded(r.lr, "%.9g"));
    o.emplace_back("images_per_s", rounded(r.images_per_s, "%.1f"));
    o.emplace_back("sync_bn_comm_ms", rounded(r.sync_bn_comm_ms, "%.4f"));
  } else {
    o.emplace_back("accuracy", rounded(r.accuracy, "%.9g"));
  }
  return json::serialize(json::Value::object(std::move(o)));
}

std::optional<MetricsRecord> parse_metrics_line(const std::string& line, const std::string& where) {
  json::Value v;
  try {
    v = json::parse(line);
  } catch (const Error& e) {
    throw Error(str_cat(where, ": not JSON: ", e.what()));
  }
  const json::Value* kind = v.is_object() ? v.find("kind") : nullptr;
  SYNCBN_REQUIRE(kind != nullptr && kind->is_string(), where, ": expected a \"kind\" string");
  auto number = [&](const char* key, bool required) {
    const json::Value* n = v.find(key);
    if (!required && n == nullptr) return 0.0;
    if (!required && n->kind() == json::Value::Kind::kNull) return std::nan("");
    SYNCBN_REQUIRE(n != nullptr && (n->kind() == json::Value::Kind::kInt ||
                                    n->kind() == json::Value::Kind::kDouble),
                   where, ": expected a number '", key, "'");
    return n->as_double();
  };
  MetricsRecord r;
  if (kind->as_string() == "train") {
    r.kind = MetricsRecord::Kind::kTrain;
    r.step = static_cast<int64_t>(number("step", true));
    r.images_per_s = number("images_per_s", true);
    r.lr = number("lr", false);
    r.sync_bn_comm_ms = number("sync_bn_comm_ms", false);
  } else if (kind->as_string() == "eval") {
    r.kind = MetricsRecord::Kind::kEval;
    r.accuracy = number("accuracy", true);
    r.step = static_cast<int64_t>(number("step", false));
  } else {
    return std::nullopt;
  }
  r.loss = number("loss", r.kind == MetricsRecord::Kind::kEval);
  r.epoch = static_cast<int64_t>(number("epoch", false));
  return r;
}

}  // namespace syncbn::train

// train/metrics.h: the metrics file's lines as written and read back.
#include "train/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../common/test_util.h"

namespace syncbn::train {
namespace {

TEST(MetricsLine, WritesTheSchemaAndReadsItBack) {
  const MetricsRecord train{.kind = MetricsRecord::Kind::kTrain,
                            .step = 20,
                            .epoch = 1,
                            .loss = 0.1234567891234,
                            .lr = 0.05,
                            .images_per_s = 1234.56,
                            .sync_bn_comm_ms = 0.123456};
  const std::string line = metrics_line(train);
  EXPECT_EQ(line,
            "{\"kind\":\"train\",\"step\":20,\"epoch\":1,\"loss\":0.123456789,\"lr\":0.05,"
            "\"images_per_s\":1234.6,\"sync_bn_comm_ms\":0.1235}");
  const std::optional<MetricsRecord> back = parse_metrics_line(line, "m line 1");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->step, 20);
  EXPECT_EQ(back->epoch, 1);
  EXPECT_DOUBLE_EQ(back->images_per_s, 1234.6);

  const MetricsRecord eval{.kind = MetricsRecord::Kind::kEval,
                           .step = 20,
                           .epoch = 1,
                           .loss = std::numeric_limits<double>::infinity(),
                           .accuracy = 0.875};
  EXPECT_EQ(metrics_line(eval),
            "{\"kind\":\"eval\",\"step\":20,\"epoch\":1,\"loss\":null,\"accuracy\":0.875}");
  EXPECT_FALSE(parse_metrics_line("{\"kind\":\"note\"}", "m").has_value());
}

TEST(MetricsLine, RejectsLinesNamingTheLine) {
  using testing::expect_error;
  expect_error([] { parse_metrics_line("{\"kind\":", "m.jsonl line 3"); },
               {"m.jsonl line 3: not JSON"});
  expect_error([] { parse_metrics_line("{\"step\":1}", "m line 1"); }, {"\"kind\" string"});
  expect_error([] { parse_metrics_line("{\"kind\":\"train\",\"step\":1}", "m line 1"); },
               {"expected a number 'images_per_s'"});
  expect_error([] { parse_metrics_line("{\"kind\":\"eval\",\"loss\":null,\"accuracy\":1}", "m"); },
               {"expected a number 'loss'"});
}

}  // namespace
}  // namespace syncbn::train

// The pure parts of the batch-size study: config validation, the run list and its configs,
// resume keys, results.csv, metrics parsing, mean/std, the Markdown table, the SVG and the PNG.
#include "study/study.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <string>
#include <vector>

#include "../common/test_util.h"

namespace syncbn::study {
namespace {

using train::Config;
using train::Norm;
using train::parse_config;
using train::to_yaml;

using syncbn::testing::expect_error;
using syncbn::testing::read_file;
using syncbn::testing::ScratchDir;

const std::string kConfigs = std::string(SYNCBN_SOURCE_DIR) + "/configs";

// A study over an inline base; `replace` holds top-level "key: value" lines that replace (or add
// to) the defaults; a key with an empty value is left out.
std::string study_yaml(const std::vector<std::string>& replace = {}) {
  std::vector<std::pair<std::string, std::string>> keys = {
      {"base", "{train: {epochs: 1, lr: 0.1}, data: {train_limit: 256}}"},
      {"world_size", "4"},
      {"per_rank_batch", "[1, 4]"},
      {"norms", "[bn, syncbn, gn]"},
      {"seeds", "[1, 2]"}};
  for (const std::string& line : replace) {
    const size_t colon = line.find(':');
    const std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    auto it =
        std::find_if(keys.begin(), keys.end(), [&](const auto& kv) { return kv.first == key; });
    if (it == keys.end()) it = keys.insert(keys.end(), {key, ""});
    it->second = value;
  }
  std::string y;
  for (const auto& [key, value] : keys)
    if (!value.empty()) y += key + ": " + value + "\n";
  return y;
}

StudyConfig parse(const std::string& yaml) { return parse_study_config(yaml, "study.yaml", "."); }

TEST(StudyConfig, ParsesTheSweep) {
  const StudyConfig s =
      parse(study_yaml({"bn_group_size:[0, 2]",
                        "lr:{rule: linear, base_lr: 0.05, base_batch: 32, warmup_epochs: 0.5}"}));
  EXPECT_EQ(s.world_size, 4);
  EXPECT_EQ(s.per_rank_batches, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(s.norms, (std::vector<std::string>{"bn", "syncbn", "gn"}));
  EXPECT_EQ(s.bn_group_sizes, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(s.seeds, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(s.lr.rule, LrRule::kLinear);
  EXPECT_EQ(s.base.train.epochs, 1);
  EXPECT_EQ(s.base_source, "inline");
}

TEST(StudyConfig, TheShippedConfigsAreValid) {
  const StudyConfig real = load_study_config(kConfigs + "/study_batch_size.yaml");
  EXPECT_EQ(real.world_size, 4);
  EXPECT_EQ(real.norms, (std::vector<std::string>{"bn", "syncbn", "gn"}));
  EXPECT_GE(real.seeds.size(), 2u);
  // Every global batch divides the training set: every step is a full batch.
  for (int64_t b : real.per_rank_batches)
    EXPECT_EQ(real.base.data.train_limit % (b * real.world_size), 0) << b;
  const StudyConfig resnet = load_study_config(kConfigs + "/study_resnet20.yaml");
  EXPECT_EQ(resnet.base.model.preset, "resnet20");
  for (int64_t b : resnet.per_rank_batches)
    EXPECT_EQ(resnet.base.data.train_limit % (b * resnet.world_size), 0) << b;
  const StudyConfig tiny = load_study_config(kConfigs + "/study_tiny.yaml");
  EXPECT_EQ(tiny.world_size, 2);
  EXPECT_LE(expand_runs(tiny).size(), 4u);
}

TEST(StudyConfig, RejectsBadValuesNamingTheKey) {
  expect_error([] { parse(study_yaml({"per_rank_batch:[]"})); },
               {"'per_rank_batch'", "non-empty list"});
  expect_error([] { parse(study_yaml({"per_rank_batch:"})); }, {"'per_rank_batch' is required"});
  expect_error([] { parse(study_yaml({"per_rank_batch:[0, 2]"})); },
               {"'per_rank_batch'", "[1, 65536]", "got 0"});
  expect_error([] { parse(study_yaml({"per_rank_batch:[2, 2]"})); }, {"lists 2 twice"});
  expect_error([] { parse(study_yaml({"per_rank_batch:[two]"})); },
               {"'per_rank_batch[0]'", "'two'"});
  expect_error([] { parse(study_yaml() + "norms: [gn]\n"); }, {"study key 'norms' appears twice"});
  expect_error([] { parse(study_yaml({"seed:3"})); },
               {"unknown study key 'seed'", "allowed keys", "seeds"});
  expect_error([] { parse(study_yaml({"lr:{rule: linear, base_batch: 8, warm: 1}"})); },
               {"unknown study key 'lr.warm'", "warmup_epochs"});
  expect_error([] { parse(study_yaml({"lr:{rule: cubic}"})); },
               {"'lr.rule'", "linear, sqrt, fixed", "'cubic'"});
  expect_error([] { parse(study_yaml({"lr:{rule: linear}"})); }, {"'lr.base_batch' is required"});
  expect_error([] { parse(study_yaml({"bn_group_size:[3]"})); },
               {"'bn_group_size'", "divisors of world_size 4", "got 3"});
  expect_error([] { parse(study_yaml({"bn_group_size:[0, 4]"})); }, {"whole world twice"});
  expect_error([] { parse(study_yaml({"world_size:0"})); }, {"'world_size'", "[1, 1024]"});
  expect_error([] { parse(study_yaml({"seeds:"})); }, {"'seeds' is required"});
  expect_error([] { parse("world_size: 2\nper_rank_batch: [1]\nnorms: [bn]\nseeds: [1]\n"); },
               {"'base' is required"});
  expect_error([] { parse("base: [1]\nworld_size: 2\n"); }, {"'base'", "a path or a mapping"});
  // The base is validated by the training config's rules, and named.
  expect_error([] { parse(study_yaml({"set:[model.norm=batchnorm]"})); },
               {"study key 'base' (inline)", "model.norm", "syncbn"});
  expect_error([] { parse("base: {train: {epochs: 1}\n"); }, {"study.yaml: not valid YAML"});
  expect_error(
      [] {
        parse_study_config(
            "base: missing.yaml\nworld_size: 2\nper_rank_batch: [1]\nnorms: [bn]\nseeds: [1]\n",
            "s.yaml", "/nonexistent");
      },
      {"cannot read the training config '/nonexistent/missing.yaml'"});
  expect_error(
      [] {
        parse(
            "base: {train: {epochs: 1}}\nworld_size: 2\nper_rank_batch: [1]\nnorms: [bn]\n"
            "seeds: [1]\nlr: {rule: fixed, warmup_epochs: 1}\n");
      },
      {"'lr.warmup_epochs' needs data.train_limit > 0"});
}

TEST(StudyConfig, RejectsABadNormListingTheAllowedOnes) {
  expect_error([] { parse(study_yaml({"norms:[bn, batchnorm]"})); },
               {"'norms'", "bn, syncbn, gn, ln, in, none", "'batchnorm'"});
}

TEST(StudyRuns, ExpandSeedsOutermostWithGroupsAndLr) {
  const StudyConfig s = parse(
      "base: {train: {epochs: 2, warmup_steps: 7}, data: {train_limit: 64}}\nworld_size: 4\n"
      "per_rank_batch: [1, 4]\nnorms: [bn, syncbn, gn]\nbn_group_size: [0, 2]\nseeds: [5, 6]\n"
      "lr: {rule: linear, base_lr: 0.1, base_batch: 16, warmup_epochs: 0.5}\n");
  const std::vector<RunSpec> runs = expand_runs(s);
  ASSERT_EQ(runs.size(), 2u * 2u * 4u);  // seeds × batches × (bn, syncbn G=4, syncbn G=2, gn)
  const std::vector<std::string> first = {"bn-b1-s5", "syncbn-b1-s5", "syncbn-g2-b1-s5", "gn-b1-s5",
                                          "bn-b4-s5"};
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(runs[i].name(), first[i]);
  EXPECT_EQ(runs[8].name(), "bn-b1-s6");
  EXPECT_EQ(runs[1].bn_group_size, 4);
  EXPECT_EQ(runs[2].label(), "syncbn-g2");
  EXPECT_EQ(runs[0].bn_group_size, 1);
  EXPECT_EQ(runs[3].bn_group_size, 0);

  const Config c = run_config(s, runs[5]);  // syncbn G=4, per-rank 4, global 16
  EXPECT_EQ(c.model.norm, Norm::kSyncBn);
  EXPECT_EQ(c.model.bn_group_size, 4);
  EXPECT_EQ(c.train.per_rank_batch, 4);
  EXPECT_EQ(c.seed, 5u);
  EXPECT_DOUBLE_EQ(c.train.lr, 0.1);
  EXPECT_EQ(c.train.warmup_steps, 2);  // 0.5 × 64/16 steps
  EXPECT_TRUE(c.checkpoint.dir.empty());
  const Config small = run_config(s, runs[0]);  // global 4
  EXPECT_DOUBLE_EQ(small.train.lr, 0.025);
  EXPECT_EQ(small.train.warmup_steps, 8);
  EXPECT_EQ(small.model.norm, Norm::kBn);

  StudyConfig sq = s;
  sq.lr.rule = LrRule::kSqrt;
  EXPECT_DOUBLE_EQ(run_lr(sq, 4), 0.05);
  sq.lr.rule = LrRule::kFixed;
  EXPECT_DOUBLE_EQ(run_lr(sq, 4), 0.1);
  // The generated config is a valid training config that says the same.
  EXPECT_EQ(to_yaml(parse_config(to_yaml(c))), to_yaml(c));
}

TEST(StudyRuns, StudyHashCoversWhatRunsShareButNotTheSweep) {
  const std::string h = study_hash(parse(study_yaml()));
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(study_hash(parse(study_yaml())), h);
  // Sweep lists may grow: same study.
  EXPECT_EQ(study_hash(parse(study_yaml({"seeds:[1, 2, 3]", "norms:[bn]"}))), h);
  EXPECT_EQ(study_hash(parse(study_yaml({"per_rank_batch:[1, 4, 8]"}))), h);
  // What every run shares: a different study.
  EXPECT_NE(study_hash(parse(study_yaml({"set:[data.train_limit=128]"}))), h);
  EXPECT_NE(study_hash(parse(study_yaml({"world_size:2"}))), h);
  EXPECT_NE(study_hash(parse(study_yaml({"lr:{rule: linear, base_batch: 8}"}))), h);
}

RunResult sample_result(const std::string& norm, int64_t batch, uint64_t seed, double error) {
  RunResult r;
  r.spec.norm = norm;
  r.spec.per_rank_batch = batch;
  r.spec.bn_group_size = norm == "syncbn" ? 4 : (norm == "bn" ? 1 : 0);
  r.spec.seed = seed;
  r.spec.world_size = 4;
  r.lr = 0.0125;
  r.steps = 96;
  r.epochs = 2;
  r.test_error = error;
  r.test_loss = 0.5;
  r.images_per_s = 321.5;
  r.sync_bn_comm_ms = norm == "syncbn" ? 0.25 : 0;
  r.wall_s = 12.5;
  r.study_hash = "0123456789abcdef";
  r.config_hash = "fedcba9876543210";
  return r;
}

TEST(ResultsCsv, RoundTripsAndKeysByRunName) {
  const std::vector<RunResult> in = {sample_result("bn", 2, 1, 0.25),
                                     sample_result("syncbn", 2, 1, 0.125),
                                     sample_result("gn", 32, 7, 0.1)};
  std::string text = csv_header();
  for (const RunResult& r : in) text += csv_row(r);
  EXPECT_EQ(csv_header(),
            "run,norm,per_rank_batch,bn_group_size,seed,world_size,global_batch,lr,steps,epochs,"
            "test_error,test_loss,images_per_s,sync_bn_comm_ms,wall_s,study_hash,config_hash\n");
  EXPECT_EQ(csv_row(in[0]).substr(0, 18), "bn-b2-s1,bn,2,1,1,");
  EXPECT_NE(csv_row(in[2]).find("gn-b32-s7,gn,32,,7,4,128,"), std::string::npos);
  const std::vector<RunResult> out = parse_results_csv(text, "results.csv");
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].spec.name(), in[i].spec.name());
    EXPECT_EQ(out[i].spec.bn_group_size, in[i].spec.bn_group_size);
    EXPECT_DOUBLE_EQ(out[i].test_error, in[i].test_error);
    EXPECT_DOUBLE_EQ(out[i].lr, in[i].lr);
    EXPECT_EQ(out[i].steps, 96);
    EXPECT_DOUBLE_EQ(out[i].images_per_s, 321.5);
    EXPECT_EQ(out[i].study_hash, in[i].study_hash);
    EXPECT_EQ(out[i].config_hash, in[i].config_hash);
  }
  EXPECT_TRUE(parse_results_csv(csv_header(), "r.csv").empty());
}

TEST(ResultsCsv, RejectsAForeignHeaderAndBadRows) {
  expect_error([] { parse_results_csv("a,b\n", "r.csv"); }, {"r.csv", "unexpected header"});
  const std::string row = csv_row(sample_result("bn", 2, 1, 0.25));
  std::string bad = row;
  bad.replace(bad.find(",0.250000,"), 10, ",zero,");
  expect_error([&] { parse_results_csv(csv_header() + bad, "r.csv"); },
               {"r.csv line 2", "'test_error'", "'zero'"});
  expect_error([&] { parse_results_csv(csv_header() + "bn-b2-s1,bn,2\n", "r.csv"); },
               {"line 2", "3 columns, expected 17"});
  std::string renamed = row;
  renamed.replace(0, 8, "bn-b4-s1");
  expect_error([&] { parse_results_csv(csv_header() + renamed, "r.csv"); }, {"inconsistent run"});
}

TEST(Metrics, TestErrorThroughputAndCommTime) {
  const std::string jsonl =
      "{\"kind\":\"train\",\"step\":10,\"epoch\":0,\"loss\":2.0,\"lr\":0.1,\"images_per_s\":10.0,"
      "\"sync_bn_comm_ms\":9.0}\n"
      "{\"kind\":\"train\",\"step\":20,\"epoch\":0,\"loss\":1.5,\"lr\":0.1,\"images_per_s\":100.0,"
      "\"sync_bn_comm_ms\":1.0}\n"
      "{\"kind\":\"train\",\"step\":25,\"epoch\":0,\"loss\":1.0,\"lr\":0.1,\"images_per_s\":50.0,"
      "\"sync_bn_comm_ms\":4.0}\n"
      "{\"kind\":\"eval\",\"step\":25,\"epoch\":0,\"loss\":0.75,\"accuracy\":0.875}\n";
  const RunMetrics m = parse_metrics(jsonl, "m.jsonl");
  EXPECT_EQ(m.steps, 25);
  EXPECT_DOUBLE_EQ(m.test_accuracy, 0.875);
  EXPECT_DOUBLE_EQ(m.test_loss, 0.75);
  // The first window is start-up: 15 steps of which 10 at 100 img/s and 5 at 50 img/s.
  EXPECT_DOUBLE_EQ(m.images_per_s, 15.0 / (10.0 / 100.0 + 5.0 / 50.0));
  EXPECT_DOUBLE_EQ(m.sync_bn_comm_ms, (10.0 * 1.0 + 5.0 * 4.0) / 15.0);
  // Metrics without the field (runs without SyncBN timing) count as zero.
  const RunMetrics old = parse_metrics(
      "{\"kind\":\"train\",\"step\":4,\"images_per_s\":8}\n"
      "{\"kind\":\"eval\",\"loss\":1,\"accuracy\":0.5}\n",
      "m");
  EXPECT_DOUBLE_EQ(old.images_per_s, 8.0);
  EXPECT_DOUBLE_EQ(old.sync_bn_comm_ms, 0.0);
  expect_error([] { parse_metrics("{\"kind\":\"train\",\"step\":4,\"images_per_s\":8}\n", "m"); },
               {"no \"eval\" record"});
  expect_error([] { parse_metrics("{\"kind\":\"eval\",\"loss\":1,\"accuracy\":0.5}\n", "m"); },
               {"no \"train\" record"});
  expect_error([] { parse_metrics("{\"kind\":\"train\",\n", "m.jsonl"); },
               {"m.jsonl line 1", "not JSON"});
}

TEST(Summary, MeanAndSampleStd) {
  const MeanStd m = mean_std({2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0});
  EXPECT_EQ(m.n, 8);
  EXPECT_DOUBLE_EQ(m.mean, 5.0);
  EXPECT_NEAR(m.std, std::sqrt(32.0 / 7.0), 1e-12);  // n − 1, as torch.std
  const MeanStd one = mean_std({3.5});
  EXPECT_DOUBLE_EQ(one.mean, 3.5);
  EXPECT_DOUBLE_EQ(one.std, 0.0);
  EXPECT_EQ(mean_std({}).n, 0);
}

std::vector<RunResult> sample_results() {
  std::vector<RunResult> rs;
  for (uint64_t seed : {1, 2})
    for (int64_t b : {1, 2, 8}) {
      const double d = seed == 1 ? -0.01 : 0.01;
      rs.push_back(sample_result("bn", b, seed, 0.40 / static_cast<double>(b) + d));
      rs.push_back(sample_result("syncbn", b, seed, 0.10 + d));
      rs.push_back(sample_result("gn", b, seed, 0.12 + d));
    }
  return rs;
}

TEST(Summary, SeriesAndMarkdownTable) {
  const std::vector<Series> series = error_series(sample_results());
  ASSERT_EQ(series.size(), 3u);
  EXPECT_EQ(series[0].label, "bn");
  EXPECT_EQ(series[1].label, "syncbn");
  EXPECT_EQ(series[0].per_rank_batches, (std::vector<int64_t>{1, 2, 8}));
  EXPECT_NEAR(series[0].error_pct[0].mean, 40.0, 1e-9);
  EXPECT_NEAR(series[0].error_pct[0].std, std::sqrt(2.0), 1e-9);
  EXPECT_EQ(series[2].error_pct[1].n, 2);

  const std::string md = results_markdown(sample_results(), "About this study.");
  EXPECT_NE(md.find("About this study."), std::string::npos);
  EXPECT_NE(md.find("| per-rank batch | global batch | bn | syncbn | gn |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("| 1 | 4 | 40.00 ± 1.41 (2) | 10.00 ± 1.41 (2) | 12.00 ± 1.41 (2) |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| 8 | 32 | 5.00 ± 1.41 (2) |"), std::string::npos) << md;
  EXPECT_NE(md.find("syncbn comm ms/step"), std::string::npos);
  EXPECT_NE(md.find("| 2 | 322 | 322 | 322 | 0.250 |"), std::string::npos) << md;
  EXPECT_NE(md.find("18 runs, 3.8 min"), std::string::npos) << md;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(Plot, SvgHasOneLinePerNormAxesAndLegend) {
  const std::string svg = error_plot_svg(error_series(sample_results()), "Title & <test>");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(count(svg, "<polyline class=\"series\""), 3u);
  EXPECT_EQ(count(svg, "data-label=\"syncbn\""), 2u);  // the line and its error bars
  EXPECT_NE(svg.find("Title &amp; &lt;test&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">per-rank batch size (log2 scale)</text>"), std::string::npos);
  EXPECT_NE(svg.find(">test error (%)</text>"), std::string::npos);
  for (const char* tick : {">1</text>", ">2</text>", ">4</text>", ">8</text>"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  EXPECT_EQ(count(svg, "<circle"), 9u + 3u);  // markers + legend
  // Error bars: a vertical line and two caps per point with a spread (all 9 have one).
  EXPECT_EQ(count(svg, "<g class=\"errorbars\""), 3u);
  EXPECT_EQ(count(svg, "\"/><line x1="), 9u * 2u);
  // Log2 x: batches 1, 2, 8 are equally spaced per doubling.
  const size_t p = svg.find("points=\"");
  const std::string points = svg.substr(p + 8, svg.find('"', p + 8) - p - 8);
  double x1, y1, x2, y2, x3, y3;
  ASSERT_EQ(std::sscanf(points.c_str(), "%lf,%lf %lf,%lf %lf,%lf", &x1, &y1, &x2, &y2, &x3, &y3), 6)
      << points;
  EXPECT_NEAR(x3 - x2, 2 * (x2 - x1), 0.02);
  EXPECT_GT(y2, y1);  // bn's error falls with the batch: lower on the page means larger y
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | b[at + 3];
}

TEST(Plot, PngIsAValidRenderingOfTheSvg) {
  ScratchDir dir;
  const std::string svg =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"30\">"
      "<rect x=\"20\" y=\"0\" width=\"20\" height=\"30\" fill=\"#ff0000\"/></svg>";
  render_svg_to_png(svg, dir.file("a.png"), 2.0);
  const std::vector<uint8_t> png = read_file(dir.file("a.png"));
  ASSERT_GT(png.size(), 8u + 25u + 12u);
  const std::vector<uint8_t> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  ASSERT_TRUE(std::equal(signature.begin(), signature.end(), png.begin()));
  // Chunks: length, type, data, CRC-32 over type and data; IHDR first, IEND last.
  std::vector<std::string> types;
  std::vector<uint8_t> idat;
  uint32_t width = 0, height = 0;
  uint8_t bit_depth = 0, color_type = 0;
  for (size_t at = 8; at < png.size();) {
    ASSERT_LE(at + 12, png.size());
    const uint32_t length = be32(png, at);
    ASSERT_LE(at + 12 + length, png.size());
    const std::string type(png.begin() + static_cast<long>(at) + 4,
                           png.begin() + static_cast<long>(at) + 8);
    const uint32_t crc = static_cast<uint32_t>(crc32(0, png.data() + at + 4, length + 4));
    EXPECT_EQ(crc, be32(png, at + 8 + length)) << "CRC of chunk " << type;
    if (type == "IHDR") {
      width = be32(png, at + 8);
      height = be32(png, at + 12);
      bit_depth = png[at + 16];
      color_type = png[at + 17];
    }
    if (type == "IDAT")
      idat.insert(idat.end(), png.begin() + at + 8, png.begin() + at + 8 + length);
    types.push_back(type);
    at += 12 + length;
  }
  ASSERT_FALSE(types.empty());
  EXPECT_EQ(types.front(), "IHDR");
  EXPECT_EQ(types.back(), "IEND");
  EXPECT_EQ(width, 80u);
  EXPECT_EQ(height, 60u);
  ASSERT_EQ(bit_depth, 8);
  const size_t channels = color_type == 6 ? 4 : (color_type == 2 ? 3 : 0);
  ASSERT_NE(channels, 0u) << "color type " << int(color_type);
  // The pixels: left half white (the background), right half red.
  std::vector<uint8_t> raw(height * (1 + width * channels));
  uLongf raw_size = raw.size();
  ASSERT_EQ(uncompress(raw.data(), &raw_size, idat.data(), idat.size()), Z_OK);
  ASSERT_EQ(raw_size, raw.size());
  // Undo the per-row filters (PNG spec §9) to read two pixels of the middle row.
  std::vector<uint8_t> prev(width * channels, 0), row(width * channels);
  for (uint32_t y = 0; y <= height / 2; ++y) {
    const uint8_t* line = raw.data() + y * (1 + width * channels);
    const uint8_t filter = line[0];
    for (size_t i = 0; i < row.size(); ++i) {
      const int a = i >= channels ? row[i - channels] : 0, b = prev[i],
                c = i >= channels ? prev[i - channels] : 0;
      int predictor = 0;
      if (filter == 1) predictor = a;
      if (filter == 2) predictor = b;
      if (filter == 3) predictor = (a + b) / 2;
      if (filter == 4) {
        const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
      }
      row[i] = static_cast<uint8_t>(line[1 + i] + predictor);
    }
    prev = row;
  }
  const uint8_t* left = row.data() + 10 * channels;
  const uint8_t* right = row.data() + 60 * channels;
  EXPECT_EQ(std::vector<int>(left, left + 3), (std::vector<int>{255, 255, 255}));
  EXPECT_EQ(std::vector<int>(right, right + 3), (std::vector<int>{255, 0, 0}));

  expect_error([&] { render_svg_to_png("<svg", dir.file("b.png")); }, {"cannot parse the SVG"});
}

}  // namespace
}  // namespace syncbn::study

// The CIFAR-10 binary reader, on files in that format written by the test: the records in order
// across files, and every way a file can be wrong.
#include "data/cifar10.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "test_util.h"

namespace syncbn::data {
namespace {

using testing::cifar_records;
using testing::expect_error;
using testing::ScratchDir;
using testing::write_file;

// A scratch directory holding a valid CIFAR-10 set: data_batch_k.bin with kTrainCounts[k-1]
// records, test_batch.bin with 4; samples are numbered across the training files.
class CifarFiles : public ::testing::Test {
 protected:
  static constexpr uint32_t kTrainCounts[5] = {3, 1, 2, 4, 2};
  static constexpr uint32_t kTrainTotal = 12;

  std::string train_file(int k) const {
    return dir_.file("data_batch_" + std::to_string(k) + ".bin");
  }
  std::string test_file() const { return dir_.file("test_batch.bin"); }
  void write_valid() {
    uint32_t first = 0;
    for (int k = 1; k <= 5; ++k) {
      write_file(train_file(k), cifar_records(first, kTrainCounts[k - 1]));
      first += kTrainCounts[k - 1];
    }
    write_file(test_file(), cifar_records(100, 4));
  }
  Dataset load(int64_t limit = 0, Split split = Split::kTrain) const {
    return load_cifar10(dir_.path(), split, limit);
  }
  ScratchDir dir_;
};

TEST_F(CifarFiles, RecordsLoadInFileOrder) {
  write_valid();
  const Dataset ds = load();
  ASSERT_EQ(ds.count, kTrainTotal);
  std::vector<uint8_t> want_pixels;
  std::vector<int32_t> want_labels;
  const std::vector<uint8_t> records = cifar_records(0, kTrainTotal);
  for (uint32_t i = 0; i < kTrainTotal; ++i) {
    const auto record = records.begin() + i * 3073;
    want_labels.push_back(*record);
    want_pixels.insert(want_pixels.end(), record + 1, record + 3073);
  }
  EXPECT_EQ(ds.labels, want_labels);
  EXPECT_EQ(ds.pixels, want_pixels);
  // Byte p of a record is channel p / 1024, row p % 1024 / 32, column p % 32: sample 7, green,
  // row 3, column 5.
  EXPECT_EQ(ds.pixels[7 * 3072 + 1 * 1024 + 3 * 32 + 5], (7 * 5 + 1024 + 3 * 32 + 5) % 256);

  const Dataset test = load(0, Split::kTest);
  EXPECT_EQ(test.count, 4);
  EXPECT_EQ(test.labels, (std::vector<int32_t>{0, 1, 2, 3}));  // samples 100..103
}

TEST_F(CifarFiles, ShapeNormalizationAndAugmentation) {
  write_valid();
  const Dataset ds = load();
  EXPECT_EQ(ds.info.name, "cifar10");
  EXPECT_EQ(ds.info.channels, 3);
  EXPECT_EQ(ds.info.height, 32);
  EXPECT_EQ(ds.info.width, 32);
  EXPECT_EQ(ds.info.num_classes, 10);
  EXPECT_EQ(ds.sample_size(), 3072);
  EXPECT_EQ(ds.mean, (std::vector<double>{0.4914, 0.4822, 0.4465}));
  EXPECT_EQ(ds.stddev, (std::vector<double>{0.2470, 0.2435, 0.2616}));
  EXPECT_EQ(ds.crop_padding, 4);
  const DatasetInfo info = dataset_info(Format::kCifar10);
  EXPECT_EQ(info.name, "cifar10");
  EXPECT_EQ(info.channels * info.height * info.width, 3072);
  const Dataset via = load_dataset(parse_format("cifar10"), dir_.path(), Split::kTrain, 5);
  EXPECT_EQ(via.count, 5);
  EXPECT_EQ(via.labels, (std::vector<int32_t>(ds.labels.begin(), ds.labels.begin() + 5)));
  EXPECT_STREQ(to_string(Format::kCifar10), "cifar10");
}

TEST_F(CifarFiles, LimitReadsAPrefixAcrossFiles) {
  write_valid();
  const Dataset all = load();
  for (int64_t limit : {1, 3, 4, 5, 11, 12}) {
    const Dataset ds = load(limit);
    ASSERT_EQ(ds.count, limit);
    EXPECT_EQ(ds.labels, (std::vector<int32_t>(all.labels.begin(), all.labels.begin() + limit)));
    EXPECT_EQ(ds.pixels,
              (std::vector<uint8_t>(all.pixels.begin(), all.pixels.begin() + limit * 3072)));
  }
  EXPECT_EQ(load(1000).count, kTrainTotal);  // a limit beyond the files reads them all
  expect_error([&] { load(-1); }, {"limit", "-1"});
}

TEST_F(CifarFiles, MissingDirectorySaysWhereToGetTheData) {
  expect_error(
      [] { load_cifar10("/nonexistent/cifar", Split::kTrain); },
      {"/nonexistent/cifar", "does not exist", "cifar-10-binary.tar.gz", "cifar-10-batches-bin"});
}

TEST_F(CifarFiles, MissingFile) {
  write_valid();
  std::filesystem::remove(train_file(3));
  expect_error([&] { load(); },
               {train_file(3), "no such file", "data_batch_1.bin .. data_batch_5.bin"});
  // Checked even when the limit is reached before it.
  expect_error([&] { load(1); }, {train_file(3), "no such file"});
  std::filesystem::remove(test_file());
  expect_error([&] { load(0, Split::kTest); }, {test_file(), "no such file", "test_batch.bin"});
}

TEST_F(CifarFiles, PythonVersionIsRecognized) {
  for (const char* name : {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                           "data_batch_5", "test_batch", "batches.meta"}) {
    write_file(dir_.file(name), {0x80, 0x02});
  }
  expect_error([&] { load(); }, {"no such file", "holds the Python version", "binary version"});
}

TEST_F(CifarFiles, SizeNotAWholeNumberOfRecords) {
  write_valid();
  std::vector<uint8_t> cut = cifar_records(3, 1);
  cut.resize(1000);  // a download cut mid-record
  write_file(train_file(2), cut);
  expect_error([&] { load(); }, {train_file(2), "1000 bytes is not a whole number of 3073-byte",
                                 "0 records and 1000 bytes over", "truncated"});
  // CIFAR-100's binary records have two label bytes.
  std::vector<uint8_t> cifar100(3 * 3074, 1);
  write_file(train_file(2), cifar100);
  expect_error([&] { load(); }, {train_file(2), "9222 bytes", "3073-byte records"});
  // Too long by part of a record is as wrong as too short.
  std::vector<uint8_t> extra = cifar_records(3, 1);
  extra.push_back(0);
  write_file(train_file(2), extra);
  expect_error([&] { load(); }, {train_file(2), "1 records and 1 bytes over"});
  expect_error([&] { load(1); }, {train_file(2), "3074 bytes"});  // even beyond the limit
}

TEST_F(CifarFiles, EmptyFile) {
  write_valid();
  write_file(test_file(), {});
  expect_error([&] { load(0, Split::kTest); }, {test_file(), "empty", "3073-byte"});
}

TEST_F(CifarFiles, NotARegularFile) {
  write_valid();
  std::filesystem::remove(test_file());
  std::filesystem::create_directory(test_file());
  expect_error([&] { load(0, Split::kTest); }, {test_file(), "not a regular file"});
}

TEST_F(CifarFiles, LabelOutOfRange) {
  write_valid();
  // Samples 4, 5 are data_batch_3.bin's records 0, 1.
  write_file(train_file(3), cifar_records(4, 2, [](uint32_t i) { return i == 5 ? 10 : 1; }));
  expect_error([&] { load(); }, {train_file(3), "label 10 of record 1 (byte offset 3073)",
                                 "out of range; expected 0..9"});
  EXPECT_EQ(load(5).count, 5);  // a prefix read does not look at the labels it does not need
  write_file(train_file(3), cifar_records(4, 2, [](uint32_t) { return 255; }));
  expect_error([&] { load(); }, {train_file(3), "label 255 of record 0"});
}

}  // namespace
}  // namespace syncbn::data

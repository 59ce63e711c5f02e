#include "data/cifar10.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace syncbn::data {

namespace {

constexpr int64_t kPixelBytes = kCifar10RecordBytes - 1;

std::string where_to_get_it() {
  return "download CIFAR-10's binary version (cifar-10-binary.tar.gz from "
         "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and set data.dir to its "
         "cifar-10-batches-bin directory";
}

// The number of records in `path`, from its size; the file must hold a positive whole number.
int64_t count_records(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  SYNCBN_REQUIRE(fs::is_regular_file(path, ec), path, ": not a regular file; expected a file of ",
                 kCifar10RecordBytes, "-byte CIFAR-10 records");
  const uintmax_t size = fs::file_size(path, ec);
  SYNCBN_REQUIRE(!ec, path, ": cannot read its size: ", ec.message());
  SYNCBN_REQUIRE(size > 0, path, ": empty; expected ", kCifar10RecordBytes,
                 "-byte CIFAR-10 records (1 label byte + 3x32x32 pixel bytes)");
  SYNCBN_REQUIRE(size % kCifar10RecordBytes == 0, path, ": ", size,
                 " bytes is not a whole number of ", kCifar10RecordBytes,
                 "-byte records (1 label byte + 3x32x32 pixel bytes; ", size / kCifar10RecordBytes,
                 " records and ", size % kCifar10RecordBytes,
                 " bytes over); the file is truncated or not CIFAR-10's binary version");
  return static_cast<int64_t>(size / kCifar10RecordBytes);
}

// Appends the first `records` records of `path` to `ds`, checking every label.
void read_records(const std::string& path, int64_t records, Dataset& ds) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  SYNCBN_REQUIRE(in.is_open(), path, ": cannot open: ", errno ? std::strerror(errno) : "unknown");
  std::vector<char> buffer(static_cast<size_t>(kCifar10RecordBytes));
  ds.pixels.reserve(ds.pixels.size() + static_cast<size_t>(records * kPixelBytes));
  for (int64_t r = 0; r < records; ++r) {
    in.read(buffer.data(), kCifar10RecordBytes);
    SYNCBN_REQUIRE(in.gcount() == kCifar10RecordBytes, path, ": truncated: record ", r,
                   " ends after ", in.gcount(), " of its ", kCifar10RecordBytes, " bytes");
    const auto label = static_cast<uint8_t>(buffer[0]);
    SYNCBN_REQUIRE(label < kCifar10Classes, path, ": label ", int{label}, " of record ", r,
                   " (byte offset ", r * kCifar10RecordBytes, ") is out of range; expected 0..",
                   kCifar10Classes - 1);
    ds.labels.push_back(label);
    ds.pixels.insert(ds.pixels.end(), buffer.begin() + 1, buffer.end());
  }
}

}  // namespace

DatasetInfo cifar10_info() {
  return DatasetInfo{"cifar10", kCifar10Channels, kCifar10Side, kCifar10Side, kCifar10Classes};
}

std::vector<std::string> cifar10_files(Split split) {
  if (split == Split::kTest) return {"test_batch.bin"};
  std::vector<std::string> names;
  for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  return names;
}

Dataset load_cifar10(const std::string& dir, Split split, int64_t limit) {
  SYNCBN_REQUIRE(limit >= 0, "CIFAR-10 sample limit is ", limit,
                 "; expected 0 (all samples) or a positive count");
  namespace fs = std::filesystem;
  std::error_code ec;
  SYNCBN_REQUIRE(fs::is_directory(dir, ec), "CIFAR-10 directory ", dir, " does not exist; ",
                 where_to_get_it());
  std::vector<std::string> paths;
  std::vector<int64_t> counts;
  for (const std::string& name : cifar10_files(split)) {
    const fs::path path = fs::path(dir) / name;
    if (!fs::exists(path, ec)) {
      // The Python version names its pickles like the binary files, without ".bin".
      const bool python_version = fs::exists(fs::path(dir) / path.stem(), ec);
      throw Error(str_cat(
          path.string(), ": no such file; expected the ", to_string(split),
          " split of CIFAR-10's binary version (",
          split == Split::kTrain ? "data_batch_1.bin .. data_batch_5.bin" : "test_batch.bin", ")",
          python_version ? "; this directory holds the Python version, whose "
                           "files are pickles"
                         : "",
          "; ", where_to_get_it()));
    }
    paths.push_back(path.string());
    counts.push_back(count_records(path.string()));
  }

  Dataset ds;
  ds.info = cifar10_info();
  ds.mean.assign(std::begin(kCifar10Mean), std::end(kCifar10Mean));
  ds.stddev.assign(std::begin(kCifar10Std), std::end(kCifar10Std));
  ds.crop_padding = kCifar10CropPadding;
  for (size_t f = 0; f < paths.size(); ++f) {
    const int64_t want = limit == 0 ? counts[f] : std::min(counts[f], limit - ds.count);
    if (want == 0) break;
    read_records(paths[f], want, ds);
    ds.count += want;
  }
  return ds;
}

}  // namespace syncbn::data

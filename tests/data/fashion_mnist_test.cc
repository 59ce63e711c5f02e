// The IDX reader: the real Debian files against Python's gzip module, and every way a file can
// be wrong, each written by the test into a scratch directory.
#include "data/fashion_mnist.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <map>
#include <sstream>

#include "test_util.h"

namespace syncbn::data {
namespace {

using testing::expect_error;
using testing::idx_images;
using testing::idx_labels;
using testing::ScratchDir;
using testing::write_gz;

// Facts about the files computed by /usr/bin/python3 with its own gzip module: counts and
// sizes from the headers, CRC-32 and sum of the pixel bytes, the first labels, the label
// histogram.
struct PythonFacts {
  int64_t count = 0, rows = 0, cols = 0;
  uint32_t pixel_crc = 0;
  uint64_t pixel_sum = 0;
  uint32_t prefix_crc = 0;  // of the first 100 images
  std::vector<int> first_labels;
  std::map<int, int64_t> histogram;
};

PythonFacts python_facts(Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string script =
      "import gzip, struct, sys, zlib, collections\n"
      "d = sys.argv[1]; p = sys.argv[2]\n"
      "img = gzip.open(d + '/' + p + '-images-idx3-ubyte.gz').read()\n"
      "lab = gzip.open(d + '/' + p + '-labels-idx1-ubyte.gz').read()\n"
      "magic, n, r, c = struct.unpack('>IIII', img[:16])\n"
      "assert magic == 0x803 and struct.unpack('>II', lab[:8]) == (0x801, n)\n"
      "px = img[16:]; lb = lab[8:]\n"
      "assert len(px) == n * r * c and len(lb) == n\n"
      "print(n, r, c, zlib.crc32(px), sum(px), zlib.crc32(px[:100 * r * c]))\n"
      "print(' '.join(str(x) for x in lb[:20]))\n"
      "h = collections.Counter(lb)\n"
      "print(' '.join('%d:%d' % (k, h[k]) for k in sorted(h)))\n";
  const std::string out = testing::run_command("/usr/bin/python3 -c \"" + script + "\" " +
                                               kFashionMnistDir + " " + prefix);
  std::istringstream in(out);
  PythonFacts f;
  std::string line;
  std::getline(in, line);
  std::istringstream(line) >> f.count >> f.rows >> f.cols >> f.pixel_crc >> f.pixel_sum >>
      f.prefix_crc;
  std::getline(in, line);
  std::istringstream labels(line);
  for (int v; labels >> v;) f.first_labels.push_back(v);
  std::getline(in, line);
  std::istringstream hist(line);
  for (std::string kv; hist >> kv;) {
    const size_t colon = kv.find(':');
    f.histogram[std::stoi(kv.substr(0, colon))] = std::stoll(kv.substr(colon + 1));
  }
  return f;
}

uint32_t crc_of(const uint8_t* data, size_t size) {
  return static_cast<uint32_t>(crc32(0, data, static_cast<uInt>(size)));
}

void expect_matches_python(Split split, int64_t expected_count) {
  const PythonFacts py = python_facts(split);
  ASSERT_EQ(py.count, expected_count);  // the published sizes of Fashion-MNIST
  const Dataset ds = load_fashion_mnist(kFashionMnistDir, split);
  ASSERT_EQ(ds.count, expected_count);
  EXPECT_EQ(ds.info.name, "fashion_mnist");
  EXPECT_EQ(ds.info.channels, 1);
  EXPECT_EQ(ds.info.height, 28);
  EXPECT_EQ(ds.info.width, 28);
  EXPECT_EQ(ds.info.num_classes, 10);
  ASSERT_EQ(ds.pixels.size(), static_cast<size_t>(expected_count * 28 * 28));
  ASSERT_EQ(ds.labels.size(), static_cast<size_t>(expected_count));
  EXPECT_EQ(crc_of(ds.pixels.data(), ds.pixels.size()), py.pixel_crc);
  uint64_t sum = 0;
  for (uint8_t v : ds.pixels) sum += v;
  EXPECT_EQ(sum, py.pixel_sum);
  ASSERT_EQ(py.first_labels.size(), 20u);
  for (size_t i = 0; i < py.first_labels.size(); ++i)
    EXPECT_EQ(ds.labels[i], py.first_labels[i]) << "label " << i;
  // Fashion-MNIST is balanced: 6000 (train) or 1000 (test) images of each of the 10 classes.
  std::map<int, int64_t> histogram;
  for (int32_t l : ds.labels) ++histogram[l];
  EXPECT_EQ(histogram, py.histogram);
  ASSERT_EQ(histogram.size(), 10u);
  for (const auto& [label, n] : histogram) EXPECT_EQ(n, expected_count / 10) << "class " << label;
}

TEST(FashionMnist, TrainSplitMatchesPython) { expect_matches_python(Split::kTrain, 60000); }

TEST(FashionMnist, TestSplitMatchesPython) { expect_matches_python(Split::kTest, 10000); }

TEST(FashionMnist, FirstTrainingLabelIsAnkleBoot) {
  // The first training image of Fashion-MNIST is an ankle boot (class 9), like the test set's.
  EXPECT_EQ(load_fashion_mnist(kFashionMnistDir, Split::kTrain, 1).labels.at(0), 9);
  EXPECT_EQ(load_fashion_mnist(kFashionMnistDir, Split::kTest, 1).labels.at(0), 9);
}

TEST(FashionMnist, LimitReadsAPrefix) {
  const PythonFacts py = python_facts(Split::kTrain);
  const Dataset ds = load_fashion_mnist(kFashionMnistDir, Split::kTrain, 100);
  EXPECT_EQ(ds.count, 100);
  ASSERT_EQ(ds.pixels.size(), 100u * 784u);
  EXPECT_EQ(crc_of(ds.pixels.data(), ds.pixels.size()), py.prefix_crc);
  for (size_t i = 0; i < py.first_labels.size(); ++i) EXPECT_EQ(ds.labels[i], py.first_labels[i]);
}

TEST(FashionMnist, ThroughTheDatasetInterface) {
  const Dataset direct = load_fashion_mnist(kFashionMnistDir, Split::kTest, 50);
  const Dataset ds = load_dataset(Format::kFashionMnist, kFashionMnistDir, Split::kTest, 50);
  EXPECT_EQ(ds.pixels, direct.pixels);
  EXPECT_EQ(ds.labels, direct.labels);
  EXPECT_EQ(ds.sample_size(), 784);
  EXPECT_EQ(ds.mean, std::vector<double>{0.2860});
  EXPECT_EQ(ds.stddev, std::vector<double>{0.3530});
  EXPECT_EQ(ds.crop_padding, 2);
  const DatasetInfo info = dataset_info(Format::kFashionMnist);
  EXPECT_EQ(info.name, ds.info.name);
  EXPECT_EQ(info.channels * info.height * info.width, 784);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(parse_format("fashion_mnist"), Format::kFashionMnist);
  EXPECT_STREQ(to_string(Format::kFashionMnist), "fashion_mnist");
  expect_error([] { parse_format("mnist"); }, {"'mnist'", "fashion_mnist"});
}

TEST(FashionMnist, SplitNames) {
  EXPECT_EQ(parse_split("train"), Split::kTrain);
  EXPECT_EQ(parse_split("test"), Split::kTest);
  EXPECT_STREQ(to_string(Split::kTest), "test");
  expect_error([] { parse_split("val"); }, {"'val'", "'train' or 'test'"});
}

// A scratch directory holding a valid train split of `count` images, which each test then
// breaks in one way.
class IdxFiles : public ::testing::Test {
 protected:
  std::string images() const { return dir_.file("train-images-idx3-ubyte.gz"); }
  std::string labels() const { return dir_.file("train-labels-idx1-ubyte.gz"); }
  void write_valid(uint32_t count = 5) {
    write_gz(images(), idx_images(count));
    std::vector<uint8_t> l;
    for (uint32_t i = 0; i < count; ++i) l.push_back(static_cast<uint8_t>(i % 10));
    write_gz(labels(), idx_labels(l));
  }
  Dataset load(int64_t limit = 0) const {
    return load_fashion_mnist(dir_.path(), Split::kTrain, limit);
  }
  ScratchDir dir_;
};

TEST_F(IdxFiles, ValidFilesLoadExactly) {
  write_valid(5);
  const Dataset ds = load();
  ASSERT_EQ(ds.count, 5);
  const std::vector<uint8_t> raw = idx_images(5);
  EXPECT_EQ(ds.pixels, std::vector<uint8_t>(raw.begin() + 16, raw.end()));
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(load(3).count, 3);
  EXPECT_EQ(load(3).pixels.size(), 3u * 784u);
  EXPECT_EQ(load(50).count, 5);  // a limit beyond the file reads it all
}

TEST_F(IdxFiles, UncompressedFilesAreAccepted) {
  testing::write_file(images(), idx_images(2));
  testing::write_file(labels(), idx_labels({7, 8}));
  EXPECT_EQ(load().labels, (std::vector<int32_t>{7, 8}));
}

TEST_F(IdxFiles, MissingDirectoryNamesTheDebianPackage) {
  expect_error([] { load_fashion_mnist("/nonexistent/fashion", Split::kTrain); },
               {"/nonexistent/fashion", "does not exist", "dataset-fashion-mnist"});
}

TEST_F(IdxFiles, MissingFile) {
  write_valid();
  std::filesystem::remove(labels());
  expect_error([&] { load(); }, {labels(), "no such file", "dataset-fashion-mnist"});
  expect_error([&] { load_fashion_mnist(dir_.path(), Split::kTest); },
               {"t10k-images-idx3-ubyte.gz", "no such file"});
}

TEST_F(IdxFiles, NegativeLimit) {
  write_valid();
  expect_error([&] { load(-1); }, {"limit", "-1"});
}

TEST_F(IdxFiles, BadImageMagic) {
  write_valid();
  write_gz(images(), idx_images(5, 28, 28, 0x00000801));
  expect_error([&] { load(); }, {images(), "bad magic number 0x00000801, expected 0x00000803"});
}

TEST_F(IdxFiles, BadLabelMagic) {
  write_valid();
  write_gz(labels(), idx_labels({0, 1, 2, 3, 4}, 0x00000803));
  expect_error([&] { load(); }, {labels(), "bad magic number 0x00000803, expected 0x00000801"});
}

TEST_F(IdxFiles, WrongImageSize) {
  write_valid();
  write_gz(images(), idx_images(5, 32, 28));
  expect_error([&] { load(); }, {images(), "images are 32x28, expected 28x28"});
}

TEST_F(IdxFiles, TruncatedHeader) {
  write_valid();
  std::vector<uint8_t> raw = idx_images(5);
  raw.resize(10);
  write_gz(images(), raw);
  expect_error([&] { load(); }, {images(), "truncated: expected 12 bytes of IDX header, got 6"});
  write_gz(images(), {});
  expect_error([&] { load(); },
               {images(), "truncated: expected 4 bytes of IDX magic number, got 0"});
}

TEST_F(IdxFiles, TruncatedPixelData) {
  write_valid();
  std::vector<uint8_t> raw = idx_images(5);
  raw.resize(16 + 3 * 784);  // the header still says 5 images
  write_gz(images(), raw);
  expect_error([&] { load(); },
               {images(), "truncated: expected 3920 bytes of pixel data, got 2352"});
  EXPECT_EQ(load(3).count, 3);  // the part that is there still reads
}

TEST_F(IdxFiles, TruncatedLabels) {
  write_valid();
  std::vector<uint8_t> raw = idx_labels({0, 1, 2, 3, 4});
  raw.pop_back();
  write_gz(labels(), raw);
  expect_error([&] { load(); }, {labels(), "truncated: expected 5 bytes of labels, got 4"});
}

TEST_F(IdxFiles, TruncatedGzipStream) {
  write_valid(50);
  std::vector<uint8_t> gz = testing::read_file(images());
  gz.resize(gz.size() / 2);  // a cut download: the deflate stream stops mid-way
  testing::write_file(images(), gz);
  expect_error([&] { load(); }, {images(), "truncated gzip stream (unexpected end of file)"});
}

TEST_F(IdxFiles, CorruptDeflateData) {
  write_valid();
  std::vector<uint8_t> gz = testing::read_file(images());
  ASSERT_GT(gz.size(), 20u);
  gz[10] = 0xFF;  // first deflate block header: BTYPE 11 is reserved
  testing::write_file(images(), gz);
  expect_error([&] { load(); }, {images(), "corrupt gzip data", "invalid block type"});
}

TEST_F(IdxFiles, CorruptGzipChecksum) {
  write_valid();
  std::vector<uint8_t> gz = testing::read_file(images());
  gz[gz.size() - 8] ^= 0x01;  // the CRC-32 of the trailer
  testing::write_file(images(), gz);
  expect_error([&] { load(); }, {images(), "corrupt gzip data", "incorrect data check"});
}

TEST_F(IdxFiles, ImageAndLabelCountsDiffer) {
  write_valid();
  write_gz(labels(), idx_labels({0, 1, 2, 3}));
  expect_error([&] { load(); }, {images(), " holds 5 images but ", labels(), " holds 4 labels"});
}

TEST_F(IdxFiles, LabelOutOfRange) {
  write_valid();
  write_gz(labels(), idx_labels({0, 1, 10, 3, 4}));
  expect_error([&] { load(); }, {labels(), "label 10 at index 2 is out of range; expected 0..9"});
}

TEST_F(IdxFiles, TrailingData) {
  write_valid();
  std::vector<uint8_t> raw = idx_labels({0, 1, 2, 3, 4});
  raw.push_back(1);
  write_gz(labels(), raw);
  expect_error([&] { load(); }, {labels(), "unexpected data after the labels"});
  EXPECT_EQ(load(2).count, 2);  // a prefix read does not look past what it needs
}

}  // namespace
}  // namespace syncbn::data

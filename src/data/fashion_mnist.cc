#include "data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace syncbn::data {

namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // uint8, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8, 1 dimension

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

struct GzClose {
  void operator()(gzFile_s* file) const { gzclose(file); }
};

// Sequential reads from a gzip (or plain) file; every failure names the file.
class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)) {
    errno = 0;
    file_.reset(gzopen(path_.c_str(), "rb"));
    SYNCBN_REQUIRE(file_ != nullptr, path_,
                   ": cannot open: ", errno ? std::strerror(errno) : "out of memory");
    gzbuffer(file_.get(), 1 << 20);
  }

  const std::string& path() const { return path_; }

  // Appends exactly `n` bytes of `what` to `out`. The buffer grows as data arrives, so a
  // header that claims absurd sizes fails as truncated instead of allocating them.
  void read_exact(std::vector<uint8_t>& out, uint64_t n, const char* what) {
    const uint64_t start = out.size();
    uint64_t got = 0;
    while (got < n) {
      const uint64_t chunk = std::min<uint64_t>(n - got, uint64_t{1} << 22);
      out.resize(start + got + chunk);
      const int r = gzread(file_.get(), out.data() + start + got, static_cast<unsigned>(chunk));
      fail_on_gzip_error();
      if (r <= 0) break;
      got += static_cast<uint64_t>(r);
    }
    out.resize(start + got);
    SYNCBN_REQUIRE(got == n, path_, ": truncated: expected ", n, " bytes of ", what, ", got ", got);
  }

  // Requires that nothing follows the data. Reading to the end also makes zlib verify the
  // gzip trailer (CRC-32 and length).
  void expect_end(const char* after) {
    uint8_t extra[1];
    const int r = gzread(file_.get(), extra, 1);
    fail_on_gzip_error();
    SYNCBN_REQUIRE(r == 0, path_, ": unexpected data after ", after,
                   "; expected the file to end there");
  }

 private:
  // zlib decompresses ahead into its buffer, so an error may surface before the bytes it
  // concerns are asked for: the messages do not claim which part of the file was being read.
  void fail_on_gzip_error() {
    int errnum = Z_OK;
    std::string message = gzerror(file_.get(), &errnum);
    if (errnum == Z_OK) return;
    if (message.starts_with(path_ + ": ")) message.erase(0, path_.size() + 2);
    if (errnum == Z_BUF_ERROR) {
      throw Error(str_cat(path_, ": truncated gzip stream (", message,
                          "); the file is cut short, reinstall or re-download it"));
    }
    if (errnum == Z_ERRNO) throw Error(str_cat(path_, ": read error: ", std::strerror(errno)));
    throw Error(str_cat(path_, ": corrupt gzip data: ", message));
  }

  std::string path_;
  std::unique_ptr<gzFile_s, GzClose> file_;
};

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads the magic and `dims` sizes of an IDX header; checks the magic.
std::vector<uint32_t> read_idx_header(GzReader& reader, uint32_t magic, int dims,
                                      const char* describe) {
  std::vector<uint8_t> bytes;
  reader.read_exact(bytes, 4, "IDX magic number");
  const uint32_t found = big_endian_u32(bytes.data());
  SYNCBN_REQUIRE(found == magic, reader.path(), ": bad magic number ", hex32(found), ", expected ",
                 hex32(magic), " (", describe, ")");
  bytes.clear();
  reader.read_exact(bytes, 4 * static_cast<uint64_t>(dims), "IDX header");
  std::vector<uint32_t> sizes(static_cast<size_t>(dims));
  for (int d = 0; d < dims; ++d) sizes[static_cast<size_t>(d)] = big_endian_u32(&bytes[4 * d]);
  return sizes;
}

}  // namespace

DatasetInfo fashion_mnist_info() {
  return DatasetInfo{"fashion_mnist", 1, kFashionMnistRows, kFashionMnistCols,
                     kFashionMnistClasses};
}

std::vector<std::string> fashion_mnist_files(Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return {prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz"};
}

Dataset load_fashion_mnist(const std::string& dir, Split split, int64_t limit) {
  SYNCBN_REQUIRE(limit >= 0, "Fashion-MNIST sample limit is ", limit,
                 "; expected 0 (all samples) or a positive count");
  namespace fs = std::filesystem;
  std::error_code ec;
  SYNCBN_REQUIRE(fs::is_directory(dir, ec), "Fashion-MNIST directory ", dir,
                 " does not exist; install the Debian package dataset-fashion-mnist "
                 "(apt-get install dataset-fashion-mnist), which puts the IDX files in ",
                 kFashionMnistDir, ", or give the directory that holds them");
  const std::vector<std::string> names = fashion_mnist_files(split);
  const std::string images_path = (fs::path(dir) / names[0]).string();
  const std::string labels_path = (fs::path(dir) / names[1]).string();
  for (const std::string& path : {images_path, labels_path}) {
    SYNCBN_REQUIRE(fs::exists(path, ec), path, ": no such file; expected the ", to_string(split),
                   " split of Fashion-MNIST as in the Debian package dataset-fashion-mnist");
  }

  GzReader images(images_path);
  const std::vector<uint32_t> image_dims =
      read_idx_header(images, kImagesMagic, 3, "IDX uint8 images: count, rows, cols");
  SYNCBN_REQUIRE(image_dims[1] == kFashionMnistRows && image_dims[2] == kFashionMnistCols,
                 images_path, ": images are ", image_dims[1], "x", image_dims[2], ", expected ",
                 kFashionMnistRows, "x", kFashionMnistCols);
  GzReader labels(labels_path);
  const std::vector<uint32_t> label_dims =
      read_idx_header(labels, kLabelsMagic, 1, "IDX uint8 labels: count");
  SYNCBN_REQUIRE(image_dims[0] == label_dims[0], images_path, " holds ", image_dims[0],
                 " images but ", labels_path, " holds ", label_dims[0],
                 " labels; expected one label per image");

  const int64_t available = image_dims[0];
  const bool whole_file = limit == 0 || limit >= available;
  Dataset ds;
  ds.info = fashion_mnist_info();
  ds.count = whole_file ? available : limit;
  ds.mean = {kFashionMnistMean};
  ds.stddev = {kFashionMnistStd};
  ds.crop_padding = kFashionMnistCropPadding;
  const uint64_t pixel_bytes = static_cast<uint64_t>(ds.count) * kFashionMnistRows *
                               static_cast<uint64_t>(kFashionMnistCols);
  images.read_exact(ds.pixels, pixel_bytes, "pixel data");
  std::vector<uint8_t> raw_labels;
  labels.read_exact(raw_labels, static_cast<uint64_t>(ds.count), "labels");
  ds.labels.resize(raw_labels.size());
  for (size_t i = 0; i < raw_labels.size(); ++i) {
    SYNCBN_REQUIRE(raw_labels[i] < kFashionMnistClasses, labels_path, ": label ",
                   int{raw_labels[i]}, " at index ", i, " is out of range; expected 0..",
                   kFashionMnistClasses - 1);
    ds.labels[i] = raw_labels[i];
  }
  if (whole_file) {
    images.expect_end("the pixel data");
    labels.expect_end("the labels");
  }
  return ds;
}

}  // namespace syncbn::data

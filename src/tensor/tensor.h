// Dense float32 tensors on the host: a logical shape (N, C, *spatial), a memory format, and
// 64-byte aligned storage. Deliberately small: kernels take raw pointers (STYLE.md rule 4);
// this type is what the thin adapters check and unpack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace syncbn {

// kContiguous: row-major in logical order (NCHW, NCDHW, ...).
// kChannelsLast: C innermost (NHWC for 4-D, NDHWC for 5-D), as PyTorch's channels_last(_3d).
enum class MemoryFormat { kContiguous, kChannelsLast };

const char* to_string(MemoryFormat format);
std::string shape_to_string(const std::vector<int64_t>& shape);

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised. Throws syncbn::Error for a negative dimension or a channels-last
  // format on a tensor that is not 4-D or 5-D.
  explicit Tensor(std::vector<int64_t> shape, MemoryFormat format = MemoryFormat::kContiguous);
  // Uninitialised storage, for outputs a kernel overwrites entirely.
  static Tensor empty(std::vector<int64_t> shape, MemoryFormat format = MemoryFormat::kContiguous);
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return shape_.at(static_cast<size_t>(d)); }
  int64_t numel() const { return numel_; }
  MemoryFormat format() const { return format_; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }

  // Offset in storage of logical element (n, c, s), s the flat spatial index in logical order.
  int64_t offset(int64_t n, int64_t c, int64_t s) const;

  // The same values in another memory format.
  Tensor to(MemoryFormat format) const;

 private:
  struct Uninitialized {};
  Tensor(std::vector<int64_t> shape, MemoryFormat format, Uninitialized);

  // Returns storage to the block cache (tensor.cc).
  struct FreeAligned {
    FreeAligned() : bytes(0) {}
    explicit FreeAligned(size_t size) : bytes(size) {}
    void operator()(float* p) const;
    size_t bytes;
  };
  std::vector<int64_t> shape_;
  MemoryFormat format_ = MemoryFormat::kContiguous;
  int64_t numel_ = 0;
  std::unique_ptr<float[], FreeAligned> data_;
};

// Product of the dimensions after the first two (1 for a 2-D tensor).
int64_t spatial_size(const std::vector<int64_t>& shape);

// Deterministic random numbers: xoshiro256** seeded through splitmix64, so a (seed, stream)
// pair names one sequence on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed, uint64_t stream = 0);
  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();   // N(0, 1), Box-Muller
  void fill_normal(float* out, int64_t count, double mean = 0.0, double stddev = 1.0);

 private:
  uint64_t s_[4];
};

}  // namespace syncbn

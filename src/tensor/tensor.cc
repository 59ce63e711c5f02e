#include "tensor/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numbers>
#include <unordered_map>

#include "core/error.h"

namespace syncbn {

const char* to_string(MemoryFormat format) {
  return format == MemoryFormat::kContiguous ? "contiguous" : "channels_last";
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

int64_t spatial_size(const std::vector<int64_t>& shape) {
  int64_t s = 1;
  for (size_t i = 2; i < shape.size(); ++i) s *= shape[i];
  return s;
}

namespace {

// Large tensors come and go every step (activations, gradients). glibc serves 64-byte aligned
// blocks of that size with a fresh mmap each time, so every new tensor would page-fault its
// way through memory the previous one just returned. A small cache of freed blocks keyed by
// size avoids that; it holds at most kMaxCachedBytes.
class BlockCache {
 public:
  static constexpr size_t kMinCachedBytes = size_t{1} << 16;
  static constexpr size_t kMaxCachedBytes = size_t{1} << 29;

  void* acquire(size_t bytes) {
    if (bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_bytes_ -= bytes;
        return p;
      }
    }
    return std::aligned_alloc(64, bytes);
  }

  void release(void* p, size_t bytes) {
    if (bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= kMaxCachedBytes) {
        free_.emplace(bytes, p);
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  ~BlockCache() {
    for (auto& [bytes, p] : free_) std::free(p);
  }

 private:
  std::mutex mutex_;
  std::unordered_multimap<size_t, void*> free_;
  size_t cached_bytes_ = 0;
};

BlockCache& block_cache() {
  static BlockCache cache;
  return cache;
}

}  // namespace

void Tensor::FreeAligned::operator()(float* p) const { block_cache().release(p, bytes); }

Tensor::Tensor(std::vector<int64_t> shape, MemoryFormat format)
    : Tensor(std::move(shape), format, Uninitialized{}) {
  std::memset(data_.get(), 0, static_cast<size_t>(numel_) * sizeof(float));
}

Tensor Tensor::empty(std::vector<int64_t> shape, MemoryFormat format) {
  return Tensor(std::move(shape), format, Uninitialized{});
}

Tensor::Tensor(std::vector<int64_t> shape, MemoryFormat format, Uninitialized)
    : shape_(std::move(shape)), format_(format) {
  numel_ = 1;
  for (int64_t d : shape_) {
    SYNCBN_REQUIRE(d >= 0, "tensor shape ", shape_to_string(shape_),
                   " has a negative dimension; expected sizes >= 0");
    numel_ *= d;
  }
  SYNCBN_REQUIRE(format_ == MemoryFormat::kContiguous || dim() == 4 || dim() == 5,
                 "channels_last memory format needs a 4-D or 5-D tensor, got shape ",
                 shape_to_string(shape_));
  // 64-byte alignment for vector loads; aligned_alloc needs a size that is a multiple of it.
  size_t bytes = (static_cast<size_t>(numel_) * sizeof(float) + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  data_ = std::unique_ptr<float[], FreeAligned>(static_cast<float*>(block_cache().acquire(bytes)),
                                                FreeAligned{bytes});
  SYNCBN_REQUIRE(data_ != nullptr, "out of memory allocating a tensor of ", bytes, " bytes");
}

Tensor::Tensor(const Tensor& other) : Tensor(other.shape_, other.format_, Uninitialized{}) {
  if (numel_) std::memcpy(data_.get(), other.data_.get(), numel_ * sizeof(float));
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

int64_t Tensor::offset(int64_t n, int64_t c, int64_t s) const {
  const int64_t channels = dim() >= 2 ? shape_[1] : 1;
  const int64_t spatial = spatial_size(shape_);
  if (format_ == MemoryFormat::kChannelsLast) return (n * spatial + s) * channels + c;
  return (n * channels + c) * spatial + s;
}

Tensor Tensor::to(MemoryFormat format) const {
  if (format == format_) return *this;
  Tensor out = Tensor::empty(shape_, format);
  const int64_t n_count = dim() >= 1 ? shape_[0] : 1;
  const int64_t channels = dim() >= 2 ? shape_[1] : 1;
  const int64_t spatial = spatial_size(shape_);
  for (int64_t n = 0; n < n_count; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        out.data()[out.offset(n, c, s)] = data()[offset(n, c, s)];
  return out;
}

namespace {
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t state = seed ^ (stream * 0xD1B54A32D192ED03ull);
  for (uint64_t& word : s_) word = splitmix64(state);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void Rng::fill_normal(float* out, int64_t count, double mean, double stddev) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(mean + stddev * normal());
}

}  // namespace syncbn

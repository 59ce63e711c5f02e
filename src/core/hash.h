// FNV-1a (64 bit) and its fixed-width hex form: the hash behind config hashes, checkpoint payload
// checksums and SyncBN's layer tags. Not cryptographic: it detects accidents, not tampering.
#pragma once

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace syncbn {

inline constexpr uint64_t kFnv1aOffset = 1469598103934665603ull;

// Folds `bytes` into the running hash h (start from kFnv1aOffset).
inline uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnv1aOffset) {
  for (unsigned char ch : bytes) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// 16 lower-case hex digits, no prefix.
inline std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016" PRIx64, value);
  return text;
}

}  // namespace syncbn

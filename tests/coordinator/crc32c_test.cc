#include "coordinator/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace syncbn::coordinator {
namespace {

// Bitwise CRC32C, the definition, against which the table-driven code is checked.
uint32_t crc32c_bitwise(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (const unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
  }
  return ~crc;
}

TEST(Crc32c, KnownVectors) {
  // The check value of the CRC catalogue and the test vectors of RFC 3720, B.4.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
}

TEST(Crc32c, MatchesBitwiseDefinitionAtEveryLengthAndAlignment) {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>((i * 131 + 7) & 0xFF));
  for (size_t start = 0; start < 9; ++start) {
    for (size_t size = 0; start + size <= data.size(); size += 7) {
      const std::string piece = data.substr(start, size);
      ASSERT_EQ(crc32c(piece), crc32c_bitwise(piece)) << "start " << start << " size " << size;
    }
  }
}

TEST(Crc32c, ExtendEqualsWholeAtEverySplit) {
  const std::string data = "The quick brown fox jumps over the lazy dog, twice over.";
  for (size_t split = 0; split <= data.size(); ++split) {
    const uint32_t first = crc32c_extend(0, data.data(), split);
    EXPECT_EQ(crc32c_extend(first, data.data() + split, data.size() - split), crc32c(data));
  }
}

}  // namespace
}  // namespace syncbn::coordinator

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI (RFC 3720),
// ext4 and LevelDB, computed with eight 256-entry tables (slice-by-8), no SSE4.2 needed.
// crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace syncbn::coordinator {

// Continues `crc` (the value returned for the bytes so far; 0 for none) over `data`.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(std::string_view data) { return crc32c_extend(0, data.data(), data.size()); }

}  // namespace syncbn::coordinator

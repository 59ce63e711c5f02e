// The shared-secret token of a coordinator (`--token-file`), sent by clients as gRPC metadata
// `authorization: Bearer <token>`. The token never appears in logs or error messages.
#pragma once

#include <string>
#include <string_view>

namespace syncbn::coordinator {

inline constexpr size_t kMinTokenBytes = 16;
inline constexpr size_t kMaxTokenBytes = 4096;

// Reads a token file: a regular file that group and others cannot access (mode 0600 or 0400),
// holding 16 to 4096 printable ASCII characters without spaces (one trailing newline allowed).
// Throws syncbn::Error naming the file and what is wrong.
std::string read_token_file(const std::string& path);

// Whether `authorization` equals "Bearer <token>", in time independent of where they differ.
bool authorization_matches(std::string_view authorization, std::string_view token);

}  // namespace syncbn::coordinator

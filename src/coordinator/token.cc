#include "coordinator/token.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "coordinator/posix_file.h"
#include "core/error.h"

namespace syncbn::coordinator {

std::string read_token_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  SYNCBN_REQUIRE(fd.valid(), errno_message("cannot open token file", path, errno));
  struct stat st {};
  SYNCBN_REQUIRE(::fstat(fd.get(), &st) == 0, errno_message("cannot stat token file", path, errno));
  SYNCBN_REQUIRE(S_ISREG(st.st_mode), "token file '", path, "' is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(str_cat("token file '", path, "' has mode ", mode,
                        "; it must not be accessible by group or others (chmod 600 '", path, "')"));
  }
  std::string token(kMaxTokenBytes + 2, '\0');
  const int64_t n = read_at(fd.get(), token.data(), token.size(), 0);
  SYNCBN_REQUIRE(n >= 0, errno_message("cannot read token file", path, static_cast<int>(-n)));
  token.resize(static_cast<size_t>(n));
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  SYNCBN_REQUIRE(token.size() >= kMinTokenBytes && token.size() <= kMaxTokenBytes, "token file '",
                 path, "' must hold ", kMinTokenBytes, " to ", kMaxTokenBytes,
                 " characters (one trailing newline allowed)");
  for (const char c : token) {
    SYNCBN_REQUIRE(c > 0x20 && c < 0x7F, "token file '", path,
                   "' must hold printable ASCII characters without spaces");
  }
  return token;
}

bool authorization_matches(std::string_view authorization, std::string_view token) {
  static constexpr std::string_view kScheme = "Bearer ";
  const size_t expected_size = kScheme.size() + token.size();
  // Every byte of the expected value is compared, whatever the given one holds; only the
  // length of the expected token (not secret in practice, and fixed per server) shows in time.
  unsigned diff = authorization.size() == expected_size ? 0u : 1u;
  for (size_t i = 0; i < expected_size; ++i) {
    const char expected = i < kScheme.size() ? kScheme[i] : token[i - kScheme.size()];
    const char given = i < authorization.size() ? authorization[i] : '\0';
    diff |= static_cast<unsigned char>(expected ^ given);
  }
  return diff == 0 && !token.empty();
}

}  // namespace syncbn::coordinator

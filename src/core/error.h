// Two tiers of errors (STYLE.md rule 8).
//
//  * SYNCBN_CHECK(cond): a programming error inside syncbn. Prints file:line and the failing
//    statement, then aborts, like llm.c's cudaCheck or NCCL's NCCLCHECK.
//  * syncbn::Error, raised by SYNCBN_REQUIRE(cond, msg...): anything a user or a peer can cause
//    (bad shape, bad config, bad file). The message names the thing and what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace syncbn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Raised on a rank that is fine itself when another rank of a collective step failed: the
// failing rank reports the cause, this one only says that it stopped.
class PeerError : public Error {
 public:
  explicit PeerError(const std::string& what) : Error(what) {}
};

[[noreturn]] void check_failed(const char* file, int line, const char* expr);

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace syncbn

#define SYNCBN_CHECK(cond)                                          \
  do {                                                              \
    if (!(cond)) ::syncbn::check_failed(__FILE__, __LINE__, #cond); \
  } while (0)

#define SYNCBN_REQUIRE(cond, ...)                                       \
  do {                                                                  \
    if (!(cond)) throw ::syncbn::Error(::syncbn::str_cat(__VA_ARGS__)); \
  } while (0)

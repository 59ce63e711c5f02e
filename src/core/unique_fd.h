// An owned POSIX file descriptor (RAII), for code that must see the errors std::fstream hides:
// the coordinator's commit protocol, safetensors writes, the study's run logs.
#pragma once

#include <utility>

namespace syncbn {

// Owns one file descriptor; closes it on destruction (errors from that close are ignored:
// callers that care call close() themselves and check it).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();
  // Closes now; returns 0 or the errno of close(2) (errno is left set as well).
  int close();

 private:
  int fd_ = -1;
};

}  // namespace syncbn

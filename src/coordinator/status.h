// The coordinator's error codes, independent of any transport (STYLE.md rule 6).
//
// Service logic (store, state) throws ServiceError with one of these codes; the gRPC adapter
// turns them into grpc::Status in exactly one place (grpc_service.cc, to_grpc_status), and the
// client turns grpc::Status back into a ClientError carrying the same code.
#pragma once

#include <string>

#include "core/error.h"

namespace syncbn::coordinator {

// The subset of gRPC's canonical codes the coordinator uses, with the same meanings.
enum class Code {
  kOk,
  kCancelled,
  kUnknown,
  kInvalidArgument,     // a malformed field: bad run id, negative size, chunk gap/overlap
  kDeadlineExceeded,    // the caller's deadline passed
  kNotFound,            // no such run or checkpoint
  kAlreadyExists,       // a checkpoint with this step is already committed
  kPermissionDenied,    //
  kResourceExhausted,   // message or checkpoint larger than allowed, disk full
  kFailedPrecondition,  // refused by the run's state: stale generation, different config hash
  kAborted,
  kOutOfRange,
  kUnimplemented,
  kInternal,         // an I/O failure on the coordinator's side (fsync, rename, SQLite)
  kUnavailable,      // the coordinator cannot be reached (retried by the client)
  kDataLoss,         // checksum mismatch: chunk CRC32C, whole-checkpoint CRC32C
  kUnauthenticated,  // missing or wrong token
};

// "INVALID_ARGUMENT", ... (gRPC's spelling).
const char* code_name(Code code);

// An error a peer can cause, with the status it is answered with.
class ServiceError : public Error {
 public:
  ServiceError(Code code, const std::string& message) : Error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

template <typename... Args>
[[noreturn]] void fail(Code code, const Args&... args) {
  throw ServiceError(code, str_cat(args...));
}

}  // namespace syncbn::coordinator

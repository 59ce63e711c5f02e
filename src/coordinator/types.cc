#include "coordinator/types.h"

#include "coordinator/status.h"

namespace syncbn::coordinator {

bool is_valid_run_id(std::string_view run_id) {
  if (run_id.empty() || run_id.size() > 64) return false;
  bool only_dots = true;
  for (const char c : run_id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
    if (c != '.') only_dots = false;
  }
  return !only_dots;
}

void validate_run_id(std::string_view run_id) {
  if (is_valid_run_id(run_id)) return;
  std::string shown;
  for (const char c : run_id.substr(0, 80)) {
    shown += (c >= 0x20 && c < 0x7F) ? c : '?';
  }
  fail(Code::kInvalidArgument, "run id '", shown,
       "' is invalid: expected 1 to 64 characters from [A-Za-z0-9_.-], not only dots");
}

const char* code_name(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kCancelled:
      return "CANCELLED";
    case Code::kUnknown:
      return "UNKNOWN";
    case Code::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case Code::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case Code::kNotFound:
      return "NOT_FOUND";
    case Code::kAlreadyExists:
      return "ALREADY_EXISTS";
    case Code::kPermissionDenied:
      return "PERMISSION_DENIED";
    case Code::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case Code::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case Code::kAborted:
      return "ABORTED";
    case Code::kOutOfRange:
      return "OUT_OF_RANGE";
    case Code::kUnimplemented:
      return "UNIMPLEMENTED";
    case Code::kInternal:
      return "INTERNAL";
    case Code::kUnavailable:
      return "UNAVAILABLE";
    case Code::kDataLoss:
      return "DATA_LOSS";
    case Code::kUnauthenticated:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

}  // namespace syncbn::coordinator

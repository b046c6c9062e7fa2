#include "ckptguard/error.h"

#include <string>

namespace ckptguard {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTruncated: return "truncated";
    case ErrorCode::kMalformed: return "malformed";
    case ErrorCode::kLimitExceeded: return "limit_exceeded";
    case ErrorCode::kForbiddenGlobal: return "forbidden_global";
    case ErrorCode::kUnsupportedOpcode: return "unsupported_opcode";
    case ErrorCode::kUnsupportedFormat: return "unsupported_format";
    case ErrorCode::kIo: return "io";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kUnavailable: return "unavailable";
  }
  return "internal";
}

std::string Error::ToString() const {
  std::string out(ErrorCodeName(code));
  out += " at byte ";
  out += std::to_string(offset);
  if (!where.empty()) {
    out += " (";
    out += where;
    out += ")";
  }
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  return out;
}

}  // namespace ckptguard

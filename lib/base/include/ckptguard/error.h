// Error values for the whole library: nothing in lib/ throws.
//
// Every fallible function returns Result<T> (std::expected) or Status. An Error
// carries a closed ErrorCode, the byte offset in the input where it happened,
// the place (zip entry, opcode name) and a short human-readable detail.
#ifndef CKPTGUARD_ERROR_H_
#define CKPTGUARD_ERROR_H_

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

enum class ErrorCode : uint8_t {
  kTruncated,          // The input ended inside an opcode, operand, header or record.
  kMalformed,          // The bytes violate the format (bad UTF-8, bad escape, bad magic...).
  kLimitExceeded,      // A configured limit was hit; the detail names the limit.
  kForbiddenGlobal,    // A global or call outside the allowlist was requested.
  kUnsupportedOpcode,  // An opcode byte that no pickle protocol defines.
  kUnsupportedFormat,  // A valid but unsupported feature (e.g. an unknown compression method).
  kIo,                 // The operating system refused a read, open, map or write.
  kInvalidArgument,    // The caller passed something unusable (empty path, bad option).
  kInternal,           // A bug in ckptguard: an invariant did not hold. Fuzzers abort on it.
  kUnavailable,        // A transient condition (a lost database session, a concurrent change): the
                       // same request may succeed when made again. The daemon answers 503 with Retry-After.
};

// ErrorCodeName returns a stable lower_snake name for `code` ("truncated", ...),
// used in JSON output and tests.
std::string_view ErrorCodeName(ErrorCode code);

// Error describes why an operation failed. `offset` is a byte offset into the
// innermost input the failing parser was given (a file, or a zip entry's data);
// `where` names that input or the opcode ("data.pkl", "BINUNICODE") and may be
// empty; `detail` is one sentence without a trailing period.
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  uint64_t offset = 0;
  std::string where;
  std::string detail;
  // For kLimitExceeded from a Budget (budget.h): the limit's name
  // ("max_inflated_bytes"), so callers need not parse `detail`. Else empty.
  std::string limit{};

  // ToString renders "truncated at byte 12 (BINUNICODE): operand needs 7 bytes, 3 remain".
  std::string ToString() const;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = Result<void>;

// MakeError builds the unexpected value returned by failing functions.
inline std::unexpected<Error> MakeError(ErrorCode code, uint64_t offset, std::string detail,
                                        std::string where = {}) {
  return std::unexpected<Error>(
      Error{code, offset, std::move(where), std::move(detail)});
}

inline Status OkStatus() { return {}; }

}  // namespace ckptguard

// CKG_TRY(expr): evaluates a Status/Result expression and returns its error
// from the enclosing function if it failed.
#define CKG_TRY(expr)                                         \
  do {                                                        \
    auto ckg_try_result_ = (expr);                            \
    if (!ckg_try_result_) {                                   \
      return std::unexpected(std::move(ckg_try_result_).error()); \
    }                                                         \
  } while (0)

#define CKG_CONCAT_INNER_(a, b) a##b
#define CKG_CONCAT_(a, b) CKG_CONCAT_INNER_(a, b)

// CKG_ASSIGN_OR_RETURN(lhs, expr): evaluates a Result<T>; on success assigns
// the value to `lhs` (which may be a declaration), else returns the error.
#define CKG_ASSIGN_OR_RETURN(lhs, expr) \
  CKG_ASSIGN_OR_RETURN_IMPL_(CKG_CONCAT_(ckg_result_, __LINE__), lhs, expr)
#define CKG_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)      \
  auto tmp = (expr);                                    \
  if (!tmp) {                                           \
    return std::unexpected(std::move(tmp).error());     \
  }                                                     \
  lhs = std::move(*tmp)

CKPTGUARD_API_END

#endif  // CKPTGUARD_ERROR_H_

// Private to lib/: bounded decompression of gzip, bzip2 and xz wrappers.
#ifndef CKPTGUARD_LIB_SRC_UNWRAP_H_
#define CKPTGUARD_LIB_SRC_UNWRAP_H_

#include <cstdint>
#include <optional>
#include <string>

#include "ckptguard/anomaly.h"
#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/container.h"
#include "ckptguard/error.h"

namespace ckptguard {

// DetectWrapper recognises a wrapper by its magic bytes.
std::optional<Wrapper> DetectWrapper(Bytes data);

struct Unwrapped {
  std::string data;
  // Bytes after the last complete stream that are not another stream.
  uint64_t trailing_offset = 0;
  uint64_t trailing_len = 0;
};

// Unwrap decompresses every concatenated stream of `wrapper` in `data`.
// Output is bounded by `max_len` and by `max_ratio` x input (for outputs over
// 64 KiB): kLimitExceeded naming the limit. Corrupt or truncated streams are
// kMalformed/kTruncated at the input offset where the decoder stopped. Every
// decompressed byte is charged to `budget` (BudgetKind::kInflatedBytes) when given.
Result<Unwrapped> Unwrap(Wrapper wrapper, Bytes data, uint64_t max_len, uint64_t max_ratio,
                         Budget* budget = nullptr);

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_SRC_UNWRAP_H_

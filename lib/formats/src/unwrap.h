// Private to lib/: bounded decompression of gzip, bzip2, xz, the old .lzma
// (LZMA "alone") format and raw zlib streams, read as Python's own readers
// read them (gzip.open, bz2.open, lzma.open, zlib.decompress / joblib), and
// of the bzip2 and LZMA members of zip archives (Python's zipfile).
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

// DetectWrapper recognises a wrapper by its magic bytes: gzip 1f 8b 08,
// bzip2 "BZh1".."BZh9", xz fd "7zXZ" 00, raw zlib 78 xx (joblib's test; the
// header checksum must hold), and an LZMA-alone header as liblzma's picky
// reader (Python's lzma FORMAT_AUTO) accepts it: properties byte < 225, a
// dictionary size of 2^n or 2^n + 2^(n-1) (or UINT32_MAX), an uncompressed
// size unknown or below 2^38.
std::optional<Wrapper> DetectWrapper(Bytes data);

struct Unwrapped {
  // Everything decompressed, every stream/member in order. When `error` is
  // set this is the prefix decoded before it: Python's readers hand those
  // bytes out before they raise, so a pickle in them has already run.
  std::string data;
  // Bytes after the last complete stream that are not another stream (the
  // readers ignore them, or raise only once the reader asks for more).
  uint64_t trailing_offset = 0;
  uint64_t trailing_len = 0;
  uint32_t num_streams = 0;  // complete streams (gzip members, xz/bzip2 streams)
  // Where and why decoding stopped early (kMalformed, kTruncated), when it
  // did; `data` holds what came out before.
  std::optional<Error> error;
};

// Unwrap decompresses every concatenated stream of `wrapper` in `data`,
// skipping what Python's readers skip (zero padding between gzip members).
// Output is bounded by `max_len` and by `max_ratio` x input (for outputs over
// 64 KiB): those, and the file's budget running out, fail the call with
// kLimitExceeded naming the limit. A corrupt or truncated stream does not
// fail the call: Unwrapped::error says where it stopped. Every decompressed
// byte is charged to `budget` (BudgetKind::kInflatedBytes) when given.
Result<Unwrapped> Unwrap(Wrapper wrapper, Bytes data, uint64_t max_len, uint64_t max_ratio,
                         Budget* budget = nullptr);

inline constexpr uint16_t kZipMethodBzip2 = 12;
inline constexpr uint16_t kZipMethodLzma = 14;

// DecompressZipMember decompresses the data of a zip member of method 12
// (bzip2) or 14 (LZMA: a 2-byte version, a 2-byte properties length, the
// LZMA1 properties, then a raw LZMA1 stream), which Python's zipfile reads
// and torch's reader does not. Bounds and errors as Unwrap (a corrupt
// stream keeps its decoded prefix in `data` and sets `error`).
Result<Unwrapped> DecompressZipMember(uint16_t method, Bytes data, uint64_t max_len, uint64_t max_ratio,
                                      Budget* budget = nullptr);

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_SRC_UNWRAP_H_

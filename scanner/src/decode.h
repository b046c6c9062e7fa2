// Private to scanner/: bounded decoding of the bytes a pickle hands to
// base64/codecs/zlib/gzip/bz2/lzma decoders, so a pickle nested inside them
// is scanned (issue 14, item 3).
#ifndef CKPTGUARD_SCANNER_SRC_DECODE_H_
#define CKPTGUARD_SCANNER_SRC_DECODE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ckptguard/budget.h"

namespace ckptguard::scanner {

// DecodePayload decodes `in` as `method` says: base64, base64url, hex, zlib
// (zlib or gzip header), gzip (every member), bz2, lzma (xz or lzma-alone),
// or codecs with `encoding` (Python's codec names and aliases: base64,
// base_64, hex, zlib, zip, bz2, ...). The output is at most `max_len` bytes
// and every byte produced is charged to `budget` (kInflatedBytes). nullopt
// when the method is unknown, the data does not decode, or a bound is hit
// (the caller treats the bytes as opaque then).
std::optional<std::string> DecodePayload(std::string_view method, std::string_view encoding, std::string_view in,
                                         uint64_t max_len, Budget& budget);

}  // namespace ckptguard::scanner

#endif  // CKPTGUARD_SCANNER_SRC_DECODE_H_

// DecodeSource: the pickles of one PickleSource of a container, decoded.
//
// It stops after five pickles for the legacy torch format, whose storage
// records follow. The disassembler (pickle_disasm.h) prints what it returns.
#ifndef CKPTGUARD_SOURCE_PICKLES_H_
#define CKPTGUARD_SOURCE_PICKLES_H_

#include <cstdint>

#include "ckptguard/container.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// SourcePickles is a decoded PickleSource. `stream.ops` offsets are relative to
// the source's data. `trailing_len` counts the bytes left after the last pickle
// of a legacy torch stream (its raw storage records).
struct SourcePickles {
  DecodedStream stream;
  bool legacy_torch = false;
  uint64_t trailing_len = 0;
};

// DecodeSource decodes pickle after pickle from source.start until the data
// ends, an error, or source.max_pickles pickles; a stream whose first pickle
// is the legacy magic number, or whose second is the legacy protocol version
// 1001, stops after five pickles.
SourcePickles DecodeSource(const PickleSource& source, const PickleLimits& limits = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_SOURCE_PICKLES_H_

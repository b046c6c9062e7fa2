#include "ckptguard/source_pickles.h"

#include <algorithm>
#include <span>

#include "ckptguard/torch_legacy.h"

namespace ckptguard {

SourcePickles DecodeSource(const PickleSource& source, const PickleLimits& limits) {
  SourcePickles out;
  const Bytes data = source.data.subspan(std::min<size_t>(source.start, source.data.size()));
  PickleDecoder decoder(data, limits, source.start);
  size_t pickle_begin = 0;
  while (!(decoder.BetweenPickles() && decoder.AtEnd())) {
    if (decoder.BetweenPickles() && ((out.legacy_torch && decoder.NumPicklesFinished() == 5) ||
                                     (source.max_pickles != 0 && decoder.NumPicklesFinished() >= source.max_pickles))) {
      out.trailing_len = source.data.size() - (decoder.Offset());
      break;
    }
    Result<PickleOp> op = decoder.Next();
    if (!op) {
      out.stream.error = std::move(op).error();
      break;
    }
    const bool stop = op->code == Opcode::kStop;
    out.stream.ops.push_back(std::move(*op));
    if (!stop) continue;
    std::span<const PickleOp> pickle(out.stream.ops.data() + pickle_begin, out.stream.ops.size() - pickle_begin);
    pickle_begin = out.stream.ops.size();
    const uint32_t finished = decoder.NumPicklesFinished();
    if (finished <= 2 && !out.legacy_torch) out.legacy_torch = IsLegacyHeaderPickle(pickle, static_cast<int>(finished) - 1);
  }
  out.stream.end_offset = decoder.Offset();
  out.stream.num_pickles = decoder.NumPicklesFinished();
  return out;
}

}  // namespace ckptguard

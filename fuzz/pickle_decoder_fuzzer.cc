// Fuzz target for the pickle decoder and its pickletools-style disassembly.
//
// Invariants checked (abort on violation):
//  * never an kInternal error; every error offset lies within the input;
//  * ops tile the input: each starts where the previous ended, inside the input;
//  * decoding is a pure function of the bytes an op covers: decoding a prefix
//    of the input gives exactly the ops of the full decode that fit in the
//    prefix, and then an error unless the prefix ends between pickles;
//  * the disassembly of the same ops is the same text twice (no hidden state);
//  * decode -> dump -> decode gives the same dump: each complete pickle,
//    decoded again on its own from the bytes its ops and FRAMEs cover (at the
//    same base offset), gives the same ops and the same disassembly text.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>

#include "ckptguard/pickle_decoder.h"
#include "ckptguard/pickle_disasm.h"
#include "fuzz_limits.h"

namespace {

using ckptguard::Bytes;
using ckptguard::DecodedStream;
using ckptguard::ErrorCode;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

std::string Dump(const DecodedStream& stream) {
  std::string out;
  for (auto pickle : ckptguard::SplitPickles(stream)) {
    out += ckptguard::DisassemblePickle(pickle, pickle.back().code == ckptguard::Opcode::kStop);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptguard::PickleLimits limits;
  if (!ckptguard::fuzz::kDefaultLimits) {
    limits.max_operand_len = 1 << 16;
    limits.max_line_len = 1 << 12;
    limits.max_long_len = 1 << 10;
    limits.max_frame_len = 1 << 16;
    limits.max_ops = 1 << 14;
    limits.max_pickles = 16;
  }
  const Bytes input(data, size);
  const DecodedStream full = ckptguard::DecodeStream(input, limits);

  uint64_t pos = 0;
  for (const auto& op : full.ops) {
    Check(op.offset == pos, "ops are contiguous");
    Check(op.length >= 1 && op.length <= size - pos, "op inside input");
    pos += op.length;
  }
  Check(full.end_offset == pos, "end offset follows the last op");
  if (full.error) {
    Check(full.error->code != ErrorCode::kInternal, "no internal error");
    Check(full.error->offset <= size, "error offset inside input");
  } else {
    Check(pos == size, "no error means the whole input was decoded");
  }
  const std::string dump = Dump(full);
  Check(dump == Dump(full), "disassembly is deterministic");

  // Each complete pickle re-decoded alone disassembles to the same text.
  for (auto pickle : ckptguard::SplitPickles(full)) {
    if (pickle.empty() || pickle.back().code != ckptguard::Opcode::kStop) continue;
    // A FRAME may reach past the STOP (the decoder, as CPython, needs its
    // whole frame): the pickle's bytes are those its ops and frames cover.
    const uint64_t begin = pickle.front().offset;
    uint64_t end = pickle.back().offset + pickle.back().length;
    for (const auto& op : pickle) {
      if (op.code == ckptguard::Opcode::kFrame) end = std::max(end, op.offset + op.length + op.arg.uint_value);
    }
    const DecodedStream alone =
        ckptguard::DecodeStream(input.subspan(begin, end - begin), limits, begin, /*max_pickles=*/1);
    Check(!alone.error && alone.num_pickles == 1 && alone.ops.size() == pickle.size(),
          "a complete pickle decodes alone to the same ops");
    Check(ckptguard::DisassemblePickle(alone.ops, true) == ckptguard::DisassemblePickle(pickle, true),
          "decode -> dump -> decode gives the same dump");
  }

  // Prefix property, at a cut point derived from the input itself.
  if (size > 1) {
    const size_t cut = (static_cast<size_t>(data[0]) * 257 + data[size - 1]) % size;
    const DecodedStream part = ckptguard::DecodeStream(input.first(cut), limits);
    size_t fit = 0;
    // A FRAME also needs its whole frame to be present (as in CPython).
    auto needed_end = [&](const ckptguard::PickleOp& op) {
      return op.offset + op.length + (op.code == ckptguard::Opcode::kFrame ? op.arg.uint_value : 0);
    };
    while (fit < full.ops.size() && needed_end(full.ops[fit]) <= cut) ++fit;
    Check(part.ops.size() == fit || (part.error && part.error->code == ErrorCode::kLimitExceeded),
          "a prefix decodes to the ops that fit in it");
    for (size_t i = 0; i < part.ops.size() && i < fit; ++i) {
      Check(part.ops[i].code == full.ops[i].code && part.ops[i].length == full.ops[i].length &&
                ckptguard::ArgRepr(part.ops[i]) == ckptguard::ArgRepr(full.ops[i]),
            "prefix ops equal full ops");
    }
    const bool ends_between = fit == 0 ? cut == 0 : full.ops[fit - 1].code == ckptguard::Opcode::kStop &&
                                                        full.ops[fit - 1].offset + full.ops[fit - 1].length == cut;
    if (!ends_between && part.ops.size() == fit) Check(part.error.has_value(), "a cut inside a pickle is an error");
  }
  return 0;
}

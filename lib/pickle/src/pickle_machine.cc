#include "ckptguard/pickle_machine.h"

#include <algorithm>
#include <vector>

#include "literal_domain.h"

namespace ckptguard {

void CollectGlobalNames(PickleDecoder& decoder, uint64_t max_ops,
                        const std::function<bool(std::string_view module, std::string_view name)>& on_global) {
  LiteralDomain domain;
  bool more = true;
  domain.on_global = [&](std::string_view module, std::string_view name) {
    if (more) more = on_global(module, name);
  };
  // The run's own allowance: reading on after an error must stay cheap
  // whatever is left of the file's budget.
  BudgetLimits limits;
  limits.max_opcodes = max_ops;
  Budget budget(limits);
  PickleMachine<LiteralDomain> machine(domain, MachineLimits{}, budget, MachineMode::kLenient);
  PickleOp op;
  while (more && !decoder.AtEnd()) {
    if (!decoder.Next(op) || !machine.Step(op) || op.code == Opcode::kStop) break;
  }
}

MemoReads ScanMemoReads(Bytes pickle, const PickleLimits& limits, uint64_t max_ops) {
  PickleLimits scan_limits = limits;
  scan_limits.max_ops = std::min<uint64_t>(limits.max_ops, max_ops);
  PickleDecoder decoder(pickle, scan_limits);
  MemoReads reads;
  uint64_t puts = 0;
  uint64_t memoizes = 0;
  auto read = [&](uint64_t key) {
    // A key is read after it was stored, and picklers number keys 0, 1,
    // 2...: one beyond eight times the stores so far is a hostile pickle's,
    // and must not size the bit set (one byte per store).
    if (key / 8 > puts + memoizes) return false;
    const size_t word = static_cast<size_t>(key >> 6);
    if (word >= reads.bits_.size()) reads.bits_.resize(word + 1, 0);
    reads.bits_[word] |= uint64_t{1} << (key & 63);
    return true;
  };
  // The memo's stores: MEMOIZE's key is len(memo), PUT's its operand.
  auto stored = [&](Opcode code) {
    if (code == Opcode::kPut || code == Opcode::kBinPut || code == Opcode::kLongBinPut) ++puts;
    if (code == Opcode::kMemoize) ++memoizes;
  };
  PickleOp op;
  while (true) {
    // Most opcodes have no operand or a fixed-width integer one, and only
    // the memo's matter here.
    bool too_far = false;
    decoder.SkimFixed([&](const uint8_t* p) {
      switch (static_cast<Opcode>(p[0])) {
        case Opcode::kBinGet:
          too_far |= !read(p[1]);
          break;
        case Opcode::kLongBinGet:
          too_far |= !read(PickleDecoder::LoadU32LE(p + 1));
          break;
        default:
          stored(static_cast<Opcode>(p[0]));
          break;
      }
    });
    if (too_far) return MemoReads::All();
    if (const uint8_t* p = decoder.PeekFixed()) {
      // Length-prefixed strings (a state dict's keys): skipped unread.
      uint64_t len = 0;
      switch (static_cast<Opcode>(p[0])) {
        case Opcode::kShortBinUnicode:
        case Opcode::kShortBinBytes:
        case Opcode::kShortBinString:
          len = 2 + uint64_t{p[1]};
          break;
        case Opcode::kBinUnicode:
        case Opcode::kBinBytes:
          len = 5 + uint64_t{PickleDecoder::LoadU32LE(p + 1)};
          break;
        default:
          break;
      }
      if (len != 0 && decoder.TrySkip(len)) continue;
    }
    if (!decoder.Next(op)) return MemoReads::All();  // the run meets the same error, or the budget's
    switch (op.code) {
      case Opcode::kGet:
      case Opcode::kBinGet:
      case Opcode::kLongBinGet: {
        // The key as the machine reads it (MemoKey); a negative or huge one
        // fails the run anyway.
        const PickleArg& arg = op.arg;
        if (arg.type != PickleArgType::kUInt && !(arg.type == PickleArgType::kInt && arg.int_value >= 0)) {
          return MemoReads::All();
        }
        if (!read(MemoKey(arg))) return MemoReads::All();
        break;
      }
      default:
        stored(op.code);
        break;
    }
    if (op.code == Opcode::kStop) break;
  }
  // MEMOIZE stores at len(memo): with PUTs too, that is not simply the
  // number of MEMOIZEs before it.
  if (puts != 0 && memoizes != 0) return MemoReads::All();
  return reads;
}

}  // namespace ckptguard

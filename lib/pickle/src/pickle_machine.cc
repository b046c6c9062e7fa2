#include "ckptguard/pickle_machine.h"

#include <algorithm>
#include <array>
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

namespace {

// kScanTable is what ScanMemoReads' byte loop does with an opcode byte:
// the opcode's length when it has no operand or a fixed-width integer one
// (kFixed; 0 for any other opcode, which Next decodes), kScanPut when it
// stores under its operand (BINPUT, LONG_BINPUT), and kScanWork for the
// few that need more than their length: MEMOIZE, BINGET, LONG_BINGET, and
// the counted strings (a state dict's keys), skipped unread.
constexpr uint16_t kScanPut = 1 << 3;
constexpr uint16_t kScanWork = 1 << 4;
constexpr uint16_t kScanMemoize = kScanWork | 1 << 5;
constexpr uint16_t kScanGet1 = kScanWork | 1 << 6;
constexpr uint16_t kScanGet4 = kScanWork | 1 << 7;
constexpr uint16_t kScanCounted1 = kScanWork | 1 << 8;  // SHORT_BINUNICODE, SHORT_BINBYTES, SHORT_BINSTRING
constexpr uint16_t kScanCounted4 = kScanWork | 1 << 9;  // BINUNICODE, BINBYTES

// (kFixed is defined in another file: the table is built at first use.)
std::array<uint16_t, 256> BuildScanTable() {
  std::array<uint16_t, 256> out{};
  for (size_t i = 0; i < 256; ++i) out[i] = opcode_internal::kFixed[i] & 7;
  out[static_cast<uint8_t>(Opcode::kBinPut)] |= kScanPut;
  out[static_cast<uint8_t>(Opcode::kLongBinPut)] |= kScanPut;
  out[static_cast<uint8_t>(Opcode::kMemoize)] = kScanMemoize;
  out[static_cast<uint8_t>(Opcode::kBinGet)] = kScanGet1;
  out[static_cast<uint8_t>(Opcode::kLongBinGet)] = kScanGet4;
  out[static_cast<uint8_t>(Opcode::kShortBinUnicode)] = kScanCounted1;
  out[static_cast<uint8_t>(Opcode::kShortBinBytes)] = kScanCounted1;
  out[static_cast<uint8_t>(Opcode::kShortBinString)] = kScanCounted1;
  out[static_cast<uint8_t>(Opcode::kBinUnicode)] = kScanCounted4;
  out[static_cast<uint8_t>(Opcode::kBinBytes)] = kScanCounted4;
  return out;
}

}  // namespace

MemoReads ScanMemoReads(Bytes pickle, const PickleLimits& limits, uint64_t max_ops, uint64_t* ops_to_stop) {
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
  static const std::array<uint16_t, 256> kScanTable = BuildScanTable();
  const uint16_t* const table = kScanTable.data();
  PickleOp op;
  while (true) {
    // Most opcodes have no operand, a fixed-width integer one or a counted
    // string, and only the memo's matter here: one table lookup each, the
    // rest goes through Next.
    bool too_far = false;
    decoder.Skim([&](const uint8_t* p, size_t remaining) -> uint64_t {
      const uint16_t t = table[p[0]];
      if ((t & kScanWork) == 0) [[likely]] {
        puts += (t & kScanPut) != 0 ? 1 : 0;
        return t & 7;  // 0: not one of these, Next decodes it
      }
      switch (t) {
        case kScanMemoize:
          ++memoizes;
          return 1;
        case kScanGet1:
          too_far |= !read(p[1]);
          return 2;
        case kScanGet4:
          too_far |= !read(PickleDecoder::LoadU32LE(p + 1));
          return 5;
        case kScanCounted1: {
          const uint64_t len = 2 + uint64_t{p[1]};
          return len <= remaining ? len : 0;
        }
        case kScanCounted4: {
          const uint64_t len = 5 + uint64_t{PickleDecoder::LoadU32LE(p + 1)};
          return len <= remaining ? len : 0;
        }
        default:
          return 0;
      }
    });
    if (too_far) return MemoReads::All();
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
    if (op.code == Opcode::kStop) {
      if (ops_to_stop != nullptr) *ops_to_stop = decoder.NumOps();
      break;
    }
  }
  // MEMOIZE stores at len(memo): with PUTs too, that is not simply the
  // number of MEMOIZEs before it.
  if (puts != 0 && memoizes != 0) return MemoReads::All();
  return reads;
}

}  // namespace ckptguard

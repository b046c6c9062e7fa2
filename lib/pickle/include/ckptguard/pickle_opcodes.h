// The pickle opcodes of protocols 0 to 5, as CPython defines them
// (Lib/pickle.py, Lib/pickletools.py), with their operand encodings and the
// stack effects pickletools uses for its MARK bookkeeping.
#ifndef CKPTGUARD_PICKLE_OPCODES_H_
#define CKPTGUARD_PICKLE_OPCODES_H_

#include <array>
#include <cstdint>
#include <string_view>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

enum class Opcode : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kFloat = 'F',
  kInt = 'I',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kLong = 'L',
  kBinInt2 = 'M',
  kNone = 'N',
  kPersId = 'P',
  kBinPersId = 'Q',
  kReduce = 'R',
  kString = 'S',
  kBinString = 'T',
  kShortBinString = 'U',
  kUnicode = 'V',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kInst = 'i',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kObj = 'o',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  kProto = 0x80,
  kNewObj = 0x81,
  kExt1 = 0x82,
  kExt2 = 0x83,
  kExt4 = 0x84,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  kByteArray8 = 0x96,
  kNextBuffer = 0x97,
  kReadonlyBuffer = 0x98,
};

// How an opcode's operand is encoded in the stream (pickletools'
// ArgumentDescriptor names).
enum class OperandKind : uint8_t {
  kNone,                  // no operand
  kUInt1,                 // 1-byte unsigned
  kUInt2,                 // 2-byte little-endian unsigned
  kInt4,                  // 4-byte little-endian signed
  kUInt4,                 // 4-byte little-endian unsigned
  kUInt8,                 // 8-byte little-endian unsigned
  kDecimalNlShort,        // decimal line; "00"/"01" mean False/True (INT, GET, PUT)
  kDecimalNlLong,         // decimal line with an optional trailing 'L' (LONG)
  kFloatNl,               // float literal line (FLOAT)
  kFloat8,                // 8-byte big-endian IEEE double (BINFLOAT)
  kLong1,                 // uint1 length + two's-complement little-endian bytes
  kLong4,                 // int4 length + two's-complement little-endian bytes
  kStringNl,              // quoted, backslash-escaped line (STRING)
  kStringNlNoEscape,      // bare ASCII line (PERSID)
  kStringNlNoEscapePair,  // two bare lines: module and name (GLOBAL, INST)
  kString1,               // uint1 length + bytes (SHORT_BINSTRING)
  kString4,               // int4 length + bytes (BINSTRING)
  kBytes1,                // uint1 length + bytes
  kBytes4,                // uint4 length + bytes
  kBytes8,                // uint8 length + bytes
  kByteArray8,            // uint8 length + bytes
  kUnicodeStringNl,       // raw-unicode-escape line (UNICODE)
  kUnicodeString1,        // uint1 length + UTF-8
  kUnicodeString4,        // uint4 length + UTF-8
  kUnicodeString8,        // uint8 length + UTF-8
};

// OpcodeInfo describes one opcode. The stack effect is pickletools':
// `num_before` items are popped (counting a MARK and the slice above it as two),
// `mark_index` is the position of the MARK among them (-1 when none), and
// `num_after` items are pushed (MARK pushes the mark object itself).
struct OpcodeInfo {
  Opcode code;
  std::string_view name;
  OperandKind operand;
  uint8_t proto;
  uint8_t num_before;
  int8_t mark_index;
  uint8_t num_after;
};

namespace opcode_internal {
// kIndex maps an opcode byte to its description (nullptr: undefined).
extern const std::array<const OpcodeInfo*, 256> kIndex;
// kFixed is, for the opcodes the decoder's fast path takes (no operand or a
// fixed-width integer one, PROTO and STOP excepted), the opcode's length in
// bytes (1, 2, 3 or 5), plus kFixedSigned for INT4 operands; 0 otherwise.
inline constexpr uint8_t kFixedSigned = 0x80;
extern const std::array<uint8_t, 256> kFixed;
}  // namespace opcode_internal

// FindOpcode returns the description of `byte`, or nullptr when no protocol
// defines it. The returned pointer is to static storage. Inline: the decoder
// looks up every opcode.
inline const OpcodeInfo* FindOpcode(uint8_t byte) { return opcode_internal::kIndex[byte]; }

// OpcodeName returns the CPython name of a defined opcode ("BINUNICODE").
std::string_view OpcodeName(Opcode code);

// kHighestProtocol is the newest pickle protocol ckptguard decodes.
inline constexpr int kHighestProtocol = 5;

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PICKLE_OPCODES_H_

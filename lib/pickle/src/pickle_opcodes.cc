#include "ckptguard/pickle_opcodes.h"

#include <array>

namespace ckptguard {
namespace {

// Generated from CPython's pickletools.opcodes (name, operand, protocol,
// len(stack_before), index of markobject in stack_before, len(stack_after)).
constexpr OpcodeInfo kOpcodes[] = {
    {Opcode::kInt, "INT", OperandKind::kDecimalNlShort, 0, 0, -1, 1},
    {Opcode::kBinInt, "BININT", OperandKind::kInt4, 1, 0, -1, 1},
    {Opcode::kBinInt1, "BININT1", OperandKind::kUInt1, 1, 0, -1, 1},
    {Opcode::kBinInt2, "BININT2", OperandKind::kUInt2, 1, 0, -1, 1},
    {Opcode::kLong, "LONG", OperandKind::kDecimalNlLong, 0, 0, -1, 1},
    {Opcode::kLong1, "LONG1", OperandKind::kLong1, 2, 0, -1, 1},
    {Opcode::kLong4, "LONG4", OperandKind::kLong4, 2, 0, -1, 1},
    {Opcode::kString, "STRING", OperandKind::kStringNl, 0, 0, -1, 1},
    {Opcode::kBinString, "BINSTRING", OperandKind::kString4, 1, 0, -1, 1},
    {Opcode::kShortBinString, "SHORT_BINSTRING", OperandKind::kString1, 1, 0, -1, 1},
    {Opcode::kBinBytes, "BINBYTES", OperandKind::kBytes4, 3, 0, -1, 1},
    {Opcode::kShortBinBytes, "SHORT_BINBYTES", OperandKind::kBytes1, 3, 0, -1, 1},
    {Opcode::kBinBytes8, "BINBYTES8", OperandKind::kBytes8, 4, 0, -1, 1},
    {Opcode::kByteArray8, "BYTEARRAY8", OperandKind::kByteArray8, 5, 0, -1, 1},
    {Opcode::kNextBuffer, "NEXT_BUFFER", OperandKind::kNone, 5, 0, -1, 1},
    {Opcode::kReadonlyBuffer, "READONLY_BUFFER", OperandKind::kNone, 5, 1, -1, 1},
    {Opcode::kNone, "NONE", OperandKind::kNone, 0, 0, -1, 1},
    {Opcode::kNewTrue, "NEWTRUE", OperandKind::kNone, 2, 0, -1, 1},
    {Opcode::kNewFalse, "NEWFALSE", OperandKind::kNone, 2, 0, -1, 1},
    {Opcode::kUnicode, "UNICODE", OperandKind::kUnicodeStringNl, 0, 0, -1, 1},
    {Opcode::kShortBinUnicode, "SHORT_BINUNICODE", OperandKind::kUnicodeString1, 4, 0, -1, 1},
    {Opcode::kBinUnicode, "BINUNICODE", OperandKind::kUnicodeString4, 1, 0, -1, 1},
    {Opcode::kBinUnicode8, "BINUNICODE8", OperandKind::kUnicodeString8, 4, 0, -1, 1},
    {Opcode::kFloat, "FLOAT", OperandKind::kFloatNl, 0, 0, -1, 1},
    {Opcode::kBinFloat, "BINFLOAT", OperandKind::kFloat8, 1, 0, -1, 1},
    {Opcode::kEmptyList, "EMPTY_LIST", OperandKind::kNone, 1, 0, -1, 1},
    {Opcode::kAppend, "APPEND", OperandKind::kNone, 0, 2, -1, 1},
    {Opcode::kAppends, "APPENDS", OperandKind::kNone, 1, 3, 1, 1},
    {Opcode::kList, "LIST", OperandKind::kNone, 0, 2, 0, 1},
    {Opcode::kEmptyTuple, "EMPTY_TUPLE", OperandKind::kNone, 1, 0, -1, 1},
    {Opcode::kTuple, "TUPLE", OperandKind::kNone, 0, 2, 0, 1},
    {Opcode::kTuple1, "TUPLE1", OperandKind::kNone, 2, 1, -1, 1},
    {Opcode::kTuple2, "TUPLE2", OperandKind::kNone, 2, 2, -1, 1},
    {Opcode::kTuple3, "TUPLE3", OperandKind::kNone, 2, 3, -1, 1},
    {Opcode::kEmptyDict, "EMPTY_DICT", OperandKind::kNone, 1, 0, -1, 1},
    {Opcode::kDict, "DICT", OperandKind::kNone, 0, 2, 0, 1},
    {Opcode::kSetItem, "SETITEM", OperandKind::kNone, 0, 3, -1, 1},
    {Opcode::kSetItems, "SETITEMS", OperandKind::kNone, 1, 3, 1, 1},
    {Opcode::kEmptySet, "EMPTY_SET", OperandKind::kNone, 4, 0, -1, 1},
    {Opcode::kAddItems, "ADDITEMS", OperandKind::kNone, 4, 3, 1, 1},
    {Opcode::kFrozenSet, "FROZENSET", OperandKind::kNone, 4, 2, 0, 1},
    {Opcode::kPop, "POP", OperandKind::kNone, 0, 1, -1, 0},
    {Opcode::kDup, "DUP", OperandKind::kNone, 0, 1, -1, 2},
    {Opcode::kMark, "MARK", OperandKind::kNone, 0, 0, -1, 1},
    {Opcode::kPopMark, "POP_MARK", OperandKind::kNone, 1, 2, 0, 0},
    {Opcode::kGet, "GET", OperandKind::kDecimalNlShort, 0, 0, -1, 1},
    {Opcode::kBinGet, "BINGET", OperandKind::kUInt1, 1, 0, -1, 1},
    {Opcode::kLongBinGet, "LONG_BINGET", OperandKind::kUInt4, 1, 0, -1, 1},
    {Opcode::kPut, "PUT", OperandKind::kDecimalNlShort, 0, 0, -1, 0},
    {Opcode::kBinPut, "BINPUT", OperandKind::kUInt1, 1, 0, -1, 0},
    {Opcode::kLongBinPut, "LONG_BINPUT", OperandKind::kUInt4, 1, 0, -1, 0},
    {Opcode::kMemoize, "MEMOIZE", OperandKind::kNone, 4, 1, -1, 1},
    {Opcode::kExt1, "EXT1", OperandKind::kUInt1, 2, 0, -1, 1},
    {Opcode::kExt2, "EXT2", OperandKind::kUInt2, 2, 0, -1, 1},
    {Opcode::kExt4, "EXT4", OperandKind::kInt4, 2, 0, -1, 1},
    {Opcode::kGlobal, "GLOBAL", OperandKind::kStringNlNoEscapePair, 0, 0, -1, 1},
    {Opcode::kStackGlobal, "STACK_GLOBAL", OperandKind::kNone, 4, 2, -1, 1},
    {Opcode::kReduce, "REDUCE", OperandKind::kNone, 0, 2, -1, 1},
    {Opcode::kBuild, "BUILD", OperandKind::kNone, 0, 2, -1, 1},
    {Opcode::kInst, "INST", OperandKind::kStringNlNoEscapePair, 0, 2, 0, 1},
    {Opcode::kObj, "OBJ", OperandKind::kNone, 1, 3, 0, 1},
    {Opcode::kNewObj, "NEWOBJ", OperandKind::kNone, 2, 2, -1, 1},
    {Opcode::kNewObjEx, "NEWOBJ_EX", OperandKind::kNone, 4, 3, -1, 1},
    {Opcode::kProto, "PROTO", OperandKind::kUInt1, 2, 0, -1, 0},
    {Opcode::kStop, "STOP", OperandKind::kNone, 0, 1, -1, 0},
    {Opcode::kFrame, "FRAME", OperandKind::kUInt8, 4, 0, -1, 0},
    {Opcode::kPersId, "PERSID", OperandKind::kStringNlNoEscape, 0, 0, -1, 1},
    {Opcode::kBinPersId, "BINPERSID", OperandKind::kNone, 1, 1, -1, 1},
};

constexpr std::array<const OpcodeInfo*, 256> BuildIndex() {
  std::array<const OpcodeInfo*, 256> index{};
  for (const OpcodeInfo& info : kOpcodes) index[static_cast<uint8_t>(info.code)] = &info;
  return index;
}

constexpr std::array<uint8_t, 256> BuildFixed() {
  std::array<uint8_t, 256> fixed{};
  for (const OpcodeInfo& info : kOpcodes) {
    if (info.code == Opcode::kProto || info.code == Opcode::kStop) continue;
    uint8_t len = 0;
    switch (info.operand) {
      case OperandKind::kNone: len = 1; break;
      case OperandKind::kUInt1: len = 2; break;
      case OperandKind::kUInt2: len = 3; break;
      case OperandKind::kUInt4: len = 5; break;
      case OperandKind::kInt4: len = 5 | opcode_internal::kFixedSigned; break;
      default: break;
    }
    fixed[static_cast<uint8_t>(info.code)] = len;
  }
  return fixed;
}

}  // namespace

namespace opcode_internal {
extern constexpr std::array<const OpcodeInfo*, 256> kIndex = BuildIndex();
extern constexpr std::array<uint8_t, 256> kFixed = BuildFixed();
}  // namespace opcode_internal

std::string_view OpcodeName(Opcode code) {
  const OpcodeInfo* info = FindOpcode(static_cast<uint8_t>(code));
  return info == nullptr ? std::string_view("?") : info->name;
}

}  // namespace ckptguard

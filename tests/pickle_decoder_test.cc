// Tests of PickleDecoder, DecodeStream, ArgRepr and DisassemblePickle.
//
// Every expectation here was produced outside ckptguard and pasted in as a
// literal: opcode names, operand reprs and lengths from CPython 3.11's
// pickletools.genops/dis on the same bytes, and the acceptance of text
// literals (INT, LONG, FLOAT, GET, PUT) from CPython's C unpickler
// (pickle.loads), which is what torch.load runs. Nothing is computed by
// Python at test time.
//
// The cases ending in "AsTheCUnpickler" and ByteArrayReprAsPickletools pin
// edges where ckptguard once differed from CPython (see the comment above
// each); they quote the CPython code they follow.
#define BOOST_TEST_MODULE pickle_decoder_test
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/pickle_disasm.h"
#include "ckptguard/pickle_opcodes.h"

namespace ckptguard {
namespace {

using namespace std::string_literals;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

std::string Code(ErrorCode code) { return std::string(ErrorCodeName(code)); }
std::string Name(const PickleOp& op) { return std::string(op.Info().name); }

// Hex shows bytes in test failure messages.
std::string Hex(std::string_view bytes) {
  std::string out;
  char buf[4];
  for (char c : bytes) {
    std::snprintf(buf, sizeof(buf), "%02x", static_cast<unsigned>(static_cast<uint8_t>(c)));
    out += buf;
  }
  return out;
}

// ErrorText renders an error for failure messages.
template <typename T>
std::string ErrorText(const Result<T>& r) {
  return r ? std::string("(no error)") : r.error().ToString();
}

// ---------------------------------------------------------------------------
// The opcode table against pickletools.opcodes.

struct OpcodeRow {
  uint8_t byte;
  const char* name;
  int proto;
  bool has_arg;
};

// [(o.code, o.name, o.proto, o.arg is not None) for o in pickletools.opcodes]
const OpcodeRow kPickletoolsOpcodes[] = {
    {'I', "INT", 0, true},
    {'J', "BININT", 1, true},
    {'K', "BININT1", 1, true},
    {'M', "BININT2", 1, true},
    {'L', "LONG", 0, true},
    {0x8a, "LONG1", 2, true},
    {0x8b, "LONG4", 2, true},
    {'S', "STRING", 0, true},
    {'T', "BINSTRING", 1, true},
    {'U', "SHORT_BINSTRING", 1, true},
    {'B', "BINBYTES", 3, true},
    {'C', "SHORT_BINBYTES", 3, true},
    {0x8e, "BINBYTES8", 4, true},
    {0x96, "BYTEARRAY8", 5, true},
    {0x97, "NEXT_BUFFER", 5, false},
    {0x98, "READONLY_BUFFER", 5, false},
    {'N', "NONE", 0, false},
    {0x88, "NEWTRUE", 2, false},
    {0x89, "NEWFALSE", 2, false},
    {'V', "UNICODE", 0, true},
    {0x8c, "SHORT_BINUNICODE", 4, true},
    {'X', "BINUNICODE", 1, true},
    {0x8d, "BINUNICODE8", 4, true},
    {'F', "FLOAT", 0, true},
    {'G', "BINFLOAT", 1, true},
    {']', "EMPTY_LIST", 1, false},
    {'a', "APPEND", 0, false},
    {'e', "APPENDS", 1, false},
    {'l', "LIST", 0, false},
    {')', "EMPTY_TUPLE", 1, false},
    {'t', "TUPLE", 0, false},
    {0x85, "TUPLE1", 2, false},
    {0x86, "TUPLE2", 2, false},
    {0x87, "TUPLE3", 2, false},
    {'}', "EMPTY_DICT", 1, false},
    {'d', "DICT", 0, false},
    {'s', "SETITEM", 0, false},
    {'u', "SETITEMS", 1, false},
    {0x8f, "EMPTY_SET", 4, false},
    {0x90, "ADDITEMS", 4, false},
    {0x91, "FROZENSET", 4, false},
    {'0', "POP", 0, false},
    {'2', "DUP", 0, false},
    {'(', "MARK", 0, false},
    {'1', "POP_MARK", 1, false},
    {'g', "GET", 0, true},
    {'h', "BINGET", 1, true},
    {'j', "LONG_BINGET", 1, true},
    {'p', "PUT", 0, true},
    {'q', "BINPUT", 1, true},
    {'r', "LONG_BINPUT", 1, true},
    {0x94, "MEMOIZE", 4, false},
    {0x82, "EXT1", 2, true},
    {0x83, "EXT2", 2, true},
    {0x84, "EXT4", 2, true},
    {'c', "GLOBAL", 0, true},
    {0x93, "STACK_GLOBAL", 4, false},
    {'R', "REDUCE", 0, false},
    {'b', "BUILD", 0, false},
    {'i', "INST", 0, true},
    {'o', "OBJ", 1, false},
    {0x81, "NEWOBJ", 2, false},
    {0x92, "NEWOBJ_EX", 4, false},
    {0x80, "PROTO", 2, true},
    {'.', "STOP", 0, false},
    {0x95, "FRAME", 4, true},
    {'P', "PERSID", 0, true},
    {'Q', "BINPERSID", 1, false},
};

BOOST_AUTO_TEST_CASE(OpcodeTableMatchesPickletools) {
  BOOST_TEST(std::size(kPickletoolsOpcodes) == 68u);
  std::set<uint8_t> defined;
  for (const OpcodeRow& row : kPickletoolsOpcodes) {
    BOOST_TEST_CONTEXT(row.name) {
      defined.insert(row.byte);
      const OpcodeInfo* info = FindOpcode(row.byte);
      BOOST_TEST_REQUIRE(info != nullptr);
      BOOST_TEST(info->name == row.name);
      BOOST_TEST(static_cast<uint8_t>(info->code) == row.byte);
      BOOST_TEST(OpcodeName(info->code) == row.name);
      BOOST_TEST(int{info->proto} == row.proto);
      BOOST_TEST((info->operand != OperandKind::kNone) == row.has_arg);
    }
  }
  for (int b = 0; b < 256; ++b) {
    BOOST_TEST_CONTEXT("byte " << b) {
      BOOST_TEST((FindOpcode(static_cast<uint8_t>(b)) != nullptr) == defined.contains(static_cast<uint8_t>(b)));
    }
  }
}

// ---------------------------------------------------------------------------
// One opcode at a time: {input bytes, name, ArgRepr, op length}.
//
// Each input is one op and nothing else (FRAME's frame must fit in the
// input, so its rows carry the framed bytes). The name, repr and length are
// what pickletools.genops gives for the same bytes: for `b`,
//   op, arg, pos = next(genops(f := io.BytesIO(b + b'.')))
//   op.name, ('' if arg is None else repr(arg)), f.tell()

struct OneOpRow {
  std::string input;
  const char* name;
  const char* repr;
  uint64_t length;
};

const std::vector<OneOpRow>& OneOpRows() {
  static const std::vector<OneOpRow> rows = {
      {"I42\n"s, "INT", R"(42)", 4},
      {"I-7\n"s, "INT", R"(-7)", 4},
      {"I00\n"s, "INT", R"(False)", 4},
      {"I01\n"s, "INT", R"(True)", 4},
      {"I99999999999999999999\n"s, "INT", R"(99999999999999999999)", 22},
      {"J\xff\xff\xff\xff"s, "BININT", R"(-1)", 5},
      {"J\x00\x00\x00\x80"s, "BININT", R"(-2147483648)", 5},
      {"J\x39\x30\x00\x00"s, "BININT", R"(12345)", 5},
      {"K\x00"s, "BININT1", R"(0)", 2},
      {"K\xff"s, "BININT1", R"(255)", 2},
      {"M\xff\xff"s, "BININT2", R"(65535)", 3},
      {"M\x00\x01"s, "BININT2", R"(256)", 3},
      {"L0\n"s, "LONG", R"(0)", 3},
      {"L12345678901234567890123L\n"s, "LONG", R"(12345678901234567890123)", 26},
      {"L-9223372036854775809\n"s, "LONG", R"(-9223372036854775809)", 22},
      {"L5L\n"s, "LONG", R"(5)", 4},
      {"\x8a\x00"s, "LONG1", R"(0)", 2},
      {"\x8a\x01\xff"s, "LONG1", R"(-1)", 3},
      {"\x8a\x01\x7f"s, "LONG1", R"(127)", 3},
      {"\x8a\x02\xff\x00"s, "LONG1", R"(255)", 4},
      {"\x8a\x02\x00\x80"s, "LONG1", R"(-32768)", 4},
      {"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"s, "LONG1", R"(9223372036854775807)", 10},
      {"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"s, "LONG1", R"(-9223372036854775808)", 10},
      {"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01"s, "LONG1", R"(18446744073709551616)", 11},
      {"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xff"s, "LONG1", R"(-18446744073709551616)", 11},
      {"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00"s, "LONG1", R"(18446744073709551615)", 11},
      {"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff"s, "LONG1", R"(-1)", 11},
      {"\x8b\x00\x00\x00\x00"s, "LONG4", R"(0)", 5},
      {"\x8b\x02\x00\x00\x00\x00\xff"s, "LONG4", R"(-256)", 7},
      {"\x8b\x0a\x00\x00\x00\x01\x01\x01\x01\x01\x01\x01\x01\x01\x80"s, "LONG4", R"(-604444390723068039724799)", 15},
      {R"(S'A\x41\n\101')" "\n"s, "STRING", R"('AA\nA')", 15},
      {"S\"it's\"\n"s, "STRING", R"("it's")", 8},
      {R"(S'a\'b"c')" "\n"s, "STRING", R"('a\'b"c')", 10},
      {"S''\n"s, "STRING", R"('')", 4},
      {R"(S'\t\x00\\')" "\n"s, "STRING", R"('\t\x00\\')", 12},
      {R"(S'\q')" "\n"s, "STRING", R"('\\q')", 6},
      {"T\x03\x00\x00\x00" "ab\xe9"s, "BINSTRING", R"('abé')", 8},
      {"T\x00\x00\x00\x00"s, "BINSTRING", R"('')", 5},
      {"U\x02hi"s, "SHORT_BINSTRING", R"('hi')", 4},
      {"U\x01'"s, "SHORT_BINSTRING", R"("'")", 3},
      {"B\x03\x00\x00\x00\x00\x7f\x80"s, "BINBYTES", R"(b'\x00\x7f\x80')", 8},
      {"B\x00\x00\x00\x00"s, "BINBYTES", R"(b'')", 5},
      {"C\x02'\""s, "SHORT_BINBYTES", R"(b'\'"')", 4},
      {"C\x01\\"s, "SHORT_BINBYTES", R"(b'\\')", 3},
      {"\x8e\x02\x00\x00\x00\x00\x00\x00\x00\t\n"s, "BINBYTES8", R"(b'\t\n')", 11},
      {"\x96\x03\x00\x00\x00\x00\x00\x00\x00" "ab\x00"s, "BYTEARRAY8", R"(bytearray(b'ab\x00'))", 12},
      {"\x96\x00\x00\x00\x00\x00\x00\x00\x00"s, "BYTEARRAY8", R"(bytearray(b''))", 9},
      {"\x96\x02\x00\x00\x00\x00\x00\x00\x00'\""s, "BYTEARRAY8", R"(bytearray(b'\'"'))", 11},
      {"\x97"s, "NEXT_BUFFER", R"()", 1},
      {"\x98"s, "READONLY_BUFFER", R"()", 1},
      {"N"s, "NONE", R"()", 1},
      {"\x88"s, "NEWTRUE", R"()", 1},
      {"\x89"s, "NEWFALSE", R"()", 1},
      {R"(V\u00e9\U0001f600 x)" "\n"s, "UNICODE", R"('é😀 x')", 20},
      {"V\xe9\n"s, "UNICODE", R"('é')", 3},
      {R"(V\n)" "\n"s, "UNICODE", R"('\\n')", 4},
      {"V\n"s, "UNICODE", R"('')", 2},
      {R"(V\ud800)" "\n"s, "UNICODE", R"('\ud800')", 8},
      {"Vit's \"q\"\n"s, "UNICODE", R"('it\'s "q"')", 10},
      {"\x8c\x02\xc3\xa9"s, "SHORT_BINUNICODE", R"('é')", 4},
      {"\x8c\x00"s, "SHORT_BINUNICODE", R"('')", 2},
      {"X\x04\x00\x00\x00\xf0\x9f\x98\x80"s, "BINUNICODE", R"('😀')", 9},
      {"X\x03\x00\x00\x00\xed\xa0\x80"s, "BINUNICODE", R"('\ud800')", 8},
      {"X\x02\x00\x00\x00\x00\x7f"s, "BINUNICODE", R"('\x00\x7f')", 7},
      {"X\x02\x00\x00\x00\xc2\xa0"s, "BINUNICODE", R"('\xa0')", 7},
      {"\x8d\x05\x00\x00\x00\x00\x00\x00\x00hello"s, "BINUNICODE8", R"('hello')", 14},
      {"F1e-05\n"s, "FLOAT", R"(1e-05)", 7},
      {"Finf\n"s, "FLOAT", R"(inf)", 5},
      {"F-inf\n"s, "FLOAT", R"(-inf)", 6},
      {"Fnan\n"s, "FLOAT", R"(nan)", 5},
      {"F0.1\n"s, "FLOAT", R"(0.1)", 5},
      {"F-0.0\n"s, "FLOAT", R"(-0.0)", 6},
      {"F1e16\n"s, "FLOAT", R"(1e+16)", 6},
      {"F1e15\n"s, "FLOAT", R"(1000000000000000.0)", 6},
      {"F123.456\n"s, "FLOAT", R"(123.456)", 9},
      {"G\x3f\xf8\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(1.5)", 9},
      {"G\x7f\xf0\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(inf)", 9},
      {"G\xff\xf0\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(-inf)", 9},
      {"G\x7f\xf8\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(nan)", 9},
      {"G\x80\x00\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(-0.0)", 9},
      {"G\xff\xf8\x00\x00\x00\x00\x00\x00"s, "BINFLOAT", R"(nan)", 9},
      {"G\x00\x00\x00\x00\x00\x00\x00\x01"s, "BINFLOAT", R"(5e-324)", 9},
      {"G\x54\xb2\x49\xad\x25\x94\xc3\x7d"s, "BINFLOAT", R"(1e+100)", 9},
      {"G\x3f\x1a\x36\xe2\xeb\x1c\x43\x2d"s, "BINFLOAT", R"(0.0001)", 9},
      {"G\x7f\xef\xff\xff\xff\xff\xff\xff"s, "BINFLOAT", R"(1.7976931348623157e+308)", 9},
      {"]"s, "EMPTY_LIST", R"()", 1},
      {"a"s, "APPEND", R"()", 1},
      {"e"s, "APPENDS", R"()", 1},
      {"l"s, "LIST", R"()", 1},
      {")"s, "EMPTY_TUPLE", R"()", 1},
      {"t"s, "TUPLE", R"()", 1},
      {"\x85"s, "TUPLE1", R"()", 1},
      {"\x86"s, "TUPLE2", R"()", 1},
      {"\x87"s, "TUPLE3", R"()", 1},
      {"}"s, "EMPTY_DICT", R"()", 1},
      {"d"s, "DICT", R"()", 1},
      {"s"s, "SETITEM", R"()", 1},
      {"u"s, "SETITEMS", R"()", 1},
      {"\x8f"s, "EMPTY_SET", R"()", 1},
      {"\x90"s, "ADDITEMS", R"()", 1},
      {"\x91"s, "FROZENSET", R"()", 1},
      {"0"s, "POP", R"()", 1},
      {"2"s, "DUP", R"()", 1},
      {"("s, "MARK", R"()", 1},
      {"1"s, "POP_MARK", R"()", 1},
      {"g3\n"s, "GET", R"(3)", 3},
      {"h\x05"s, "BINGET", R"(5)", 2},
      {"j\x00\x01\x00\x00"s, "LONG_BINGET", R"(256)", 5},
      {"p0\n"s, "PUT", R"(0)", 3},
      {"q\xff"s, "BINPUT", R"(255)", 2},
      {"r\xff\xff\xff\xff"s, "LONG_BINPUT", R"(4294967295)", 5},
      {"\x94"s, "MEMOIZE", R"()", 1},
      {"\x82\xff"s, "EXT1", R"(255)", 2},
      {"\x83\x34\x12"s, "EXT2", R"(4660)", 3},
      {"\x84\x78\x56\x34\x12"s, "EXT4", R"(305419896)", 5},
      {"\x84\xff\xff\xff\xff"s, "EXT4", R"(-1)", 5},
      {"cbuiltins\ngetattr\n"s, "GLOBAL", R"('builtins getattr')", 18},
      {"ccollections\nOrderedDict\n"s, "GLOBAL", R"('collections OrderedDict')", 25},
      {"ctorch._utils\n_rebuild_tensor_v2\n"s, "GLOBAL", R"('torch._utils _rebuild_tensor_v2')", 33},
      {"cos\nsystem\n"s, "GLOBAL", R"('os system')", 11},
      {"cm\nA.B\n"s, "GLOBAL", R"('m A.B')", 7},
      {"\x93"s, "STACK_GLOBAL", R"()", 1},
      {"R"s, "REDUCE", R"()", 1},
      {"b"s, "BUILD", R"()", 1},
      {"i__main__\nC\n"s, "INST", R"('__main__ C')", 12},
      {"o"s, "OBJ", R"()", 1},
      {"\x81"s, "NEWOBJ", R"()", 1},
      {"\x92"s, "NEWOBJ_EX", R"()", 1},
      {"\x80\x00"s, "PROTO", R"(0)", 2},
      {"\x80\x01"s, "PROTO", R"(1)", 2},
      {"\x80\x02"s, "PROTO", R"(2)", 2},
      {"\x80\x03"s, "PROTO", R"(3)", 2},
      {"\x80\x04"s, "PROTO", R"(4)", 2},
      {"\x80\x05"s, "PROTO", R"(5)", 2},
      {"."s, "STOP", R"()", 1},
      {"\x95\x02\x00\x00\x00\x00\x00\x00\x00N."s, "FRAME", R"(2)", 9},
      {"\x95\x00\x00\x00\x00\x00\x00\x00\x00"s, "FRAME", R"(0)", 9},
      {"P0\n"s, "PERSID", R"('0')", 3},
      {"Pstorage\n"s, "PERSID", R"('storage')", 9},
      {"P\n"s, "PERSID", R"('')", 2},
      {"Q"s, "BINPERSID", R"()", 1},
  };
  return rows;
}

// CheckOneOpRow decodes the row's first op and compares it with the row;
// it returns the op's name ("" when decoding failed).
std::string CheckOneOpRow(const OneOpRow& row) {
  std::string name;
  BOOST_TEST_CONTEXT(row.name << " " << Hex(row.input)) {
    PickleDecoder decoder(AsBytes(row.input));
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST(op.has_value(), ErrorText(op));
    if (!op) return name;
    name = Name(*op);
    BOOST_TEST(name == row.name);
    BOOST_TEST(ArgRepr(*op) == row.repr);
    BOOST_TEST(op->length == row.length);
    BOOST_TEST(op->offset == 0u);
    BOOST_TEST(op->pickle_index == 0u);
    BOOST_TEST(decoder.Offset() == row.length);
    BOOST_TEST(decoder.BetweenPickles() == (op->code == Opcode::kStop));
  }
  return name;
}

BOOST_AUTO_TEST_CASE(EveryOpcodeDecodesAlone) {
  std::set<std::string> seen;
  for (const OneOpRow& row : OneOpRows()) seen.insert(CheckOneOpRow(row));
  // Every entry of pickletools.opcodes has at least one row.
  for (const OpcodeRow& row : kPickletoolsOpcodes) {
    BOOST_TEST(seen.contains(row.name), row.name << " has no row");
  }
}

// CPython's repr of a bytearray always escapes a single quote, also when it
// chose double quotes (Objects/bytearrayobject.c, bytearray_repr), unlike
// repr of bytes: pickletools shows BYTEARRAY8 of b"'" as bytearray(b"\'")
// (ArgRepr uses py::ReprByteArray). The quote is chosen as for bytes.
BOOST_AUTO_TEST_CASE(ByteArrayReprAsPickletools) {
  const std::vector<OneOpRow> rows = {
      {"\x96\x01\x00\x00\x00\x00\x00\x00\x00'"s, "BYTEARRAY8", R"(bytearray(b"\'"))", 10},
      {"\x96\x03\x00\x00\x00\x00\x00\x00\x00" "a'b"s, "BYTEARRAY8", R"(bytearray(b"a\'b"))", 12},
      {"\x96\x04\x00\x00\x00\x00\x00\x00\x00\\'\x00\n"s, "BYTEARRAY8", R"(bytearray(b"\\\'\x00\n"))", 13},
      // repr(bytearray(b'"')), repr(bytearray(b'\'"')), repr(bytearray(b'"\''))
      {"\x96\x01\x00\x00\x00\x00\x00\x00\x00\""s, "BYTEARRAY8", R"(bytearray(b'"'))", 10},
      {"\x96\x02\x00\x00\x00\x00\x00\x00\x00'\""s, "BYTEARRAY8", R"(bytearray(b'\'"'))", 11},
      {"\x96\x02\x00\x00\x00\x00\x00\x00\x00\"'"s, "BYTEARRAY8", R"(bytearray(b'"\''))", 11},
  };
  for (const OneOpRow& row : rows) CheckOneOpRow(row);
}

// The decoded fields behind the reprs: types, ownership, exact values.
BOOST_AUTO_TEST_CASE(OperandFields) {
  auto first = [](const std::string& input) {
    PickleDecoder decoder(AsBytes(input));
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(op.has_value(), ErrorText(op));
    return *std::move(op);
  };
  {
    const std::string in = "I00\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBool));
    BOOST_TEST(op.arg.int_value == 0);
  }
  {
    const std::string in = "I01\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBool));
    BOOST_TEST(op.arg.int_value == 1);
  }
  {
    const std::string in = "I-9223372036854775808\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kInt));
    BOOST_TEST(op.arg.int_value == std::numeric_limits<int64_t>::min());
  }
  {
    // (12345678901234567890123).to_bytes(10, 'little', signed=True)
    const std::string in = "L12345678901234567890123L\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBigInt));
    BOOST_TEST(Hex(op.arg.Data()) == "cb444271764eb6429d02");
  }
  {
    // (-9223372036854775809).to_bytes(9, 'little', signed=True)
    const std::string in = "L-9223372036854775809\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBigInt));
    BOOST_TEST(Hex(op.arg.Data()) == "ffffffffffffff7fff");
  }
  {
    // LONG1 that fits in int64 after dropping a sign-extension byte.
    const std::string in = "\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kInt));
    BOOST_TEST(op.arg.int_value == -1);
  }
  {
    // LONG1 beyond int64: a zero-copy view of the operand bytes.
    const std::string in = "\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBigInt));
    BOOST_TEST(Hex(op.arg.Data()) == "000000000000000001");
    BOOST_TEST(static_cast<const void*>(op.arg.Data().data()) == static_cast<const void*>(in.data() + 2));
  }
  {
    const std::string in = "J\xfe\xff\xff\xff"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kInt));
    BOOST_TEST(op.arg.int_value == -2);
  }
  {
    const std::string in = "\x84\xff\xff\xff\x7f"s;  // EXT4 is signed
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kInt));
    BOOST_TEST(op.arg.int_value == 2147483647);
  }
  {
    const std::string in = "r\xff\xff\xff\xff"s;  // LONG_BINPUT is unsigned
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kUInt));
    BOOST_TEST(op.arg.uint_value == 4294967295u);
  }
  {
    const std::string in = "\x95\x01\x00\x00\x00\x00\x00\x00\x00."s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kUInt));
    BOOST_TEST(op.arg.uint_value == 1u);
    BOOST_TEST(op.length == 9u);
  }
  {
    const std::string in = "ctorch._utils\n_rebuild_tensor_v2\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kGlobal));
    BOOST_TEST(op.arg.Data() == "torch._utils");
    BOOST_TEST(op.arg.Name() == "_rebuild_tensor_v2");
  }
  {
    const std::string in = R"(S'A\x41\n\101')" "\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBytes));
    BOOST_TEST(op.arg.Data() == "AA\nA");
  }
  {
    // Counted strings are views of the input.
    const std::string in = "X\x05\x00\x00\x00hello"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kString));
    BOOST_TEST(op.arg.Data() == "hello");
    BOOST_TEST(static_cast<const void*>(op.arg.Data().data()) == static_cast<const void*>(in.data() + 5));
    BOOST_TEST(ArgRepr(op, 5) == "'hell...(2 more chars)");
    BOOST_TEST(ArgRepr(op, 7) == "'hello'");
  }
  {
    // UNICODE's \ud800 is kept as the 3-byte (surrogatepass) encoding.
    const std::string in = R"(V\ud800)" "\n";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kString));
    BOOST_TEST(Hex(op.arg.Data()) == "eda080");
  }
  {
    const std::string in = "C\x03\x00\x01\x02"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kBytes));
    BOOST_TEST(Hex(op.arg.Data()) == "000102");
  }
  {
    const std::string in = "G\x80\x00\x00\x00\x00\x00\x00\x00"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kFloat));
    BOOST_TEST(op.arg.float_value == 0.0);
    BOOST_TEST(std::signbit(op.arg.float_value));
  }
  {
    const std::string in = "Fnan\n";
    PickleOp op = first(in);
    BOOST_TEST(std::isnan(op.arg.float_value));
  }
  {
    const std::string in = "\x80\x05"s;
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kUInt));
    BOOST_TEST(op.arg.uint_value == 5u);
  }
  {
    const std::string in = "N";
    PickleOp op = first(in);
    BOOST_TEST((op.arg.type == PickleArgType::kNone));
    BOOST_TEST(ArgRepr(op).empty());
  }
}

BOOST_AUTO_TEST_CASE(BaseOffsetShiftsEveryOffset) {
  const std::string in = "\x80\x02X\x01\x00\x00\x00" "a.N\xff"s;
  PickleDecoder decoder(AsBytes(in), {}, 1000);
  BOOST_TEST(decoder.Offset() == 1000u);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 4; ++i) {
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(op.has_value(), ErrorText(op));
    offsets.push_back(op->offset);
  }
  BOOST_TEST(offsets == (std::vector<uint64_t>{1000, 1002, 1008, 1009}), boost::test_tools::per_element());
  Result<PickleOp> bad = decoder.Next();
  BOOST_TEST_REQUIRE(!bad.has_value());
  BOOST_TEST(Code(bad.error().code) == Code(ErrorCode::kUnsupportedOpcode));
  BOOST_TEST(bad.error().offset == 1010u);
}

// ---------------------------------------------------------------------------
// Truncation: every proper prefix of every op with an operand (the rows
// above, cut after the opcode byte and before the op's last byte) is
// kTruncated, at an offset inside the prefix, and the decoder then keeps
// returning that same error.

BOOST_AUTO_TEST_CASE(EveryProperPrefixIsTruncated) {
  std::set<std::string> covered;
  size_t num_prefixes = 0;
  for (const OneOpRow& row : OneOpRows()) {
    for (size_t k = 1; k < row.length; ++k) {
      const std::string prefix = row.input.substr(0, k);
      BOOST_TEST_CONTEXT(row.name << " prefix " << Hex(prefix)) {
        ++num_prefixes;
        covered.insert(row.name);
        PickleDecoder decoder(AsBytes(prefix), {}, 0);
        Result<PickleOp> op = decoder.Next();
        BOOST_TEST_REQUIRE(!op.has_value());
        const Error first = op.error();
        BOOST_TEST(Code(first.code) == Code(ErrorCode::kTruncated), first.ToString());
        BOOST_TEST(first.offset <= prefix.size());
        BOOST_TEST(first.where == row.name);
        BOOST_TEST(decoder.Offset() == 0u);  // left at the failing op
        for (int again = 0; again < 2; ++again) {
          Result<PickleOp> next = decoder.Next();
          BOOST_TEST_REQUIRE(!next.has_value());
          BOOST_TEST(Code(next.error().code) == Code(first.code));
          BOOST_TEST(next.error().offset == first.offset);
          BOOST_TEST(next.error().detail == first.detail);
        }
      }
    }
  }
  BOOST_TEST(num_prefixes > 300u);
  // Every opcode with an operand was cut.
  for (const OpcodeRow& row : kPickletoolsOpcodes) {
    if (row.has_arg) BOOST_TEST(covered.contains(row.name), row.name << " never truncated");
  }
}

struct BadRow {
  std::string input;
  ErrorCode code;
  uint64_t offset;
  const char* cpython;  // what CPython's pickle.loads(input + b'.') raises
};

void CheckBadRows(const std::vector<BadRow>& rows) {
  for (const BadRow& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input) << " (CPython: " << row.cpython << ")") {
      DecodedStream stream = DecodeStream(AsBytes(row.input));
      BOOST_TEST_REQUIRE(stream.error.has_value());
      BOOST_TEST(Code(stream.error->code) == Code(row.code), stream.error->ToString());
      BOOST_TEST(stream.error->offset == row.offset, stream.error->ToString());
      BOOST_TEST(stream.error->offset <= row.input.size());
    }
  }
}

// Where exactly truncation is reported: at the operand that is short (a
// counted payload, a fixed-size field, a line without its newline), at the
// FRAME opcode for a frame that does not fit, and after the last op when a
// pickle ends without STOP.
BOOST_AUTO_TEST_CASE(TruncationOffsets) {
  CheckBadRows({
      {"J\x01\x02"s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"\x80"s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"X\x05\x00"s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"X\x05\x00\x00\x00" "ab"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
      {"\x8b\x03\x00\x00\x00\x01"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
      {"\x8e\x02\x00\x00\x00\x00\x00\x00\x00" "a"s, ErrorCode::kTruncated, 9, "pickle data was truncated"},
      {"I12"s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"cmod"s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"cmod\nna"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
      {"N\x95\x05\x00\x00\x00\x00\x00\x00\x00N."s, ErrorCode::kTruncated, 1, "pickle data was truncated"},
      {"N\x95\x00\x00"s, ErrorCode::kTruncated, 2, "pickle data was truncated"},
      {"\x80\x02N"s, ErrorCode::kTruncated, 3, "pickle data was truncated"},
      {"N.\x80\x02]"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
      {"N.N.X"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
  });
}

BOOST_AUTO_TEST_CASE(PickleExhaustedBeforeStop) {
  const std::string in = "\x80\x02N"s;
  PickleDecoder decoder(AsBytes(in));
  BOOST_TEST(decoder.Next().has_value());
  BOOST_TEST(decoder.Next().has_value());
  BOOST_TEST(decoder.AtEnd());
  BOOST_TEST(!decoder.BetweenPickles());
  for (int i = 0; i < 3; ++i) {
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(!op.has_value());
    BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kTruncated));
    BOOST_TEST(op.error().offset == 3u);
    BOOST_TEST(op.error().detail == "pickle exhausted before STOP");
  }
}

BOOST_AUTO_TEST_CASE(EmptyInputBetweenPickles) {
  {
    const std::string in;
    PickleDecoder decoder(AsBytes(in));
    BOOST_TEST(decoder.AtEnd());
    BOOST_TEST(decoder.BetweenPickles());
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(!op.has_value());
    BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kInvalidArgument));
    BOOST_TEST(op.error().offset == 0u);

    DecodedStream stream = DecodeStream(AsBytes(in));
    BOOST_TEST(stream.ops.empty());
    BOOST_TEST(!stream.error.has_value());
    BOOST_TEST(stream.end_offset == 0u);
    BOOST_TEST(stream.num_pickles == 0u);
  }
  {
    const std::string in = "N.";
    PickleDecoder decoder(AsBytes(in), {}, 10);
    BOOST_TEST(decoder.Next().has_value());
    BOOST_TEST(!decoder.BetweenPickles());
    BOOST_TEST(decoder.Next().has_value());
    BOOST_TEST(decoder.BetweenPickles());
    BOOST_TEST(decoder.AtEnd());
    BOOST_TEST(decoder.NumPicklesFinished() == 1u);
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(!op.has_value());
    BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kInvalidArgument));
    BOOST_TEST(op.error().offset == 12u);
  }
}

// ---------------------------------------------------------------------------
// Malformed input: {bytes, ErrorCode, offset}.

BOOST_AUTO_TEST_CASE(UnknownOpcodes) {
  std::set<uint8_t> defined;
  for (const OpcodeRow& row : kPickletoolsOpcodes) defined.insert(row.byte);
  int num_unknown = 0;
  for (int b = 0; b < 256; ++b) {
    if (defined.contains(static_cast<uint8_t>(b))) continue;
    ++num_unknown;
    char expected_detail[32];
    std::snprintf(expected_detail, sizeof(expected_detail), "unknown opcode 0x%02x", b);
    BOOST_TEST_CONTEXT("byte " << b) {
      // Alone, and after a complete op inside a pickle.
      for (const std::string& lead : {""s, "\x80\x02N"s, "N."s}) {
        const std::string in = lead + static_cast<char>(b) + "N."s;
        PickleDecoder decoder(AsBytes(in));
        for (size_t i = 0; i < (lead.empty() ? 0u : 2u); ++i) {  // both leads are two ops
          BOOST_TEST_REQUIRE(decoder.Next().has_value());
        }
        Result<PickleOp> op = decoder.Next();
        BOOST_TEST_REQUIRE(!op.has_value());
        BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kUnsupportedOpcode));
        BOOST_TEST(op.error().offset == lead.size());
        BOOST_TEST(op.error().detail == expected_detail);
      }
    }
  }
  BOOST_TEST(num_unknown == 256 - 68);
}

BOOST_AUTO_TEST_CASE(MalformedTable) {
  CheckBadRows({
      // PROTO above 5.
      {"\x80\x06"s, ErrorCode::kMalformed, 1, "ValueError: unsupported pickle protocol: 6"},
      {"\x80\xff"s, ErrorCode::kMalformed, 1, "ValueError: unsupported pickle protocol: 255"},
      {"N.\x80\x06"s, ErrorCode::kMalformed, 3, "(second pickle) ValueError: unsupported pickle protocol: 6"},
      // Negative counts. (The C unpickler reads BINSTRING's count unsigned and
      // so reports "pickle data was truncated"; pickle.py and pickletools
      // reject it as negative. Refused either way.)
      {"T\xff\xff\xff\xff"s, ErrorCode::kMalformed, 1, "UnpicklingError: pickle data was truncated"},
      {"T\x00\x00\x00\x80" "abc"s, ErrorCode::kMalformed, 1, "UnpicklingError: pickle data was truncated"},
      {"\x8b\xff\xff\xff\xff"s, ErrorCode::kMalformed, 1, "UnpicklingError: LONG pickle has negative byte count"},
      {"\x8b\x00\x00\x00\x80"s, ErrorCode::kMalformed, 1, "UnpicklingError: LONG pickle has negative byte count"},
      // Invalid UTF-8 in counted unicode: offset of the bad sequence.
      {"X\x02\x00\x00\x00\xc3\x28"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: invalid continuation byte"},
      {"X\x02\x00\x00\x00\xc0\x80"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: invalid start byte"},
      {"X\x03\x00\x00\x00\xe0\x80\x80"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: invalid continuation byte"},
      {"X\x04\x00\x00\x00\xf4\x90\x80\x80"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: invalid continuation byte"},
      {"X\x04\x00\x00\x00\xf8\x88\x80\x80"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: invalid start byte"},
      {"X\x03\x00\x00\x00\xf0\x9f\x98"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: unexpected end of data"},
      {"X\x03\x00\x00\x00" "a\xff" "b"s, ErrorCode::kMalformed, 6, "UnicodeDecodeError: invalid start byte"},
      {"\x8c\x02" "a\xe2"s, ErrorCode::kMalformed, 3, "UnicodeDecodeError: unexpected end of data"},
      {"\x8c\x01\x80"s, ErrorCode::kMalformed, 2, "UnicodeDecodeError: invalid start byte"},
      {"\x8d\x02\x00\x00\x00\x00\x00\x00\x00" "a\xc3"s, ErrorCode::kMalformed, 10, "UnicodeDecodeError: unexpected end of data"},
      // GLOBAL lines are strict UTF-8: no surrogates (unlike BINUNICODE).
      {"c\xed\xa0\x80\nx\n"s, ErrorCode::kMalformed, 1, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xed"},
      {"cm\n\xed\xb2\x80\n"s, ErrorCode::kMalformed, 3, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xed"},
      {"c\xff\nx\n"s, ErrorCode::kMalformed, 1, "UnicodeDecodeError: invalid start byte"},
      // STRING must be quoted with the same quote at both ends.
      {"Sabc\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S'abc\"\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S\"abc'\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S'\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S\"\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      {"S'abc'\r\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: the STRING opcode argument must be quoted"},
      // STRING escapes: offset of the backslash.
      {R"(S'\x4')" "\n"s, ErrorCode::kMalformed, 2, "ValueError: invalid \\x escape at position 0"},
      {R"(S'ab\xZZ')" "\n"s, ErrorCode::kMalformed, 4, "ValueError: invalid \\x escape at position 2"},
      {R"(S'\x')" "\n"s, ErrorCode::kMalformed, 2, "ValueError: invalid \\x escape at position 0"},
      {R"(S'ab\')" "\n"s, ErrorCode::kMalformed, 4, "ValueError: Trailing \\ in string"},
      // UNICODE (raw-unicode-escape): truncated or out-of-range escapes.
      {R"(V\u00e)" "\n"s, ErrorCode::kMalformed, 6, "UnicodeDecodeError: truncated \\uXXXX escape"},
      {R"(V\u00zz)" "\n"s, ErrorCode::kMalformed, 5, "UnicodeDecodeError: truncated \\uXXXX escape"},
      {R"(Vab\U0001f60)" "\n"s, ErrorCode::kMalformed, 12, "UnicodeDecodeError: truncated \\UXXXXXXXX escape"},
      {R"(V\U00110000)" "\n"s, ErrorCode::kMalformed, 1, "UnicodeDecodeError: \\Uxxxxxxxx out of range"},
      // PERSID must be ASCII (checked with a persistent_load defined).
      {"P\xe9\n"s, ErrorCode::kMalformed, 1, "UnpicklingError: persistent IDs in protocol 0 must be ASCII strings"},
      {"Pab\x80\n"s, ErrorCode::kMalformed, 3, "UnpicklingError: persistent IDs in protocol 0 must be ASCII strings"},
  });
}

// Lone surrogates in counted unicode are accepted (CPython decodes with
// "surrogatepass"): pickle.loads(b'X\x03\x00\x00\x00\xed\xa0\x80.') == '\ud800'.
BOOST_AUTO_TEST_CASE(SurrogatesAcceptedInCountedUnicode) {
  struct Row {
    std::string input;
    const char* repr;
  };
  const std::vector<Row> rows = {
      {"X\x03\x00\x00\x00\xed\xa0\x80"s, R"('\ud800')"},
      {"\x8c\x03\xed\xbf\xbf"s, R"('\udfff')"},
      {"\x8d\x06\x00\x00\x00\x00\x00\x00\x00\xed\xa0\xbd\xed\xb8\x80"s, R"('\ud83d\ude00')"},
  };
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input)) {
      PickleDecoder decoder(AsBytes(row.input));
      Result<PickleOp> op = decoder.Next();
      BOOST_TEST_REQUIRE(op.has_value(), ErrorText(op));
      BOOST_TEST(ArgRepr(*op) == row.repr);
    }
  }
}

// ---------------------------------------------------------------------------
// Text literals of INT, LONG, FLOAT, GET and PUT, as the C unpickler reads
// them: {input, expected ArgRepr ("" = must fail), what CPython gives}.
// The expected reprs are repr(pickle.loads(input + b'.')) for INT, LONG and
// FLOAT, and the memo index CPython uses for GET and PUT. Failures are
// kMalformed at the start of the line (offset 1).

struct LiteralRow {
  std::string input;
  const char* repr;     // "" when CPython refuses the literal
  const char* cpython;  // CPython's exception for refused literals
};

void CheckLiteralRows(const std::vector<LiteralRow>& rows) {
  for (const LiteralRow& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input) << " '" << row.input.substr(0, row.input.size() - 1) << "'") {
      PickleDecoder decoder(AsBytes(row.input));
      Result<PickleOp> op = decoder.Next();
      if (std::string_view(row.repr).empty()) {
        BOOST_TEST(!op.has_value(), "accepted as " << (op ? ArgRepr(*op) : "") << "; CPython: " << row.cpython);
        if (!op) {
          BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kMalformed), op.error().ToString());
          BOOST_TEST(op.error().offset == 1u);
        }
      } else {
        BOOST_TEST(op.has_value(), ErrorText(op) << "; CPython gives " << row.repr);
        if (!op) continue;
        BOOST_TEST(ArgRepr(*op) == row.repr);
        BOOST_TEST(op->length == row.input.size());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(TextLiteralsAsTheCUnpickler) {
  CheckLiteralRows({
      {"I0x10\n"s, R"(16)", ""},
      {"I 12\n"s, R"(12)", ""},
      {"I-7\n"s, R"(-7)", ""},
      {"I+5\n"s, R"(5)", ""},
      {"I1_000\n"s, R"(1000)", ""},
      {"I010\n"s, R"(8)", ""},
      {"I000\n"s, R"(0)", ""},
      {"I0\n"s, R"(0)", ""},
      {"I-1\n"s, R"(-1)", ""},
      {"I12 \n"s, R"(12)", ""},
      {"I1\r\n"s, R"(1)", ""},
      {"I\t5\n"s, R"(5)", ""},
      {"I\x0b" "5\n"s, R"(5)", ""},
      {"I5\x00junk\n"s, R"(5)", ""},
      {"I0o10\n"s, R"(8)", ""},
      {"I0b101\n"s, R"(5)", ""},
      {"I0_0\n"s, R"(0)", ""},
      {"I0x_1\n"s, R"(1)", ""},
      {"I-0x10\n"s, R"(-16)", ""},
      {"I0X1f\n"s, R"(31)", ""},
      {"I9223372036854775807\n"s, R"(9223372036854775807)", ""},
      {"I9223372036854775808\n"s, R"(9223372036854775808)", ""},
      {"I-9223372036854775808\n"s, R"(-9223372036854775808)", ""},
      {"I-9223372036854775809\n"s, R"(-9223372036854775809)", ""},
      {"I0x8000000000000000\n"s, R"(9223372036854775808)", ""},
      {"I0xffffffffffffffffffff\n"s, R"(1208925819614629174706175)", ""},
      {"I08\n"s, "", "ValueError: could not convert string to int"},
      {"I0x\n"s, "", "ValueError: could not convert string to int"},
      {"I01\r\n"s, "", "ValueError: could not convert string to int"},
      {"Iabc\n"s, "", "ValueError: could not convert string to int"},
      {"I1.5\n"s, "", "ValueError: could not convert string to int"},
      {"I1__0\n"s, "", "ValueError: could not convert string to int"},
      {"I_1\n"s, "", "ValueError: could not convert string to int"},
      {"I1_\n"s, "", "ValueError: could not convert string to int"},
      {"I0_7\n"s, "", "ValueError: could not convert string to int"},
      {"I1e3\n"s, "", "ValueError: could not convert string to int"},
      {"I- 5\n"s, "", "ValueError: could not convert string to int"},
      {"I+-5\n"s, "", "ValueError: could not convert string to int"},
      {"I\n"s, "", "UnpicklingError: pickle data was truncated"},
      {"L0x10L\n"s, R"(16)", ""},
      {"L 12\n"s, R"(12)", ""},
      {"L12L\n"s, R"(12)", ""},
      {"L-5\n"s, R"(-5)", ""},
      {"L00\n"s, R"(0)", ""},
      {"L0\n"s, R"(0)", ""},
      {"L1_0L\n"s, R"(10)", ""},
      {"L1\x00" "2\n"s, R"(1)", ""},
      {"L0o17L\n"s, R"(15)", ""},
      {"L-0b11\n"s, R"(-3)", ""},
      {"L99999999999999999999999999999L\n"s, R"(99999999999999999999999999999)", ""},
      {"LL\n"s, "", "ValueError: invalid literal for int() with base 10: ''"},
      {"L\n"s, "", "UnpicklingError: pickle data was truncated"},
      {"L12LL\n"s, "", "ValueError: invalid literal for int() with base 10: '12L'"},
      {"L1.0\n"s, "", "ValueError: invalid literal for int() with base 10: '1.0\\n'"},
      {"F1e-05\n"s, R"(1e-05)", ""},
      {"Finf\n"s, R"(inf)", ""},
      {"F-inf\n"s, R"(-inf)", ""},
      {"Fnan\n"s, R"(nan)", ""},
      {"FInfinity\n"s, R"(inf)", ""},
      {"F-INF\n"s, R"(-inf)", ""},
      {"F-0.0\n"s, R"(-0.0)", ""},
      {"F1e-400\n"s, R"(0.0)", ""},
      {"F.5\n"s, R"(0.5)", ""},
      {"F5.\n"s, R"(5.0)", ""},
      {"F1.e5\n"s, R"(100000.0)", ""},
      {"F1.5\x00junk\n"s, R"(1.5)", ""},
      {"F+1.5\n"s, R"(1.5)", ""},
      {"FNaN\n"s, R"(nan)", ""},
      {"F-nan\n"s, R"(nan)", ""},
      {"F1E5\n"s, R"(100000.0)", ""},
      {"F+inf\n"s, R"(inf)", ""},
      {"F0.1\n"s, R"(0.1)", ""},
      {"F1.7976931348623157e308\n"s, R"(1.7976931348623157e+308)", ""},
      {"F2.5e-3\n"s, R"(0.0025)", ""},
      {"F 1.5\n"s, "", "ValueError: could not convert string to float: ' 1.5"},
      {"F1.5 \n"s, "", "ValueError: could not convert string to float"},
      {"F1_0\n"s, "", "ValueError: could not convert string to float"},
      {"F1e500\n"s, "", "OverflowError: value too large to convert to float: '1e500"},
      {"F-1e500\n"s, "", "OverflowError: value too large to convert to float: '-1e500"},
      {"Fe5\n"s, "", "ValueError: could not convert string to float: 'e5"},
      {"F1e\n"s, "", "ValueError: could not convert string to float"},
      {"F0x1p3\n"s, "", "ValueError: could not convert string to float"},
      {"F1.5\r\n"s, "", "ValueError: could not convert string to float"},
      {"F\n"s, "", "UnpicklingError: pickle data was truncated"},
      {"Finfinityx\n"s, "", "ValueError: could not convert string to float"},
      {"F.\n"s, "", "ValueError: could not convert string to float: '."},
      {"Fin\n"s, "", "ValueError: could not convert string to float: 'in"},
      {"g10\n"s, R"(10)", ""},
      {"g 5\n"s, R"(5)", ""},
      {"g1_0\n"s, R"(10)", ""},
      {"g01\n"s, R"(1)", ""},
      {"g00\n"s, R"(0)", ""},
      {"g7 \n"s, R"(7)", ""},
      {"p10\n"s, R"(10)", ""},
      {"p 5\n"s, R"(5)", ""},
      {"p01\n"s, R"(1)", ""},
      {"g\n"s, "", "UnpicklingError: pickle data was truncated"},
      {"gx\n"s, "", "ValueError: invalid literal for int() with base 10: 'x\\n'"},
      {"p\n"s, "", "UnpicklingError: pickle data was truncated"},
  });
}

// Python refuses decimal literals of more than 4300 digits (int_max_str_digits).
BOOST_AUTO_TEST_CASE(LongLiteralDigitLimit) {
  const std::string ok = "L" + std::string(4300, '7') + "\n";
  PickleDecoder ok_decoder(AsBytes(ok));
  BOOST_TEST(ok_decoder.Next().has_value());
  // pickle.loads(b'L' + b'7' * 4301 + b'\n.') -> ValueError: Exceeds the limit (4300 digits)
  const std::string too_long = "L" + std::string(4301, '7') + "\n";
  PickleDecoder decoder(AsBytes(too_long));
  Result<PickleOp> op = decoder.Next();
  BOOST_TEST_REQUIRE(!op.has_value());
  BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kLimitExceeded));
  BOOST_TEST(op.error().offset == 1u);
}

// CPython's load_int runs
//   x = strtol(s, &endptr, 0);
//   if (errno || (*endptr != '\n' && *endptr != '\0')) value = PyLong_FromString(s, NULL, 0);
//   else if (len == 3 && (x == 0 || x == 1)) value = bool(x);   /* len counts the newline */
// so ANY two-character line with strtol value 0 or 1 is a bool ("+1", "-0",
// " 1", "\r1", "1\0"...), not only "00"/"01"; and a line starting with NUL
// (strtol converts nothing, endptr == s points at the NUL) is accepted as 0,
// or as False when the line is two characters. A two-character line that
// strtol does not consume whole ("1 ") goes to PyLong and stays an int.
BOOST_AUTO_TEST_CASE(IntLiteralsAsTheCUnpickler) {
  CheckLiteralRows({
      {"I+1\n"s, R"(True)", ""},
      {"I-0\n"s, R"(False)", ""},
      {"I 1\n"s, R"(True)", ""},
      {"I 0\n"s, R"(False)", ""},
      {"I+0\n"s, R"(False)", ""},
      {"I\r1\n"s, R"(True)", ""},
      {"I1\x00\n"s, R"(True)", ""},
      {"I0\x00\n"s, R"(False)", ""},
      {"I\x00\n"s, R"(0)", ""},
      {"I\x00i\n"s, R"(False)", ""},
      {"I\x00" "abc\n"s, R"(0)", ""},
      {"I\x00" "1\n"s, R"(False)", ""},
      {"I\x00\x00\n"s, R"(False)", ""},
      {"I\t0\n"s, R"(False)", ""},
      {"I\x0b" "0\n"s, R"(False)", ""},
      {"I\x0c" "1\n"s, R"(True)", ""},
      {"I00\n"s, R"(False)", ""},
      {"I01\n"s, R"(True)", ""},
      {"I-1\n"s, R"(-1)", ""},
      {"I1\n"s, R"(1)", ""},
      {"I02\n"s, R"(2)", ""},
      {"I10\n"s, R"(10)", ""},
      {"I1 \n"s, R"(1)", ""},
      {"I0 \n"s, R"(0)", ""},
      {"I00\x00\n"s, R"(0)", ""},
      {"I0x0\n"s, R"(0)", ""},
      {"I0x1\n"s, R"(1)", ""},
      {"I0o1\n"s, R"(1)", ""},
      {"I0b1\n"s, R"(1)", ""},
      {"I+\x00\n"s, "", "ValueError: could not convert string to int"},
      {"I-\x00\n"s, "", "ValueError: could not convert string to int"},
      {"I \x00\n"s, "", "ValueError: could not convert string to int"},
      {"I \n"s, "", "ValueError: could not convert string to int"},
      {"I  \n"s, "", "ValueError: could not convert string to int"},
      {"I0_1\n"s, "", "ValueError: could not convert string to int"},
      {"I0777777777777777777777777\n"s, "", "ValueError: could not convert string to int"},
  });
}

// The bool rows above are PickleArgType::kBool, the others kInt.
BOOST_AUTO_TEST_CASE(IntBoolTypes) {
  struct Row {
    std::string input;
    PickleArgType type;
    int64_t value;
  };
  const std::vector<Row> rows = {
      {"I+1\n"s, PickleArgType::kBool, 1}, {"I\x00" "a\n"s, PickleArgType::kBool, 0},
      {"I\x00\n"s, PickleArgType::kInt, 0}, {"I1 \n"s, PickleArgType::kInt, 1},
      {"I-1\n"s, PickleArgType::kInt, -1}, {"I001\n"s, PickleArgType::kInt, 1},
  };
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input)) {
      PickleDecoder decoder(AsBytes(row.input));
      Result<PickleOp> op = decoder.Next();
      BOOST_TEST_REQUIRE(op.has_value(), ErrorText(op));
      BOOST_TEST((op->arg.type == row.type));
      BOOST_TEST(op->arg.int_value == row.value);
    }
  }
}

// CPython's load_long drops one 'L' that ends the line, then parses it with
// PyLong_FromString(s, NULL, 0) only: Python's int(s, 0), which refuses a
// decimal with leading zeros ("010", "001", "+07"), never C octal. The text
// ends at the first NUL.
BOOST_AUTO_TEST_CASE(LongLiteralsAsTheCUnpickler) {
  CheckLiteralRows({
      {"L010\n"s, "", "ValueError: invalid literal for int() with base 0: '010\\n'"},
      {"L0777\n"s, "", "ValueError: invalid literal for int() with base 0: '0777\\n'"},
      {"L01\n"s, "", "ValueError: invalid literal for int() with base 0: '01\\n'"},
      {"L001\n"s, "", "ValueError: invalid literal for int() with base 0: '001\\n'"},
      {"L+07\n"s, "", "ValueError: invalid literal for int() with base 0: '+07\\n'"},
      {"L-010L\n"s, "", "ValueError: invalid literal for int() with base 0: '-010'"},
      {"L0_7\n"s, "", "ValueError: invalid literal for int() with base 0: '0_7\\n'"},
      {"L0777777777777777777777777\n"s, "", "ValueError: invalid literal for int() with base 0"},
      {"L\x00\n"s, "", "ValueError: invalid literal for int() with base 10: ''"},
      {"L\x00L\n"s, "", "ValueError: invalid literal for int() with base 10: ''"},
      {"L0b\n"s, "", "ValueError: invalid literal for int() with base 2: '0b\\n'"},
      {"L0o\n"s, "", "ValueError: invalid literal for int() with base 8: '0o\\n'"},
      {"L0x__1\n"s, "", "ValueError: invalid literal for int() with base 16: '0x__1\\n'"},
      {"L1__0\n"s, "", "ValueError: invalid literal for int() with base 10: '1__0\\n'"},
      {"L1 0\n"s, "", "ValueError: invalid literal for int() with base 10: '1 0\\n'"},
      {"L00L\n"s, R"(0)", ""},
      {"L0_0\n"s, R"(0)", ""},
      {"L-0\n"s, R"(0)", ""},
      {"L12 L\n"s, R"(12)", ""},
      {"L1\x00L\n"s, R"(1)", ""},
      {"L 5 \n"s, R"(5)", ""},
      {"L0x_1\n"s, R"(1)", ""},
      {"L+0b1_1L\n"s, R"(3)", ""},
      {"L9999999999999999999\n"s, R"(9999999999999999999)", ""},
  });
}

// CPython's load_get/load_put parse the memo key with
// PyLong_FromString(s, NULL, 10) and then PyLong_AsSsize_t: "010" is key 10
// and "08" key 8, while "0x10" and "0o7" are errors; a key beyond ssize_t is
// an OverflowError. load_put refuses a negative key ("negative PUT
// argument"); a negative GET key is never in the memo ("Memo value not found
// at index -1"), so both are refused here. A scanner following the memo
// through ckptguard tracks the same slots as the unpickler torch.load runs.
BOOST_AUTO_TEST_CASE(MemoKeyLiteralsAsTheCUnpickler) {
  CheckLiteralRows({
      {"g010\n"s, R"(10)", ""},
      {"g08\n"s, R"(8)", ""},
      {"g0x10\n"s, "", "ValueError: invalid literal for int() with base 10: '0x10\\n'"},
      {"p010\n"s, R"(10)", ""},
      {"p018\n"s, R"(18)", ""},
      {"p0x10\n"s, "", "ValueError: invalid literal for int() with base 10: '0x10\\n'"},
      {"p0o7\n"s, "", "ValueError: invalid literal for int() with base 10: '0o7\\n'"},
      {"g-0\n"s, R"(0)", ""},
      {"g+1\n"s, R"(1)", ""},
      {"g 1 \n"s, R"(1)", ""},
      {"g0_1\n"s, R"(1)", ""},
      {"g1\r\n"s, R"(1)", ""},
      {"g\t1\x0b\n"s, R"(1)", ""},
      {"g1\x00x\n"s, R"(1)", ""},
      {"g9223372036854775807\n"s, R"(9223372036854775807)", ""},
      {"p-0\n"s, R"(0)", ""},
      {"p+1\n"s, R"(1)", ""},
      {"g1__0\n"s, "", "ValueError: invalid literal for int() with base 10: '1__0\\n'"},
      {"g_1\n"s, "", "ValueError: invalid literal for int() with base 10: '_1\\n'"},
      {"g1_\n"s, "", "ValueError: invalid literal for int() with base 10: '1_\\n'"},
      {"g\x00\n"s, "", "ValueError: invalid literal for int() with base 10: ''"},
      {"g1e3\n"s, "", "ValueError: invalid literal for int() with base 10: '1e3\\n'"},
      {"g\xd9\xa1\n"s, "", "ValueError: invalid literal for int() with base 10: '\\u0661\\n'"},
      {"g-1\n"s, "", "UnpicklingError: Memo value not found at index -1"},
      {"p-1\n"s, "", "ValueError: negative PUT argument"},
      {"g9223372036854775808\n"s, "", "OverflowError: Python int too large to convert to C ssize_t"},
      {"p9223372036854775808\n"s, "", "OverflowError: Python int too large to convert to C ssize_t"},
      {"g-9223372036854775809\n"s, "", "OverflowError: Python int too large to convert to C ssize_t"},
  });
}

// The C unpickler refuses GLOBAL and INST with an empty module or name line
// (load_global/load_inst: `if (len < 2) return bad_readline()`, i.e.
// UnpicklingError "pickle data was truncated"), decodes GLOBAL's lines as
// strict UTF-8 (PyUnicode_DecodeUTF8) and INST's as ASCII
// (PyUnicode_DecodeASCII). The module line is checked before the name line
// is read. Errors are kMalformed at the offending line or byte.
BOOST_AUTO_TEST_CASE(GlobalAndInstLinesAsTheCUnpickler) {
  struct Row {
    std::string input;
    uint64_t offset;
    const char* cpython;
  };
  const std::vector<Row> rows = {
      {"c\nx\n"s, 1, "UnpicklingError: pickle data was truncated"},
      {"cm\n\n"s, 3, "UnpicklingError: pickle data was truncated"},
      {"c\xc3\xa9\n\n"s, 4, "UnpicklingError: pickle data was truncated"},
      {"c\n"s, 1, "UnpicklingError: pickle data was truncated"},
      {"c\xff\n"s, 1, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0"},
      {"i\nx\n"s, 1, "UnpicklingError: pickle data was truncated"},
      {"im\n\n"s, 3, "UnpicklingError: pickle data was truncated"},
      {"i\xc3\xa9\nx\n"s, 1, "UnicodeDecodeError: 'ascii' codec can't decode byte 0xc3 in position 0"},
      {"im\n\xc3\xa9\n"s, 3, "UnicodeDecodeError: 'ascii' codec can't decode byte 0xc3 in position 0"},
      {"i\x80\nx\n"s, 1, "UnicodeDecodeError: 'ascii' codec can't decode byte 0x80 in position 0"},
      {"ibuiltins\nse\xc3\xa9\n"s, 12, "UnicodeDecodeError: 'ascii' codec can't decode byte 0xc3 in position 2"},
      {"i\xc3\xa9\n"s, 1, "UnicodeDecodeError: 'ascii' codec can't decode byte 0xc3 in position 0"},
  };
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input) << " (CPython: " << row.cpython << ")") {
      PickleDecoder decoder(AsBytes(row.input));
      Result<PickleOp> op = decoder.Next();
      BOOST_TEST(!op.has_value(), "accepted as " << (op ? ArgRepr(*op) : ""));
      if (!op) {
        BOOST_TEST(Code(op.error().code) == Code(ErrorCode::kMalformed), op.error().ToString());
        BOOST_TEST(op.error().offset == row.offset);
      }
    }
  }
  // Accepted: UTF-8 in GLOBAL (CPython then looks the name up), ASCII in INST.
  const std::vector<OneOpRow> ok_rows = {
      {"c\xc3\xa9\nx\n"s, "GLOBAL", "'\xc3\xa9 x'", 6},
      {"cm\n\xc3\xa9\n"s, "GLOBAL", "'m \xc3\xa9'", 6},
      {"ibuiltins\nset\n"s, "INST", R"('builtins set')", 14},
  };
  for (const OneOpRow& row : ok_rows) CheckOneOpRow(row);
}

// ---------------------------------------------------------------------------
// Limits: each PickleLimits field hit by a small input is kLimitExceeded
// naming the limit; one more unit of the limit lets the same input through.

struct LimitRow {
  const char* field;
  std::string input;
  PickleLimits limits;      // the limit that is hit
  PickleLimits limits_ok;   // the same limit raised enough
  uint64_t offset;          // where the error is reported
  const char* detail_part;  // must appear in the error's detail
  size_t num_ops_before;    // ops decoded successfully before the error
};

PickleLimits With(uint64_t PickleLimits::*field, uint64_t value) {
  PickleLimits limits;
  limits.*field = value;
  return limits;
}

BOOST_AUTO_TEST_CASE(EachLimitIsEnforced) {
  using L = PickleLimits;
  const std::vector<LimitRow> rows = {
      {"max_operand_len", "C\x05hello."s, With(&L::max_operand_len, 4), With(&L::max_operand_len, 5), 0,
       "max_operand_len (4)", 0},
      {"max_operand_len", "N\x8d\x03\x00\x00\x00\x00\x00\x00\x00" "abc."s, With(&L::max_operand_len, 2),
       With(&L::max_operand_len, 3), 1, "max_operand_len (2)", 1},
      {"max_operand_len", "T\x03\x00\x00\x00" "abc."s, With(&L::max_operand_len, 2), With(&L::max_operand_len, 3),
       0, "max_operand_len (2)", 0},
      {"max_operand_len", "\x96\x03\x00\x00\x00\x00\x00\x00\x00" "abc."s, With(&L::max_operand_len, 0),
       With(&L::max_operand_len, 3), 0, "max_operand_len (0)", 0},
      {"max_line_len", "I12345\n."s, With(&L::max_line_len, 4), With(&L::max_line_len, 5), 1, "max_line_len (4)", 0},
      {"max_line_len", "cmodule\nname\n."s, With(&L::max_line_len, 5), With(&L::max_line_len, 6), 1,
       "max_line_len (5)", 0},
      {"max_line_len", "cmod\nlongname\n."s, With(&L::max_line_len, 5), With(&L::max_line_len, 8), 5,
       "max_line_len (5)", 0},
      {"max_long_len", "\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01."s, With(&L::max_long_len, 8),
       With(&L::max_long_len, 9), 0, "max_long_len (8)", 0},
      {"max_long_len", "\x8b\x02\x00\x00\x00\x01\x02."s, With(&L::max_long_len, 1), With(&L::max_long_len, 2), 0,
       "max_long_len (1)", 0},
      {"max_frame_len", "\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N."s, With(&L::max_frame_len, 1),
       With(&L::max_frame_len, 2), 2, "max_frame_len (1)", 1},
      {"max_ops", "N0N0N."s, With(&L::max_ops, 3), With(&L::max_ops, 6), 3, "max_ops (3)", 3},
      {"max_ops", "N.N."s, With(&L::max_ops, 2), With(&L::max_ops, 4), 2, "max_ops (2)", 2},
      {"max_pickles", "N.N.N."s, With(&L::max_pickles, 2), With(&L::max_pickles, 3), 4, "max_pickles (2)", 4},
  };
  for (const LimitRow& row : rows) {
    BOOST_TEST_CONTEXT(row.field << " on " << Hex(row.input)) {
      DecodedStream hit = DecodeStream(AsBytes(row.input), row.limits);
      BOOST_TEST_REQUIRE(hit.error.has_value());
      BOOST_TEST(Code(hit.error->code) == Code(ErrorCode::kLimitExceeded), hit.error->ToString());
      BOOST_TEST(hit.error->offset == row.offset);
      BOOST_TEST(hit.error->detail.find(row.detail_part) != std::string::npos, hit.error->detail);
      BOOST_TEST(hit.ops.size() == row.num_ops_before);
      BOOST_TEST(hit.end_offset == (hit.ops.empty() ? 0 : hit.ops.back().offset + hit.ops.back().length));

      DecodedStream ok = DecodeStream(AsBytes(row.input), row.limits_ok);
      BOOST_TEST(!ok.error.has_value(), (ok.error ? ok.error->ToString() : ""));
      BOOST_TEST(ok.end_offset == row.input.size());
    }
  }
}

// Length operands far beyond the input are refused by the limit before any
// allocation or read (default limits: 1 GiB operands, 64 KiB longs).
BOOST_AUTO_TEST_CASE(HugeLengthOperandsHitTheLimitFirst) {
  CheckBadRows({
      {"\x8d\x00\x00\x00\x00\x00\x00\x00\x40"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"\x8e\xff\xff\xff\xff\xff\xff\xff\xff"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"\x96\xff\xff\xff\xff\xff\xff\xff\xff"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"B\xff\xff\xff\xff"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"X\xff\xff\xff\xff"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"T\xff\xff\xff\x7f"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"\x8b\xff\xff\xff\x7f"s, ErrorCode::kLimitExceeded, 0, "pickle data was truncated"},
      {"\x95\xff\xff\xff\xff\xff\xff\xff\xff"s, ErrorCode::kLimitExceeded, 0,
       "OverflowError: FRAME length exceeds system's maximum"},
      // Within the limits but beyond the input: plain truncation.
      {"X\x00\x00\x01\x00" "abc"s, ErrorCode::kTruncated, 5, "pickle data was truncated"},
      {"\x95\x00\x00\x01\x00\x00\x00\x00\x00N."s, ErrorCode::kTruncated, 0, "pickle data was truncated"},
  });
}

BOOST_AUTO_TEST_CASE(ClampedCapsHugeValues) {
  PickleLimits huge;
  huge.max_operand_len = kU64Max;
  huge.max_line_len = kU64Max;
  huge.max_long_len = kU64Max;
  huge.max_frame_len = kU64Max;
  huge.max_ops = kU64Max;
  huge.max_pickles = kU64Max;
  const PickleLimits c = huge.Clamped();
  BOOST_TEST(c.max_operand_len == uint64_t{1} << 40);
  BOOST_TEST(c.max_line_len == uint64_t{1} << 30);
  BOOST_TEST(c.max_long_len == uint64_t{1} << 24);
  BOOST_TEST(c.max_frame_len == uint64_t{1} << 40);
  BOOST_TEST(c.max_ops == uint64_t{1} << 40);
  BOOST_TEST(c.max_pickles == uint64_t{1} << 20);

  // Values under the ceilings, and the defaults, are kept.
  PickleLimits small;
  small.max_operand_len = 1;
  small.max_line_len = 2;
  small.max_long_len = 3;
  small.max_frame_len = 4;
  small.max_ops = 5;
  small.max_pickles = 6;
  const PickleLimits s = small.Clamped();
  BOOST_TEST(s.max_operand_len == 1u);
  BOOST_TEST(s.max_line_len == 2u);
  BOOST_TEST(s.max_long_len == 3u);
  BOOST_TEST(s.max_frame_len == 4u);
  BOOST_TEST(s.max_ops == 5u);
  BOOST_TEST(s.max_pickles == 6u);
  const PickleLimits d = PickleLimits{}.Clamped();
  BOOST_TEST(d.max_operand_len == uint64_t{1} << 30);
  BOOST_TEST(d.max_line_len == uint64_t{1} << 20);
  BOOST_TEST(d.max_long_len == uint64_t{1} << 16);
  BOOST_TEST(d.max_frame_len == uint64_t{1} << 30);
  BOOST_TEST(d.max_ops == uint64_t{1} << 28);
  BOOST_TEST(d.max_pickles == 1024u);
}

// The decoder clamps the limits it is given: a LONG4 of 2^24 + 1 bytes is
// refused even when max_long_len asks for "unlimited".
BOOST_AUTO_TEST_CASE(DecoderUsesClampedLimits) {
  PickleLimits limits;
  limits.max_long_len = kU64Max;
  limits.max_operand_len = kU64Max;
  {
    const std::string in = "\x8b\x01\x00\x00\x01"s;
    DecodedStream stream = DecodeStream(AsBytes(in), limits);
    BOOST_TEST_REQUIRE(stream.error.has_value());
    BOOST_TEST(Code(stream.error->code) == Code(ErrorCode::kLimitExceeded));
    BOOST_TEST(stream.error->detail.find("max_long_len (16777216)") != std::string::npos, stream.error->detail);
  }
  {
    // 2^40 + 1 bytes of BINBYTES8.
    const std::string in = "\x8e\x01\x00\x00\x00\x00\x01\x00\x00"s;
    DecodedStream stream = DecodeStream(AsBytes(in), limits);
    BOOST_TEST_REQUIRE(stream.error.has_value());
    BOOST_TEST(Code(stream.error->code) == Code(ErrorCode::kLimitExceeded));
    BOOST_TEST(stream.error->detail.find("max_operand_len (1099511627776)") != std::string::npos,
               stream.error->detail);
  }
}

// ---------------------------------------------------------------------------
// Streams of pickles.

BOOST_AUTO_TEST_CASE(SeveralPicklesInOneStream) {
  // pickle.dumps(None, 2) + pickle.dumps(1, 2) + b'N.'
  const std::string in = "\x80\x02N.\x80\x02K\x01.N."s;
  DecodedStream stream = DecodeStream(AsBytes(in), {}, 100);
  BOOST_TEST(!stream.error.has_value());
  BOOST_TEST(stream.num_pickles == 3u);
  BOOST_TEST(stream.end_offset == 100 + in.size());
  std::vector<std::string> names;
  std::vector<uint32_t> index;
  std::vector<uint64_t> offsets;
  for (const PickleOp& op : stream.ops) {
    names.push_back(Name(op));
    index.push_back(op.pickle_index);
    offsets.push_back(op.offset);
  }
  BOOST_TEST(names == (std::vector<std::string>{"PROTO", "NONE", "STOP", "PROTO", "BININT1", "STOP", "NONE", "STOP"}),
             boost::test_tools::per_element());
  BOOST_TEST(index == (std::vector<uint32_t>{0, 0, 0, 1, 1, 1, 2, 2}), boost::test_tools::per_element());
  BOOST_TEST(offsets == (std::vector<uint64_t>{100, 102, 103, 104, 106, 108, 109, 110}),
             boost::test_tools::per_element());
  const auto pickles = SplitPickles(stream);
  BOOST_TEST_REQUIRE(pickles.size() == 3u);
  BOOST_TEST(pickles[0].size() == 3u);
  BOOST_TEST(pickles[1].size() == 3u);
  BOOST_TEST(pickles[2].size() == 2u);
}

// Frames split by an opcode (PickleDecoder::FrameSplit): the C unpickler
// that read a frame whole from a file drops the frame's rest and reads the
// operand after it (_Unpickler_ReadImpl's refill replaces the buffer), and
// goes on after the outer frame when a FRAME begins inside one; pickle.loads
// reads straight on. No pickler writes either (both frame at op boundaries).
BOOST_AUTO_TEST_CASE(FrameSplitByAnOpcode) {
  struct Case {
    const char* name;
    std::string in;
    std::optional<uint64_t> split;  // the offset of the first splitting opcode
  };
  const std::vector<Case> cases = {
      // PROTO 4, FRAME 8: BINUNICODE 'ab' (7 bytes), STOP: ends at the frame's end.
      {"whole", "\x80\x04\x95\x08\x00\x00\x00\x00\x00\x00\x00X\x02\x00\x00\x00" "ab."s, std::nullopt},
      // FRAME 6: the BINUNICODE's text runs one byte past the frame.
      {"operand", "\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00X\x02\x00\x00\x00" "ab."s, 11},
      // FRAME 3: the length itself runs past the frame.
      {"length", "\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00X\x02\x00\x00\x00" "ab."s, 11},
      // FRAME 10, inside it FRAME 1 (N): a frame begun inside another.
      {"nested", "\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00\x00\x00\x00\x00\x00N."s, 11},
      // Two frames one after the other, each whole: no split.
      {"consecutive",
       "\x80\x04\x95\x01\x00\x00\x00\x00\x00\x00\x00N\x95\x01\x00\x00\x00\x00\x00\x00\x00" "0."s, std::nullopt},
      // A STOP inside a frame, then a pickle whose op crosses that frame's
      // end: the next load's unpickler knows no frame (no split).
      {"after_stop",
       "\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00N.K\x05."s, std::nullopt},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      // Strict (the loader's): an error at the splitting opcode.
      DecodedStream strict = DecodeStream(AsBytes(c.in));
      BOOST_TEST(strict.error.has_value() == c.split.has_value());
      if (c.split && strict.error) {
        BOOST_TEST(strict.error->offset == *c.split);
        BOOST_TEST(strict.error->detail.find("frame") != std::string::npos);
      }
      // Lenient (the scanner's): read straight on, the split reported.
      PickleDecoder lenient(AsBytes(c.in));
      lenient.SetLenientOperands(true);
      while (!lenient.AtEnd()) BOOST_TEST_REQUIRE(lenient.Next().has_value());
      BOOST_TEST((lenient.FrameSplit() == c.split));
    }
  }
  // FirstPickleEnd follows the outer frame of nested ones: the C unpickler
  // that read it whole is at its end.
  const std::string nested = "\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x95\x02\x00\x00\x00\x00\x00\x00\x00N.NN"s;
  std::optional<uint64_t> frame_end;
  const Result<uint64_t> end = FirstPickleEnd(AsBytes(nested), {}, 0, nullptr, {}, false, &frame_end);
  BOOST_TEST_REQUIRE(end.has_value());
  BOOST_TEST(*end == 22u);
  BOOST_TEST((frame_end == std::optional<uint64_t>(23)));
}

BOOST_AUTO_TEST_CASE(DecoderStateAcrossPickles) {
  const std::string in = "N.K\x07."s;
  PickleDecoder decoder(AsBytes(in));
  BOOST_TEST(decoder.BetweenPickles());
  BOOST_TEST(decoder.NumPicklesFinished() == 0u);
  std::vector<std::pair<bool, uint32_t>> state;  // after each op
  while (!(decoder.BetweenPickles() && decoder.AtEnd())) {
    Result<PickleOp> op = decoder.Next();
    BOOST_TEST_REQUIRE(op.has_value(), ErrorText(op));
    state.emplace_back(decoder.BetweenPickles(), decoder.NumPicklesFinished());
  }
  BOOST_TEST_REQUIRE(state.size() == 4u);
  BOOST_TEST((state[0] == std::pair<bool, uint32_t>{false, 0}));
  BOOST_TEST((state[1] == std::pair<bool, uint32_t>{true, 1}));
  BOOST_TEST((state[2] == std::pair<bool, uint32_t>{false, 1}));
  BOOST_TEST((state[3] == std::pair<bool, uint32_t>{true, 2}));
}

struct StreamRow {
  std::string input;
  uint32_t max_pickles;            // DecodeStream's argument
  std::vector<std::string> names;  // ops kept
  uint32_t num_pickles;
  uint64_t end_offset;
  std::optional<ErrorCode> error;
  uint64_t error_offset;
};

BOOST_AUTO_TEST_CASE(DecodeStreamTable) {
  const std::vector<StreamRow> rows = {
      // Stops early after max_pickles complete pickles, without an error.
      {"N.N.N."s, 2, {"NONE", "STOP", "NONE", "STOP"}, 2, 4, std::nullopt, 0},
      {"N.N.N."s, 1, {"NONE", "STOP"}, 1, 2, std::nullopt, 0},
      {"N.N.N."s, 0, {"NONE", "STOP", "NONE", "STOP", "NONE", "STOP"}, 3, 6, std::nullopt, 0},
      {"N.N.N."s, 9, {"NONE", "STOP", "NONE", "STOP", "NONE", "STOP"}, 3, 6, std::nullopt, 0},
      // The legacy torch case: raw bytes follow the last pickle.
      {"N.\xff\xff\xff"s, 1, {"NONE", "STOP"}, 1, 2, std::nullopt, 0},
      {"N.\xff\xff\xff"s, 0, {"NONE", "STOP"}, 1, 2, ErrorCode::kUnsupportedOpcode, 2},
      // Ops before an error are kept; end_offset is the failing op's offset.
      {"N.N\xff"s, 0, {"NONE", "STOP", "NONE"}, 1, 3, ErrorCode::kUnsupportedOpcode, 3},
      {"N.]X\x05\x00\x00\x00" "ab"s, 0, {"NONE", "STOP", "EMPTY_LIST"}, 1, 3, ErrorCode::kTruncated, 8},
      {"\x80\x02]\x80\x07."s, 0, {"PROTO", "EMPTY_LIST"}, 0, 3, ErrorCode::kMalformed, 4},
      {"N.N"s, 0, {"NONE", "STOP", "NONE"}, 1, 3, ErrorCode::kTruncated, 3},
      {"\x80\x02\x95\x09\x00\x00\x00\x00\x00\x00\x00N."s, 0, {"PROTO"}, 0, 2, ErrorCode::kTruncated, 2},
  };
  for (const StreamRow& row : rows) {
    BOOST_TEST_CONTEXT(Hex(row.input) << " max_pickles " << row.max_pickles) {
      for (uint64_t base : {uint64_t{0}, uint64_t{5000}}) {
        DecodedStream stream = DecodeStream(AsBytes(row.input), {}, base, row.max_pickles);
        std::vector<std::string> names;
        for (const PickleOp& op : stream.ops) names.push_back(Name(op));
        BOOST_TEST(names == row.names, boost::test_tools::per_element());
        BOOST_TEST(stream.num_pickles == row.num_pickles);
        BOOST_TEST(stream.end_offset == base + row.end_offset);
        BOOST_TEST(stream.error.has_value() == row.error.has_value());
        if (stream.error && row.error) {
          BOOST_TEST(Code(stream.error->code) == Code(*row.error), stream.error->ToString());
          BOOST_TEST(stream.error->offset == base + row.error_offset);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Disassembly, compared to pickletools.dis output for the same bytes.

std::string Disassemble(const std::string& input) {
  DecodedStream stream = DecodeStream(AsBytes(input));
  BOOST_TEST_REQUIRE(!stream.error.has_value());
  const auto pickles = SplitPickles(stream);
  BOOST_TEST_REQUIRE(pickles.size() == 1u);
  return DisassemblePickle(pickles[0], true);
}

BOOST_AUTO_TEST_CASE(DisassembleLikePickletools) {
  struct Row {
    const char* what;
    std::string input;
    std::string dis;
  };
  const std::vector<Row> rows = {
      {"protocol 0 list: MARK indentation, PUT",
       "(lp0\nI1\naVa\np1\na(I2\nNtp2\na."s,
       "    0: (    MARK\n"
       "    1: l        LIST       (MARK at 0)\n"
       "    2: p    PUT        0\n"
       "    5: I    INT        1\n"
       "    8: a    APPEND\n"
       "    9: V    UNICODE    'a'\n"
       "   12: p    PUT        1\n"
       "   15: a    APPEND\n"
       "   16: (    MARK\n"
       "   17: I        INT        2\n"
       "   20: N        NONE\n"
       "   21: t        TUPLE      (MARK at 16)\n"
       "   22: p    PUT        2\n"
       "   25: a    APPEND\n"
       "   26: .    STOP\n"
       "highest protocol among opcodes = 0\n"},
      {"protocol 2 dict: nested MARKs, BINPUT",
       "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01K\x02" "eX\x01\x00\x00\x00" "bq\x03\x88u."s,
       "    0: \\x80 PROTO      2\n"
       "    2: }    EMPTY_DICT\n"
       "    3: q    BINPUT     0\n"
       "    5: (    MARK\n"
       "    6: X        BINUNICODE 'a'\n"
       "   12: q        BINPUT     1\n"
       "   14: ]        EMPTY_LIST\n"
       "   15: q        BINPUT     2\n"
       "   17: (        MARK\n"
       "   18: K            BININT1    1\n"
       "   20: K            BININT1    2\n"
       "   22: e            APPENDS    (MARK at 17)\n"
       "   23: X        BINUNICODE 'b'\n"
       "   29: q        BINPUT     3\n"
       "   31: \\x88     NEWTRUE\n"
       "   32: u        SETITEMS   (MARK at 5)\n"
       "   33: .    STOP\n"
       "highest protocol among opcodes = 2\n"},
      {"protocol 4: FRAME, MEMOIZE (as N)",
       "\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01x\x94]\x94(K\x01K\x02K\x03" "e\x8c\x01y\x94\x8c\x02\xc3\xa9\x94u."s,
       "    0: \\x80 PROTO      4\n"
       "    2: \\x95 FRAME      28\n"
       "   11: }    EMPTY_DICT\n"
       "   12: \\x94 MEMOIZE    (as 0)\n"
       "   13: (    MARK\n"
       "   14: \\x8c     SHORT_BINUNICODE 'x'\n"
       "   17: \\x94     MEMOIZE    (as 1)\n"
       "   18: ]        EMPTY_LIST\n"
       "   19: \\x94     MEMOIZE    (as 2)\n"
       "   20: (        MARK\n"
       "   21: K            BININT1    1\n"
       "   23: K            BININT1    2\n"
       "   25: K            BININT1    3\n"
       "   27: e            APPENDS    (MARK at 20)\n"
       "   28: \\x8c     SHORT_BINUNICODE 'y'\n"
       "   31: \\x94     MEMOIZE    (as 3)\n"
       "   32: \\x8c     SHORT_BINUNICODE 'é'\n"
       "   36: \\x94     MEMOIZE    (as 4)\n"
       "   37: u        SETITEMS   (MARK at 13)\n"
       "   38: .    STOP\n"
       "highest protocol among opcodes = 4\n"},
      {"protocol 0 POP of a MARK",
       "(0N."s,
       "    0: (    MARK\n"
       "    1: 0        POP        (MARK at 0)\n"
       "    2: N    NONE\n"
       "    3: .    STOP\n"
       "highest protocol among opcodes = 0\n"},
      {"BINGET of a never-stored key: \"!!\" line",
       "\x80\x02]q\x00h\x05\x86."s,
       "    0: \\x80 PROTO      2\n"
       "    2: ]    EMPTY_LIST\n"
       "    3: q    BINPUT     0\n"
       "    5: h    BINGET     5\n"
       "!! memo key 5 has never been stored into\n"
       "    7: \\x86 TUPLE2\n"
       "    8: .    STOP\n"
       "highest protocol among opcodes = 2\n"},
  };
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(row.what) { BOOST_TEST(Disassemble(row.input) == row.dis); }
  }
}

}  // namespace
}  // namespace ckptguard

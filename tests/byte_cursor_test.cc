// Tests of ByteCursor, the one bounds-checked reader of untrusted bytes:
// every read on exact-size, short and empty input, absolute offsets with a
// base offset, sub-cursors, ReadLine's limit, and lengths that would overflow
// a pointer or size computation.
#define BOOST_TEST_MODULE byte_cursor_test
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"

namespace ckptguard {
namespace {

using namespace std::string_literals;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

std::string Code(ErrorCode code) { return std::string(ErrorCodeName(code)); }

// Text renders a value read by one of the cursor's methods, so that one table
// can hold reads of every type.
template <typename T>
  requires std::is_arithmetic_v<T>
std::string Text(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return buf;
  } else {
    return std::to_string(v);
  }
}
std::string Text(Bytes v) { return std::string(AsStringView(v)); }
std::string Text(const ByteCursor& v) { return Text(v.Rest()); }

template <typename T>
Result<std::string> AsText(Result<T> r) {
  if (!r) return std::unexpected(r.error());
  return Text(*r);
}
Result<std::string> AsText(Status s) {
  if (!s) return std::unexpected(s.error());
  return std::string();
}

// A ReadCase is one read method applied to exactly the bytes it consumes.
struct ReadCase {
  const char* name;
  std::string bytes;  // exactly what the read consumes on success
  std::function<Result<std::string>(ByteCursor&)> read;
  std::string expected;  // the value read, rendered with Text()
};

std::vector<ReadCase> ReadCases() {
  using C = ByteCursor&;
  return {
      {"ReadU8", "\xab"s, [](C c) { return AsText(c.ReadU8()); }, "171"},
      {"ReadU16LE", "\x34\x12"s, [](C c) { return AsText(c.ReadU16LE()); }, "4660"},
      {"ReadU16LE max", "\xff\xff"s, [](C c) { return AsText(c.ReadU16LE()); }, "65535"},
      {"ReadU32LE", "\x78\x56\x34\x12"s, [](C c) { return AsText(c.ReadU32LE()); }, "305419896"},
      {"ReadU32LE max", "\xff\xff\xff\xff"s, [](C c) { return AsText(c.ReadU32LE()); }, "4294967295"},
      {"ReadI32LE negative", "\xfe\xff\xff\xff"s, [](C c) { return AsText(c.ReadI32LE()); }, "-2"},
      {"ReadI32LE min", "\x00\x00\x00\x80"s, [](C c) { return AsText(c.ReadI32LE()); }, "-2147483648"},
      {"ReadI32LE max", "\xff\xff\xff\x7f"s, [](C c) { return AsText(c.ReadI32LE()); }, "2147483647"},
      {"ReadU64LE", "\x08\x07\x06\x05\x04\x03\x02\x01"s, [](C c) { return AsText(c.ReadU64LE()); },
       "72623859790382856"},
      {"ReadU64LE max", "\xff\xff\xff\xff\xff\xff\xff\xff"s, [](C c) { return AsText(c.ReadU64LE()); },
       "18446744073709551615"},
      {"ReadF64BE one", "\x3f\xf0\x00\x00\x00\x00\x00\x00"s, [](C c) { return AsText(c.ReadF64BE()); }, "1"},
      {"ReadF64BE -pi", "\xc0\x09\x21\xfb\x54\x44\x2d\x18"s, [](C c) { return AsText(c.ReadF64BE()); },
       "-3.1415926535897931"},
      {"ReadF64BE -inf", "\xff\xf0\x00\x00\x00\x00\x00\x00"s, [](C c) { return AsText(c.ReadF64BE()); }, "-inf"},
      {"ReadBytes(3)", "a\x00z"s, [](C c) { return AsText(c.ReadBytes(3)); }, "a\x00z"s},
      {"ReadBytes(1)", "q"s, [](C c) { return AsText(c.ReadBytes(1)); }, "q"},
      {"ReadCursor(4)", "wxyz"s, [](C c) { return AsText(c.ReadCursor(4)); }, "wxyz"},
      {"ReadLine(8)", "ab\n"s, [](C c) { return AsText(c.ReadLine(8)); }, "ab"},
      {"ReadLine(2) at limit", "ab\n"s, [](C c) { return AsText(c.ReadLine(2)); }, "ab"},
      {"ReadLine(0) empty line", "\n"s, [](C c) { return AsText(c.ReadLine(0)); }, ""},
      {"Skip(2)", "xy"s, [](C c) { return AsText(c.Skip(2)); }, ""},
  };
}

// kLead is consumed before each read so that the read does not start at 0.
const std::string kLead = "LEAD";
constexpr uint64_t kBase = 1000;

BOOST_AUTO_TEST_CASE(EveryReadOnExactInput) {
  for (const ReadCase& rc : ReadCases()) {
    BOOST_TEST_CONTEXT(rc.name) {
      const std::string data = kLead + rc.bytes;
      ByteCursor c(AsBytes(data), kBase);
      BOOST_TEST_REQUIRE(c.ReadBytes(kLead.size()).has_value());
      Result<std::string> got = rc.read(c);
      BOOST_TEST_REQUIRE(got.has_value(), (got ? "" : got.error().ToString()));
      BOOST_TEST(*got == rc.expected);
      BOOST_TEST(c.Offset() == kBase + data.size());
      BOOST_TEST(c.Position() == data.size());
      BOOST_TEST(c.Remaining() == 0u);
      BOOST_TEST(c.Empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(EveryReadLeavesTrailingBytes) {
  for (const ReadCase& rc : ReadCases()) {
    BOOST_TEST_CONTEXT(rc.name) {
      const std::string data = rc.bytes + "\xee\n"s;
      ByteCursor c(AsBytes(data));
      Result<std::string> got = rc.read(c);
      BOOST_TEST_REQUIRE(got.has_value());
      BOOST_TEST(*got == rc.expected);
      BOOST_TEST(c.Offset() == rc.bytes.size());
      BOOST_TEST(c.Remaining() == 2u);
      BOOST_TEST(Text(c.Rest()) == "\xee\n"s);
    }
  }
}

// Every proper prefix of the bytes a read needs, including none at all:
// kTruncated at the absolute offset of the read, cursor unchanged.
BOOST_AUTO_TEST_CASE(EveryReadOnShortAndEmptyInput) {
  for (const ReadCase& rc : ReadCases()) {
    for (size_t k = 0; k < rc.bytes.size(); ++k) {
      BOOST_TEST_CONTEXT(rc.name << " with " << k << " of " << rc.bytes.size() << " bytes") {
        const std::string data = kLead + rc.bytes.substr(0, k);
        ByteCursor c(AsBytes(data), kBase);
        BOOST_TEST_REQUIRE(c.ReadBytes(kLead.size()).has_value());
        Result<std::string> got = rc.read(c);
        BOOST_TEST_REQUIRE(!got.has_value());
        BOOST_TEST(Code(got.error().code) == Code(ErrorCode::kTruncated));
        BOOST_TEST(got.error().offset == kBase + kLead.size());
        // Unchanged: same position, and the bytes are still there to read.
        BOOST_TEST(c.Offset() == kBase + kLead.size());
        BOOST_TEST(c.Position() == kLead.size());
        BOOST_TEST(c.Remaining() == k);
        Result<Bytes> rest = c.ReadBytes(k);
        BOOST_TEST_REQUIRE(rest.has_value());
        BOOST_TEST(Text(*rest) == rc.bytes.substr(0, k));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(EveryReadOnEmptySpan) {
  for (const ReadCase& rc : ReadCases()) {
    BOOST_TEST_CONTEXT(rc.name) {
      ByteCursor c(Bytes{}, 77);
      Result<std::string> got = rc.read(c);
      BOOST_TEST_REQUIRE(!got.has_value());
      BOOST_TEST(Code(got.error().code) == Code(ErrorCode::kTruncated));
      BOOST_TEST(got.error().offset == 77u);
      BOOST_TEST(c.Offset() == 77u);
      BOOST_TEST(c.Empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(ZeroLengthReadsSucceedOnEmptyInput) {
  ByteCursor c(Bytes{}, 5);
  BOOST_TEST(c.Empty());
  BOOST_TEST(c.Remaining() == 0u);
  Result<Bytes> bytes = c.ReadBytes(0);
  BOOST_TEST_REQUIRE(bytes.has_value());
  BOOST_TEST(bytes->empty());
  BOOST_TEST(c.Skip(0).has_value());
  Result<ByteCursor> sub = c.ReadCursor(0);
  BOOST_TEST_REQUIRE(sub.has_value());
  BOOST_TEST(sub->Empty());
  BOOST_TEST(sub->Offset() == 5u);
  BOOST_TEST(c.Offset() == 5u);
}

BOOST_AUTO_TEST_CASE(PeekDoesNotConsume) {
  const std::string data = "\x01\x02"s;
  ByteCursor c(AsBytes(data), 10);
  BOOST_TEST(*c.PeekU8() == 1);
  BOOST_TEST(*c.PeekU8() == 1);
  BOOST_TEST(c.Offset() == 10u);
  BOOST_TEST(*c.ReadU8() == 1);
  BOOST_TEST(*c.PeekU8() == 2);
  BOOST_TEST(*c.ReadU8() == 2);
  Result<uint8_t> none = c.PeekU8();
  BOOST_TEST_REQUIRE(!none.has_value());
  BOOST_TEST(Code(none.error().code) == Code(ErrorCode::kTruncated));
  BOOST_TEST(none.error().offset == 12u);
}

BOOST_AUTO_TEST_CASE(OffsetsIncludeBaseOffset) {
  const std::string data = "abcdef";
  ByteCursor c(AsBytes(data), 4096);
  BOOST_TEST(c.Offset() == 4096u);
  BOOST_TEST(c.Position() == 0u);
  BOOST_TEST(c.Skip(2).has_value());
  BOOST_TEST(c.Offset() == 4098u);
  BOOST_TEST(c.Position() == 2u);
  BOOST_TEST(c.Remaining() == 4u);
  BOOST_TEST(Text(c.Rest()) == "cdef");
  Result<uint32_t> cdef = c.ReadU32LE();
  BOOST_TEST(cdef.has_value());
  Result<uint8_t> after = c.ReadU8();
  BOOST_TEST_REQUIRE(!after.has_value());
  BOOST_TEST(after.error().offset == 4102u);
}

// A sub-cursor's offsets continue the parent's absolute offsets, and its
// errors are reported there too; the parent moves past the whole sub-range.
BOOST_AUTO_TEST_CASE(ReadCursorOffsetsContinueTheParents) {
  const std::string data = "ab" "\x01\x02\x03\x04" "\x05\x06" "z"s;
  ByteCursor parent(AsBytes(data), 100);
  BOOST_TEST_REQUIRE(parent.Skip(2).has_value());
  Result<ByteCursor> child = parent.ReadCursor(6);
  BOOST_TEST_REQUIRE(child.has_value());
  BOOST_TEST(parent.Offset() == 108u);
  BOOST_TEST(parent.Remaining() == 1u);

  BOOST_TEST(child->Offset() == 102u);
  BOOST_TEST(child->Position() == 0u);
  BOOST_TEST(child->Remaining() == 6u);
  BOOST_TEST(*child->ReadU16LE() == 0x0201);
  BOOST_TEST(child->Offset() == 104u);

  Result<ByteCursor> grandchild = child->ReadCursor(2);
  BOOST_TEST_REQUIRE(grandchild.has_value());
  BOOST_TEST(grandchild->Offset() == 104u);
  BOOST_TEST(child->Offset() == 106u);

  // The child ends at its range even though the parent has more bytes.
  Result<uint32_t> past_end = child->ReadU32LE();
  BOOST_TEST_REQUIRE(!past_end.has_value());
  BOOST_TEST(Code(past_end.error().code) == Code(ErrorCode::kTruncated));
  BOOST_TEST(past_end.error().offset == 106u);
  BOOST_TEST(child->Offset() == 106u);
  BOOST_TEST(*child->ReadU16LE() == 0x0605);
  BOOST_TEST(child->Empty());

  Result<uint8_t> g3 = grandchild->ReadU8();
  BOOST_TEST(*g3 == 3);
  Result<uint16_t> g_short = grandchild->ReadU16LE();
  BOOST_TEST_REQUIRE(!g_short.has_value());
  BOOST_TEST(g_short.error().offset == 105u);

  // ReadCursor longer than what remains fails and leaves the parent as it was.
  Result<ByteCursor> too_long = parent.ReadCursor(2);
  BOOST_TEST_REQUIRE(!too_long.has_value());
  BOOST_TEST(Code(too_long.error().code) == Code(ErrorCode::kTruncated));
  BOOST_TEST(too_long.error().offset == 108u);
  BOOST_TEST(parent.Offset() == 108u);
  BOOST_TEST(*parent.ReadU8() == 'z');
}

// ReadLine(max_len) looks at up to max_len bytes before the newline.
struct LineCase {
  std::string data;
  uint64_t max_len;
  // Expected lines read one after another, then the error of the next read
  // (or no error when the input is consumed exactly).
  std::vector<std::string> lines;
  std::optional<ErrorCode> error;
  uint64_t error_offset;  // relative to the cursor's span (base 0)
};

BOOST_AUTO_TEST_CASE(ReadLineTable) {
  const std::vector<LineCase> cases = {
      {"abc\n", 3, {"abc"}, std::nullopt, 0},           // newline right after max_len bytes: accepted
      {"abc\n", 4, {"abc"}, std::nullopt, 0},
      {"abc\n", kU64Max, {"abc"}, std::nullopt, 0},
      {"abcd\n", 3, {}, ErrorCode::kLimitExceeded, 0},  // one byte over the limit
      {"abcdefgh\n", 3, {}, ErrorCode::kLimitExceeded, 0},
      {"abcde", 3, {}, ErrorCode::kLimitExceeded, 0},   // no newline within max_len + 1 bytes
      {"abc", 3, {}, ErrorCode::kTruncated, 0},         // input ends before any newline
      {"abc", 100, {}, ErrorCode::kTruncated, 0},
      {"abc", kU64Max, {}, ErrorCode::kTruncated, 0},
      {"", 0, {}, ErrorCode::kTruncated, 0},
      {"", kU64Max, {}, ErrorCode::kTruncated, 0},
      {"\n", 0, {""}, std::nullopt, 0},
      {"a\n", 0, {}, ErrorCode::kLimitExceeded, 0},
      {"\n\n", 0, {"", ""}, std::nullopt, 0},
      {"ab\ncd\n", 2, {"ab", "cd"}, std::nullopt, 0},
      {"ab\ncde\n", 2, {"ab"}, ErrorCode::kLimitExceeded, 3},
      {"ab\ncd", 2, {"ab"}, ErrorCode::kTruncated, 3},
      {"a\rb\n", 3, {"a\rb"}, std::nullopt, 0},         // only \n ends a line
      {"a\x00" "b\n"s, 3, {"a\x00" "b"s}, std::nullopt, 0},
      {"x\n\xff", 8, {"x"}, ErrorCode::kTruncated, 2},
  };
  for (const LineCase& lc : cases) {
    BOOST_TEST_CONTEXT("data '" << lc.data << "' max_len " << lc.max_len) {
      const std::string data = kLead + lc.data;
      ByteCursor c(AsBytes(data), kBase);
      BOOST_TEST_REQUIRE(c.Skip(kLead.size()).has_value());
      for (const std::string& want : lc.lines) {
        Result<Bytes> line = c.ReadLine(lc.max_len);
        BOOST_TEST_REQUIRE(line.has_value(), (line ? "" : line.error().ToString()));
        BOOST_TEST(Text(*line) == want);
      }
      if (!lc.error) {
        BOOST_TEST(c.Empty());
        continue;
      }
      const uint64_t before = c.Offset();
      Result<Bytes> bad = c.ReadLine(lc.max_len);
      BOOST_TEST_REQUIRE(!bad.has_value());
      BOOST_TEST(Code(bad.error().code) == Code(*lc.error));
      BOOST_TEST(bad.error().offset == kBase + kLead.size() + lc.error_offset);
      BOOST_TEST(c.Offset() == before);
    }
  }
}

BOOST_AUTO_TEST_CASE(ReadLineLimitErrorNamesTheLimit) {
  const std::string data = "toolong\n";
  ByteCursor c(AsBytes(data));
  Result<Bytes> line = c.ReadLine(3);
  BOOST_TEST_REQUIRE(!line.has_value());
  BOOST_TEST(line.error().detail.find("max_line_len (3)") != std::string::npos, line.error().detail);
}

BOOST_AUTO_TEST_CASE(SkipTable) {
  const std::string data = "0123456789";
  ByteCursor c(AsBytes(data), 20);
  BOOST_TEST(c.Skip(0).has_value());
  BOOST_TEST(c.Offset() == 20u);
  BOOST_TEST(c.Skip(3).has_value());
  BOOST_TEST(c.Offset() == 23u);
  Status too_far = c.Skip(8);
  BOOST_TEST_REQUIRE(!too_far.has_value());
  BOOST_TEST(Code(too_far.error().code) == Code(ErrorCode::kTruncated));
  BOOST_TEST(too_far.error().offset == 23u);
  BOOST_TEST(c.Offset() == 23u);
  BOOST_TEST(c.Skip(7).has_value());
  BOOST_TEST(c.Empty());
  BOOST_TEST(c.Skip(0).has_value());
  Status one_more = c.Skip(1);
  BOOST_TEST_REQUIRE(!one_more.has_value());
  BOOST_TEST(one_more.error().offset == 30u);
}

// Lengths near 2^64 must fail cleanly: no wrap-around in pos + n, no pointer
// past the end, cursor unchanged.
BOOST_AUTO_TEST_CASE(HugeLengthsNeverOverflow) {
  const std::vector<uint64_t> huge = {
      kU64Max,
      kU64Max - 1,
      kU64Max - 2,  // pos (3) + n wraps to 0 when added
      uint64_t{1} << 63,
      static_cast<uint64_t>(std::numeric_limits<size_t>::max()),
      uint64_t{1} << 32,
      8,  // just one byte more than remains
  };
  const std::string data = "abcdefghij";
  for (uint64_t n : huge) {
    BOOST_TEST_CONTEXT("n = " << n) {
      ByteCursor c(AsBytes(data), 50);
      BOOST_TEST_REQUIRE(c.Skip(3).has_value());

      Result<Bytes> bytes = c.ReadBytes(n);
      BOOST_TEST_REQUIRE(!bytes.has_value());
      BOOST_TEST(Code(bytes.error().code) == Code(ErrorCode::kTruncated));
      BOOST_TEST(bytes.error().offset == 53u);

      Result<ByteCursor> sub = c.ReadCursor(n);
      BOOST_TEST_REQUIRE(!sub.has_value());
      BOOST_TEST(Code(sub.error().code) == Code(ErrorCode::kTruncated));
      BOOST_TEST(sub.error().offset == 53u);

      Status skip = c.Skip(n);
      BOOST_TEST_REQUIRE(!skip.has_value());
      BOOST_TEST(Code(skip.error().code) == Code(ErrorCode::kTruncated));
      BOOST_TEST(skip.error().offset == 53u);

      BOOST_TEST(c.Offset() == 53u);
      BOOST_TEST(c.Remaining() == 7u);
      BOOST_TEST(Text(c.Rest()) == "defghij");
    }
  }
  // The error says how much was asked for, in full.
  ByteCursor c(AsBytes(data));
  Result<Bytes> bytes = c.ReadBytes(kU64Max);
  BOOST_TEST_REQUIRE(!bytes.has_value());
  BOOST_TEST(bytes.error().detail.find("18446744073709551615") != std::string::npos, bytes.error().detail);
}

BOOST_AUTO_TEST_CASE(HugeMaxLineLen) {
  const std::string data = "abc\ndef";
  ByteCursor c(AsBytes(data), 7);
  Result<Bytes> line = c.ReadLine(kU64Max);
  BOOST_TEST_REQUIRE(line.has_value());
  BOOST_TEST(Text(*line) == "abc");
  Result<Bytes> rest = c.ReadLine(kU64Max);
  BOOST_TEST_REQUIRE(!rest.has_value());
  BOOST_TEST(Code(rest.error().code) == Code(ErrorCode::kTruncated));
  BOOST_TEST(rest.error().offset == 11u);
  BOOST_TEST(c.Offset() == 11u);
  // max_len == size: the whole remainder may be the line.
  Result<Bytes> rest2 = c.ReadLine(3);
  BOOST_TEST(!rest2.has_value());
}

BOOST_AUTO_TEST_CASE(ReadBytesIsZeroCopy) {
  const std::string data = "xyz";
  ByteCursor c(AsBytes(data));
  BOOST_TEST_REQUIRE(c.Skip(1).has_value());
  Result<Bytes> bytes = c.ReadBytes(2);
  BOOST_TEST_REQUIRE(bytes.has_value());
  BOOST_TEST(static_cast<const void*>(bytes->data()) == static_cast<const void*>(data.data() + 1));
  BOOST_TEST(bytes->size() == 2u);
}

BOOST_AUTO_TEST_CASE(AsBytesAndAsStringViewRoundTrip) {
  const std::string text = "a\x00\xff"s;
  Bytes bytes = AsBytes(text);
  BOOST_TEST(bytes.size() == 3u);
  BOOST_TEST(bytes[2] == 0xff);
  BOOST_TEST(AsStringView(bytes) == std::string_view(text));
  BOOST_TEST(static_cast<const void*>(AsStringView(bytes).data()) == static_cast<const void*>(text.data()));
}

}  // namespace
}  // namespace ckptguard

// Private to lib/: Python's text rules, as CPython 3.11 implements them.
//
// Parsing: the literal forms the C unpickler accepts in text opcodes (ints
// with strtol and PyLong_FromString, floats, backslash escapes,
// raw-unicode-escape) and UTF-8 validation. Formatting: Python's repr() of
// str, bytes, float and arbitrary-size ints, for pickletools-style output.
// Errors carry offsets relative to the start of the text passed in.
#ifndef CKPTGUARD_LIB_SRC_PY_TEXT_H_
#define CKPTGUARD_LIB_SRC_PY_TEXT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::py {

// kMaxIntStrDigits is CPython's default int_max_str_digits (3.11): decimal
// text longer than this is refused when parsed and not printed as decimal.
inline constexpr size_t kMaxIntStrDigits = 4300;

// Utf8Error returns the offset of the first invalid UTF-8 sequence in `text`,
// or nullopt when it is valid. With `allow_surrogates`, encoded U+D800..U+DFFF
// are accepted (CPython's "surrogatepass").
std::optional<size_t> Utf8Error(std::string_view text, bool allow_surrogates);

// AppendUtf8 appends code point `cp` (<= 0x10ffff) to `out` as UTF-8; lone
// surrogates are encoded as three bytes, as CPython's "surrogatepass" does.
void AppendUtf8(std::string& out, uint32_t cp);

// DecodeBytesEscape undoes Python bytes-literal escapes (codecs.escape_decode):
// \\ \' \" \a \b \f \n \r \t \v \<newline> \ooo \xhh; unknown escapes stay.
Result<std::string> DecodeBytesEscape(std::string_view text);

// DecodeRawUnicodeEscape decodes "raw-unicode-escape" text to UTF-8 (lone
// surrogates encoded as three bytes): bytes are code points, \uXXXX and
// \UXXXXXXXX are escapes.
Result<std::string> DecodeRawUnicodeEscape(std::string_view text);

// PyInt is an integer of any size: `small` when it fits in int64, else
// `twos_le`, its minimal two's-complement little-endian bytes.
struct PyInt {
  bool big = false;
  int64_t small = 0;
  std::string twos_le;
};

// ParseStrtolLine mirrors what the C unpickler's load_int does first:
// strtol(s, &end, 0) on the line as a C string (so it stops at the first
// NUL), accepted only when `end` is at the newline or at a NUL and errno is
// not set. That is C rules: leading C whitespace, a sign, "0x"/"0X" hex, a
// leading 0 for octal, no underscores, and the range of a 64-bit C long. A
// line starting with NUL converts nothing and leaves `end` on that NUL, so it
// is accepted as 0. nullopt means CPython falls back to ParsePyLong(line, 0).
std::optional<int64_t> ParseStrtolLine(std::string_view line);

// ParsePyLong parses `text` as PyLong_FromString(s, NULL, base) does on the C
// string s (so text stops at the first NUL). `base` is 0 or 10. Both allow
// surrounding whitespace, a sign and single underscores between digits; base
// 0 also takes 0x/0o/0b prefixes (one underscore may follow the prefix) and
// refuses a non-zero decimal with leading zeros ("010"), while base 10 reads
// "010" as 10 and refuses prefixes. More than kMaxIntStrDigits decimal digits
// is kLimitExceeded, any other refusal kMalformed at offset 0.
Result<PyInt> ParsePyLong(std::string_view text, int base);

// IntFromTwosComplement reads little-endian two's-complement bytes (LONG1/4).
// At most `max_len` bytes are accepted by the caller; this does not allocate
// for values that fit in int64.
PyInt IntFromTwosComplement(std::string_view bytes);

// ParseFloatLiteral parses a FLOAT line as PyOS_string_to_double does (no
// surrounding space, inf/infinity/nan in any case, overflow is an error).
Result<double> ParseFloatLiteral(std::string_view text);

// AppendJsonStr appends the str whose surrogatepass UTF-8 is `text` as a
// JSON string literal: '"', '\\' and C0 controls escaped as nlohmann and
// Python's json do (\b \f \n \r \t, else \u00XX), each encoded surrogate
// U+D800..U+DFFF as \udXXX (what json.dumps writes; raw UTF-8 cannot carry
// them), every other code point as UTF-8. A byte that is not part of a
// surrogatepass UTF-8 sequence (not in a str, but in a zip entry name or a
// path) becomes U+FFFD.
void AppendJsonStr(std::string& out, std::string_view text);

// HasSurrogatePair says whether `text` (surrogatepass UTF-8) holds an encoded
// high surrogate directly followed by an encoded low one: two code points in
// Python, which every JSON reader joins into one when it reads the escapes
// "\ud83d\ude00", so such a str does not survive as a JSON string.
bool HasSurrogatePair(std::string_view text);

// JsonReadBack is the UTF-8 of what a JSON reader gives back for
// AppendJsonStr(text): adjacent high and low surrogates joined into one code
// point, lone ones kept (3 bytes), invalid bytes as U+FFFD. Two texts whose
// JsonReadBack is equal are one key of a JSON object.
std::string JsonReadBack(std::string_view text);

// ReprStr is repr() of a str given as UTF-8 (lone surrogates allowed).
std::string ReprStr(std::string_view utf8);
// ReprLatin1 is repr() of the str whose code points are the bytes of `bytes`.
std::string ReprLatin1(std::string_view bytes);
// ReprBytes is repr() of a bytes object.
std::string ReprBytes(std::string_view bytes);
// ReprByteArray is repr() of a bytearray: "bytearray(b'...')". The quote is
// chosen as for bytes, but a single quote is always escaped, also inside
// double quotes (Objects/bytearrayobject.c, bytearray_repr): b"\'".
std::string ReprByteArray(std::string_view bytes);
// ReprFloat is repr() of a float (shortest round-trip digits, Python layout).
std::string ReprFloat(double value);
// ReprInt is the decimal repr() of `value`; for more than kMaxIntStrDigits
// digits it gives hex ("0x...") as Python cannot print it either.
std::string ReprInt(const PyInt& value);

}  // namespace ckptguard::py

CKPTGUARD_API_END

#endif  // CKPTGUARD_LIB_SRC_PY_TEXT_H_

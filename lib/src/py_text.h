// Private to lib/: Python's text rules, as CPython 3.11 implements them.
//
// Parsing: the literal forms the C unpickler accepts in text opcodes (ints
// with strtol/PyLong_FromString base 0, floats, backslash escapes,
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

// ParseIntLiteral parses `text` as the C unpickler parses INT/LONG/GET/PUT
// lines: first as C strtol(base 0) (leading space, sign, 0x hex, leading-0
// octal), else as Python's int(text, 0) (underscores, 0o, 0b, surrounding
// whitespace). Text stops at the first NUL, as in C.
Result<PyInt> ParseIntLiteral(std::string_view text);

// IntFromTwosComplement reads little-endian two's-complement bytes (LONG1/4).
// At most `max_len` bytes are accepted by the caller; this does not allocate
// for values that fit in int64.
PyInt IntFromTwosComplement(std::string_view bytes);

// ParseFloatLiteral parses a FLOAT line as PyOS_string_to_double does (no
// surrounding space, inf/infinity/nan in any case, overflow is an error).
Result<double> ParseFloatLiteral(std::string_view text);

// ReprStr is repr() of a str given as UTF-8 (lone surrogates allowed).
std::string ReprStr(std::string_view utf8);
// ReprLatin1 is repr() of the str whose code points are the bytes of `bytes`.
std::string ReprLatin1(std::string_view bytes);
// ReprBytes is repr() of a bytes object.
std::string ReprBytes(std::string_view bytes);
// ReprFloat is repr() of a float (shortest round-trip digits, Python layout).
std::string ReprFloat(double value);
// ReprInt is the decimal repr() of `value`; for more than kMaxIntStrDigits
// digits it gives hex ("0x...") as Python cannot print it either.
std::string ReprInt(const PyInt& value);

}  // namespace ckptguard::py

#endif  // CKPTGUARD_LIB_SRC_PY_TEXT_H_

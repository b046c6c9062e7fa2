#include "py_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace ckptguard::py {
namespace {

bool IsCSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

int DigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
  return 99;
}

constexpr char kHex[] = "0123456789abcdef";

// Magnitude is an unsigned big integer: little-endian 32-bit limbs, no
// trailing zero limbs (zero is empty).
using Magnitude = std::vector<uint32_t>;

void MulAdd(Magnitude& mag, uint32_t mul, uint32_t add) {
  uint64_t carry = add;
  for (uint32_t& limb : mag) {
    uint64_t v = static_cast<uint64_t>(limb) * mul + carry;
    limb = static_cast<uint32_t>(v);
    carry = v >> 32;
  }
  if (carry != 0) mag.push_back(static_cast<uint32_t>(carry));
}

// DivSmall divides in place and returns the remainder.
uint32_t DivSmall(Magnitude& mag, uint32_t div) {
  uint64_t rem = 0;
  for (size_t i = mag.size(); i-- > 0;) {
    uint64_t cur = (rem << 32) | mag[i];
    mag[i] = static_cast<uint32_t>(cur / div);
    rem = cur % div;
  }
  while (!mag.empty() && mag.back() == 0) mag.pop_back();
  return static_cast<uint32_t>(rem);
}

PyInt FromMagnitude(const Magnitude& mag, bool negative) {
  PyInt out;
  // Fits in int64?
  if (mag.size() <= 2) {
    uint64_t v = mag.empty() ? 0 : mag[0];
    if (mag.size() == 2) v |= static_cast<uint64_t>(mag[1]) << 32;
    if (!negative && v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      out.small = static_cast<int64_t>(v);
      return out;
    }
    if (negative && v <= (uint64_t{1} << 63)) {
      out.small = v == (uint64_t{1} << 63) ? std::numeric_limits<int64_t>::min()
                                           : -static_cast<int64_t>(v);
      return out;
    }
  }
  out.big = true;
  std::string bytes;
  for (uint32_t limb : mag) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((limb >> (8 * i)) & 0xff));
  }
  while (!bytes.empty() && bytes.back() == 0) bytes.pop_back();
  if (negative) {
    // Two's complement: invert and add one.
    bool carry = true;
    for (char& c : bytes) {
      uint8_t b = static_cast<uint8_t>(~static_cast<uint8_t>(c));
      if (carry) {
        ++b;
        carry = (b == 0);
      }
      c = static_cast<char>(b);
    }
    if ((static_cast<uint8_t>(bytes.back()) & 0x80) == 0) bytes.push_back(static_cast<char>(0xff));
  } else if ((static_cast<uint8_t>(bytes.back()) & 0x80) != 0) {
    bytes.push_back('\0');
  }
  out.twos_le = std::move(bytes);
  return out;
}

// ToMagnitude converts two's-complement little-endian bytes to sign and magnitude.
Magnitude ToMagnitude(std::string_view twos_le, bool* negative) {
  std::vector<uint8_t> bytes(twos_le.begin(), twos_le.end());
  *negative = !bytes.empty() && (bytes.back() & 0x80) != 0;
  if (*negative) {
    bool carry = true;
    for (uint8_t& b : bytes) {
      b = static_cast<uint8_t>(~b);
      if (carry) {
        ++b;
        carry = (b == 0);
      }
    }
  }
  Magnitude mag((bytes.size() + 3) / 4, 0);
  for (size_t i = 0; i < bytes.size(); ++i) mag[i / 4] |= static_cast<uint32_t>(bytes[i]) << (8 * (i % 4));
  while (!mag.empty() && mag.back() == 0) mag.pop_back();
  return mag;
}

std::unexpected<Error> BadInt(std::string_view text, int base) {
  std::string shown(text.substr(0, 40));
  return MakeError(ErrorCode::kMalformed, 0,
                   "invalid literal for int() with base " + std::to_string(base) + ": '" + shown + "'");
}

// ParseIntAsStrtol mirrors glibc strtol(text, &end, 0) (64-bit long) with
// load_int's check that the whole text was consumed; `text` holds no NUL.
// nullopt means "fall back to PyLong". "0x" without a hex digit after it
// converts the 0 and stops at the x, so it falls back too.
std::optional<int64_t> ParseIntAsStrtol(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && IsCSpace(text[i])) ++i;
  bool negative = false;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
  int base = 10;
  if (i < text.size() && text[i] == '0') {
    if (i + 2 < text.size() + 0 && (text[i + 1] == 'x' || text[i + 1] == 'X') &&
        DigitValue(text[i + 2]) < 16) {
      base = 16;
      i += 2;
    } else {
      base = 8;
    }
  }
  size_t start = i;
  uint64_t value = 0;
  const uint64_t limit = negative ? (uint64_t{1} << 63) : (uint64_t{1} << 63) - 1;
  for (; i < text.size(); ++i) {
    int d = DigitValue(text[i]);
    if (d >= base) break;
    if (value > (limit - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base)) return std::nullopt;
    value = value * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  if (i == start || i != text.size()) return std::nullopt;
  if (negative) {
    return value == (uint64_t{1} << 63) ? std::numeric_limits<int64_t>::min()
                                        : -static_cast<int64_t>(value);
  }
  return static_cast<int64_t>(value);
}

bool IsPrintableNonAscii(uint32_t cp) {
  // Code points Python's str.isprintable() rejects (categories Cc, Cf, Cs, Co,
  // Zl, Zp, Zs and the noncharacters); unassigned code points are treated as
  // printable, an approximation of the Unicode database.
  struct Range {
    uint32_t lo, hi;
  };
  static constexpr Range kNonPrintable[] = {
      {0x80, 0xa0},       {0xad, 0xad},       {0x600, 0x605},     {0x61c, 0x61c},
      {0x6dd, 0x6dd},     {0x70f, 0x70f},     {0x890, 0x891},     {0x8e2, 0x8e2},
      {0x1680, 0x1680},   {0x180e, 0x180e},   {0x2000, 0x200f},   {0x2028, 0x202f},
      {0x205f, 0x2064},   {0x2066, 0x206f},   {0x3000, 0x3000},   {0xd800, 0xf8ff},
      {0xfdd0, 0xfdef},   {0xfeff, 0xfeff},   {0xfff9, 0xfffb},   {0xfffe, 0xffff},
      {0x110bd, 0x110bd}, {0x110cd, 0x110cd}, {0x13430, 0x1343f}, {0x1bca0, 0x1bca3},
      {0x1d173, 0x1d17a}, {0xe0001, 0xe0001}, {0xe0020, 0xe007f}, {0xf0000, 0x10ffff},
  };
  if ((cp & 0xfffe) == 0xfffe) return false;
  for (const Range& r : kNonPrintable) {
    if (cp >= r.lo && cp <= r.hi) return false;
  }
  return true;
}


void AppendHexEscape(std::string& out, char kind, uint32_t cp, int digits) {
  out.push_back('\\');
  out.push_back(kind);
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out.push_back(kHex[(cp >> shift) & 0xf]);
}

char ChooseQuote(bool has_single, bool has_double) { return has_single && !has_double ? '"' : '\''; }

// ReprCodePoints is repr() of a str given as a list of code points.
std::string ReprCodePoints(const std::vector<uint32_t>& cps) {
  bool has_single = false, has_double = false;
  for (uint32_t cp : cps) {
    has_single |= cp == '\'';
    has_double |= cp == '"';
  }
  const char quote = ChooseQuote(has_single, has_double);
  std::string out(1, quote);
  for (uint32_t cp : cps) {
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7f) {
      AppendHexEscape(out, 'x', cp, 2);
    } else if (cp < 0x7f) {
      out.push_back(static_cast<char>(cp));
    } else if (IsPrintableNonAscii(cp)) {
      AppendUtf8(out, cp);
    } else if (cp <= 0xff) {
      AppendHexEscape(out, 'x', cp, 2);
    } else if (cp <= 0xffff) {
      AppendHexEscape(out, 'u', cp, 4);
    } else {
      AppendHexEscape(out, 'U', cp, 8);
    }
  }
  out.push_back(quote);
  return out;
}

}  // namespace

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

std::optional<size_t> Utf8Error(std::string_view text, bool allow_surrogates) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return k < n && (s[k] & 0xc0) == 0x80; };
  while (i < n) {
    if (n - i >= 8) {  // eight ASCII bytes at once (keys and names are ASCII)
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (!cont(i + 1)) return i;
      i += 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      if (i + 1 >= n) return i;
      uint8_t c1 = s[i + 1];
      uint8_t lo = 0x80, hi = 0xbf;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed && !allow_surrogates) hi = 0x9f;
      if (c1 < lo || c1 > hi || !cont(i + 2)) return i;
      i += 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      if (i + 1 >= n) return i;
      uint8_t c1 = s[i + 1];
      uint8_t lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
      if (c1 < lo || c1 > hi || !cont(i + 2) || !cont(i + 3)) return i;
      i += 4;
    } else {
      return i;
    }
  }
  return std::nullopt;
}

Result<std::string> DecodeBytesEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i++];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (i == text.size()) {
      return MakeError(ErrorCode::kMalformed, i - 1, "trailing \\ in string");
    }
    c = text[i++];
    switch (c) {
      case '\n': break;
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 't': out.push_back('\t'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 'v': out.push_back('\v'); break;
      case 'a': out.push_back('\a'); break;
      case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
        unsigned v = static_cast<unsigned>(c - '0');
        for (int k = 0; k < 2 && i < text.size() && text[i] >= '0' && text[i] <= '7'; ++k) {
          v = (v << 3) + static_cast<unsigned>(text[i++] - '0');
        }
        out.push_back(static_cast<char>(v & 0xff));
        break;
      }
      case 'x': {
        if (i + 1 < text.size() && DigitValue(text[i]) < 16 && DigitValue(text[i + 1]) < 16) {
          out.push_back(static_cast<char>(DigitValue(text[i]) * 16 + DigitValue(text[i + 1])));
          i += 2;
          break;
        }
        return MakeError(ErrorCode::kMalformed, i - 2, "invalid \\x escape");
      }
      default:
        // Unknown escapes keep the backslash (a DeprecationWarning in CPython).
        out.push_back('\\');
        --i;
        break;
    }
  }
  return out;
}

Result<std::string> DecodeRawUnicodeEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    auto c = static_cast<uint8_t>(text[i++]);
    if (c != '\\' || i == text.size()) {
      AppendUtf8(out, c);
      continue;
    }
    auto next = static_cast<uint8_t>(text[i++]);
    int count = next == 'u' ? 4 : next == 'U' ? 8 : 0;
    if (count == 0) {
      out.push_back('\\');
      AppendUtf8(out, next);
      continue;
    }
    uint32_t cp = 0;
    for (int k = 0; k < count; ++k, ++i) {
      if (i >= text.size() || DigitValue(text[i]) >= 16) {
        return MakeError(ErrorCode::kMalformed, i,
                         count == 4 ? "truncated \\uXXXX escape" : "truncated \\UXXXXXXXX escape");
      }
      cp = (cp << 4) | static_cast<uint32_t>(DigitValue(text[i]));
    }
    if (cp > 0x10ffff) return MakeError(ErrorCode::kMalformed, i - 10, "\\Uxxxxxxxx out of range");
    AppendUtf8(out, cp);
  }
  return out;
}

std::optional<int64_t> ParseStrtolLine(std::string_view line) {
  if (size_t nul = line.find('\0'); nul != std::string_view::npos) line = line.substr(0, nul);
  // Nothing before the NUL: strtol converts nothing and sets end = s, which
  // points at that NUL, so load_int takes the value 0.
  if (line.empty()) return 0;
  return ParseIntAsStrtol(line);
}

Result<PyInt> ParsePyLong(std::string_view text, int base) {
  if (base != 0 && base != 10) return MakeError(ErrorCode::kInternal, 0, "ParsePyLong base must be 0 or 10");
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
  // Surrounding whitespace, sign, optional prefix, digits with single
  // underscores between them.
  size_t b = 0, e = text.size();
  while (b < e && IsCSpace(text[b])) ++b;
  while (e > b && IsCSpace(text[e - 1])) --e;
  std::string_view s = text.substr(b, e - b);
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  bool error_if_nonzero = false;  // base 0 with a C-style leading 0
  if (base == 0) {
    base = 10;
    if (i < s.size() && s[i] == '0') {
      const char p = i + 1 < s.size() ? s[i + 1] : '\0';
      if (p == 'x' || p == 'X') {
        base = 16;
      } else if (p == 'o' || p == 'O') {
        base = 8;
      } else if (p == 'b' || p == 'B') {
        base = 2;
      } else {
        error_if_nonzero = true;
      }
      if (base != 10) {
        i += 2;
        if (i < s.size() && s[i] == '_') ++i;  // one underscore may follow the prefix
      }
    }
  }
  const int shown_base = error_if_nonzero ? 0 : base;
  std::string digits;
  bool last_underscore = true;  // forbids a leading underscore
  for (; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (last_underscore) return BadInt(text, shown_base);
      last_underscore = true;
      continue;
    }
    if (DigitValue(s[i]) >= base) return BadInt(text, shown_base);
    digits.push_back(s[i]);
    last_underscore = false;
  }
  if (digits.empty() || last_underscore) return BadInt(text, shown_base);
  if (error_if_nonzero && digits.find_first_not_of('0') != std::string::npos) {
    // Base 0 forbids leading zeros on a non-zero decimal ("010").
    return BadInt(text, 0);
  }
  if (base == 10 && digits.size() > kMaxIntStrDigits) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "integer literal of " + std::to_string(digits.size()) +
                         " digits exceeds CPython's limit of 4300");
  }
  Magnitude mag;
  if (base == 10) {
    size_t pos = 0;
    while (pos < digits.size()) {
      size_t chunk = std::min<size_t>(9, digits.size() - pos);
      uint32_t mul = 1, add = 0;
      for (size_t k = 0; k < chunk; ++k) {
        mul *= 10;
        add = add * 10 + static_cast<uint32_t>(digits[pos + k] - '0');
      }
      MulAdd(mag, mul, add);
      pos += chunk;
    }
  } else {
    // Power-of-two bases: pack bits from the least significant digit up.
    const int bits = base == 16 ? 4 : base == 8 ? 3 : 1;
    uint64_t acc = 0;
    int acc_bits = 0;
    for (size_t k = digits.size(); k-- > 0;) {
      acc |= static_cast<uint64_t>(DigitValue(digits[k])) << acc_bits;
      acc_bits += bits;
      if (acc_bits >= 32) {
        mag.push_back(static_cast<uint32_t>(acc));
        acc >>= 32;
        acc_bits -= 32;
      }
    }
    if (acc_bits > 0) mag.push_back(static_cast<uint32_t>(acc));
    while (!mag.empty() && mag.back() == 0) mag.pop_back();
  }
  return FromMagnitude(mag, negative && !mag.empty());
}

PyInt IntFromTwosComplement(std::string_view bytes) {
  PyInt out;
  if (bytes.empty()) return out;
  const bool negative = (static_cast<uint8_t>(bytes.back()) & 0x80) != 0;
  // Drop redundant sign-extension bytes to see whether it fits in 8.
  size_t n = bytes.size();
  const uint8_t ext = negative ? 0xff : 0x00;
  while (n > 1 && static_cast<uint8_t>(bytes[n - 1]) == ext &&
         ((static_cast<uint8_t>(bytes[n - 2]) & 0x80) == (ext & 0x80))) {
    --n;
  }
  if (n <= 8) {
    uint64_t v = negative ? ~uint64_t{0} : 0;
    for (size_t i = 0; i < n; ++i) {
      v &= ~(uint64_t{0xff} << (8 * i));
      v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
    }
    out.small = static_cast<int64_t>(v);
    return out;
  }
  out.big = true;
  out.twos_le = std::string(bytes);
  return out;
}

Result<double> ParseFloatLiteral(std::string_view text) {
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
  std::string_view s = text;
  bool negative = false;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  std::string lower;
  for (size_t k = i; k < s.size(); ++k) lower.push_back(static_cast<char>(s[k] | 0x20));
  if (lower == "inf" || lower == "infinity") {
    return negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  if (lower == "nan") {
    return negative ? -std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::quiet_NaN();
  }
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++frac_digits;
  }
  bool ok = int_digits + frac_digits > 0;
  if (ok && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp_digits;
    ok = exp_digits > 0;
  }
  if (!ok || i != s.size()) {
    return MakeError(ErrorCode::kMalformed, 0,
                     "could not convert string to float: '" + std::string(text.substr(0, 40)) + "'");
  }
  std::string copy(s);
  double value = std::strtod(copy.c_str(), nullptr);
  if (std::isinf(value)) {
    return MakeError(ErrorCode::kMalformed, 0, "float literal out of range");
  }
  return value;
}

std::string ReprStr(std::string_view utf8) {
  std::vector<uint32_t> cps;
  cps.reserve(utf8.size());
  const auto* s = reinterpret_cast<const uint8_t*>(utf8.data());
  size_t i = 0;
  while (i < utf8.size()) {
    uint8_t c = s[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80) {
      cp = c, len = 1;
    } else if ((c & 0xe0) == 0xc0 && i + 1 < utf8.size()) {
      cp = ((c & 0x1fu) << 6) | (s[i + 1] & 0x3fu), len = 2;
    } else if ((c & 0xf0) == 0xe0 && i + 2 < utf8.size()) {
      cp = ((c & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6) | (s[i + 2] & 0x3fu), len = 3;
    } else if ((c & 0xf8) == 0xf0 && i + 3 < utf8.size()) {
      cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12) | ((s[i + 2] & 0x3fu) << 6) |
           (s[i + 3] & 0x3fu),
      len = 4;
    } else {
      // Not reached for validated input; show the byte as a lone escape.
      cp = 0xdc00 | c, len = 1;
    }
    cps.push_back(cp);
    i += len;
  }
  return ReprCodePoints(cps);
}

namespace {

// NextCodePoint decodes the surrogatepass UTF-8 sequence at text[i] into
// `cp` and returns its length, or 0 (cp untouched) when the bytes there are
// not one.
size_t NextCodePoint(std::string_view text, size_t i, uint32_t& cp) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  const uint8_t c = s[i];
  auto cont = [&](size_t k) { return k < n && (s[k] & 0xc0) == 0x80; };
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf && cont(i + 1)) {
    cp = ((c & 0x1fu) << 6) | (s[i + 1] & 0x3fu);
    return 2;
  }
  if (c >= 0xe0 && c <= 0xef && cont(i + 1) && cont(i + 2) && (c != 0xe0 || s[i + 1] >= 0xa0)) {
    cp = ((c & 0x0fu) << 12) | ((s[i + 1] & 0x3fu) << 6) | (s[i + 2] & 0x3fu);
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4 && cont(i + 1) && cont(i + 2) && cont(i + 3) && (c != 0xf0 || s[i + 1] >= 0x90) &&
      (c != 0xf4 || s[i + 1] <= 0x8f)) {
    cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3fu) << 12) | ((s[i + 2] & 0x3fu) << 6) | (s[i + 3] & 0x3fu);
    return 4;
  }
  return 0;
}

bool IsHighSurrogate(uint32_t cp) { return cp >= 0xd800 && cp <= 0xdbff; }
bool IsLowSurrogate(uint32_t cp) { return cp >= 0xdc00 && cp <= 0xdfff; }

}  // namespace

void AppendJsonStr(std::string& out, std::string_view text) {
  out.push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = 0;
    const size_t len = NextCodePoint(text, i, cp);
    if (len == 0) {
      AppendUtf8(out, 0xfffd);
      ++i;
      continue;
    }
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp < 0x20 || (cp >= 0xd800 && cp <= 0xdfff)) {
          AppendHexEscape(out, 'u', cp, 4);
        } else {
          out.append(text.substr(i, len));
        }
    }
    i += len;
  }
  out.push_back('"');
}

bool HasSurrogatePair(std::string_view text) {
  bool after_high = false;
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const size_t len = NextCodePoint(text, i, cp);
    if (len == 0) {
      after_high = false;
      ++i;
      continue;
    }
    if (after_high && IsLowSurrogate(cp)) return true;
    after_high = IsHighSurrogate(cp);
    i += len;
  }
  return false;
}

std::string JsonReadBack(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::optional<uint32_t> high;  // a high surrogate not yet written
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    size_t len = NextCodePoint(text, i, cp);
    if (len == 0) {
      cp = 0xfffd;
      len = 1;
    }
    if (high && IsLowSurrogate(cp)) {
      AppendUtf8(out, 0x10000 + ((*high - 0xd800) << 10) + (cp - 0xdc00));
      high.reset();
    } else {
      if (high) AppendUtf8(out, *high);
      high.reset();
      if (IsHighSurrogate(cp)) {
        high = cp;
      } else {
        AppendUtf8(out, cp);
      }
    }
    i += len;
  }
  if (high) AppendUtf8(out, *high);
  return out;
}

std::string ReprLatin1(std::string_view bytes) {
  std::vector<uint32_t> cps(bytes.begin(), bytes.end());
  for (size_t i = 0; i < bytes.size(); ++i) cps[i] = static_cast<uint8_t>(bytes[i]);
  return ReprCodePoints(cps);
}

namespace {

// AppendBytesRepr appends b'...' as bytes_repr does, or as bytearray_repr
// does when `always_escape_single` (it escapes ' even inside double quotes).
void AppendBytesRepr(std::string& out, std::string_view bytes, bool always_escape_single) {
  const bool has_single = bytes.find('\'') != std::string_view::npos;
  const bool has_double = bytes.find('"') != std::string_view::npos;
  const char quote = ChooseQuote(has_single, has_double);
  out.push_back('b');
  out.push_back(quote);
  for (char ch : bytes) {
    auto c = static_cast<uint8_t>(ch);
    if (c == static_cast<uint8_t>(quote) || c == '\\' || (always_escape_single && c == '\'')) {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f) {
      AppendHexEscape(out, 'x', c, 2);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back(quote);
}

}  // namespace

std::string ReprBytes(std::string_view bytes) {
  std::string out;
  AppendBytesRepr(out, bytes, false);
  return out;
}

std::string ReprByteArray(std::string_view bytes) {
  std::string out = "bytearray(";
  AppendBytesRepr(out, bytes, true);
  out.push_back(')');
  return out;
}

std::string ReprFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  std::string out;
  if (sci.front() == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  size_t epos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, epos)) {
    if (c != '.') digits.push_back(c);
  }
  int exp = 0;
  std::from_chars(sci.data() + epos + 1 + (sci[epos + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exp);
  const int decpt = exp + 1;
  const int ndigits = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out.push_back(digits[0]);
    if (ndigits > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    out.push_back('e');
    out.push_back(exp < 0 ? '-' : '+');
    std::string e = std::to_string(exp < 0 ? -exp : exp);
    if (e.size() < 2) e.insert(0, "0");
    out += e;
  } else if (decpt <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-decpt), '0');
    out += digits;
  } else if (decpt >= ndigits) {
    out += digits;
    out.append(static_cast<size_t>(decpt - ndigits), '0');
    out += ".0";
  } else {
    out.append(digits, 0, static_cast<size_t>(decpt));
    out.push_back('.');
    out.append(digits, static_cast<size_t>(decpt));
  }
  return out;
}

std::string ReprInt(const PyInt& value) {
  if (!value.big) return std::to_string(value.small);
  bool negative = false;
  Magnitude mag = ToMagnitude(value.twos_le, &negative);
  // 32 bits hold at most 9.64 decimal digits.
  const size_t max_digits = mag.size() * 10;
  std::string out;
  if (max_digits > kMaxIntStrDigits) {
    // Python would raise rather than print; hex keeps it exact and linear.
    for (size_t i = mag.size(); i-- > 0;) {
      for (int shift = 28; shift >= 0; shift -= 4) out.push_back(kHex[(mag[i] >> shift) & 0xf]);
    }
    out.erase(0, std::min(out.find_first_not_of('0'), out.size() - 1));
    return (negative ? "-0x" : "0x") + out;
  }
  while (!mag.empty()) {
    uint32_t rem = DivSmall(mag, 1000000000u);
    for (int k = 0; k < 9; ++k) {
      out.push_back(static_cast<char>('0' + rem % 10));
      rem /= 10;
    }
  }
  while (out.size() > 1 && out.back() == '0') out.pop_back();
  if (out.empty()) out = "0";
  if (negative) out.push_back('-');
  return std::string(out.rbegin(), out.rend());
}

}  // namespace ckptguard::py

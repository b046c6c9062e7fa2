#include "ckptguard/printable.h"

#include "py_text.h"

namespace ckptguard {
namespace {

constexpr char kHexDigits[] = "0123456789ABCDEF";

void AppendHexEscape(std::string& out, unsigned char byte) {
  out += "\\x";
  out.push_back(kHexDigits[byte >> 4]);
  out.push_back(kHexDigits[byte & 0xf]);
}

// DecodeUtf8 decodes one well-formed UTF-8 sequence at the start of `s`
// (no overlongs, no surrogates, at most U+10FFFF) into `out_code_point` and
// returns its length, or 0 when the first byte does not start one.
size_t DecodeUtf8(std::string_view s, char32_t& out_code_point) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  size_t len = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if (lead < 0x80) {
    out_code_point = lead;
    return 1;
  } else if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2, cp = lead & 0x1fu, min = 0x80;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3, cp = lead & 0x0fu, min = 0x800;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4, cp = lead & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i) & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  out_code_point = cp;
  return len;
}

// Invisible code points that change how a line reads: C1 controls and the
// bidirectional formatting characters (CVE-2021-42574).
bool IsHiddenControl(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

void AppendPrintable(std::string& out, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp = 0;
    const size_t len = DecodeUtf8(s.substr(i), cp);
    if (len == 0) {
      AppendHexEscape(out, static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    if (cp < 0x20 || cp == 0x7f) {
      AppendHexEscape(out, static_cast<unsigned char>(cp));
    } else if (IsHiddenControl(cp)) {
      out += "\\u{";
      for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHexDigits[(cp >> shift) & 0xf]);
      out += "}";
    } else {
      out.append(s.substr(i, len));
    }
    i += len;
  }
}

std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendPrintable(out, text);
  return out;
}

void AppendJsonString(std::string& out, std::string_view text) { py::AppendJsonStr(out, text); }

}  // namespace ckptguard

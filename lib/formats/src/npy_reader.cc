#include "ckptguard/npy_reader.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "py_text.h"

namespace ckptguard {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr uint64_t kNumpyMaxHeaderChars = 10'000;  // numpy.lib.format._MAX_HEADER_SIZE
constexpr uint64_t kDataAlign = 16;                  // the oldest alignment numpy's writer used
// Most values in one descr literal (each is a node InterpretDescr works out).
constexpr size_t kMaxDescrValues = 1'000'000;

std::string Num(uint64_t v) { return std::to_string(v); }

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHexDigit(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool IsIdentChar(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}
// IsSpace: the whitespace Python's tokenizer skips between tokens inside
// brackets (newlines included) and at the end of an eval input.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

uint32_t HexValue(char c) {
  if (IsDigit(c)) return static_cast<uint32_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint32_t>(c - 'a' + 10);
  return static_cast<uint32_t>(c - 'A' + 10);
}

}  // namespace

std::optional<SimpleDescr> ParseSimpleDescr(std::string_view s) {
  bool is_object = false;
  size_t i = 0;
  char order = '=';
  if (!s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=')) order = s[i++];
  if (i >= s.size()) return std::nullopt;
  char kind = s[i++];
  const size_t digits_begin = i;
  uint64_t size = 0;
  while (i < s.size() && IsDigit(s[i])) {
    if (size > (std::numeric_limits<uint64_t>::max() - 9) / 10) return std::nullopt;
    size = size * 10 + static_cast<uint64_t>(s[i++] - '0');
  }
  const bool has_size = i > digits_begin;
  bool has_unit = false;
  if (i < s.size() && s[i] == '[') {
    const size_t close = s.find(']', i);
    if (close == std::string::npos || close + 1 != s.size() || close == i + 1 || close - i > 24) return std::nullopt;
    size_t j = i + 1;
    while (j < close && IsDigit(s[j])) ++j;
    if (j == close) return std::nullopt;
    for (; j < close; ++j) {
      if (!((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z'))) return std::nullopt;
    }
    has_unit = true;
    i = close + 1;
  }
  if (i != s.size()) return std::nullopt;
  if (has_unit && kind != 'M' && kind != 'm') return std::nullopt;
  auto one_of = [&](std::initializer_list<uint64_t> sizes) {
    return has_size && std::find(sizes.begin(), sizes.end(), size) != sizes.end();
  };
  uint64_t item_size = size;
  switch (kind) {
    case 'b': if (!one_of({1})) return std::nullopt; break;
    case 'i': case 'u': if (!one_of({1, 2, 4, 8})) return std::nullopt; break;
    case 'f': if (!one_of({2, 4, 8, 12, 16})) return std::nullopt; break;
    case 'c': if (!one_of({8, 16, 24, 32})) return std::nullopt; break;
    case 'M': case 'm': if (!one_of({8})) return std::nullopt; break;
    case 'a': kind = 'S'; [[fallthrough]];
    case 'S': case 'V': if (!has_size) return std::nullopt; break;
    case 'U':
      if (!has_size || size > std::numeric_limits<uint64_t>::max() / 4) return std::nullopt;
      item_size = size * 4;
      break;
    case 'O':
      if (has_size && !one_of({4, 8})) return std::nullopt;
      item_size = has_size ? size : 8;
      is_object = true;
      break;
    default: return std::nullopt;
  }
  return SimpleDescr{order, kind, item_size, is_object};
}

namespace {

// HeaderParser parses the dict literal of one header, iteratively (the only
// nesting, structured descrs, uses an explicit bounded stack).
class HeaderParser {
 public:
  HeaderParser(std::string_view text, uint64_t base, bool utf8, bool allow_long_suffix,
               const NpyLimits& limits, NpyArray& out)
      : text_(text), base_(base), utf8_(utf8), allow_long_suffix_(allow_long_suffix), limits_(limits), out_(out) {}

  Status Parse() {
    // literal_eval strips leading spaces and tabs.
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
    if (pos_ >= text_.size() || text_[pos_] != '{') return Malformed(pos_, "the header is not a dict literal");
    ++pos_;
    std::array<bool, 3> seen{};
    size_t close_pos = 0;
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size()) return Malformed(pos_, "the header ends inside the dict");
      if (text_[pos_] == '}') {
        close_pos = pos_++;
        break;
      }
      const size_t key_pos = pos_;
      if (!AtString()) return Malformed(pos_, "expected a string key");
      CKG_ASSIGN_OR_RETURN(std::string key, ParseString());
      const int which = key == "descr" ? 0 : key == "fortran_order" ? 1 : key == "shape" ? 2 : -1;
      if (which < 0) return Malformed(key_pos, "unexpected key " + py::ReprStr(key));
      // A dict literal keeps the last of duplicate keys (silently, as
      // literal_eval does): the value parsed last replaces the earlier one.
      if (seen[static_cast<size_t>(which)]) duplicate_key_pos_ = key_pos;
      seen[static_cast<size_t>(which)] = true;
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != ':') return Malformed(pos_, "expected ':' after a key");
      ++pos_;
      SkipSpace();
      switch (which) {
        case 0: CKG_TRY(ParseDescr()); break;
        case 1: CKG_TRY(ParseBool()); break;
        default: CKG_TRY(ParseShape()); break;
      }
      SkipSpace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        close_pos = pos_++;
        break;
      }
      return Malformed(pos_, "expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ < text_.size()) return Malformed(pos_, "unexpected text after the header dict");
    static constexpr std::array<std::string_view, 3> kKeys = {"'descr'", "'fortran_order'", "'shape'"};
    for (size_t i = 0; i < seen.size(); ++i) {
      if (!seen[i]) return Malformed(close_pos, "the header lacks the key " + std::string(kKeys[i]));
    }
    return InterpretDescr();
  }

  // ParseLiteralOnly parses the whole text as one descr literal.
  Status ParseLiteralOnly() {
    SkipSpace();
    CKG_TRY(ParseDescr());
    SkipSpace();
    if (pos_ < text_.size()) return Malformed(pos_, "unexpected text after the literal");
    return OkStatus();
  }
  const std::vector<DescrValue>& descr_values() const { return values_; }

  uint64_t shape_offset() const { return base_ + shape_pos_; }
  uint64_t descr_offset() const { return base_ + descr_pos_; }
  bool saw_long_suffix() const { return saw_long_suffix_; }
  uint64_t long_suffix_offset() const { return base_ + long_suffix_pos_; }
  std::optional<uint64_t> duplicate_key_offset() const {
    return duplicate_key_pos_ ? std::optional<uint64_t>(base_ + *duplicate_key_pos_) : std::nullopt;
  }

 private:
  std::unexpected<Error> Fail(ErrorCode code, size_t pos, std::string detail) const {
    // Keep the offset inside the header (positions at its end point at its last byte).
    const size_t at = text_.empty() ? 0 : std::min(pos, text_.size() - 1);
    return MakeError(code, base_ + at, std::move(detail));
  }
  std::unexpected<Error> Malformed(size_t pos, std::string detail) const {
    return Fail(ErrorCode::kMalformed, pos, std::move(detail));
  }

  // SkipSpace skips what Python's tokenizer skips between tokens inside
  // brackets: whitespace, newlines, comments ('#' to the end of the line)
  // and backslash line continuations.
  void SkipSpace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (IsSpace(c)) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r') ++pos_;
      } else if (c == '\\' && pos_ + 1 < text_.size() && (text_[pos_ + 1] == '\n' || text_[pos_ + 1] == '\r')) {
        pos_ += 2;
      } else {
        break;
      }
    }
  }
  bool AtString() const {
    if (pos_ >= text_.size()) return false;
    const char c = text_[pos_];
    if (c == '\'' || c == '"') return true;
    return (c == 'u' || c == 'U') && pos_ + 1 < text_.size() && (text_[pos_ + 1] == '\'' || text_[pos_ + 1] == '"');
  }

  // AppendByte adds one source byte to a decoded string: as is for UTF-8
  // headers (already validated), as a latin-1 code point otherwise.
  void AppendByte(std::string& out, char c) const {
    if (utf8_ || static_cast<unsigned char>(c) < 0x80) {
      out.push_back(c);
    } else {
      py::AppendUtf8(out, static_cast<unsigned char>(c));
    }
  }

  // RawText is header text as UTF-8 (latin-1 headers converted).
  std::string RawText(size_t begin, size_t end) const {
    std::string out;
    for (size_t i = begin; i < end; ++i) AppendByte(out, text_[i]);
    return out;
  }

  // ReadHex reads exactly `n` hex digits after an escape.
  Result<uint32_t> ReadHex(size_t n, size_t escape_pos) {
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      if (pos_ >= text_.size() || !IsHexDigit(text_[pos_])) {
        return Malformed(escape_pos, "truncated \\x, \\u or \\U escape");
      }
      v = (v << 4) | HexValue(text_[pos_++]);
    }
    return v;
  }

  // ParseString reads a Python string literal at pos_ (AtString() is true).
  Result<std::string> ParseString() {
    const size_t start = pos_;
    if (text_[pos_] == 'u' || text_[pos_] == 'U') ++pos_;
    const char quote = text_[pos_];
    if (pos_ + 2 < text_.size() && text_[pos_ + 1] == quote && text_[pos_ + 2] == quote) {
      return Malformed(start, "triple-quoted strings are not supported");
    }
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) return Malformed(start, "unterminated string");
      const char c = text_[pos_++];
      if (c == quote) return out;
      if (c == '\n' || c == '\r') return Malformed(start, "unterminated string (a newline inside it)");
      if (c != '\\') {
        AppendByte(out, c);
        continue;
      }
      const size_t escape_pos = pos_ - 1;
      if (pos_ >= text_.size()) return Malformed(start, "unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '\n': break;  // line continuation
        case '\r':
          if (pos_ < text_.size() && text_[pos_] == '\n') ++pos_;
          break;
        case '\\': case '\'': case '"': out.push_back(e); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int i = 0; i < 2 && pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '7'; ++i) {
            v = v * 8 + static_cast<uint32_t>(text_[pos_++] - '0');
          }
          py::AppendUtf8(out, v);
          break;
        }
        case 'x':
        case 'u':
        case 'U': {
          CKG_ASSIGN_OR_RETURN(uint32_t cp, ReadHex(e == 'x' ? 2 : e == 'u' ? 4 : 8, escape_pos));
          if (cp > 0x10ffff) return Malformed(escape_pos, "escape beyond U+10FFFF");
          if (cp >= 0xd800 && cp <= 0xdfff) return Malformed(escape_pos, "surrogate escapes are not supported");
          py::AppendUtf8(out, cp);
          break;
        }
        case 'N': return Malformed(escape_pos, "\\N{...} escapes are not supported");
        default:  // Python keeps unknown escapes as written
          out.push_back('\\');
          AppendByte(out, e);
          break;
      }
    }
  }

  // ParseUInt reads a plain decimal integer (a shape dimension).
  Result<uint64_t> ParseUInt() {
    const size_t start = pos_;
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) {
      return Malformed(start, "signed integer where a non-negative dimension is expected");
    }
    if (pos_ >= text_.size() || !IsDigit(text_[pos_])) return Malformed(start, "expected an integer");
    if (text_[pos_] == '0' && pos_ + 1 < text_.size() && IsDigit(text_[pos_ + 1])) {
      return Malformed(start, "integer with a leading zero");
    }
    uint64_t v = 0;
    while (pos_ < text_.size() && IsDigit(text_[pos_])) {
      const uint64_t d = static_cast<uint64_t>(text_[pos_] - '0');
      if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) {
        return Malformed(start, "integer does not fit in 64 bits");
      }
      v = v * 10 + d;
      ++pos_;
    }
    if (allow_long_suffix_ && pos_ < text_.size() && text_[pos_] == 'L') {
      if (!saw_long_suffix_) long_suffix_pos_ = pos_;
      saw_long_suffix_ = true;
      ++pos_;
    }
    if (pos_ < text_.size() && (IsIdentChar(text_[pos_]) || text_[pos_] == '.')) {
      return Malformed(start, "not a plain decimal integer");
    }
    return v;
  }

  Status ParseBool() {
    for (auto [word, value] : {std::pair<std::string_view, bool>{"True", true}, {"False", false}}) {
      if (text_.substr(pos_).starts_with(word) &&
          (pos_ + word.size() >= text_.size() || !IsIdentChar(text_[pos_ + word.size()]))) {
        pos_ += word.size();
        out_.fortran_order = value;
        return OkStatus();
      }
    }
    return Malformed(pos_, "fortran_order is not True or False");
  }

  Status ParseShape() {
    shape_pos_ = pos_;
    out_.shape.clear();
    if (pos_ >= text_.size() || text_[pos_] != '(') return Malformed(pos_, "shape is not a tuple");
    ++pos_;
    bool comma = false;
    while (true) {
      SkipSpace();
      if (pos_ < text_.size() && text_[pos_] == ')') {
        if (out_.shape.size() == 1 && !comma) {
          return Malformed(shape_pos_, "shape is a parenthesized int, not a tuple (a 1-tuple needs a comma)");
        }
        ++pos_;
        return OkStatus();
      }
      if (out_.shape.size() >= limits_.max_rank) {
        return Fail(ErrorCode::kLimitExceeded, pos_, "max_rank (" + Num(limits_.max_rank) + ") exceeded by the shape");
      }
      CKG_ASSIGN_OR_RETURN(uint64_t dim, ParseUInt());
      out_.shape.push_back(dim);
      SkipSpace();
      comma = pos_ < text_.size() && text_[pos_] == ',';
      if (comma) {
        ++pos_;
      } else if (pos_ >= text_.size() || text_[pos_] != ')') {
        return Malformed(pos_, "expected ',' or ')' in the shape");
      }
    }
  }

  // ParseStrings reads a string literal and any that follow it (Python
  // joins adjacent string literals).
  Result<std::string> ParseStrings() {
    CKG_ASSIGN_OR_RETURN(std::string out, ParseString());
    while (true) {
      const size_t before = pos_;
      SkipSpace();
      if (!AtString()) {
        pos_ = before;
        return out;
      }
      CKG_ASSIGN_OR_RETURN(std::string more, ParseString());
      out += more;
    }
  }

  // ParseDescr reads the descr's literal into values_ (post-order nodes,
  // InterpretDescr's input), iteratively: strings, ints (a sign allowed),
  // True/False, None, and lists/tuples nested up to max_descr_depth.
  Status ParseDescr() {
    descr_pos_ = pos_;
    values_.clear();
    out_.structured = pos_ < text_.size() && (text_[pos_] == '[' || text_[pos_] == '(');
    enum class State : uint8_t { kAfterOpen, kAfterComma, kAfterValue };
    struct Frame {
      char closer;
      size_t open_pos;
      std::vector<uint32_t> items;
      bool comma = false;  // a comma was seen (a parenthesized value with one is a tuple)
    };
    std::vector<Frame> frames;
    State state = State::kAfterOpen;
    auto add = [&](DescrValue v) -> Status {
      if (values_.size() >= kMaxDescrValues) {
        return Fail(ErrorCode::kLimitExceeded, pos_, "the descr has more than " + Num(kMaxDescrValues) + " values");
      }
      values_.push_back(std::move(v));
      if (!frames.empty()) frames.back().items.push_back(static_cast<uint32_t>(values_.size() - 1));
      state = State::kAfterValue;
      return OkStatus();
    };
    while (true) {
      if (!frames.empty()) SkipSpace();
      if (pos_ >= text_.size()) return Malformed(descr_pos_, "unterminated descr");
      const char c = text_[pos_];
      if (state != State::kAfterValue && (c == '[' || c == '(')) {
        if (frames.size() >= limits_.max_descr_depth) {
          return Fail(ErrorCode::kLimitExceeded, pos_,
                      "max_descr_depth (" + Num(limits_.max_descr_depth) + ") exceeded by the descr");
        }
        frames.push_back(Frame{c == '[' ? ']' : ')', pos_, {}, false});
        ++pos_;
        state = State::kAfterOpen;
      } else if (!frames.empty() && (c == ']' || c == ')')) {
        if (c != frames.back().closer) return Malformed(pos_, "mismatched bracket in the descr");
        if (state == State::kAfterComma && frames.back().items.empty()) return Malformed(pos_, "unexpected ','");
        ++pos_;
        Frame frame = std::move(frames.back());
        frames.pop_back();
        if (c == ')' && frame.items.size() == 1 && !frame.comma) {
          // (x) is x, not a tuple.
          if (!frames.empty()) frames.back().items.push_back(frame.items[0]);
          state = State::kAfterValue;
        } else {
          DescrValue v;
          v.kind = c == ']' ? DescrValue::Kind::kList : DescrValue::Kind::kTuple;
          v.items = std::move(frame.items);
          CKG_TRY(add(std::move(v)));
        }
      } else if (!frames.empty() && c == ',') {
        if (state != State::kAfterValue) return Malformed(pos_, "unexpected ',' in the descr");
        frames.back().comma = true;
        ++pos_;
        state = State::kAfterComma;
      } else if (state == State::kAfterValue) {
        return Malformed(pos_, "expected ',' or a closing bracket");
      } else if (AtString()) {
        DescrValue v;
        v.kind = DescrValue::Kind::kStr;
        CKG_ASSIGN_OR_RETURN(v.text, ParseStrings());
        CKG_TRY(add(std::move(v)));
      } else if (IsDigit(c) || c == '-' || c == '+') {
        const bool negative = c == '-';
        const size_t start = pos_;
        if (c == '-' || c == '+') {
          ++pos_;
          SkipSpace();
        }
        DescrValue v;
        v.kind = DescrValue::Kind::kInt;
        Result<uint64_t> n = ParseUInt();
        if (!n) return Malformed(start, "expected an integer");
        if (*n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          v.number = negative ? -static_cast<int64_t>(*n) : static_cast<int64_t>(*n);
        }
        CKG_TRY(add(std::move(v)));
      } else if (const std::optional<std::string_view> word = Word()) {
        DescrValue v;
        if (*word == "True" || *word == "False") {
          v.kind = DescrValue::Kind::kInt;
          v.is_bool = true;
          v.number = *word == "True" ? 1 : 0;
        } else if (*word != "None") {
          return Malformed(pos_, "unexpected name in the descr");
        }
        pos_ += word->size();
        CKG_TRY(add(std::move(v)));
      } else {
        return Malformed(pos_, "unexpected character in the descr");
      }
      if (frames.empty() && state == State::kAfterValue) break;
    }
    if (out_.structured) out_.descr = RawText(descr_pos_, pos_);
    else out_.descr = values_.back().text;
    return OkStatus();
  }

  // Word: the identifier at pos_, if any.
  std::optional<std::string_view> Word() const {
    size_t end = pos_;
    while (end < text_.size() && IsIdentChar(text_[end])) ++end;
    if (end == pos_ || IsDigit(text_[pos_])) return std::nullopt;
    return text_.substr(pos_, end - pos_);
  }

  // InterpretDescr works the dtype out (InterpretDescr of numpy_dtype.cc:
  // numpy's descr_to_dtype), once the whole dict has parsed, as numpy does.
  Status InterpretDescr() {
    const NumpyDtype d = ckptguard::InterpretDescr(values_);
    const bool literal_str = !out_.structured;
    const std::string& s = out_.descr;
    out_.structured = out_.structured || d.structured;
    out_.byte_order = literal_str && !s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=') ? s[0]
                                                                                                           : '=';
    if (out_.structured) out_.byte_order = '|';
    switch (d.holds) {
      case NumpyDtype::Holds::kObjects:
        out_.is_object = true;
        out_.kind = out_.structured ? 'V' : 'O';
        out_.item_size = out_.structured ? 0 : 8;
        return OkStatus();
      case NumpyDtype::Holds::kUnknown:
        out_.is_object = true;
        out_.object_unsure = true;
        out_.kind = 'V';
        out_.item_size = 0;
        return OkStatus();
      case NumpyDtype::Holds::kPlain:
        break;
    }
    out_.kind = d.kind;
    out_.item_size = d.item_size;
    const char order = out_.byte_order;
    const char kind = d.kind;
    const bool order_matters = !out_.structured && d.item_size > 1 &&
                               (kind == 'i' || kind == 'u' || kind == 'f' || kind == 'c' || kind == 'M' ||
                                kind == 'm' || kind == 'U');
    if (order_matters && (order == '=' || order == '|')) {
      out_.anomalies.push_back({"npy.native_byte_order", base_ + descr_pos_, "",
                                "descr " + py::ReprStr(s) +
                                    " does not say '<' or '>': its numbers depend on the reading machine"});
    }
    return OkStatus();
  }

  std::string_view text_;
  uint64_t base_;
  bool utf8_;
  bool allow_long_suffix_;
  const NpyLimits& limits_;
  NpyArray& out_;
  size_t pos_ = 0;
  size_t shape_pos_ = 0;
  size_t descr_pos_ = 0;
  std::vector<DescrValue> values_;      // the descr literal, post-order
  std::optional<size_t> duplicate_key_pos_;
  bool saw_long_suffix_ = false;
  size_t long_suffix_pos_ = 0;
};

}  // namespace

NpyLimits NpyLimits::Clamped() const {
  NpyLimits out = *this;
  out.max_header_len = std::min<uint64_t>(max_header_len, 1'000'000);
  out.max_rank = std::min<uint64_t>(max_rank, 1024);
  out.max_descr_depth = std::min<uint64_t>(max_descr_depth, 200);
  return out;
}

Result<NpyArray> ParseNpy(Bytes file, const NpyLimits& limits_in, uint64_t base_offset) {
  const NpyLimits limits = limits_in.Clamped();
  ByteCursor cursor(file, base_offset);
  NpyArray out;
  CKG_ASSIGN_OR_RETURN(Bytes magic, cursor.ReadBytes(kMagic.size()));
  if (AsStringView(magic) != kMagic) {
    return MakeError(ErrorCode::kMalformed, base_offset, "bad magic: not a .npy file");
  }
  const uint64_t version_offset = cursor.Offset();
  CKG_ASSIGN_OR_RETURN(out.major, cursor.ReadU8());
  CKG_ASSIGN_OR_RETURN(out.minor, cursor.ReadU8());
  if (out.minor != 0 || out.major < 1 || out.major > 3) {
    return MakeError(ErrorCode::kUnsupportedFormat, version_offset,
                     "format version " + Num(out.major) + "." + Num(out.minor) + " is not 1.0, 2.0 or 3.0");
  }
  const uint64_t length_offset = cursor.Offset();
  if (out.major == 1) {
    CKG_ASSIGN_OR_RETURN(out.header_len, cursor.ReadU16LE());
  } else {
    CKG_ASSIGN_OR_RETURN(out.header_len, cursor.ReadU32LE());
  }
  if (out.header_len > limits.max_header_len) {
    return MakeError(ErrorCode::kLimitExceeded, length_offset,
                     "max_header_len (" + Num(limits.max_header_len) + ") exceeded: the header declares " +
                         Num(out.header_len) + " bytes");
  }
  const uint64_t header_offset = cursor.Offset();
  Result<Bytes> header_bytes = cursor.ReadBytes(out.header_len);
  if (!header_bytes) {
    return MakeError(ErrorCode::kTruncated, header_offset,
                     "the header (" + Num(out.header_len) + " bytes) runs past the end of the file (" +
                         Num(cursor.Remaining()) + " bytes remain)");
  }
  out.data_offset = cursor.Offset();
  const std::string_view header = AsStringView(*header_bytes);
  const bool utf8 = out.major == 3;

  // Python refuses source text with NUL bytes; 3.0 headers are UTF-8.
  if (const size_t nul = header.find('\0'); nul != std::string_view::npos) {
    return MakeError(ErrorCode::kMalformed, header_offset + nul, "NUL byte in the header");
  }
  uint64_t num_chars = header.size();
  if (utf8) {
    if (std::optional<size_t> bad = py::Utf8Error(header, /*allow_surrogates=*/false)) {
      return MakeError(ErrorCode::kMalformed, header_offset + *bad, "the 3.0 header is not valid UTF-8");
    }
    num_chars = static_cast<uint64_t>(
        std::count_if(header.begin(), header.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
  }

  HeaderParser parser(header, header_offset, utf8, /*allow_long_suffix=*/out.major < 3, limits, out);
  CKG_TRY(parser.Parse());

  if (header.back() != '\n') {
    out.anomalies.push_back({"npy.header_no_newline", header_offset + header.size() - 1, "",
                             "the header does not end with a newline as numpy's writer ends it"});
  }
  if (num_chars > kNumpyMaxHeaderChars) {
    out.anomalies.push_back({"npy.large_header", length_offset, "",
                             "the header has " + Num(num_chars) +
                                 " characters; numpy.load refuses more than 10000 unless max_header_size is "
                                 "raised or allow_pickle=True"});
  }
  if (std::optional<uint64_t> at = parser.duplicate_key_offset()) {
    out.anomalies.push_back({"npy.duplicate_key", *at, "",
                             "a key of the header dict is given twice; numpy keeps the last one"});
  }
  if (out.object_unsure) {
    out.anomalies.push_back({"npy.unknown_dtype", parser.descr_offset(), "",
                             "numpy's dtype for descr " + py::ReprStr(out.descr) +
                                 " is not worked out: the data is read as a pickle in case it holds objects"});
  }
  if (parser.saw_long_suffix()) {
    out.anomalies.push_back({"npy.python2_header", parser.long_suffix_offset(), "",
                             "an 'L' suffix on an integer: written by Python 2; numpy rereads it with "
                             "_filter_header"});
  }
  if ((out.data_offset - base_offset) % kDataAlign != 0) {
    out.anomalies.push_back({"npy.unaligned_data", out.data_offset, "",
                             "the data starts " + Num(out.data_offset - base_offset) +
                                 " bytes into the .npy, not a multiple of 16 as numpy's writer aligns it"});
  }

  for (uint64_t dim : out.shape) {
    if (__builtin_mul_overflow(out.num_elements, dim, &out.num_elements)) {
      return MakeError(ErrorCode::kMalformed, parser.shape_offset(), "the product of the shape overflows 64 bits");
    }
  }
  const uint64_t remaining = cursor.Remaining();
  if (out.object_unsure) return out;  // read as a possible pickle by the caller
  if (out.is_object) {
    if (remaining == 0) {
      return MakeError(ErrorCode::kTruncated, out.data_offset, "object array without pickle data");
    }
    return out;
  }
  if (out.structured) return out;
  if (__builtin_mul_overflow(out.num_elements, out.item_size, &out.data_len)) {
    return MakeError(ErrorCode::kMalformed, parser.shape_offset(),
                     Num(out.num_elements) + " elements of " + Num(out.item_size) + " bytes overflow 64 bits");
  }
  if (remaining < out.data_len) {
    return MakeError(ErrorCode::kTruncated, out.data_offset,
                     "the array data needs " + Num(out.data_len) + " bytes, " + Num(remaining) + " remain");
  }
  if (remaining > out.data_len) {
    out.anomalies.push_back({"npy.trailing_data", out.data_offset + out.data_len, "",
                             Num(remaining - out.data_len) + " bytes after the array data (numpy.load ignores them)"});
  }
  return out;
}

Result<NumpyDtype> ParseDescrLiteral(std::string_view text) {
  NpyArray scratch;
  const NpyLimits limits = NpyLimits{}.Clamped();
  HeaderParser parser(text, 0, /*utf8=*/true, /*allow_long_suffix=*/false, limits, scratch);
  CKG_TRY(parser.ParseLiteralOnly());
  return InterpretDescr(parser.descr_values());
}

}  // namespace ckptguard

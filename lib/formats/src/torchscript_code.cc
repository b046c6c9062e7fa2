#include "torchscript_code.h"

#include <algorithm>
#include <optional>
#include <unordered_set>

namespace ckptguard {
namespace {

// Roots that are builtin modules in torch's SourceImporter (torch/csrc/jit/
// serialization/import_source.cpp): `torch` is BuiltinModule("aten"), `ops`
// gives BuiltinModule(<namespace>) per attribute. `aten` is no root there;
// it is kept as one so that a spelling torch may accept one day is caught.
constexpr std::string_view kModuleRoots[] = {"torch", "ops", "aten"};
// A receiver walk longer than this is reported without being followed.
constexpr size_t kMaxReceiverSteps = 256;
// Passes that find names assigned from module names (`t = torch`, `u = t`);
// code that still adds names after them counts every receiver as a module.
constexpr size_t kMaxAliasPasses = 8;
constexpr uint32_t kNoMatch = UINT32_MAX;

enum class Tok : uint8_t { kIdent, kDot, kString, kOpen, kClose, kComma, kAssign, kColon, kNewline, kOther };

struct Token {
  uint32_t begin = 0;
  uint32_t end = 0;
  uint32_t match = kNoMatch;  // kOpen/kClose: the index of the other bracket
  Tok kind = Tok::kOther;
};

bool IsBlank(char ch) { return ch == ' ' || ch == '\t' || ch == '\v' || ch == '\f' || ch == '\r'; }
bool IsDigit(char ch) { return ch >= '0' && ch <= '9'; }
bool IsHexDigit(char ch) { return IsDigit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
bool IsAlpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
bool IsIdentStart(char ch) { return IsAlpha(ch) || ch == '_'; }
bool IsIdentChar(char ch) { return IsIdentStart(ch) || IsDigit(ch); }

// NumberLen: how many bytes at `i` strtod reads as a number (torch's lexer
// tries a number first, except before '+', '-' or a letter), with the
// complex 'j' suffix; 0 when none.
size_t NumberLen(std::string_view s, size_t i) {
  const size_t n = s.size();
  size_t j = i;
  auto skip = [&](bool (*pred)(char)) {
    size_t count = 0;
    while (j < n && pred(s[j])) ++j, ++count;
    return count;
  };
  auto exponent = [&](char e1, char e2) {
    if (j < n && (s[j] == e1 || s[j] == e2)) {
      size_t k = j + 1;
      if (k < n && (s[k] == '+' || s[k] == '-')) ++k;
      if (k < n && IsDigit(s[k])) {
        j = k;
        skip(IsDigit);
      }
    }
  };
  if (s[j] == '0' && j + 2 < n && (s[j + 1] == 'x' || s[j + 1] == 'X') &&
      (IsHexDigit(s[j + 2]) || (s[j + 2] == '.' && j + 3 < n && IsHexDigit(s[j + 3])))) {
    j += 2;
    skip(IsHexDigit);
    if (j < n && s[j] == '.') {
      ++j;
      skip(IsHexDigit);
    }
    exponent('p', 'P');
  } else {
    size_t digits = skip(IsDigit);
    if (j < n && s[j] == '.') {
      ++j;
      digits += skip(IsDigit);
    }
    if (digits == 0) return 0;
    exponent('e', 'E');
  }
  if (j < n && s[j] == 'j') ++j;
  return j - i;
}

// StringLen: the length of the string literal at `i` as torch's lexer
// (SharedParserData::isString) reads it, quotes included; 0 when none.
size_t StringLen(std::string_view s, size_t i) {
  const char quote = s[i];
  auto quotes_at = [&](size_t at, size_t len) {
    if (at + len > s.size()) return false;
    for (size_t k = 0; k < len; ++k) {
      if (s[at + k] != quote) return false;
    }
    return true;
  };
  const size_t quote_len = quotes_at(i, 3) ? 3 : 1;
  size_t end = i + quote_len;
  while (end < s.size() && !quotes_at(end, quote_len)) {
    if (s[end] == '\n' && quote_len != 3) return 0;
    if (s[end] == '\\') ++end;
    ++end;
  }
  if (end >= s.size()) return 0;
  return end - i + quote_len;
}

// DecodeString: a string literal's value as torch's parseStringLiteral
// makes it; nullopt where torch raises (\x, \u, a bad octal escape).
std::optional<std::string> DecodeString(std::string_view literal) {
  const size_t quote_len = literal.size() >= 6 && literal[0] == literal[1] && literal[1] == literal[2] ? 3 : 1;
  const std::string_view body = literal.substr(quote_len, literal.size() - 2 * quote_len);
  std::string out;
  out.reserve(body.size());
  for (size_t pos = 0; pos < body.size(); ++pos) {
    if (body[pos] != '\\') {
      out.push_back(body[pos]);
      continue;
    }
    if (pos + 1 >= body.size()) return std::nullopt;
    const char e = body[pos + 1];
    switch (e) {
      case '\\': case '\'': case '"': case '\n': out.push_back(e); ++pos; continue;
      case 'a': out.push_back('\a'); ++pos; continue;
      case 'b': out.push_back('\b'); ++pos; continue;
      case 'f': out.push_back('\f'); ++pos; continue;
      case 'n': out.push_back('\n'); ++pos; continue;
      case 'v': out.push_back('\v'); ++pos; continue;
      case 't': out.push_back('\t'); ++pos; continue;
      default: break;
    }
    if (pos + 3 >= body.size()) return std::nullopt;
    unsigned value = 0;
    for (size_t k = 1; k <= 3; ++k) {
      const char d = body[pos + k];
      if (d < '0' || d > '7') return std::nullopt;
      value = value * 8 + static_cast<unsigned>(d - '0');
    }
    if (value >= 256) return std::nullopt;
    out.push_back(static_cast<char>(value));
    pos += 3;
  }
  return out;
}

// Lex splits `code` into tokens as torch's lexer (torch/csrc/jit/frontend/
// lexer.h) does for what matters here: blanks, comments (not "# type:",
// which torch lexes on) and backslash-newlines are skipped; a newline is a
// token only outside brackets (inside them torch reads on); brackets are
// matched with an explicit stack.
std::vector<Token> Lex(std::string_view code) {
  std::vector<Token> toks;
  std::vector<uint32_t> open;
  const size_t n = code.size();
  auto push = [&](size_t begin, size_t len, Tok kind) {
    toks.push_back(Token{static_cast<uint32_t>(begin), static_cast<uint32_t>(begin + len), kNoMatch, kind});
  };
  size_t i = 0;
  while (i < n) {
    const char ch = code[i];
    if (ch == '\n' || (ch == ';' && open.empty())) {
      if (open.empty() && (toks.empty() || toks.back().kind != Tok::kNewline)) push(i, 1, Tok::kNewline);
      ++i;
      continue;
    }
    if (IsBlank(ch)) {
      ++i;
      continue;
    }
    if (ch == '#') {
      if (code.substr(i).starts_with("# type:")) {
        push(i, 7, Tok::kOther);
        i += 7;
        continue;
      }
      while (i < n && code[i] != '\n') ++i;
      continue;
    }
    if (ch == '\\' && i + 1 < n && code[i + 1] == '\n') {
      i += 2;
      continue;
    }
    if (ch != '+' && ch != '-' && !IsAlpha(ch)) {
      if (const size_t len = NumberLen(code, i)) {
        push(i, len, Tok::kOther);
        i += len;
        continue;
      }
    }
    if (ch == '"' || ch == '\'') {
      const size_t len = StringLen(code, i);
      push(i, len == 0 ? 1 : len, len == 0 ? Tok::kOther : Tok::kString);
      i += len == 0 ? 1 : len;
      continue;
    }
    if (IsIdentStart(ch)) {
      size_t j = i + 1;
      while (j < n && IsIdentChar(code[j])) ++j;
      push(i, j - i, Tok::kIdent);
      i = j;
      continue;
    }
    const char next = i + 1 < n ? code[i + 1] : '\0';
    switch (ch) {
      case '.':
        if (code.substr(i).starts_with("...")) {
          push(i, 3, Tok::kOther);
          i += 3;
        } else {
          push(i, 1, Tok::kDot);
          ++i;
        }
        continue;
      case '(': case '[': case '{':
        open.push_back(static_cast<uint32_t>(toks.size()));
        push(i++, 1, Tok::kOpen);
        continue;
      case ')': case ']': case '}':
        push(i++, 1, Tok::kClose);
        if (!open.empty()) {
          toks.back().match = open.back();
          toks[open.back()].match = static_cast<uint32_t>(toks.size() - 1);
          open.pop_back();
        }
        continue;
      case ',':
        push(i++, 1, Tok::kComma);
        continue;
      case ':':
        push(i++, 1, Tok::kColon);
        continue;
      case '=':
        push(i, next == '=' ? 2 : 1, next == '=' ? Tok::kOther : Tok::kAssign);
        i += next == '=' ? 2 : 1;
        continue;
      default:
        break;
    }
    // Operators that end in '=' (+=, <=, **=, >>=, ...) are one token, so
    // that their '=' is no assignment.
    size_t len = 1;
    if ((ch == '*' || ch == '/' || ch == '<' || ch == '>') && next == ch) len = 2;
    if (i + len < n && code[i + len] == '=' && std::string_view("!<>+-*/%&|^@").find(ch) != std::string_view::npos) {
      ++len;
    }
    push(i, len, Tok::kOther);
    i += len;
  }
  return toks;
}

class Finder {
 public:
  Finder(std::string_view code, std::vector<Token> toks) : code_(code), toks_(std::move(toks)) {
    for (std::string_view root : kModuleRoots) modules_.insert(root);
  }

  std::string_view Text(size_t k) const { return code_.substr(toks_[k].begin, toks_[k].end - toks_[k].begin); }
  bool Is(size_t k, Tok kind) const { return k < toks_.size() && toks_[k].kind == kind; }

  // IsModuleRef: token k names a module value: a module name (not an
  // attribute) whose dotted chain is not called (`torch`, `torch.autograd`,
  // `ops.aten`, not `torch.add(...)`, whose value is a result).
  bool IsModuleRef(size_t k) const {
    if (!Is(k, Tok::kIdent) || (k > 0 && Is(k - 1, Tok::kDot)) || !modules_.contains(Text(k))) return false;
    size_t j = k;
    while (Is(j + 1, Tok::kDot) && Is(j + 2, Tok::kIdent)) j += 2;
    return !Is(j + 1, Tok::kOpen);
  }

  // FindAliases adds to modules_ the names assigned a module value, until
  // a pass adds none (or, after kMaxAliasPasses, counts every name as one).
  Status FindAliases(Budget* budget) {
    for (size_t pass = 0; pass < kMaxAliasPasses; ++pass) {
      if (budget != nullptr) CKG_TRY(budget->Charge(BudgetKind::kReadBytes, code_.size(), 0, "", "TorchScript aliases"));
      if (!AliasPass()) return OkStatus();
    }
    every_name_ = true;
    return OkStatus();
  }

  std::vector<FileBuiltinUse> Find() {
    refs_.assign(toks_.size() + 1, 0);
    for (size_t k = 0; k < toks_.size(); ++k) refs_[k + 1] = refs_[k] + (IsModuleRef(k) ? 1 : 0);
    std::vector<FileBuiltinUse> uses;
    for (size_t i = 0; i < toks_.size() && uses.size() < kMaxFileBuiltinUses; ++i) {
      if (!Is(i, Tok::kIdent)) continue;
      const std::string_view text = Text(i);
      if (i >= 2 && Is(i - 1, Tok::kDot) && IsFileBuiltin(text)) {
        CheckAttribute(i, uses);
      } else if (text == "getattr" && !(i > 0 && Is(i - 1, Tok::kDot)) && Is(i + 1, Tok::kOpen)) {
        CheckGetattr(i, uses);
      }
    }
    return uses;
  }

 private:
  static bool IsFileBuiltin(std::string_view name) {
    return std::find(std::begin(kFileBuiltinNames), std::end(kFileBuiltinNames), name) != std::end(kFileBuiltinNames);
  }

  // RefsIn: module references among tokens [begin, end).
  bool RefsIn(size_t begin, size_t end) const { return every_name_ || refs_[end] > refs_[begin]; }

  // Spelling: tokens [begin, end) without blanks, for a message (printable
  // ASCII, cut short).
  std::string Spelling(size_t begin, size_t end) const {
    std::string out;
    for (size_t k = begin; k < end && out.size() < 64; ++k) {
      for (char ch : Text(k)) out.push_back(ch >= 0x20 && ch < 0x7f ? ch : '?');
    }
    if (out.size() > 64) out = out.substr(0, 61) + "...";
    return out;
  }

  // CheckAttribute: token i is `save`/`from_file` after a '.': walks back
  // over the receiver (a dotted chain, calls, subscripts, a parenthesised
  // expression) and reports the use when the receiver holds a module
  // reference.
  void CheckAttribute(size_t i, std::vector<FileBuiltinUse>& uses) const {
    size_t j = i - 2;
    size_t start = j;
    bool too_long = false;
    for (size_t steps = 0;; ++steps) {
      if (steps >= kMaxReceiverSteps) {
        too_long = true;
        break;
      }
      const Token& t = toks_[j];
      if (t.kind == Tok::kIdent) {
        start = j;
        if (j >= 2 && Is(j - 1, Tok::kDot)) {
          j -= 2;
          continue;
        }
        break;
      }
      if (t.kind == Tok::kClose && t.match != kNoMatch && t.match < j) {
        start = t.match;
        if (t.match >= 1 && (Is(t.match - 1, Tok::kIdent) || Is(t.match - 1, Tok::kClose))) {
          j = t.match - 1;  // a call or a subscript: its callee or container too
          continue;
        }
        break;
      }
      start = j;
      break;
    }
    // The chain right before the attribute (`torch` of `torch.save`,
    // `ops.aten` of `ops.aten.save`) continues into it, so IsModuleRef,
    // which reads chains whole, does not count its root: it is looked at here.
    size_t root = i - 2;
    while (Is(root, Tok::kIdent) && root >= 2 && Is(root - 1, Tok::kDot) && Is(root - 2, Tok::kIdent)) root -= 2;
    const bool tail_module = Is(root, Tok::kIdent) && !(root > 0 && Is(root - 1, Tok::kDot)) &&
                             (every_name_ || modules_.contains(Text(root)));
    if (!too_long && !tail_module && !RefsIn(start, i - 1)) return;
    uses.push_back({toks_[i].begin, std::string(Text(i)),
                    too_long ? "." + std::string(Text(i)) + " of a receiver too long to follow"
                             : Spelling(start, i + 1)});
  }

  // CheckGetattr: token i is `getattr` before '(': getattr(<module>,
  // "<file builtin>"), the name as adjacent string literals.
  void CheckGetattr(size_t i, std::vector<FileBuiltinUse>& uses) const {
    const size_t close = toks_[i + 1].match;
    if (close == kNoMatch) return;
    size_t comma = i + 2;
    while (comma < close && !Is(comma, Tok::kComma)) {
      comma = Is(comma, Tok::kOpen) && toks_[comma].match != kNoMatch && toks_[comma].match < close ? toks_[comma].match + 1
                                                                                                   : comma + 1;
    }
    if (comma >= close || !RefsIn(i + 2, comma)) return;
    std::string name;
    size_t k = comma + 1;
    for (; k < close && Is(k, Tok::kString); ++k) {
      std::optional<std::string> value = DecodeString(Text(k));
      if (!value) return;
      name += *value;
      if (name.size() > 16) return;
    }
    if (k == comma + 1 || (k != close && !Is(k, Tok::kComma)) || !IsFileBuiltin(name)) return;
    uses.push_back({toks_[comma + 1].begin, name, "getattr(" + Spelling(i + 2, comma) + ", \"" + name + "\")"});
  }

  // AliasPass: one pass over the statements; true when it named a new
  // module alias.
  bool AliasPass() {
    bool added = false;
    size_t s = 0;
    while (s < toks_.size()) {
      size_t e = s;
      while (e < toks_.size() && !Is(e, Tok::kNewline)) ++e;
      added |= AliasStatement(s, e);
      s = e + 1;
    }
    return added;
  }

  // AliasStatement: tokens [s, e) are one statement; when it assigns a
  // module value (`t = torch`, `a = b = (ops.aten)`, `t = getattr(torch,
  // "autograd")`), its target names become module names.
  bool AliasStatement(size_t s, size_t e) {
    std::vector<size_t> assigns;  // top-level '=' tokens
    for (size_t k = s; k < e;) {
      if (Is(k, Tok::kAssign)) assigns.push_back(k);
      k = Is(k, Tok::kOpen) && toks_[k].match != kNoMatch && toks_[k].match < e ? toks_[k].match + 1 : k + 1;
    }
    if (assigns.empty()) return false;
    bool module_value = every_name_;
    for (size_t k = assigns.back() + 1; k < e && !module_value; ++k) module_value = IsModuleRef(k);
    if (!module_value) return false;
    bool added = false;
    size_t begin = s;
    for (size_t a : assigns) {
      bool annotation = false;
      for (size_t k = begin; k < a; ++k) {
        if (Is(k, Tok::kColon)) annotation = true;
        if (annotation || !Is(k, Tok::kIdent) || (k > 0 && Is(k - 1, Tok::kDot)) || Is(k + 1, Tok::kDot) ||
            Is(k + 1, Tok::kOpen)) {
          continue;
        }
        added |= modules_.insert(Text(k)).second;
      }
      begin = a + 1;
    }
    return added;
  }

  std::string_view code_;
  std::vector<Token> toks_;
  std::unordered_set<std::string_view> modules_;  // names of builtin modules and their aliases
  bool every_name_ = false;                       // aliases not settled: every receiver counts
  std::vector<uint32_t> refs_;                    // refs_[k]: module references among tokens [0, k)
};

}  // namespace

bool IsFileBuiltinOperator(std::string_view name) {
  return std::find(std::begin(kFileBuiltinOperators), std::end(kFileBuiltinOperators), name) !=
         std::end(kFileBuiltinOperators);
}

Result<std::vector<FileBuiltinUse>> FindFileBuiltins(std::string_view code, uint64_t max_code_len, Budget* budget) {
  max_code_len = std::min<uint64_t>(max_code_len, uint64_t{1} << 30);
  if (code.size() > max_code_len) {
    Error error = MakeError(ErrorCode::kLimitExceeded, 0,
                            "TorchScript code of " + std::to_string(code.size()) +
                                " bytes is longer than max_torchscript_code_len (" + std::to_string(max_code_len) + ")")
                      .error();
    error.limit = "max_torchscript_code_len";
    return std::unexpected(std::move(error));
  }
  if (budget != nullptr) CKG_TRY(budget->Charge(BudgetKind::kReadBytes, code.size(), 0, "", "TorchScript code"));
  Finder finder(code, Lex(code));
  CKG_TRY(finder.FindAliases(budget));
  return finder.Find();
}

}  // namespace ckptguard

#include "ckptguard/allowlist.h"

#include <array>
#include <fstream>
#include <sstream>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

#include "builtin_rules.h"
#include "ckptguard/input_file.h"

namespace ckptguard {
namespace {

constexpr std::array<std::pair<AllowAction, std::string_view>, 28> kActions = {{
    {AllowAction::kRebuildTensor, "rebuild_tensor"},
    {AllowAction::kRebuildTensorV2, "rebuild_tensor_v2"},
    {AllowAction::kRebuildTensorV3, "rebuild_tensor_v3"},
    {AllowAction::kRebuildParameter, "rebuild_parameter"},
    {AllowAction::kRebuildParameterWithState, "rebuild_parameter_with_state"},
    {AllowAction::kRebuildQTensor, "rebuild_qtensor"},
    {AllowAction::kRebuildSparse, "rebuild_sparse"},
    {AllowAction::kRebuildMeta, "rebuild_meta"},
    {AllowAction::kRebuildNested, "rebuild_nested"},
    {AllowAction::kGetLayout, "get_layout"},
    {AllowAction::kRebuildFromNumpy, "rebuild_from_numpy"},
    {AllowAction::kStorageType, "storage_type"},
    {AllowAction::kDtype, "dtype"},
    {AllowAction::kTorchSize, "torch_size"},
    {AllowAction::kDevice, "device"},
    {AllowAction::kOrderedDict, "ordered_dict"},
    {AllowAction::kCounter, "counter"},
    {AllowAction::kCodecsEncode, "codecs_encode"},
    {AllowAction::kSet, "set"},
    {AllowAction::kFrozenSet, "frozenset"},
    {AllowAction::kComplex, "complex"},
    {AllowAction::kByteArray, "bytearray"},
    {AllowAction::kBytes, "bytes"},
    {AllowAction::kUninitializedTensor, "uninitialized_tensor"},
    {AllowAction::kIdentity, "identity"},
    {AllowAction::kConstant, "constant"},
    {AllowAction::kRecord, "record"},
    {AllowAction::kUnsupported, "unsupported"},
}};

std::string Where(std::string_view source, const toml::source_region& region) {
  return std::string(source) + ":" + std::to_string(region.begin.line);
}

}  // namespace

std::string_view AllowActionName(AllowAction action) {
  for (const auto& [a, name] : kActions) {
    if (a == action) return name;
  }
  return "unknown";
}

std::string_view Allowlist::CanonicalModule(std::string_view module) const {
  auto it = aliases_.find(module);
  return it == aliases_.end() ? module : std::string_view(it->second);
}

const AllowEntry* Allowlist::Find(std::string_view module, std::string_view name) const {
  std::string key(CanonicalModule(module));
  key += '.';
  key += name;
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : &it->second;
}

void Allowlist::Merge(const Allowlist& other, bool replace) {
  if (replace) {
    entries_.clear();
    aliases_.clear();
  }
  for (const auto& [k, v] : other.entries_) entries_[k] = v;
  for (const auto& [k, v] : other.aliases_) aliases_[k] = v;
}

Status CheckTomlText(std::string_view text, std::string_view source_name) {
  enum class State : uint8_t { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };
  State state = State::kCode;
  const size_t n = text.size();
  uint64_t line = 1;
  auto bad = [&](size_t at, const char* what) {
    return MakeError(ErrorCode::kMalformed, at, "line " + std::to_string(line) + ": " + what, std::string(source_name));
  };
  auto starts = [&](size_t at, std::string_view s) { return text.substr(at).starts_with(s); };
  // A closing """ or ''' may have up to two more quotes before it.
  auto close_multi = [&](size_t at, char q) {
    size_t end = at + 3;
    for (int extra = 0; extra < 2 && end < n && text[end] == q; ++extra) ++end;
    return end;
  };
  size_t i = starts(0, "\xEF\xBB\xBF") ? 3 : 0;  // a UTF-8 byte-order mark
  // The last character outside strings, spaces and tabs on this line ('\n' at
  // its start). A quote opens a string only where TOML allows one (a line's
  // start, or after = [ , { .); anywhere else it sits inside a bare word,
  // which toml++ keeps scanning (through any non-ASCII that follows) while it
  // builds its error, so such a quote is refused here.
  char prev = '\n';
  auto quote_allowed = [&] {
    return prev == '\n' || prev == '=' || prev == '[' || prev == ',' || prev == '{' || prev == '.';
  };
  while (i < n) {
    const char c = text[i];
    switch (state) {
      case State::kCode:
        if (static_cast<unsigned char>(c) >= 0x80) return bad(i, "a non-ASCII character outside a string or comment");
        if (c == '\n') {
          ++line;
          prev = '\n';
        }
        if (c == '#') state = State::kComment;
        if ((c == '"' || c == '\'') && !quote_allowed()) {
          return bad(i, "a quote inside a bare key or value (not TOML)");
        }
        if (c == '"') {
          state = starts(i, R"(""")") ? State::kMultiBasic : State::kBasic;
          if (state == State::kMultiBasic) i += 2;
        }
        if (c == '\'') {
          state = starts(i, "'''") ? State::kMultiLiteral : State::kLiteral;
          if (state == State::kMultiLiteral) i += 2;
        }
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '#') prev = c;
        ++i;
        break;
      case State::kComment:
      case State::kLiteral:
        if (c == '\n') {
          ++line;
          prev = '\n';
        }
        if (c == '\n' || (state == State::kLiteral && c == '\'')) state = State::kCode;
        ++i;
        break;
      case State::kMultiLiteral:
        if (starts(i, "'''")) {
          i = close_multi(i, '\'');
          state = State::kCode;
        } else {
          if (c == '\n') ++line;
          ++i;
        }
        break;
      case State::kBasic:
      case State::kMultiBasic:
        if (c == '\\') {
          // An escape, or (multi-line) a line-ending backslash and the
          // whitespace it trims: the first character after it that is not
          // ASCII whitespace is where toml++ asks "is this whitespace?".
          size_t j = i + 1;
          while (j < n && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r' || text[j] == '\n')) {
            if (text[j] == '\n') ++line;
            ++j;
          }
          if (j < n && static_cast<unsigned char>(text[j]) >= 0x80) {
            return bad(j, "a non-ASCII character after a backslash in a string");
          }
          i = j == i + 1 ? i + 2 : j;
        } else if (state == State::kBasic && (c == '"' || c == '\n')) {
          if (c == '\n') {
            ++line;
            prev = '\n';
          }
          state = State::kCode;
          ++i;
        } else if (state == State::kMultiBasic && starts(i, R"(""")")) {
          i = close_multi(i, '"');
          state = State::kCode;
        } else {
          if (c == '\n') ++line;
          ++i;
        }
        break;
    }
  }
  return OkStatus();
}

Result<Allowlist> ParseAllowlist(std::string_view text, std::string_view source_name, const AllowlistLimits& limits) {
  const std::string source(source_name);
  if (text.size() > limits.max_file_len) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_file_len (" + std::to_string(limits.max_file_len) + ") exceeded: rules file has " +
                         std::to_string(text.size()) + " bytes",
                     source);
  }
  CKG_TRY(CheckTomlText(text, source_name));
  toml::parse_result parsed = toml::parse(text, source_name);
  if (!parsed) {
    const toml::parse_error& err = parsed.error();
    return MakeError(ErrorCode::kMalformed, err.source().begin.line,
                     "line " + std::to_string(err.source().begin.line) + ": " + std::string(err.description()),
                     source);
  }
  const toml::table& root = parsed.table();
  Allowlist out;
  if (auto version = root["version"].value<int64_t>(); !version || *version != 1) {
    return MakeError(ErrorCode::kMalformed, 0, "expected version = 1", source);
  }
  if (const toml::node* mode = root.get("mode")) {
    const std::optional<std::string_view> m = mode->value<std::string_view>();
    if (!m || (*m != "extend" && *m != "replace")) {
      return MakeError(ErrorCode::kMalformed, mode->source().begin.line,
                       Where(source, mode->source()) + ": mode must be \"extend\" or \"replace\"", source);
    }
    out.replace_mode_ = *m == "replace";
  }
  if (const toml::node* aliases = root.get("module_alias")) {
    const toml::table* table = aliases->as_table();
    if (table == nullptr) {
      return MakeError(ErrorCode::kMalformed, aliases->source().begin.line,
                       Where(source, aliases->source()) + ": module_alias must be a table", source);
    }
    for (const auto& [key, value] : *table) {
      const std::optional<std::string_view> target = value.value<std::string_view>();
      if (!target) {
        return MakeError(ErrorCode::kMalformed, value.source().begin.line,
                         Where(source, value.source()) + ": alias of '" + std::string(key.str()) + "' must be a string",
                         source);
      }
      out.aliases_[std::string(key.str())] = std::string(*target);
    }
  }
  const toml::node* allow = root.get("allow");
  if (allow == nullptr) return out;
  const toml::array* entries = allow->as_array();
  if (entries == nullptr) {
    return MakeError(ErrorCode::kMalformed, allow->source().begin.line,
                     Where(source, allow->source()) + ": 'allow' must be an array of tables ([[allow]])", source);
  }
  if (entries->size() > limits.max_entries) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_entries (" + std::to_string(limits.max_entries) + ") exceeded: " +
                         std::to_string(entries->size()) + " [[allow]] entries",
                     source);
  }
  for (const toml::node& node : *entries) {
    const std::string where = Where(source, node.source());
    const toml::table* entry = node.as_table();
    if (entry == nullptr) return MakeError(ErrorCode::kMalformed, node.source().begin.line, where + ": not a table", source);
    const std::optional<std::string_view> global = (*entry)["global"].value<std::string_view>();
    const std::optional<std::string_view> action = (*entry)["action"].value<std::string_view>();
    if (!global || global->find('.') == std::string_view::npos || global->front() == '.' || global->back() == '.') {
      return MakeError(ErrorCode::kMalformed, node.source().begin.line,
                       where + ": 'global' must be a dotted name \"module.name\"", source);
    }
    AllowEntry out_entry;
    bool found = false;
    for (const auto& [a, name] : kActions) {
      if (action && *action == name) {
        out_entry.action = a;
        found = true;
      }
    }
    if (!found) {
      return MakeError(ErrorCode::kMalformed, node.source().begin.line,
                       where + ": unknown action '" + std::string(action.value_or("")) + "' for " + std::string(*global),
                       source);
    }
    if (const std::optional<std::string_view> dtype = (*entry)["dtype"].value<std::string_view>()) {
      out_entry.dtype = ParseDType(*dtype);
      if (!out_entry.dtype) {
        return MakeError(ErrorCode::kMalformed, node.source().begin.line,
                         where + ": unknown dtype '" + std::string(*dtype) + "'", source);
      }
    }
    if ((out_entry.action == AllowAction::kStorageType || out_entry.action == AllowAction::kDtype) &&
        !out_entry.dtype) {
      return MakeError(ErrorCode::kMalformed, node.source().begin.line,
                       where + ": action '" + std::string(*action) + "' needs a dtype", source);
    }
    out_entry.why = std::string((*entry)["why"].value_or(std::string_view()));
    // The module is everything before the last dot that precedes the
    // qualified name: for "torch._utils._rebuild_tensor_v2" the pickle says
    // module "torch._utils", name "_rebuild_tensor_v2". Keys are stored whole.
    out.entries_[std::string(*global)] = std::move(out_entry);
  }
  return out;
}

const Allowlist& BuiltinAllowlist() {
  static const Allowlist* const builtin = [] {
    Result<Allowlist> parsed = ParseAllowlist(kBuiltinAllowlistToml, "rules/allowlist.toml (built in)");
    return new Allowlist(parsed ? std::move(*parsed) : Allowlist());
  }();
  return *builtin;
}

Result<Allowlist> LoadAllowlistFile(const std::filesystem::path& path, const AllowlistLimits& limits) {
  // OpenInputFile refuses a FIFO or device before opening it: nothing blocks.
  Result<std::string> text = ReadInputFile(path.string(), limits.max_file_len);
  if (!text && text.error().code == ErrorCode::kLimitExceeded) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_file_len (" + std::to_string(limits.max_file_len) + ") exceeded: rules file is larger",
                     path.string());
  }
  if (!text) return std::unexpected(std::move(text).error());
  CKG_ASSIGN_OR_RETURN(Allowlist user, ParseAllowlist(*text, path.string(), limits));
  Allowlist out = BuiltinAllowlist();
  out.Merge(user, user.replace_mode());
  return out;
}

}  // namespace ckptguard

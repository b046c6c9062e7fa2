#include "ckptguard/callables.h"

#include <optional>
#include <utility>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

#include "builtin_rules.h"
#include "ckptguard/allowlist.h"

namespace ckptguard {
namespace {

constexpr std::pair<CallableKind, std::string_view> kKinds[] = {
    {CallableKind::kConstructor, "constructor"}, {CallableKind::kClass, "class"},
    {CallableKind::kGetattr, "getattr"},         {CallableKind::kPartial, "partial"},
    {CallableKind::kReconstructor, "reconstructor"}, {CallableKind::kNewObj, "newobj"},
    {CallableKind::kDefaultDict, "defaultdict"}, {CallableKind::kDecoder, "decoder"},
    {CallableKind::kBytesStream, "bytes_stream"}, {CallableKind::kFileOpener, "file_opener"},
    {CallableKind::kLoader, "loader"},           {CallableKind::kCaller, "caller"},
};

std::unexpected<Error> Malformed(std::string_view source, const toml::source_region& region, const std::string& what) {
  return MakeError(ErrorCode::kMalformed, region.begin.line,
                   std::string(source) + ":" + std::to_string(region.begin.line) + ": " + what, std::string(source));
}

constexpr std::string_view kBuiltinSource = "rules/callables.toml (built in)";

}  // namespace

std::string_view CallableKindName(CallableKind kind) {
  for (const auto& [k, name] : kKinds) {
    if (k == kind) return name;
  }
  return "unknown";
}

bool IsClassName(std::string_view dotted) {
  size_t at = dotted.rfind('.');
  at = at == std::string_view::npos ? 0 : at + 1;
  while (at < dotted.size() && dotted[at] == '_') ++at;
  return at < dotted.size() && dotted[at] >= 'A' && dotted[at] <= 'Z';
}

const CallableEntry* Callables::Find(std::string_view dotted) const {
  if (auto it = exact_.find(dotted); it != exact_.end()) return &it->second;
  const size_t dot = dotted.rfind('.');
  if (dot == std::string_view::npos || dot + 1 >= dotted.size() || !IsClassName(dotted)) return nullptr;
  if (auto it = class_wildcards_.find(dotted.substr(0, dot)); it != class_wildcards_.end()) return &it->second;
  return nullptr;
}

Result<Callables> ParseCallables(std::string_view text, std::string_view source) {
  CKG_TRY(CheckTomlText(text, source));
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    return MakeError(ErrorCode::kMalformed, parsed.error().source().begin.line,
                     std::string(source) + ": " + std::string(parsed.error().description()), std::string(source));
  }
  Callables out;
  const toml::array* entries = parsed.table()["callable"].as_array();
  if (entries == nullptr) return out;
  for (const toml::node& node : *entries) {
    const toml::table* t = node.as_table();
    if (t == nullptr) return Malformed(source, node.source(), "[[callable]] entry is not a table");
    const std::optional<std::string_view> global = (*t)["global"].value<std::string_view>();
    const std::optional<std::string_view> kind_name = (*t)["kind"].value<std::string_view>();
    const std::optional<std::string_view> why = (*t)["why"].value<std::string_view>();
    if (!global || !kind_name || !why) return Malformed(source, node.source(), "[[callable]] needs global, kind and why");
    std::optional<CallableKind> kind;
    for (const auto& [k, name] : kKinds) {
      if (name == *kind_name) kind = k;
    }
    if (!kind) return Malformed(source, node.source(), "unknown callable kind '" + std::string(*kind_name) + "'");
    CallableEntry entry{std::string(*global), *kind, std::string((*t)["decode"].value<std::string_view>().value_or("")),
                        std::string((*t)["input"].value<std::string_view>().value_or("")), std::string(*why)};
    if (const std::optional<std::string_view> setstate = (*t)["setstate"].value<std::string_view>()) {
      if (*setstate != "calls_attributes" || (kind != CallableKind::kClass && kind != CallableKind::kConstructor)) {
        return Malformed(source, node.source(),
                         entry.global + ": setstate is \"calls_attributes\", for classes and constructors only");
      }
      entry.setstate_calls_attributes = true;
    }
    if (kind == CallableKind::kDecoder && entry.decode.empty()) {
      return Malformed(source, node.source(), "decoder " + entry.global + " needs decode");
    }
    if (!entry.input.empty() && (kind != CallableKind::kLoader || (entry.input != "bytes" && entry.input != "stream"))) {
      return Malformed(source, node.source(), entry.global + ": input is \"bytes\" or \"stream\", for loaders only");
    }
    if (entry.global.ends_with(".*")) {
      if (kind != CallableKind::kClass) {
        return Malformed(source, node.source(), entry.global + ": only kind class may be a wildcard");
      }
      out.class_wildcards_.emplace(entry.global.substr(0, entry.global.size() - 2), entry);
    } else if (!out.exact_.emplace(entry.global, entry).second) {
      return Malformed(source, node.source(), "duplicate [[callable]] " + entry.global);
    }
  }
  return out;
}

const Callables& BuiltinCallables() {
  static const Callables* const callables = [] {
    Result<Callables> parsed = ParseCallables(kBuiltinCallablesToml, kBuiltinSource);
    return new Callables(parsed ? std::move(*parsed) : Callables());
  }();
  return *callables;
}

Status CheckBuiltinCallables() {
  CKG_ASSIGN_OR_RETURN(Callables parsed, ParseCallables(kBuiltinCallablesToml, kBuiltinSource));
  (void)parsed;
  return OkStatus();
}

}  // namespace ckptguard

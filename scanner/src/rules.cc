#include "ckptguard/scanner/rules.h"

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <set>
#include <sstream>
#include <utility>

#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

#include "builtin_denylist.h"
#include "builtin_names.h"
#include "ckptguard/input_file.h"

namespace ckptguard::scanner {
namespace {

// Limits on one rules file (the same as the allowlist's, AllowlistLimits).
constexpr uint64_t kMaxRulesFileLen = uint64_t{4} << 20;  // 4 MiB; the built-in file is ~25 KiB
constexpr uint64_t kMaxRulesPerFile = 100'000;
// Memory budget of the compiled pattern set (RE2 Options::max_mem): the
// built-in rules need well under 1 MiB; this leaves room for large user files.
constexpr int64_t kMaxPatternMem = int64_t{256} << 20;
// A global whose "module.name" has more components or bytes than this is not
// checked name by name (the candidates grow quadratically with components)
// but denied outright with CKG-F041. Real module paths have under ten
// components and under 200 bytes.
constexpr size_t kMaxGlobalComponents = 16;
constexpr size_t kMaxGlobalLen = 512;

constexpr std::string_view kPolicyRuleId = "CKG-P001";
constexpr std::string_view kOverlongRuleId = "CKG-F041";

// RuleKind is the `kind` field of a [[rule]] entry.
enum class RuleKind : uint8_t { kGlobal, kFixed };

RE2::Options PatternOptions() {
  RE2::Options options;
  // Names are matched byte by byte: with UTF-8 matching `.` would not match
  // an invalid byte and "os.system\xff" would slip past 'os(?:\..*)?'.
  options.set_encoding(RE2::Options::EncodingLatin1);
  options.set_dot_nl(true);
  options.set_log_errors(false);
  options.set_max_mem(kMaxPatternMem);
  return options;
}

// Matcher is the compiled form of the global rules: one RE2::Set over all
// their patterns, anchored at both ends. Shared (immutable once compiled)
// between copies of a RuleSet. The built-in set is compiled when the first
// global reaches the patterns (most files name only allowlisted globals, and
// a start-up that compiles ~200 patterns costs more than scanning a small
// file); a user's rules file is compiled when it is added, so that its errors
// are reported then.
struct Matcher {
  std::vector<std::string> patterns;  // set index -> pattern
  std::vector<size_t> rule_index;     // set index -> index into RuleSet rules
  mutable std::once_flag once;
  mutable std::unique_ptr<RE2::Set> set;  // null when compiling failed
  mutable std::optional<Error> error;

  // Compiled returns the set, compiling it on first use (thread-safe).
  const RE2::Set* Compiled(std::string_view source) const {
    std::call_once(once, [&] {
      auto compiled = std::make_unique<RE2::Set>(PatternOptions(), RE2::ANCHOR_BOTH);
      for (size_t k = 0; k < patterns.size(); ++k) {
        std::string message;
        if (compiled->Add(patterns[k], &message) < 0) {
          error = MakeError(ErrorCode::kMalformed, 0, "pattern " + std::to_string(k) + " refused by RE2: " + message,
                            std::string(source)).error();
          return;
        }
      }
      if (!compiled->Compile()) {
        error = MakeError(ErrorCode::kLimitExceeded, 0,
                          "max_mem (" + std::to_string(kMaxPatternMem) + " bytes) exceeded compiling " +
                              std::to_string(patterns.size()) + " rule patterns",
                          std::string(source)).error();
        return;
      }
      set = std::move(compiled);
    });
    return set.get();
  }
};

std::string Where(std::string_view source, const toml::source_region& region) {
  return std::string(source) + ":" + std::to_string(region.begin.line);
}

std::unexpected<Error> Malformed(std::string_view source, const toml::source_region& region, const std::string& what) {
  return MakeError(ErrorCode::kMalformed, region.begin.line, Where(source, region) + ": " + what, std::string(source));
}

// TableArray is `root`'s [[name]] entries: an array of at most
// kMaxRulesPerFile tables (nullptr when the file has none).
Result<const toml::array*> TableArray(const toml::table& root, std::string_view name, std::string_view source) {
  const toml::node* node = root.get(name);
  if (node == nullptr) return nullptr;
  const toml::array* entries = node->as_array();
  const std::string n(name);
  if (entries == nullptr) return Malformed(source, node->source(), "'" + n + "' must be an array of tables ([[" + n + "]])");
  if (entries->size() > kMaxRulesPerFile) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_rules (" + std::to_string(kMaxRulesPerFile) + ") exceeded: " +
                         std::to_string(entries->size()) + " [[" + n + "]] entries",
                     std::string(source));
  }
  return entries;
}

// TableEntry is one entry of a TableArray: a table with no field but `fields`.
Result<const toml::table*> TableEntry(const toml::node& node, std::string_view name, std::string_view source,
                                      std::span<const std::string_view> fields) {
  const toml::table* entry = node.as_table();
  if (entry == nullptr) return Malformed(source, node.source(), "[[" + std::string(name) + "]] entry is not a table");
  for (const auto& [key, value] : *entry) {
    if (std::find(fields.begin(), fields.end(), key.str()) == fields.end()) {
      return Malformed(source, value.source(),
                       "unknown field '" + std::string(key.str()) + "' in [[" + std::string(name) + "]]");
    }
  }
  return entry;
}

// StringField is an entry's field `name`: nullopt when absent, an error
// when it is not a string.
Result<std::optional<std::string>> StringField(const toml::table& entry, std::string_view name, std::string_view source) {
  const toml::node* n = entry.get(name);
  if (n == nullptr) return std::optional<std::string>();
  const std::optional<std::string_view> s = n->value<std::string_view>();
  if (!s) return Malformed(source, n->source(), "'" + std::string(name) + "' must be a string");
  return std::optional<std::string>(std::string(*s));
}

// ParseWaivers reads the [[waive]] entries of a rules file: rule (an
// fnmatch pattern of rule ids), path (optional glob), reason (required: a
// waiver nobody can explain later is a hole in the gate).
Result<std::vector<Waiver>> ParseWaivers(std::string_view text, std::string_view source) {
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) return std::vector<Waiver>{};  // ParseRules reported it
  std::vector<Waiver> out;
  CKG_ASSIGN_OR_RETURN(const toml::array* entries, TableArray(parsed.table(), "waive", source));
  if (entries == nullptr) return out;
  static constexpr std::array<std::string_view, 3> kFields = {"rule", "path", "reason"};
  for (const toml::node& node : *entries) {
    CKG_ASSIGN_OR_RETURN(const toml::table* entry, TableEntry(node, "waive", source, kFields));
    Waiver w;
    for (const auto& [name, field] : {std::pair<std::string_view, std::string*>{"rule", &w.rule},
                                      {"path", &w.path}, {"reason", &w.reason}}) {
      CKG_ASSIGN_OR_RETURN(std::optional<std::string> value, StringField(*entry, name, source));
      if (value) *field = std::move(*value);
    }
    if (w.rule.empty()) return Malformed(source, node.source(), "[[waive]] without 'rule' (a rule id or pattern: CKG-F080, 'CKG-A*')");
    if (w.reason.empty()) {
      return Malformed(source, node.source(), "[[waive]] of " + w.rule + " without 'reason' (why the finding is accepted)");
    }
    w.source = std::string(source) + ":" + std::to_string(node.source().begin.line);
    out.push_back(std::move(w));
  }
  return out;
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  if (!((id[0] >= 'A' && id[0] <= 'Z') || (id[0] >= 'a' && id[0] <= 'z'))) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
  });
}

struct ParsedRule {
  Rule rule;
  RuleKind kind = RuleKind::kGlobal;
  uint64_t line = 0;  // of its [[rule]] header, for errors found later (duplicate ids)
};

// ParseRules reads the [[rule]] entries of `text`. With `check_patterns`,
// each global rule's pattern is compiled once here to report RE2's error with
// the file and line (the built-in file is checked so by rules_test, not at
// every start).
Result<std::vector<ParsedRule>> ParseRules(std::string_view text, std::string_view source, bool check_patterns = true) {
  const std::string src(source);
  if (text.size() > kMaxRulesFileLen) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_file_len (" + std::to_string(kMaxRulesFileLen) + ") exceeded: rules file has " +
                         std::to_string(text.size()) + " bytes",
                     src);
  }
  if (Status ok = CheckTomlText(text, source); !ok) {
    // Its detail starts "line N: "; errors here say "file:N: ".
    const std::string& detail = ok.error().detail;
    const size_t colon = detail.find(": ");
    return MakeError(ErrorCode::kMalformed, ok.error().offset, src + ":" + detail.substr(5, colon - 5) + detail.substr(colon),
                     src);
  }
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const toml::parse_error& err = parsed.error();
    return MakeError(ErrorCode::kMalformed, err.source().begin.line,
                     src + ":" + std::to_string(err.source().begin.line) + ": " + std::string(err.description()), src);
  }
  const toml::table& root = parsed.table();
  if (auto version = root["version"].value<int64_t>(); !version || *version != 1) {
    return MakeError(ErrorCode::kMalformed, 0, src + ": expected version = 1", src);
  }
  std::vector<ParsedRule> out;
  CKG_ASSIGN_OR_RETURN(const toml::array* entries, TableArray(root, "rule", source));
  if (entries == nullptr) return out;
  static constexpr std::array<std::string_view, 6> kFields = {"id",      "kind",        "severity",
                                                              "pattern", "description", "reference"};
  const RE2::Options options = PatternOptions();
  out.reserve(entries->size());
  for (const toml::node& node : *entries) {
    CKG_ASSIGN_OR_RETURN(const toml::table* entry, TableEntry(node, "rule", source, kFields));
    // Every field present must be a string; missing ones are reported by name.
    auto field = [&](std::string_view name) { return StringField(*entry, name, source); };
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> id, field("id"));
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> kind, field("kind"));
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> severity, field("severity"));
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> pattern, field("pattern"));
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> description, field("description"));
    CKG_ASSIGN_OR_RETURN(std::optional<std::string> reference, field("reference"));
    if (!id) return Malformed(source, node.source(), "[[rule]] without 'id'");
    if (!ValidId(*id)) {
      return Malformed(source, node.source(),
                       "rule id '" + *id + "' must be 1-64 letters, digits, '-', '_' or '.', starting with a letter");
    }
    const std::string what = "rule " + *id;
    ParsedRule parsed_rule;
    parsed_rule.rule.id = *id;
    parsed_rule.line = node.source().begin.line;
    if (kind && *kind == "fixed") {
      parsed_rule.kind = RuleKind::kFixed;
    } else if (kind && *kind != "global") {
      return Malformed(source, node.source(), what + ": unknown kind '" + *kind + "' (global or fixed)");
    }
    if (!severity) return Malformed(source, node.source(), what + ": missing 'severity'");
    const std::optional<Severity> sev = ParseSeverity(*severity);
    if (!sev) {
      return Malformed(source, node.source(),
                       what + ": unknown severity '" + *severity + "' (dangerous, suspicious or info)");
    }
    parsed_rule.rule.severity = *sev;
    if (!description || description->empty()) return Malformed(source, node.source(), what + ": missing 'description'");
    if (!reference || reference->empty()) return Malformed(source, node.source(), what + ": missing 'reference'");
    parsed_rule.rule.description = std::move(*description);
    parsed_rule.rule.reference = std::move(*reference);
    if (parsed_rule.kind == RuleKind::kFixed) {
      if (pattern && !pattern->empty()) {
        return Malformed(source, node.source(), what + ": a fixed rule has pattern = \"\"");
      }
    } else {
      if (!pattern || pattern->empty()) return Malformed(source, node.source(), what + ": missing 'pattern'");
      if (check_patterns) {
        const RE2 re(*pattern, options);
        if (!re.ok()) {
          return Malformed(source, node.source(), what + ": bad pattern '" + *pattern + "': " + re.error());
        }
      }
      parsed_rule.rule.pattern = std::move(*pattern);
    }
    out.push_back(std::move(parsed_rule));
  }
  return out;
}

// SplitDots splits "a.b.c" into its components (empty ones kept).
std::vector<std::string_view> SplitDots(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t dot = s.find('.', start);
    if (dot == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, dot - start));
    start = dot + 1;
  }
}

std::string Join(const std::vector<std::string_view>& parts, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (i != begin) out += '.';
    out += parts[i];
  }
  return out;
}

// AddCandidates appends the dotted names checked for `module` + `name`:
// every prefix of the module, the module with every prefix of the name, and
// every run of consecutive name components on its own (protocol 4 resolves
// the name attribute by attribute, and an attribute may be any module the
// previous object imported).
void AddCandidates(std::string_view module, std::string_view name, std::vector<std::string>& out) {
  if (!module.empty()) {
    const std::vector<std::string_view> mod = SplitDots(module);
    for (size_t i = 1; i <= mod.size(); ++i) out.push_back(Join(mod, 0, i));
  }
  const std::vector<std::string_view> parts = SplitDots(name);
  std::string prefix(module);
  bool first = module.empty();
  for (std::string_view part : parts) {
    if (!first) prefix += '.';
    first = false;
    prefix += part;
    out.push_back(prefix);
  }
  for (size_t begin = 0; begin < parts.size(); ++begin) {
    for (size_t end = begin + 1; end <= parts.size(); ++end) out.push_back(Join(parts, begin, end));
  }
}

// Names is the parsed form of rules/pickle_names.toml.
struct Names {
  std::map<std::string, std::string, std::less<>> compat_module;      // _compat_pickle.IMPORT_MAPPING
  std::map<std::string, std::string, std::less<>> compat_name;        // NAME_MAPPING, dotted -> dotted
  std::map<std::string, std::string, std::less<>> module_attr;        // "_os" -> "os"
};

// ParseNames reads the built-in name-resolution file. It is part of the
// binary: a broken one leaves its tables empty and fails
// rules_test (which checks they parse).
Status ParseNames(std::string_view text, std::string_view source, Names& out) {
  if (Status ok = CheckTomlText(text, source); !ok) return ok;
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    return MakeError(ErrorCode::kMalformed, parsed.error().source().begin.line,
                     std::string(source) + ": " + std::string(parsed.error().description()), std::string(source));
  }
  const toml::table& root = parsed.table();
  auto string_map = [&](std::string_view key, std::map<std::string, std::string, std::less<>>& into) -> Status {
    const toml::table* t = root[key].as_table();
    if (t == nullptr) return OkStatus();
    for (const auto& [k, v] : *t) {
      const std::optional<std::string_view> value = v.value<std::string_view>();
      if (!value) return Malformed(source, v.source(), std::string(key) + " values must be strings");
      into.emplace(std::string(k.str()), std::string(*value));
    }
    return OkStatus();
  };
  CKG_TRY(string_map("compat_module", out.compat_module));
  CKG_TRY(string_map("module_attr", out.module_attr));
  if (const toml::array* names = root["compat_name"].as_array()) {
    for (const toml::node& node : *names) {
      const toml::table* t = node.as_table();
      if (t == nullptr) return Malformed(source, node.source(), "[[compat_name]] entry is not a table");
      const std::optional<std::string_view> from = (*t)["from"].value<std::string_view>();
      const std::optional<std::string_view> to = (*t)["to"].value<std::string_view>();
      if (!from || !to) return Malformed(source, node.source(), "[[compat_name]] needs from and to");
      out.compat_name.emplace(std::string(*from), std::string(*to));
    }
  }
  return OkStatus();
}

const Names& BuiltinNames() {
  static const Names* const names = [] {
    auto* out = new Names();
    (void)ParseNames(kBuiltinPickleNamesToml, "rules/pickle_names.toml (built in)", *out);
    return out;
  }();
  return *names;
}

}  // namespace

Status CheckBuiltinNames() {
  Names names;
  CKG_TRY(CheckBuiltinCallables());
  return ParseNames(kBuiltinPickleNamesToml, "rules/pickle_names.toml (built in)", names);
}

struct RuleSet::Impl {
  Impl() = default;
  // A copy carries the denylist parsed (a once_flag cannot be copied).
  Impl(const Impl& other)
      : rules((other.Loaded(), other.rules)),
        kinds(other.kinds),
        by_id(other.by_id),
        allowlist(other.allowlist),
        waivers(other.waivers),
        allowed(other.allowed),
        strict(other.strict),
        matcher(other.matcher),
        matcher_source(other.matcher_source) {}
  Impl& operator=(const Impl&) = delete;

  // The built-in denylist is parsed on first need (Loaded): a file whose
  // globals are all on the allowlist, and a pickle naming none, never need
  // it. Everything that reads rules, kinds, by_id or matcher calls Loaded
  // first; it is thread-safe (scan workers share the built-in set).
  mutable std::once_flag denylist_once;
  bool denylist_pending = false;
  const Impl& Loaded() const {
    if (denylist_pending) {
      std::call_once(denylist_once, [this] {
        Impl& self = const_cast<Impl&>(*this);
        Result<std::vector<ParsedRule>> parsed =
            ParseRules(kBuiltinDenylistToml, "rules/denylist.toml (built in)", /*check_patterns=*/false);
        // A broken built-in file leaves the denylist empty; rules_test fails on it.
        if (parsed) (void)self.AddParsed(std::move(*parsed), "rules/denylist.toml (built in)", /*lazy=*/true);
      });
    }
    return *this;
  }

  std::vector<Rule> rules;                  // file order: built-in first, then user files
  std::vector<RuleKind> kinds;              // parallel to rules
  std::map<std::string, size_t, std::less<>> by_id;
  Allowlist allowlist;
  std::vector<Waiver> waivers;                  // [[waive]] entries of the added files
  std::set<std::string, std::less<>> allowed;  // Allow()ed dotted names, as given
  bool strict = false;
  std::shared_ptr<const Matcher> matcher;   // compiled global rules; null when there are none

  std::string matcher_source;               // what the lazily compiled set is named after in errors

  // AddParsed appends `parsed` (refusing duplicate ids) and recompiles the
  // pattern set, at once or (`lazy`, the built-in file) on first use. On
  // failure nothing changes.
  Status AddParsed(std::vector<ParsedRule> parsed, std::string_view source, bool lazy = false) {
    std::set<std::string, std::less<>> seen;
    for (const ParsedRule& p : parsed) {
      if (by_id.contains(p.rule.id) || !seen.insert(p.rule.id).second) {
        return MakeError(ErrorCode::kMalformed, p.line,
                         std::string(source) + ":" + std::to_string(p.line) + ": duplicate rule id '" + p.rule.id +
                             "'" + (by_id.contains(p.rule.id) ? " (already loaded)" : ""),
                         std::string(source));
      }
    }
    std::vector<Rule> new_rules = rules;
    std::vector<RuleKind> new_kinds = kinds;
    for (ParsedRule& p : parsed) {
      new_rules.push_back(std::move(p.rule));
      new_kinds.push_back(p.kind);
    }
    CKG_ASSIGN_OR_RETURN(std::shared_ptr<const Matcher> new_matcher, Compile(new_rules, new_kinds, source, lazy));
    matcher_source = std::string(source);
    rules = std::move(new_rules);
    kinds = std::move(new_kinds);
    matcher = std::move(new_matcher);
    by_id.clear();
    for (size_t i = 0; i < rules.size(); ++i) by_id.emplace(rules[i].id, i);
    return OkStatus();
  }

  static Result<std::shared_ptr<const Matcher>> Compile(const std::vector<Rule>& all, const std::vector<RuleKind>& kinds,
                                                        std::string_view source, bool lazy) {
    auto out = std::make_shared<Matcher>();
    for (size_t i = 0; i < all.size(); ++i) {
      if (kinds[i] != RuleKind::kGlobal) continue;
      out->patterns.push_back(all[i].pattern);
      out->rule_index.push_back(i);
    }
    if (out->rule_index.empty()) return std::shared_ptr<const Matcher>();
    if (!lazy && out->Compiled(source) == nullptr) return std::unexpected(*out->error);
    return std::shared_ptr<const Matcher>(std::move(out));
  }

  // CheckMatcher compiles the pattern set now (rules_test: the built-in set,
  // otherwise compiled on first use, compiles).
  Status CheckMatcher() const {
    if (matcher && matcher->Compiled(matcher_source) == nullptr) return std::unexpected(*matcher->error);
    return OkStatus();
  }

  // FirstMatch returns the index (into rules) of the first global rule in
  // file order matching any candidate, and the candidate it matched (`full`
  // when it did, else the longest: "os.system" rather than "os"); npos when
  // none.
  std::pair<size_t, std::string> FirstMatch(const std::vector<std::string>& candidates, const std::string& full) const {
    size_t best = std::string::npos;
    std::string best_name;
    if (!matcher) return {best, best_name};
    std::vector<int> hits;
    const RE2::Set* set = matcher->Compiled(matcher_source);
    for (const std::string& candidate : candidates) {
      hits.clear();
      RE2::Set::ErrorInfo info{RE2::Set::kNoError};
      if (set == nullptr || !set->Match(candidate, &hits, &info)) {
        if (set != nullptr && info.kind == RE2::Set::kNoError) continue;
        // The DFA ran out of memory (or the set did not compile): match the
        // patterns one by one (slow, never wrong).
        hits.clear();
        const RE2::Options options = PatternOptions();
        for (size_t k = 0; k < matcher->rule_index.size(); ++k) {
          const RE2 re(matcher->patterns[k], options);
          if (RE2::FullMatch(candidate, re)) hits.push_back(static_cast<int>(k));
        }
      }
      for (int hit : hits) {
        const size_t index = matcher->rule_index[static_cast<size_t>(hit)];
        const bool better_name =
            index == best && best_name != full && (candidate == full || candidate.size() > best_name.size());
        if (index < best || better_name) {
          best = index;
          best_name = candidate;
        }
      }
    }
    return {best, best_name};
  }
};

RuleSet::RuleSet() : impl_(std::make_unique<Impl>()) {}
RuleSet::RuleSet(const RuleSet& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
RuleSet& RuleSet::operator=(const RuleSet& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
RuleSet::RuleSet(RuleSet&&) noexcept = default;
RuleSet& RuleSet::operator=(RuleSet&&) noexcept = default;
RuleSet::~RuleSet() = default;

const RuleSet& RuleSet::Builtin() {
  static const RuleSet* const builtin = [] {
    auto* out = new RuleSet();
    out->impl_->allowlist = BuiltinAllowlist();
    // The denylist is parsed on first need (Impl::Loaded); its patterns are
    // checked by CheckBuiltinRules (rules_test), not at every start, and
    // compiled when a global first reaches them.
    out->impl_->denylist_pending = true;
    return out;
  }();
  return *builtin;
}

Status RuleSet::AddRulesText(std::string_view text, std::string_view source) {
  CKG_ASSIGN_OR_RETURN(std::vector<ParsedRule> parsed, ParseRules(text, source));
  // [[allow]] entries (and module aliases) in the same file extend the
  // allowlist; ParseAllowlist ignores the [[rule]] tables.
  AllowlistLimits limits;
  limits.max_file_len = kMaxRulesFileLen;
  CKG_ASSIGN_OR_RETURN(Allowlist user_allow, ParseAllowlist(text, source, limits));
  CKG_ASSIGN_OR_RETURN(std::vector<Waiver> waivers, ParseWaivers(text, source));
  impl_->Loaded();
  CKG_TRY(impl_->AddParsed(std::move(parsed), source));
  impl_->allowlist.Merge(user_allow, user_allow.replace_mode());
  impl_->waivers.insert(impl_->waivers.end(), std::make_move_iterator(waivers.begin()),
                        std::make_move_iterator(waivers.end()));
  return OkStatus();
}

const std::vector<Waiver>& RuleSet::waivers() const { return impl_->waivers; }

Status RuleSet::AddRulesFile(const std::filesystem::path& path) {
  const std::string name = path.string();
  // OpenInputFile refuses a FIFO or device before opening it: nothing blocks.
  Result<std::string> text = ReadInputFile(name, kMaxRulesFileLen);
  if (!text && text.error().code == ErrorCode::kLimitExceeded) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_file_len (" + std::to_string(kMaxRulesFileLen) + ") exceeded: rules file is larger", name);
  }
  if (!text) return std::unexpected(std::move(text).error());
  return AddRulesText(*text, name);
}

void RuleSet::Allow(std::string_view dotted_global) {
  impl_->allowed.emplace(dotted_global);
  // "__builtin__.eval" also allows the canonical spelling "builtins.eval".
  for (const auto& [alias, canonical] : impl_->allowlist.module_aliases()) {
    if (dotted_global.size() > alias.size() && dotted_global.starts_with(alias) && dotted_global[alias.size()] == '.') {
      impl_->allowed.emplace(canonical + std::string(dotted_global.substr(alias.size())));
    }
  }
}

void RuleSet::SetStrict(bool strict) { impl_->strict = strict; }
bool RuleSet::strict() const { return impl_->strict; }

GlobalClass RuleSet::ClassifyGlobal(std::string_view module, std::string_view name) const {
  const Impl& impl = *impl_;
  const std::string_view canonical = impl.allowlist.CanonicalModule(module);
  auto dotted = [name](std::string_view mod) {
    std::string out(mod);
    if (!out.empty()) out += '.';
    out += name;
    return out;
  };
  const std::string full = dotted(canonical);
  GlobalClass out;
  // The allowlist and --allow win over the denylist: both are explicit
  // decisions about this exact name.
  if (impl.allowlist.Find(module, name) != nullptr || impl.allowed.contains(full) ||
      impl.allowed.contains(dotted(module))) {
    out.kind = GlobalClass::kAllowed;
    out.severity = Severity::kInfo;
    out.matched = full;
    return out;
  }
  const std::string raw = dotted(module);
  const size_t num_components =
      static_cast<size_t>(std::count(raw.begin(), raw.end(), '.')) + 1;
  if (raw.size() > kMaxGlobalLen || num_components > kMaxGlobalComponents) {
    const Rule& rule = FixedRule(kOverlongRuleId);
    out.kind = GlobalClass::kDenied;
    out.rule = &rule;
    out.severity = rule.severity;
    out.matched = full;
    return out;
  }
  std::vector<std::string> candidates;
  AddCandidates(canonical, name, candidates);
  // Attributes that are other modules under another name ("tempfile" +
  // "_os.system" is os.system): the name is checked again with each such
  // component replaced by the module it is.
  {
    const Names& names = BuiltinNames();
    const std::vector<std::string_view> parts = SplitDots(name);
    std::string renamed;
    bool any = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i != 0) renamed += '.';
      auto alias = names.module_attr.find(parts[i]);
      // The last component is the attribute itself, not a module reached.
      if (alias != names.module_attr.end() && i + 1 < parts.size()) {
        renamed += alias->second;
        any = true;
      } else {
        renamed += parts[i];
      }
    }
    if (any) AddCandidates(canonical, renamed, candidates);
  }
  // The spelling in the file too: a user allowlist in replace mode may have
  // dropped the aliases, and the patterns know both spellings.
  if (canonical != module) AddCandidates(module, name, candidates);
  auto [index, matched] = impl.Loaded().FirstMatch(candidates, full);
  if (index != std::string::npos) {
    out.kind = GlobalClass::kDenied;
    out.rule = &impl.rules[index];
    out.severity = impl.rules[index].severity;
    out.matched = std::move(matched);
    return out;
  }
  const Rule& policy = FixedRule(kPolicyRuleId);
  out.kind = GlobalClass::kUnknown;
  out.rule = &policy;
  out.severity = impl.strict ? Severity::kDangerous : policy.severity;
  out.matched = full;
  return out;
}

const Rule& RuleSet::FixedRule(std::string_view id) const {
  const Impl& impl = impl_->Loaded();
  auto it = impl.by_id.find(id);
  if (it != impl.by_id.end()) return impl.rules[it->second];
  // Only reachable with an id the built-in file lacks (rules_test checks
  // every id the scanner uses).
  static const Rule* const missing = new Rule{"CKG-UNKNOWN", Severity::kSuspicious, "",
                                              "a finding whose rule is missing from rules/denylist.toml",
                                              "rules/denylist.toml"};
  return *missing;
}

const CallableEntry* RuleSet::FindCallable(std::string_view dotted) const { return BuiltinCallables().Find(dotted); }

std::pair<std::string, std::string> RuleSet::ResolveName(std::string_view module, std::string_view name) const {
  const Names& names = BuiltinNames();
  std::string dotted(module);
  dotted += '.';
  dotted += name;
  if (auto it = names.compat_name.find(dotted); it != names.compat_name.end()) {
    const size_t dot = it->second.rfind('.');  // NAME_MAPPING names have no dots
    return {it->second.substr(0, dot), it->second.substr(dot + 1)};
  }
  std::string_view mod = module;
  if (auto it = names.compat_module.find(module); it != names.compat_module.end()) mod = it->second;
  return {std::string(impl_->allowlist.CanonicalModule(mod)), std::string(name)};
}

Status CheckBuiltinRules() {
  CKG_TRY(ParseRules(kBuiltinDenylistToml, "rules/denylist.toml (built in)", /*check_patterns=*/true));
  return RuleSet::Builtin().impl_->Loaded().CheckMatcher();
}

const Allowlist& RuleSet::allowlist() const { return impl_->allowlist; }
const std::vector<Rule>& RuleSet::rules() const { return impl_->Loaded().rules; }

}  // namespace ckptguard::scanner

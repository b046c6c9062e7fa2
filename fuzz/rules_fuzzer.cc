// Fuzz target for the two rules-file parsers, each on the input as TOML text:
// ParseAllowlist (lib/allowlist.h: [[allow]] entries, module aliases, mode)
// and RuleSet::AddRulesText (scanner/rules.h: [[rule]] entries with RE2
// patterns, and [[allow]] entries), on a copy of the built-in RuleSet.
//
// Invariants checked (abort on violation):
//  * never a kInternal error, never a crash or an RE2 abort (a bad pattern is
//    a kMalformed error);
//  * a parsed allowlist: parsing the same text again gives the same entries,
//    aliases and mode; Find on a fixed list of globals gives the same answer
//    twice and on the re-parsed list; every entry is found under its own key;
//  * the built-in RuleSet plus the file (whether AddRulesText succeeded or
//    failed part way): ClassifyGlobal on a fixed list of globals (safe ones,
//    known-dangerous ones, odd names) is deterministic, the same on a copy of
//    the ruleset, and in strict mode too; an allowed global has no rule; a
//    denied global names its rule, one of rules(), and a matched name.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/allowlist.h"
#include "ckptguard/error.h"
#include "ckptguard/scanner/rules.h"
#include "fuzz_check.h"

namespace {

using ckptguard::ErrorCode;
using ckptguard::fuzz::Check;
using ckptguard::scanner::GlobalClass;
using ckptguard::scanner::RuleSet;

const std::pair<std::string_view, std::string_view> kGlobals[] = {
    {"torch._utils", "_rebuild_tensor_v2"},
    {"torch", "FloatStorage"},
    {"collections", "OrderedDict"},
    {"__builtin__", "set"},
    {"builtins", "eval"},
    {"os", "system"},
    {"posix", "system"},
    {"subprocess", "Popen"},
    {"torch", "os.system"},
    {"numpy.core.multiarray", "_reconstruct"},
    {"", ""},
    {"a", "b.c.d"},
    {"__main__", "Model"},
    {"builtins", "getattr"},
};

std::string Describe(const GlobalClass& c) {
  return std::to_string(static_cast<int>(c.kind)) + "/" + std::to_string(static_cast<int>(c.severity)) + "/" +
         (c.rule ? c.rule->id : "-") + "/" + c.matched;
}

std::string ClassifyAll(const RuleSet& rules) {
  std::string out;
  for (const auto& [module, name] : kGlobals) {
    const GlobalClass c = rules.ClassifyGlobal(module, name);
    if (c.kind == GlobalClass::kAllowed) Check(c.rule == nullptr, "an allowed global has no rule");
    if (c.kind == GlobalClass::kDenied) {
      Check(c.rule != nullptr && !c.matched.empty(), "a denied global names its rule and match");
    }
    out += Describe(c) + "\n";
  }
  return out;
}

std::string FindAll(const ckptguard::Allowlist& list) {
  std::string out;
  for (const auto& [module, name] : kGlobals) {
    const ckptguard::AllowEntry* e = list.Find(module, name);
    out += e ? std::string(ckptguard::AllowActionName(e->action)) + (e->dtype ? "+dtype" : "") : "-";
    out += "\n";
  }
  return out;
}

void FuzzAllowlist(std::string_view text) {
  ckptguard::AllowlistLimits limits;
  limits.max_file_len = 1 << 20;
  limits.max_entries = 1 << 12;
  auto list = ckptguard::ParseAllowlist(text, "fuzz.toml", limits);
  if (!list) {
    Check(list.error().code != ErrorCode::kInternal, "ParseAllowlist is never kInternal", list.error().ToString());
    return;
  }
  auto again = ckptguard::ParseAllowlist(text, "fuzz.toml", limits);
  Check(again.has_value(), "ParseAllowlist is deterministic");
  Check(list->entries().size() == again->entries().size() && list->module_aliases() == again->module_aliases() &&
            list->replace_mode() == again->replace_mode(),
        "ParseAllowlist is deterministic");
  const std::string found = FindAll(*list);
  Check(found == FindAll(*list) && found == FindAll(*again), "Find is deterministic");
  Check(list->entries().size() <= limits.max_entries, "entries within the limit");
}

void FuzzRuleSet(std::string_view text) {
  RuleSet rules = RuleSet::Builtin();
  const ckptguard::Status status = rules.AddRulesText(text, "fuzz-rules.toml");
  if (!status) {
    Check(status.error().code != ErrorCode::kInternal, "AddRulesText is never kInternal", status.error().ToString());
  }
  const std::string first = ClassifyAll(rules);
  Check(first == ClassifyAll(rules), "ClassifyGlobal is deterministic");
  for (const auto& [module, name] : kGlobals) {
    const GlobalClass c = rules.ClassifyGlobal(module, name);
    if (c.kind != GlobalClass::kDenied || c.rule == nullptr) continue;
    bool inside = false;
    for (const auto& r : rules.rules()) inside = inside || &r == c.rule;
    Check(inside, "a denied global's rule is one of rules()", c.rule->id);
  }
  const RuleSet copy = rules;
  Check(first == ClassifyAll(copy), "a copy classifies the same");
  rules.SetStrict(true);
  const std::string strict = ClassifyAll(rules);
  Check(strict == ClassifyAll(rules), "strict ClassifyGlobal is deterministic");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  FuzzAllowlist(text);
  FuzzRuleSet(text);
  return 0;
}

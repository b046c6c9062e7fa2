// RuleSet: the scanner's rules as data.
//
// Three sources decide what a global is:
//   - the loader's allowlist (rules/allowlist.toml, lib/allowlist.h): what
//     weights-only checkpoints need; such globals are safe (its
//     "unsupported" entries are safe too: they rebuild data, not code);
//   - the denylist (rules/denylist.toml, built in, plus user rule files):
//     known code-execution, file and network primitives, each rule an RE2
//     pattern over dotted names with an id, severity, description and
//     reference; a module pattern covers its submodules, and a name is
//     checked component by component ("torch" + "os.system" is checked as
//     "torch", "torch.os", "torch.os.system" and, since attribute access can
//     reach any module's attributes, as "os", "os.system" too);
//   - the policy for everything else: suspicious (rule CKG-P001), dangerous
//     with strict mode.
// Users can add rule files and allow globals explicitly (--allow).
//
// Two more built-in files say what the scanner needs to judge calls rather
// than names (scan.cc): rules/callables.toml, what calling a global does
// (pure-data constructors and classes, getattr, functools.partial, decoders,
// loaders, callees that call their arguments; FindCallable), and
// rules/pickle_names.toml, how the unpickler resolves names (CPython's
// _compat_pickle renames, ResolveName; module attributes that are other
// modules under another name, used by ClassifyGlobal).
#ifndef CKPTGUARD_SCANNER_RULES_H_
#define CKPTGUARD_SCANNER_RULES_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/allowlist.h"
#include "ckptguard/callables.h"
#include "ckptguard/error.h"
#include "ckptguard/scanner/finding.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::scanner {

// Rule is one entry of a rules file ([[rule]] in rules/denylist.toml).
struct Rule {
  std::string id;           // "CKG-D001"; unique across all loaded files
  Severity severity = Severity::kDangerous;
  std::string pattern;      // RE2, matched in full against dotted names (globals rules)
  std::string description;  // what it catches and why it is dangerous
  std::string reference;    // a URL or document section
};

// Waiver is one [[waive]] entry of a rules file (or one `scan --waive
// RULE[:GLOB]`): findings whose rule id matches `rule` (an fnmatch pattern,
// "CKG-F080", "CKG-A*") in files matching `path` (a glob as `scan
// --include` takes it: with a '/', matched against the path as given, else
// against the file name; empty: every file) are reported as waived and do
// not count towards the verdict or the exit status.
struct Waiver {
  std::string rule;
  std::string path;
  std::string reason;  // why the finding is accepted (required in rules files)
  std::string source;  // "rules.toml:12", or "--waive"
  // Text is how reports name the waiver: "RULE" or "RULE:GLOB".
  std::string Text() const { return path.empty() ? rule : rule + ":" + path; }
};

// CallableKind, IsDataKind and CallableEntry: ckptguard/callables.h (one
// list, rules/callables.toml, for the scanner and the loader).

// GlobalClass is what a RuleSet says about one global.
struct GlobalClass {
  enum Kind : uint8_t { kAllowed, kDenied, kUnknown } kind = kUnknown;
  const Rule* rule = nullptr;  // the denylist rule (kDenied) or the policy rule (kUnknown); null when allowed
  Severity severity = Severity::kSuspicious;  // for kDenied/kUnknown
  std::string matched;         // the dotted name the rule matched ("os.system")
};

class RuleSet {
 public:
  // Builtin: the built-in allowlist and denylist. Never fails at run time
  // (a broken built-in file fails the tests).
  static const RuleSet& Builtin();

  RuleSet(const RuleSet&);
  RuleSet& operator=(const RuleSet&);
  RuleSet(RuleSet&&) noexcept;
  RuleSet& operator=(RuleSet&&) noexcept;
  ~RuleSet();

  // AddRulesFile adds the [[rule]] entries of a user's TOML rules file (same
  // format as rules/denylist.toml); [[allow]] entries in it extend the
  // allowlist. Errors name the file and line; duplicate ids are refused.
  Status AddRulesFile(const std::filesystem::path& path);
  // AddRulesText is AddRulesFile for text already in memory (`source` names it).
  Status AddRulesText(std::string_view text, std::string_view source);
  // Waivers are the [[waive]] entries of the rules files added, in order.
  const std::vector<Waiver>& waivers() const;
  // Allow marks "module.name" safe (the command line's --allow).
  void Allow(std::string_view dotted_global);
  // SetStrict makes unknown globals dangerous instead of suspicious.
  void SetStrict(bool strict);
  bool strict() const;

  // ClassifyGlobal decides about GLOBAL/STACK_GLOBAL/INST `module` + `name`
  // (name may contain dots). Aliases (__builtin__ -> builtins) apply.
  GlobalClass ClassifyGlobal(std::string_view module, std::string_view name) const;

  // FindCallable returns the rules/callables.toml entry for a dotted name
  // (after ResolveName), or null.
  const CallableEntry* FindCallable(std::string_view dotted) const;
  // ResolveName maps `module` + `name` as CPython's Unpickler.find_class
  // does for protocol 0-2 pickles (_compat_pickle NAME_MAPPING, then
  // IMPORT_MAPPING; rules/pickle_names.toml) and applies the allowlist's
  // module aliases; returns the module and name it imports.
  std::pair<std::string, std::string> ResolveName(std::string_view module, std::string_view name) const;

  // FixedRule returns the built-in rule for a non-global finding by id
  // (see rules/denylist.toml, section "fixed rules": CKG-F...); a rule with
  // that id always exists for the ids the scanner uses.
  const Rule& FixedRule(std::string_view id) const;

  const Allowlist& allowlist() const;
  const std::vector<Rule>& rules() const;

 private:
  friend Status CheckBuiltinRules();
  RuleSet();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// CheckBuiltinRules parses the built-in rules/denylist.toml with every
// pattern compiled on its own, then compiles the pattern set (rules_test: at
// start-up the built-in patterns are not checked, and compiled on first use).
Status CheckBuiltinRules();

// CheckBuiltinNames parses the built-in rules/callables.toml and
// rules/pickle_names.toml (rules_test: they are part of the binary).
Status CheckBuiltinNames();

}  // namespace ckptguard::scanner

CKPTGUARD_API_END

#endif  // CKPTGUARD_SCANNER_RULES_H_

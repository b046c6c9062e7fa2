// Text, JSON and SARIF 2.1.0 renderings of a scan (report.h).
//
// Paths, entry names, globals and messages come from the scanned files, so
// they are hostile: the text report escapes control characters, bidi
// overrides and invalid UTF-8 (no terminal escape sequences, no "Trojan
// Source" reordering, one line per finding); JSON and SARIF escape through
// nlohmann, replacing invalid UTF-8 with U+FFFD instead of throwing; SARIF
// URIs are percent-encoded byte by byte, so they stay exact and ASCII.
#include "ckptguard/scanner/report.h"
#include "ckptguard/version.h"

#include "ckptguard/printable.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ckptguard::scanner {

namespace {

// ordered_json keeps the fields in the order the contract lists them.
using Json = nlohmann::ordered_json;

constexpr char kHexDigits[] = "0123456789ABCDEF";

// Dump renders `doc` indented, ending with a newline. Invalid UTF-8 becomes
// U+FFFD instead of an exception.
std::string Dump(const Json& doc) {
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

struct Counts {
  size_t safe = 0;
  size_t suspicious = 0;
  size_t dangerous = 0;
  size_t error = 0;
};

Counts CountVerdicts(const std::vector<FileReport>& files) {
  Counts counts;
  for (const FileReport& file : files) {
    switch (file.verdict) {
      case Verdict::kSafe: ++counts.safe; break;
      case Verdict::kSuspicious: ++counts.suspicious; break;
      case Verdict::kDangerous: ++counts.dangerous; break;
      case Verdict::kError: ++counts.error; break;
    }
  }
  return counts;
}

// ---------------------------------------------------------------------------
// Text

std::string Plural(size_t n, std::string_view singular, std::string_view plural) {
  return std::to_string(n) + " " + std::string(n == 1 ? singular : plural);
}

// ---------------------------------------------------------------------------
// SARIF

std::string_view SarifLevel(Severity severity) {
  switch (severity) {
    case Severity::kInfo: return "note";
    case Severity::kSuspicious: return "warning";
    case Severity::kDangerous: return "error";
  }
  return "warning";
}

bool IsAsciiAlnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char AsciiUpper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }
char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// CamelCase joins the ASCII words of `s` with their first letter upper-cased,
// up to `max_words` words; `lower_rest` lowers the other letters (for ids
// such as "CKG-D001" -> "CkgD001").
std::string CamelCase(std::string_view s, size_t max_words, bool lower_rest) {
  std::string out;
  size_t words = 0;
  bool in_word = false;
  for (char c : s) {
    if (!IsAsciiAlnum(c)) {
      in_word = false;
      continue;
    }
    if (!in_word) {
      if (words == max_words) break;
      ++words;
      in_word = true;
      out.push_back(AsciiUpper(c));
    } else {
      out.push_back(lower_rest ? AsciiLower(c) : c);
    }
  }
  return out;
}

// RuleName is a readable CamelCase name: the first words of the
// description's first clause ("Calls os.system, which..." -> "CallsOsSystem"),
// else the id.
std::string RuleName(const Rule& rule) {
  std::string_view clause = rule.description;
  // A '.' inside a dotted name ("os.system") does not end the clause.
  size_t cut = std::string_view::npos;
  for (size_t i = 0; i < clause.size(); ++i) {
    const char c = clause[i];
    if (c == ',' || c == ';' || c == ':' || c == '(' || c == '\n' ||
        (c == '.' && (i + 1 == clause.size() || clause[i + 1] == ' '))) {
      cut = i;
      break;
    }
  }
  std::string name = CamelCase(clause.substr(0, cut), 6, false);
  if (name.empty() || !(name[0] >= 'A' && name[0] <= 'Z')) name = CamelCase(rule.id, 8, true);
  return name;
}

// ShortDescription is the first sentence of `description` (without its
// period), cut at a space to at most about kMaxShort bytes.
std::string ShortDescription(std::string_view description) {
  constexpr size_t kMaxShort = 120;
  std::string_view sentence = description.substr(0, description.find(". "));
  if (sentence.ends_with('.')) sentence.remove_suffix(1);
  if (sentence.size() <= kMaxShort) return std::string(sentence);
  size_t cut = sentence.rfind(' ', kMaxShort - 3);
  if (cut == std::string_view::npos || cut == 0) {
    cut = kMaxShort - 3;  // no space: cut on a UTF-8 boundary
    while (cut > 0 && (static_cast<unsigned char>(sentence[cut]) & 0xc0) == 0x80) --cut;
  }
  sentence = sentence.substr(0, cut);
  while (sentence.ends_with(',') || sentence.ends_with(':') || sentence.ends_with(';')) sentence.remove_suffix(1);
  return std::string(sentence) + "...";
}

// HelpUri is the first http(s) URL in a rule's reference ("threats.md §1;
// https://docs.python.org/..."), or "" when there is none.
std::string HelpUri(std::string_view reference) {
  size_t start = reference.find("https://");
  if (start == std::string_view::npos) start = reference.find("http://");
  if (start == std::string_view::npos) return "";
  size_t end = start;
  while (end < reference.size()) {
    const auto byte = static_cast<unsigned char>(reference[end]);
    if (byte <= 0x20 || byte >= 0x7f || byte == ';' || byte == ',' || byte == '"' || byte == '<' || byte == '>') break;
    ++end;
  }
  std::string_view url = reference.substr(start, end - start);
  while (url.ends_with('.') || url.ends_with(')')) url.remove_suffix(1);  // sentence punctuation
  return std::string(url);
}

// PercentEncode keeps RFC 3986 unreserved characters and '/', and encodes
// every other byte (so a ':' in the first segment cannot read as a scheme).
std::string PercentEncode(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (char c : path) {
    if (IsAsciiAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out.push_back(c);
    } else {
      const auto byte = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHexDigits[byte >> 4]);
      out.push_back(kHexDigits[byte & 0xf]);
    }
  }
  return out;
}

// ArtifactLocation: a relative path stays relative (GitHub resolves it
// against the repository root; %SRCROOT% says so), without leading "./"; an
// absolute path becomes a file:// URI.
Json ArtifactLocation(std::string_view path) {
  Json location = Json::object();
  if (path.starts_with('/')) {
    location["uri"] = "file://" + PercentEncode(path);
    return location;
  }
  while (path.starts_with("./")) {
    path.remove_prefix(2);
    while (path.starts_with('/')) path.remove_prefix(1);
  }
  location["uri"] = PercentEncode(path);
  location["uriBaseId"] = "%SRCROOT%";
  return location;
}

// Fingerprint is a stable 64-bit FNV-1a hash of the fields that identify a
// finding, as 16 hex digits (std::hash is not stable across builds).
std::string Fingerprint(const FileReport& file, const Finding& finding) {
  uint64_t hash = 0xcbf29ce484222325u;
  const auto mix = [&](std::string_view field) {
    for (char c : field) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 0x100000001b3u;
    }
    hash ^= 0xff;  // field separator: ("ab","c") and ("a","bc") differ
    hash *= 0x100000001b3u;
  };
  mix(file.path);
  mix(finding.rule);
  mix(finding.entry);
  mix(std::to_string(finding.offset));
  constexpr char kLowerHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (size_t i = 0; i < 16; ++i) out[15 - i] = kLowerHex[(hash >> (4 * i)) & 0xf];
  return out;
}

// FindRule looks `id` up among the global rules, then among the fixed and
// policy rules, then among the input rules; null when none knows it.
const Rule* FindRule(const RuleSet& rules, std::string_view id) {
  for (const Rule& rule : rules.rules()) {
    if (rule.id == id) return &rule;
  }
  if (id.starts_with("CKG-F") || id.starts_with("CKG-P")) {
    const Rule& fixed = rules.FixedRule(id);
    if (fixed.id == id) return &fixed;
  }
  return FindInputRule(id);
}

// IsInputFinding: a finding about what was read (CKG-W...), which explains a
// file's error by itself.
bool IsInputFinding(const Finding& finding) { return FindInputRule(finding.rule) != nullptr; }

Json ReportingDescriptor(const std::string& id, const Rule* rule, Severity severity) {
  Json descriptor = Json::object();
  descriptor["id"] = id;
  if (rule == nullptr) {
    Rule unknown;
    unknown.id = id;
    descriptor["name"] = RuleName(unknown);
    descriptor["defaultConfiguration"] = {{"level", SarifLevel(severity)}};
    descriptor["properties"] = {{"tags", Json::array({"security"})}};
    return descriptor;
  }
  descriptor["name"] = RuleName(*rule);
  if (!rule->description.empty()) {
    descriptor["shortDescription"] = {{"text", ShortDescription(rule->description)}};
    descriptor["fullDescription"] = {{"text", rule->description}};
  }
  // A rule of ckptguard links to its docs/rules.md section; a user's rule to
  // the URL in its reference.
  const std::string doc = RuleDocUri(id);
  if (!doc.empty()) {
    descriptor["helpUri"] = doc;
  } else if (const std::string uri = HelpUri(rule->reference); !uri.empty()) {
    descriptor["helpUri"] = uri;
  }
  std::string help;
  if (!doc.empty()) help = "Documentation: " + std::string(kRulesDocPath) + "#" + RuleDocAnchor(id) + " (" + doc + ")";
  if (!rule->reference.empty()) help += (help.empty() ? "" : "\n") + std::string("Reference: ") + rule->reference;
  if (!help.empty()) descriptor["help"] = {{"text", std::move(help)}};
  descriptor["defaultConfiguration"] = {{"level", SarifLevel(rule->severity)}};
  // GitHub code scanning ranks alerts by "security-severity" (9.0+ critical,
  // 4.0-6.9 medium) for rules tagged "security".
  Json properties = {{"tags", Json::array({"security"})}};
  if (rule->severity == Severity::kDangerous) properties["security-severity"] = "9.8";
  if (rule->severity == Severity::kSuspicious) properties["security-severity"] = "5.0";
  descriptor["properties"] = std::move(properties);
  return descriptor;
}

Rule InputRule(const char* id, Severity severity, const char* description) {
  return Rule{id, severity, "", description, "docs/rules.md#" + RuleDocAnchor(id)};
}

}  // namespace

std::string RuleDocAnchor(std::string_view id) {
  std::string out(id);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

const std::vector<Rule>& InputRules() {
  static const std::vector<Rule>* const rules = new std::vector<Rule>{
      InputRule(kRuleNotScanned, Severity::kSuspicious,
                "a file could not be read or decoded completely: what was not read was not judged, so the scan is "
                "incomplete"),
      InputRule(kRuleLinkSkipped, Severity::kSuspicious,
                "a symbolic link was skipped (--symlinks=skip): the file or folder it names was not scanned, but a "
                "loader given this folder follows it"),
      InputRule(kRuleLinkEscapes, Severity::kSuspicious,
                "a symbolic link leads outside the scanned folders (and not into the blobs of the same Hugging Face "
                "cache repository): a loader follows it, the scan does not"),
      InputRule(kRuleLinkDangling, Severity::kSuspicious,
                "a symbolic link leads to nothing (a dangling link): what a loader would read there cannot be judged, "
                "and it can appear later"),
      InputRule(kRuleLinkLoop, Severity::kSuspicious,
                "a symbolic link leads back to a folder above it or to itself: everything it names is scanned once "
                "under its other name, but no model download makes such links"),
      InputRule(kRuleUnreadable, Severity::kSuspicious,
                "a folder or file could not be read while walking (permission denied, I/O error) or does not exist: "
                "what it holds was not scanned"),
      InputRule(kRuleNotRegular, Severity::kSuspicious,
                "a FIFO, socket or device where model files are expected: never opened (it could block the scan or "
                "yield different bytes to each reader), so not scanned"),
      InputRule(kRuleNothingToScan, Severity::kSuspicious,
                "nothing to scan under a path: an empty folder, or no model file in it after --include/--exclude; an "
                "empty scan is never reported as clean"),
      InputRule(kRuleSameFile, Severity::kInfo,
                "another name of a file (or folder) already scanned, such as two Hugging Face snapshot links to one "
                "blob: scanned once, reported under each name"),
      InputRule(kRuleShardEscapes, Severity::kSuspicious,
                "a shard index (*.index.json) whose weight_map names an absolute path or one with '..': a loader "
                "joins it to the folder and reads a file outside it, which the scan does not"),
      InputRule(kRuleShardMissing, Severity::kSuspicious,
                "a shard index (*.index.json) whose weight_map names a shard that does not exist or is not a file"),
      InputRule(kRuleShardIndexBad, Severity::kSuspicious,
                "a shard index (*.index.json) that is not a JSON object with a weight_map of strings, as loaders "
                "read it: its shards cannot be found and checked"),
      InputRule(kRuleItemRange, Severity::kInfo,
                "a byte range that a torch.distributed.checkpoint .metadata names and its file's own scan does not "
                "read as an archive: FileSystemReader hands it to torch.load, so it is scanned on its own"),
  };
  return *rules;
}

const Rule* FindInputRule(std::string_view id) {
  for (const Rule& rule : InputRules()) {
    if (rule.id == id) return &rule;
  }
  return nullptr;
}

std::string RuleDocUri(std::string_view id) {
  bool known = FindInputRule(id) != nullptr;
  if (!known) {
    for (const Rule& rule : RuleSet::Builtin().rules()) {
      if (rule.id == id) {
        known = true;
        break;
      }
    }
  }
  if (!known) return "";
  return std::string(kRulesDocUrl) + "#" + RuleDocAnchor(id);
}

namespace {

// Colour: ANSI SGR codes for a verdict or severity word, when `on`.
std::string Colored(std::string_view word, bool on) {
  if (!on) return std::string(word);
  const char* code = word == "dangerous"    ? "1;31"
                     : word == "suspicious" ? "33"
                     : word == "safe"       ? "32"
                     : word == "error"      ? "1;35"
                                            : "2";
  return std::string("\x1b[") + code + "m" + std::string(word) + "\x1b[0m";
}

}  // namespace

std::string ReportText(const std::vector<FileReport>& files, const std::vector<SkippedFile>& skipped, bool color) {
  std::string out;
  for (const FileReport& file : files) {
    AppendPrintable(out, file.path);
    if (!file.format.empty()) {
      out += " (";
      AppendPrintable(out, file.format);
      out += ")";
    }
    out += ": ";
    out += Colored(VerdictName(file.verdict), color);
    out += "\n";
    for (const Finding& finding : file.findings) {
      out += "  [";
      out += Colored(SeverityName(finding.severity), color && finding.waiver.empty());
      if (!finding.waiver.empty()) {
        out += ", waived by ";
        AppendPrintable(out, finding.waiver);
        if (!finding.waiver_source.empty() && finding.waiver_source != "--waive") {
          out += " in ";
          AppendPrintable(out, finding.waiver_source);
        }
        if (!finding.waiver_reason.empty()) {
          out += ": ";
          AppendPrintable(out, finding.waiver_reason);
        }
      }
      out += "] ";
      AppendPrintable(out, finding.rule);
      out += " at byte " + std::to_string(finding.offset);
      if (!finding.entry.empty()) {
        out += " (";
        AppendPrintable(out, finding.entry);
        out += ")";
      }
      out += ": ";
      AppendPrintable(out, finding.message);
      out += "\n";
    }
    if (file.error) {
      out += "  error: ";
      AppendPrintable(out, file.error->ToString());
      out += "\n";
    }
    out += "\n";
  }
  // One link per rule of ckptguard that fired, in the order they first fired.
  std::vector<std::string> documented;
  for (const FileReport& file : files) {
    for (const Finding& finding : file.findings) {
      if (std::find(documented.begin(), documented.end(), finding.rule) != documented.end()) continue;
      if (!RuleDocUri(finding.rule).empty()) documented.push_back(finding.rule);
    }
  }
  if (!documented.empty()) {
    out += "Rule documentation:\n";
    for (const std::string& id : documented) out += "  " + id + ": " + RuleDocUri(id) + "\n";
    out += "\n";
  }
  if (!skipped.empty()) {
    out += "Left out (" + Plural(skipped.size(), "file", "files") + ", no verdict):\n";
    for (const SkippedFile& s : skipped) {
      out += "  ";
      AppendPrintable(out, s.path);
      out += ": ";
      AppendPrintable(out, s.reason);
      out += "\n";
    }
    out += "\n";
  }
  const Counts counts = CountVerdicts(files);
  out += Plural(files.size(), "file", "files") + ": " + std::to_string(counts.safe) + " safe, " +
         std::to_string(counts.suspicious) + " suspicious, " + std::to_string(counts.dangerous) +
         " dangerous, " + Plural(counts.error, "error", "errors") + "\n";
  return out;
}

std::string ReportJson(const std::vector<FileReport>& files, const std::vector<SkippedFile>& skipped) {
  Json out_files = Json::array();
  for (const FileReport& file : files) {
    Json findings = Json::array();
    for (const Finding& finding : file.findings) {
      findings.push_back({
          {"rule", finding.rule},
          {"severity", SeverityName(finding.severity)},
          {"message", finding.message},
          {"entry", finding.entry},
          {"offset", finding.offset},
          {"global", finding.global},
          {"help", RuleDocUri(finding.rule)},
      });
      if (!finding.waiver.empty()) {
        findings.back()["waived"] = finding.waiver;
        if (!finding.waiver_source.empty()) findings.back()["waiver_source"] = finding.waiver_source;
        if (!finding.waiver_reason.empty()) findings.back()["waiver_reason"] = finding.waiver_reason;
      }
    }
    Json out_file = {
        {"path", file.path},
        {"format", file.format},
        {"verdict", VerdictName(file.verdict)},
        {"findings", std::move(findings)},
    };
    if (file.error) {
      out_file["error"] = {
          {"code", ErrorCodeName(file.error->code)},
          {"offset", file.error->offset},
          {"where", file.error->where},
          {"detail", file.error->detail},
      };
    }
    out_files.push_back(std::move(out_file));
  }
  const Counts counts = CountVerdicts(files);
  Json doc = {
      {"schema_version", kJsonSchemaVersion},
      {"tool", {{"name", "ckptguard"}, {"version", CKPTGUARD_VERSION}, {"command", "scan"}}},
      {"files", std::move(out_files)},
      {"skipped", [&] {
         Json list = Json::array();
         for (const SkippedFile& f : skipped) list.push_back({{"path", f.path}, {"reason", f.reason}});
         return list;
       }()},
      {"summary",
       {
           {"files", files.size()},
           {"safe", counts.safe},
           {"suspicious", counts.suspicious},
           {"dangerous", counts.dangerous},
           {"error", counts.error},
       }},
  };
  return Dump(doc);
}

std::string ReportSarif(const std::vector<FileReport>& files, const RuleSet& rules, const std::string& tool_version,
                        const std::vector<SkippedFile>& skipped) {
  Json descriptors = Json::array();
  std::map<std::string, size_t, std::less<>> rule_index;  // id -> index in descriptors
  Json results = Json::array();
  Json notifications = Json::array();
  for (const FileReport& file : files) {
    for (const Finding& finding : file.findings) {
      auto it = rule_index.find(finding.rule);
      if (it == rule_index.end()) {
        descriptors.push_back(ReportingDescriptor(finding.rule, FindRule(rules, finding.rule), finding.severity));
        it = rule_index.emplace(finding.rule, descriptors.size() - 1).first;
      }
      std::string message = finding.message;
      if (message.empty()) message = "Rule " + finding.rule + " matched";
      // GitHub code scanning needs region.startLine; a model file has no
      // lines, so line 1 anchors the alert and byteOffset says where.
      Json region = {{"startLine", 1}, {"byteOffset", finding.offset}, {"byteLength", 1}};
      results.push_back({
          {"ruleId", finding.rule},
          {"ruleIndex", it->second},
          {"level", SarifLevel(finding.severity)},
          {"message", {{"text", std::move(message)}}},
          {"locations",
           Json::array({{{"physicalLocation",
                          {{"artifactLocation", ArtifactLocation(file.path)}, {"region", std::move(region)}}}}})},
          {"partialFingerprints", {{"ckptguardFinding/v1", Fingerprint(file, finding)}}},
          {"properties",
           {{"entry", finding.entry}, {"global", finding.global}, {"severity", SeverityName(finding.severity)}}},
      });
      if (!finding.waiver.empty()) {
        // Shown as suppressed (code scanning closes the alert), with the waiver.
        std::string justification = finding.waiver_source.empty() || finding.waiver_source == "--waive"
                                        ? "waived by --waive " + finding.waiver
                                        : "waived by " + finding.waiver + " in " + finding.waiver_source;
        if (!finding.waiver_reason.empty()) justification += ": " + finding.waiver_reason;
        results.back()["suppressions"] =
            Json::array({{{"kind", "external"}, {"justification", std::move(justification)}}});
      }
    }
    // An error no input finding explains is a CKG-W001 result too: code
    // scanning shows results, not notifications.
    const bool explained = std::any_of(file.findings.begin(), file.findings.end(), IsInputFinding);
    if (file.error && !explained) {
      Finding finding{kRuleNotScanned, Severity::kSuspicious, "not scanned completely: " + file.error->ToString(),
                      file.error->where, file.error->offset, "", "", "", ""};
      auto it = rule_index.find(finding.rule);
      if (it == rule_index.end()) {
        descriptors.push_back(ReportingDescriptor(finding.rule, FindRule(rules, finding.rule), finding.severity));
        it = rule_index.emplace(finding.rule, descriptors.size() - 1).first;
      }
      Json region = {{"startLine", 1}, {"byteOffset", finding.offset}, {"byteLength", 1}};
      results.push_back({
          {"ruleId", finding.rule},
          {"ruleIndex", it->second},
          {"level", "error"},
          {"message", {{"text", std::move(finding.message)}}},
          {"locations",
           Json::array({{{"physicalLocation",
                          {{"artifactLocation", ArtifactLocation(file.path)}, {"region", std::move(region)}}}}})},
          {"partialFingerprints", {{"ckptguardFinding/v1", Fingerprint(file, finding)}}},
          {"properties", {{"entry", finding.entry}, {"global", ""}, {"severity", "error"}}},
      });
    }
    if (file.error) {
      notifications.push_back({
          {"level", "error"},
          {"message", {{"text", file.path + ": " + file.error->ToString()}}},
          {"locations", Json::array({{{"physicalLocation", {{"artifactLocation", ArtifactLocation(file.path)}}}}})},
          {"properties",
           {{"code", ErrorCodeName(file.error->code)},
            {"offset", file.error->offset},
            {"where", file.error->where},
            {"detail", file.error->detail}}},
      });
    }
  }
  const bool successful = notifications.empty();
  for (const SkippedFile& f : skipped) {
    // Left out on purpose: a note, not a failure of the run.
    notifications.push_back({
        {"level", "note"},
        {"message", {{"text", "left out: " + f.path + ": " + f.reason}}},
        {"locations", Json::array({{{"physicalLocation", {{"artifactLocation", ArtifactLocation(f.path)}}}}})},
    });
  }
  Json invocation = {{"executionSuccessful", successful}};
  if (!notifications.empty()) invocation["toolExecutionNotifications"] = std::move(notifications);
  Json driver = {
      {"name", "ckptguard"},
      {"version", tool_version},
      {"informationUri", "https://github.com/ckptguard/ckptguard"},
      {"rules", std::move(descriptors)},
  };
  Json doc = {
      {"$schema", "https://json.schemastore.org/sarif-2.1.0.json"},
      {"version", "2.1.0"},
      {"runs", Json::array({{
                   {"tool", {{"driver", std::move(driver)}}},
                   {"invocations", Json::array({std::move(invocation)})},
                   {"results", std::move(results)},
               }})},
  };
  return Dump(doc);
}

}  // namespace ckptguard::scanner

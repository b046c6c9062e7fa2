// Reports: the scan of many files as text, JSON or SARIF 2.1.0.
#ifndef CKPTGUARD_SCANNER_REPORT_H_
#define CKPTGUARD_SCANNER_REPORT_H_

#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/rules.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::scanner {

// Rule documentation. Every rule id ckptguard itself emits (the built-in
// rules of rules/denylist.toml, CKG-D/F/P, and the input rules below, CKG-W)
// has one section in docs/rules.md, anchored by the lower-cased id
// (CKG-F001 -> "docs/rules.md#ckg-f001"); ids are never reused and a retired
// id keeps its section, so links stay valid. tests/report_test.cc fails when
// an id in the sources has no section.
inline constexpr std::string_view kRulesDocPath = "docs/rules.md";
inline constexpr std::string_view kRulesDocUrl = "https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md";
// RuleDocAnchor: the lower-cased id ("ckg-f001").
std::string RuleDocAnchor(std::string_view id);
// RuleDocUri: kRulesDocUrl + "#" + anchor when `id` is a rule of ckptguard
// (built in or an input rule), else "" (a user's rule file documents its own
// rules through their `reference`).
std::string RuleDocUri(std::string_view id);

// InputRules: the findings `ckptguard scan` makes about what it was asked to
// read rather than about a file's content (CKG-Wnnn): symbolic links skipped,
// escaping the scanned folders, dangling or looping; folders or files that
// cannot be read; FIFOs, sockets and devices; paths with nothing to scan;
// one file named several times; shard indexes (*.index.json) that point
// outside their folder or at missing shards. They live here, not in
// rules/denylist.toml, because no pattern or rule file can change them.
const std::vector<Rule>& InputRules();
// FindInputRule: the input rule `id`, or null.
const Rule* FindInputRule(std::string_view id);
// The ids of the input rules (docs/rules.md explains each).
inline constexpr char kRuleNotScanned[] = "CKG-W001";      // a file could not be read or decoded completely
inline constexpr char kRuleLinkSkipped[] = "CKG-W002";     // --symlinks=skip left a link out
inline constexpr char kRuleLinkEscapes[] = "CKG-W003";     // a link leads outside the scanned folders
inline constexpr char kRuleLinkDangling[] = "CKG-W004";    // a link leads nowhere
inline constexpr char kRuleLinkLoop[] = "CKG-W005";        // a link leads back to a folder above it, or to itself
inline constexpr char kRuleUnreadable[] = "CKG-W006";      // permission denied or an I/O error while walking
inline constexpr char kRuleNotRegular[] = "CKG-W007";      // a FIFO, socket or device: never opened
inline constexpr char kRuleNothingToScan[] = "CKG-W008";   // a path under which no model file was found
inline constexpr char kRuleSameFile[] = "CKG-W009";        // another name of a file or folder scanned once
inline constexpr char kRuleShardEscapes[] = "CKG-W010";    // weight_map names a path outside the index's folder
inline constexpr char kRuleShardMissing[] = "CKG-W011";    // weight_map names a shard that does not exist
inline constexpr char kRuleShardIndexBad[] = "CKG-W012";   // a shard index that is not the JSON loaders read
inline constexpr char kRuleItemRange[] = "CKG-W013";       // a DCP item range scanned on its own

// ReportText: one block per file (path, format, verdict, then each finding
// as "  [severity] RULE at byte N (entry): message"), then, when rules of
// ckptguard fired, "Rule documentation:" with one "  RULE: URL" line per
// rule (RuleDocUri), then a summary line.
//
// `skipped` lists what the scan left out on purpose (files in folders or
// repositories that are no model format at all); every format lists them
// (text: a "Left out" section; JSON: "skipped"; SARIF: notes), without a
// verdict. `color` adds ANSI colours to verdicts and severities (the CLI
// decides: a terminal, no NO_COLOR).
struct SkippedFile {
  std::string path;
  std::string reason;
};
std::string ReportText(const std::vector<FileReport>& files, const std::vector<SkippedFile>& skipped = {},
                       bool color = false);

// ReportJson: the contract other tools use:
// {"files": [{"path", "format", "verdict", "findings": [{"rule", "severity",
//   "message", "entry", "offset", "global", "help"}], "error": {"code", "offset",
//   "where", "detail"} (only when set)}],
//  "skipped": [{"path", "reason"}],
//  "summary": {"files", "safe", "suspicious", "dangerous", "error"}}
// "help" is RuleDocUri(rule), "" for rules ckptguard does not document.
// kJsonSchemaVersion is the version of every JSON document ckptguard prints
// (scan's report here, and every other command's --json, cli/cli_util.h):
// each carries "schema_version" and "tool" {name, version, command}. Within
// a version fields may be added, never removed or changed in meaning;
// docs/output.md and the JSON Schemas in docs/schemas/ describe them.
inline constexpr int kJsonSchemaVersion = 1;
std::string ReportJson(const std::vector<FileReport>& files, const std::vector<SkippedFile>& skipped = {});

// ReportSarif: SARIF 2.1.0 (one run, tool "ckptguard" with the rules that
// fired as reportingDescriptors with their description, helpUri (the rule's
// docs/rules.md section for rules of ckptguard, else the first URL of the
// rule's reference) and help text (the section and the reference); one
// result per finding with level error (dangerous) / warning (suspicious) /
// note (info), the file as artifactLocation.uri, the byte offset as a
// region's byteOffset, the entry and global in properties). Files that could
// not be read are toolExecutionNotifications and, so that code scanning
// shows them too, a CKG-W001 result each. Accepted by GitHub code
// scanning. `tool_version` goes to tool.driver.version.
std::string ReportSarif(const std::vector<FileReport>& files, const RuleSet& rules, const std::string& tool_version,
                        const std::vector<SkippedFile>& skipped = {});

}  // namespace ckptguard::scanner

CKPTGUARD_API_END

#endif  // CKPTGUARD_SCANNER_REPORT_H_

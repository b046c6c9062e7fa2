// Reports: the scan of many files as text, JSON or SARIF 2.1.0.
#ifndef CKPTGUARD_SCANNER_REPORT_H_
#define CKPTGUARD_SCANNER_REPORT_H_

#include <string>
#include <vector>

#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/rules.h"

namespace ckptguard::scanner {

// ReportText: one block per file (path, format, verdict, then each finding
// as "  [severity] RULE at byte N (entry): message"), then a summary line.
std::string ReportText(const std::vector<FileReport>& files);

// ReportJson: the contract other tools use:
// {"files": [{"path", "format", "verdict", "findings": [{"rule", "severity",
//   "message", "entry", "offset", "global"}], "error": {"code", "offset",
//   "where", "detail"} (only when set)}],
//  "summary": {"files", "safe", "suspicious", "dangerous", "error"}}
std::string ReportJson(const std::vector<FileReport>& files);

// ReportSarif: SARIF 2.1.0 (one run, tool "ckptguard" with the rules that
// fired as reportingDescriptors with their description and helpUri; one
// result per finding with level error (dangerous) / warning (suspicious) /
// note (info), the file as artifactLocation.uri, the byte offset as a
// region's byteOffset, the entry and global in properties). Files that could
// not be read are toolExecutionNotifications. Accepted by GitHub code
// scanning. `tool_version` goes to tool.driver.version.
std::string ReportSarif(const std::vector<FileReport>& files, const RuleSet& rules, const std::string& tool_version);

}  // namespace ckptguard::scanner

#endif  // CKPTGUARD_SCANNER_REPORT_H_

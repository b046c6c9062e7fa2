// Findings, verdicts and per-file reports: what the scanner says about a file.
#ifndef CKPTGUARD_SCANNER_FINDING_H_
#define CKPTGUARD_SCANNER_FINDING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::scanner {

// Severity of one finding. Ordered: a file's verdict is its worst finding.
enum class Severity : uint8_t {
  kInfo,        // worth knowing, not a risk (e.g. a note on the format)
  kSuspicious,  // needs code or a decision to load (unknown globals, whole modules, anomalies)
  kDangerous,   // runs code or reaches files/network when loaded by torch/pickle
};
// SeverityName: "info", "suspicious", "dangerous".
std::string_view SeverityName(Severity severity);
std::optional<Severity> ParseSeverity(std::string_view name);

struct Finding {
  std::string rule;     // rule id, e.g. "CKG-D001"
  Severity severity = Severity::kSuspicious;
  std::string message;  // one sentence, no trailing period
  std::string entry;    // zip entry, "" for the file itself; nested paths joined by " > "
  uint64_t offset = 0;  // byte offset in the (unwrapped) container bytes, or in the entry when inflated
  std::string global;   // "module.name" when the finding is about a global; else ""
  // The user's waiver that matched this finding (`scan --waive RULE[:GLOB]`
  // or a rules file's [[waive]], rules.h Waiver): "RULE[:GLOB]", "" when none
  // did. A waived finding is still reported, marked as such, but does not
  // count towards the verdict. Where it was given ("--waive", "FILE:LINE")
  // and the rules file's reason ("" for --waive) come with it.
  std::string waiver;
  std::string waiver_source;
  std::string waiver_reason;
};

enum class Verdict : uint8_t { kSafe, kSuspicious, kDangerous, kError };
// VerdictName: "safe", "suspicious", "dangerous", "error".
std::string_view VerdictName(Verdict verdict);

// FileReport is the scan of one file. `error` is set when the file could not
// be read completely (the findings before the problem are kept); verdict is
// then kError unless a finding is dangerous (a dangerous finding is never
// hidden behind an error).
struct FileReport {
  std::string path;
  std::string format;  // ContainerFormatName ("torch-zip", ...)
  Verdict verdict = Verdict::kSafe;
  std::vector<Finding> findings;
  std::optional<Error> error;
};

// VerdictOf computes the verdict from findings and error as described above
// (waived findings do not count; an error always does).
Verdict VerdictOf(const std::vector<Finding>& findings, const std::optional<Error>& error);

}  // namespace ckptguard::scanner

CKPTGUARD_API_END

#endif  // CKPTGUARD_SCANNER_FINDING_H_

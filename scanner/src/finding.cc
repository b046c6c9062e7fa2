#include "ckptguard/scanner/finding.h"

namespace ckptguard::scanner {

std::string_view SeverityName(Severity severity) {
  switch (severity) {
    case Severity::kInfo: return "info";
    case Severity::kSuspicious: return "suspicious";
    case Severity::kDangerous: return "dangerous";
  }
  return "suspicious";
}

std::optional<Severity> ParseSeverity(std::string_view name) {
  if (name == "info") return Severity::kInfo;
  if (name == "suspicious") return Severity::kSuspicious;
  if (name == "dangerous") return Severity::kDangerous;
  return std::nullopt;
}

std::string_view VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kSafe: return "safe";
    case Verdict::kSuspicious: return "suspicious";
    case Verdict::kDangerous: return "dangerous";
    case Verdict::kError: return "error";
  }
  return "error";
}

Verdict VerdictOf(const std::vector<Finding>& findings, const std::optional<Error>& error) {
  bool suspicious = false;
  for (const Finding& f : findings) {
    if (!f.waiver.empty()) continue;
    if (f.severity == Severity::kDangerous) return Verdict::kDangerous;
    suspicious = suspicious || f.severity == Severity::kSuspicious;
  }
  if (error) return Verdict::kError;
  return suspicious ? Verdict::kSuspicious : Verdict::kSafe;
}

}  // namespace ckptguard::scanner

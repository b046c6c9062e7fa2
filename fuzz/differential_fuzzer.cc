// Differential fuzz target: the hardened loader (LoadCheckpointBytes, whose
// VM is the PickleMachine's strict domain) against the scanner (ScanBytes,
// the machine's lenient domain). Both read the same containers and run the
// same machine, so they must agree on what a file imports or calls.
//
// Invariants checked (abort on violation):
//  * neither the load nor the scan is ever kInternal;
//  * what the loader refuses for a global or a call (kForbiddenGlobal), the
//    scanner reports: its verdict is not safe, and a global the loader names
//    ("global 'G'", a refused GLOBAL, STACK_GLOBAL or INST) is a finding's
//    global (in a TorchScript archive the CKG-F030 finding covers the
//    archive's own classes and builders);
//  * what the scanner calls safe, the loader does not refuse for a global or
//    a call, nor for a failure of the unpickler's stack rules (a stack
//    underflow, a missing MARK, a memo key never stored, an odd number of
//    items): the scanner reports those as CKG-F020. (The loader may still
//    refuse a safe file for a limit or a malformed tensor: the scanner does
//    not check tensor views.)
#include <cstdint>
#include <string>

#include "ckptguard/checkpoint.h"
#include "ckptguard/error.h"
#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/scan.h"
#include "fuzz_check.h"
#include "fuzz_limits.h"

namespace {

using ckptguard::Bytes;
using ckptguard::ErrorCode;
using ckptguard::fuzz::Check;
using ckptguard::scanner::FileReport;
using ckptguard::scanner::Finding;
using ckptguard::scanner::Verdict;

std::string Summary(const FileReport& r) {
  std::string out = std::string(ckptguard::scanner::VerdictName(r.verdict)) + " " + r.format;
  for (const Finding& f : r.findings) {
    out += "\n  " + f.rule + " [" + f.entry + "@" + std::to_string(f.offset) + "] " + f.global + ": " + f.message;
  }
  if (r.error) out += "\n  error: " + r.error->ToString();
  return out;
}

// NamesGlobal: the loader's error names a refused global ("global 'G'") and
// G is a finding's global. (G may itself hold quotes or NULs: the finding's
// name is looked up in the detail, not parsed out of it.)
bool NamesGlobal(const ckptguard::Error& e, const FileReport& r) {
  for (const Finding& f : r.findings) {
    if (!f.global.empty() && e.detail.find("global '" + f.global + "'") != std::string::npos) return true;
  }
  return false;
}

// StackRuleFailure: the machine's own failures (pickle_machine.h).
bool StackRuleFailure(const ckptguard::Error& e) {
  if (e.code != ErrorCode::kMalformed) return false;
  for (const char* needle : {"stack underflow", ": no MARK", "was never stored", "odd number of items",
                             "negative memo key"}) {
    if (e.detail.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes input(data, size);
  ckptguard::scanner::ScanOptions scan_options;
  scan_options.container = ckptguard::fuzz::SmallContainer(ckptguard::scanner::ScanContainerLimits());
  scan_options.max_values = 1 << 18;
  const FileReport report = ckptguard::scanner::ScanBytes(input, "fuzz-input", scan_options);
  const std::string summary = Summary(report);
  if (report.error) Check(report.error->code != ErrorCode::kInternal, "scan is never kInternal", summary);

  const auto loaded = ckptguard::LoadCheckpointBytes(input, ckptguard::fuzz::SmallLoadOptions(false));
  if (loaded) return 0;
  const ckptguard::Error& e = loaded.error();
  Check(e.code != ErrorCode::kInternal, "load is never kInternal", e.ToString());
  const std::string both = "loader: " + e.ToString() + "\nscanner: " + summary;
  if (e.code == ErrorCode::kForbiddenGlobal) {
    Check(report.verdict != Verdict::kSafe, "the scanner calls safe what the loader refuses as forbidden", both);
    if (e.detail.find("global '") != std::string::npos) {
      bool named = NamesGlobal(e, report);
      for (const Finding& f : report.findings) named = named || f.rule == "CKG-F030";
      Check(named, "the scanner does not name the global the loader refused", both);
    }
  }
  if (report.verdict == Verdict::kSafe) {
    Check(!StackRuleFailure(e), "the loader fails the unpickler's stack rules where the scanner saw none", both);
  }
  return 0;
}

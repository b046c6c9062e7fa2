// Fuzz target for the scanner (scanner/scan.h ScanBytes) and its agreement
// with the hardened loader (lib/checkpoint.h LoadCheckpointBytes).
//
// Invariants checked (abort on violation):
//  * the report: its verdict is VerdictOf(findings, error); no error is
//    kInternal; every finding about the file itself (entry "") has its offset
//    inside the input when the file has no gzip/bzip2/xz wrapper (offsets in
//    zip entries are in the entry's bytes, inflated or not, and are not
//    checked here); scanning twice gives the same verdict and findings;
//  * agreement, both ways, with the loader strict (anomalies refused, the
//    default) and with anomalies allowed:
//      - what the strict loader loads, the scanner calls safe
//        or suspicious, never dangerous, and, with declared records off
//        (weights-only), no suspicious or dangerous finding about a global
//        (the scanner's allowlist is the loader's, rules/allowlist.toml, so
//        every global the VM bound is allowed); with records on (the
//        default), what loads has no dangerous finding (a record is a call
//        of a data kind of rules/callables.toml, which the scanner calls
//        suspicious, never dangerous), except one about a global the load
//        only names as an Enum member's class or the member itself
//        (getattr(Class, 'NAME'): the scanner judges "Class.NAME" against
//        the denylist; the loader keeps the name and never resolves it);
//      - what the scanner calls dangerous, the strict loader refuses;
//      - what the scanner calls dangerous, the loader with anomalies allowed
//        refuses, or loads with at least one anomaly: the loader skips what
//        an anomaly marks, and never runs it (seed
//        malicious-torch_legacy_magic_payload.pt: a legacy file whose first
//        pickle, which torch runs before checking it is the magic number,
//        calls os.system; the loader only notes legacy.bad_magic).
//    ("safe" is not required of a strict load: the scanner also reports
//    things the loader tolerates without an anomaly, e.g. a TorchScript
//    archive's code/ entries, which the loader skips and never runs.)
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"
#include "ckptguard/container.h"
#include "ckptguard/error.h"
#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/rules.h"
#include "ckptguard/scanner/scan.h"
#include "fuzz_check.h"
#include "fuzz_limits.h"

namespace {

using ckptguard::Bytes;
using ckptguard::ErrorCode;
using ckptguard::LoadOptions;
using ckptguard::fuzz::Check;
using ckptguard::scanner::FileReport;
using ckptguard::scanner::Finding;
using ckptguard::scanner::Severity;
using ckptguard::scanner::Verdict;

LoadOptions LoaderOptions(bool allow_anomalies, bool records) {
  LoadOptions o = ckptguard::fuzz::SmallLoadOptions(allow_anomalies);
  o.records = records;
  return o;
}

ckptguard::scanner::ScanOptions ScannerOptions() {
  ckptguard::scanner::ScanOptions o;
  o.container = ckptguard::fuzz::SmallContainer(ckptguard::scanner::ScanContainerLimits());
  if (!ckptguard::fuzz::kDefaultLimits) o.max_values = 1 << 18;
  return o;
}

std::string Summary(const FileReport& r) {
  std::string out = std::string(ckptguard::scanner::VerdictName(r.verdict)) + " " + r.format;
  for (const Finding& f : r.findings) {
    out += "\n  " + f.rule + " " + std::string(ckptguard::scanner::SeverityName(f.severity)) + " [" + f.entry + "@" +
           std::to_string(f.offset) + "] " + f.global + ": " + f.message;
  }
  if (r.error) out += "\n  error: " + r.error->ToString();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes input(data, size);
  const ckptguard::scanner::ScanOptions scan_options = ScannerOptions();
  const FileReport report = ckptguard::scanner::ScanBytes(input, "fuzz-input", scan_options);
  const std::string summary = Summary(report);
  Check(report.verdict == ckptguard::scanner::VerdictOf(report.findings, report.error), "verdict is VerdictOf",
        summary);
  if (report.error) Check(report.error->code != ErrorCode::kInternal, "scan is never kInternal", summary);
  const ckptguard::Container container = ckptguard::OpenContainer(input, scan_options.container);
  if (container.wrappers.empty()) {
    for (const Finding& f : report.findings) {
      if (f.entry.empty()) Check(f.offset <= size, "finding offset inside the input", summary);
    }
  }
  Check(Summary(ckptguard::scanner::ScanBytes(input, "fuzz-input", scan_options)) == summary,
        "the scan is deterministic", summary);

  const bool dangerous = report.verdict == Verdict::kDangerous;
  {
    const auto loaded = ckptguard::LoadCheckpointBytes(input, LoaderOptions(false, true));
    if (loaded) {
      std::set<std::string> named;  // member records: "Class" and "Class.NAME"
      const ckptguard::ValueArena& values = loaded->values();
      for (size_t id = 0; id < values.size(); ++id) {
        const ckptguard::Value& v = values.Get(static_cast<ckptguard::ValueId>(id));
        if (v.kind == ckptguard::ValueKind::kRecord && v.index == static_cast<uint32_t>(ckptguard::RecordForm::kMember)) {
          named.insert(v.text);
          if (!v.items.empty()) named.insert(v.text + "." + values.Get(v.items[0]).text);
        }
      }
      for (const Finding& f : report.findings) {
        if (f.severity != Severity::kDangerous) continue;
        Check(!f.global.empty() && named.contains(f.global),
              "a strict load (records on) has no dangerous finding but about an Enum member's name", summary);
      }
    } else {
      Check(loaded.error().code != ErrorCode::kInternal, "load is never kInternal", loaded.error().ToString());
    }
  }
  for (const bool allow_anomalies : {false, true}) {
    const auto loaded = ckptguard::LoadCheckpointBytes(input, LoaderOptions(allow_anomalies, false));
    if (!loaded) {
      Check(loaded.error().code != ErrorCode::kInternal, "load is never kInternal", loaded.error().ToString());
      continue;
    }
    if (allow_anomalies) {
      // The loader skips what an anomaly marks (it never runs a legacy
      // file's magic-number pickle, say), so it may load a file whose
      // dangerous content sits there; never without an anomaly.
      Check(!dangerous || !loaded->anomalies().empty(),
            "the loader (anomalies allowed) loaded, without an anomaly, what the scanner calls dangerous", summary);
      continue;
    }
    Check(!dangerous, "the strict loader loaded what the scanner calls dangerous", summary);
    for (const Finding& f : report.findings) {
      Check(f.severity != Severity::kDangerous, "a strict load has no dangerous finding", summary);
      Check(f.global.empty() || f.severity == Severity::kInfo,
            "a strict load has no suspicious finding about a global", summary);
    }
  }
  return 0;
}

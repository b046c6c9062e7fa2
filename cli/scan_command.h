// `ckptguard scan PATH...`: find what loading model files would run.
#ifndef CKPTGUARD_CLI_SCAN_COMMAND_H_
#define CKPTGUARD_CLI_SCAN_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "ckptguard/budget.h"

namespace ckptguard::cli {

struct ScanFlags {
  std::vector<std::string> paths;
  std::string format = "text";
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  // "follow" (default): symbolic links in folders are followed once when
  // they stay inside the scanned folders or lead into the blobs of their
  // Hugging Face cache repository; "skip": each is a CKG-W002 finding.
  // --follow-symlinks is kept as a synonym of "follow".
  std::string symlinks = "follow";
  bool strict = false;
  std::vector<std::string> allow;
  std::vector<std::string> rules_files;
  unsigned jobs = 0;  // 0: every core
  std::string output;  // "" or "-": standard output
  // The least severe finding that makes the exit status 1: "safe" (any
  // finding at all, info included), "suspicious" (default), "dangerous".
  std::string fail_on = "suspicious";
  // RULE[:GLOB] (fnmatch): findings of RULE in files matching GLOB (as
  // --include matches) are reported as waived and do not count.
  std::vector<std::string> waive;
  std::string ca_file;  // https inputs: trust these PEM CAs instead of the system store
  std::string color = "auto";  // text reports: auto (a terminal, no NO_COLOR), always, never
  bool quiet = false;          // nothing on standard error but errors that stop the run
  bool verbose = false;        // each file's verdict on standard error as it is scanned
  BudgetLimits budget;
};

void AddScanCommand(CLI::App& app, ScanFlags& flags);
int RunScan(const ScanFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_SCAN_COMMAND_H_

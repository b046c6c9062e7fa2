// Inputs of `ckptguard scan` that are not paths: "-" (standard input), an
// http(s):// URL, and hf://[datasets/]ORG/REPO[@REVISION] (a Hugging Face
// repository, listed through the hub's API at HF_ENDPOINT, default
// https://huggingface.co, with HF_TOKEN as huggingface_hub sends it).
#ifndef CKPTGUARD_CLI_REMOTE_INPUTS_H_
#define CKPTGUARD_CLI_REMOTE_INPUTS_H_

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/report.h"
#include "ckptguard/scanner/scan.h"

namespace ckptguard::cli {

// IsRemoteInput: "-", http://..., https://..., hf://...
bool IsRemoteInput(std::string_view arg);

struct RemoteOptions {
  scanner::ScanOptions scan;
  // Whether a repository file is scanned (--include/--exclude on its path).
  std::function<bool(const std::string& path)> wanted;
  std::string ca_file;         // https: trust these CAs instead of the system store (--ca-file)
  bool progress = false;       // a progress line on standard error
  bool quiet = false;          // nothing on standard error (--quiet)
};

// ScanRemoteInputs reads each input (a download streams into a private
// temporary folder, removed as soon as its file is scanned; one file at a
// time, so the disk holds at most one) and returns one report per file,
// under its URL. Every failure (unreachable, HTTP error, too large) is a
// CKG-W006 report with an error; a repository with nothing to scan is
// CKG-W008.
// Repository files of no model format at all are left out (as in a
// folder) and listed in `skipped`.
std::vector<scanner::FileReport> ScanRemoteInputs(const std::vector<std::string>& inputs, const RemoteOptions& options,
                                                  std::vector<scanner::SkippedFile>& skipped);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_REMOTE_INPUTS_H_

// `ckptguard scan`: walk files and folders, scan each in parallel, report.
#include "scan_command.h"

#include <fnmatch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "ckptguard/scanner/report.h"
#include "ckptguard/scanner/scan.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

namespace fs = std::filesystem;
using scanner::FileReport;

bool Matches(const std::vector<std::string>& globs, const fs::path& path) {
  const std::string full = path.string();
  const std::string base = path.filename().string();
  for (const std::string& g : globs) {
    // A pattern with a '/' is matched against the whole path, others against
    // the file name.
    const std::string& subject = g.find('/') != std::string::npos ? full : base;
    if (fnmatch(g.c_str(), subject.c_str(), 0) == 0) return true;
  }
  return false;
}

// Collect lists the files to scan, in a stable order: files named on the
// command line always, files found in folders when the globs take them.
// `walked` says, per file, whether it was found in a folder.
std::vector<std::string> Collect(const ScanFlags& flags, std::vector<FileReport>& errors, size_t& skipped_links,
                                 std::vector<bool>& walked, std::vector<std::string>& not_regular) {
  std::vector<std::string> files;
  auto wanted = [&](const fs::path& p) {
    return (flags.include.empty() || Matches(flags.include, p)) && !Matches(flags.exclude, p);
  };
  for (const std::string& arg : flags.paths) {
    std::error_code ec;
    const fs::file_status st = fs::symlink_status(arg, ec);
    if (ec || !fs::exists(st)) {
      FileReport r;
      r.path = arg;
      r.format = "unknown";
      r.error = Error{ErrorCode::kIo, 0, arg, "no such file or folder"};
      r.verdict = scanner::Verdict::kError;
      errors.push_back(std::move(r));
      continue;
    }
    if (!fs::is_directory(fs::status(arg, ec))) {
      files.push_back(arg);
      walked.push_back(false);
      continue;
    }
    fs::directory_options options = fs::directory_options::skip_permission_denied;
    if (flags.follow_symlinks) options |= fs::directory_options::follow_directory_symlink;
    std::vector<std::string> found;
    for (fs::recursive_directory_iterator it(arg, options, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::directory_entry& e = *it;
      if (e.is_symlink(ec) && !flags.follow_symlinks) {
        ++skipped_links;
        continue;
      }
      if (!e.is_regular_file(ec)) {
        // FIFOs, devices and sockets are never opened (one could block the
        // scan forever): skipped, and named on stderr.
        if (!e.is_directory(ec) && wanted(e.path())) not_regular.push_back(e.path().string());
        continue;
      }
      if (wanted(e.path())) found.push_back(e.path().string());
    }
    if (ec) {
      FileReport r;
      r.path = arg;
      r.format = "unknown";
      r.error = Error{ErrorCode::kIo, 0, arg, "cannot walk the folder: " + ec.message()};
      r.verdict = scanner::Verdict::kError;
      errors.push_back(std::move(r));
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
    walked.resize(files.size(), true);
  }
  return files;
}

}  // namespace

void AddScanCommand(CLI::App& app, ScanFlags& flags) {
  CLI::App* cmd = app.add_subcommand("scan", "Find what loading model files would run, without running anything");
  cmd->footer(R"(What it does:
  Every pickle in every container of each file is executed symbolically: all
  streams, every zip entry that holds a pickle whatever its name, archives in
  archives, gzip/bzip2/xz-wrapped files, numpy object arrays, and bytes handed
  to pickle loaders. The target of every call opcode is resolved (REDUCE, INST,
  OBJ, NEWOBJ, NEWOBJ_EX, BUILD), STACK_GLOBAL operands are followed through the
  memo, and each global is judged by the rules: the allowlist of what
  checkpoints need (rules/allowlist.toml), the denylist of code-execution, file
  and network primitives (rules/denylist.toml), and suspicious for the rest
  (dangerous with --strict). Container anomalies (what torch reads differently),
  parse errors, TorchScript code and not-weights-only objects are findings too.
  Formats are decided by content, never by file name.

Verdicts: safe, suspicious, dangerous, error (could not be read completely).
Exit status: 0 all safe, 1 something suspicious or dangerous, 2 a file could
not be scanned.

Examples:
  ckptguard scan model.pt
  ckptguard scan --format json models/ | jq '.summary'
  ckptguard scan --format sarif --output results.sarif .   # for GitHub code scanning
  ckptguard scan --include '*.pt' --exclude '*/cache/*' checkpoints/
  ckptguard scan --allow myproject.config.Config --strict model.ckpt
)");
  cmd->add_option("paths", flags.paths, "Files and folders to scan (folders recursively)")
      ->required()
      ->type_name("PATH");
  cmd->add_option("--format", flags.format, "Report format")
      ->check(CLI::IsMember({"text", "json", "sarif"}))
      ->capture_default_str();
  cmd->add_option("--output,-o", flags.output, "Write the report to FILE instead of standard output")
      ->type_name("FILE");
  cmd->add_option("--include", flags.include,
                  "Only files matching GLOB in folders (fnmatch; a pattern with '/' matches the path)")
      ->type_name("GLOB");
  cmd->add_option("--exclude", flags.exclude, "Skip files matching GLOB in folders")->type_name("GLOB");
  cmd->add_flag("--follow-symlinks", flags.follow_symlinks, "Follow symbolic links in folders (default: skip them)");
  cmd->add_flag("--strict", flags.strict, "Globals on neither list are dangerous, not suspicious");
  cmd->add_option("--allow", flags.allow, "Treat the global module.name as safe (repeatable)")
      ->type_name("GLOBAL");
  cmd->add_option("--rules", flags.rules_files, "Add the rules of a TOML rules file (repeatable)")
      ->type_name("FILE");
  cmd->add_option("--jobs,-j", flags.jobs, "Files scanned at once (default: every core)");
  AddBudgetOptions(*cmd, flags.budget);
}

int RunScan(const ScanFlags& flags) {
  scanner::RuleSet rules = scanner::RuleSet::Builtin();
  for (const std::string& file : flags.rules_files) {
    if (Status s = rules.AddRulesFile(file); !s) {
      ReportError(file, s.error());
      return kExitError;
    }
  }
  for (const std::string& g : flags.allow) rules.Allow(g);
  rules.SetStrict(flags.strict);

  std::vector<FileReport> reports;
  size_t skipped_links = 0;
  std::vector<bool> walked;
  std::vector<std::string> not_regular;
  const std::vector<std::string> files = Collect(flags, reports, skipped_links, walked, not_regular);
  const size_t first = reports.size();
  reports.resize(first + files.size());

  scanner::ScanOptions options;
  options.rules = &rules;
  options.budget = flags.budget;
  const unsigned jobs = std::max(1u, std::min<unsigned>(flags.jobs != 0 ? flags.jobs : std::thread::hardware_concurrency(),
                                                          static_cast<unsigned>(std::max<size_t>(files.size(), 1))));
  std::atomic<size_t> next{0}, done{0};
  auto worker = [&] {
    for (size_t i = next++; i < files.size(); i = next++) {
      reports[first + i] = scanner::ScanFile(files[i], options);
      ++done;
    }
  };
  const bool progress = isatty(STDERR_FILENO) && files.size() > 1;
  std::vector<std::thread> threads;
  for (unsigned j = 1; j < jobs; ++j) threads.emplace_back(worker);
  std::thread progress_thread;
  std::atomic<bool> finished{false};
  if (progress) {
    progress_thread = std::thread([&] {
      while (!finished) {
        std::fprintf(stderr, "\rckptguard scan: %zu/%zu files", done.load(), files.size());
        std::fflush(stderr);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::fprintf(stderr, "\r%60s\r", "");
    });
  }
  worker();
  for (std::thread& t : threads) t.join();
  finished = true;
  if (progress_thread.joinable()) progress_thread.join();
  // Files met in folders that are no model format at all (not even a pickle
  // from their first byte: torch.load would run nothing) are left out of the
  // report; files named on the command line are always reported.
  size_t not_models = 0;
  std::vector<FileReport> kept;
  kept.reserve(reports.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    const bool from_walk = i >= first && walked[i - first];
    if (from_walk && reports[i].format == "unknown" && reports[i].findings.empty() && reports[i].error &&
        reports[i].error->code == ErrorCode::kUnsupportedFormat) {
      ++not_models;
      continue;
    }
    kept.push_back(std::move(reports[i]));
  }
  reports = std::move(kept);
  if (not_models > 0) {
    std::cerr << "ckptguard scan: left out " << not_models
              << " file(s) in folders that are not model files (no pickle, zip, numpy or safetensors content)\n";
  }
  for (const std::string& path : not_regular) {
    std::cerr << "ckptguard scan: skipped " << path << ": not a regular file (a FIFO, device or socket; never opened)\n";
  }
  if (skipped_links > 0) {
    std::cerr << "ckptguard scan: skipped " << skipped_links << " symbolic link(s) (--follow-symlinks to follow)\n";
  }

  std::string text;
  if (flags.format == "json") {
    text = scanner::ReportJson(reports);
  } else if (flags.format == "sarif") {
    text = scanner::ReportSarif(reports, rules, CKPTGUARD_VERSION);
  } else {
    text = scanner::ReportText(reports);
  }
  if (flags.output.empty() || flags.output == "-") {
    std::cout << text;
    if (!text.empty() && text.back() != '\n') std::cout << "\n";
    std::cout.flush();
  } else {
    // Written whole to a temporary file, then renamed: no half report.
    const std::string tmp = flags.output + ".tmp-ckptguard";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << text;
      if (!text.empty() && text.back() != '\n') out << "\n";
      out.flush();
      if (!out) {
        std::remove(tmp.c_str());
        ReportError(flags.output, Error{ErrorCode::kIo, 0, flags.output, "cannot write the report"});
        return kExitError;
      }
    }
    std::error_code ec;
    fs::rename(tmp, flags.output, ec);
    if (ec) {
      std::remove(tmp.c_str());
      ReportError(flags.output, Error{ErrorCode::kIo, 0, flags.output, "cannot write the report: " + ec.message()});
      return kExitError;
    }
  }
  bool error = false, finding = false;
  for (const FileReport& r : reports) {
    error = error || (r.verdict == scanner::Verdict::kError);
    finding = finding || r.verdict == scanner::Verdict::kSuspicious || r.verdict == scanner::Verdict::kDangerous;
  }
  return error ? kExitError : finding ? kExitFindings : kExitOk;
}

}  // namespace ckptguard::cli

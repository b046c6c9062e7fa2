// `ckptguard scan`: walk files and folders, scan each in parallel, report.
//
// Never fail open: the scan exits 0 only when it read everything it was
// asked to. Whatever the walk cannot or will not read (a symbolic link
// skipped, escaping the scanned folders, dangling or looping; a folder or
// file it may not read; a FIFO, socket or device; a path with nothing to
// scan; a shard index naming shards outside its folder or missing) is a
// finding of an input rule (CKG-W..., report.h, docs/rules.md) on a report
// of its own, so every format shows it, and all but loops and the notes on
// other names set an error, so the exit status is 2.
//
// Symbolic links (--symlinks=follow, the default) are followed once:
//   - a link whose target (fully resolved) lies inside one of the folders
//     named on the command line, or inside the blobs folder of the Hugging
//     Face cache repository the link sits in (<cache>/models--org--name/
//     snapshots/<rev>/... -> <cache>/models--org--name/blobs/...), is
//     followed; the target is read through its resolved path, so the link
//     cannot be swapped between the check and the read;
//   - any other target is an escape (CKG-W003): not read;
//   - a link to a folder above it, or a chain of links that never ends, is a
//     loop (CKG-W005); a link to a folder already walked is a note (CKG-W009);
//   - files are deduplicated by (device, inode): one file named by several
//     paths (two snapshots linking one blob) is read and scanned once and
//     reported under every name, each later name with a CKG-W009 note naming
//     the first (in sorted order).
// --symlinks=skip reports each link as CKG-W002 instead of following it.
#include "scan_command.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "ckptguard/atomic_file.h"
#include "ckptguard/dcp.h"
#include "ckptguard/input_file.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/version.h"
#include "ckptguard/zip_reader.h"
#include "ckptguard/printable.h"
#include "ckptguard/sharded.h"
#include "ckptguard/scanner/report.h"
#include "ckptguard/scanner/scan.h"
#include "cli_util.h"
#include "remote_inputs.h"

namespace ckptguard::cli {
namespace {

namespace fs = std::filesystem;
using scanner::FileReport;
using scanner::Finding;
using scanner::Severity;
using scanner::Verdict;

// Largest shard index read (real ones are well under 1 MiB).

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

struct FileId {
  uint64_t dev = 0;
  uint64_t ino = 0;
  auto operator<=>(const FileId&) const = default;
};

FileId IdOf(const struct stat& st) { return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)}; }

// A regular file to scan: the name it is reported under and the link-free
// path it is read from.
struct Candidate {
  std::string display;
  std::string real;
  FileId id;
  size_t root = 0;     // index of the command-line path it was found under
  bool walked = true;  // found in a folder (not named on the command line, not a listed shard)
  bool shard = false;  // named by a shard index
};

// IsUnder: `path` is `dir` or inside it (both absolute and link-free).
bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

// HfBlobsOf: for a folder inside a Hugging Face cache snapshot
// (<cache>/models--org--name/snapshots/<rev>/...), that repository's blobs
// folder; "" otherwise. Datasets and spaces are cached alike.
std::string HfBlobsOf(const fs::path& real_dir) {
  const std::vector<fs::path> parts(real_dir.begin(), real_dir.end());
  for (size_t i = parts.size(); i-- > 0;) {
    const std::string name = parts[i].string();
    const bool repo = name.starts_with("models--") || name.starts_with("datasets--") || name.starts_with("spaces--");
    if (repo && i + 1 < parts.size() && parts[i + 1] == "snapshots") {
      fs::path blobs;
      for (size_t j = 0; j <= i; ++j) blobs /= parts[j];
      return (blobs / "blobs").string();
    }
  }
  return "";
}

std::string KindOf(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

std::string Errno(int e) { return std::strerror(e); }

// RealPath resolves every link in `path`; errno is kept on failure.
std::optional<std::string> RealPath(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return std::nullopt;
  std::string out(resolved);
  std::free(resolved);
  return out;
}

std::string ReadLink(const std::string& path) {
  std::string buf(PATH_MAX, '\0');
  const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
  if (n < 0) return "?";
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// DcpItemReports reads a torch.distributed.checkpoint .metadata (as
// records: nothing is called) and scans every item range it names that the
// scan of its file (`scanned`: the link-free paths this run scans) does not
// already read as an archive of its own:
// FileSystemReader hands each range to torch.load, so a range is a file of
// its own to judge, whatever the rest of its file holds. A .metadata that
// does not read as a DCP Metadata gives nothing here (its own scan judges
// it). An item file outside the folder (CKG-W010: the loader reads it, the
// scan does not; an error) or missing (CKG-W011) is a report on that path; a
// range past its file's end is left out (torch.load of it reads too little
// and fails before anything runs).
std::vector<FileReport> DcpItemReports(const std::string& display, const std::string& real,
                                       const std::set<std::string>& scanned, const scanner::ScanOptions& options) {
  std::vector<FileReport> out;
  LoadOptions load;
  load.budget = options.budget;
  Result<Checkpoint> meta = LoadCheckpoint(real, load);
  if (!meta) return out;
  Result<DcpMetadata> md = ReadDcpMetadata(*meta);
  if (!md) return out;
  const fs::path display_dir = fs::path(display).parent_path();
  const fs::path real_dir = fs::path(real).parent_path();
  std::map<std::string, std::vector<EmbeddedZip>> archives;  // per file: what its own scan reads
  std::set<std::tuple<std::string, uint64_t, uint64_t>> done;
  std::set<std::string> reported;  // item files with a report of their own
  auto input_problem = [&](const std::string& file, const char* rule, const std::string& message, bool error) {
    if (!reported.insert(file).second) return;
    out.push_back(InputReport((display_dir / file).string(), "unknown", rule, message,
                              error ? std::optional<Error>(Error{ErrorCode::kIo, 0, "", std::string("not scanned (") + rule + ")"})
                                    : std::nullopt));
  };
  for (const auto& [key, item] : md->items) {
    if (!done.emplace(item.file, item.offset, item.length).second) continue;
    if (PathLeavesFolder(item.file)) {
      input_problem(item.file, scanner::kRuleShardEscapes,
                    display + " names \"" + item.file + "\", outside its folder: the loader reads it, the scan does not",
                    true);
      continue;
    }
    const std::string name = (display_dir / item.file).string() + "@" + std::to_string(item.offset);
    Result<MappedFile> file = MappedFile::Open((real_dir / item.file).string(), options.file);
    if (!file) {
      input_problem(item.file, scanner::kRuleShardMissing,
                    display + " names \"" + item.file + "\", which cannot be read here: " + file.error().ToString(),
                    false);
      continue;
    }
    const Bytes bytes = file->data();
    if (item.offset > bytes.size() || item.length > bytes.size() - item.offset) continue;
    // Read already: the file is scanned in this run and its scan reads the
    // range as an archive of its own (or the range is the whole file).
    const std::optional<std::string> item_real = RealPath((real_dir / item.file).string());
    bool read_already = false;
    if (item_real && scanned.contains(*item_real)) {
      auto [it, fresh] = archives.try_emplace(item.file);
      if (fresh) it->second = FindEmbeddedZips(bytes, options.container.max_nested);
      read_already = std::any_of(it->second.begin(), it->second.end(), [&](const EmbeddedZip& z) {
        return z.begin == item.offset && z.end == item.offset + item.length;
      }) || (item.offset == 0 && item.length == bytes.size());
    }
    if (read_already) continue;
    FileReport r = scanner::ScanBytes(bytes.subspan(item.offset, item.length), name, options);
    r.findings.insert(r.findings.begin(),
                      Finding{scanner::kRuleItemRange, Severity::kInfo,
                              "a byte range that " + display + " names (torch.load of it is how the checkpoint is "
                              "loaded), scanned on its own: " + std::to_string(item.length) + " bytes at " +
                              std::to_string(item.offset),
                              "", 0, "", "", "", ""});
    if (Status unchanged = file->CheckUnchanged(); !unchanged) {
      r.findings.clear();
      r.error = unchanged.error();
    }
    r.verdict = scanner::VerdictOf(r.findings, r.error);
    out.push_back(std::move(r));
  }
  return out;
}

// Walker lists what `scan` reads: candidates (regular files), shard indexes,
// and a report for everything it cannot or will not read.
class Walker {
 public:
  explicit Walker(const ScanFlags& flags) : flags_(flags), skip_links_(flags.symlinks == "skip") {}

  void Run() {
    const size_t num_roots = flags_.paths.size();
    seen_.assign(num_roots, 0);
    excluded_.assign(num_roots, 0);
    // Every folder named on the command line, resolved first: a link in one
    // may lead into another.
    for (const std::string& arg : flags_.paths) {
      struct stat st;
      if (::stat(arg.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        if (std::optional<std::string> real = RealPath(arg)) roots_.push_back(*real);
      }
    }
    for (size_t root = 0; root < num_roots; ++root) WalkRoot(root, flags_.paths[root]);
    adding_shards_ = true;
    for (size_t i = 0; i < indexes_.size(); ++i) CheckShardIndex(indexes_[i]);
    // Sorted per command-line path, in command-line order; listed shards last.
    std::stable_sort(candidates_.begin(), candidates_.end(), [](const Candidate& a, const Candidate& b) {
      return std::tie(a.shard, a.root, a.display) < std::tie(b.shard, b.root, b.display);
    });
  }

  const std::vector<Candidate>& candidates() const { return candidates_; }
  std::vector<std::pair<size_t, FileReport>>& problems() { return problems_; }
  std::vector<std::pair<size_t, FileReport>>& index_reports() { return index_reports_; }
  size_t seen(size_t root) const { return seen_[root]; }
  size_t excluded(size_t root) const { return excluded_[root]; }

 private:
  struct Folder {
    size_t root;
    std::string display;
    std::string real;
  };

  bool Wanted(const fs::path& p) const {
    return (flags_.include.empty() || Matches(flags_.include, p)) && !Matches(flags_.exclude, p);
  }

  void Problem(size_t root, const std::string& path, const std::string& format, const char* rule,
               const std::string& message, bool error) {
    problems_.emplace_back(
        root, InputReport(path, format, rule, message,
                          error ? std::optional<Error>(Error{ErrorCode::kIo, 0, "", std::string("not scanned (") + rule + ")"})
                                : std::nullopt));
  }

  void WalkRoot(size_t root, const std::string& arg) {
    struct stat lst;
    if (::lstat(arg.c_str(), &lst) != 0) {
      const int e = errno;
      Problem(root, arg, "unknown", scanner::kRuleUnreadable,
              (e == ENOENT ? std::string("no such file or folder") : "cannot read: " + Errno(e)) + "; not scanned", true);
      return;
    }
    ++seen_[root];
    struct stat st;
    if (::stat(arg.c_str(), &st) != 0) {
      const int e = errno;
      if (e == ELOOP) {
        Problem(root, arg, "symlink", scanner::kRuleLinkLoop, "symbolic link loop: resolving it never ends", false);
      } else if (e == ENOENT || e == ENOTDIR) {
        Problem(root, arg, "symlink", scanner::kRuleLinkDangling,
                "dangling symbolic link to " + ReadLink(arg) + ", which does not exist; not scanned", true);
      } else {
        Problem(root, arg, "unknown", scanner::kRuleUnreadable, "cannot read: " + Errno(e) + "; not scanned", true);
      }
      return;
    }
    const std::optional<std::string> real = RealPath(arg);
    if (!real) {
      Problem(root, arg, "unknown", scanner::kRuleUnreadable, "cannot resolve: " + Errno(errno) + "; not scanned", true);
      return;
    }
    if (S_ISDIR(st.st_mode)) {
      visited_.emplace(IdOf(st), arg);
      stack_.push_back({root, arg, *real});
      while (!stack_.empty()) {
        Folder folder = std::move(stack_.back());
        stack_.pop_back();
        WalkFolder(folder);
      }
    } else if (S_ISREG(st.st_mode)) {
      AddFile(root, arg, *real, st, /*walked=*/false);
    } else {
      Problem(root, arg, "special", scanner::kRuleNotRegular,
              "is " + KindOf(st.st_mode) + ", not a regular file: never opened, not scanned", true);
    }
  }

  void AddFile(size_t root, const std::string& display, const std::string& real, const struct stat& st, bool walked) {
    // A file this user may not read is a finding of the walk, like a folder
    // (ScanFile would only say it could not open it).
    if (::faccessat(AT_FDCWD, real.c_str(), R_OK, AT_EACCESS) != 0) {
      Problem(root, display, "unknown", scanner::kRuleUnreadable,
              "cannot read the file: " + Errno(errno) + "; not scanned", true);
      return;
    }
    if (!adding_shards_ && fs::path(display).filename().string().ends_with(".index.json")) {
      indexes_.push_back(Candidate{display, real, IdOf(st), root, walked});
      return;
    }
    candidates_.push_back(Candidate{display, real, IdOf(st), root, walked, adding_shards_});
  }

  void WalkFolder(const Folder& folder) {
    std::error_code ec;
    fs::directory_iterator it(folder.real, ec);
    if (ec) {
      Problem(folder.root, folder.display, "folder", scanner::kRuleUnreadable,
              "cannot read the folder: " + ec.message() + "; what it holds was not scanned", true);
      return;
    }
    std::vector<std::string> names;
    for (fs::directory_iterator end; it != end; it.increment(ec)) {
      names.push_back(it->path().filename().string());
    }
    if (ec) {
      Problem(folder.root, folder.display, "folder", scanner::kRuleUnreadable,
              "cannot read the whole folder: " + ec.message() + "; some of what it holds was not scanned", true);
    }
    std::sort(names.begin(), names.end());
    // Pushed in reverse so that sub-folders are walked in name order.
    std::vector<Folder> subfolders;
    for (const std::string& name : names) {
      const std::string display = (fs::path(folder.display) / name).string();
      const std::string physical = (fs::path(folder.real) / name).string();
      Entry(folder.root, display, physical, folder.real, /*walked=*/true, {}, &subfolders);
    }
    for (auto sub = subfolders.rbegin(); sub != subfolders.rend(); ++sub) stack_.push_back(std::move(*sub));
  }

  // Allowed: a link may lead to `real` (see the top of this file).
  bool Allowed(const std::string& real, const std::string& link_dir, const std::string& extra_root) const {
    for (const std::string& root : roots_) {
      if (IsUnder(real, root)) return true;
    }
    if (!extra_root.empty() && IsUnder(real, extra_root)) return true;
    const std::string blobs = HfBlobsOf(link_dir);
    return !blobs.empty() && IsUnder(real, blobs);
  }

  // Entry handles one name: `physical` is `real_dir` (link-free) + name.
  // Sub-folders go to `subfolders` (null: a folder is not wanted here, as for
  // a shard). Returns false when nothing exists at the name.
  bool Entry(size_t root, const std::string& display, const std::string& physical, const std::string& real_dir,
             bool walked, const std::string& extra_root, std::vector<Folder>* subfolders) {
    struct stat lst;
    if (::lstat(physical.c_str(), &lst) != 0) {
      const int e = errno;
      if (e == ENOENT || e == ENOTDIR) return false;
      Problem(root, display, "unknown", scanner::kRuleUnreadable, "cannot read: " + Errno(e) + "; not scanned", true);
      return true;
    }
    if (walked) ++seen_[root];
    std::string real = physical;
    struct stat st = lst;
    const bool link = S_ISLNK(lst.st_mode);
    if (link) {
      // --exclude applies to the link's own name; --include to files, so to
      // links whose target is (or, dangling, would be) a file.
      if (walked && Matches(flags_.exclude, display)) {
        ++excluded_[root];
        return true;
      }
      if (skip_links_) {
        struct stat target;
        const bool file = ::stat(physical.c_str(), &target) == 0 && S_ISREG(target.st_mode);
        if (walked && file && !Wanted(display)) {
          ++excluded_[root];
          return true;
        }
        Problem(root, display, "symlink", scanner::kRuleLinkSkipped,
                "symbolic link to " + ReadLink(physical) + " skipped (--symlinks=skip): not scanned", true);
        return true;
      }
      const std::optional<std::string> resolved = RealPath(physical);
      if (!resolved) {
        const int e = errno;
        if (walked && !Wanted(display)) {
          ++excluded_[root];
          return true;
        }
        if (e == ELOOP) {
          Problem(root, display, "symlink", scanner::kRuleLinkLoop,
                  "symbolic link loop: resolving " + ReadLink(physical) + " never ends", false);
        } else if (e == ENOENT || e == ENOTDIR) {
          Problem(root, display, "symlink", scanner::kRuleLinkDangling,
                  "dangling symbolic link to " + ReadLink(physical) + ", which does not exist; not scanned", true);
        } else {
          Problem(root, display, "symlink", scanner::kRuleUnreadable,
                  "cannot resolve the symbolic link: " + Errno(e) + "; not scanned", true);
        }
        return true;
      }
      real = *resolved;
      if (::stat(real.c_str(), &st) != 0) {
        Problem(root, display, "symlink", scanner::kRuleUnreadable,
                "cannot read the target of the symbolic link: " + Errno(errno) + "; not scanned", true);
        return true;
      }
      if (walked && !S_ISDIR(st.st_mode) && !Wanted(display)) {
        ++excluded_[root];
        return true;
      }
      if (!Allowed(real, real_dir, extra_root)) {
        Problem(root, display, "symlink", scanner::kRuleLinkEscapes,
                "symbolic link to " + real + ", outside the scanned folders: not followed, not scanned", true);
        return true;
      }
    }
    if (S_ISDIR(st.st_mode)) {
      if (subfolders == nullptr) return false;
      const FileId id = IdOf(st);
      if (link) {
        if (IsUnder(real_dir, real)) {
          Problem(root, display, "symlink", scanner::kRuleLinkLoop,
                  "symbolic link to " + real + ", a folder above it: a loop (its files are scanned under their other names)",
                  false);
          return true;
        }
        if (auto it = visited_.find(id); it != visited_.end()) {
          Problem(root, display, "symlink", scanner::kRuleSameFile,
                  "symbolic link to the folder " + it->second + ", which is scanned under that name", false);
          return true;
        }
      }
      visited_.emplace(id, display);
      subfolders->push_back(Folder{root, display, real});
      return true;
    }
    if (S_ISREG(st.st_mode)) {
      if (walked && !Wanted(display)) {
        ++excluded_[root];
        return true;
      }
      AddFile(root, display, real, st, walked);
      return true;
    }
    if (walked && !Wanted(display)) {
      ++excluded_[root];
      return true;
    }
    Problem(root, display, "special", scanner::kRuleNotRegular,
            "is " + KindOf(st.st_mode) + ", not a regular file: never opened, not scanned", true);
    return true;
  }

  // CheckShardIndex reads a *.index.json as loaders do (weight_map: tensor
  // name -> shard file, relative to the index's folder), reports what is
  // wrong with it, and adds every shard it lists to the files to scan.
  void CheckShardIndex(const Candidate& index) {
    FileReport r;
    r.path = index.display;
    r.format = "shard-index";
    auto add = [&](const char* rule, const std::string& message, bool error) {
      r.findings.push_back(Finding{rule, scanner::FindInputRule(rule)->severity, message, "", 0, "", "", "", ""});
      if (error && !r.error) r.error = Error{ErrorCode::kIo, 0, "", std::string("not everything it names was scanned (") + rule + ")"};
    };
    Result<ShardIndex> parsed = ReadShardIndex(index.real);
    std::set<std::string> shards;
    if (!parsed) {
      const Error& e = parsed.error();
      if (e.code == ErrorCode::kMalformed) {
        add(scanner::kRuleShardIndexBad,
            e.detail == "not valid JSON" ? "not JSON: its shards cannot be found"
                                         : "no \"weight_map\" object: its shards cannot be found",
            false);
      } else {
        add(scanner::kRuleUnreadable, "cannot read the shard index: " + e.ToString(), true);
      }
    } else {
      shards.insert(parsed->shards.begin(), parsed->shards.end());
      if (!parsed->not_strings.empty()) add(scanner::kRuleShardIndexBad, "a weight_map value is not a file name", false);
      for (const std::string& shard : parsed->escaping) {
        add(scanner::kRuleShardEscapes,
            "weight_map names \"" + shard + "\", outside the index's folder: a loader reads it, the scan does not", true);
      }
    }
    // Shards are looked up beside the index's name, not beside its target:
    // in a Hugging Face snapshot the index is a link into blobs/.
    const fs::path display_dir = fs::path(index.display).parent_path();
    const std::optional<std::string> index_dir = RealPath(display_dir.empty() ? "." : display_dir.string());
    const fs::path real_dir = index_dir ? fs::path(*index_dir) : fs::path(index.real).parent_path();
    for (const std::string& shard : shards) {
      const fs::path rel(shard);
      // The shard's own folder, resolved (a shard may sit in a sub-folder).
      const std::optional<std::string> shard_dir = RealPath((real_dir / rel).parent_path().string());
      bool found = false;
      if (shard_dir) {
        const std::string physical = (fs::path(*shard_dir) / rel.filename()).string();
        const std::string display = (display_dir / rel).string();
        if (!IsUnder(*shard_dir, real_dir.string()) && !Allowed(*shard_dir, real_dir.string(), real_dir.string())) {
          add(scanner::kRuleShardEscapes,
              "weight_map names \"" + shard + "\", whose folder leads outside the index's folder: not scanned", true);
          continue;
        }
        found = Entry(index.root, display, physical, *shard_dir, /*walked=*/false, real_dir.string(), nullptr);
      }
      if (!found) add(scanner::kRuleShardMissing, "weight_map names \"" + shard + "\", which is not a file here", false);
    }
    r.verdict = scanner::VerdictOf(r.findings, r.error);
    index_reports_.emplace_back(index.root, std::move(r));
  }

  const ScanFlags& flags_;
  const bool skip_links_;
  bool adding_shards_ = false;  // Entry is adding the shards of an index
  std::vector<std::string> roots_;  // the folders named on the command line, resolved
  std::map<FileId, std::string> visited_;  // folder -> the name it was walked under
  std::vector<Folder> stack_;
  std::vector<Candidate> candidates_;
  std::vector<Candidate> indexes_;
  std::vector<std::pair<size_t, FileReport>> problems_;
  std::vector<std::pair<size_t, FileReport>> index_reports_;
  std::vector<size_t> seen_;      // names met under each command-line path
  std::vector<size_t> excluded_;  // of which --include/--exclude left out
};

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

Folders, symbolic links and shard indexes:
  Folders are walked recursively. A symbolic link is followed once when its
  target lies inside a folder named on the command line or, in a Hugging Face
  cache (models--org--name/snapshots/REV/...), inside that repository's
  blobs/ folder; a file named by several links is scanned once and reported
  under every name. A link leading elsewhere (CKG-W003), a dangling link
  (CKG-W004), a folder that cannot be read (CKG-W006), a FIFO, socket or
  device (CKG-W007) and a path with no model file (CKG-W008) are findings and
  make the exit status 2: nothing is skipped silently. A shard index
  (*.index.json) is checked: every shard it lists is scanned, and shards
  outside its folder (CKG-W010) or missing (CKG-W011) are findings. Every rule
  is explained in docs/rules.md.

Verdicts: safe, suspicious, dangerous, error (could not be read completely).
Exit status: 0 everything asked for was read and nothing reached --fail-on;
1 everything was read and a file is suspicious or dangerous (with
--fail-on dangerous: dangerous only; --fail-on safe: any finding at all);
2 something could not be read or was not scanned (an unreadable, skipped or
escaping path, an empty scan), whatever else was found; 3 the command line
is wrong.

Waivers (--waive RULE[:GLOB], repeatable): a finding whose rule id matches
RULE (fnmatch: CKG-F080, 'CKG-A*') in a file matching GLOB (as --include:
a pattern with '/' matches the path, others the file name; no GLOB: every
file) is still reported, marked waived (JSON "waived", SARIF suppressions),
but does not count towards the file's verdict or the exit status. A waiver
never hides a file that could not be read. A --rules file can hold waivers
too, each with the reason it was accepted (docs/rules.md):
  [[waive]]
  rule = "CKG-F080"
  path = "legacy/*.pt"
  reason = "reviewed 2026-11: an old exporter's padding, not a payload"

Examples:
  ckptguard scan model.pt
  ckptguard scan --format json models/ | jq '.summary'
  ckptguard scan --format sarif --output results.sarif .   # for GitHub code scanning
  ckptguard scan --include '*.pt' --exclude '*/cache/*' checkpoints/
  ckptguard scan --allow myproject.config.Config --strict model.ckpt
  ckptguard scan --fail-on dangerous --waive 'CKG-A*:legacy/*' models/   # a CI gate
  ckptguard scan hf://openai-community/gpt2 --include '*.bin'       # a Hugging Face repository
  curl -sL https://example.org/model.pt | ckptguard scan -           # standard input

Remote inputs:
  An https:// URL is downloaded (redirects followed) into a private
  temporary folder, scanned and removed; reports name the URL.
  hf://[datasets/]ORG/REPO[@REVISION] lists the repository through the
  Hugging Face API at HF_ENDPOINT (default https://huggingface.co; a mirror
  works) with HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) for private and gated
  repositories, then scans every file --include/--exclude let through (they
  match the path in the repository), one download at a time, at the commit
  the listing names. The token is sent to the hub only, never to a host a
  redirect leads to. Plain http:// is refused except to a loopback address.
  - reads standard input (into the same kind of temporary folder), at most
  --max-read-bytes. A download or listing
  that fails is a CKG-W006 finding (exit status 2).
)");
  cmd->add_option("paths", flags.paths,
                  "Files and folders to scan (folders recursively); - for standard input; https:// URLs; "
                  "hf://[datasets/]ORG/REPO[@REVISION] for a Hugging Face repository")
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
  cmd->add_option("--symlinks", flags.symlinks,
                  "follow: follow symbolic links that stay inside the scanned folders or lead into their Hugging Face "
                  "cache blobs (others are findings); skip: report every link as a finding (exit status 2)")
      ->check(CLI::IsMember({"follow", "skip"}))
      ->capture_default_str();
  cmd->add_flag_callback(
      "--follow-symlinks", [&flags] { flags.symlinks = "follow"; }, "Same as --symlinks=follow (the default)");
  cmd->add_flag("--strict", flags.strict, "Globals on neither list are dangerous, not suspicious");
  cmd->add_option("--allow", flags.allow, "Treat the global module.name as safe (repeatable)")
      ->type_name("GLOBAL");
  cmd->add_option("--rules", flags.rules_files, "Add the rules of a TOML rules file (repeatable)")
      ->type_name("FILE");
  cmd->add_option("--jobs,-j", flags.jobs, "Files scanned at once (default: every core)");
  cmd->add_option("--fail-on", flags.fail_on,
                  "Least severe finding that makes the exit status 1: safe (any finding), suspicious, dangerous")
      ->check(CLI::IsMember({"safe", "suspicious", "dangerous"}))
      ->capture_default_str();
  cmd->add_option("--color", flags.color,
                  "Colour verdicts in text reports: auto (standard output is a terminal and NO_COLOR is unset), "
                  "always, never (NO_COLOR set: never)")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_flag("--quiet,-q", flags.quiet, "Nothing on standard error but errors that stop the run: no notes, no progress");
  cmd->add_flag("--verbose,-v", flags.verbose, "Each file's verdict on standard error as it is scanned");
  cmd->add_option("--ca-file", flags.ca_file,
                  "https:// and hf:// inputs: trust the CAs in this PEM file instead of the system store")
      ->type_name("FILE");
  cmd->add_option("--waive", flags.waive,
                  "Report findings of RULE (in files matching GLOB) as waived: they do not count (repeatable)")
      ->type_name("RULE[:GLOB]");
  AddBudgetOptions(*cmd, flags.budget);
}

namespace {

// Waive marks the findings the waivers match (the --waive options first,
// then the rules files' [[waive]] entries; the first that matches names the
// finding's waiver) and recomputes the verdicts they change.
void Waive(const std::vector<std::string>& options, const std::vector<scanner::Waiver>& from_rules,
           std::vector<FileReport>& reports) {
  std::vector<scanner::Waiver> waivers;
  for (const std::string& w : options) {
    const size_t colon = w.find(':');
    waivers.push_back({w.substr(0, colon), colon == std::string::npos ? std::string() : w.substr(colon + 1), "", "--waive"});
  }
  waivers.insert(waivers.end(), from_rules.begin(), from_rules.end());
  for (FileReport& r : reports) {
    bool changed = false;
    for (scanner::Finding& f : r.findings) {
      for (const scanner::Waiver& w : waivers) {
        if (fnmatch(w.rule.c_str(), f.rule.c_str(), 0) != 0) continue;
        if (!w.path.empty() && !Matches({w.path}, fs::path(r.path))) continue;
        f.waiver = w.Text();
        f.waiver_source = w.source;
        f.waiver_reason = w.reason;
        changed = true;
        break;
      }
    }
    if (changed) r.verdict = scanner::VerdictOf(r.findings, r.error);
  }
}

// Fails is true when `r` has a finding that --fail-on counts.
bool Fails(const FileReport& r, const std::string& fail_on) {
  if (fail_on == "dangerous") return r.verdict == Verdict::kDangerous;
  if (fail_on == "suspicious") return r.verdict == Verdict::kSuspicious || r.verdict == Verdict::kDangerous;
  return r.verdict != Verdict::kSafe ||
         std::any_of(r.findings.begin(), r.findings.end(), [](const scanner::Finding& f) { return f.waiver.empty(); });
}

}  // namespace

int RunScan(const ScanFlags& all_flags) {
  // Standard input, URLs and Hugging Face repositories are read apart from
  // the paths (remote_inputs.h); the rest of the scan sees the paths only.
  ScanFlags flags = all_flags;
  std::vector<std::string> remote_inputs;
  flags.paths.clear();
  for (const std::string& p : all_flags.paths) (IsRemoteInput(p) ? remote_inputs : flags.paths).push_back(p);
  // The built-in rules as they are need no copy: the scan parses them when a
  // file first needs them (a start-up cost a tiny file would otherwise pay).
  std::optional<scanner::RuleSet> custom;
  if (!flags.rules_files.empty() || !flags.allow.empty() || flags.strict) {
    custom = scanner::RuleSet::Builtin();
    for (const std::string& file : flags.rules_files) {
      if (Status s = custom->AddRulesFile(file); !s) {
        ReportError(file, s.error());
        return kExitError;
      }
    }
    for (const std::string& g : flags.allow) custom->Allow(g);
    custom->SetStrict(flags.strict);
  }

  Walker walker(flags);
  walker.Run();
  const std::vector<Candidate>& candidates = walker.candidates();
  // One scan per file: candidates with the same (device, inode) share it.
  std::vector<std::string> files;                // link-free paths to scan
  std::vector<size_t> scan_of(candidates.size());  // candidate -> index in files
  std::vector<size_t> first_of;                  // index in files -> the first candidate naming it
  std::map<FileId, size_t> by_id;
  std::set<std::string> names;  // a shard the walk found too is one name
  std::vector<bool> duplicate(candidates.size(), false);
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (!names.insert(candidates[i].display).second) {
      duplicate[i] = true;
      continue;
    }
    auto [it, inserted] = by_id.emplace(candidates[i].id, files.size());
    if (inserted) {
      files.push_back(candidates[i].real);
      first_of.push_back(i);
    }
    scan_of[i] = it->second;
  }
  std::vector<FileReport> scanned(files.size());

  scanner::ScanOptions options;
  options.rules = custom ? &*custom : nullptr;
  options.budget = flags.budget;
  const unsigned jobs = std::max(1u, std::min<unsigned>(flags.jobs != 0 ? flags.jobs : std::thread::hardware_concurrency(),
                                                          static_cast<unsigned>(std::max<size_t>(files.size(), 1))));
  std::atomic<size_t> next{0}, done{0};
  std::mutex verbose_lock;
  auto worker = [&] {
    for (size_t i = next++; i < files.size(); i = next++) {
      const auto start = std::chrono::steady_clock::now();
      scanned[i] = scanner::ScanFile(files[i], options);
      ++done;
      if (flags.verbose) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        std::lock_guard<std::mutex> hold(verbose_lock);
        std::cerr << "ckptguard scan: " << Printable(files[i]) << ": " << scanner::VerdictName(scanned[i].verdict) << " ("
                  << scanned[i].findings.size() << " findings, " << ms.count() << " ms)\n";
      }
    }
  };
  const bool progress = isatty(STDERR_FILENO) && files.size() > 1 && !flags.quiet && !flags.verbose;
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

  // Reports: what could not be read first, then shard indexes, then files
  // under every name. Files met in folders that are no model format at all
  // (not even a pickle from their first byte: torch.load would run nothing)
  // are left out; files named on the command line or by a shard index are
  // always reported.
  const size_t num_roots = flags.paths.size();
  std::vector<size_t> reported(num_roots, 0), not_models_under(num_roots, 0);
  std::vector<FileReport> reports;
  for (auto& [root, report] : walker.problems()) {
    ++reported[root];
    reports.push_back(std::move(report));
  }
  for (auto& [root, report] : walker.index_reports()) {
    ++reported[root];
    reports.push_back(std::move(report));
  }
  size_t not_models = 0;
  std::vector<scanner::SkippedFile> skipped;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (duplicate[i]) continue;
    const Candidate& c = candidates[i];
    const FileReport& base = scanned[scan_of[i]];
    if (c.walked && IsNotAModel(base)) {
      ++not_models;
      ++not_models_under[c.root];
      skipped.push_back({c.display, kNotAModelReason});
      continue;
    }
    FileReport report = base;
    report.path = c.display;
    const size_t first = first_of[scan_of[i]];
    if (first != i) {
      report.findings.push_back(Finding{scanner::kRuleSameFile, Severity::kInfo,
                                        "the same file as " + candidates[first].display + " (read and scanned once)",
                                        "", 0, "", "", "", ""});
    }
    ++reported[c.root];
    reports.push_back(std::move(report));
  }
  // torch.distributed.checkpoint folders: the item ranges their .metadata
  // names, where a file's own scan does not read them as archives.
  const std::set<std::string> scanned_paths(files.begin(), files.end());
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (duplicate[i] || fs::path(candidates[i].display).filename() != ".metadata") continue;
    for (FileReport& r : DcpItemReports(candidates[i].display, candidates[i].real, scanned_paths, options)) {
      ++reported[candidates[i].root];
      reports.push_back(std::move(r));
    }
  }
  // An empty scan is never clean: a command-line path under which nothing
  // was reported is a finding with an error.
  std::vector<FileReport> empties;
  for (size_t root = 0; root < num_roots; ++root) {
    if (reported[root] > 0) continue;
    std::string message;
    if (walker.seen(root) <= 1) {
      message = "empty folder: nothing to scan";
    } else {
      message = "no model file to scan here (" + std::to_string(not_models_under[root]) + " not model files, " +
                std::to_string(walker.excluded(root)) + " left out by --include/--exclude)";
    }
    if (!flags.quiet) std::cerr << "ckptguard scan: " << Printable(flags.paths[root]) << ": " << Printable(message) << "\n";
    empties.push_back(InputReport(flags.paths[root], "folder", scanner::kRuleNothingToScan, message,
                                  Error{ErrorCode::kIo, 0, "", std::string("nothing scanned (") + scanner::kRuleNothingToScan + ")"}));
  }
  reports.insert(reports.begin(), std::make_move_iterator(empties.begin()), std::make_move_iterator(empties.end()));
  if (not_models > 0 && !flags.quiet) {
    std::cerr << "ckptguard scan: left out " << not_models
              << " file(s) in folders that are not model files (no pickle, zip, numpy or safetensors content)\n";
  }

  if (!remote_inputs.empty()) {
    RemoteOptions remote;
    remote.scan = options;
    remote.ca_file = flags.ca_file;
    remote.progress = isatty(STDERR_FILENO) != 0 && !flags.quiet;
    remote.quiet = flags.quiet;
    remote.wanted = [&flags](const std::string& path) {
      return (flags.include.empty() || Matches(flags.include, fs::path(path))) && !Matches(flags.exclude, fs::path(path));
    };
    for (FileReport& r : ScanRemoteInputs(remote_inputs, remote, skipped)) {
      if (flags.verbose) std::cerr << "ckptguard scan: " << Printable(r.path) << ": " << scanner::VerdictName(r.verdict) << "\n";
      reports.push_back(std::move(r));
    }
  }
  Waive(flags.waive, custom ? custom->waivers() : std::vector<scanner::Waiver>{}, reports);
  std::string text;
  if (flags.format == "json") {
    text = scanner::ReportJson(reports, skipped);
  } else if (flags.format == "sarif") {
    text = scanner::ReportSarif(reports, custom ? *custom : scanner::RuleSet::Builtin(), CKPTGUARD_VERSION, skipped);
  } else {
    // Colour only for a terminal that is the report's destination, and
    // never with NO_COLOR (https://no-color.org) set.
    const char* no_color = std::getenv("NO_COLOR");
    const bool to_terminal = (flags.output.empty() || flags.output == "-") && isatty(STDOUT_FILENO) != 0;
    const bool color = (no_color == nullptr || *no_color == '\0') &&
                       (flags.color == "always" || (flags.color == "auto" && to_terminal));
    text = scanner::ReportText(reports, skipped, color);
  }
  if (flags.output.empty() || flags.output == "-") {
    std::cout << text;
    if (!text.empty() && text.back() != '\n') std::cout << "\n";
    std::cout.flush();
  } else {
    // Written whole through the one atomic writer: no half report, no
    // planted temporary or link written through, the old file's mode kept.
    if (!text.empty() && text.back() != '\n') text.push_back('\n');
    Status written =
        WriteFileAtomically(flags.output, Bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    if (!written) {
      ReportError(flags.output, written.error());
      return kExitError;
    }
  }
  bool error = false, finding = false;
  for (const FileReport& r : reports) {
    error = error || r.verdict == Verdict::kError;
    finding = finding || Fails(r, flags.fail_on);
  }
  return error ? kExitError : finding ? kExitFindings : kExitOk;
}

}  // namespace ckptguard::cli

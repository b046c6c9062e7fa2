#include "remote_inputs.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "ckptguard/atomic_file.h"
#include "ckptguard/daemon/client.h"
#include "ckptguard/printable.h"
#include "ckptguard/scanner/report.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

namespace fs = std::filesystem;
using scanner::FileReport;

constexpr uint64_t kMaxListingBytes = uint64_t{64} << 20;  // a hub listing (JSON)

// Failure is the report of an input that could not be read (also said on
// standard error unless --quiet).
FileReport Failure(const RemoteOptions& options, const std::string& path, const char* rule, const std::string& message,
                   ErrorCode code = ErrorCode::kIo) {
  if (!options.quiet) std::cerr << "ckptguard scan: " << Printable(path) << ": " << Printable(message) << "\n";
  return InputReport(path, "unknown", rule, message, Error{code, 0, "", message});
}

// PercentEncode escapes everything but RFC 3986's unreserved characters
// (and '/' when `keep_slash`), as huggingface_hub quotes paths and revisions.
std::string PercentEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// TempFolder is a private folder (mkdtemp, 0700) under TMPDIR, removed with
// everything in it when it goes.
class TempFolder {
 public:
  TempFolder() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = (fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "ckptguard-scan-XXXXXX").string();
    if (::mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  ~TempFolder() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

daemon::ClientOptions ClientOptionsFor(const RemoteOptions& options, const std::string& token, const std::string& name) {
  daemon::ClientOptions client;
  client.ca_file = options.ca_file;
  client.token = token;
  client.max_response_bytes = kMaxListingBytes;
  client.max_download_bytes = options.scan.budget.max_read_bytes;
  if (options.progress) {
    client.progress = [name](uint64_t done, uint64_t total) {
      if (total > 0) {
        std::fprintf(stderr, "\rckptguard scan: downloading %s: %.1f of %.1f MB", name.c_str(), static_cast<double>(done) / 1e6,
                     static_cast<double>(total) / 1e6);
      } else {
        std::fprintf(stderr, "\rckptguard scan: downloading %s: %.1f MB", name.c_str(), static_cast<double>(done) / 1e6);
      }
      std::fflush(stderr);
    };
  }
  return client;
}

void EndProgress(const RemoteOptions& options) {
  if (options.progress) std::fprintf(stderr, "\r%100s\r", "");
}

// ScanUrl downloads `url` into `folder`, scans it and reports it as `display`.
FileReport ScanUrl(const std::string& url, const std::string& display, const std::string& token,
                   const RemoteOptions& options, const TempFolder& folder) {
  if (folder.path().empty()) return Failure(options, display, scanner::kRuleUnreadable, "cannot make a temporary folder");
  const std::string local = (fs::path(folder.path()) / "download").string();
  Result<AtomicFile> file = AtomicFile::Create(local);
  if (!file) return Failure(options, display, scanner::kRuleUnreadable, file.error().ToString());
  std::string sha256;
  Result<daemon::Response> got = daemon::DownloadUrl(url, ClientOptionsFor(options, token, display), *file, sha256);
  EndProgress(options);
  if (!got) return Failure(options, display, scanner::kRuleUnreadable, "cannot download " + url + ": " + got.error().ToString());
  if (got->status != 200) {
    return Failure(options, display, scanner::kRuleUnreadable, "cannot download " + url + ": HTTP " + std::to_string(got->status));
  }
  if (Status committed = file->Commit(); !committed) {
    return Failure(options, display, scanner::kRuleUnreadable, committed.error().ToString());
  }
  FileReport report = scanner::ScanFile(local, options.scan);
  report.path = display;
  std::error_code ec;
  fs::remove(local, ec);
  return report;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

// ScanHub lists hf://[datasets/]ORG/REPO[@REVISION] through the hub's API and
// scans every file --include/--exclude let through, at the listed commit.
std::vector<FileReport> ScanHub(const std::string& arg, const RemoteOptions& options, const TempFolder& folder,
                                std::vector<scanner::SkippedFile>& skipped) {
  std::string rest = arg.substr(5);
  std::string kind = "models";
  if (rest.starts_with("datasets/")) {
    kind = "datasets";
    rest = rest.substr(9);
  } else if (rest.starts_with("models/")) {
    rest = rest.substr(7);
  }
  std::string revision;
  if (const size_t at = rest.find('@'); at != std::string::npos) {
    revision = rest.substr(at + 1);
    rest.resize(at);
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const bool valid_repo = !rest.empty() && std::count(rest.begin(), rest.end(), '/') <= 1 &&
                          rest.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/") ==
                              std::string::npos &&
                          rest.front() != '/' && rest.find("..") == std::string::npos;
  if (!valid_repo) {
    return {Failure(options, arg, scanner::kRuleUnreadable, "not a Hugging Face repository: hf://[datasets/]ORG/REPO[@REVISION]",
                    ErrorCode::kInvalidArgument)};
  }
  std::string endpoint = Env("HF_ENDPOINT");
  if (endpoint.empty()) endpoint = "https://huggingface.co";
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  std::string token = Env("HF_TOKEN");
  if (token.empty()) token = Env("HUGGING_FACE_HUB_TOKEN");
  const std::string api = endpoint + "/api/" + kind + "/" + rest +
                          (revision.empty() ? std::string() : "/revision/" + PercentEncode(revision, false));
  Result<daemon::Response> listing = daemon::GetUrl(api, ClientOptionsFor(options, token, arg));
  if (!listing) return {Failure(options, arg, scanner::kRuleUnreadable, "cannot list the repository: " + listing.error().ToString())};
  if (listing->status != 200) {
    std::string why = "HTTP " + std::to_string(listing->status) + " from " + api;
    if (listing->status == 401 || listing->status == 403) why += " (a private or gated repository: set HF_TOKEN)";
    if (listing->status == 404) why += " (no such repository or revision)";
    return {Failure(options, arg, scanner::kRuleUnreadable, "cannot list the repository: " + why)};
  }
  const nlohmann::json doc = nlohmann::json::parse(listing->body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("siblings") || !doc["siblings"].is_array()) {
    return {Failure(options, arg, scanner::kRuleUnreadable, "the hub's answer for " + api + " is not a repository listing",
                    ErrorCode::kMalformed)};
  }
  // Files are fetched at the commit the listing names, so that all of them
  // come from one revision even if the branch moves meanwhile.
  std::string commit = revision.empty() ? "main" : revision;
  if (doc.contains("sha") && doc["sha"].is_string()) commit = doc["sha"].get<std::string>();
  std::vector<FileReport> reports;
  size_t listed = 0, not_models = 0;
  const std::string shown = "hf://" + (kind == "datasets" ? std::string("datasets/") : std::string()) + rest +
                            (revision.empty() ? std::string() : "@" + revision) + "/";
  for (const nlohmann::json& sibling : doc["siblings"]) {
    if (!sibling.is_object() || !sibling.contains("rfilename") || !sibling["rfilename"].is_string()) continue;
    const std::string name = sibling["rfilename"].get<std::string>();
    ++listed;
    if (name.empty() || name.front() == '/' || name.find("..") != std::string::npos) {
      reports.push_back(Failure(options, shown + name, scanner::kRuleUnreadable, "the listing names a path outside the repository",
                                ErrorCode::kMalformed));
      continue;
    }
    if (options.wanted && !options.wanted(name)) continue;
    const std::string url = endpoint + (kind == "datasets" ? "/datasets/" : "/") + rest + "/resolve/" +
                            PercentEncode(commit, false) + "/" + PercentEncode(name, true);
    FileReport report = ScanUrl(url, shown + name, token, options, folder);
    // As in a folder: a file of no model format at all (a README, a JSON
    // config: torch.load would run nothing from it) is left out, counted.
    if (IsNotAModel(report)) {
      ++not_models;
      skipped.push_back({report.path, kNotAModelReason});
      continue;
    }
    reports.push_back(std::move(report));
  }
  if (not_models > 0 && !options.quiet) {
    std::cerr << "ckptguard scan: " << Printable(arg) << ": left out " << not_models
              << " file(s) that are not model files (no pickle, zip, numpy or safetensors content)\n";
  }
  if (reports.empty()) {
    FileReport r = Failure(options, arg, scanner::kRuleNothingToScan,
                           "no model file to scan in the repository (" + std::to_string(listed) + " listed, " +
                               std::to_string(not_models) + " not model files, the rest left out by --include/--exclude)");
    if (listed == 0) r.findings.back().message = "empty repository: nothing to scan";
    reports.push_back(std::move(r));
  }
  return reports;
}

// ScanStdin copies standard input (at most --max-read-bytes) into `folder`,
// as a download is, and scans it as "-": memory holds one chunk at a time.
FileReport ScanStdin(const RemoteOptions& options, const TempFolder& folder) {
  if (folder.path().empty()) return Failure(options, "-", scanner::kRuleUnreadable, "cannot make a temporary folder");
  const std::string local = (fs::path(folder.path()) / "stdin").string();
  Result<AtomicFile> file = AtomicFile::Create(local);
  if (!file) return Failure(options, "-", scanner::kRuleUnreadable, file.error().ToString());
  const uint64_t limit = options.scan.budget.max_read_bytes;
  uint64_t total = 0;
  std::vector<uint8_t> chunk(size_t{1} << 20);
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Failure(options, "-", scanner::kRuleUnreadable, std::string("cannot read standard input: ") + std::strerror(errno));
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > limit) {
      return Failure(options, "-", scanner::kRuleUnreadable,
                     "standard input is larger than --max-read-bytes (" + std::to_string(limit) + ")",
                     ErrorCode::kLimitExceeded);
    }
    if (Status written = file->Write(Bytes(chunk.data(), static_cast<size_t>(n))); !written) {
      return Failure(options, "-", scanner::kRuleUnreadable, written.error().ToString());
    }
  }
  if (Status committed = file->Commit(); !committed) return Failure(options, "-", scanner::kRuleUnreadable, committed.error().ToString());
  FileReport report = scanner::ScanFile(local, options.scan);
  report.path = "-";
  std::error_code ec;
  fs::remove(local, ec);
  return report;
}

}  // namespace

bool IsRemoteInput(std::string_view arg) {
  return arg == "-" || arg.starts_with("https://") || arg.starts_with("http://") || arg.starts_with("hf://");
}

std::vector<FileReport> ScanRemoteInputs(const std::vector<std::string>& inputs, const RemoteOptions& options,
                                         std::vector<scanner::SkippedFile>& skipped) {
  std::vector<FileReport> reports;
  std::optional<TempFolder> folder;
  for (const std::string& input : inputs) {
    if (!folder) folder.emplace();
    if (input == "-") {
      reports.push_back(ScanStdin(options, *folder));
      continue;
    }
    if (input.starts_with("hf://")) {
      for (FileReport& r : ScanHub(input, options, *folder, skipped)) reports.push_back(std::move(r));
    } else {
      reports.push_back(ScanUrl(input, input, "", options, *folder));
    }
  }
  return reports;
}

}  // namespace ckptguard::cli

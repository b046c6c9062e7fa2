// Helpers shared by the test executables: paths to the test data, running a
// command and capturing its output, listing corpus files.
#ifndef CKPTGUARD_TESTS_TEST_UTIL_H_
#define CKPTGUARD_TESTS_TEST_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace ckptguard::testing {

inline std::filesystem::path DataDir() { return CKPTGUARD_TEST_DATA_DIR; }
inline std::filesystem::path CorpusDir() { return DataDir() / "corpus"; }
// SharedCorpusDir is ../shared/corpus beside the clone, which may be absent.
inline std::filesystem::path SharedCorpusDir() {
  return std::filesystem::path(CKPTGUARD_SOURCE_DIR) / ".." / "shared" / "corpus";
}

// ShellQuote wraps `s` in single quotes for /bin/sh.
inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
};

// Run executes `command` with /bin/sh, capturing stdout (stderr goes to the
// test log unless the command redirects it).
inline CommandResult Run(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) result.out.append(buf.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// CorpusModelFiles lists the model files of the corpus copy (not the .json
// expectations and manifests), sorted.
inline std::vector<std::filesystem::path> CorpusModelFiles() {
  std::vector<std::filesystem::path> files;
  for (const char* sub : {"benign", "malicious"}) {
    for (const auto& entry : std::filesystem::directory_iterator(CorpusDir() / sub)) {
      const std::string ext = entry.path().extension().string();
      if (ext == ".json" || ext == ".jsonl") continue;
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// TempDir is a fresh folder removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "ckg-test-XXXXXX").string();
    path = ::mkdtemp(templ.data());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string Write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
    return (path / name).string();
  }
};

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_TEST_UTIL_H_

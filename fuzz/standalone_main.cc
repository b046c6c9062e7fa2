// Replays fuzz inputs without libFuzzer: every file named on the command line,
// and every regular file inside each named folder (sorted, not recursive), is
// passed once to LLVMFuzzerTestOneInput. A missing path is an error; an empty
// folder is fine. Used when the compiler is not clang, so that every build
// compiles and runs the fuzz targets on their seeds and regressions.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int RunFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int failures = 0, runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path path(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& file : files) {
        failures += RunFile(file);
        ++runs;
      }
    } else if (std::filesystem::is_regular_file(path, ec)) {
      failures += RunFile(path);
      ++runs;
    } else {
      std::fprintf(stderr, "no such file or folder: %s\n", argv[i]);
      ++failures;
    }
  }
  std::printf("replayed %d inputs, %d unreadable\n", runs, failures);
  return failures == 0 ? 0 : 1;
}

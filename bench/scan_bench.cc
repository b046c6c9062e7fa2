// scan_bench: how long ckptguard::scanner::ScanFile takes on one file, and how
// many bytes of it the scan reads.
//
// Usage: scan_bench FILE [--repeat N]
// The file is first dropped from the page cache (fdatasync + posix_fadvise
// DONTNEED), scanned once cold, and the pages of the file resident afterwards
// are counted with mincore: the bytes the scan made the kernel read (readahead
// included). Then N warm scans (default 20) give best and median times.
// Prints one JSON line.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckptguard/scanner/scan.h"

namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ResidentBytes counts the bytes of `path` in the page cache.
long long ResidentBytes(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  struct stat st {};
  fstat(fd, &st);
  void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return -1;
  const long page = sysconf(_SC_PAGESIZE);
  const size_t pages = (static_cast<size_t>(st.st_size) + static_cast<size_t>(page) - 1) / static_cast<size_t>(page);
  std::vector<unsigned char> vec(pages);
  long long resident = 0;
  if (mincore(map, static_cast<size_t>(st.st_size), vec.data()) == 0) {
    for (unsigned char v : vec) resident += (v & 1) ? page : 0;
  }
  munmap(map, static_cast<size_t>(st.st_size));
  return resident;
}

void DropFromCache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: scan_bench FILE [--repeat N]\n");
    return 2;
  }
  const std::string path = argv[1];
  int repeat = 20;
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::max(1, std::atoi(argv[++i]));
  }
  DropFromCache(path);
  const long long before = ResidentBytes(path);
  auto start = std::chrono::steady_clock::now();
  ckptguard::scanner::FileReport report = ckptguard::scanner::ScanFile(path);
  const double cold = Since(start);
  const long long read_bytes = ResidentBytes(path) - std::max(0LL, before);
  std::vector<double> warm;
  for (int i = 0; i < repeat; ++i) {
    start = std::chrono::steady_clock::now();
    report = ckptguard::scanner::ScanFile(path);
    warm.push_back(Since(start));
  }
  std::sort(warm.begin(), warm.end());
  struct stat st {};
  stat(path.c_str(), &st);
  std::printf(
      "{\"tool\":\"ckptguard ScanFile\",\"file\":\"%s\",\"file_bytes\":%lld,\"verdict\":\"%s\",\"findings\":%zu,"
      "\"cold_seconds\":%.6f,\"bytes_read_cold\":%lld,\"warm_seconds_best\":%.6f,\"warm_seconds_median\":%.6f}\n",
      path.c_str(), static_cast<long long>(st.st_size), std::string(ckptguard::scanner::VerdictName(report.verdict)).c_str(),
      report.findings.size(), cold, read_bytes, warm.front(), warm[warm.size() / 2]);
  return 0;
}

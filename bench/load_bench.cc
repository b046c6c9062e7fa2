// load_bench: how long ckptguard::LoadCheckpoint takes to open, parse and
// build zero-copy views of a checkpoint, and how much memory it holds.
//
// Usage: load_bench FILE [--repeat N] [--digest] [--threads N] [--beside] [--opcodes]
// (--threads and --beside set LoadOptions::threads and run_beside_container,
// --opcodes turns LoadOptions::tensor_records off; the defaults are the
// library's.)
// Prints one JSON line: best and median seconds of N loads (default 20), the
// peak resident set (ru_maxrss) and the baseline before the first load, the
// tensor count, and with --digest also the time to SHA-256 every tensor
// (which reads all the data, as a full copy would).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"

namespace {

long PeakRssKib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: load_bench FILE [--repeat N] [--digest] [--threads N] [--beside]\n");
    return 2;
  }
  const std::string path = argv[1];
  int repeat = 20;
  ckptguard::LoadOptions options;
  bool digest = false;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      options.threads = static_cast<unsigned>(std::max(1, std::atoi(argv[++i])));
    } else if (std::strcmp(argv[i], "--beside") == 0) {
      options.run_beside_container = true;
    } else if (std::strcmp(argv[i], "--digest") == 0) {
      digest = true;
    } else if (std::strcmp(argv[i], "--opcodes") == 0) {
      options.tensor_records = false;  // every opcode on its own (pickle_machine.h MachineTensorRecord)
    }
  }
  const long baseline = PeakRssKib();
  std::vector<double> times;
  size_t tensors = 0;
  uint64_t bytes = 0;
  bool beside = false;
  bool ahead = false;
  uint64_t records = 0;
  for (int i = 0; i < repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto ckpt = ckptguard::LoadCheckpoint(path, options);
    const auto end = std::chrono::steady_clock::now();
    if (!ckpt) {
      std::fprintf(stderr, "load_bench: %s: %s\n", path.c_str(), ckpt.error().ToString().c_str());
      return 2;
    }
    times.push_back(Seconds(start, end));
    tensors = ckpt->tensors().size();
    bytes = ckpt->container().bytes.size();
    beside = ckpt->ran_beside_container();
    ahead = ckpt->scanned_ahead();
    records = ckpt->tensor_records();
  }
  const long peak_load = PeakRssKib();
  std::sort(times.begin(), times.end());
  double digest_seconds = -1;
  if (digest) {
    auto ckpt = ckptguard::LoadCheckpoint(path);
    const auto start = std::chrono::steady_clock::now();
    for (uint32_t t = 0; t < ckpt->tensors().size(); ++t) {
      if (!ckpt->Sha256Hex(t)) return 2;
    }
    digest_seconds = Seconds(start, std::chrono::steady_clock::now());
  }
  std::printf(
      "{\"tool\":\"ckptguard LoadCheckpoint\",\"file\":\"%s\",\"file_bytes\":%llu,\"tensors\":%zu,\"repeat\":%d,"
      "\"threads\":%u,\"ran_beside_container\":%s,\"scanned_ahead\":%s,\"tensor_records\":%llu,"
      "\"seconds_best\":%.6f,\"seconds_median\":%.6f,\"baseline_rss_kib\":%ld,\"peak_rss_kib_load\":%ld,"
      "\"peak_rss_kib\":%ld,\"digest_all_seconds\":%.3f}\n",
      path.c_str(), static_cast<unsigned long long>(bytes), tensors, repeat, options.threads,
      beside ? "true" : "false", ahead ? "true" : "false", static_cast<unsigned long long>(records), times.front(), times[times.size() / 2],
      baseline, peak_load, PeakRssKib(), digest_seconds);
  return 0;
}

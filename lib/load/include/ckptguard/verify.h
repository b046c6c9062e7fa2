// Verify: is a checkpoint file whole and consistent? Integrity, not security.
//
// Every record present and the size data.pkl declares, every CRC right, no
// bytes missing or extra, every tensor inside its record and readable to the
// last byte. A file that cannot be loaded (a truncated write, a torn zip, a
// hostile pickle the loader refuses) fails with the reason. Used by
// `ckptguard verify` and by `ckptguard latest` to pick a checkpoint to resume from.
#ifndef CKPTGUARD_VERIFY_H_
#define CKPTGUARD_VERIFY_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"

namespace ckptguard {

struct VerifyProblem {
  std::string kind;    // an anomaly kind ("zip.crc_mismatch"), or "load" / "io"
  std::string entry;   // zip entry or record, "" for the file
  uint64_t offset = 0;
  std::string detail;
};

struct VerifyReport {
  std::string path;
  std::string format;  // ContainerFormatName
  std::vector<VerifyProblem> problems;
  uint64_t num_tensors = 0;
  uint64_t tensor_bytes = 0;  // bytes of tensor data read and hashed
  // Training progress found in the top-level dict ("global_step", "step",
  // "epoch", in that order of preference), with the key it came from.
  std::optional<int64_t> progress;
  std::string progress_key;
  bool ok() const { return problems.empty(); }
};

// VerifyCheckpoint reads the whole file: the container with every CRC, the
// load, and every tensor's bytes. Never fails: problems are in the report. A
// file that changed while it was read (truncated, rewritten) has exactly one
// problem, kind "io", "changed while being read" (FindLatest skips it with
// that reason); a FIFO, device or socket is refused unopened ("io").
VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options = {});

struct LatestCandidate {
  std::filesystem::path path;
  std::filesystem::file_time_type mtime;
  VerifyReport report;  // filled for every file examined
};

struct LatestResult {
  std::optional<LatestCandidate> chosen;
  // Files newer (in the order below) than the chosen one, each with why it
  // was skipped; and files that were not model files at all.
  std::vector<LatestCandidate> skipped;
  std::vector<std::filesystem::path> not_models;
};

// FindLatest picks the newest checkpoint in `dir` (not recursive, symlinks
// not followed) that verifies. Order: files with a training progress value
// first, highest progress first (ties: newest modification time); then the
// rest by modification time, newest first. Files are verified (read whole)
// in that order until one passes. Errors: kIo when the folder cannot be read.
Result<LatestResult> FindLatest(const std::filesystem::path& dir, const LoadOptions& options = {});

}  // namespace ckptguard

#endif  // CKPTGUARD_VERIFY_H_

// Verify: is a checkpoint file whole and consistent? Integrity, not security.
//
// Every record present and the size data.pkl declares, every CRC right, no
// bytes missing or extra, every tensor inside its record and readable to the
// last byte. A file that cannot be loaded (a truncated write, a torn zip, a
// hostile pickle the loader refuses) fails with the reason. Used by
// `ckptguard verify` and by FindLatest (latest.h) to pick a checkpoint to resume from.
#ifndef CKPTGUARD_VERIFY_H_
#define CKPTGUARD_VERIFY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct VerifyProblem {
  std::string kind;    // an anomaly kind ("zip.crc_mismatch"), or "load" / "io"
  std::string entry;   // zip entry or record, "" for the file
  uint64_t offset = 0;
  std::string detail;
};

// Progress is how far training had come when a checkpoint was written, and
// where each value was read.
struct Progress {
  std::optional<int64_t> step;  // optimizer steps
  std::string step_from;        // "global_step", "step", "trainer_state.json", "file name", "folder name"
  std::optional<double> epoch;  // a Hugging Face epoch may be fractional (2.5)
  std::string epoch_from;       // "epoch", "trainer_state.json", "file name"
  bool empty() const { return !step && !epoch; }
};

struct VerifyReport {
  std::string path;
  std::string format;  // ContainerFormatName
  std::vector<VerifyProblem> problems;
  uint64_t num_tensors = 0;
  uint64_t tensor_bytes = 0;  // bytes of tensor data read and hashed
  // Training progress in the top-level dict: "global_step" (else "step")
  // and "epoch", each an int (an epoch may be a float) or a one-element
  // tensor of one.
  Progress progress;
  bool ok() const { return problems.empty(); }
};

// VerifyCheckpoint reads the whole file: the container with every CRC, the
// load, and every tensor's bytes. Never fails: problems are in the report. A
// file that changed while it was read (truncated, rewritten) has exactly one
// problem, kind "io", "changed while being read" (FindLatest, latest.h,
// skips it with that reason); a FIFO, device or socket is refused unopened ("io").
VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options = {});
// This VerifyCheckpoint also hands the loaded checkpoint to `on_loaded`
// (before its tensors are read), for checks that need its contents; it is
// not called when the file does not load.
VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options,
                              const std::function<void(const Checkpoint&)>& on_loaded);

// CheckpointProgress reads the training progress of a loaded checkpoint
// (VerifyReport::progress): its top-level "global_step" (else "step") and
// "epoch". Empty when the root is no dict or holds none of them.
Progress CheckpointProgress(const Checkpoint& ckpt);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_VERIFY_H_

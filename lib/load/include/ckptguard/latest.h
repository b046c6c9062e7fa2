// FindLatest: the checkpoint a resumed training run should load.
//
// A folder of checkpoints as trainers write it holds files (torch.save's
// `epoch_0042.pt`, Lightning's `epoch=3-step=1200.ckpt`, `last.ckpt`) and
// folders that are one checkpoint each (Hugging Face Trainer's
// `checkpoint-500/`: weights, optimizer, scheduler, RNG state and
// trainer_state.json). FindLatest ranks them by the training progress they
// record and verifies them (verify.h) in that order until one passes. Every
// candidate it passes over is listed with the reason.
#ifndef CKPTGUARD_LATEST_H_
#define CKPTGUARD_LATEST_H_

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/verify.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// LatestCandidate is one file or one checkpoint folder.
struct LatestCandidate {
  std::filesystem::path path;
  bool folder = false;                    // a checkpoint folder (checkpoint-N/), verified as a unit
  std::filesystem::file_time_type mtime;  // a folder: the newest of its files
  Progress progress;                      // what the ranking used
  // The verification: one report for the candidate. For a folder, `path`
  // is the folder, `format` "checkpoint-folder", the problems those of its
  // files (entry "FILE" or "FILE:ENTRY") and of the folder itself (kind
  // "folder": no weights, an unreadable trainer_state.json, a shard missing
  // or outside the folder), and the tensor counts summed. Empty (path only)
  // for a candidate that was not verified (`older`).
  VerifyReport report;
  std::vector<std::string> files;  // a folder: the files verified, by name
  std::vector<std::string> notes;  // a folder: files not verified and why
};

struct LatestResult {
  std::optional<LatestCandidate> chosen;
  // Candidates that failed verification: every one ranked above the chosen
  // one, and any other whose first look already failed (a torn file whose
  // progress cannot be read ranks low, but is never passed over silently).
  std::vector<LatestCandidate> skipped;
  // Candidates ranked below the chosen one: not verified (not read whole).
  std::vector<LatestCandidate> older;
  // Entries that are no candidate: files in no model format, folders that
  // are no checkpoint folder, symbolic links (not followed).
  std::vector<std::filesystem::path> not_models;
  // How the candidates were ordered: "step", "epoch" or "modification time"
  // (see FindLatest).
  std::string order;
};

// FindLatest picks the newest checkpoint in `dir` that verifies. Candidates
// are the model files directly in `dir` and its checkpoint folders (a
// subfolder named checkpoint-N, global_stepN, step-N or step_N, or holding
// a trainer_state.json or a DCP .metadata (dcp.h); symbolic links are not
// followed, subfolders are not searched further).
//
// Progress of a candidate (Progress in verify.h): a file's top-level
// "global_step" or "step" and "epoch" (ints, floats for an epoch, or
// one-element tensors), else its name's "step=S" and "epoch=E" (Lightning's
// file names); a folder's trainer_state.json "global_step" and "epoch", else
// the N of its name; a DCP folder's values (DcpProgress), else its name.
//
// Order: progress values of different kinds are not compared with each
// other. If every candidate with progress has a step, they are ordered by
// step (then epoch); else if every one has an epoch, by epoch (then step);
// else by modification time alone. Candidates without progress follow, by
// modification time. Ties: newest modification time, then path. `order`
// says which rule applied.
//
// Errors: kIo when the folder cannot be read.
Result<LatestResult> FindLatest(const std::filesystem::path& dir, const LoadOptions& options = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_LATEST_H_

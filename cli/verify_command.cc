// `ckptguard verify` and `ckptguard latest`.
#include "verify_command.h"

#include <unistd.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ckptguard/printable.h"
#include "ckptguard/latest.h"
#include "ckptguard/dcp.h"
#include "ckptguard/sharded.h"
#include "ckptguard/verify.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;

// An epoch is shown as an int when it is one (Lightning's 3, not 3.0).
json EpochJson(double epoch) {
  if (epoch == std::floor(epoch) && std::fabs(epoch) < 9e15) return static_cast<int64_t>(epoch);
  return epoch;
}

std::string EpochText(double epoch) {
  std::ostringstream out;
  out << std::setprecision(15) << epoch;
  return out.str();
}

json ProgressJson(const Progress& p) {
  json out = json::object();
  if (p.step) {
    out["step"] = *p.step;
    out["step_from"] = p.step_from;
  }
  if (p.epoch) {
    out["epoch"] = EpochJson(*p.epoch);
    out["epoch_from"] = p.epoch_from;
  }
  return out;
}

std::string ProgressText(const Progress& p) {
  std::string out;
  if (p.step) out += "step " + std::to_string(*p.step) + " (" + Printable(p.step_from) + ")";
  if (p.epoch) out += std::string(out.empty() ? "" : ", ") + "epoch " + EpochText(*p.epoch) + " (" + p.epoch_from + ")";
  return out;
}

json ReportJson(const VerifyReport& r) {
  json problems = json::array();
  for (const VerifyProblem& p : r.problems) {
    problems.push_back(json{{"kind", p.kind}, {"entry", p.entry}, {"offset", p.offset}, {"detail", p.detail}});
  }
  json out{{"path", r.path},
           {"format", r.format},
           {"ok", r.ok()},
           {"tensors", r.num_tensors},
           {"tensor_bytes", r.tensor_bytes},
           {"problems", std::move(problems)}};
  if (!r.progress.empty()) out["progress"] = ProgressJson(r.progress);
  return out;
}

void PrintReport(const VerifyReport& r, std::ostream& out) {
  // Paths, keys, entries and details may come from the files: escaped.
  out << Printable(r.path) << " (" << r.format << "): ";
  if (r.ok()) {
    out << "ok, " << r.num_tensors << " tensors, " << r.tensor_bytes << " bytes of tensor data read";
    if (!r.progress.empty()) out << ", " << ProgressText(r.progress);
    out << "\n";
    return;
  }
  out << "BROKEN (" << r.problems.size() << " problem" << (r.problems.size() == 1 ? "" : "s") << ")\n";
  for (const VerifyProblem& p : r.problems) {
    out << "  [" << p.kind << "] at byte " << p.offset << (p.entry.empty() ? "" : " (" + Printable(p.entry) + ")")
        << ": " << Printable(p.detail) << "\n";
  }
}

}  // namespace

void AddVerifyCommand(CLI::App& app, VerifyFlags& flags) {
  CLI::App* cmd = app.add_subcommand("verify", "Check that checkpoint files are whole and consistent");
  cmd->footer(R"(What it checks (integrity, not security; see 'ckptguard scan'):
  every zip record present and of the size data.pkl declares, every CRC-32
  right, local headers that agree with the central directory, no bytes missing
  or extra, legacy records of the right element count, safetensors and npy
  headers consistent with their data, the whole file loadable by the hardened
  loader, and every tensor's bytes inside its record and readable to the last
  one (each is hashed). It says exactly what is broken and where.

  A sharded checkpoint is verified through its index (FILE ending in
  .index.json, as Hugging Face writes model.safetensors.index.json and
  pytorch_model.bin.index.json): every shard as above, and the index against
  them (a shard missing or outside the index's folder, a tensor mapped to a
  shard that does not hold it, a tensor in two shards, a shard tensor the
  index does not name).

  A torch.distributed.checkpoint folder (DIR holding .metadata and
  __<rank>_<n>.distcp files) is verified whole: .metadata, every item's
  torch archive in the .distcp files with all its CRCs, and every tensor
  assembled from its chunks and read to the last byte.

Output:
  --json prints one document: {schema_version, tool, files: [one object per
  FILE, in order: path, format, ok, tensors, tensor_bytes, problems: [{kind,
  entry, offset, detail}], progress when the file records any], summary:
  {files, ok, failed}}.

Exit status: 0 every file is whole, 1 a file is broken, 2 a file could not be
read at all.

Examples:
  ckptguard verify checkpoints/epoch_0042.pt
  ckptguard verify llama/model.safetensors.index.json
  ckptguard verify checkpoints/step_1200/        (a torch.distributed.checkpoint folder)
  ckptguard verify --json checkpoints/*.pt | jq -c '.files[] | {path, ok}'
)");
  cmd->add_option("files", flags.files, "Checkpoint files, shard indexes or DCP folders")->required()->type_name("FILE");
  cmd->add_flag("--json", flags.json,
                "Print one JSON document: files[] (path, format, ok, tensors, problems) and summary");
  AddFormatOption(*cmd, flags.json);
  AddBudgetOptions(*cmd, flags.budget);
}

int RunVerify(const VerifyFlags& flags) {
  int status = kExitOk;
  size_t num_ok = 0;
  JsonFilesDocument doc(std::cout, "verify", flags.json);
  for (const std::string& path : flags.files) {
    LoadOptions load;
    load.budget = flags.budget;
    const VerifyReport r = IsShardIndexPath(path) ? VerifyShardedCheckpoint(path, load)
                           : IsDcpFolder(path)    ? VerifyDcpCheckpoint(path, load)
                                                  : VerifyCheckpoint(path, load);
    if (flags.json) {
      doc.Add(DumpJson(ReportJson(r), -1));
    } else {
      PrintReport(r, std::cout);
    }
    if (r.ok()) {
      ++num_ok;
    } else {
      const bool unreadable = r.problems.size() == 1 && r.problems[0].kind == "io";
      status = std::max(status, unreadable ? kExitError : kExitFindings);
    }
  }
  doc.Close(nlohmann::ordered_json{
      {"summary", nlohmann::ordered_json{
                      {"files", flags.files.size()}, {"ok", num_ok}, {"failed", flags.files.size() - num_ok}}}});
  std::cout.flush();
  return status;
}

namespace {

json CandidateJson(const LatestCandidate& c, bool verified) {
  json out = verified ? ReportJson(c.report) : json{{"path", c.path.string()}};
  out["folder"] = c.folder;
  out["progress"] = ProgressJson(c.progress);
  if (c.folder && verified) {
    out["files"] = c.files;
    out["notes"] = c.notes;
  }
  return out;
}

void PrintCandidate(const char* what, const LatestCandidate& c, std::ostream& out) {
  out << what << " ";
  PrintReport(c.report, out);
  for (const std::string& note : c.notes) out << "  note: " << Printable(note) << "\n";
}

}  // namespace

void AddLatestCommand(CLI::App& app, LatestFlags& flags) {
  CLI::App* cmd = app.add_subcommand("latest", "Find the newest checkpoint in a folder that verifies");
  cmd->footer(R"help(What it does:
  Looks at DIR's model files and checkpoint folders (a subfolder named
  checkpoint-N, as the Hugging Face Trainer writes, global_stepN, step-N or
  step_N, or one holding a trainer_state.json or a torch.distributed.checkpoint
  .metadata: verified as one unit, every model file in it, its sharded index,
  its DCP items and trainer_state.json), ranks them by the training
  progress they record, and verifies them (see 'ckptguard verify') in that
  order until one passes. Torn, truncated, partial or hostile candidates are
  skipped, each listed with the reason; subfolders are not searched further
  and symbolic links are not followed.

Progress:
  a file's top-level "global_step" (else "step") and "epoch" (ints, or
  one-element tensors), else its name's "step=S" and "epoch=E" (Lightning's
  epoch=3-step=1200.ckpt); a folder's trainer_state.json "global_step" and
  "epoch" (a DCP folder's "global_step"/"step" and "epoch" values), else the
  N of its name. Values of different kinds are never
  compared: if every candidate has a step, the highest step wins (then
  epoch); else if every one has an epoch, the highest epoch (then step); else
  the newest modification time. Candidates without progress come last,
  newest first.

Output:
  stdout holds the chosen path alone (one line; with -0 ended by NUL), so
  a resume script can use $(ckptguard latest DIR). Everything else (what was
  chosen and why, what was skipped) goes to stderr. A path that a terminal
  or a shell line would mangle (control characters, invalid UTF-8) is not
  printed as text: use -0 or --json.

Exit status: 0 a checkpoint was found, 1 none verifies, 2 the folder cannot
be read or the chosen path cannot be printed as text.

Examples:
  ckptguard latest runs/exp7/checkpoints
  python train.py --resume "$(ckptguard latest runs/exp7/checkpoints)"
  ckptguard latest -0 output/ | xargs -0 -I{} python train.py --resume {}
  ckptguard latest --json output/ | jq -r '.skipped[] | .path + ": " + .problems[0].detail'
)help");
  cmd->add_option("dir", flags.dir, "Folder of checkpoints")->required()->type_name("DIR");
  cmd->add_flag("--json", flags.json,
                "One JSON document on stdout: chosen, skipped (with problems), older (not verified), not_models, "
                "order");
  AddFormatOption(*cmd, flags.json);
  cmd->add_flag("-0,--null", flags.null, "End the chosen path with NUL instead of a newline (for xargs -0)");
  AddBudgetOptions(*cmd, flags.budget);
}

int RunLatest(const LatestFlags& flags) {
  LoadOptions load;
  load.budget = flags.budget;
  Result<LatestResult> result = FindLatest(flags.dir, load);
  if (!result) {
    ReportError(flags.dir, result.error());
    return kExitError;
  }
  const int status = result->chosen ? kExitOk : kExitFindings;
  if (flags.json) {
    json skipped = json::array();
    for (const LatestCandidate& c : result->skipped) skipped.push_back(CandidateJson(c, true));
    json older = json::array();
    for (const LatestCandidate& c : result->older) older.push_back(CandidateJson(c, false));
    json not_models = json::array();
    for (const auto& p : result->not_models) not_models.push_back(p.string());
    json doc{{"chosen", result->chosen ? CandidateJson(*result->chosen, true) : json(nullptr)},
             {"skipped", std::move(skipped)},
             {"older", std::move(older)},
             {"not_models", std::move(not_models)},
             {"order", result->order}};
    std::cout << DumpJson(Stamp(std::move(doc), "latest"), 1) << "\n";
    std::cout.flush();
    return status;
  }
  for (const LatestCandidate& c : result->skipped) PrintCandidate("skipped", c, std::cerr);
  if (!result->older.empty()) {
    std::cerr << result->older.size() << " older candidate" << (result->older.size() == 1 ? "" : "s")
              << " not verified (ranked below the chosen one; --json lists them)\n";
  }
  if (!result->chosen) {
    std::cerr << "ckptguard latest: no checkpoint in " << Printable(flags.dir) << " verifies\n";
    return status;
  }
  PrintCandidate("chosen", *result->chosen, std::cerr);
  std::cerr << "order: " << result->order << "\n";
  const std::string path = result->chosen->path.string();
  if (flags.null) {
    // Raw bytes for a pipe; a terminal gets them escaped.
    std::cout << (isatty(STDOUT_FILENO) ? Printable(path) : path) << '\0';
  } else if (Printable(path) != path) {
    std::cerr << "ckptguard latest: the chosen path " << Printable(path)
              << " has characters a terminal or a shell line would mangle; use -0 or --json to read it\n";
    return kExitError;
  } else {
    std::cout << path << "\n";
  }
  std::cout.flush();
  return status;
}

}  // namespace ckptguard::cli

// `ckptguard verify` and `ckptguard latest`.
#include "verify_command.h"

#include <iostream>
#include <nlohmann/json.hpp>

#include "ckptguard/printable.h"
#include "ckptguard/verify.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;

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
  if (r.progress) out[r.progress_key] = *r.progress;
  return out;
}

void PrintReport(const VerifyReport& r, std::ostream& out) {
  // Paths, keys, entries and details may come from the files: escaped.
  out << Printable(r.path) << " (" << r.format << "): ";
  if (r.ok()) {
    out << "ok, " << r.num_tensors << " tensors, " << r.tensor_bytes << " bytes of tensor data read";
    if (r.progress) out << ", " << Printable(r.progress_key) << " " << *r.progress;
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

Exit status: 0 every file is whole, 1 a file is broken, 2 a file could not be
read at all.

Examples:
  ckptguard verify checkpoints/epoch_0042.pt
  ckptguard verify --json checkpoints/*.pt | jq -c '{path, ok}'
)");
  cmd->add_option("files", flags.files, "Checkpoint files")->required()->type_name("FILE");
  cmd->add_flag("--json", flags.json, "One JSON object per file and line: path, format, ok, tensors, problems");
  AddBudgetOptions(*cmd, flags.budget);
}

int RunVerify(const VerifyFlags& flags) {
  int status = kExitOk;
  for (const std::string& path : flags.files) {
    LoadOptions load;
    load.budget = flags.budget;
    const VerifyReport r = VerifyCheckpoint(path, load);
    if (flags.json) {
      std::cout << DumpJson(ReportJson(r), -1) << "\n";
    } else {
      PrintReport(r, std::cout);
    }
    if (!r.ok()) {
      const bool unreadable = r.problems.size() == 1 && r.problems[0].kind == "io";
      status = std::max(status, unreadable ? kExitError : kExitFindings);
    }
  }
  std::cout.flush();
  return status;
}

void AddLatestCommand(CLI::App& app, LatestFlags& flags) {
  CLI::App* cmd = app.add_subcommand("latest", "Find the newest checkpoint in a folder that verifies");
  cmd->footer(R"help(What it does:
  Looks at the model files in DIR (not in subfolders; symbolic links are not
  followed), orders them by the training progress stored inside (a top-level
  "global_step", "step" or "epoch" int), highest first, then by modification
  time, newest first, and verifies them in that order (see 'ckptguard verify')
  until one passes. Torn, truncated, partial or hostile files are skipped, each
  with the reason. The chosen path is printed on the last line of the text
  output, so a resume script can use $(ckptguard latest DIR | tail -1).

Exit status: 0 a checkpoint was found, 1 none verifies, 2 the folder cannot be read.

Examples:
  ckptguard latest runs/exp7/checkpoints
  python train.py --resume "$(ckptguard latest runs/exp7/checkpoints | tail -1)"
)help");
  cmd->add_option("dir", flags.dir, "Folder of checkpoints")->required()->type_name("DIR");
  cmd->add_flag("--json", flags.json, "One JSON document: chosen, skipped (with problems), not_models");
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
  if (flags.json) {
    json skipped = json::array();
    for (const LatestCandidate& c : result->skipped) skipped.push_back(ReportJson(c.report));
    json not_models = json::array();
    for (const auto& p : result->not_models) not_models.push_back(p.string());
    json doc{{"chosen", result->chosen ? ReportJson(result->chosen->report) : json(nullptr)},
             {"skipped", std::move(skipped)},
             {"not_models", std::move(not_models)}};
    std::cout << DumpJson(doc, 1) << "\n";
  } else {
    for (const LatestCandidate& c : result->skipped) {
      std::cout << "skipped ";
      PrintReport(c.report, std::cout);
    }
    if (result->chosen) {
      std::cout << "chosen ";
      PrintReport(result->chosen->report, std::cout);
      std::cout << Printable(result->chosen->path.string()) << "\n";
    } else {
      std::cerr << "ckptguard latest: no checkpoint in " << Printable(flags.dir) << " verifies\n";
    }
  }
  std::cout.flush();
  return result->chosen ? kExitOk : kExitFindings;
}

}  // namespace ckptguard::cli

#include "ckptguard/latest.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "ckptguard/input_file.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/dcp.h"
#include "ckptguard/sharded.h"

namespace ckptguard {
namespace {

namespace fs = std::filesystem;

// Largest JSON file of a checkpoint folder read (trainer_state.json, a
// sharded index). Trainer states grow with the log history; 64 MiB is far
// beyond a real one.
constexpr uint64_t kMaxFolderJson = uint64_t{64} << 20;

// Files of a Trainer folder that hold no model weights.
bool IsTrainingStateFile(std::string_view name) {
  for (std::string_view prefix : {"optimizer", "scheduler", "rng_state", "scaler", "training_args"}) {
    if (name.starts_with(prefix)) return true;
  }
  return false;
}

// NumberAfter finds `key` (e.g. "step=") in `name` at the start or after a
// character that is no letter, digit or underscore, and reads the digits
// after it ("epoch=3-step=1200.ckpt").
std::optional<int64_t> NumberAfter(std::string_view name, std::string_view key) {
  for (size_t at = name.find(key); at != std::string_view::npos; at = name.find(key, at + 1)) {
    if (at > 0) {
      const char before = name[at - 1];
      if (std::isalnum(static_cast<unsigned char>(before)) || before == '_') continue;
    }
    const char* first = name.data() + at + key.size();
    const char* last = name.data() + name.size();
    int64_t value = 0;
    auto [end, ec] = std::from_chars(first, last, value);
    if (ec == std::errc() && end != first && value >= 0) return value;
  }
  return std::nullopt;
}

// FolderStep reads N from a checkpoint folder's name: checkpoint-N (Hugging
// Face Trainer), global_stepN (DeepSpeed), step-N (torchtitan's DCP
// folders) or step_N.
std::optional<int64_t> FolderStep(std::string_view name) {
  for (std::string_view prefix : {"checkpoint-", "global_step", "step-", "step_"}) {
    if (!name.starts_with(prefix) || name.size() == prefix.size()) continue;
    int64_t value = 0;
    auto [end, ec] = std::from_chars(name.data() + prefix.size(), name.data() + name.size(), value);
    if (ec == std::errc() && end == name.data() + name.size() && value >= 0) return value;
  }
  return std::nullopt;
}

// ReadJsonFile parses a small JSON file of a checkpoint folder (never
// opening a FIFO or device: ReadInputFile refuses them unopened).
Result<nlohmann::json> ReadJsonFile(const fs::path& path) {
  const std::string name = path.filename().string();
  Result<std::string> text = ReadInputFile(path.string(), kMaxFolderJson);
  if (!text) {
    Error e = std::move(text).error();
    e.where = name;
    return std::unexpected(std::move(e));
  }
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return MakeError(ErrorCode::kMalformed, 0, "not valid JSON", name);
  return doc;
}

// IsModelFile: does the file start like a format the loader reads? A file
// that changed under this look still counts (its verification says so).
bool IsModelFile(const fs::path& path, const LoadOptions& options) {
  Result<MappedFile> file = MappedFile::Open(path.string(), options.file);
  if (!file) return true;  // unreadable: a candidate, whose verification says why
  return OpenContainer(file->data(), LoaderContainerLimits()).format != ContainerFormat::kUnknown ||
         !file->CheckUnchanged();
}

struct Candidate {
  LatestCandidate c;
  bool first_look_failed = false;  // the quick load failed: verified even when ranked low
};

// A file: its progress from a quick load (no tensor data read), completed
// from its name.
Candidate FileCandidate(const fs::path& path, fs::file_time_type mtime, const LoadOptions& options) {
  Candidate out;
  out.c.path = path;
  out.c.mtime = mtime;
  LoadOptions quick = options;
  quick.allow_anomalies = true;
  if (Result<Checkpoint> ckpt = LoadCheckpoint(path.string(), quick)) {
    out.c.progress = CheckpointProgress(*ckpt);
  } else {
    out.first_look_failed = true;
  }
  const std::string name = path.filename().string();
  if (!out.c.progress.step) {
    if (std::optional<int64_t> step = NumberAfter(name, "step=")) {
      out.c.progress.step = step;
      out.c.progress.step_from = "file name";
    }
  }
  if (!out.c.progress.epoch) {
    if (std::optional<int64_t> epoch = NumberAfter(name, "epoch=")) {
      out.c.progress.epoch = static_cast<double>(*epoch);
      out.c.progress.epoch_from = "file name";
    }
  }
  return out;
}

// FolderFiles lists the regular files of a checkpoint folder (links not
// followed), by name.
std::vector<fs::directory_entry> FolderFiles(const fs::path& folder, std::error_code& ec) {
  std::vector<fs::directory_entry> files;
  fs::directory_iterator it(folder, ec);
  if (ec) return files;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return files;
    std::error_code e;
    if (it->is_symlink(e) || !it->is_regular_file(e)) continue;
    files.push_back(*it);
  }
  std::sort(files.begin(), files.end(),
            [](const fs::directory_entry& a, const fs::directory_entry& b) { return a.path() < b.path(); });
  return files;
}

bool IsCheckpointFolder(const fs::path& folder) {
  std::error_code ec;
  return FolderStep(folder.filename().string()).has_value() ||
         fs::is_regular_file(fs::symlink_status(folder / "trainer_state.json", ec)) || IsDcpFolder(folder.string());
}

// A checkpoint folder: its progress from trainer_state.json (a DCP folder:
// from its values, read by a quick load), else its name; its time the
// newest of its files'.
Candidate FolderCandidate(const fs::path& folder, fs::file_time_type mtime, const LoadOptions& options) {
  Candidate out;
  out.c.path = folder;
  out.c.folder = true;
  out.c.mtime = mtime;
  std::error_code ec;
  for (const fs::directory_entry& f : FolderFiles(folder, ec)) {
    std::error_code e;
    const fs::file_time_type t = f.last_write_time(e);
    if (!e) out.c.mtime = std::max(out.c.mtime, t);
  }
  if (IsDcpFolder(folder.string())) {
    if (Result<DcpCheckpoint> dcp = LoadDcpCheckpoint(folder.string(), options)) {
      out.c.progress = DcpProgress(*dcp);
    } else {
      out.first_look_failed = true;
    }
  } else if (Result<nlohmann::json> state = ReadJsonFile(folder / "trainer_state.json"); state && state->is_object()) {
    const auto step = state->find("global_step");
    if (step != state->end() && step->is_number_integer() &&
        (!step->is_number_unsigned() || step->get<uint64_t>() <= uint64_t{INT64_MAX})) {
      out.c.progress.step = step->get<int64_t>();
      out.c.progress.step_from = "trainer_state.json";
    }
    const auto epoch = state->find("epoch");
    if (epoch != state->end() && epoch->is_number() && std::isfinite(epoch->get<double>())) {
      out.c.progress.epoch = epoch->get<double>();
      out.c.progress.epoch_from = "trainer_state.json";
    }
  }
  if (!out.c.progress.step) {
    if (std::optional<int64_t> step = FolderStep(folder.filename().string())) {
      out.c.progress.step = step;
      out.c.progress.step_from = "folder name";
    }
  }
  return out;
}

void FolderProblem(VerifyReport& r, std::string entry, std::string detail) {
  r.problems.push_back({"folder", std::move(entry), 0, std::move(detail)});
}

// VerifyFolder verifies a checkpoint folder as a unit: every model file in
// it, its JSON files, and that it holds weights.
void VerifyFolder(LatestCandidate& c, const LoadOptions& options) {
  VerifyReport& report = c.report;
  report = VerifyReport{};
  report.path = c.path.string();
  report.format = "checkpoint-folder";
  report.progress = c.progress;
  std::error_code ec;
  const std::vector<fs::directory_entry> files = FolderFiles(c.path, ec);
  if (ec) {
    report.problems.push_back({"io", "", 0, "cannot read the folder: " + ec.message()});
    return;
  }
  // Sharded weights first: each index with its shards, as one unit.
  bool weights = false;
  std::set<std::string> covered;  // shard files verified through an index
  auto add = [&](const std::string& name, const VerifyReport& r) {
    for (const VerifyProblem& p : r.problems) {
      report.problems.push_back({p.kind, p.entry.empty() || p.entry == name ? name : name + ":" + p.entry, p.offset,
                                 p.detail});
    }
    report.num_tensors += r.num_tensors;
    report.tensor_bytes += r.tensor_bytes;
  };
  for (const fs::directory_entry& f : files) {
    const std::string name = f.path().filename().string();
    if (!IsShardIndexPath(name)) continue;
    weights = true;
    c.files.push_back(name);
    add(name, VerifyShardedCheckpoint(f.path().string(), options));
    if (Result<ShardIndex> index = ReadShardIndex(f.path())) covered.insert(index->shards.begin(), index->shards.end());
  }
  // A torch.distributed.checkpoint folder: .metadata and its items as one
  // unit (every file it names; other files are verified on their own).
  if (IsDcpFolder(c.path.string())) {
    weights = true;
    c.files.push_back(".metadata");
    covered.insert(".metadata");
    add(".metadata", VerifyDcpCheckpoint(c.path.string(), options, [&](const DcpCheckpoint& dcp) {
          for (const DcpArchive& a : dcp.archive_refs()) covered.insert(a.file);
        }));
  }
  for (const fs::directory_entry& f : files) {
    const std::string name = f.path().filename().string();
    if (IsShardIndexPath(name) || covered.contains(name)) continue;
    if (name == "trainer_state.json") {
      Result<nlohmann::json> state = ReadJsonFile(f.path());
      if (!state) FolderProblem(report, name, state.error().ToString());
      continue;
    }
    if (!IsModelFile(f.path(), options)) {
      c.notes.push_back(name + ": not a model file, not verified");
      continue;
    }
    if (name.starts_with("training_args")) {
      // The Trainer's pickled arguments: for the record, never loaded on resume.
      c.notes.push_back(name + ": not verified (the Trainer does not load it to resume)");
      continue;
    }
    if (!IsTrainingStateFile(name)) weights = true;
    c.files.push_back(name);
    add(name, VerifyCheckpoint(f.path().string(), options));
  }
  // A trainer_state.json the Trainer would read but this never opened (a
  // FIFO, a link): the folder is not whole as far as anyone can tell.
  std::error_code se;
  const fs::file_status state = fs::symlink_status(c.path / "trainer_state.json", se);
  if (!se && fs::exists(state) && !fs::is_regular_file(state)) {
    FolderProblem(report, "trainer_state.json", "not a regular file (not read)");
  }
  if (!weights) {
    FolderProblem(report, "", "no model weights (pytorch_model.bin, model.safetensors, a sharded index...)");
  }
}

void Verify(LatestCandidate& c, const LoadOptions& options) {
  if (c.folder) {
    VerifyFolder(c, options);
    return;
  }
  c.report = VerifyCheckpoint(c.path.string(), options);
  // The ranking's progress (the name's values included) is what is shown.
  c.report.progress = c.progress;
}

// Rank orders candidates as FindLatest documents and returns the rule.
std::string Rank(std::vector<Candidate>& all) {
  const auto has_progress = [](const Candidate& x) { return !x.c.progress.empty(); };
  const auto mid = std::stable_partition(all.begin(), all.end(), has_progress);
  const bool any = mid != all.begin();
  const bool all_steps = std::all_of(all.begin(), mid, [](const Candidate& x) { return x.c.progress.step.has_value(); });
  const bool all_epochs =
      std::all_of(all.begin(), mid, [](const Candidate& x) { return x.c.progress.epoch.has_value(); });
  const std::string order = !any ? "modification time" : all_steps ? "step" : all_epochs ? "epoch" : "modification time";
  const auto newer = [](const Candidate& a, const Candidate& b) {
    return a.c.mtime != b.c.mtime ? a.c.mtime > b.c.mtime : a.c.path < b.c.path;
  };
  // Missing values rank lowest (the other key is only a tie-break).
  const auto step = [](const Candidate& x) { return x.c.progress.step.value_or(INT64_MIN); };
  const auto epoch = [](const Candidate& x) { return x.c.progress.epoch.value_or(-INFINITY); };
  std::sort(all.begin(), mid, [&](const Candidate& a, const Candidate& b) {
    if (order == "step") {
      if (step(a) != step(b)) return step(a) > step(b);
      if (epoch(a) != epoch(b)) return epoch(a) > epoch(b);
    } else if (order == "epoch") {
      if (epoch(a) != epoch(b)) return epoch(a) > epoch(b);
      if (step(a) != step(b)) return step(a) > step(b);
    }
    return newer(a, b);
  });
  std::sort(mid, all.end(), newer);
  return order;
}

}  // namespace

Result<LatestResult> FindLatest(const fs::path& dir, const LoadOptions& options) {
  std::error_code ec;
  std::vector<Candidate> candidates;
  LatestResult out;
  fs::directory_iterator it(dir, ec);
  if (ec) return MakeError(ErrorCode::kIo, 0, "cannot read the folder: " + ec.message(), dir.string());
  std::vector<fs::directory_entry> entries;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return MakeError(ErrorCode::kIo, 0, "cannot read the folder: " + ec.message(), dir.string());
    entries.push_back(*it);
  }
  std::sort(entries.begin(), entries.end(),
            [](const fs::directory_entry& a, const fs::directory_entry& b) { return a.path() < b.path(); });
  for (const fs::directory_entry& e : entries) {
    std::error_code e1;
    const fs::file_time_type mtime = e.last_write_time(e1);
    if (e.is_symlink(e1)) {
      out.not_models.push_back(e.path());
    } else if (e.is_directory(e1)) {
      if (IsCheckpointFolder(e.path())) {
        candidates.push_back(FolderCandidate(e.path(), mtime, options));
      } else {
        out.not_models.push_back(e.path());
      }
    } else if (!e.is_regular_file(e1)) {
      out.not_models.push_back(e.path());  // a FIFO, socket or device: never opened
    } else if (!IsModelFile(e.path(), options)) {
      out.not_models.push_back(e.path());
    } else {
      candidates.push_back(FileCandidate(e.path(), mtime, options));
    }
  }
  out.order = Rank(candidates);
  // Verify in that order until one passes: only the candidates ranked above
  // the chosen one are read whole, and those whose first look failed.
  for (Candidate& x : candidates) {
    if (out.chosen) {
      if (!x.first_look_failed) {
        x.c.report.path = x.c.path.string();
        x.c.report.progress = x.c.progress;
        out.older.push_back(std::move(x.c));
        continue;
      }
    }
    Verify(x.c, options);
    if (x.c.report.ok() && !out.chosen) {
      out.chosen = std::move(x.c);
    } else if (x.c.report.ok()) {
      out.older.push_back(std::move(x.c));  // it changed back between the two looks
    } else {
      out.skipped.push_back(std::move(x.c));
    }
  }
  return out;
}

}  // namespace ckptguard

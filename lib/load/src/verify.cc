#include "ckptguard/verify.h"

#include <algorithm>

#include "ckptguard/mapped_file.h"

namespace ckptguard {
namespace {

void AddError(VerifyReport& r, const std::string& kind, const Error& e) {
  r.problems.push_back({kind, e.where, e.offset, e.ToString()});
}

void FindProgress(const Checkpoint& ckpt, VerifyReport& r) {
  for (const char* key : {"global_step", "step", "epoch"}) {
    // Only a top-level int counts (a dict key without dots).
    const Value& root = ckpt.values().Get(ckpt.root());
    if (root.kind != ValueKind::kDict) return;
    for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
      const Value& k = ckpt.values().Get(root.items[i]);
      const Value& v = ckpt.values().Get(root.items[i + 1]);
      if (k.kind == ValueKind::kStr && k.text == key && v.kind == ValueKind::kInt) {
        r.progress = v.int_value;
        r.progress_key = key;
        return;
      }
    }
  }
}

// VerifyMapped fills `report` from the bytes of `file`.
void VerifyMapped(const MappedFile& file, const LoadOptions& options, VerifyReport& report) {
  // The container with every check: all CRCs, records against data.pkl.
  ContainerLimits full = options.container;
  full.zip.max_crc_check_len = ContainerLimits{}.zip.max_crc_check_len;
  full.check_torch_records = true;
  Budget budget(options.budget);
  const Container container = OpenContainer(file.data(), full, &budget);
  report.format = std::string(ContainerFormatName(container.format));
  for (const Anomaly& a : container.anomalies) report.problems.push_back({a.kind, a.entry, a.offset, a.detail});
  if (container.error) {
    AddError(report, "container", *container.error);
    return;
  }
  // The load (anomalies are already listed above).
  LoadOptions load = options;
  load.allow_anomalies = true;
  Result<Checkpoint> ckpt = LoadCheckpointBytes(file.data(), load);
  if (!ckpt) {
    AddError(report, "load", ckpt.error());
    return;
  }
  FindProgress(*ckpt, report);
  // Every tensor's bytes, to the last one (a view reaching past its record
  // never loads; this reads what the views cover).
  report.num_tensors = ckpt->tensors().size();
  for (uint32_t t = 0; t < ckpt->tensors().size(); ++t) {
    Result<std::string> digest = ckpt->Sha256Hex(t);
    if (!digest) {
      AddError(report, "tensor", digest.error());
      continue;
    }
    report.tensor_bytes += ckpt->StorageBytes(t).size();
  }
}

}  // namespace

VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options) {
  VerifyReport report;
  report.path = path;
  Result<MappedFile> file = MappedFile::Open(path, options.file);
  if (!file) {
    AddError(report, "io", file.error());
    report.format = "unknown";
    return report;
  }
  VerifyMapped(*file, options, report);
  // Whatever was found in torn bytes is not about this file: one io problem.
  if (Status unchanged = file->CheckUnchanged(); !unchanged) {
    VerifyReport changed;
    changed.path = path;
    changed.format = report.format;
    AddError(changed, "io", unchanged.error());
    return changed;
  }
  return report;
}

Result<LatestResult> FindLatest(const std::filesystem::path& dir, const LoadOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<LatestCandidate> candidates;
  LatestResult out;
  fs::directory_iterator it(dir, ec);
  if (ec) return MakeError(ErrorCode::kIo, 0, "cannot read the folder: " + ec.message(), dir.string());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return MakeError(ErrorCode::kIo, 0, "cannot read the folder: " + ec.message(), dir.string());
    const fs::directory_entry& e = *it;
    if (!e.is_regular_file(ec) || e.is_symlink(ec)) continue;
    LatestCandidate c;
    c.path = e.path();
    c.mtime = e.last_write_time(ec);
    // A cheap look at the content first: files that are no model format at
    // all are not candidates.
    Result<MappedFile> file = MappedFile::Open(c.path.string(), options.file);
    if (file) {
      ContainerLimits quick = LoaderContainerLimits();
      // A file that changed under this look is still a candidate: the
      // verification below says what it is (or that it changed again).
      if (OpenContainer(file->data(), quick).format == ContainerFormat::kUnknown && file->CheckUnchanged()) {
        out.not_models.push_back(c.path);
        continue;
      }
    }
    candidates.push_back(std::move(c));
  }
  // Rank by the progress value inside (a quick load without reading tensor
  // data), then verify in that order until one passes: only the files newer
  // than the chosen one are read whole.
  for (LatestCandidate& c : candidates) {
    LoadOptions quick = options;
    quick.allow_anomalies = true;
    if (Result<Checkpoint> ckpt = LoadCheckpoint(c.path.string(), quick)) FindProgress(*ckpt, c.report);
  }
  std::sort(candidates.begin(), candidates.end(), [](const LatestCandidate& a, const LatestCandidate& b) {
    if (a.report.progress.has_value() != b.report.progress.has_value()) return a.report.progress.has_value();
    if (a.report.progress && b.report.progress && *a.report.progress != *b.report.progress) {
      return *a.report.progress > *b.report.progress;
    }
    return a.mtime != b.mtime ? a.mtime > b.mtime : a.path < b.path;
  });
  for (LatestCandidate& c : candidates) {
    c.report = VerifyCheckpoint(c.path.string(), options);
    if (c.report.ok()) {
      out.chosen = std::move(c);
      break;
    }
    out.skipped.push_back(std::move(c));
  }
  return out;
}

}  // namespace ckptguard

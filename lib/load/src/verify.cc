#include "ckptguard/verify.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ckptguard/mapped_file.h"

namespace ckptguard {
namespace {

void AddError(VerifyReport& r, const std::string& kind, const Error& e) {
  r.problems.push_back({kind, e.where, e.offset, e.ToString()});
}

// VerifyMapped fills `report` from the bytes of `file`.
void VerifyMapped(const MappedFile& file, const LoadOptions& options, VerifyReport& report,
                  const std::function<void(const Checkpoint&)>& on_loaded) {
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
  report.progress = CheckpointProgress(*ckpt);
  if (on_loaded) on_loaded(*ckpt);
  // Every tensor's bytes, to the last one (a view reaching past its record
  // never loads; this reads what the views cover).
  report.num_tensors = ckpt->tensors().size();
  for (uint32_t t = 0; t < ckpt->tensors().size(); ++t) {
    // A meta tensor has no bytes; a sparse tensor's are those of its
    // component tensors, which are in the table and read in their turn.
    if (!ckpt->tensors()[t].HasData()) continue;
    Result<std::string> digest = ckpt->Sha256Hex(t);
    if (!digest) {
      AddError(report, "tensor", digest.error());
      continue;
    }
    report.tensor_bytes += ckpt->StorageBytes(t).size();
  }
}

}  // namespace

namespace {

// ScalarOf reads an int or float value, or the one element of a tensor of
// an integer or floating dtype (torch.tensor(1200) as a step).
std::optional<double> ScalarOf(const Checkpoint& ckpt, const Value& v, bool integral) {
  if (v.kind == ValueKind::kInt) return static_cast<double>(v.int_value);
  if (v.kind == ValueKind::kFloat && !integral) return v.float_value;
  if (v.kind != ValueKind::kTensor || v.index >= ckpt.tensors().size()) return std::nullopt;
  const Tensor& t = ckpt.tensors()[v.index];
  if (t.num_elements != 1) return std::nullopt;
  Result<std::vector<uint8_t>> bytes = ckpt.ContiguousBytes(v.index);
  if (!bytes || bytes->size() != DTypeSize(t.dtype)) return std::nullopt;
  auto read = [&]<typename T>(T) {
    T x;
    std::memcpy(&x, bytes->data(), sizeof(T));  // little-endian, as this build's targets are
    return static_cast<double>(x);
  };
  switch (t.dtype) {
    case DType::kInt8: return read(int8_t{});
    case DType::kUInt8: return read(uint8_t{});
    case DType::kInt16: return read(int16_t{});
    case DType::kUInt16: return read(uint16_t{});
    case DType::kInt32: return read(int32_t{});
    case DType::kUInt32: return read(uint32_t{});
    case DType::kInt64: return read(int64_t{});
    case DType::kFloat32: return integral ? std::nullopt : std::optional<double>(read(float{}));
    case DType::kFloat64: return integral ? std::nullopt : std::optional<double>(read(double{}));
    default: return std::nullopt;
  }
}

}  // namespace

Progress CheckpointProgress(const Checkpoint& ckpt) {
  Progress out;
  const Value& root = ckpt.values().Get(ckpt.root());
  if (root.kind != ValueKind::kDict) return out;
  auto find = [&](std::string_view key, bool integral) -> std::optional<double> {
    for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
      const Value& k = ckpt.values().Get(root.items[i]);
      if (k.kind == ValueKind::kStr && k.text == key) {
        return ScalarOf(ckpt, ckpt.values().Get(root.items[i + 1]), integral);
      }
    }
    return std::nullopt;
  };
  for (const char* key : {"global_step", "step"}) {
    std::optional<double> step = find(key, true);
    // Only values an int64 holds exactly (a uint64 tensor may not).
    if (step && *step >= -9.2e18 && *step <= 9.2e18) {
      out.step = static_cast<int64_t>(*step);
      out.step_from = key;
      break;
    }
  }
  if (std::optional<double> epoch = find("epoch", false); epoch && std::isfinite(*epoch)) {
    out.epoch = *epoch;
    out.epoch_from = "epoch";
  }
  return out;
}

VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options) {
  return VerifyCheckpoint(path, options, nullptr);
}

VerifyReport VerifyCheckpoint(const std::string& path, const LoadOptions& options,
                              const std::function<void(const Checkpoint&)>& on_loaded) {
  VerifyReport report;
  report.path = path;
  Result<MappedFile> file = MappedFile::Open(path, options.file);
  if (!file) {
    AddError(report, "io", file.error());
    report.format = "unknown";
    return report;
  }
  VerifyMapped(*file, options, report, on_loaded);
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

}  // namespace ckptguard

// Convert (convert.h): the conversions of `ckptguard convert`, here once for
// the CLI and the Python package.
#include "ckptguard/convert.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <vector>

#include "ckptguard/safetensors_writer.h"
#include "ckptguard/torch_writer.h"

namespace ckptguard {
namespace {

using nlohmann::json;

// Failed: what the CLI prints after the path (`where`).
std::unexpected<Error> Failed(const std::string& path, std::string detail,
                              ErrorCode code = ErrorCode::kUnsupportedFormat) {
  return MakeError(code, 0, std::move(detail), path);
}
std::unexpected<Error> Failed(const std::string& path, const Error& cause) {
  return MakeError(cause.code, cause.offset, cause.ToString(), path);
}

// Leaf is a non-tensor value met while walking the part being converted.
struct Leaf {
  std::string path;
  json value;
};

std::string JoinPath(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

std::string KeyText(const ValueArena& values, ValueId id) {
  const Value& k = values.Get(id);
  if (k.kind == ValueKind::kStr) return k.text;
  if (k.kind == ValueKind::kInt) return std::to_string(k.int_value);
  return "<" + std::string(ValueKindName(k.kind)) + ">";
}

// NonTensorLeaves lists the plain values (numbers, strings, None...) under
// `from`, iteratively and bounded, as JSON for __metadata__.
std::vector<Leaf> NonTensorLeaves(const Checkpoint& ckpt, ValueId from, size_t max_leaves) {
  std::vector<Leaf> out;
  std::vector<std::pair<ValueId, std::string>> stack{{from, ""}};
  size_t visits = 0;
  while (!stack.empty() && out.size() < max_leaves && ++visits < (size_t{1} << 22)) {
    auto [id, path] = stack.back();
    stack.pop_back();
    const Value& v = ckpt.values().Get(id);
    switch (v.kind) {
      case ValueKind::kTensor:
        break;
      case ValueKind::kDict:
        for (size_t i = v.items.size() / 2; i-- > 0;) {
          stack.emplace_back(v.items[2 * i + 1], JoinPath(path, KeyText(ckpt.values(), v.items[2 * i])));
        }
        break;
      case ValueKind::kList:
      case ValueKind::kTuple:
        for (size_t i = v.items.size(); i-- > 0;) stack.emplace_back(v.items[i], JoinPath(path, std::to_string(i)));
        break;
      case ValueKind::kNone: out.push_back({path, nullptr}); break;
      case ValueKind::kBool: out.push_back({path, v.int_value != 0}); break;
      case ValueKind::kInt: out.push_back({path, v.int_value}); break;
      case ValueKind::kFloat:
        out.push_back({path, std::isfinite(v.float_value) ? json(v.float_value) : json(std::to_string(v.float_value))});
        break;
      case ValueKind::kStr: out.push_back({path, v.text}); break;
      default: out.push_back({path, "<" + std::string(ValueKindName(v.kind)) + ">"}); break;
    }
  }
  return out;
}

// SafetensorsOut collects the tensors of one safetensors file, from one
// checkpoint or from the shards of one: each copied out of its map once, a
// tensor reachable under two names (tied weights) written once and the other
// name noted in __metadata__ ("ckptguard.aliases").
class SafetensorsOut {
 public:
  // Add copies tensor `tensor` of `ckpt` (the `source`-th checkpoint) to be
  // written under `name`. Failure: the detail names the tensor.
  Status Add(const Checkpoint& ckpt, uint32_t source, uint32_t tensor, const std::string& name) {
    const Tensor& t = ckpt.tensors()[tensor];
    if (const std::optional<std::string> why = NotAPlainArray(t)) {
      // safetensors holds plain dense arrays: a quantized tensor's integers
      // would read as other values, a numpy dtype's bytes would lose what
      // they are, a meta tensor has no data and a sparse one's dense form is
      // not the file's data (and may be far larger than it).
      return MakeError(ErrorCode::kUnsupportedFormat, 0, name + ": " + *why + " has no place in safetensors");
    }
    // The conjugate and negative bits make other values of the same bytes.
    const auto key = std::make_tuple(source, t.storage, t.storage_offset, t.shape, t.stride,
                                     static_cast<int>(t.dtype) | (t.conj ? 0x100 : 0) | (t.neg ? 0x200 : 0));
    if (auto it = seen_.find(key); it != seen_.end()) {
      aliases_[name] = it->second;
      return OkStatus();
    }
    seen_.emplace(key, name);
    Result<std::vector<uint8_t>> bytes = ckpt.ContiguousBytes(tensor);
    if (!bytes) return MakeError(bytes.error().code, bytes.error().offset, name + ": " + bytes.error().ToString());
    buffers_.push_back(std::move(*bytes));
    tensors_.push_back(SafetensorsTensorData{name, t.dtype, t.shape, Bytes(buffers_.back().data(), buffers_.back().size())});
    return OkStatus();
  }
  // AddOwned adds bytes already made (a tensor assembled from chunks).
  void AddOwned(std::vector<uint8_t> bytes, DType dtype, std::span<const int64_t> shape, const std::string& name) {
    buffers_.push_back(std::move(bytes));
    tensors_.push_back(SafetensorsTensorData{name, dtype, std::vector<int64_t>(shape.begin(), shape.end()),
                                             Bytes(buffers_.back().data(), buffers_.back().size())});
  }
  // Write writes OUT atomically with `metadata` and what Add noted; the
  // caller checks its sources are unchanged first (the copies are torn
  // otherwise).
  Status Write(const std::string& path, std::vector<std::pair<std::string, std::string>> metadata) {
    if (!aliases_.empty()) metadata.emplace_back("ckptguard.aliases", aliases_.dump());
    metadata.emplace_back("format", "pt");
    return WriteSafetensors(path, std::move(tensors_), metadata);
  }
  size_t written() const { return buffers_.size(); }
  size_t aliases() const { return aliases_.size(); }

 private:
  std::map<std::tuple<uint32_t, uint32_t, int64_t, std::vector<int64_t>, std::vector<int64_t>, int>, std::string> seen_;
  json aliases_ = json::object();
  std::deque<std::vector<uint8_t>> buffers_;  // stable addresses: tensors_ views them
  std::vector<SafetensorsTensorData> tensors_;
};

// ValuesMetadata: the plain values met are refused by name, unless
// keep_metadata keeps them as JSON in __metadata__ ("ckptguard.values").
Status ValuesMetadata(const std::vector<Leaf>& leaves, const ConvertOptions& options, const std::string& input,
                      std::vector<std::pair<std::string, std::string>>& metadata) {
  if (leaves.empty()) return OkStatus();
  if (!options.keep_metadata) {
    std::string names;
    for (size_t i = 0; i < leaves.size() && i < 5; ++i) names += (i ? ", " : "") + leaves[i].path;
    return Failed(input, std::to_string(leaves.size()) + " non-tensor value(s) (" + names +
                             (leaves.size() > 5 ? ", ..." : "") +
                             ") have no place in safetensors: pass --keep-metadata to store them in "
                             "__metadata__ as JSON, or --prefix to convert a state dict only");
  }
  json values = json::object();
  for (const Leaf& l : leaves) values[l.path] = l.value;
  metadata.emplace_back("ckptguard.values", values.dump());
  return OkStatus();
}

std::string TrimmedPrefix(const ConvertOptions& options) {
  std::string prefix = options.prefix;
  if (prefix.ends_with('.')) prefix.pop_back();
  return prefix;
}

}  // namespace

Result<ConvertSummary> ConvertToSafetensors(const Checkpoint& ckpt, const std::string& input, const std::string& output,
                                            const ConvertOptions& options) {
  const std::string prefix = TrimmedPrefix(options);
  const std::optional<ValueId> from = prefix.empty() ? std::optional<ValueId>(ckpt.root()) : ckpt.Find(prefix);
  if (!from) return Failed(input, "no value at '" + options.prefix + "'", ErrorCode::kInvalidArgument);
  Result<std::vector<NamedTensor>> named = ckpt.NamedTensors(*from);
  if (!named) return Failed(input, named.error());
  if (named->empty()) {
    return Failed(input, "no tensors to convert" + (options.prefix.empty() ? "" : " under '" + options.prefix + "'"),
                  ErrorCode::kInvalidArgument);
  }
  // Plain values: kept as JSON in __metadata__ only when asked.
  const std::vector<Leaf> leaves = NonTensorLeaves(ckpt, *from, 100'000);
  std::vector<std::pair<std::string, std::string>> metadata;
  CKG_TRY(ValuesMetadata(leaves, options, input, metadata));
  SafetensorsOut out;
  for (const NamedTensor& nt : *named) {
    if (Status added = out.Add(ckpt, 0, nt.tensor, nt.path); !added) return Failed(input, added.error().detail, added.error().code);
  }
  // Every tensor was copied out of the map above: if the file changed while
  // it was read, the copies are torn and nothing is written.
  if (Status unchanged = ckpt.CheckUnchanged(); !unchanged) return Failed(input, unchanged.error());
  const ConvertSummary summary{out.written(), out.aliases(), leaves.size()};
  if (Status written = out.Write(output, std::move(metadata)); !written) return Failed(output, written.error());
  return summary;
}

Result<ConvertSummary> ConvertToSafetensors(const ShardedCheckpoint& sharded, const std::string& input,
                                            const std::string& output, const ConvertOptions& options) {
  if (!options.prefix.empty()) {
    return Failed(input, "--prefix does not apply to a sharded state dict", ErrorCode::kInvalidArgument);
  }
  if (sharded.tensors().empty()) return Failed(input, "no tensors to convert", ErrorCode::kInvalidArgument);
  SafetensorsOut out;
  for (const ShardedTensor& t : sharded.tensors()) {
    if (Status added = out.Add(sharded.shards()[t.shard], t.shard, t.tensor, t.name); !added) {
      return Failed(input, added.error().detail, added.error().code);
    }
  }
  if (Status unchanged = sharded.CheckUnchanged(); !unchanged) return Failed(input, unchanged.error());
  const ConvertSummary summary{out.written(), out.aliases(), 0};
  if (Status written = out.Write(output, {}); !written) return Failed(output, written.error());
  return summary;
}

Result<ConvertSummary> ConvertToSafetensors(const DcpCheckpoint& dcp, const std::string& input,
                                            const std::string& output, const ConvertOptions& options) {
  const std::string prefix = TrimmedPrefix(options);
  SafetensorsOut out;
  std::vector<Leaf> leaves;
  for (size_t i = 0; i < dcp.entries().size(); ++i) {
    const DcpEntry& e = dcp.entries()[i];
    // The key under the prefix (a tensor saved at the prefix itself is "").
    const std::optional<std::string> name(DcpKeyUnder(e.fqn, prefix));
    if (!name) continue;
    const std::string label = name->empty() ? e.fqn : *name;
    if (e.is_tensor) {
      uint32_t tensor = 0;
      if (const Checkpoint* single = dcp.SingleTensor(i, &tensor)) {
        const uint32_t source = static_cast<uint32_t>(single - dcp.archives().data());
        if (Status added = out.Add(*single, source, tensor, label); !added) {
          return Failed(input, added.error().detail, added.error().code);
        }
        continue;
      }
      Result<std::vector<uint8_t>> bytes = dcp.ContiguousBytes(i);
      if (!bytes) return Failed(input, label + ": " + bytes.error().ToString(), bytes.error().code);
      out.AddOwned(std::move(*bytes), e.dtype, e.size, label);
      continue;
    }
    // A value: the tensors it holds, and its plain values (the value itself
    // when it is one: its path inside is "").
    auto under = [&](const std::string& path) { return path.empty() ? label : JoinPath(*name, path); };
    const Checkpoint& a = dcp.archives()[e.archive];
    Result<std::vector<NamedTensor>> named = a.NamedTensors(a.root());
    if (!named) return Failed(input, label + ": " + named.error().ToString(), named.error().code);
    for (const NamedTensor& nt : *named) {
      const uint32_t source = static_cast<uint32_t>(&a - dcp.archives().data());
      if (Status added = out.Add(a, source, nt.tensor, under(nt.path)); !added) {
        return Failed(input, added.error().detail, added.error().code);
      }
    }
    for (Leaf& l : NonTensorLeaves(a, a.root(), 100'000)) leaves.push_back({under(l.path), std::move(l.value)});
  }
  if (out.written() + out.aliases() == 0) {
    return Failed(input, "no tensors to convert" + (prefix.empty() ? "" : " under '" + options.prefix + "'"),
                  ErrorCode::kInvalidArgument);
  }
  std::vector<std::pair<std::string, std::string>> metadata;
  CKG_TRY(ValuesMetadata(leaves, options, input, metadata));
  if (Status unchanged = dcp.CheckUnchanged(); !unchanged) return Failed(input, unchanged.error());
  const ConvertSummary summary{out.written(), out.aliases(), leaves.size()};
  if (Status written = out.Write(output, std::move(metadata)); !written) return Failed(output, written.error());
  return summary;
}

Result<ConvertSummary> ConvertToTorch(const Checkpoint& ckpt, const std::string& input, const std::string& output,
                                      const ConvertOptions& options) {
  const std::string prefix = TrimmedPrefix(options);
  const std::optional<ValueId> from = prefix.empty() ? std::optional<ValueId>(ckpt.root()) : ckpt.Find(prefix);
  if (!from) return Failed(input, "no value at '" + options.prefix + "'", ErrorCode::kInvalidArgument);
  // The whole file keeps its structure, sharing and views; a sub-dict is
  // rebuilt from its tensors alone (so values elsewhere cannot stop it).
  Result<SaveTree> tree = options.prefix.empty() ? SaveTreeFromCheckpoint(ckpt) : Result<SaveTree>(SaveTree());
  if (!tree) return Failed(input, tree.error());
  if (!options.prefix.empty()) {
    // A sub-dict: rebuild the tree as an OrderedDict of its tensors (views
    // become contiguous copies).
    Result<std::vector<NamedTensor>> named = ckpt.NamedTensors(*from);
    if (!named) return Failed(input, named.error());
    SaveTree sub;
    std::vector<std::pair<SaveId, SaveId>> items;
    for (const NamedTensor& nt : *named) {
      const Tensor& t = ckpt.tensors()[nt.tensor];
      if (const std::optional<std::string> why = NotAPlainArray(t)) {
        return Failed(input, nt.path + ": " + *why + ", which convert --to torch does not write");
      }
      Result<std::vector<uint8_t>> bytes = ckpt.ContiguousBytes(nt.tensor);
      if (!bytes) return Failed(input, nt.path + ": " + bytes.error().ToString(), bytes.error().code);
      const uint32_t storage = sub.AddOwnedStorage(t.dtype, std::string(bytes->begin(), bytes->end()));
      SaveTensor st;
      st.dtype = t.dtype;
      st.shape = t.shape;
      st.stride.assign(t.shape.size(), 1);
      for (size_t i = t.shape.size(); i-- > 1;) st.stride[i - 1] = st.stride[i] * std::max<int64_t>(t.shape[i], 1);
      st.storage = storage;
      st.parameter = t.parameter;
      st.requires_grad = t.requires_grad;
      items.emplace_back(sub.Str(nt.path), sub.Tensor(std::move(st)));
    }
    sub.root = sub.OrderedDict(items);
    tree = std::move(sub);
  }
  const std::string stem = std::filesystem::path(output).stem().string();
  // The writer copies every storage out of the map before it writes; the
  // check runs then, before anything is committed.
  Status written = WriteTorchZip(output, *tree, stem.empty() ? "archive" : stem, SaveLimits{},
                                 [&ckpt] { return ckpt.CheckUnchanged(); });
  if (!written) return Failed(output, written.error());
  return ConvertSummary{tree->tensors.size(), 0, 0};
}

std::optional<ConvertTo> ConvertFormatOf(const std::string& output) {
  if (output.ends_with(".safetensors")) return ConvertTo::kSafetensors;
  for (const char* ext : {".pt", ".pth", ".bin", ".ckpt"}) {
    if (output.ends_with(ext)) return ConvertTo::kTorch;
  }
  return std::nullopt;
}

Result<ConvertSummary> ConvertFile(const std::string& input, const std::string& output, ConvertTo to,
                                   const ConvertOptions& options, const LoadOptions& load) {
  if (IsShardIndexPath(input)) {
    if (to != ConvertTo::kSafetensors) {
      return Failed(output, "a sharded checkpoint converts to one safetensors file (--to safetensors)",
                    ErrorCode::kInvalidArgument);
    }
    Result<ShardedCheckpoint> sharded = LoadShardedCheckpoint(input, load);
    if (!sharded) return Failed(input, sharded.error());
    return ConvertToSafetensors(*sharded, input, output, options);
  }
  if (IsDcpFolder(input)) {
    if (to != ConvertTo::kSafetensors) {
      return Failed(output, "a torch.distributed.checkpoint folder converts to one safetensors file (--to safetensors)",
                    ErrorCode::kInvalidArgument);
    }
    Result<DcpCheckpoint> dcp = LoadDcpCheckpoint(input, load);
    if (!dcp) return Failed(input, dcp.error());
    return ConvertToSafetensors(*dcp, input, output, options);
  }
  Result<Checkpoint> ckpt = LoadCheckpoint(input, load);
  if (!ckpt) return Failed(input, ckpt.error());
  return to == ConvertTo::kSafetensors ? ConvertToSafetensors(*ckpt, input, output, options)
                                       : ConvertToTorch(*ckpt, input, output, options);
}

}  // namespace ckptguard

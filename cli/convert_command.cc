// `ckptguard convert IN OUT`: .pt/.bin/.ckpt/legacy/npz/safetensors to
// safetensors or a torch zip, through the hardened loader only.
#include "convert_command.h"

#include <deque>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "ckptguard/checkpoint.h"
#include "ckptguard/dcp.h"
#include "ckptguard/safetensors_writer.h"
#include "ckptguard/sharded.h"
#include "ckptguard/torch_writer.h"
#include "ckptguard/printable.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;

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

std::string Format(const ConvertFlags& flags) {
  if (!flags.to.empty()) return flags.to;
  const std::string& out = flags.output;
  if (out.ends_with(".safetensors")) return "safetensors";
  for (const char* ext : {".pt", ".pth", ".bin", ".ckpt"}) {
    if (out.ends_with(ext)) return "pt";
  }
  return "";
}

int Fail(const std::string& path, const std::string& detail) {
  std::cerr << "ckptguard convert: " << Printable(path) << ": " << Printable(detail) << "\n";
  return kExitError;
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

void PrintWritten(const ConvertFlags& flags, const SafetensorsOut& out, size_t leaves) {
  std::cout << flags.output << ": " << out.written() << " tensors written as safetensors"
            << (out.aliases() == 0 ? "" : ", " + std::to_string(out.aliases()) + " shared tensor(s) noted in __metadata__")
            << (leaves == 0 ? "" : ", " + std::to_string(leaves) + " plain values in __metadata__") << "\n";
}

// ValuesMetadata: the plain values met are refused by name (false, the
// error printed), unless --keep-metadata keeps them as JSON in __metadata__
// ("ckptguard.values").
bool ValuesMetadata(const std::vector<Leaf>& leaves, const ConvertFlags& flags,
                    std::vector<std::pair<std::string, std::string>>& metadata) {
  if (leaves.empty()) return true;
  if (!flags.keep_metadata) {
    std::string names;
    for (size_t i = 0; i < leaves.size() && i < 5; ++i) names += (i ? ", " : "") + leaves[i].path;
    Fail(flags.input, std::to_string(leaves.size()) + " non-tensor value(s) (" + names +
                          (leaves.size() > 5 ? ", ..." : "") +
                          ") have no place in safetensors: pass --keep-metadata to store them in "
                          "__metadata__ as JSON, or --prefix to convert a state dict only");
    return false;
  }
  json values = json::object();
  for (const Leaf& l : leaves) values[l.path] = l.value;
  metadata.emplace_back("ckptguard.values", values.dump());
  return true;
}

int ToSafetensors(const Checkpoint& ckpt, ValueId from, const ConvertFlags& flags) {
  Result<std::vector<NamedTensor>> named = ckpt.NamedTensors(from);
  if (!named) return Fail(flags.input, named.error().ToString());
  if (named->empty()) return Fail(flags.input, "no tensors to convert" + (flags.prefix.empty() ? "" : " under '" + flags.prefix + "'"));
  // Plain values: kept as JSON in __metadata__ only when asked.
  const std::vector<Leaf> leaves = NonTensorLeaves(ckpt, from, 100'000);
  std::vector<std::pair<std::string, std::string>> metadata;
  if (!ValuesMetadata(leaves, flags, metadata)) return kExitError;
  SafetensorsOut out;
  for (const NamedTensor& nt : *named) {
    if (Status added = out.Add(ckpt, 0, nt.tensor, nt.path); !added) return Fail(flags.input, added.error().detail);
  }
  // Every tensor was copied out of the map above: if the file changed while
  // it was read, the copies are torn and nothing is written.
  if (Status unchanged = ckpt.CheckUnchanged(); !unchanged) return Fail(flags.input, unchanged.error().ToString());
  Status written = out.Write(flags.output, std::move(metadata));
  if (!written) return Fail(flags.output, written.error().ToString());
  PrintWritten(flags, out, leaves.size());
  return kExitOk;
}

// ShardedToSafetensors merges the shards of a sharded checkpoint (loaded as
// one by LoadShardedCheckpoint) into one safetensors file.
int ShardedToSafetensors(const ShardedCheckpoint& sharded, const ConvertFlags& flags) {
  if (!flags.prefix.empty()) return Fail(flags.input, "--prefix does not apply to a sharded state dict");
  if (sharded.tensors().empty()) return Fail(flags.input, "no tensors to convert");
  SafetensorsOut out;
  for (const ShardedTensor& t : sharded.tensors()) {
    if (Status added = out.Add(sharded.shards()[t.shard], t.shard, t.tensor, t.name); !added) {
      return Fail(flags.input, added.error().detail);
    }
  }
  if (Status unchanged = sharded.CheckUnchanged(); !unchanged) return Fail(flags.input, unchanged.error().ToString());
  Status written = out.Write(flags.output, {});
  if (!written) return Fail(flags.output, written.error().ToString());
  PrintWritten(flags, out, 0);
  return kExitOk;
}

// DcpToSafetensors writes the tensors of a torch.distributed.checkpoint
// folder (chunks assembled) as one safetensors file; --prefix keeps the
// keys under a dotted path, without it; values are refused, or with
// --keep-metadata kept as JSON, as for one file.
int DcpToSafetensors(const DcpCheckpoint& dcp, const ConvertFlags& flags) {
  std::string prefix = flags.prefix;
  if (prefix.ends_with('.')) prefix.pop_back();
  SafetensorsOut out;
  std::vector<Leaf> leaves;
  for (size_t i = 0; i < dcp.entries().size(); ++i) {
    const DcpEntry& e = dcp.entries()[i];
    // The key under --prefix (a tensor saved at the prefix itself is "").
    const std::optional<std::string> name(DcpKeyUnder(e.fqn, prefix));
    if (!name) continue;
    const std::string label = name->empty() ? e.fqn : *name;
    if (e.is_tensor) {
      uint32_t tensor = 0;
      if (const Checkpoint* single = dcp.SingleTensor(i, &tensor)) {
        const uint32_t source = static_cast<uint32_t>(single - dcp.archives().data());
        if (Status added = out.Add(*single, source, tensor, label); !added) return Fail(flags.input, added.error().detail);
        continue;
      }
      Result<std::vector<uint8_t>> bytes = dcp.ContiguousBytes(i);
      if (!bytes) return Fail(flags.input, label + ": " + bytes.error().ToString());
      out.AddOwned(std::move(*bytes), e.dtype, e.size, label);
      continue;
    }
    // A value: the tensors it holds, and its plain values (the value itself
    // when it is one: its path inside is "").
    auto under = [&](const std::string& path) { return path.empty() ? label : JoinPath(*name, path); };
    const Checkpoint& a = dcp.archives()[e.archive];
    Result<std::vector<NamedTensor>> named = a.NamedTensors(a.root());
    if (!named) return Fail(flags.input, label + ": " + named.error().ToString());
    for (const NamedTensor& nt : *named) {
      const uint32_t source = static_cast<uint32_t>(&a - dcp.archives().data());
      if (Status added = out.Add(a, source, nt.tensor, under(nt.path)); !added) {
        return Fail(flags.input, added.error().detail);
      }
    }
    for (Leaf& l : NonTensorLeaves(a, a.root(), 100'000)) leaves.push_back({under(l.path), std::move(l.value)});
  }
  if (out.written() + out.aliases() == 0) {
    return Fail(flags.input, "no tensors to convert" + (prefix.empty() ? "" : " under '" + flags.prefix + "'"));
  }
  std::vector<std::pair<std::string, std::string>> metadata;
  if (!ValuesMetadata(leaves, flags, metadata)) return kExitError;
  if (Status unchanged = dcp.CheckUnchanged(); !unchanged) return Fail(flags.input, unchanged.error().ToString());
  Status written = out.Write(flags.output, std::move(metadata));
  if (!written) return Fail(flags.output, written.error().ToString());
  PrintWritten(flags, out, leaves.size());
  return kExitOk;
}

int ToTorch(const Checkpoint& ckpt, ValueId from, const ConvertFlags& flags) {
  // The whole file keeps its structure, sharing and views; a sub-dict is
  // rebuilt from its tensors alone (so values elsewhere cannot stop it).
  Result<SaveTree> tree = flags.prefix.empty() ? SaveTreeFromCheckpoint(ckpt) : Result<SaveTree>(SaveTree());
  if (!tree) return Fail(flags.input, tree.error().ToString());
  if (!flags.prefix.empty()) {
    // A sub-dict: rebuild the tree as an OrderedDict of its tensors (views
    // become contiguous copies).
    Result<std::vector<NamedTensor>> named = ckpt.NamedTensors(from);
    if (!named) return Fail(flags.input, named.error().ToString());
    SaveTree sub;
    std::vector<std::pair<SaveId, SaveId>> items;
    for (const NamedTensor& nt : *named) {
      const Tensor& t = ckpt.tensors()[nt.tensor];
      if (const std::optional<std::string> why = NotAPlainArray(t)) {
        return Fail(flags.input, nt.path + ": " + *why + ", which convert --to torch does not write");
      }
      Result<std::vector<uint8_t>> bytes = ckpt.ContiguousBytes(nt.tensor);
      if (!bytes) return Fail(flags.input, nt.path + ": " + bytes.error().ToString());
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
  const std::string stem = std::filesystem::path(flags.output).stem().string();
  // The writer copies every storage out of the map before it writes; the
  // check runs then, before anything is committed.
  Status written = WriteTorchZip(flags.output, *tree, stem.empty() ? "archive" : stem, SaveLimits{},
                                 [&ckpt] { return ckpt.CheckUnchanged(); });
  if (!written) return Fail(flags.output, written.error().ToString());
  std::cout << flags.output << ": " << tree->tensors.size() << " tensors written as a torch zip checkpoint\n";
  return kExitOk;
}

}  // namespace

void AddConvertCommand(CLI::App& app, ConvertFlags& flags) {
  CLI::App* cmd = app.add_subcommand("convert", "Convert checkpoints to safetensors or a torch zip, executing nothing");
  cmd->footer(R"(What it does:
  Reads IN with the hardened loader (torch zip, legacy torch, safetensors,
  numpy .npz/.npy, TorchScript weights; nothing is ever executed, and a file
  that names any global outside the allowlist is refused) and writes OUT as
  safetensors (OUT ends in .safetensors, or --to safetensors) or as a torch zip
  checkpoint that torch.load reads (.pt/.pth/.bin/.ckpt, or --to pt).

  safetensors holds only tensors: a tensor reachable under two keys (tied
  weights) is written once and the other key noted in __metadata__
  ("ckptguard.aliases"); plain values (epoch, lr, ...) are refused unless
  --keep-metadata stores them in __metadata__ as JSON ("ckptguard.values");
  --prefix picks a sub-dict (e.g. the model of a training checkpoint).

  A sharded checkpoint (IN ending in .index.json, as Hugging Face writes
  model.safetensors.index.json and pytorch_model.bin.index.json) is merged
  into one safetensors file, after the index and the shards are checked to
  agree (see 'ckptguard inspect --help').

  A torch.distributed.checkpoint folder (IN holding .metadata and .distcp
  files) converts to one safetensors file: every tensor, chunks saved by
  several ranks assembled; --prefix model keeps the keys under model. (the
  default planner flattens nested dicts to dotted keys) without the prefix.

  OUT is written atomically (a temporary file in the same folder, fsync,
  rename) after the written bytes were read back and checked: a failure at any
  point leaves no OUT, or the previous OUT untouched.

Exit status: 0 written, 2 not written (the error says why).

Examples:
  ckptguard convert pytorch_model.bin model.safetensors
  ckptguard convert --prefix model checkpoint.pt model.safetensors
  ckptguard convert --keep-metadata checkpoint.pt checkpoint.safetensors
  ckptguard convert model.safetensors model.pt
  ckptguard convert pytorch_model.bin.index.json model.safetensors
  ckptguard convert --prefix model checkpoints/step_1200/ model.safetensors
)");
  cmd->add_option("input", flags.input, "Checkpoint to read")->required()->type_name("IN");
  cmd->add_option("output", flags.output, "File to write")->required()->type_name("OUT");
  cmd->add_option("--to", flags.to, "Output format, when OUT's extension does not say")
      ->check(CLI::IsMember({"safetensors", "pt"}));
  cmd->add_option("--prefix", flags.prefix, "Convert only the sub-dict at this dotted path (e.g. model)");
  cmd->add_flag("--keep-metadata", flags.keep_metadata,
                "safetensors: store plain values as JSON in __metadata__ instead of refusing");
  AddBudgetOptions(*cmd, flags.budget);
}

int RunConvert(const ConvertFlags& flags) {
  const std::string format = Format(flags);
  if (format.empty()) {
    return Fail(flags.output, "cannot tell the output format from the name: use --to safetensors or --to pt");
  }
  LoadOptions load;
  load.budget = flags.budget;
  if (IsShardIndexPath(flags.input)) {
    if (format != "safetensors") {
      return Fail(flags.output, "a sharded checkpoint converts to one safetensors file (--to safetensors)");
    }
    Result<ShardedCheckpoint> sharded = LoadShardedCheckpoint(flags.input, load);
    if (!sharded) return Fail(flags.input, sharded.error().ToString());
    return ShardedToSafetensors(*sharded, flags);
  }
  if (IsDcpFolder(flags.input)) {
    if (format != "safetensors") {
      return Fail(flags.output, "a torch.distributed.checkpoint folder converts to one safetensors file (--to safetensors)");
    }
    Result<DcpCheckpoint> dcp = LoadDcpCheckpoint(flags.input, load);
    if (!dcp) return Fail(flags.input, dcp.error().ToString());
    return DcpToSafetensors(*dcp, flags);
  }
  Result<Checkpoint> ckpt = LoadCheckpoint(flags.input, load);
  if (!ckpt) return Fail(flags.input, ckpt.error().ToString());
  std::string prefix = flags.prefix;
  if (prefix.ends_with('.')) prefix.pop_back();
  const std::optional<ValueId> from = prefix.empty() ? std::optional<ValueId>(ckpt->root()) : ckpt->Find(prefix);
  if (!from) return Fail(flags.input, "no value at '" + flags.prefix + "'");
  return format == "safetensors" ? ToSafetensors(*ckpt, *from, flags) : ToTorch(*ckpt, *from, flags);
}

}  // namespace ckptguard::cli

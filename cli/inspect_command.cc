// `ckptguard inspect`: what the hardened loader reads from a checkpoint.
#include "inspect_command.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>

#include "ckptguard/dcp.h"
#include "ckptguard/printable.h"
#include "ckptguard/sharded.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;

std::string Dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

// JsonDims is what the tensor lines have always shown: "[256,20]".
std::string JsonDims(const std::vector<int64_t>& dims) { return json(dims).dump(); }

json ErrorJson(const Error& e) {
  return json{{"code", std::string(ErrorCodeName(e.code))}, {"offset", e.offset}, {"where", e.where},
              {"detail", e.detail}, {"message", e.ToString()}};
}

// ExpectJson is the corpus's .expect.json shape (kind, tensors, skeleton...)
// with the file's name and path first: a file's object in the document's
// "files", or a shard's inside a sharded file's object. DescribeJson writes
// what no JSON library here would (lone surrogates as \udXXX escapes), so
// it is spliced in as text, never parsed and dumped again.
Result<std::string> ExpectJson(const Checkpoint& ckpt, const std::string& path, const InspectFlags& flags) {
  CKG_ASSIGN_OR_RETURN(std::string text, ckpt.DescribeJson(flags.prefix, !flags.no_digest));
  if (text.size() < 2 || text.front() != '{') return MakeError(ErrorCode::kInternal, 0, "DescribeJson is not an object");
  const json names{{"file", std::filesystem::path(path).filename().string()}, {"path", path}};
  std::string out = DumpJson(names, -1);
  out.back() = ',';
  out.append(text, 1);
  return out;
}

// QuantText is what the text output adds for a quantized tensor: its qscheme
// and, per tensor, scale and zero point (per channel, the axis; --json has
// every scale).
std::string QuantText(const Tensor& t) {
  auto shortest = [](double d) {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
    return std::string(buf, end);
  };
  switch (t.quant->scheme) {
    case QScheme::kNone: return "";
    case QScheme::kPerTensorAffine:
      return " per_tensor_affine scale " + shortest(t.quant->scale) + " zero_point " + std::to_string(t.quant->zero_point);
    default: return " " + std::string(QSchemeName(t.quant->scheme)) + " axis " + std::to_string(t.quant->axis);
  }
}

// SparsePartsOf names a sparse or nested tensor's components as torch's
// accessors do:
// (name, tensor index) in the order --json lists them.
std::vector<std::pair<std::string, uint32_t>> SparsePartsOf(const Tensor& t) {
  if (t.layout == TensorLayout::kStrided) return {};
  if (t.layout == TensorLayout::kNested) {
    return {{"buffer", t.nested->buffer},
            {"nested_sizes", t.nested->sizes},
            {"nested_storage_offsets", t.nested->offsets},
            {"nested_strides", t.nested->strides}};
  }
  if (t.layout == TensorLayout::kSparseCoo) return {{"indices", t.sparse->indices}, {"values", t.sparse->values}};
  const bool rows = t.layout == TensorLayout::kSparseCsr || t.layout == TensorLayout::kSparseBsr;
  return {{rows ? "crow_indices" : "ccol_indices", t.sparse->indices},
          {rows ? "col_indices" : "row_indices", t.sparse->plain_indices},
          {"values", t.sparse->values}};
}

// KindText is what the text output adds for a tensor without data of its
// own: "meta", or the sparse layout and its components' dtypes and shapes.
std::string KindText(const Checkpoint& ckpt, const Tensor& t) {
  if (t.meta) return " meta (no data)";
  if (t.layout == TensorLayout::kStrided) return "";
  std::string out = " " + std::string(TensorLayoutName(t.layout));
  for (const auto& [name, index] : SparsePartsOf(t)) {
    const Tensor& c = ckpt.tensors()[index];
    out += " " + name + " " + std::string(DTypeName(c.dtype)) + " " + JsonDims(c.shape);
  }
  return out;
}

// StateText names the attributes of a Parameter saved with some
// (_rebuild_parameter_with_state); --json has their values.
std::string StateText(const Checkpoint& ckpt, const Tensor& t) {
  if (!t.state) return "";
  std::string out = " attrs";
  const Value& st = ckpt.values().Get(*t.state);
  std::vector<ValueId> dicts;
  if (st.kind == ValueKind::kDict) dicts.push_back(*t.state);
  if (st.kind == ValueKind::kTuple) dicts.assign(st.items.begin(), st.items.end());
  size_t shown = 0;
  for (ValueId d : dicts) {
    const Value& dict = ckpt.values().Get(d);
    if (dict.kind != ValueKind::kDict) continue;
    for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
      const Value& key = ckpt.values().Get(dict.items[i]);
      if (shown++ == 8) return out + " ...";
      out += (shown == 1 ? " " : ", ") + Printable(key.kind == ValueKind::kStr ? key.text : "?");
    }
  }
  return out;
}

// PrintTree prints the value tree, indented, tensors as dtype/shape, at most
// max_lines lines (iterative: no recursion on the file's nesting).
void PrintTree(const Checkpoint& ckpt, uint64_t max_lines, std::ostream& out) {
  struct Frame {
    ValueId id;
    std::string label;
    size_t depth;
  };
  const ValueArena& values = ckpt.values();
  std::vector<Frame> stack{{ckpt.root(), "", 0}};
  uint64_t lines = 0;
  while (!stack.empty()) {
    if (lines++ >= max_lines) {
      out << "  ... (more; --max-tree-lines N shows more)\n";
      return;
    }
    const Frame f = stack.back();
    stack.pop_back();
    const Value& v = values.Get(f.id);
    std::string line = std::string(2 + 2 * std::min<size_t>(f.depth, 40), ' ') + f.label;
    auto scalar = [&]() -> std::string {
      switch (v.kind) {
        case ValueKind::kNone: return "None";
        case ValueKind::kBool: return v.int_value ? "True" : "False";
        case ValueKind::kInt: return std::to_string(v.int_value);
        case ValueKind::kBigInt: return v.text;
        case ValueKind::kFloat: {
          std::ostringstream s;
          s.precision(17);
          s << v.float_value;
          return s.str();
        }
        case ValueKind::kComplex: {
          std::ostringstream s;
          s.precision(17);
          s << "complex(" << v.float_value << ", " << v.imag_value() << ")";
          return s.str();
        }
        case ValueKind::kStr: return "'" + std::string(v.text.substr(0, 80)) + (v.text.size() > 80 ? "...'" : "'");
        case ValueKind::kBytes: return "<" + std::to_string(v.text.size()) + " bytes>";
        case ValueKind::kDtype: return "torch." + std::string(DTypeName(v.dtype));
        case ValueKind::kDevice: return "device('" + v.text + "')";
        case ValueKind::kGlobal: return "global " + v.text;
        case ValueKind::kRecord:  // a member (an Enum's): Class.NAME
          return "member " + v.text + "." + (v.items.empty() ? "?" : values.Get(v.items[0]).text);
        case ValueKind::kTensor: {
          const Tensor& t = ckpt.tensors()[v.index];
          return std::string(t.parameter ? "Parameter " : "tensor ") + std::string(DTypeName(t.dtype)) + " " +
                 Dims(t.shape) + QuantText(t) + (t.meta ? " meta" : t.layout != TensorLayout::kStrided
                                                                         ? " " + std::string(TensorLayoutName(t.layout))
                                                                         : std::string()) +
                 (t.numpy_dtype.empty() ? "" : " (numpy " + Printable(t.numpy_dtype) + ")");
        }
        default: return "<" + std::string(ValueKindName(v.kind)) + ">";
      }
    };
    const bool is_dict = v.kind == ValueKind::kDict || v.kind == ValueKind::kObject;
    const bool is_seq = v.kind == ValueKind::kList || v.kind == ValueKind::kTuple || v.kind == ValueKind::kSet;
    if (v.kind == ValueKind::kRecord && v.index != static_cast<uint32_t>(RecordForm::kMember)) {
      // A record: "record CLASS(args, state)", its arguments by index and its
      // state (attributes) by name. Nothing was called to make it.
      const std::span<const ValueId> attrs = values.Attrs(v);
      const size_t num_state = attrs.size() / 2;
      out << Printable(line) << (f.label.empty() ? "" : " ") << "record " << Printable(v.text) << " ("
          << v.items.size() << " args, " << num_state << " attrs)\n";
      if (f.depth >= 64) continue;
      for (size_t i = num_state; i-- > 0;) {
        const Value& name = values.Get(attrs[2 * i]);
        const std::string label = name.kind == ValueKind::kStr ? name.text.str() : "<" + std::string(ValueKindName(name.kind)) + ">";
        stack.push_back({attrs[2 * i + 1], "." + label + ":", f.depth + 1});
      }
      for (size_t i = v.items.size(); i-- > 0;) stack.push_back({v.items[i], "(" + std::to_string(i) + ")", f.depth + 1});
      continue;
    }
    if (is_dict || is_seq) {
      const size_t n = is_dict ? v.items.size() / 2 : v.items.size();
      std::string kind = v.kind == ValueKind::kObject ? v.text.str()
                         : v.ordered_dict             ? "OrderedDict"
                         : v.frozen && v.kind == ValueKind::kTuple ? "torch.Size"
                                                                   : std::string(ValueKindName(v.kind));
      out << Printable(line) << (f.label.empty() ? "" : " ") << Printable(kind) << " (" << n << ")\n";
      if (f.depth >= 64) continue;
      // OrderedDict attributes (state_dict()._metadata) come after the items.
      const std::span<const ValueId> attrs = values.Attrs(v);
      for (size_t i = attrs.size() / 2; i-- > 0;) {
        const Value& name = values.Get(attrs[2 * i]);
        const std::string label = name.kind == ValueKind::kStr ? name.text.str() : "<" + std::string(ValueKindName(name.kind)) + ">";
        stack.push_back({attrs[2 * i + 1], "(attribute) " + label + ":", f.depth + 1});
      }
      for (size_t i = n; i-- > 0;) {
        if (is_dict) {
          const Value& key = values.Get(v.items[2 * i]);
          std::string label = key.kind == ValueKind::kStr ? key.text.str() : key.kind == ValueKind::kInt
                                                                            ? std::to_string(key.int_value)
                                                                            : "<" + std::string(ValueKindName(key.kind)) + ">";
          stack.push_back({v.items[2 * i + 1], label + ":", f.depth + 1});
        } else {
          stack.push_back({v.items[i], "[" + std::to_string(i) + "]", f.depth + 1});
        }
      }
    } else {
      out << Printable(line) << (f.label.empty() ? "" : " ") << Printable(scalar()) << "\n";
    }
  }
}

// PrintTensors prints every tensor under the prefix with its path, one a
// line, and says which paths name more than one tensor (all are listed).
Status PrintTensors(const Checkpoint& ckpt, const InspectFlags& flags, std::ostream& out) {
  CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, ckpt.StateDict(flags.prefix));
  std::stable_sort(named.begin(), named.end(),
                   [](const NamedTensor& a, const NamedTensor& b) { return a.path < b.path; });
  std::map<std::string, size_t> paths;
  for (const NamedTensor& nt : named) ++paths[nt.path];
  std::string text = "tensors (" + std::to_string(named.size()) +
                     (flags.prefix.empty() ? "" : " under '" + Printable(flags.prefix) + "'") + "):\n";
  for (const NamedTensor& nt : named) {
    const Tensor& t = ckpt.tensors()[nt.tensor];
    text += "  " + Printable(nt.path) + "  " +
            (t.numpy_dtype.empty() ? "" : "numpy " + Printable(t.numpy_dtype) + " as bytes: ") +
            std::string(DTypeName(t.dtype)) + " " + JsonDims(t.shape);
    if (t.layout == TensorLayout::kStrided) {
      text += " stride " + JsonDims(t.stride) + (t.meta ? "" : " offset " + std::to_string(t.storage_offset));
    }
    text += (t.parameter ? " parameter" : "") + QuantText(t) + KindText(ckpt, t) + StateText(ckpt, t);
    if (!flags.no_digest && t.HasData()) {
      CKG_ASSIGN_OR_RETURN(std::string digest, ckpt.Sha256Hex(nt.tensor));
      text += "  sha256 " + digest;
    } else if (!flags.no_digest) {
      // A sparse tensor's digests are its components' (a meta tensor has none).
      for (const auto& [name, index] : SparsePartsOf(t)) {
        CKG_ASSIGN_OR_RETURN(std::string digest, ckpt.Sha256Hex(index));
        text += "  " + name + " sha256 " + digest;
      }
    }
    text += "\n";
  }
  for (const auto& [path, count] : paths) {
    if (count > 1) {
      text += "collision: " + std::to_string(count) + " tensors have the path " + Printable(path) +
              " (keys with dots; --json lists the keys of each)\n";
    }
  }
  CKG_TRY(ckpt.CheckUnchanged());
  out << text;
  return OkStatus();
}

// ErrorObject is a file's object in "files" when it could not be inspected.
std::string ErrorObject(const std::string& path, const Error& error) {
  return DumpJson(json{{"path", path}, {"error", ErrorJson(error)}}, -1);
}

// PrintDocument prints what a many-file inspect made (text, or its object
// in `doc`), or reports its error (and, with --json, adds it to `doc` as
// {path, error}).
int PrintDocument(const std::string& path, const Result<std::string>& out, const InspectFlags& flags,
                  JsonFilesDocument& doc) {
  if (!out) {
    ReportError(path, out.error());
    if (flags.json) doc.Add(ErrorObject(path, out.error()));
    return kExitError;
  }
  if (flags.json) {
    doc.Add(*out);
  } else {
    std::cout << *out;
  }
  return kExitOk;
}

// InspectSharded shows a sharded state dict through its index: every shard
// as `inspect` shows one file, after LoadShardedCheckpoint has checked that
// the shards hold exactly what the index maps to them.
int InspectSharded(const std::string& path, const InspectFlags& flags, JsonFilesDocument& doc) {
  Result<ShardedCheckpoint> sharded = LoadShardedCheckpoint(path, flags.load);
  Result<std::string> out = [&]() -> Result<std::string> {
    if (!sharded) return std::unexpected(sharded.error());
    const ShardIndex& index = sharded->index();
    std::string text;
    if (flags.json) {
      const json head{{"file", std::filesystem::path(path).filename().string()},
                      {"path", path},
                      {"kind", "sharded"},
                      {"tensors", sharded->tensors().size()}};
      text = DumpJson(head, -1);
      text.back() = ',';
      text += "\"shards\":[";
      for (size_t s = 0; s < index.shards.size(); ++s) {
        CKG_ASSIGN_OR_RETURN(std::string shard,
                             ExpectJson(sharded->shards()[s], (index.folder / index.shards[s]).string(), flags));
        text += (s ? "," : "") + shard;
      }
      text += "]}";
    } else {
      text = "== " + Printable(path) + "\nformat: sharded (" + std::to_string(index.shards.size()) + " shards, " +
             std::to_string(sharded->tensors().size()) + " tensors)\n";
      for (size_t s = 0; s < index.shards.size(); ++s) {
        std::ostringstream one;
        CKG_TRY(PrintTensors(sharded->shards()[s], flags, one));
        text += "-- shard " + Printable(index.shards[s]) + " (" +
                std::string(ContainerFormatName(sharded->shards()[s].format())) + "), " + one.str();
      }
    }
    CKG_TRY(sharded->CheckUnchanged());
    return text;
  }();
  return PrintDocument(path, out, flags, doc);
}

// InspectDcp shows a torch.distributed.checkpoint folder: every key with
// its tensor (chunks assembled for the digest) or its value.
int InspectDcp(const std::string& path, const InspectFlags& flags, JsonFilesDocument& doc) {
  Result<DcpCheckpoint> dcp = LoadDcpCheckpoint(path, flags.load);
  Result<std::string> out = [&]() -> Result<std::string> {
    if (!dcp) return std::unexpected(dcp.error());
    const std::vector<DcpEntry>& entries = dcp->entries();
    size_t num_tensors = 0;
    for (const DcpEntry& e : entries) num_tensors += e.is_tensor ? 1 : 0;
    std::string text;
    std::string tensors_text;
    std::string values_text;
    json tensors = json::object();
    std::string values_json;
    for (size_t i = 0; i < entries.size(); ++i) {
      const DcpEntry& e = entries[i];
      if (!DcpKeyUnder(e.fqn, flags.prefix)) continue;
      if (e.is_tensor) {
        const std::vector<int64_t> shape(e.size.begin(), e.size.end());
        std::string digest;
        if (!flags.no_digest) {
          CKG_ASSIGN_OR_RETURN(digest, dcp->Sha256Hex(i));
        }
        json t{{"dtype", std::string(DTypeName(e.dtype))}, {"shape", shape}, {"chunks", e.chunks.size()}};
        if (!flags.no_digest) t["sha256"] = digest;
        tensors[e.fqn] = std::move(t);
        tensors_text += "  " + Printable(e.fqn) + " " + std::string(DTypeName(e.dtype)) + " " + JsonDims(shape) +
                        (e.chunks.size() > 1 ? " (" + std::to_string(e.chunks.size()) + " chunks)" : "") +
                        (flags.no_digest ? "" : "  sha256 " + digest) + "\n";
        continue;
      }
      // A value: its archive's skeleton (what torch.load gives, tensors as
      // "<tensor>"), spliced as text (it may hold lone surrogates).
      CKG_ASSIGN_OR_RETURN(std::string skeleton, dcp->archives()[e.archive].SkeletonJson());
      values_json += (values_json.empty() ? "" : ",") + DumpJson(json(e.fqn), -1) + ":" + skeleton;
      values_text += "  " + Printable(e.fqn) + " = " + Printable(skeleton) + "\n";
    }
    if (flags.json) {
      const json head{{"file", std::filesystem::path(path).filename().string()},
                      {"path", path},
                      {"kind", "dcp"},
                      {"files", [&] {
                         std::vector<std::string> files;
                         for (const DcpArchive& a : dcp->archive_refs()) {
                           if (std::find(files.begin(), files.end(), a.file) == files.end()) files.push_back(a.file);
                         }
                         std::sort(files.begin(), files.end());
                         return files;
                       }()},
                      {"tensors", tensors}};
      text = DumpJson(head, -1);
      text.back() = ',';
      text += "\"values\":{" + values_json + "}}";
    } else {
      text = "== " + Printable(path) + "\nformat: dcp (torch.distributed.checkpoint: " + std::to_string(entries.size()) +
             " keys, " + std::to_string(dcp->archives().size()) + " items)\n";
      text += "tensors (" + std::to_string(tensors.size()) + "):\n" + tensors_text;
      text += "values (" + std::to_string(entries.size() - num_tensors) + "):\n" + values_text;
    }
    CKG_TRY(dcp->CheckUnchanged());
    return text;
  }();
  return PrintDocument(path, out, flags, doc);
}

int InspectOne(const std::string& path, const InspectFlags& flags, JsonFilesDocument& doc) {
  if (IsShardIndexPath(path)) return InspectSharded(path, flags, doc);
  if (IsDcpFolder(path)) return InspectDcp(path, flags, doc);
  Result<Checkpoint> ckpt = LoadCheckpoint(path, flags.load);
  if (ckpt && !flags.json) {
    std::ostringstream text;
    if (Status printed = PrintTensors(*ckpt, flags, text); !printed) {
      // A file that changed under the digests explains their error.
      Status unchanged = ckpt->CheckUnchanged();
      ReportError(path, unchanged ? printed.error() : unchanged.error());
      return kExitError;
    }
    std::cout << "== " << Printable(path) << "\n";
    std::cout << "format: " << ContainerFormatName(ckpt->format()) << "\n";
    for (const std::string& note : ckpt->notes()) std::cout << "note: " << Printable(note) << "\n";
    std::cout << text.str();
    std::cout << "tree:\n";
    PrintTree(*ckpt, flags.max_tree_lines, std::cout);
    return kExitOk;
  }
  Result<std::string> object =
      ckpt ? ExpectJson(*ckpt, path, flags) : Result<std::string>(std::unexpected(ckpt.error()));
  // The digests read tensor data through the map: torn if the file changed
  // (which also explains any error they gave).
  if (ckpt) {
    if (Status unchanged = ckpt->CheckUnchanged(); !unchanged) object = std::unexpected(unchanged.error());
  }
  return PrintDocument(path, object, flags, doc);
}

}  // namespace

void AddInspectCommand(CLI::App& app, InspectFlags& flags) {
  CLI::App* cmd = app.add_subcommand("inspect", "Load checkpoints with the hardened VM and show tensors and values");
  cmd->footer(R"(What it does:
  Loads each file as a C++ program would with ckptguard::LoadCheckpoint: torch
  zip (1.x and 2.x layouts), legacy torch, safetensors, numpy .npy/.npz, and the
  weights of TorchScript archives (their code is never run). The pickle runs in
  a restricted VM that knows only the tensor-rebuild globals in
  rules/allowlist.toml; any other global or call stops the load with an error
  naming it and its byte offset. Nothing is imported, called or executed.

  Declared records: what training checkpoints hold besides tensors, and
  torch.load(weights_only=True) refuses, loads as records, built without
  calling anything: argparse.Namespace and types.SimpleNamespace hyper-
  parameters, pathlib paths, Enum members (getattr(Class, 'NAME'), as Python
  3.11+ pickles them; the class is only named), datetime values, copyreg
  reconstruction of plain objects, functools.partial (kept, never called),
  omegaconf configs, defaultdicts (their factory kept as an attribute). numpy
  arrays become tensors and numpy scalars plain values. The list is
  rules/callables.toml's data kinds (the scanner judges calls by the same
  list); a rules file vouches for more classes with action = "record".
  Calling a record, or a class with arguments, still stops the load.
  --weights-only loads only what torch's weights_only loads.

  For every tensor reachable from the top object it prints the dotted key path
  (model.hidden.weight, optimizer.state.0.exp_avg), dtype, shape, stride,
  storage offset, whether it is an nn.Parameter, and the SHA-256 of its elements
  in C order, little-endian (big-endian records are swapped first); then the
  values as a tree.

  Two tensors can have one path ({'a.b': t1, 'a': {'b': t2}} gives a.b twice):
  every tensor is listed, and a "collision:" line names each such path. An
  OrderedDict's attributes (state_dict()._metadata) show in the tree as
  "(attribute) _metadata:".

  --json prints one JSON document, {schema_version, tool, files: [...]}, with
  one object per file in files, in order, shaped like the test corpus's
  .expect.json files (kind, tensors, skeleton), so the two compare directly;
  a file that could not be loaded is {path, error: {code, offset, where,
  detail, message}}. Each object holds every value the loader read, exactly:
    file, path       the file's name and the path given
    kind             container format (torch-zip, torch-legacy, safetensors...)
    tensors          {path: {dtype, shape, stride, storage_offset, parameter,
                     sha256}}; where paths collide, the first tensor in order.
                     A quantized tensor is its integers (dtype quint8, qint8,
                     qint32, packed quint4x2/quint2x4; sha256 of int_repr())
                     plus "qscheme" and either
                     "q_scale", "q_zero_point" or "q_per_channel_axis",
                     "q_per_channel_scales", "q_per_channel_zero_points".
                     "conj"/"neg": true for torch 2.x's lazy conjugate and
                     negative bits (sha256 is of the values torch gives);
                     "state": a Parameter's Python attributes (a skeleton
                     value). A meta tensor ("meta": true) has dtype, shape
                     and stride and no sha256. A sparse tensor has "layout"
                     (sparse_coo, sparse_csr, sparse_csc, sparse_bsr,
                     sparse_bsc), its dense "shape", "sparse_dim",
                     "dense_dim", COO's "is_coalesced" when the file has it,
                     and its components as torch's accessors name them
                     ("indices"/"crow_indices"/"ccol_indices",
                     "col_indices"/"row_indices", "values"), each {dtype,
                     shape, stride, storage_offset, sha256}; no sha256 or
                     stride of its own (no dense data is made). A nested
                     tensor (torch 2.x) has "layout": "nested", "shape"
                     [components] and its components "buffer",
                     "nested_sizes", "nested_strides",
                     "nested_storage_offsets" (torch's values(),
                     _nested_tensor_size()... ), each as above
    skeleton         the top object, tensors as "<tensor>", records as
                     {"__record__": class, "form": "call"|"new"|"member",
                     "args": [...], "state": [[name, value], ...]}: {"__dict__":
                     [[k, v], ...]}, {"__list__": [...]}, {"__tuple__": [...]},
                     {"__set__": [...]}, {"__bytes__": hex}, {"__bigint__":
                     "digits"} (beyond 2^53), {"__float__": "nan"|"inf"|"-inf"},
                     {"__complex__": [re, im]} (each part a number or a
                     __float__ object), {"__device__": d}, {"__global__": name}
    collisions       (when paths collide) [{"path", "tensors": [{"keys", dtype,
                     shape, ..., sha256}, ...]}]: every tensor of that path with
                     the keys that lead to it (dict keys as in the skeleton,
                     list indexes as numbers)
    attrs            (when OrderedDicts have attributes, as every state_dict's
                     _metadata) [{"keys", "attrs": {"__dict__": [[name, value],
                     ...]}}], keys from the top object ([] for a bare
                     state_dict); an attribute step in keys is {"__attr__": name}
    notes, anomalies (when there are any)
  Strings keep lone surrogates (which torch.load gives for such pickled str) as
  \udXXX escapes, as Python's json.dumps writes them; a str with a high
  surrogate directly before a low one, which a JSON reader would join into one
  character, is {"__str__": hex of its UTF-8 with surrogates}. Paths that a
  JSON reader would read as one key count as colliding.

  A sharded checkpoint is inspected through its index (FILE ending in
  .index.json): the shards are loaded as one state dict, and refused when the
  index and the shards disagree (a tensor in two shards, mapped to a shard that
  lacks it or held but not mapped; a shard missing or outside the folder).
  Text shows each shard's tensors; its object in --json's files is {file,
  path, kind: "sharded", tensors: count, shards: [one object as above per
  shard]}.

  A torch.distributed.checkpoint folder (DIR holding .metadata and .distcp
  files, as dcp.save writes it) is loaded as one state dict: .metadata as
  declared records (torch reads it with pickle.load), every item's torch
  archive, and each tensor saved in chunks (one per rank) assembled for its
  digest. Text lists the tensors and the values (as skeletons); its object
  in --json's files is {file, path, kind: "dcp", files, tensors: {key:
  {dtype, shape, chunks, sha256}}, values: {key: skeleton}}. --prefix
  selects keys under a dotted path (model, optim).

Exit status: 0 when every file loaded, 2 when one did not (the error names the
file, the entry, the global or limit, and the byte offset).

Examples:
  ckptguard inspect model.pt
  ckptguard inspect --prefix model checkpoint.pt        # one sub-dict
  ckptguard inspect model.safetensors.index.json        # a sharded model
  ckptguard inspect checkpoints/step_1200/              # a torch.distributed.checkpoint folder
  ckptguard inspect --json model.pt | jq '.files[0].tensors | keys'
  ckptguard inspect --rules my_allowlist.toml model.pt  # extra allowed globals
)");
  cmd->add_option("files", flags.files, "Checkpoint files to load")->required()->type_name("FILE");
  cmd->add_flag("--json", flags.json,
                "Print one JSON document: files[] with kind, tensors, skeleton (.expect.json shape)");
  AddFormatOption(*cmd, flags.json);
  cmd->add_option("--prefix", flags.prefix, "List only the tensors under this dotted path (e.g. model)");
  cmd->add_flag("--no-digest", flags.no_digest, "Skip the per-tensor SHA-256 (reads no tensor data)");
  cmd->add_option("--rules", flags.rules_file,
                  "A TOML allowlist file that extends the built-in one (or replaces it with mode = \"replace\")")
      ->type_name("FILE");
  cmd->add_flag("--allow-anomalies", flags.load.allow_anomalies,
                "Load even when the container has anomalies (reads what torch would read)");
  cmd->add_flag("--weights-only", flags.weights_only,
                "Load only what torch.load(weights_only=True) loads: no declared records (Namespace, paths, Enum "
                "members, numpy arrays...)");
  cmd->add_option("--max-tree-lines", flags.max_tree_lines, "Most lines of the value tree in text output")
      ->capture_default_str();
  AddPickleLimitOptions(*cmd, flags.load.limits.pickle);
  AddBudgetOptions(*cmd, flags.load.budget);
}

int RunInspect(InspectFlags& flags) {
  flags.load.records = !flags.weights_only;
  std::optional<Allowlist> allowlist;
  if (!flags.rules_file.empty()) {
    Result<Allowlist> loaded = LoadAllowlistFile(flags.rules_file);
    if (!loaded) {
      ReportError(flags.rules_file, loaded.error());
      return kExitError;
    }
    allowlist.emplace(std::move(*loaded));
    flags.load.allowlist = &*allowlist;
  }
  flags.load.container.pickle = flags.load.limits.pickle;
  int status = kExitOk;
  JsonFilesDocument doc(std::cout, "inspect", flags.json);
  for (const std::string& path : flags.files) {
    if (InspectOne(path, flags, doc) != kExitOk) status = kExitError;
  }
  doc.Close();
  std::cout.flush();
  return status;
}

}  // namespace ckptguard::cli

// Key checks with load_state_dict semantics (see key_check.h).
#include "ckptguard/scanner/key_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "ckptguard/dtype.h"
#include "ckptguard/input_file.h"

namespace ckptguard::scanner {
namespace {

// ordered_json: the schema's keys come back in the file's order (nlohmann's
// default object sorts them).
using json = nlohmann::ordered_json;

// kMaxSchemaJsonLen bounds a JSON schema file: nlohmann's DOM takes several
// times the text in memory, and a schema for even a very large model (tens of
// thousands of keys at ~80 bytes each) is a few MiB.
constexpr uint64_t kMaxSchemaJsonLen = 64ull << 20;
// kSniffLen is how much of a schema file is read to decide JSON or checkpoint.
constexpr size_t kSniffLen = 4096;

std::string Quoted(std::string_view key) { return "'" + std::string(key) + "'"; }

// ReadUpTo appends at most `max_len` bytes of `fd` (from its current position)
// to `out`, stopping early at end of file.
Status ReadUpTo(int fd, size_t max_len, const std::string& path, std::string& out) {
  const size_t start = out.size();
  out.resize(start + max_len);
  size_t got = 0;
  while (got < max_len) {
    const ssize_t n = ::read(fd, out.data() + start + got, max_len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.resize(start + got);
      return MakeError(ErrorCode::kIo, start + got, std::string("read: ") + std::strerror(errno), path);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(start + got);
  return OkStatus();
}

// LooksLikeJson: the first byte after whitespace (and a UTF-8 BOM) opens a
// JSON object or array. No checkpoint torch or the safetensors writer makes
// starts so (an aligned safetensors header length is even; '{' and '[' are
// odd), but a hand-made one may: the caller falls back to the checkpoint
// loader when the text does not parse, and names both failures.
bool LooksLikeJson(std::string_view head) {
  if (head.starts_with("\xEF\xBB\xBF")) head.remove_prefix(3);
  const size_t i = head.find_first_not_of(" \t\r\n");
  return i != std::string_view::npos && (head[i] == '{' || head[i] == '[');
}

const char* JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "a list";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a float";
    default: return "an unsupported value";
  }
}

bool IsExtraStateKey(std::string_view key) { return key == "_extra_state" || key.ends_with("._extra_state"); }

Result<ExpectedTensor> ParseEntry(const std::string& key, const json& entry) {
  auto bad = [&](const std::string& what) {
    return MakeError(ErrorCode::kMalformed, 0, "key " + Quoted(key) + ": " + what);
  };
  if (!entry.is_object()) {
    return bad(std::string("expected an object {\"dtype\": ..., \"shape\": [...]}, got ") + JsonTypeName(entry));
  }
  ExpectedTensor out;
  out.key = key;
  if (const auto tensor = entry.find("tensor"); tensor != entry.end()) {
    if (!tensor->is_boolean()) return bad(std::string("\"tensor\" must be true or false, got ") + JsonTypeName(*tensor));
    out.tensor = tensor->get<bool>();
    if (!out.tensor) {
      if (!IsExtraStateKey(key)) {
        return bad("only `_extra_state` may be a non-tensor value (\"tensor\": false); state_dict() writes tensors");
      }
      return out;
    }
  }
  const auto dtype = entry.find("dtype");
  if (dtype != entry.end() && !dtype->is_null()) {
    if (!dtype->is_string()) return bad(std::string("\"dtype\" must be a string such as \"float32\", got ") +
                                        JsonTypeName(*dtype));
    std::string_view name = dtype->get_ref<const std::string&>();
    if (name.starts_with("torch.")) name.remove_prefix(6);
    const std::optional<DType> parsed = ParseDType(name);
    if (!parsed) return bad("unknown dtype " + Quoted(dtype->get_ref<const std::string&>()));
    out.dtype = std::string(DTypeName(*parsed));
  }
  const auto shape = entry.find("shape");
  if (shape == entry.end()) {
    return bad("no \"shape\" (a list of non-negative integers, [] for a scalar, null for an uninitialised lazy "
               "parameter)");
  }
  if (shape->is_null()) {
    out.lazy = true;
    return out;
  }
  if (!shape->is_array()) {
    return bad(std::string("\"shape\" must be a list of non-negative integers, got ") + JsonTypeName(*shape));
  }
  out.shape.reserve(shape->size());
  for (size_t i = 0; i < shape->size(); ++i) {
    const json& dim = (*shape)[i];
    const std::string at = "shape[" + std::to_string(i) + "]";
    if (dim.is_number_unsigned()) {
      const uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return bad(at + " is too large");
      out.shape.push_back(static_cast<int64_t>(d));
    } else if (dim.is_number_integer()) {
      const int64_t d = dim.get<int64_t>();
      if (d < 0) return bad(at + " is " + std::to_string(d) + "; dimensions must be >= 0");
      out.shape.push_back(d);
    } else {
      return bad(at + " must be a non-negative integer, got " + JsonTypeName(dim));
    }
  }
  return out;
}

// ParseJson parses a schema file's text; a syntax error is kMalformed at
// its byte. A key that appears twice at the top level is reported through
// `duplicate` (nlohmann keeps the last one silently).
Result<json> ParseJson(const std::string& text, std::optional<std::string>& duplicate) {
  std::unordered_set<std::string> seen;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !duplicate) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  // nlohmann stops at a NUL as if the input ended there; JSON has none.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return MakeError(ErrorCode::kMalformed, nul, "not valid JSON: a NUL byte");
  }
  try {
    return json::parse(text, on_event);
  } catch (const json::parse_error& e) {
    return MakeError(ErrorCode::kMalformed, e.byte > 0 ? e.byte - 1 : 0,
                     std::string("not valid JSON: ") + e.what());
  }
}

// MetadataFromJson reads a schema's "_metadata": {path: {"version": n} | null}.
Result<std::vector<ExpectedModule>> MetadataFromJson(const json& meta) {
  auto bad = [&](const std::string& what) { return MakeError(ErrorCode::kMalformed, 0, "\"_metadata\": " + what); };
  if (!meta.is_object()) {
    return bad(std::string("must map each module path to {\"version\": n} (or null for a None child), got ") +
               JsonTypeName(meta));
  }
  std::vector<ExpectedModule> out;
  out.reserve(meta.size());
  for (const auto& [path, entry] : meta.items()) {
    ExpectedModule m;
    m.path = path;
    if (entry.is_null()) {
      m.none = true;
    } else if (entry.is_object()) {
      m.spectral_norm = entry.contains("spectral_norm");
      if (const auto v = entry.find("version"); v != entry.end() && !v->is_null()) {
        if (!v->is_number_integer()) return bad("module " + Quoted(path) + ": \"version\" must be an integer");
        m.version = v->get<int64_t>();
      }
    } else {
      return bad("module " + Quoted(path) + ": expected {\"version\": n} or null, got " + JsonTypeName(entry));
    }
    out.push_back(std::move(m));
  }
  return out;
}

// SchemaFromJson turns a parsed JSON schema into expectations, in the file's
// key order. Errors name the key.
Result<ModelSchema> SchemaFromJson(const json& doc, const std::optional<std::string>& duplicate) {
  if (!doc.is_object()) {
    return MakeError(ErrorCode::kMalformed, 0,
                     std::string("a JSON schema must be an object mapping each key to {\"dtype\", \"shape\"}, got ") +
                         JsonTypeName(doc));
  }
  if (duplicate) {
    return MakeError(ErrorCode::kMalformed, 0, "key " + Quoted(*duplicate) + " appears twice in the schema");
  }
  ModelSchema out;
  out.source = "JSON schema";
  out.keys.reserve(doc.size());
  for (const auto& [key, entry] : doc.items()) {
    if (key == "_metadata") {
      CKG_ASSIGN_OR_RETURN(out.modules, MetadataFromJson(entry));
      out.has_metadata = true;
      continue;
    }
    CKG_ASSIGN_OR_RETURN(ExpectedTensor e, ParseEntry(key, entry));
    out.keys.push_back(std::move(e));
  }
  return out;
}

constexpr std::string_view kUninitializedParameter = "torch.nn.parameter.UninitializedParameter";
constexpr std::string_view kUninitializedBuffer = "torch.nn.parameter.UninitializedBuffer";

// FindAttr: the value of OrderedDict attribute `name` (state_dict()._metadata).
std::optional<ValueId> FindAttr(const ValueArena& values, const Value& dict, std::string_view name) {
  const std::span<const ValueId> attrs = values.Attrs(dict);
  for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
    const Value& k = values.Get(attrs[i]);
    if (k.kind == ValueKind::kStr && k.text == name) return attrs[i + 1];
  }
  return std::nullopt;
}

Result<ModelSchema> SchemaFromCheckpoint(const Checkpoint& ckpt, const std::string& prefix) {
  std::string_view p = prefix;
  if (p.ends_with('.')) p.remove_suffix(1);
  const std::optional<ValueId> at = p.empty() ? std::optional<ValueId>(ckpt.root()) : ckpt.Find(p);
  if (!at) return MakeError(ErrorCode::kInvalidArgument, 0, "no value at '" + prefix + "' in the reference");
  const ValueArena& values = ckpt.values();
  const Value& sd = values.Get(*at);
  if (sd.kind != ValueKind::kDict) {
    return MakeError(ErrorCode::kInvalidArgument, 0,
                     std::string("the reference is a ") + std::string(ValueKindName(sd.kind)) +
                         ", not a state dict: save model.state_dict() (or pick it with --expect-prefix)");
  }
  ModelSchema out;
  out.source = "reference checkpoint";
  out.keys.reserve(sd.items.size() / 2);
  for (size_t i = 0; i + 1 < sd.items.size(); i += 2) {
    const Value& k = values.Get(sd.items[i]);
    if (k.kind != ValueKind::kStr) {
      return MakeError(ErrorCode::kMalformed, 0,
                       std::string("the reference has a ") + std::string(ValueKindName(k.kind)) +
                           " key; state_dict() keys are strings");
    }
    const Value& v = values.Get(sd.items[i + 1]);
    ExpectedTensor e;
    e.key = k.text;
    if (v.kind == ValueKind::kTensor) {
      const Tensor& t = ckpt.tensors()[v.index];
      e.dtype = std::string(DTypeName(t.dtype));
      e.shape = t.shape;
    } else if (v.kind == ValueKind::kObject && (v.text == kUninitializedParameter || v.text == kUninitializedBuffer)) {
      e.lazy = true;
    } else if (IsExtraStateKey(k.text)) {
      e.tensor = false;
    } else {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "the reference's value at " + Quoted(k.text) + " is a " +
                           std::string(ValueKindName(v.kind)) +
                           ", not a tensor: a reference is a model's state_dict() (pick it with --expect-prefix)");
    }
    out.keys.push_back(std::move(e));
  }
  if (const std::optional<ValueId> meta = FindAttr(values, sd, "_metadata")) {
    const Value& m = values.Get(*meta);
    if (m.kind == ValueKind::kDict) {
      out.has_metadata = true;
      for (size_t i = 0; i + 1 < m.items.size(); i += 2) {
        const Value& path = values.Get(m.items[i]);
        if (path.kind != ValueKind::kStr) continue;
        ExpectedModule mod;
        mod.path = path.text;
        const Value& local = values.Get(m.items[i + 1]);
        // None is not something state_dict() writes: a user adds it
        // (sd._metadata["head"] = None) to say "head" is a None child.
        mod.none = local.kind == ValueKind::kNone;
        if (local.kind == ValueKind::kDict) {
          for (size_t j = 0; j + 1 < local.items.size(); j += 2) {
            const Value& lk = values.Get(local.items[j]);
            const Value& lv = values.Get(local.items[j + 1]);
            if (lk.kind == ValueKind::kStr && lk.text == "version" && lv.kind == ValueKind::kInt) {
              mod.version = lv.int_value;
            }
            if (lk.kind == ValueKind::kStr && lk.text == "spectral_norm") mod.spectral_norm = true;
          }
        }
        out.modules.push_back(std::move(mod));
      }
    }
  }
  return out;
}

// SchemaFromSharded: the keys of a sharded reference (its index's tensors,
// each with the dtype and shape its shard holds), in the index's order.
Result<ModelSchema> SchemaFromSharded(const std::string& path, const std::string& prefix) {
  if (!prefix.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "--expect-prefix does not apply to a sharded reference");
  }
  CKG_ASSIGN_OR_RETURN(ShardedCheckpoint sharded, LoadShardedCheckpoint(path));
  ModelSchema out;
  out.source = "reference sharded checkpoint";
  out.keys.reserve(sharded.tensors().size());
  for (const ShardedTensor& st : sharded.tensors()) {
    const Tensor& t = sharded.TensorOf(st);
    ExpectedTensor e;
    e.key = st.name;
    e.dtype = std::string(DTypeName(t.dtype));
    e.shape = t.shape;
    out.keys.push_back(std::move(e));
  }
  CKG_TRY(sharded.CheckUnchanged());
  return out;
}

// SchemaFromDcp: the tensors of a torch.distributed.checkpoint reference
// under `prefix` (its dotted keys below it, without it), each with the dtype
// and whole shape .metadata declares, in its order.
Result<ModelSchema> SchemaFromDcp(const std::string& path, const std::string& prefix) {
  CKG_ASSIGN_OR_RETURN(DcpCheckpoint dcp, LoadDcpCheckpoint(path));
  std::string_view p = prefix;
  if (p.ends_with('.')) p.remove_suffix(1);
  ModelSchema out;
  out.source = "reference torch.distributed.checkpoint folder";
  for (const DcpEntry& d : dcp.entries()) {
    const std::optional<std::string_view> key = DcpKeyUnder(d.fqn, p);
    if (!key || (key->empty() && !p.empty()) || !d.is_tensor) continue;  // (a key at the prefix is no entry of it)
    ExpectedTensor e;
    e.key = std::string(*key);
    e.dtype = std::string(DTypeName(d.dtype));
    e.shape.assign(d.size.begin(), d.size.end());
    out.keys.push_back(std::move(e));
  }
  if (out.keys.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "no tensor" + (p.empty() ? std::string() : " under '" + prefix + "'"),
                     path);
  }
  CKG_TRY(dcp.CheckUnchanged());
  return out;
}

Result<ModelSchema> LoadSchemaImpl(const std::string& path, const std::string& prefix) {
  if (IsShardIndexPath(path)) return SchemaFromSharded(path, prefix);
  if (IsDcpFolder(path)) return SchemaFromDcp(path, prefix);
  auto load_reference = [&]() -> Result<ModelSchema> {
    CKG_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(path));
    return SchemaFromCheckpoint(ckpt, prefix);
  };
  // OpenInputFile refuses a FIFO or device unopened (nothing blocks); for
  // anything not a readable regular file the checkpoint loader names the problem.
  Result<InputFile> file = OpenInputFile(path);
  if (!file) return load_reference();
  const int64_t size = file->identity().size;
  std::string text;
  CKG_TRY(ReadUpTo(file->fd(), kSniffLen, path, text));
  if (!LooksLikeJson(text)) return load_reference();

  if (static_cast<uint64_t>(size) > kMaxSchemaJsonLen) {
    Result<ModelSchema> reference = load_reference();
    if (reference) return reference;
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "schema JSON is " + std::to_string(size) + " bytes, over the limit of " +
                         std::to_string(kMaxSchemaJsonLen) + " (max_schema_json_len, 64 MiB)");
  }
  // Read one byte past the limit so a file that grows is still caught.
  CKG_TRY(ReadUpTo(file->fd(), kMaxSchemaJsonLen + 1 - text.size(), path, text));
  CKG_TRY(file->CheckUnchanged());
  if (text.size() > kMaxSchemaJsonLen) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "schema JSON is over the limit of " + std::to_string(kMaxSchemaJsonLen) +
                         " bytes (max_schema_json_len, 64 MiB)");
  }
  std::optional<std::string> duplicate;
  Result<json> doc = ParseJson(text, duplicate);
  if (doc) {
    if (!prefix.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "a prefix selects a sub-dict of a reference checkpoint; a JSON schema's keys are used as they are");
    }
    return SchemaFromJson(*doc, duplicate);
  }
  // Not JSON after all: a checkpoint that happens to start with '{' or '['
  // (see LooksLikeJson), or neither.
  Result<ModelSchema> reference = load_reference();
  if (reference) return reference;
  Error error = doc.error();
  error.detail = "neither a JSON schema (" + error.detail + ") nor a checkpoint (" + reference.error().ToString() + ")";
  return std::unexpected(std::move(error));
}

// --- the model, as torch's module tree ------------------------------------

std::string_view ParentPath(std::string_view path) {
  const size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : path.substr(0, dot);
}
std::string_view LastName(std::string_view path) {
  const size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

struct Module {
  std::string path;
  std::string prefix;  // path + "." ("" for the root), as load() passes it
  bool none = false;
  bool reachable = false;  // not None and no None ancestor: load() visits it
  std::optional<int64_t> version;
  std::unordered_map<std::string, size_t> children;  // name -> module index (None children included)
  std::vector<size_t> child_order;
  std::vector<size_t> params;                        // indices into ModelSchema::keys, in order
  std::unordered_map<std::string, size_t> param_by_name;
  bool extra_state = false;  // the class defines set_extra_state
  bool spectral_norm = false;  // torch.nn.utils.spectral_norm registered its load pre-hook
  bool norm = false;         // _NormBase with track_running_stats
};

struct Model {
  std::vector<Module> modules;  // [0] is the root
  std::vector<size_t> visit;    // load()'s order: pre-order over reachable modules
  size_t num_expected = 0;
  std::vector<std::string> caveats;
};

Result<Model> BuildModel(const ModelSchema& schema) {
  Model out;
  std::unordered_map<std::string, size_t> by_path;
  auto ensure = [&](std::string_view path) -> size_t {
    // Adds `path` and its ancestors (outermost first); returns its index.
    std::vector<std::string_view> chain;
    for (std::string_view p = path;; p = ParentPath(p)) {
      if (by_path.contains(std::string(p))) break;
      chain.push_back(p);
      if (p.empty()) break;
    }
    for (size_t i = chain.size(); i-- > 0;) {
      Module m;
      m.path = std::string(chain[i]);
      m.prefix = m.path.empty() ? "" : m.path + ".";
      by_path.emplace(m.path, out.modules.size());
      out.modules.push_back(std::move(m));
    }
    return by_path.at(std::string(path));
  };
  ensure("");
  for (const ExpectedModule& em : schema.modules) {
    const size_t i = ensure(em.path);
    out.modules[i].version = em.version;
    out.modules[i].none = out.modules[i].none || em.none;
    out.modules[i].spectral_norm = em.spectral_norm;
  }
  for (size_t k = 0; k < schema.keys.size(); ++k) {
    const ExpectedTensor& e = schema.keys[k];
    const size_t i = ensure(ParentPath(e.key));
    const std::string name(LastName(e.key));
    if (!e.tensor || name == "_extra_state") {
      out.modules[i].extra_state = true;
      continue;
    }
    if (!out.modules[i].param_by_name.emplace(name, k).second) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "expected key " + Quoted(e.key) + " is listed twice");
    }
    out.modules[i].params.push_back(k);
  }
  // Children, in module order; a name used for a module and a parameter is
  // not something torch allows.
  for (size_t i = 1; i < out.modules.size(); ++i) {
    const size_t parent = by_path.at(std::string(ParentPath(out.modules[i].path)));
    const std::string name(LastName(out.modules[i].path));
    if (out.modules[parent].param_by_name.contains(name)) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "the model description names " + Quoted(out.modules[i].path) +
                           " both as a parameter and as a module");
    }
    out.modules[parent].children.emplace(name, i);
    out.modules[parent].child_order.push_back(i);
  }
  // load() visits modules depth first from the root, skipping None children.
  std::vector<size_t> stack{0};
  while (!stack.empty()) {
    const size_t i = stack.back();
    stack.pop_back();
    Module& m = out.modules[i];
    if (m.none) continue;
    m.reachable = true;
    out.visit.push_back(i);
    for (size_t c = m.child_order.size(); c-- > 0;) stack.push_back(m.child_order[c]);
  }
  bool norm_by_keys_only = false;
  for (size_t i : out.visit) {
    Module& m = out.modules[i];
    m.norm = m.param_by_name.contains("running_mean") && m.param_by_name.contains("running_var") &&
             m.param_by_name.contains("num_batches_tracked");
    if (m.norm && schema.has_metadata && m.version != 2) m.norm = false;
    if (m.norm && !schema.has_metadata) norm_by_keys_only = true;
    out.num_expected += m.params.size();
    if (m.version && *m.version > 2) {
      out.caveats.push_back("module '" + m.path + "' has version " + std::to_string(*m.version) +
                            ": its class versions its state, so it likely has its own _load_from_state_dict, which "
                            "is not modelled here");
    }
  }
  if (!schema.has_metadata) {
    out.caveats.push_back(
        "the " + schema.source +
        " has no _metadata: modules without parameters are unknown (a key naming one is reported as unexpected, "
        "torch ignores it), and None children cannot be known");
    if (norm_by_keys_only) {
      out.caveats.push_back(
          "modules with running_mean, running_var and num_batches_tracked are taken for BatchNorm (_NormBase) "
          "without _metadata to confirm their version");
    }
  }
  return out;
}

// --- the checkpoint's state dict, as torch sees it -------------------------

// PyTypeName: type(value).__name__ qualified as Python prints a class.
std::string PyQualName(const Checkpoint& ckpt, ValueId id) {
  const Value& v = ckpt.values().Get(id);
  switch (v.kind) {
    case ValueKind::kNone: return "NoneType";
    case ValueKind::kBool: return "bool";
    case ValueKind::kInt:
    case ValueKind::kBigInt: return "int";
    case ValueKind::kFloat: return "float";
    case ValueKind::kComplex: return "complex";
    case ValueKind::kStr: return "str";
    case ValueKind::kBytes: return v.byte_array ? "bytearray" : "bytes";
    case ValueKind::kTuple: return v.frozen ? "torch.Size" : "tuple";
    case ValueKind::kList: return "list";
    case ValueKind::kDict: return v.ordered_dict ? "collections.OrderedDict" : "dict";
    case ValueKind::kSet: return v.frozen ? "frozenset" : "set";
    case ValueKind::kTensor: return ckpt.tensors()[v.index].parameter ? "torch.nn.parameter.Parameter" : "torch.Tensor";
    case ValueKind::kStorage: return "torch.storage.TypedStorage";
    case ValueKind::kGlobal: return "type";
    case ValueKind::kDtype: return "torch.dtype";
    case ValueKind::kDevice: return "torch.device";
    case ValueKind::kObject: return v.text;
    case ValueKind::kRecord: return v.text;  // a member's class, or the record's class
  }
  return "object";
}
std::string PyClass(const Checkpoint& ckpt, ValueId id) { return "<class '" + PyQualName(ckpt, id) + "'>"; }
std::string PyShortName(const Checkpoint& ckpt, ValueId id) { return std::string(LastName(PyQualName(ckpt, id))); }

std::string TorchSize(const std::vector<int64_t>& dims) {
  std::string out = "torch.Size([";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "])";
}

struct Entry {
  std::string key;      // str keys only
  bool str_key = true;
  ValueId key_id = 0;
  ValueId value = 0;
  const Checkpoint* ckpt = nullptr;  // the checkpoint (a shard, for a sharded one) whose values these ids are
  // A DCP tensor saved in chunks: `value` is its first chunk, this its whole
  // shape.
  std::optional<std::vector<int64_t>> whole_shape;
};

// Local metadata version of one module: None, a number, or what torch raises.
struct Version {
  bool none = true;
  double number = 0;
  std::optional<PyException> error;
};

struct StateDictView {
  std::string type;  // PyClass of the value
  bool mapping = false;
  std::vector<Entry> entries;                   // dict order
  std::unordered_map<std::string, size_t> index;  // str key -> entries index
  // _metadata: absent (no attribute, or None), a dict, or something else.
  bool has_metadata = false;
  std::optional<ValueId> metadata;  // the dict when it is one
  std::string metadata_type;        // set when _metadata is neither None nor a dict
};

void StripPrefix(StateDictView& out, const std::string& strip_prefix);
void IndexKeys(StateDictView& out);

Result<StateDictView> ViewStateDict(const Checkpoint& ckpt, const std::string& prefix,
                                    const std::optional<std::string>& strip, const std::string& add_prefix) {
  std::string_view p = prefix;
  if (p.ends_with('.')) p.remove_suffix(1);
  const std::optional<ValueId> at = p.empty() ? std::optional<ValueId>(ckpt.root()) : ckpt.Find(p);
  if (!at) return MakeError(ErrorCode::kInvalidArgument, 0, "no value at '" + prefix + "'");
  const ValueArena& values = ckpt.values();
  const Value& sd = values.Get(*at);
  StateDictView out;
  out.type = PyClass(ckpt, *at);
  if (sd.kind != ValueKind::kDict) return out;
  out.mapping = true;
  out.entries.reserve(sd.items.size() / 2);
  for (size_t i = 0; i + 1 < sd.items.size(); i += 2) {
    const Value& k = values.Get(sd.items[i]);
    Entry e;
    e.key_id = sd.items[i];
    e.value = sd.items[i + 1];
    e.ckpt = &ckpt;
    e.str_key = k.kind == ValueKind::kStr;
    if (e.str_key) e.key = add_prefix + k.text;
    out.entries.push_back(std::move(e));
  }
  if (const std::optional<ValueId> meta = FindAttr(values, sd, "_metadata")) {
    const Value& m = values.Get(*meta);
    if (m.kind == ValueKind::kDict) {
      out.has_metadata = true;
      out.metadata = *meta;
    } else if (m.kind != ValueKind::kNone) {
      out.has_metadata = true;
      out.metadata_type = PyShortName(ckpt, *meta);
    }
  }
  if (strip) StripPrefix(out, *strip);
  IndexKeys(out);
  return out;
}

// StripPrefix is consume_prefix_in_state_dict_if_present(sd, strip) on the
// view's entries.
void StripPrefix(StateDictView& out, const std::string& strip) {
  // consume_prefix_in_state_dict_if_present: for key in sorted(keys): if
  // it starts with P, state_dict[key[len(P):]] = state_dict.pop(key).
  std::vector<size_t> order;
  for (size_t i = 0; i < out.entries.size(); ++i) {
    if (out.entries[i].str_key) order.push_back(i);
  }
  std::ranges::sort(order, [&](size_t a, size_t b) { return out.entries[a].key < out.entries[b].key; });
  std::vector<Entry> entries = std::move(out.entries);
  out.entries.clear();
  std::vector<bool> alive(entries.size(), true);
  std::unordered_map<std::string, size_t> where;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].str_key) where.emplace(entries[i].key, i);
  }
  std::vector<Entry> snapshot = entries;  // sorted() copies the keys first
  for (size_t i : order) {
    const std::string& key = snapshot[i].key;
    if (!key.starts_with(strip)) continue;
    const auto it = where.find(key);
    if (it == where.end()) continue;  // popped already
    Entry moved = entries[it->second];
    alive[it->second] = false;
    where.erase(it);
    moved.key = key.substr(strip.size());
    if (const auto existing = where.find(moved.key); existing != where.end()) {
      // The value replaces the existing key's (and, sharded, may come from
      // another shard: its ids are that shard's).
      entries[existing->second].value = moved.value;
      entries[existing->second].ckpt = moved.ckpt;
    } else {
      where.emplace(moved.key, entries.size());
      entries.push_back(std::move(moved));
      alive.push_back(true);
    }
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    if (alive[i]) out.entries.push_back(std::move(entries[i]));
  }
}

// IndexKeys maps each str key of the view to its entry.
void IndexKeys(StateDictView& out) {
  out.index.clear();
  for (size_t i = 0; i < out.entries.size(); ++i) {
    if (out.entries[i].str_key) out.index.emplace(out.entries[i].key, i);
  }
}

// StateDictSource is what a check replays: one checkpoint's dict at a
// prefix, or the shards of a sharded checkpoint as one dict (as
// transformers' load_sharded_checkpoint loads them: the index's keys against
// the model's, then every shard's plain dict; no prefix, no _metadata).
struct StateDictSource {
  const Checkpoint* single = nullptr;
  const ShardedCheckpoint* sharded = nullptr;
  const DcpCheckpoint* dcp = nullptr;

  // The checkpoint whose _metadata the replay reads (a shard or a DCP item
  // has none that applies: its view carries no metadata).
  const Checkpoint& Primary() const {
    if (single != nullptr) return *single;
    return sharded != nullptr ? sharded->shards().front() : dcp->archives().front();
  }

  Result<StateDictView> View(const std::string& prefix, const std::optional<std::string>& strip,
                             const std::string& add_prefix) const {
    if (single != nullptr) return ViewStateDict(*single, prefix, strip, add_prefix);
    if (dcp != nullptr) return ViewDcp(prefix, strip, add_prefix);
    if (!prefix.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "--prefix does not apply to a sharded state dict");
    }
    StateDictView out;
    out.type = "<class 'dict'>";
    out.mapping = true;
    for (const Checkpoint& shard : sharded->shards()) {
      CKG_ASSIGN_OR_RETURN(StateDictView one, ViewStateDict(shard, "", std::nullopt, add_prefix));
      if (!one.mapping) {
        // LoadShardedCheckpoint took every shard as a dict of tensors.
        return MakeError(ErrorCode::kMalformed, 0, "a shard is a " + one.type + ", not a state dict");
      }
      for (Entry& e : one.entries) out.entries.push_back(std::move(e));
    }
    if (strip) StripPrefix(out, *strip);
    IndexKeys(out);
    return out;
  }

  // ViewDcp: a DCP folder's keys under `prefix` (its dotted keys below it,
  // without it), as the dict dcp.load fills; a key saved at the prefix
  // itself is not a state dict.
  Result<StateDictView> ViewDcp(const std::string& prefix, const std::optional<std::string>& strip,
                                const std::string& add_prefix) const {
    std::string_view p = prefix;
    if (p.ends_with('.')) p.remove_suffix(1);
    StateDictView out;
    out.type = "<class 'dict'>";
    out.mapping = true;
    bool found = p.empty();
    for (size_t i = 0; i < dcp->entries().size(); ++i) {
      const DcpEntry& d = dcp->entries()[i];
      const std::optional<std::string_view> key = DcpKeyUnder(d.fqn, p);
      if (!key || (key->empty() && !p.empty())) continue;  // (a key at the prefix is no entry of it)
      found = true;
      const Checkpoint& a = dcp->archives()[d.is_tensor ? d.chunks.front().archive : d.archive];
      Entry e;
      e.key = add_prefix + std::string(*key);
      e.value = a.root();
      e.ckpt = &a;
      e.key_id = a.root();
      if (d.is_tensor && d.chunks.size() > 1) e.whole_shape = std::vector<int64_t>(d.size.begin(), d.size.end());
      out.entries.push_back(std::move(e));
    }
    if (!found) return MakeError(ErrorCode::kInvalidArgument, 0, "no key under '" + prefix + "'");
    if (strip) StripPrefix(out, *strip);
    IndexKeys(out);
    return out;
  }
};

// LocalVersion: metadata.get(path, {}).get("version", None), as the norm
// hooks read it.
Version LocalVersion(const Checkpoint& ckpt, const StateDictView& sd, const std::string& path) {
  Version out;
  if (!sd.metadata) return out;
  const ValueArena& values = ckpt.values();
  const Value& m = values.Get(*sd.metadata);
  std::optional<ValueId> local;
  for (size_t i = 0; i + 1 < m.items.size(); i += 2) {
    const Value& k = values.Get(m.items[i]);
    if (k.kind == ValueKind::kStr && k.text == path) local = m.items[i + 1];
  }
  if (!local) return out;
  const Value& l = values.Get(*local);
  if (l.kind != ValueKind::kDict) {
    out.error = PyException{"AttributeError", "'" + PyShortName(ckpt, *local) + "' object has no attribute 'get'"};
    return out;
  }
  for (size_t i = 0; i + 1 < l.items.size(); i += 2) {
    const Value& k = values.Get(l.items[i]);
    if (k.kind != ValueKind::kStr || k.text != "version") continue;
    const Value& v = values.Get(l.items[i + 1]);
    switch (v.kind) {
      case ValueKind::kNone: out.none = true; break;
      case ValueKind::kBool:
      case ValueKind::kInt: out.none = false; out.number = static_cast<double>(v.int_value); break;
      case ValueKind::kFloat: out.none = false; out.number = v.float_value; break;
      default:
        out.error = PyException{"TypeError", "'<' not supported between instances of '" +
                                                 PyShortName(ckpt, l.items[i + 1]) + "' and 'int'"};
    }
  }
  return out;
}

// LocalHas: the checkpoint's _metadata entry for `path` is a dict with `key`.
bool LocalHas(const Checkpoint& ckpt, const StateDictView& sd, const std::string& path, std::string_view key) {
  if (!sd.metadata) return false;
  const ValueArena& values = ckpt.values();
  const Value& m = values.Get(*sd.metadata);
  for (size_t i = 0; i + 1 < m.items.size(); i += 2) {
    const Value& k = values.Get(m.items[i]);
    if (k.kind != ValueKind::kStr || k.text != path) continue;
    const Value& l = values.Get(m.items[i + 1]);
    for (size_t j = 0; l.kind == ValueKind::kDict && j + 1 < l.items.size(); j += 2) {
      const Value& lk = values.Get(l.items[j]);
      if (lk.kind == ValueKind::kStr && lk.text == key) return true;
    }
  }
  return false;
}

// --- load_state_dict, replayed ---------------------------------------------

std::string QuotedList(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", \"" : "\"") + keys[i] + "\"";
  return out;
}

Result<KeyCheckResult> Replay(const Checkpoint& ckpt, const ModelSchema& schema, const Model& model,
                              const StateDictView& sd, const KeyCheckOptions& options) {
  KeyCheckResult out;
  out.state_dict_type = sd.type;
  out.is_mapping = sd.mapping;
  out.num_keys = sd.entries.size();
  out.num_expected = model.num_expected;
  out.caveats = model.caveats;
  auto raise_both = [&](PyException e) {
    out.strict.exception = e;
    out.non_strict.exception = std::move(e);
    out.ok = false;
    return out;
  };
  if (!sd.mapping) {
    return raise_both({"TypeError", "Expected state_dict to be dict-like, got " + sd.type + "."});
  }
  if (sd.metadata) {
    const ValueArena& values = ckpt.values();
    const Value& m = values.Get(*sd.metadata);
    std::vector<std::pair<std::string, std::optional<int64_t>>> meta;
    for (size_t i = 0; i + 1 < m.items.size(); i += 2) {
      const Value& k = values.Get(m.items[i]);
      if (k.kind != ValueKind::kStr) continue;
      std::optional<int64_t> version;
      const Value& l = values.Get(m.items[i + 1]);
      for (size_t j = 0; l.kind == ValueKind::kDict && j + 1 < l.items.size(); j += 2) {
        const Value& lk = values.Get(l.items[j]);
        const Value& lv = values.Get(l.items[j + 1]);
        if (lk.kind == ValueKind::kStr && lk.text == "version" && lv.kind == ValueKind::kInt) version = lv.int_value;
      }
      meta.emplace_back(k.text, version);
    }
    out.metadata = std::move(meta);
  }
  if (sd.has_metadata && !sd.metadata) {
    // load() calls metadata.get(prefix[:-1], {}) for the root first.
    return raise_both({"AttributeError", "'" + sd.metadata_type + "' object has no attribute 'get'"});
  }

  // Where each key lands: walk it down the module tree as load() filters
  // child_state_dict, and as each module's unexpected-key loop judges it.
  const size_t num_modules = model.modules.size();
  std::vector<size_t> visit_index(num_modules, 0);
  for (size_t i = 0; i < model.visit.size(); ++i) visit_index[model.visit[i]] = i;
  struct Unexpected {
    size_t visit;
    int extra;  // the _extra_state key is appended before the loop's keys
    size_t entry;
  };
  std::vector<Unexpected> unexpected;
  std::optional<size_t> first_bad_key;  // a non-str key: the root's loop raises on it
  for (size_t e = 0; e < sd.entries.size(); ++e) {
    const Entry& entry = sd.entries[e];
    if (!entry.str_key) {
      if (!first_bad_key) first_bad_key = e;
      continue;
    }
    const std::string& key = entry.key;
    size_t at = 0;
    while (true) {
      const Module& m = model.modules[at];
      if (key == m.prefix + "_extra_state") {
        if (!m.extra_state) unexpected.push_back({visit_index[at], 0, e});
        break;
      }
      const std::string_view rest = std::string_view(key).substr(m.prefix.size());
      const size_t dot = rest.find('.');
      const std::string name(rest.substr(0, dot));
      if (const auto child = m.children.find(name); child != m.children.end()) {
        const Module& c = model.modules[child->second];
        if (c.none) {
          out.ignored.push_back({key, dot == std::string_view::npos
                                          ? "names '" + c.path + "', a child registered as None"
                                          : "under '" + c.path + "', a child registered as None (load() skips it)"});
          break;
        }
        if (dot == std::string_view::npos) {
          out.ignored.push_back({key, "names the child module '" + c.path + "' (only keys under '" + c.prefix +
                                          "' reach it)"});
          break;
        }
        at = child->second;
        continue;
      }
      if (m.param_by_name.contains(name)) {
        if (dot != std::string_view::npos) {
          out.ignored.push_back({key, "under the parameter or buffer '" + m.prefix + name + "'"});
        }
        break;
      }
      unexpected.push_back({visit_index[at], 1, e});
      break;
    }
  }

  // Module by module, in load()'s order.
  std::vector<std::string> error_msgs;
  std::optional<PyException> raised;
  auto has = [&](const std::string& key) -> const Entry* {
    const auto it = sd.index.find(key);
    return it == sd.index.end() ? nullptr : &sd.entries[it->second];
  };
  for (size_t mi : model.visit) {
    const Module& m = model.modules[mi];
    // _NormBase._load_from_state_dict: fill a missing num_batches_tracked.
    std::optional<std::string> filled;
    if (m.norm) {
      const Version v = LocalVersion(ckpt, sd, m.path);
      if (v.error) {
        raised = v.error;
        break;
      }
      if (v.none || v.number < 2) {
        const std::string key = m.prefix + "num_batches_tracked";
        if (!has(key)) {
          filled = key;
          out.filled.push_back({key, std::string("torch.tensor(0, dtype=torch.long): _NormBase._load_from_state_dict "
                                                 "fills it when _metadata gives '") +
                                         m.path + "' " + (v.none ? "no version" : "a version below 2")});
        }
      }
    }
    // _InstanceNorm._load_from_state_dict raises on running stats from a
    // checkpoint without a version when it does not track them; a BatchNorm
    // that does not track them has the same keys and version and reports
    // them as unexpected. The reference cannot tell the two apart.
    if (schema.has_metadata && m.version == 2 && !m.norm && !m.param_by_name.contains("running_mean") &&
        (has(m.prefix + "running_mean") || has(m.prefix + "running_var"))) {
      const Version v = LocalVersion(ckpt, sd, m.path);
      if (!v.error && v.none) {
        out.caveats.push_back("'" + m.path + "' looks like a BatchNorm or InstanceNorm without running stats: as "
                              "a BatchNorm its running stats are unexpected keys (shown); as an InstanceNorm torch "
                              "raises 'Unexpected running stats buffer(s)' instead (the checkpoint has no version)");
      }
    }
    // SpectralNormLoadStateDictPreHook converts a checkpoint saved before
    // spectral_norm's metadata (weight -> weight_v); not modelled.
    if (m.spectral_norm && !LocalHas(ckpt, sd, m.path, "spectral_norm")) {
      out.caveats.push_back("'" + m.path + "' uses spectral_norm and the checkpoint's _metadata gives it no "
                            "spectral_norm version: torch's SpectralNormLoadStateDictPreHook may rewrite its keys "
                            "(not modelled; checked as the keys stand)");
    }
    // LazyModuleMixin._lazy_load_hook: materialize(input_param.shape).
    for (size_t k : m.params) {
      const ExpectedTensor& p = schema.keys[k];
      if (!p.lazy) continue;
      const Entry* in = has(p.key);
      if (in == nullptr) continue;
      const Value& v = in->ckpt->values().Get(in->value);
      if (v.kind != ValueKind::kTensor && !(v.kind == ValueKind::kObject && (v.text == kUninitializedParameter ||
                                                                              v.text == kUninitializedBuffer))) {
        raised = PyException{"AttributeError", "'" + PyShortName(*in->ckpt, in->value) + "' object has no attribute 'shape'"};
        break;
      }
    }
    if (raised) break;
    std::vector<std::string> missing_here;
    for (size_t k : m.params) {
      const ExpectedTensor& p = schema.keys[k];
      const Entry* in = has(p.key);
      if (in == nullptr) {
        if (filled && *filled == p.key) {
          if (!p.lazy && !p.shape.empty()) {
            error_msgs.push_back("size mismatch for " + p.key + ": copying a param with shape torch.Size([]) from "
                                 "checkpoint, the shape in current model is " + TorchSize(p.shape) + ".");
            out.mismatched.push_back({p.key, "size", error_msgs.back()});
          } else {
            out.loaded.push_back(p.key);
          }
          continue;
        }
        missing_here.push_back(p.key);
        continue;
      }
      const Value& v = in->ckpt->values().Get(in->value);
      if (v.kind == ValueKind::kObject && (v.text == kUninitializedParameter || v.text == kUninitializedBuffer)) {
        out.caveats.push_back("'" + p.key + "' is an uninitialised lazy parameter in the checkpoint: what torch does "
                              "with it is not modelled");
        continue;
      }
      if (v.kind != ValueKind::kTensor) {
        error_msgs.push_back("While copying the parameter named \"" + p.key +
                             "\", expected torch.Tensor or Tensor-like object from checkpoint but received " +
                             PyClass(*in->ckpt, in->value));
        out.mismatched.push_back({p.key, "not_a_tensor", error_msgs.back()});
        continue;
      }
      const Tensor& t = in->ckpt->tensors()[v.index];
      if (!p.lazy) {
        std::vector<int64_t> shape = in->whole_shape.value_or(std::vector<int64_t>(t.shape.begin(), t.shape.end()));
        if (p.shape.empty() && shape.size() == 1) {
          // Backward compatibility (0.3 -> 0.4): input_param = input_param[0].
          if (shape[0] == 0) {
            raised = PyException{"IndexError", "index 0 is out of bounds for dimension 0 with size 0"};
            break;
          }
          shape.clear();
        }
        if (shape != p.shape) {
          error_msgs.push_back("size mismatch for " + p.key + ": copying a param with shape " + TorchSize(shape) +
                               " from checkpoint, the shape in current model is " + TorchSize(p.shape) + ".");
          out.mismatched.push_back({p.key, "size", error_msgs.back()});
          continue;
        }
      }
      const std::string_view dtype = DTypeName(t.dtype);
      if (p.dtype && *p.dtype != dtype) {
        out.converted.push_back({p.key, "copied from " + std::string(dtype) + " into " + *p.dtype});
      }
      out.loaded.push_back(p.key);
    }
    if (raised) break;
    out.missing.insert(out.missing.end(), missing_here.begin(), missing_here.end());
    if (m.extra_state) {
      const std::string key = m.prefix + "_extra_state";
      if (has(key)) {
        out.caveats.push_back("'" + key + "' goes to set_extra_state() of the model's class (user code): whether "
                              "it accepts the value is not known here");
      } else {
        out.missing.push_back(key);
      }
    }
    if (mi == 0 && first_bad_key) {
      const Entry& bad = sd.entries[*first_bad_key];
      const Value& k = bad.ckpt->values().Get(bad.key_id);
      raised = k.kind == ValueKind::kBytes && !k.byte_array
                   ? PyException{"TypeError", "startswith first arg must be bytes or a tuple of bytes, not str"}
                   : PyException{"AttributeError",
                                 "'" + PyShortName(*bad.ckpt, bad.key_id) + "' object has no attribute 'startswith'"};
      break;
    }
  }
  if (raised) return raise_both(*raised);

  std::ranges::stable_sort(unexpected, [](const Unexpected& a, const Unexpected& b) {
    return std::tie(a.visit, a.extra, a.entry) < std::tie(b.visit, b.extra, b.entry);
  });
  for (const Unexpected& u : unexpected) out.unexpected.push_back(sd.entries[u.entry].key);

  const std::string head = "Error(s) in loading state_dict for " + options.model_class + ":\n\t";
  auto join = [](const std::vector<std::string>& msgs) {
    std::string s;
    for (size_t i = 0; i < msgs.size(); ++i) s += (i ? "\n\t" : "") + msgs[i];
    return s;
  };
  std::vector<std::string> strict_msgs;
  if (!out.missing.empty()) strict_msgs.push_back("Missing key(s) in state_dict: " + QuotedList(out.missing) + ". ");
  if (!out.unexpected.empty()) {
    strict_msgs.push_back("Unexpected key(s) in state_dict: " + QuotedList(out.unexpected) + ". ");
  }
  strict_msgs.insert(strict_msgs.end(), error_msgs.begin(), error_msgs.end());
  if (!strict_msgs.empty()) out.strict.exception = PyException{"RuntimeError", head + join(strict_msgs)};
  if (!error_msgs.empty()) out.non_strict.exception = PyException{"RuntimeError", head + join(error_msgs)};
  out.ok = options.strict ? out.strict.ok() : out.non_strict.ok();
  return out;
}

// CommonFirstComponent: "P." when every str key has the first component P
// followed by more, else "".
std::string CommonFirstComponent(const std::vector<std::string>& keys) {
  if (keys.empty()) return "";
  const size_t dot = keys.front().find('.');
  if (dot == std::string::npos) return "";
  const std::string prefix = keys.front().substr(0, dot + 1);
  for (const std::string& key : keys) {
    if (key.size() <= prefix.size() || !key.starts_with(prefix)) return "";
  }
  return prefix;
}

constexpr const char* kKnownWrappers[] = {"module.", "model.", "_orig_mod."};

Result<KeyCheckResult> CheckKeysImpl(const StateDictSource& source, const ModelSchema& schema,
                                     const KeyCheckOptions& options) {
  CKG_ASSIGN_OR_RETURN(Model model, BuildModel(schema));
  CKG_ASSIGN_OR_RETURN(StateDictView sd, source.View(options.prefix, options.strip_prefix, ""));
  const Checkpoint& checkpoint = source.Primary();
  CKG_ASSIGN_OR_RETURN(KeyCheckResult out, Replay(checkpoint, schema, model, sd, options));
  if (!options.hints || out.strict.ok()) return out;

  // What would make it fit: a wrapper prefix on either side, or a sub-dict.
  auto fits = [&](const std::string& prefix, const std::optional<std::string>& strip,
                  const std::string& add) -> bool {
    Result<StateDictView> v = source.View(prefix, strip, add);
    if (!v) return false;
    Result<KeyCheckResult> r = Replay(checkpoint, schema, model, *v, options);
    return r && r->strict.ok();
  };
  auto strips_for = [&](const StateDictView& view) {
    std::vector<std::string> keys;
    for (const Entry& e : view.entries) {
      if (e.str_key) keys.push_back(e.key);
    }
    std::vector<std::string> out_strips(std::begin(kKnownWrappers), std::end(kKnownWrappers));
    if (const std::string common = CommonFirstComponent(keys);
        !common.empty() && std::ranges::find(out_strips, common) == out_strips.end()) {
      out_strips.push_back(common);
    }
    return out_strips;
  };
  const std::string flag_prefix = options.prefix.empty() ? "" : "--prefix " + options.prefix + " ";
  CKG_ASSIGN_OR_RETURN(StateDictView plain, source.View(options.prefix, std::nullopt, ""));
  for (const std::string& strip : strips_for(plain)) {
    if (options.strip_prefix == strip) continue;
    bool any = false;
    for (const Entry& e : plain.entries) any = any || (e.str_key && e.key.starts_with(strip));
    if (any && fits(options.prefix, strip, "")) {
      out.hints.push_back("every key would fit with '" + strip + "' stripped: " + flag_prefix + "--strip-prefix " +
                          strip + " (the checkpoint comes from a wrapped model" +
                          (strip == "module." ? ", e.g. DataParallel" : strip == "model." ? ", e.g. a Lightning module"
                                                : strip == "_orig_mod." ? ", e.g. torch.compile" : "") +
                          ")");
    }
  }
  {
    std::vector<std::string> want;
    for (const ExpectedTensor& e : schema.keys) want.push_back(e.key);
    std::vector<std::string> adds;
    if (const std::string common = CommonFirstComponent(want); !common.empty()) adds.push_back(common);
    for (const std::string& add : adds) {
      if (fits(options.prefix, options.strip_prefix, add)) {
        out.hints.push_back("every key would fit under '" + add + "': the model is wrapped (every expected key starts "
                            "with it, as DataParallel's do); load into the wrapped module (model." +
                            add.substr(0, add.size() - 1) + ".load_state_dict) instead");
      }
    }
  }
  size_t tried = 0;
  for (const Entry& e : plain.entries) {
    if (!e.str_key || e.ckpt->values().Get(e.value).kind != ValueKind::kDict) continue;
    if (++tried > options.max_hint_sub_dicts) break;
    const std::string sub = options.prefix.empty() ? e.key : options.prefix + "." + e.key;
    if (fits(sub, std::nullopt, "")) {
      out.hints.push_back("the dict under '" + e.key + "' would fit: --prefix " + sub);
      continue;
    }
    Result<StateDictView> inner = source.View(sub, std::nullopt, "");
    if (!inner) continue;
    for (const std::string& strip : strips_for(*inner)) {
      if (fits(sub, strip, "")) {
        out.hints.push_back("the dict under '" + e.key + "' would fit with '" + strip +
                            "' stripped: --prefix " + sub + " --strip-prefix " + strip);
        break;
      }
    }
  }
  return out;
}

}  // namespace

Result<ModelSchema> LoadSchema(const std::string& path, const std::string& prefix) {
  try {
    return LoadSchemaImpl(path, prefix);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory reading the schema");
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, 0, std::string("unexpected exception: ") + e.what());
  }
}

Result<KeyCheckResult> CheckKeys(const Checkpoint& checkpoint, const ModelSchema& model,
                                 const KeyCheckOptions& options) {
  try {
    return CheckKeysImpl(StateDictSource{&checkpoint, nullptr}, model, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory comparing keys");
  }
}

Result<KeyCheckResult> CheckKeys(const DcpCheckpoint& dcp, const ModelSchema& model, const KeyCheckOptions& options) {
  if (dcp.archives().empty()) return MakeError(ErrorCode::kMalformed, 0, "the folder's .metadata names no items");
  try {
    return CheckKeysImpl(StateDictSource{nullptr, nullptr, &dcp}, model, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory comparing keys");
  }
}

Result<KeyCheckResult> CheckKeys(const ShardedCheckpoint& sharded, const ModelSchema& model,
                                 const KeyCheckOptions& options) {
  if (sharded.shards().empty()) return MakeError(ErrorCode::kMalformed, 0, "the index lists no shards");
  try {
    return CheckKeysImpl(StateDictSource{nullptr, &sharded}, model, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory comparing keys");
  }
}

Result<KeyCheckResult> CheckKeysOfPath(const std::string& path, const ModelSchema& model,
                                       const KeyCheckOptions& options, const LoadOptions& load) {
  // A sharded checkpoint (its *.index.json) is checked as its shards load
  // into the model: one state dict of every shard's tensors.
  if (IsShardIndexPath(path)) {
    CKG_ASSIGN_OR_RETURN(ShardedCheckpoint sharded, LoadShardedCheckpoint(path, load));
    CKG_ASSIGN_OR_RETURN(KeyCheckResult r, CheckKeys(sharded, model, options));
    CKG_TRY(sharded.CheckUnchanged());
    return r;
  }
  if (IsDcpFolder(path)) {
    CKG_ASSIGN_OR_RETURN(DcpCheckpoint dcp, LoadDcpCheckpoint(path, load));
    CKG_ASSIGN_OR_RETURN(KeyCheckResult r, CheckKeys(dcp, model, options));
    CKG_TRY(dcp.CheckUnchanged());
    return r;
  }
  CKG_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(path, load));
  CKG_ASSIGN_OR_RETURN(KeyCheckResult r, CheckKeys(ckpt, model, options));
  CKG_TRY(ckpt.CheckUnchanged());
  return r;
}

}  // namespace ckptguard::scanner

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

std::string Dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

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

Result<ExpectedTensor> ParseEntry(const std::string& key, const json& entry) {
  auto bad = [&](const std::string& what) {
    return MakeError(ErrorCode::kMalformed, 0, "key " + Quoted(key) + ": " + what);
  };
  if (!entry.is_object()) {
    return bad(std::string("expected an object {\"dtype\": ..., \"shape\": [...]}, got ") + JsonTypeName(entry));
  }
  ExpectedTensor out;
  out.key = key;
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
  if (shape == entry.end()) return bad("no \"shape\" (a list of non-negative integers, [] for a scalar)");
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

// SchemaFromJson turns a parsed JSON schema into expectations, in the file's
// key order. Errors name the key.
Result<std::vector<ExpectedTensor>> SchemaFromJson(const json& doc, const std::optional<std::string>& duplicate) {
  if (!doc.is_object()) {
    return MakeError(ErrorCode::kMalformed, 0,
                     std::string("a JSON schema must be an object mapping each key to {\"dtype\", \"shape\"}, got ") +
                         JsonTypeName(doc));
  }
  if (duplicate) {
    return MakeError(ErrorCode::kMalformed, 0, "key " + Quoted(*duplicate) + " appears twice in the schema");
  }
  std::vector<ExpectedTensor> out;
  out.reserve(doc.size());
  for (const auto& [key, entry] : doc.items()) {
    CKG_ASSIGN_OR_RETURN(ExpectedTensor e, ParseEntry(key, entry));
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<ExpectedTensor>> SchemaFromCheckpoint(const Checkpoint& ckpt, const std::string& prefix) {
  CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, ckpt.StateDict(prefix));
  std::vector<ExpectedTensor> out;
  out.reserve(named.size());
  std::unordered_set<std::string> seen;
  for (NamedTensor& nt : named) {
    if (!seen.insert(nt.path).second) {
      return MakeError(ErrorCode::kMalformed, 0,
                       "key " + Quoted(nt.path) + " names two tensors in the reference checkpoint");
    }
    const Tensor& t = ckpt.tensors()[nt.tensor];
    out.push_back(ExpectedTensor{std::move(nt.path), std::string(DTypeName(t.dtype)), t.shape});
  }
  return out;
}

Result<std::vector<ExpectedTensor>> LoadSchemaImpl(const std::string& path, const std::string& prefix) {
  auto load_reference = [&]() -> Result<std::vector<ExpectedTensor>> {
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
    Result<std::vector<ExpectedTensor>> reference = load_reference();
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
  Result<std::vector<ExpectedTensor>> reference = load_reference();
  if (reference) return reference;
  Error error = doc.error();
  error.detail = "neither a JSON schema (" + error.detail + ") nor a checkpoint (" + reference.error().ToString() + ")";
  return std::unexpected(std::move(error));
}

// FirstComponentPrefix: "P." when every key has the same first dotted
// component P (and at least one more component), else "".
std::string FirstComponentPrefix(const std::vector<std::string>& keys) {
  if (keys.empty()) return "";
  const size_t dot = keys.front().find('.');
  if (dot == std::string::npos || dot == 0) return "";
  const std::string prefix = keys.front().substr(0, dot + 1);
  for (const std::string& key : keys) {
    if (key.size() <= prefix.size() || !key.starts_with(prefix)) return "";
  }
  return prefix;
}

size_t CountMatches(const std::vector<std::string>& keys, size_t strip, const std::unordered_set<std::string>& other) {
  size_t n = 0;
  for (const std::string& key : keys) n += other.contains(key.substr(strip)) ? 1 : 0;
  return n;
}

Result<KeyCheckResult> CheckKeysImpl(const Checkpoint& checkpoint, const std::vector<ExpectedTensor>& expected,
                                     const KeyCheckOptions& options) {
  CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, checkpoint.StateDict(options.prefix));
  KeyCheckResult out;
  bool failed = false;

  std::vector<std::string> have_keys;
  have_keys.reserve(named.size());
  for (const NamedTensor& nt : named) have_keys.push_back(nt.path);
  std::vector<std::string> want_keys;
  want_keys.reserve(expected.size());
  for (const ExpectedTensor& e : expected) want_keys.push_back(e.key);
  const std::unordered_set<std::string> have_set(have_keys.begin(), have_keys.end());
  const std::unordered_set<std::string> want_set(want_keys.begin(), want_keys.end());
  if (want_set.size() != want_keys.size()) {
    std::unordered_set<std::string_view> seen;
    for (const std::string& key : want_keys) {
      if (!seen.insert(key).second) {
        return MakeError(ErrorCode::kInvalidArgument, 0, "expected key " + Quoted(key) + " is listed twice");
      }
    }
  }

  // A common first component on one side only (DataParallel's "module."):
  // strip it when every key on that side has it and stripping makes more keys
  // match than before (so at least one). Nothing subtler: a guess that is
  // wrong would hide the real mismatch.
  const size_t direct = CountMatches(have_keys, 0, want_set);
  const std::string have_prefix = FirstComponentPrefix(have_keys);
  const std::string want_prefix = FirstComponentPrefix(want_keys);
  const size_t have_stripped = have_prefix.empty() ? 0 : CountMatches(have_keys, have_prefix.size(), want_set);
  const size_t want_stripped = want_prefix.empty() ? 0 : CountMatches(want_keys, want_prefix.size(), have_set);
  size_t strip_have = 0;
  size_t strip_want = 0;
  if (have_stripped > direct && have_stripped >= want_stripped) {
    strip_have = have_prefix.size();
    out.stripped_prefix = have_prefix;
  } else if (want_stripped > direct) {
    strip_want = want_prefix.size();
    out.stripped_prefix = want_prefix;
  }

  // Checkpoint keys (without a stripped prefix) -> tensor; a key that two
  // paths flatten to ({"a.b": t} and {"a": {"b": u}}) is ambiguous.
  std::unordered_map<std::string, uint32_t> have;
  have.reserve(named.size());
  std::vector<std::string> have_order;
  have_order.reserve(named.size());
  for (const NamedTensor& nt : named) {
    std::string key = nt.path.substr(strip_have);
    if (!have.emplace(key, nt.tensor).second) {
      out.mismatched.push_back(
          {key, "two tensors in the checkpoint have this key (nested dicts flatten to the same dotted path)"});
      failed = true;
      continue;
    }
    have_order.push_back(std::move(key));
  }

  std::unordered_set<std::string> matched;
  for (const ExpectedTensor& e : expected) {
    const std::string key = e.key.substr(strip_want);
    const auto it = have.find(key);
    if (it == have.end()) {
      out.missing.push_back(key);
      continue;
    }
    matched.insert(key);
    const Tensor& t = checkpoint.tensors()[it->second];
    std::string detail;
    if (t.shape != e.shape) {
      detail = "shape " + Dims(t.shape) + " in the checkpoint, " + Dims(e.shape) + " expected";
      failed = true;
    }
    const std::string_view dtype = DTypeName(t.dtype);
    if (e.dtype && *e.dtype != dtype) {
      if (!detail.empty()) detail += "; ";
      detail += "dtype " + std::string(dtype) + " in the checkpoint, " + *e.dtype +
                " expected (load_state_dict converts it)";
    }
    if (!detail.empty()) out.mismatched.push_back({key, std::move(detail)});
  }
  for (const std::string& key : have_order) {
    if (!matched.contains(key)) out.unexpected.push_back(key);
  }
  if (options.strict && (!out.missing.empty() || !out.unexpected.empty())) failed = true;
  out.ok = !failed;
  return out;
}

}  // namespace

Result<std::vector<ExpectedTensor>> LoadSchema(const std::string& path, const std::string& prefix) {
  try {
    return LoadSchemaImpl(path, prefix);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory reading the schema");
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, 0, std::string("unexpected exception: ") + e.what());
  }
}

Result<KeyCheckResult> CheckKeys(const Checkpoint& checkpoint, const std::vector<ExpectedTensor>& expected,
                                 const KeyCheckOptions& options) {
  try {
    return CheckKeysImpl(checkpoint, expected, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory comparing keys");
  }
}

}  // namespace ckptguard::scanner

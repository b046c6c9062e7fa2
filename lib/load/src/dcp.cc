#include "ckptguard/dcp.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include "ckptguard/mapped_file.h"
#include "ckptguard/sha256.h"
#include "ckptguard/sharded.h"

namespace ckptguard {

namespace fs = std::filesystem;

struct DcpCheckpoint::State {
  fs::path folder;
  std::optional<Checkpoint> metadata;
  std::vector<DcpEntry> entries;
  std::vector<DcpArchive> refs;
  std::vector<Checkpoint> archives;
  // The mapped files the archives view, by name (stable: the archives hold
  // views of their bytes).
  std::map<std::string, std::unique_ptr<MappedFile>> files;
};

namespace {

constexpr std::string_view kMetadataName = ".metadata";
constexpr std::string_view kMetaModule = "torch.distributed.checkpoint.metadata.";

std::string Num(uint64_t v) { return std::to_string(v); }

std::unexpected<Error> MetaError(ErrorCode code, std::string detail) {
  return MakeError(code, 0, std::move(detail), std::string(kMetadataName));
}

// Reader walks the records of a loaded .metadata.
class Reader {
 public:
  explicit Reader(const Checkpoint& meta) : values_(meta.values()) {}

  const Value& Get(ValueId id) const { return values_.Get(id); }

  // Record: the value as a record of `cls` (its dotted name), or nullptr.
  const Value* Record(ValueId id, std::string_view cls) const {
    const Value& v = Get(id);
    return v.kind == ValueKind::kRecord && v.text == cls ? &v : nullptr;
  }
  static bool IsMetaRecord(const Value& v, std::string_view name) {
    const std::string_view text = v.text;
    return v.kind == ValueKind::kRecord && text.size() == kMetaModule.size() + name.size() &&
           text.starts_with(kMetaModule) && text.ends_with(name);
  }

  // Attr: the state BUILD gave a record under `name`.
  std::optional<ValueId> Attr(const Value& record, std::string_view name) const {
    const std::span<const ValueId> attrs = values_.Attrs(record);
    for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
      const Value& key = Get(attrs[i]);
      if (key.kind == ValueKind::kStr && key.text == name) return attrs[i + 1];
    }
    return std::nullopt;
  }

  // Ints: a tuple or list of ints (torch.Size).
  std::optional<Dims> Ints(ValueId id) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kTuple && v.kind != ValueKind::kList) return std::nullopt;
    Dims out;
    for (ValueId item : v.items) {
      const Value& x = Get(item);
      if (x.kind != ValueKind::kInt || x.int_value < 0) return std::nullopt;
      out.push_back(x.int_value);
    }
    return out;
  }

  std::optional<std::string> Str(ValueId id) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kStr) return std::nullopt;
    return std::string(std::string_view(v.text));
  }
  std::optional<int64_t> Int(ValueId id) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kInt) return std::nullopt;
    return v.int_value;
  }

  // DTypeOf: TensorProperties' dtype: its __getstate__ tuple (dtype, layout,
  // requires_grad, memory format, pin_memory) or, from a writer without it,
  // its "dtype" attribute.
  std::optional<DType> DTypeOf(ValueId properties) const {
    const Value& p = Get(properties);
    // torch 2.0 pickled the sharded-tensor module's TensorProperties.
    if (!IsMetaRecord(p, "TensorProperties") &&
        !(p.kind == ValueKind::kRecord && p.text == "torch.distributed._shard.sharded_tensor.metadata.TensorProperties")) {
      return std::nullopt;
    }
    std::optional<ValueId> dtype;
    if (std::optional<ValueId> state = Attr(p, "__state__")) {
      const Value& s = Get(*state);
      if (s.kind == ValueKind::kTuple && !s.items.empty()) dtype = s.items[0];
    } else {
      dtype = Attr(p, "dtype");
    }
    if (!dtype || Get(*dtype).kind != ValueKind::kDtype) return std::nullopt;
    return Get(*dtype).dtype;
  }

  const ValueArena& values() const { return values_; }

 private:
  const ValueArena& values_;
};

std::vector<int64_t> ToVector(const Dims& d) { return std::vector<int64_t>(d.begin(), d.end()); }

Result<uint64_t> Volume(const Dims& dims) {
  uint64_t n = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) {
      return MakeError(ErrorCode::kMalformed, 0, "size overflows");
    }
  }
  return n;
}

// CheckChunks: the chunks of a tensor lie inside it, do not overlap and
// together cover it (so assembling them gives every element once).
Status CheckChunks(const DcpEntry& e) {
  auto fail = [&](std::string detail) {
    return MetaError(ErrorCode::kMalformed, "tensor \"" + e.fqn + "\": " + detail);
  };
  CKG_ASSIGN_OR_RETURN(uint64_t total, Volume(e.size));
  uint64_t covered = 0;
  for (const DcpChunk& c : e.chunks) {
    if (c.offsets.size() != e.size.size() || c.sizes.size() != e.size.size()) {
      return fail("a chunk has " + Num(c.offsets.size()) + " offsets and " + Num(c.sizes.size()) +
                  " sizes for a tensor of " + Num(e.size.size()) + " dimensions");
    }
    for (size_t k = 0; k < e.size.size(); ++k) {
      if (c.offsets[k] > e.size[k] || c.sizes[k] > e.size[k] - c.offsets[k]) {
        return fail("a chunk at offset " + Num(static_cast<uint64_t>(c.offsets[k])) + " of dimension " + Num(k) +
                    " leaves the tensor");
      }
    }
    CKG_ASSIGN_OR_RETURN(uint64_t v, Volume(c.sizes));
    covered += v;  // (it can only wrap when chunks overlap, which is refused first)
  }
  // Sorted by their offset along the dimension the chunks split most (the
  // one a sharding splits), a chunk can only overlap the later ones that
  // start before it ends there: a sweep, not every pair.
  size_t split = 0;
  size_t most = 0;
  for (size_t k = 0; k < e.size.size(); ++k) {
    std::vector<int64_t> starts;
    for (const DcpChunk& c : e.chunks) starts.push_back(c.offsets[k]);
    std::sort(starts.begin(), starts.end());
    const size_t distinct = static_cast<size_t>(std::unique(starts.begin(), starts.end()) - starts.begin());
    if (distinct > most) {
      most = distinct;
      split = k;
    }
  }
  std::vector<const DcpChunk*> order;
  for (const DcpChunk& c : e.chunks) order.push_back(&c);
  if (!e.size.empty()) {
    std::sort(order.begin(), order.end(),
              [split](const DcpChunk* a, const DcpChunk* b) { return a->offsets[split] < b->offsets[split]; });
  }
  for (size_t i = 0; i < order.size(); ++i) {
    for (size_t j = i + 1; j < order.size(); ++j) {
      const DcpChunk& a = *order[i];
      const DcpChunk& b = *order[j];
      if (!e.size.empty() && b.offsets[split] >= a.offsets[split] + a.sizes[split]) break;
      bool overlap = true;
      for (size_t k = 0; k < e.size.size() && overlap; ++k) {
        overlap = a.sizes[k] > 0 && b.sizes[k] > 0 && a.offsets[k] < b.offsets[k] + b.sizes[k] &&
                  b.offsets[k] < a.offsets[k] + a.sizes[k];
      }
      if (overlap) return fail("two chunks overlap");
    }
  }
  if (covered != total) {
    return fail("its chunks hold " + Num(covered) + " elements of " + Num(total));
  }
  return OkStatus();
}

}  // namespace

Result<DcpMetadata> ReadDcpMetadata(const Checkpoint& meta, const DcpLimits& limits) {
  DcpMetadata out;
  std::map<DcpItemKey, DcpArchive>& items = out.items;
  const Reader r(meta);
  const Value& root = r.Get(meta.root());
  if (!Reader::IsMetaRecord(root, "Metadata")) {
    return MetaError(ErrorCode::kMalformed, "not a torch.distributed.checkpoint Metadata (the pickle holds a " +
                                                std::string(ValueKindName(root.kind)) + ")");
  }
  const std::optional<ValueId> sd = r.Attr(root, "state_dict_metadata");
  const std::optional<ValueId> storage = r.Attr(root, "storage_data");
  if (!sd || r.Get(*sd).kind != ValueKind::kDict) return MetaError(ErrorCode::kMalformed, "no state_dict_metadata dict");
  if (!storage || r.Get(*storage).kind != ValueKind::kDict) {
    return MetaError(ErrorCode::kMalformed, "no storage_data dict (the writer is not FileSystemWriter)");
  }
  // storage_data: MetadataIndex -> _StorageInfo; a later equal key wins, as
  // in the dict pickle.load builds.
  const Value& sdata = r.Get(*storage);
  if (sdata.items.size() / 2 > limits.max_items) {
    return MetaError(ErrorCode::kLimitExceeded, "max_items (" + Num(limits.max_items) + ") exceeded");
  }
  for (size_t i = 0; i + 1 < sdata.items.size(); i += 2) {
    const Value& key = r.Get(sdata.items[i]);
    const Value& info = r.Get(sdata.items[i + 1]);
    if (!Reader::IsMetaRecord(key, "MetadataIndex")) {
      return MetaError(ErrorCode::kMalformed, "a storage_data key is not a MetadataIndex");
    }
    if (info.kind != ValueKind::kRecord || info.text != "torch.distributed.checkpoint.filesystem._StorageInfo") {
      return MetaError(ErrorCode::kMalformed, "a storage_data value is not a _StorageInfo");
    }
    const std::optional<ValueId> fqn_id = r.Attr(key, "fqn");
    const std::optional<std::string> fqn = fqn_id ? r.Str(*fqn_id) : std::nullopt;
    if (!fqn) return MetaError(ErrorCode::kMalformed, "a MetadataIndex without a str fqn");
    std::optional<std::vector<int64_t>> offsets;
    if (std::optional<ValueId> off = r.Attr(key, "offset"); off && r.Get(*off).kind != ValueKind::kNone) {
      std::optional<Dims> dims = r.Ints(*off);
      if (!dims) return MetaError(ErrorCode::kMalformed, "the MetadataIndex of \"" + *fqn + "\" has bad offsets");
      offsets = ToVector(*dims);
    }
    auto field = [&](std::string_view name) { return r.Attr(info, name); };
    const std::optional<ValueId> path_id = field("relative_path");
    const std::optional<ValueId> off_id = field("offset");
    const std::optional<ValueId> len_id = field("length");
    const std::optional<std::string> path = path_id ? r.Str(*path_id) : std::nullopt;
    const std::optional<int64_t> offset = off_id ? r.Int(*off_id) : std::nullopt;
    const std::optional<int64_t> length = len_id ? r.Int(*len_id) : std::nullopt;
    if (!path || !offset || !length || *offset < 0 || *length < 0) {
      return MetaError(ErrorCode::kMalformed, "the _StorageInfo of \"" + *fqn + "\" lacks relative_path, offset or length");
    }
    if (std::optional<ValueId> t = field("transform_descriptors"); t && r.Get(*t).kind != ValueKind::kNone &&
                                                                     !r.Get(*t).items.empty()) {
      return MetaError(ErrorCode::kUnsupportedFormat,
                       "\"" + *fqn + "\" is stored with transforms (transform_descriptors: compressed or encoded items)");
    }
    items[{*fqn, offsets}] = DcpArchive{*path, static_cast<uint64_t>(*offset), static_cast<uint64_t>(*length)};
  }
  const Value& entries = r.Get(*sd);
  if (entries.items.size() / 2 > limits.max_entries) {
    return MetaError(ErrorCode::kLimitExceeded, "max_entries (" + Num(limits.max_entries) + ") exceeded");
  }
  for (size_t i = 0; i + 1 < entries.items.size(); i += 2) {
    const std::optional<std::string> fqn = r.Str(entries.items[i]);
    if (!fqn) return MetaError(ErrorCode::kMalformed, "a state_dict_metadata key is not a str");
    const Value& md = r.Get(entries.items[i + 1]);
    DcpEntry e;
    e.fqn = *fqn;
    if (Reader::IsMetaRecord(md, "BytesStorageMetadata")) {
      out.entries.push_back(std::move(e));
      continue;
    }
    if (!Reader::IsMetaRecord(md, "TensorStorageMetadata")) {
      return MetaError(ErrorCode::kMalformed, "\"" + *fqn + "\" is neither TensorStorageMetadata nor BytesStorageMetadata");
    }
    e.is_tensor = true;
    const std::optional<ValueId> props = r.Attr(md, "properties");
    const std::optional<DType> dtype = props ? r.DTypeOf(*props) : std::nullopt;
    if (!dtype) return MetaError(ErrorCode::kMalformed, "tensor \"" + *fqn + "\" has no TensorProperties dtype");
    e.dtype = *dtype;
    const std::optional<ValueId> size = r.Attr(md, "size");
    const std::optional<Dims> dims = size ? r.Ints(*size) : std::nullopt;
    if (!dims) return MetaError(ErrorCode::kMalformed, "tensor \"" + *fqn + "\" has no size");
    e.size = *dims;
    const std::optional<ValueId> chunks = r.Attr(md, "chunks");
    if (!chunks || r.Get(*chunks).kind != ValueKind::kList) {
      return MetaError(ErrorCode::kMalformed, "tensor \"" + *fqn + "\" has no list of chunks");
    }
    if (r.Get(*chunks).items.size() > limits.max_chunks) {
      return MetaError(ErrorCode::kLimitExceeded,
                       "tensor \"" + *fqn + "\": max_chunks (" + Num(limits.max_chunks) + ") exceeded");
    }
    for (ValueId c : r.Get(*chunks).items) {
      const Value& chunk = r.Get(c);
      const std::optional<ValueId> off = Reader::IsMetaRecord(chunk, "ChunkStorageMetadata") ? r.Attr(chunk, "offsets")
                                                                                               : std::nullopt;
      const std::optional<ValueId> sizes = off ? r.Attr(chunk, "sizes") : std::nullopt;
      const std::optional<Dims> o = off ? r.Ints(*off) : std::nullopt;
      const std::optional<Dims> z = sizes ? r.Ints(*sizes) : std::nullopt;
      if (!o || !z) return MetaError(ErrorCode::kMalformed, "tensor \"" + *fqn + "\" has a chunk without offsets and sizes");
      e.chunks.push_back({*o, *z, 0});
    }
    CKG_TRY(CheckChunks(e));
    out.entries.push_back(std::move(e));
  }
  return out;
}

namespace {

// ForEachRun steps through a C-order tensor of `size` chunk by chunk: for every
// run of the last dimension inside `chunk`, fn(element index in the whole
// tensor, elements in the run). Iterative.
template <typename Fn>
void ForEachRun(const Dims& size, const DcpChunk& chunk, Fn&& fn) {
  const size_t n = size.size();
  if (n == 0) {
    fn(0, 1);
    return;
  }
  for (int64_t s : chunk.sizes) {
    if (s == 0) return;
  }
  std::vector<uint64_t> stride(n, 1);
  for (size_t k = n - 1; k > 0; --k) stride[k - 1] = stride[k] * static_cast<uint64_t>(size[k]);
  std::vector<int64_t> at(n, 0);  // index inside the chunk; the last stays 0
  while (true) {
    uint64_t first = 0;
    for (size_t k = 0; k < n; ++k) first += static_cast<uint64_t>(chunk.offsets[k] + at[k]) * stride[k];
    fn(first, static_cast<uint64_t>(chunk.sizes[n - 1]));
    // The next index of dimensions 0..n-2, the last fastest (an odometer).
    size_t k = n - 1;
    while (true) {
      if (k == 0) return;
      --k;
      if (++at[k] < chunk.sizes[k]) break;
      at[k] = 0;
    }
  }
}

}  // namespace

std::optional<std::string_view> DcpKeyUnder(std::string_view fqn, std::string_view prefix) {
  if (prefix.empty()) return fqn;
  if (!fqn.starts_with(prefix)) return std::nullopt;
  if (fqn.size() == prefix.size()) return std::string_view();
  if (fqn[prefix.size()] != '.') return std::nullopt;
  return fqn.substr(prefix.size() + 1);
}

bool IsDcpFolder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / kMetadataName, ec);
}

DcpCheckpoint::DcpCheckpoint(std::unique_ptr<State> state) : state_(std::move(state)) {}
DcpCheckpoint::DcpCheckpoint(DcpCheckpoint&&) noexcept = default;
DcpCheckpoint& DcpCheckpoint::operator=(DcpCheckpoint&&) noexcept = default;
DcpCheckpoint::~DcpCheckpoint() = default;

const fs::path& DcpCheckpoint::folder() const { return state_->folder; }
const Checkpoint& DcpCheckpoint::metadata() const { return *state_->metadata; }
const std::vector<DcpEntry>& DcpCheckpoint::entries() const { return state_->entries; }
const std::vector<DcpArchive>& DcpCheckpoint::archive_refs() const { return state_->refs; }
const std::vector<Checkpoint>& DcpCheckpoint::archives() const { return state_->archives; }

Status DcpCheckpoint::CheckUnchanged() const {
  CKG_TRY(state_->metadata->CheckUnchanged());
  for (const auto& [name, file] : state_->files) CKG_TRY(file->CheckUnchanged());
  return OkStatus();
}

const Checkpoint* DcpCheckpoint::SingleTensor(size_t entry, uint32_t* tensor) const {
  const DcpEntry& e = state_->entries[entry];
  if (!e.is_tensor || e.chunks.size() != 1 || e.chunks[0].sizes != e.size) return nullptr;
  const Checkpoint& a = state_->archives[e.chunks[0].archive];
  *tensor = a.values().Get(a.root()).index;
  return &a;
}

Result<std::vector<uint8_t>> DcpCheckpoint::ContiguousBytes(size_t entry) const {
  const DcpEntry& e = state_->entries[entry];
  if (!e.is_tensor) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "\"" + e.fqn + "\" is a value, not a tensor");
  }
  uint32_t t = 0;
  if (const Checkpoint* single = SingleTensor(entry, &t)) return single->ContiguousBytes(t);
  CKG_ASSIGN_OR_RETURN(uint64_t total, Volume(e.size));
  const uint64_t unit = DTypeSize(e.dtype);
  uint64_t len = 0;
  if (__builtin_mul_overflow(total, unit, &len) || len > std::vector<uint8_t>().max_size()) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "\"" + e.fqn + "\": too large to assemble");
  }
  std::vector<uint8_t> out;
  try {
    out.resize(static_cast<size_t>(len));
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "\"" + e.fqn + "\": out of memory assembling " + Num(len) + " bytes");
  }
  for (const DcpChunk& c : e.chunks) {
    const Checkpoint& a = state_->archives[c.archive];
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> part, a.ContiguousBytes(a.values().Get(a.root()).index));
    uint64_t from = 0;
    ForEachRun(e.size, c, [&](uint64_t first, uint64_t run_len) {
      std::memcpy(out.data() + first * unit, part.data() + from, run_len * unit);
      from += run_len * unit;
    });
  }
  return out;
}

Result<std::string> DcpCheckpoint::Sha256Hex(size_t entry) const {
  uint32_t t = 0;
  if (const Checkpoint* single = SingleTensor(entry, &t)) return single->Sha256Hex(t);
  CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ContiguousBytes(entry));
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  return sha.FinishHex();
}

Result<DcpCheckpoint> LoadDcpCheckpoint(const std::string& folder, const LoadOptions& options,
                                        const DcpLimits& limits) {
  auto state = std::make_unique<DcpCheckpoint::State>();
  state->folder = folder;
  // .metadata: records (its dataclasses) whatever the caller's options say.
  LoadOptions meta_options = options;
  meta_options.records = true;
  Result<Checkpoint> meta = LoadCheckpoint((state->folder / kMetadataName).string(), meta_options);
  if (!meta) {
    Error e = std::move(meta).error();
    e.where = std::string(kMetadataName);
    return std::unexpected(std::move(e));
  }
  state->metadata.emplace(std::move(*meta));
  CKG_ASSIGN_OR_RETURN(DcpMetadata declared, ReadDcpMetadata(*state->metadata, limits));
  state->entries = std::move(declared.entries);
  const std::map<DcpItemKey, DcpArchive>& items = declared.items;

  // Each item's archive, loaded once per (file, offset, length). torch
  // writes every item once (replicated tensors are deduplicated before the
  // save), so two keys or chunks naming the same bytes are refused: a chunk
  // reused for every part of a large tensor would assemble into far more
  // memory than the files hold. (Empty chunks may share: they copy nothing.)
  std::map<std::tuple<std::string, uint64_t, uint64_t>, uint32_t> loaded;
  std::vector<std::string> first_user;  // per archive, the key that named it first
  auto archive_of = [&](const std::string& fqn, const DcpItemKey& key, bool tensor,
                        bool empty_chunk) -> Result<uint32_t> {
    auto fail = [&](ErrorCode code, std::string detail, std::string where) {
      return MakeError(code, 0, "\"" + fqn + "\": " + detail, std::move(where));
    };
    const auto it = items.find(key);
    if (it == items.end()) {
      return MetaError(ErrorCode::kMalformed, "\"" + fqn + "\"" +
                                                  (tensor ? " has a chunk that storage_data does not locate"
                                                          : " is not located by storage_data"));
    }
    const DcpArchive& ref = it->second;
    if (PathLeavesFolder(ref.file)) {
      return MetaError(ErrorCode::kInvalidArgument,
                       "the item of \"" + fqn + "\" is in \"" + ref.file + "\", which leaves the folder: not read");
    }
    const auto [pos, fresh] = loaded.try_emplace({ref.file, ref.offset, ref.length}, 0);
    if (!fresh) {
      if (empty_chunk) return pos->second;
      return MetaError(ErrorCode::kMalformed, "\"" + fqn + "\" and \"" + first_user[pos->second] +
                                                  "\" name the same item (" + Num(ref.length) + " bytes at " +
                                                  Num(ref.offset) + " of " + ref.file + "): torch writes each once");
    }
    auto file = state->files.find(ref.file);
    if (file == state->files.end()) {
      Result<MappedFile> mapped = MappedFile::Open((state->folder / ref.file).string(), options.file);
      if (!mapped) {
        Error e = std::move(mapped).error();
        e.detail = "\"" + fqn + "\": " + e.detail;
        e.where = ref.file;
        return std::unexpected(std::move(e));
      }
      file = state->files.emplace(ref.file, std::make_unique<MappedFile>(std::move(*mapped))).first;
    }
    const Bytes bytes = file->second->data();
    if (ref.offset > bytes.size() || ref.length > bytes.size() - ref.offset) {
      return fail(ErrorCode::kTruncated,
                  "its item (" + Num(ref.length) + " bytes at " + Num(ref.offset) + ") runs past the end of the file (" +
                      Num(bytes.size()) + " bytes)",
                  ref.file);
    }
    Result<Checkpoint> ckpt = LoadCheckpointBytes(bytes.subspan(ref.offset, ref.length), options);
    if (!ckpt) {
      // A file that changed while it was read explains any error its bytes gave.
      CKG_TRY(file->second->CheckUnchanged());
      Error e = std::move(ckpt).error();
      e.detail = "\"" + fqn + "\": " + e.detail;
      e.where = ref.file + "@" + Num(ref.offset) + (e.where.empty() ? std::string() : ":" + e.where);
      return std::unexpected(std::move(e));
    }
    state->archives.push_back(std::move(*ckpt));
    state->refs.push_back(ref);
    first_user.push_back(fqn);
    pos->second = static_cast<uint32_t>(state->archives.size() - 1);
    return pos->second;
  };

  for (DcpEntry& e : state->entries) {
    if (!e.is_tensor) {
      CKG_ASSIGN_OR_RETURN(e.archive, archive_of(e.fqn, {e.fqn, std::nullopt}, false, false));
      continue;
    }
    for (DcpChunk& c : e.chunks) {
      CKG_ASSIGN_OR_RETURN(const uint64_t volume, Volume(c.sizes));
      CKG_ASSIGN_OR_RETURN(c.archive, archive_of(e.fqn, {e.fqn, ToVector(c.offsets)}, true, volume == 0));
      const Checkpoint& a = state->archives[c.archive];
      const Value& root = a.values().Get(a.root());
      const DcpArchive& ref = state->refs[c.archive];
      const std::string where = ref.file + "@" + Num(ref.offset);
      if (root.kind != ValueKind::kTensor) {
        return MakeError(ErrorCode::kMalformed, 0,
                         "\"" + e.fqn + "\": the item holds a " + std::string(ValueKindName(root.kind)) +
                             ", not a tensor",
                         where);
      }
      const Tensor& t = a.tensors()[root.index];
      if (t.dtype != e.dtype || t.shape != c.sizes) {
        return MakeError(ErrorCode::kMalformed, 0,
                         "\"" + e.fqn + "\": the item holds a " + std::string(DTypeName(t.dtype)) + " tensor of " +
                             Num(t.shape.size()) + " dimensions that is not the " + std::string(DTypeName(e.dtype)) +
                             " chunk .metadata declares",
                         where);
      }
      if (e.chunks.size() > 1 && (!t.HasData() || NotAPlainArray(t) || DTypeValuesPerByte(t.dtype) != 1)) {
        return MakeError(ErrorCode::kUnsupportedFormat, 0,
                         "\"" + e.fqn + "\": a chunk of " + NotAPlainArray(t).value_or("a packed tensor") +
                             " cannot be assembled",
                         where);
      }
      // torch's writer saves a chunk with a storage of its own elements
      // (it clones any other view), so an assembled tensor is never larger
      // than the storages it is made of: a chunk that views fewer bytes than
      // it has elements (a stride-0 broadcast) would assemble into memory
      // no file holds.
      uint64_t need = 0;
      const bool huge = __builtin_mul_overflow(volume, uint64_t{DTypeSize(t.dtype)}, &need);
      if (e.chunks.size() > 1 && (huge || a.StorageBytes(root.index).size() < need)) {
        return MakeError(ErrorCode::kMalformed, 0,
                         "\"" + e.fqn + "\": a chunk of " + Num(volume) + " elements views only " +
                             Num(a.StorageBytes(root.index).size()) + " bytes of its storage (a broadcast view): not "
                             "what torch's writer saves",
                         where);
      }
    }
  }
  DcpCheckpoint out(std::move(state));
  CKG_TRY(out.CheckUnchanged());
  return out;
}

Progress DcpProgress(const DcpCheckpoint& dcp) {
  Progress out;
  for (const DcpEntry& e : dcp.entries()) {
    if (e.is_tensor) continue;
    const Checkpoint& a = dcp.archives()[e.archive];
    const Value& v = a.values().Get(a.root());
    if ((e.fqn == "global_step" || (e.fqn == "step" && out.step_from != "global_step")) && v.kind == ValueKind::kInt) {
      out.step = v.int_value;
      out.step_from = e.fqn;
    } else if (e.fqn == "epoch" && (v.kind == ValueKind::kInt || v.kind == ValueKind::kFloat) &&
               std::isfinite(v.kind == ValueKind::kInt ? 0.0 : v.float_value)) {
      out.epoch = v.kind == ValueKind::kInt ? static_cast<double>(v.int_value) : v.float_value;
      out.epoch_from = "epoch";
    }
  }
  return out;
}

VerifyReport VerifyDcpCheckpoint(const std::string& folder, const LoadOptions& options) {
  return VerifyDcpCheckpoint(folder, options, nullptr);
}

VerifyReport VerifyDcpCheckpoint(const std::string& folder, const LoadOptions& options,
                                 const std::function<void(const DcpCheckpoint&)>& on_loaded) {
  VerifyReport report;
  report.path = folder;
  report.format = "dcp";
  auto add = [&](const std::string& kind, const Error& e) { report.problems.push_back({kind, e.where, e.offset, e.ToString()}); };
  Result<DcpCheckpoint> dcp = LoadDcpCheckpoint(folder, options);
  if (!dcp) {
    add(IsChangedWhileReading(dcp.error()) ? "io" : "load", dcp.error());
    return report;
  }
  if (on_loaded) on_loaded(*dcp);
  // Every archive with all its checks (CRCs, records against data.pkl).
  ContainerLimits full = options.container;
  full.zip.max_crc_check_len = ContainerLimits{}.zip.max_crc_check_len;
  full.check_torch_records = true;
  for (size_t i = 0; i < dcp->archives().size(); ++i) {
    const DcpArchive& ref = dcp->archive_refs()[i];
    Budget budget(options.budget);
    const Container c = OpenContainer(dcp->archives()[i].container().bytes, full, &budget);
    const std::string where = ref.file + "@" + Num(ref.offset);
    for (const Anomaly& a : c.anomalies) {
      report.problems.push_back({a.kind, a.entry.empty() ? where : where + ":" + a.entry, ref.offset + a.offset, a.detail});
    }
  }
  for (size_t i = 0; i < dcp->entries().size(); ++i) {
    const DcpEntry& e = dcp->entries()[i];
    if (e.is_tensor) {
      ++report.num_tensors;
      Result<std::string> digest = dcp->Sha256Hex(i);
      if (!digest) {
        add("tensor", digest.error());
        continue;
      }
      const Result<uint64_t> n = Volume(e.size);
      report.tensor_bytes += n ? *n * DTypeSize(e.dtype) : 0;
      continue;
    }
  }
  report.progress = DcpProgress(*dcp);
  if (Status unchanged = dcp->CheckUnchanged(); !unchanged) {
    VerifyReport changed;
    changed.path = folder;
    changed.format = report.format;
    changed.problems.push_back({"io", "", 0, unchanged.error().ToString()});
    return changed;
  }
  return report;
}

}  // namespace ckptguard

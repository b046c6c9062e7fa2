#include "ckptguard/checkpoint.h"

#include "ckptguard/sha256.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <unordered_map>
#include <new>
#include <exception>
#include <future>
#include <system_error>
#include <thread>

#include "ckptguard/npy_reader.h"
#include "ckptguard/pickle_machine.h"
#include "ckptguard/safetensors_reader.h"
#include "ckptguard/torch_legacy.h"
#include "ckptguard/zip_reader.h"
#include "py_text.h"

namespace ckptguard {

struct Checkpoint::State {
  MappedFile file;  // empty when loading from caller-owned bytes
  Container container;
  VmState vm;
  ValueId root = 0;
  VmLimits limits;
  std::vector<std::string> notes;
  std::vector<std::unique_ptr<std::string>> buffers;  // inflated records
  // The file's budget: the container, every pickle and the walks charge it
  // while loading; digests and copies of views charge it afterwards.
  mutable Budget budget;
  // data.pkl ran beside the container, on this thread while another opened
  // it (LoadOptions::threads), and the run was kept.
  bool ran_beside_container = false;
  // data.pkl's memo reads were scanned on another thread while this one
  // opened the container (LoadOptions::threads), and the run used them.
  bool scanned_ahead = false;
};

// FindForbiddenGlobal (below): the loader's refusal of any reader's pickle.
std::optional<Error> FindForbiddenGlobal(const Container& c, const LoadOptions& options, Budget& budget,
                                         const PickleSource* skip = nullptr);

namespace {

// PickleVmOptions: how LoadOptions run one pickle of the file, charging
// `budget`.
VmOptions PickleVmOptions(const LoadOptions& options, Budget* budget, bool script_objects) {
  VmOptions vm{options.allowlist, options.limits, script_objects};
  vm.budget = budget;
  vm.records = options.records;
  vm.reclaim = options.reclaim;
  vm.tensor_records = options.tensor_records;
  return vm;
}

std::string Num(uint64_t v) { return std::to_string(v); }

bool EndsWith(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

// TorchDataPickle is the data.pkl a torch zip's load runs: the pickle of
// the entry torch's reader finds under <prefix>/data.pkl (entry_index: of
// several copies, the one its lookup meets), else the last pickle of that
// name; nullptr when there is none.
const PickleSource* TorchDataPickle(const Container& c) {
  const std::string name = c.prefix + "/data.pkl";
  const auto it = c.entry_index.find(name);
  const ContainerEntry* read = it == c.entry_index.end() ? nullptr : &c.entries[it->second];
  const PickleSource* source = nullptr;
  for (const PickleSource& p : c.pickles) {
    if (p.entry != name) continue;
    if (read != nullptr && p.start == 0 &&
        ((p.file_offset && read->data_offset && *p.file_offset == *read->data_offset) ||
         (read->inflated && p.data.data() == read->inflated->data()))) {
      return &p;
    }
    source = &p;
  }
  return source;
}

// RecordKeyLimit bounds the storage keys looked up by number in an archive
// of `entries` entries (RecordKey): the table is a few bytes per entry,
// whatever keys a directory claims.
size_t RecordKeyLimit(size_t entries) { return 2 * entries + 64; }

// RecordKey is the number a storage key stands for when it is written as
// torch.save writes its keys ("0", "1", ... "19999": decimal, no sign, no
// leading zero) and is below `limit`; nullopt for any other key. A torch
// zip's loader finds such records by number in a table, the others by name.
std::optional<uint32_t> RecordKey(std::string_view key, size_t limit) {
  if (key.empty() || key.size() > 9 || (key[0] == '0' && key.size() > 1)) return std::nullopt;
  uint32_t value = 0;
  for (char ch : key) {
    if (ch < '0' || ch > '9') return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(ch - '0');
  }
  if (value >= limit) return std::nullopt;
  return value;
}

// NumberedRecord: the key number of an entry named <data_dir><key> whose key
// RecordKey takes.
std::optional<uint32_t> NumberedRecord(std::string_view name, std::string_view data_dir, size_t limit) {
  if (!name.starts_with(data_dir)) return std::nullopt;
  return RecordKey(name.substr(data_dir.size()), limit);
}

// Loader builds one Checkpoint::State from its container.
class Loader {
 public:
  Loader(Checkpoint::State& s, const LoadOptions& options, const MemoReadsScan* memo_reads = nullptr)
      : s_(s), options_(options), memo_reads_(memo_reads) {}

  Status Load() {
    const Container& c = s_.container;
    switch (c.format) {
      case ContainerFormat::kTorchZip:
        return LoadTorchZip(false);
      case ContainerFormat::kTorchScript:
        if (!options_.records) {
          // torch.load(weights_only=True) before torch 2.x hands a TorchScript
          // archive to torch.jit.load, which runs its code (torch 2.x raises
          // "Cannot use weights_only=True with TorchScript archives").
          return MakeError(ErrorCode::kUnsupportedFormat, 0,
                           "TorchScript archive refused by a weights-only load: torch.load(weights_only=True) of "
                           "torch < 2.0 hands it to torch.jit.load, which runs its code (torch 2.x raises 'Cannot use "
                           "weights_only=True with TorchScript archives'); a load that is not weights-only reads the "
                           "weights of its data.pkl without running code");
        }
        s_.notes.push_back(
            "TorchScript archive: only the weights in data.pkl were read; its code (code/, constants.pkl) was not "
            "run, and torch.jit.load would run it");
        return LoadTorchZip(true);
      case ContainerFormat::kTorchLegacy:
        return LoadLegacy();
      case ContainerFormat::kSafetensors:
        return LoadSafetensors();
      case ContainerFormat::kNumpy:
        return LoadNpy();
      case ContainerFormat::kNumpyZip:
        return LoadNpz();
      case ContainerFormat::kPickle:
        return LoadPlainPickle();
      case ContainerFormat::kZip:
        return MakeError(ErrorCode::kUnsupportedFormat, 0,
                         "a zip archive that is not a torch checkpoint (no <prefix>/data.pkl) or numpy .npz");
      case ContainerFormat::kZipSequence:
        return MakeError(ErrorCode::kUnsupportedFormat, 0,
                         std::to_string(c.nested.size()) +
                             " zip archives back to back, as torch.distributed.checkpoint writes its .distcp files: "
                             "load the checkpoint's folder (its .metadata says what each archive holds)");
      case ContainerFormat::kTorchScriptFlatbuffer:
        return MakeError(ErrorCode::kUnsupportedFormat, 4,
                         "a TorchScript flatbuffer module ('PTMF' at bytes 4..7): torch.jit.load and "
                         "_load_for_lite_interpreter run its code, and its weights are not read without running it");
      case ContainerFormat::kUnknown:
        return MakeError(ErrorCode::kUnsupportedFormat, 0, "not a model file: " + c.reason);
    }
    return MakeError(ErrorCode::kInternal, 0, "unhandled container format");
  }

 private:
  // --- storages ------------------------------------------------------------
  Result<uint32_t> AddStorage(Storage storage) {
    s_.vm.storages.push_back(std::move(storage));
    return static_cast<uint32_t>(s_.vm.storages.size() - 1);
  }

  // CheckRequest makes a second reference to a key agree with the first.
  Status CheckSame(const StorageRequest& r, const Storage& st) const {
    if (st.dtype != r.dtype || st.num_elements != static_cast<uint64_t>(r.num_elements)) {
      return MakeError(ErrorCode::kMalformed, r.offset,
                       "storage '" + std::string(r.key) + "' is declared twice with different types or sizes (" +
                           std::string(DTypeName(st.dtype)) + " x " + Num(st.num_elements) + " and " + std::string(r.type_name) +
                           " x " + std::to_string(r.num_elements) + ")");
    }
    return OkStatus();
  }

  Result<uint64_t> RecordLen(const StorageRequest& r) const {
    uint64_t len;
    if (__builtin_mul_overflow(static_cast<uint64_t>(r.num_elements), uint64_t{DTypeSize(r.dtype)}, &len)) {
      return MakeError(ErrorCode::kMalformed, r.offset, "storage '" + std::string(r.key) + "' size overflows");
    }
    return len;
  }

  // ZipRecord returns the bytes of a zip entry: a view of the file for stored
  // entries, an owned inflated copy for deflated ones.
  Result<std::pair<Bytes, bool>> ZipRecord(const ContainerEntry& e) {
    if (!e.data_offset) {
      // The offset the directory declares may lie outside the file: point at
      // the directory record that declares it.
      return MakeError(ErrorCode::kMalformed, e.zip.central_offset,
                       "unreadable local header (the directory puts it at byte " + Num(e.zip.local_header_offset) + ")",
                       e.zip.name);
    }
    if (e.zip.method == kZipMethodStored) {
      const Bytes all = s_.container.bytes;
      if (*e.data_offset > all.size() || e.zip.compressed_len > all.size() - *e.data_offset) {
        return MakeError(ErrorCode::kTruncated, *e.data_offset, "record runs past the end of the file", e.zip.name);
      }
      return std::pair<Bytes, bool>(all.subspan(static_cast<size_t>(*e.data_offset), static_cast<size_t>(e.zip.compressed_len)), false);
    }
    if (e.inflated) return std::pair<Bytes, bool>(*e.inflated, true);  // the container inflated it
    if (!zip_) {
      CKG_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Open(s_.container.bytes, options_.container.zip));
      zip_.emplace(std::move(zip));
    }
    Result<std::string> data = zip_->ReadEntry(e.zip, &s_.budget);
    if (!data) {
      Error err = data.error();
      err.where = e.zip.name;
      return std::unexpected(std::move(err));
    }
    s_.buffers.push_back(std::make_unique<std::string>(std::move(*data)));
    return std::pair<Bytes, bool>(AsBytes(*s_.buffers.back()), true);
  }

  const ContainerEntry* FindEntry(const std::string& name) const {
    auto it = s_.container.entry_index.find(name);  // of duplicates, the one torch's reader finds (NamesRepeat)
    return it == s_.container.entry_index.end() ? nullptr : &s_.container.entries[it->second];
  }

  // --- formats -------------------------------------------------------------
  Status LoadTorchZip(bool torchscript) {
    const Container& c = s_.container;
    const std::string root = c.prefix + "/";
    const PickleSource* source = TorchDataPickle(c);
    if (source == nullptr) {
      return MakeError(ErrorCode::kMalformed, 0, "archive has no readable " + root + "data.pkl");
    }
    bool big_endian = false;
    if (const ContainerEntry* order = FindEntry(root + "byteorder")) {
      CKG_ASSIGN_OR_RETURN(auto record, ZipRecord(*order));
      const std::string_view text = AsStringView(record.first);
      if (text == "big") {
        big_endian = true;
      } else if (text != "little") {
        return MakeError(ErrorCode::kMalformed, order->data_offset.value_or(0),
                         "byteorder record says '" + std::string(text.substr(0, 16)) + "'", order->zip.name);
      }
    }
    // The storage made from each entry, by the entry's index (a key names
    // one entry, so this is the storage of each key; one lookup per request).
    constexpr uint32_t kNoStorage = UINT32_MAX;
    std::vector<uint32_t> storage_of_entry(c.entries.size(), kNoStorage);
    // One storage per data/ record at most, and torch.save writes one tensor
    // per storage in the common case: sizing both tables from the count the
    // archive already holds avoids regrowing them (and the slack a doubled
    // vector leaves) on a many-tensor file. Capped, so that a directory of a
    // million empty records reserves no more than a real large model needs
    // (the tables still grow past it as tensors are made and charged).
    constexpr size_t kMaxReserved = size_t{1} << 17;
    const std::string data_dir = root + "data/";
    // Records whose key torch.save would write ("0", "1", ...) by number:
    // the pickle asks for them in key order while the directory lists them
    // in name order ("0", "1", "10", "100"...), and a hash lookup per
    // request then misses the cache three times. Every other name, and
    // every name when some repeat for torch's reader (then entry_index
    // says which entry it finds), is looked up in entry_index.
    const size_t key_limit = RecordKeyLimit(c.entries.size());
    constexpr uint32_t kNoEntry = UINT32_MAX;
    std::vector<uint32_t> entry_of_key;
    size_t num_records = 0;
    const bool by_number = !NamesRepeat(c);
    for (size_t i = 0; i < c.entries.size(); ++i) {
      const std::string& entry_name = c.entries[i].zip.name;
      if (!entry_name.starts_with(data_dir)) continue;
      ++num_records;
      if (!by_number) continue;
      if (const std::optional<uint32_t> key = NumberedRecord(entry_name, data_dir, key_limit)) {
        if (entry_of_key.empty()) entry_of_key.assign(key_limit, kNoEntry);
        entry_of_key[*key] = static_cast<uint32_t>(i);
      }
    }
    num_records = std::min(num_records, kMaxReserved);
    s_.vm.storages.reserve(s_.vm.storages.size() + num_records);
    s_.vm.tensors.reserve(s_.vm.tensors.size() + num_records);
    std::string name = data_dir;  // reused: root + "data/" + key, for names not found by number and errors
    auto record_name = [&](std::string_view key) -> const std::string& {
      name.resize(data_dir.size());
      name += key;
      return name;
    };
    StorageResolver resolver = [&](const StorageRequest& r) -> Result<uint32_t> {
      const ContainerEntry* entry = nullptr;
      if (const std::optional<uint32_t> key = by_number ? RecordKey(r.key, key_limit) : std::nullopt) {
        const uint32_t index = entry_of_key.empty() ? kNoEntry : entry_of_key[*key];
        entry = index == kNoEntry ? nullptr : &c.entries[index];
      } else {
        entry = FindEntry(record_name(r.key));
      }
      if (entry == nullptr) {
        return MakeError(ErrorCode::kMalformed, r.offset,
                         "storage '" + std::string(r.key) + "' has no record " + record_name(r.key), source->entry);
      }
      uint32_t& known = storage_of_entry[static_cast<size_t>(entry - c.entries.data())];
      if (known != kNoStorage) {
        CKG_TRY(CheckSame(r, s_.vm.storages[known]));
        return known;
      }
      CKG_ASSIGN_OR_RETURN(auto record, ZipRecord(*entry));
      CKG_ASSIGN_OR_RETURN(uint64_t want, RecordLen(r));
      if (record.first.size() != want) {
        return MakeError(ErrorCode::kMalformed, r.offset,
                         "record " + record_name(r.key) + " holds " + Num(record.first.size()) + " bytes; data.pkl declares " +
                             std::to_string(r.num_elements) + " x " + Num(DTypeSize(r.dtype)) + " (" + std::string(r.type_name) + ")",
                         source->entry);
      }
      Storage st{.key = r.key,
                 .location = r.location,
                 .num_elements = static_cast<uint64_t>(r.num_elements),
                 .bytes = record.first,
                 .file_offset = record.second ? 0 : entry->data_offset.value_or(0),
                 .dtype = r.dtype,
                 .big_endian = big_endian,
                 .inflated = record.second};
      CKG_ASSIGN_OR_RETURN(uint32_t index, AddStorage(std::move(st)));
      known = index;
      return index;
    };
    VmOptions vm_options = PickleVmOptions(options_, &s_.budget, torchscript);
    vm_options.memo_reads = memo_reads_;
    const Bytes data = source->data.subspan(static_cast<size_t>(source->start));
    const uint64_t base = source->file_offset ? *source->file_offset + source->start : source->start;
    CKG_ASSIGN_OR_RETURN(s_.root, RunPickle(data, base, source->entry, s_.vm, resolver, vm_options));
    return OkStatus();
  }

  Status LoadLegacy() {
    const Container& c = s_.container;
    const LegacyCheckpoint& legacy = *c.legacy;
    const uint64_t begin = legacy.pickle_offsets[3];
    const uint64_t end = legacy.pickle_offsets[4];
    if (begin > end || end > c.bytes.size()) return MakeError(ErrorCode::kInternal, begin, "legacy pickle offsets");
    std::unordered_map<std::string_view, uint32_t> by_key;  // views of the storages' keys
    // The records by key, the last of a repeated key winning as before (a
    // scan per request made a file of n storages cost n^2).
    std::unordered_map<std::string_view, const LegacyRecord*> records;
    records.reserve(legacy.records.size());
    for (const LegacyRecord& rec : legacy.records) records[rec.key] = &rec;
    const std::string where = "legacy object pickle";
    StorageResolver resolver = [&](const StorageRequest& r) -> Result<uint32_t> {
      if (auto it = by_key.find(r.key); it != by_key.end()) {
        CKG_TRY(CheckSame(r, s_.vm.storages[it->second]));
        return it->second;
      }
      const auto found = records.find(r.key);
      const LegacyRecord* record = found == records.end() ? nullptr : found->second;
      if (record == nullptr) {
        return MakeError(ErrorCode::kMalformed, r.offset, "storage '" + std::string(r.key) + "' has no raw record", where);
      }
      CKG_ASSIGN_OR_RETURN(uint64_t want, RecordLen(r));
      if (record->data_len != want || record->elem_size != DTypeSize(r.dtype)) {
        return MakeError(ErrorCode::kMalformed, record->count_offset,
                         "record '" + std::string(r.key) + "' holds " + Num(record->num_elements) +
                             " elements; the object pickle declares " + std::to_string(r.num_elements) + " of " +
                             std::string(r.type_name),
                         where);
      }
      Storage st{.key = r.key,
                 .location = r.location,
                 .num_elements = record->num_elements,
                 .bytes = c.bytes.subspan(static_cast<size_t>(record->data_offset), static_cast<size_t>(record->data_len)),
                 .file_offset = record->data_offset,
                 .dtype = r.dtype};
      CKG_ASSIGN_OR_RETURN(uint32_t index, AddStorage(std::move(st)));
      // The key the record holds (the request's view is the run's): the
      // records outlive the resolver.
      by_key.emplace(record->key, index);
      return index;
    };
    const VmOptions vm_options = PickleVmOptions(options_, &s_.budget, false);
    // torch runs the sys_info pickle (the third) before the object: it must
    // be a plain dict too. (The magic number and protocol pickles are checked
    // opcode by opcode by the container layer.)
    const uint64_t info_begin = legacy.pickle_offsets[2];
    CKG_ASSIGN_OR_RETURN(ValueId sys_info,
                         RunPickle(c.bytes.subspan(static_cast<size_t>(info_begin), static_cast<size_t>(begin - info_begin)),
                                   info_begin, "legacy sys_info pickle", s_.vm, NoStorages(), vm_options));
    if (s_.vm.values.Get(sys_info).kind != ValueKind::kDict) {
      return MakeError(ErrorCode::kMalformed, info_begin, "the sys_info pickle is not a dict", "legacy sys_info pickle");
    }
    CKG_ASSIGN_OR_RETURN(s_.root, RunPickle(c.bytes.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin)),
                                            begin, where, s_.vm, resolver, vm_options));
    return OkStatus();
  }

  Result<ValueId> AddValue(Value v) {
    if (s_.vm.values.size() >= s_.limits.max_values) {
      return MakeError(ErrorCode::kLimitExceeded, 0, "max_values (" + Num(s_.limits.max_values) + ") exceeded");
    }
    return s_.vm.values.Add(std::move(v));
  }

  // AddDenseTensor adds a C-order (or Fortran-order) tensor over a whole
  // storage. `item_bytes` (numpy elements kept as raw bytes, see
  // Tensor::numpy_dtype) adds a last dimension of that many bytes, stride 1,
  // innermost in either order.
  Result<ValueId> AddDenseTensor(uint32_t storage, const std::vector<uint64_t>& shape, bool fortran,
                                 std::optional<uint64_t> item_bytes = std::nullopt) {
    if (shape.size() + (item_bytes ? 1 : 0) > s_.limits.max_tensor_dims) {
      return MakeError(ErrorCode::kLimitExceeded, 0, "max_tensor_dims (" + Num(s_.limits.max_tensor_dims) + ") exceeded");
    }
    if (s_.vm.tensors.size() >= s_.limits.max_tensors) {
      return MakeError(ErrorCode::kLimitExceeded, 0, "max_tensors (" + Num(s_.limits.max_tensors) + ") exceeded");
    }
    Tensor t;
    t.dtype = s_.vm.storages[storage].dtype;
    t.storage = storage;
    t.num_elements = 1;
    for (uint64_t d : shape) {
      if (d > static_cast<uint64_t>(INT64_MAX)) return MakeError(ErrorCode::kMalformed, 0, "dimension too large");
      t.shape.push_back(static_cast<int64_t>(d));
      t.num_elements *= d;  // the readers checked the product against the data
    }
    int64_t unit = 1;
    if (item_bytes) {
      if (*item_bytes > static_cast<uint64_t>(INT64_MAX)) return MakeError(ErrorCode::kMalformed, 0, "itemsize too large");
      unit = std::max<int64_t>(static_cast<int64_t>(*item_bytes), 1);
    }
    t.stride = DenseStrides(t.shape, fortran, unit);
    if (item_bytes) {
      t.shape.push_back(static_cast<int64_t>(*item_bytes));
      t.stride.push_back(1);
      t.num_elements *= *item_bytes;
    }
    s_.vm.tensors.push_back(std::move(t));
    Value v;
    v.kind = ValueKind::kTensor;
    v.index = static_cast<uint32_t>(s_.vm.tensors.size() - 1);
    return AddValue(std::move(v));
  }

  Status AddItem(ValueId dict, const std::string& key, ValueId value) {
    Value k;
    k.kind = ValueKind::kStr;
    k.text = key;
    CKG_ASSIGN_OR_RETURN(ValueId kid, AddValue(std::move(k)));
    Value& d = s_.vm.values.Mutable(dict);
    d.items.push_back(kid);
    d.items.push_back(value);
    return OkStatus();
  }

  static std::optional<DType> SafetensorsDType(std::string_view name) {
    static const std::pair<std::string_view, DType> kMap[] = {
        {"F64", DType::kFloat64}, {"F32", DType::kFloat32},  {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
        {"I64", DType::kInt64},   {"I32", DType::kInt32},    {"I16", DType::kInt16},   {"I8", DType::kInt8},
        {"U64", DType::kUInt64},  {"U32", DType::kUInt32},   {"U16", DType::kUInt16},  {"U8", DType::kUInt8},
        {"BOOL", DType::kBool},   {"C64", DType::kComplex64}, {"F8_E5M2", DType::kFloat8E5M2},
        {"F8_E4M3", DType::kFloat8E4M3FN}, {"F8_E8M0", DType::kFloat8E8M0FNU},
    };
    for (const auto& [n, d] : kMap) {
      if (n == name) return d;
    }
    return std::nullopt;
  }

  Status LoadSafetensors() {
    const SafetensorsFile& file = *s_.container.safetensors;
    Value root;
    root.kind = ValueKind::kDict;
    CKG_ASSIGN_OR_RETURN(s_.root, AddValue(std::move(root)));
    for (const SafetensorsTensor& t : file.tensors) {
      const std::optional<DType> dtype = SafetensorsDType(t.dtype);
      if (!dtype) {
        return MakeError(ErrorCode::kUnsupportedFormat, t.header_offset,
                         "tensor '" + t.name + "': dtype " + t.dtype + " is not supported");
      }
      const Bytes bytes = s_.container.bytes.subspan(static_cast<size_t>(t.file_offset), static_cast<size_t>(t.end - t.begin));
      Storage st{.key = t.name,
                 .location = "cpu",
                 .num_elements = bytes.size() / DTypeSize(*dtype),
                 .bytes = bytes,
                 .file_offset = t.file_offset,
                 .dtype = *dtype};
      CKG_ASSIGN_OR_RETURN(uint32_t index, AddStorage(std::move(st)));
      CKG_ASSIGN_OR_RETURN(ValueId tensor, AddDenseTensor(index, t.shape, false));
      CKG_TRY(AddItem(s_.root, t.name, tensor));
    }
    return OkStatus();
  }

  // NpyDType is the torch dtype of a numpy array, or nullopt for a dtype
  // torch lacks (kept as raw bytes: Tensor::numpy_dtype).
  static Result<std::optional<DType>> NpyDType(const NpyArray& a, uint64_t offset) {
    if (a.is_object) {
      return MakeError(ErrorCode::kForbiddenGlobal, offset,
                       "object array: its data is a pickle (numpy.load(allow_pickle=True) would run it); not loaded");
    }
    if (std::optional<DType> d = DTypeFromNumpy(a.kind, a.item_size)) return d;
    if (a.structured && a.item_size == 0) {
      return MakeError(ErrorCode::kUnsupportedFormat, offset,
                       "numpy dtype " + a.descr.substr(0, 200) +
                           " is not supported (a structured descr whose itemsize is not worked out)");
    }
    return std::optional<DType>();
  }

  Result<ValueId> NpyTensor(const NpyArray& a, Bytes member, uint64_t member_base, const std::string& key,
                            bool inflated) {
    CKG_ASSIGN_OR_RETURN(std::optional<DType> dtype, NpyDType(a, a.data_offset));
    uint64_t data_len = a.data_len;
    // The reader leaves a structured array's length to the loader.
    if (a.structured && __builtin_mul_overflow(a.num_elements, a.item_size, &data_len)) {
      return MakeError(ErrorCode::kMalformed, a.data_offset, "the array's byte length overflows 64 bits", key);
    }
    const uint64_t rel = a.data_offset - member_base;
    if (rel > member.size() || data_len > member.size() - rel) {
      return MakeError(ErrorCode::kTruncated, a.data_offset, "array data runs past the end", key);
    }
    const Bytes data = member.subspan(static_cast<size_t>(rel), static_cast<size_t>(data_len));
    if (!dtype) {
      // A dtype torch lacks (or a structured one): its elements as raw bytes,
      // in the file's order.
      Storage st{.key = key,
                 .location = "cpu",
                 .num_elements = data_len,
                 .bytes = data,
                 .file_offset = inflated ? 0 : a.data_offset,
                 .dtype = DType::kUInt8,
                 .inflated = inflated};
      CKG_ASSIGN_OR_RETURN(uint32_t index, AddStorage(std::move(st)));
      CKG_ASSIGN_OR_RETURN(ValueId tensor, AddDenseTensor(index, a.shape, a.fortran_order, a.item_size));
      s_.vm.tensors.back().numpy_dtype = a.descr;
      return tensor;
    }
    Storage st{.key = key,
               .location = "cpu",
               .num_elements = a.num_elements,
               .bytes = data,
               .file_offset = inflated ? 0 : a.data_offset,
               .dtype = *dtype,
               .big_endian = a.byte_order == '>' && a.item_size > 1,
               .inflated = inflated};
    CKG_ASSIGN_OR_RETURN(uint32_t index, AddStorage(std::move(st)));
    return AddDenseTensor(index, a.shape, a.fortran_order);
  }

  Status LoadNpy() {
    CKG_ASSIGN_OR_RETURN(s_.root, NpyTensor(*s_.container.npy, s_.container.bytes, 0, "", false));
    return OkStatus();
  }

  Status LoadNpz() {
    Value root;
    root.kind = ValueKind::kDict;
    CKG_ASSIGN_OR_RETURN(s_.root, AddValue(std::move(root)));
    for (const auto& [name, array] : s_.container.npz_members) {
      const ContainerEntry* entry = FindEntry(name);
      if (entry == nullptr) return MakeError(ErrorCode::kInternal, 0, "npz member vanished", name);
      CKG_ASSIGN_OR_RETURN(auto record, ZipRecord(*entry));
      const uint64_t base = record.second ? 0 : entry->data_offset.value_or(0);
      CKG_ASSIGN_OR_RETURN(ValueId tensor, NpyTensor(array, record.first, base, name, record.second));
      CKG_TRY(AddItem(s_.root, EndsWith(name, ".npy") ? name.substr(0, name.size() - 4) : name, tensor));
    }
    return OkStatus();
  }

  Status LoadPlainPickle() {
    const Container& c = s_.container;
    if (c.pickles.empty()) return MakeError(ErrorCode::kMalformed, 0, "no pickle found");
    if (c.joblib) return LoadJoblib();
    const PickleSource& source = c.pickles.front();
    const VmOptions vm_options = PickleVmOptions(options_, &s_.budget, false);
    const Bytes data = source.data.subspan(static_cast<size_t>(source.start));
    const uint64_t base = source.file_offset.value_or(0) + source.start;
    CKG_ASSIGN_OR_RETURN(s_.root, RunPickle(data, base, "pickle", s_.vm, NoStorages(), vm_options));
    // Other readers' readings of the same file (joblib.load's without its
    // inline array bytes, the pure-Python unpickler's, a polyglot's pickle
    // from byte 0...) run too when a user loads the file with them: any of
    // them the VM refuses for a global or a call is this load's refusal.
    if (std::optional<Error> other = FindForbiddenGlobal(c, options_, s_.budget, &source)) {
      other->detail += " (in another reader's reading of the file: " + other->where + ")";
      return std::unexpected(std::move(*other));
    }
    // pickle.load reads one pickle; bytes after its STOP are where a second
    // payload hides (a later load of the same stream would run it).
    // Where the first pickle ends (decoded as a stream: its ops are not kept).
    const Result<uint64_t> end = FirstPickleEnd(data, options_.limits.pickle, base, &s_.budget, "pickle");
    if (!end && !end.error().limit.empty()) return std::unexpected(end.error());
    if (end && *end < base + data.size()) {
      const uint64_t end_offset = *end;
      VmState scratch;
      Result<ValueId> second = RunPickle(data.subspan(static_cast<size_t>(end_offset - base)), end_offset,
                                         "pickle", scratch, NoStorages(), vm_options);
      if (!second && second.error().code == ErrorCode::kForbiddenGlobal) {
        Error e = second.error();
        e.detail += " (in a second pickle after the first one's STOP)";
        return std::unexpected(std::move(e));
      }
      return MakeError(ErrorCode::kMalformed, end_offset,
                       Num(base + data.size() - end_offset) +
                           " bytes follow the pickle's STOP (a second pickle would run on the next load); not loaded",
                       "pickle");
    }
    return OkStatus();
  }

  // LoadJoblib loads a file whose arrays joblib writes inline after their
  // NumpyArrayWrapper BUILDs, as joblib.load reads it (container.h
  // JoblibReading): the reading's opcodes, each wrapper BUILD taking the next
  // array, which views the file (or the unwrapped data). pickle.load fails
  // on such a file at the first array's bytes; joblib.load is its reader.
  Status LoadJoblib() {
    const Container& c = s_.container;
    const JoblibReading& reading = *c.joblib;
    const PickleSource& stream = c.pickles.front();
    const PickleSource& source = c.pickles[reading.pickle];
    const uint64_t base = stream.file_offset.value_or(0);
    if (!reading.complete) {
      return MakeError(ErrorCode::kMalformed, base + reading.end,
                       "joblib.load's reading of the file does not reach its STOP", "[joblib]");
    }
    VmOptions vm_options = PickleVmOptions(options_, &s_.budget, false);
    vm_options.joblib = &reading;
    Result<ValueId> root = RunPickle(source.data, 0, source.entry, s_.vm, NoStorages(), vm_options);
    if (!root) {
      // The reading is rebuilt without frames and arrays: name the file's byte.
      Error e = std::move(root.error());
      e.offset = SourceOffset(source.offset_map, e.offset);
      return std::unexpected(std::move(e));
    }
    s_.root = *root;
    // The other readings of the file (pickle.load's stops at the first
    // array's bytes): any of them the VM refuses for a global or a call is
    // this load's refusal, as for any pickle.
    if (std::optional<Error> other = FindForbiddenGlobal(c, options_, s_.budget, &source)) {
      other->detail += " (in another reader's reading of the file: " + other->where + ")";
      return std::unexpected(std::move(*other));
    }
    // joblib.load reads one pickle; bytes after its STOP are where a second
    // payload hides.
    if (reading.end < stream.data.size()) {
      return MakeError(ErrorCode::kMalformed, base + reading.end,
                       Num(stream.data.size() - reading.end) +
                           " bytes follow the pickle's STOP (a second pickle would run on the next load); not loaded",
                       "[joblib]");
    }
    return OkStatus();
  }

  static StorageResolver NoStorages() {
    return [](const StorageRequest& r) -> Result<uint32_t> {
      return MakeError(ErrorCode::kUnsupportedFormat, r.offset,
                       "a storage reference where there are no records to read it from");
    };
  }

  Checkpoint::State& s_;
  const LoadOptions& options_;
  const MemoReadsScan* memo_reads_;  // data.pkl's, scanned ahead (LoadCheckpointImpl)
  std::optional<ZipArchive> zip_;
};

// --- walks -----------------------------------------------------------------

std::string KeyText(const ValueArena& values, ValueId id) {
  const Value& v = values.Get(id);
  switch (v.kind) {
    case ValueKind::kStr: return v.text;
    case ValueKind::kInt: return std::to_string(v.int_value);
    case ValueKind::kBigInt: return v.text;
    case ValueKind::kBool: return v.int_value ? "True" : "False";
    case ValueKind::kNone: return "None";
    case ValueKind::kFloat: return py::ReprFloat(v.float_value);
    case ValueKind::kTuple: {
      std::string out = "(";
      for (size_t i = 0; i < v.items.size(); ++i) {
        const Value& item = values.Get(v.items[i]);
        out += i ? ", " : "";
        out += item.kind == ValueKind::kStr ? py::ReprStr(item.text) : KeyText(values, v.items[i]).substr(0, 64);
      }
      return out + (v.items.size() == 1 ? ",)" : ")");
    }
    default: return "<" + std::string(ValueKindName(v.kind)) + ">";
  }
}

// KeyPart is one step of a path from a value to one inside it: a dict (or
// object) key, itself a value; a list, tuple or set index; or the name of an
// attribute set by BUILD (state_dict()._metadata).
struct KeyPart {
  enum Kind : uint8_t { kKey, kIndex, kAttr };
  Kind kind = kIndex;
  ValueId key = 0;     // kKey, kAttr
  uint64_t index = 0;  // kIndex
};

struct Child {
  std::string text;  // the key as dotted paths show it
  ValueId id;
  KeyPart part;
};

// Children lists the children of a container, with their keys, in order.
void Children(const ValueArena& values, ValueId id, std::vector<Child>& out) {
  out.clear();
  const Value& v = values.Get(id);
  if (v.kind == ValueKind::kDict || v.kind == ValueKind::kObject) {
    for (size_t i = 0; i + 1 < v.items.size(); i += 2) {
      out.push_back({KeyText(values, v.items[i]), v.items[i + 1], {KeyPart::kKey, v.items[i], 0}});
    }
  } else if (v.kind == ValueKind::kList || v.kind == ValueKind::kTuple) {
    for (size_t i = 0; i < v.items.size(); ++i) out.push_back({std::to_string(i), v.items[i], {KeyPart::kIndex, 0, i}});
  } else if (v.kind == ValueKind::kRecord) {
    // A record: its arguments by index, then its state by attribute name.
    for (size_t i = 0; i < v.items.size(); ++i) out.push_back({std::to_string(i), v.items[i], {KeyPart::kIndex, 0, i}});
    const std::span<const ValueId> attrs = values.Attrs(v);
    for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
      out.push_back({KeyText(values, attrs[i]), attrs[i + 1], {KeyPart::kAttr, attrs[i], 0}});
    }
  }
}

// WalkTensors is NamedTensors from `from`. With `keys`, it also gives the
// keys from `from` of the i-th tensor in walk order when (*wanted)[i] (what
// its dotted path joins, which two paths can share: {'a.b': t1, 'a': {'b':
// t2}}); the others get none, so that a walk costs no more than its paths.
Result<std::vector<NamedTensor>> WalkTensors(const ValueArena& values, ValueId from, const VmLimits& limits,
                                             std::vector<std::vector<KeyPart>>* keys = nullptr,
                                             const std::vector<bool>* wanted = nullptr) {
  struct Frame {
    ValueId id;
    std::string path;
    uint64_t depth;
    KeyPart part;
    bool pop = false;  // leaves the container the path stack is in
  };
  std::vector<NamedTensor> out;
  std::vector<Frame> stack{{from, "", 0, {}, false}};
  std::vector<KeyPart> trail;  // keys of the containers the walk is in (with `keys`)
  std::vector<Child> children;
  uint64_t visits = 0;
  while (!stack.empty()) {
    Frame f = std::move(stack.back());
    stack.pop_back();
    if (f.pop) {
      trail.pop_back();
      continue;
    }
    if (++visits > limits.max_walk_nodes) {
      return MakeError(ErrorCode::kLimitExceeded, 0,
                       "max_walk_nodes (" + Num(limits.max_walk_nodes) + ") exceeded listing tensors (shared subobjects "
                       "expand at every reference)");
    }
    const Value& v = values.Get(f.id);
    if (v.kind == ValueKind::kTensor) {
      if (keys != nullptr) {
        keys->emplace_back();
        if (wanted != nullptr && out.size() < wanted->size() && (*wanted)[out.size()]) {
          keys->back() = trail;
          if (f.depth > 0) keys->back().push_back(f.part);
        }
      }
      out.push_back({f.path, v.index});
      continue;
    }
    Children(values, f.id, children);
    if (children.empty()) continue;
    if (f.depth + 1 > limits.max_walk_depth) {
      return MakeError(ErrorCode::kLimitExceeded, 0,
                       "max_walk_depth (" + Num(limits.max_walk_depth) + ") exceeded at '" + f.path.substr(0, 200) +
                           "' (a cycle or very deep nesting)");
    }
    if (keys != nullptr && f.depth > 0) {
      trail.push_back(f.part);
      stack.push_back({0, "", 0, {}, true});
    }
    for (size_t i = children.size(); i-- > 0;) {
      Child& c = children[i];
      stack.push_back({c.id, f.path.empty() ? std::move(c.text) : f.path + "." + c.text, f.depth + 1, c.part, false});
    }
  }
  return out;
}

std::string Hex(std::string_view bytes) { return HexLower(bytes); }

// AppendJsonFloat appends a float as the skeleton shows one: a JSON number
// (Python's repr, so -0.0 stays -0.0), or {"__float__": "nan"/"inf"/"-inf"}.
void AppendJsonFloat(std::string& out, double value) {
  if (std::isfinite(value)) {
    out += py::ReprFloat(value);
  } else {
    out += "{\"__float__\":\"" + py::ReprFloat(value) + "\"}";
  }
}

// AppendJsonStrValue appends a str value: a JSON string, or {"__str__": hex
// of its surrogatepass UTF-8} when it holds a high surrogate directly
// followed by a low one, which a JSON reader would join into one code point.
void AppendJsonStrValue(std::string& out, std::string_view text) {
  if (py::HasSurrogatePair(text)) {
    out += "{\"__str__\":\"" + Hex(text) + "\"}";
  } else {
    py::AppendJsonStr(out, text);
  }
}

// SkeletonWriter writes values as the corpus's skeleton JSON with one
// explicit stack (no recursion on the file's nesting). Every value written
// counts one visit of max_walk_nodes and may be at most max_walk_depth deep.
// It notes each OrderedDict with BUILD attributes it writes (with the keys
// that lead to it) so that they can be written after the skeleton.
class SkeletonWriter {
 public:
  struct AttrsAt {
    std::vector<KeyPart> keys;  // from the root
    ValueId dict;
  };

  SkeletonWriter(const ValueArena& values, const VmLimits& limits) : values_(values), limits_(limits) {}

  // Value appends value `id`, reached through `trail`.
  Status Value(std::string& out, ValueId id, std::vector<KeyPart> trail) {
    trail_ = std::move(trail);
    stack_.push_back({Task::kValue, id, 0, {}, false, {}});
    return Run(out);
  }

  // Attrs appends {"__dict__": [[name, value], ...]} of the attributes of
  // found()[i]; OrderedDicts with attributes inside them are noted too.
  Status Attrs(std::string& out, size_t i) {
    trail_ = found_[i].keys;
    const ckptguard::Value& v = values_.Get(found_[i].dict);
    stack_.push_back({Task::kLiteral, 0, 0, {}, false, "]}"});
    PushPairs(values_.Attrs(v), 0, KeyPart::kAttr);
    stack_.push_back({Task::kLiteral, 0, 0, {}, false, "{\"__dict__\":["});
    return Run(out);
  }

  // Keys appends a JSON array of the keys: a dict key as its value, an index
  // as a number, an attribute name as {"__attr__": name}.
  Status Keys(std::string& out, const std::vector<KeyPart>& keys) {
    out.push_back('[');
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i > 0) out.push_back(',');
      const KeyPart& k = keys[i];
      if (k.kind == KeyPart::kIndex) {
        out += Num(k.index);
        continue;
      }
      if (k.kind == KeyPart::kAttr) out += "{\"__attr__\":";
      const bool saved = note_attrs_;
      note_attrs_ = false;  // a key that is an OrderedDict is shown, not listed again
      Status st = Value(out, k.key, {});
      note_attrs_ = saved;
      CKG_TRY(std::move(st));
      if (k.kind == KeyPart::kAttr) out.push_back('}');
    }
    out.push_back(']');
    return OkStatus();
  }

  const std::vector<AttrsAt>& found() const { return found_; }

 private:
  struct Task {
    enum Kind : uint8_t { kValue, kLiteral, kObjectTail, kPopTrail } kind;
    ValueId id;
    uint64_t depth;
    KeyPart part;          // kValue: the key that leads to it
    bool has_part;         // kValue: false for the top value and for keys
    std::string_view text; // kLiteral
  };

  // PushPairs pushes [k, v],[k, v]... of key, value, key, value... (the
  // caller pushes what closes the list first).
  void PushPairs(std::span<const ValueId> items, uint64_t depth, KeyPart::Kind kind) {
    const size_t n = items.size() / 2;
    for (size_t i = n; i-- > 0;) {
      stack_.push_back({Task::kLiteral, 0, 0, {}, false, "]"});
      stack_.push_back({Task::kValue, items[2 * i + 1], depth + 1, {kind, items[2 * i], 0}, true, {}});
      stack_.push_back({Task::kLiteral, 0, 0, {}, false, ","});
      stack_.push_back({Task::kValue, items[2 * i], depth + 1, {}, false, {}});
      stack_.push_back({Task::kLiteral, 0, 0, {}, false, i > 0 ? ",[" : "["});
    }
  }

  void PushSequence(std::string& out, std::string_view open, const std::vector<ValueId>& items, uint64_t depth) {
    out += open;
    stack_.push_back({Task::kLiteral, 0, 0, {}, false, "]}"});
    for (size_t i = items.size(); i-- > 0;) {
      stack_.push_back({Task::kValue, items[i], depth + 1, {KeyPart::kIndex, 0, i}, true, {}});
      if (i > 0) stack_.push_back({Task::kLiteral, 0, 0, {}, false, ","});
    }
  }

  Status Run(std::string& out) {
    while (!stack_.empty()) {
      const Task t = stack_.back();
      stack_.pop_back();
      if (t.kind == Task::kLiteral) {
        out += t.text;
        continue;
      }
      if (t.kind == Task::kPopTrail) {
        trail_.pop_back();
        continue;
      }
      const ckptguard::Value& v = values_.Get(t.id);
      if (t.kind == Task::kObjectTail) {
        out += "],\"__object__\":";
        py::AppendJsonStr(out, v.text);
        out.push_back('}');
        continue;
      }
      if (++visits_ > limits_.max_walk_nodes) {
        stack_.clear();
        return MakeError(ErrorCode::kLimitExceeded, 0, "max_walk_nodes (" + Num(limits_.max_walk_nodes) + ") exceeded");
      }
      if (t.depth > limits_.max_walk_depth) {
        stack_.clear();
        return MakeError(ErrorCode::kLimitExceeded, 0,
                         "max_walk_depth (" + Num(limits_.max_walk_depth) + ") exceeded (a cycle or very deep nesting)");
      }
      const bool container = v.kind == ValueKind::kList || v.kind == ValueKind::kTuple || v.kind == ValueKind::kSet ||
                             v.kind == ValueKind::kDict || v.kind == ValueKind::kObject || v.kind == ValueKind::kRecord;
      if (container && t.has_part) {
        trail_.push_back(t.part);
        stack_.push_back({Task::kPopTrail, 0, 0, {}, false, {}});
      }
      switch (v.kind) {
        case ValueKind::kNone: out += "null"; break;
        case ValueKind::kBool: out += v.int_value != 0 ? "true" : "false"; break;
        case ValueKind::kInt:
          if (v.int_value >= (int64_t{1} << 53) || v.int_value <= -(int64_t{1} << 53)) {
            out += "{\"__bigint__\":\"" + std::to_string(v.int_value) + "\"}";
          } else {
            out += std::to_string(v.int_value);
          }
          break;
        case ValueKind::kBigInt:
          out += "{\"__bigint__\":";
          py::AppendJsonStr(out, v.text);
          out.push_back('}');
          break;
        case ValueKind::kFloat: AppendJsonFloat(out, v.float_value); break;
        case ValueKind::kComplex:
          out += "{\"__complex__\":[";
          AppendJsonFloat(out, v.float_value);
          out.push_back(',');
          AppendJsonFloat(out, v.imag_value());
          out += "]}";
          break;
        case ValueKind::kStr: AppendJsonStrValue(out, v.text); break;
        case ValueKind::kBytes: out += "{\"__bytes__\":\"" + Hex(v.text) + "\"}"; break;
        case ValueKind::kTensor: out += "\"<tensor>\""; break;
        case ValueKind::kStorage: out += "\"<storage>\""; break;
        case ValueKind::kDtype: py::AppendJsonStr(out, "torch." + std::string(DTypeName(v.dtype))); break;
        case ValueKind::kDevice:
          out += "{\"__device__\":";
          py::AppendJsonStr(out, v.text);
          out.push_back('}');
          break;
        case ValueKind::kGlobal:
          out += "{\"__global__\":";
          py::AppendJsonStr(out, v.text);
          out.push_back('}');
          break;
        case ValueKind::kRecord: {
          // {"__record__": class, "form": call|new|member, "args": [...],
          //  "state": [[name, value], ...]}
          out += "{\"__record__\":";
          py::AppendJsonStr(out, v.text);
          out += ",\"form\":\"";
          out += RecordFormName(static_cast<RecordForm>(v.index));
          out += "\",\"args\":[";
          stack_.push_back({Task::kLiteral, 0, 0, {}, false, "]}"});
          PushPairs(values_.Attrs(v), t.depth, KeyPart::kAttr);
          stack_.push_back({Task::kLiteral, 0, 0, {}, false, "],\"state\":["});
          for (size_t i = v.items.size(); i-- > 0;) {
            stack_.push_back({Task::kValue, v.items[i], t.depth + 1, {KeyPart::kIndex, 0, i}, true, {}});
            if (i > 0) stack_.push_back({Task::kLiteral, 0, 0, {}, false, ","});
          }
          break;
        }
        case ValueKind::kList: PushSequence(out, "{\"__list__\":[", v.items, t.depth); break;
        case ValueKind::kTuple: PushSequence(out, "{\"__tuple__\":[", v.items, t.depth); break;
        case ValueKind::kSet: PushSequence(out, "{\"__set__\":[", v.items, t.depth); break;
        case ValueKind::kDict:
        case ValueKind::kObject: {
          if (v.kind == ValueKind::kDict && v.attrs_slot != 0 && note_attrs_) found_.push_back({trail_, t.id});
          out += "{\"__dict__\":[";
          if (v.kind == ValueKind::kObject) {
            stack_.push_back({Task::kObjectTail, t.id, 0, {}, false, {}});
          } else {
            stack_.push_back({Task::kLiteral, 0, 0, {}, false, "]}"});
          }
          PushPairs(v.items, t.depth, KeyPart::kKey);
          break;
        }
      }
    }
    return OkStatus();
  }

  const ValueArena& values_;
  const VmLimits& limits_;
  std::vector<Task> stack_;
  std::vector<KeyPart> trail_;
  std::vector<AttrsAt> found_;
  uint64_t visits_ = 0;
  bool note_attrs_ = true;
};

// ForEachChunk calls fn with runs of a tensor's elements in C order, each run
// as bytes in little-endian order (swapped through `scratch` when needed).
template <typename Fn>
void ForEachChunk(const Tensor& t, const Storage& st, Fn&& fn) {
  const uint64_t item = DTypeSize(t.dtype);
  if (t.num_elements == 0) return;
  const uint8_t* base = st.bytes.data();
  if (DTypeValuesPerByte(t.dtype) > 1) {
    // Packed values: the loader admits only contiguous views from the
    // storage's start, whose bytes are torch's int_repr().
    fn(base, static_cast<size_t>(DTypePackedBytes(t.dtype, t.num_elements)));
    return;
  }
  const uint32_t unit = DTypeSwapUnit(t.dtype);
  const bool swap = st.big_endian && unit > 1;
  // The lazy conjugate and negative bits flip sign bits (the top bit of a
  // scalar's last byte once little-endian): conj the imaginary half of a
  // complex element, neg every scalar.
  const bool is_complex = DTypeIsComplex(t.dtype);
  const bool flip_imag = (t.conj && is_complex) != t.neg;  // a conjugate negated leaves the imaginary part
  const bool flip_real = t.neg;
  const bool flip = flip_imag || flip_real;
  // Contiguous C order and no swap: one run.
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t i = t.shape.size(); i-- > 0;) {
    if (t.shape[i] != 1 && t.stride[i] != expect) contiguous = false;
    expect *= t.shape[i];
  }
  if (contiguous && !swap && !flip) {
    fn(base + static_cast<uint64_t>(t.storage_offset) * item, t.num_elements * item);
    return;
  }
  std::vector<uint8_t> scratch;
  scratch.reserve(64 * 1024);
  std::vector<int64_t> index(t.shape.size(), 0);
  const size_t dims = t.shape.size();
  auto flush = [&] {
    if (!scratch.empty()) fn(scratch.data(), scratch.size());
    scratch.clear();
  };
  for (uint64_t n = 0; n < t.num_elements; ++n) {
    int64_t pos = t.storage_offset;
    for (size_t d = 0; d < dims; ++d) pos += index[d] * t.stride[d];
    const uint8_t* src = base + static_cast<uint64_t>(pos) * item;
    const size_t at = scratch.size();
    scratch.insert(scratch.end(), src, src + item);
    if (swap) {
      for (uint64_t u = 0; u < item; u += unit) std::reverse(scratch.begin() + static_cast<std::ptrdiff_t>(at + u),
                                                             scratch.begin() + static_cast<std::ptrdiff_t>(at + u + unit));
    }
    if (flip) {
      if (is_complex) {
        if (flip_real) scratch[at + unit - 1] ^= 0x80;
        if (flip_imag) scratch[at + 2 * unit - 1] ^= 0x80;
      } else {
        scratch[at + item - 1] ^= 0x80;  // neg (floating types only: checked at load)
      }
    }
    if (scratch.size() >= 60 * 1024) flush();
    for (size_t d = dims; d-- > 0;) {
      if (++index[d] < t.shape[d]) break;
      index[d] = 0;
    }
  }
  flush();
}

}  // namespace

ContainerLimits LoaderContainerLimits() {
  ContainerLimits limits;
  limits.zip.max_crc_check_len = 0;
  limits.check_torch_records = false;
  return limits;
}

Checkpoint::Checkpoint(std::unique_ptr<State> state) : state_(std::move(state)) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() {
  // Its arrays serve the next load of this process (BulkReuse).
  const BulkReuse reuse;
  state_.reset();
}

ContainerFormat Checkpoint::format() const { return state_->container.format; }
Status Checkpoint::CheckUnchanged() const { return state_->file.CheckUnchanged(); }
const Container& Checkpoint::container() const { return state_->container; }
const Anomalies& Checkpoint::anomalies() const { return state_->container.anomalies; }
const std::vector<std::string>& Checkpoint::notes() const { return state_->notes; }
const ValueArena& Checkpoint::values() const { return state_->vm.values; }
ValueId Checkpoint::root() const { return state_->root; }
bool Checkpoint::ran_beside_container() const { return state_->ran_beside_container; }
uint64_t Checkpoint::tensor_records() const { return state_->vm.tensor_records; }
bool Checkpoint::scanned_ahead() const { return state_->scanned_ahead; }
std::span<const Tensor> Checkpoint::tensors() const { return state_->vm.tensors; }
std::span<const Storage> Checkpoint::storages() const { return state_->vm.storages; }

std::optional<ValueId> Checkpoint::Find(std::string_view dotted_path) const {
  ValueId at = state_->root;
  std::string_view rest = dotted_path;
  std::vector<Child> children;
  while (!rest.empty()) {
    Children(values(), at, children);
    // The longest key that matches a prefix of `rest` up to a dot boundary.
    std::optional<std::pair<size_t, ValueId>> best;
    for (const Child& c : children) {
      const std::string& key = c.text;
      if (rest.starts_with(key) && (rest.size() == key.size() || rest[key.size()] == '.') &&
          (!best || key.size() > best->first)) {
        best.emplace(key.size(), c.id);
      }
    }
    if (!best) return std::nullopt;
    at = best->second;
    rest.remove_prefix(std::min(rest.size(), best->first + 1));
  }
  return at;
}

Result<std::vector<NamedTensor>> Checkpoint::NamedTensors(std::optional<ValueId> from) const {
  return WalkTensors(values(), from.value_or(state_->root), state_->limits);
}

Result<std::vector<NamedTensor>> Checkpoint::StateDict(std::string_view prefix) const {
  std::string_view p = prefix;
  if (p.ends_with('.')) p.remove_suffix(1);
  std::optional<ValueId> at = p.empty() ? std::optional<ValueId>(state_->root) : Find(p);
  if (!at) return MakeError(ErrorCode::kInvalidArgument, 0, "no value at '" + std::string(prefix) + "'");
  return NamedTensors(*at);
}

std::optional<int64_t> Checkpoint::GetInt(std::string_view dotted_path) const {
  std::optional<ValueId> at = Find(dotted_path);
  if (!at) return std::nullopt;
  const Value& v = values().Get(*at);
  if (v.kind != ValueKind::kInt) return std::nullopt;
  return v.int_value;
}

std::optional<double> Checkpoint::GetFloat(std::string_view dotted_path) const {
  std::optional<ValueId> at = Find(dotted_path);
  if (!at) return std::nullopt;
  const Value& v = values().Get(*at);
  if (v.kind == ValueKind::kFloat) return v.float_value;
  if (v.kind == ValueKind::kInt) return static_cast<double>(v.int_value);
  return std::nullopt;
}

std::optional<std::string> Checkpoint::GetString(std::string_view dotted_path) const {
  std::optional<ValueId> at = Find(dotted_path);
  if (!at) return std::nullopt;
  const Value& v = values().Get(*at);
  if (v.kind != ValueKind::kStr) return std::nullopt;
  return v.text;
}

Status Checkpoint::ChargeView(uint32_t tensor, std::string_view what) const {
  if (tensor >= tensors().size()) return MakeError(ErrorCode::kInvalidArgument, 0, "no tensor " + Num(tensor));
  const Tensor& t = tensors()[tensor];
  if (!t.HasData()) {
    // Nothing to read: a meta tensor has no data, and a sparse one's data
    // are its component tensors (Tensor::sparse), read one by one.
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     "tensor " + Num(tensor) +
                         (t.meta ? " is a meta tensor: it has a shape and no data to " + std::string(what)
                                 : " is a " + std::string(TensorLayoutName(t.layout)) + " tensor: its data are its component tensors (" +
                                       (t.layout == TensorLayout::kNested ? "buffer, sizes, strides and offsets"
                                                                          : "indices and values") +
                                       "), no " + std::string(what) + " of a dense layout is made"));
  }
  const uint64_t item = DTypeSize(t.dtype);
  const uint64_t logical = t.num_elements > UINT64_MAX / std::max<uint64_t>(item, 1) ? UINT64_MAX : t.num_elements * item;
  return state_->budget.Charge(BudgetKind::kViewBytes, logical, 0, "", std::string(what) + " of tensor " + Num(tensor));
}

uint64_t Checkpoint::BudgetUsed(BudgetKind kind) const { return state_->budget.used(kind); }

Result<std::vector<uint8_t>> Checkpoint::ContiguousBytes(uint32_t tensor) const {
  CKG_TRY(ChargeView(tensor, "copy"));
  const Tensor& t = tensors()[tensor];
  std::vector<uint8_t> out;
  try {
    out.reserve(DTypePackedBytes(t.dtype, t.num_elements));
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory copying a tensor");
  }
  ForEachChunk(t, storages()[t.storage], [&](const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); });
  return out;
}

Result<std::string> Checkpoint::Sha256Hex(uint32_t tensor) const {
  CKG_TRY(ChargeView(tensor, "digest"));
  const Tensor& t = tensors()[tensor];
  Sha256 hash;
  ForEachChunk(t, storages()[t.storage], [&](const uint8_t* p, size_t n) { hash.Update(p, n); });
  return hash.FinishHex();
}

namespace {

// LittleEndianAt reads element `i` of little-endian C-order bytes of `dtype`
// as a double (float and integer types; the caller checked the dtype).
double NumberAt(const std::vector<uint8_t>& bytes, DType dtype, size_t i) {
  auto load = [&](auto v) {
    std::memcpy(&v, bytes.data() + i * sizeof(v), sizeof(v));
    return v;
  };
  switch (dtype) {
    case DType::kFloat64: return load(double{});
    case DType::kFloat32: return load(float{});
    case DType::kInt64: return static_cast<double>(load(int64_t{}));
    case DType::kInt32: return load(int32_t{});
    case DType::kQInt32: return load(int32_t{});
    case DType::kQInt8: return load(int8_t{});
    case DType::kQUInt8: return load(uint8_t{});
    default: return 0.0;
  }
}

}  // namespace

Result<std::vector<double>> Checkpoint::QuantParams(uint32_t tensor, bool zero_points) const {
  if (tensor >= tensors().size()) return MakeError(ErrorCode::kInvalidArgument, 0, "no tensor " + Num(tensor));
  const Quantization& q = *tensors()[tensor].quant;
  if (q.scheme == QScheme::kNone) return MakeError(ErrorCode::kInvalidArgument, 0, "tensor " + Num(tensor) + " is not quantized");
  if (q.scheme == QScheme::kPerTensorAffine) {
    return std::vector<double>{zero_points ? static_cast<double>(q.zero_point) : q.scale};
  }
  const uint32_t index = zero_points ? q.zero_points : q.scales;
  CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ContiguousBytes(index));
  const Tensor& p = tensors()[index];
  std::vector<double> out(p.num_elements);
  for (size_t i = 0; i < out.size(); ++i) out[i] = NumberAt(bytes, p.dtype, i);
  return out;
}

Result<std::vector<float>> Checkpoint::Dequantize(uint32_t tensor) const {
  CKG_ASSIGN_OR_RETURN(std::vector<double> scales, QuantParams(tensor, false));
  CKG_ASSIGN_OR_RETURN(std::vector<double> zero_points, QuantParams(tensor, true));
  const Tensor& t = tensors()[tensor];
  // Charged as the float32 result, which is as large as or larger than the
  // integers (ContiguousBytes charges those).
  const uint64_t logical = t.num_elements > UINT64_MAX / 4 ? UINT64_MAX : t.num_elements * 4;
  CKG_TRY(state_->budget.Charge(BudgetKind::kViewBytes, logical, 0, "", "dequantize of tensor " + Num(tensor)));
  CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> ints, ContiguousBytes(tensor));
  // The channel of element n (C order) is (n / inner) % size[axis].
  uint64_t inner = 1;
  uint64_t channels = 1;
  if (t.quant->scheme != QScheme::kPerTensorAffine) {
    const size_t axis = static_cast<size_t>(t.quant->axis);
    channels = static_cast<uint64_t>(t.shape[axis]);
    for (size_t d = axis + 1; d < t.shape.size(); ++d) inner *= static_cast<uint64_t>(t.shape[d]);
  }
  std::vector<float> out;
  try {
    out.resize(t.num_elements);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory dequantizing a tensor");
  }
  // Packed values (quint4x2, quint2x4): value n is bits (n % per_byte) of
  // byte n / per_byte, low bits first, as torch packs them.
  const uint32_t per_byte = DTypeValuesPerByte(t.dtype);
  const uint32_t bits = 8 / per_byte;
  auto PackedAt = [&](uint64_t n) {
    return (ints[static_cast<size_t>(n / per_byte)] >> (bits * (n % per_byte))) & ((1u << bits) - 1);
  };
  for (uint64_t n = 0; n < t.num_elements; ++n) {
    const size_t c = channels == 1 ? 0 : static_cast<size_t>((n / inner) % channels);
    // As ATen's scalar dequantize: (q - zero_point) * scale in float.
    const float scale = static_cast<float>(scales[c]);
    const float zero_point = static_cast<float>(zero_points[c]);
    out[n] = (static_cast<float>(per_byte > 1 ? PackedAt(n) : NumberAt(ints, t.dtype, n)) - zero_point) * scale;
  }
  return out;
}

Bytes Checkpoint::StorageBytes(uint32_t tensor) const {
  const Tensor& t = tensors()[tensor];
  if (!t.HasData()) return Bytes();
  const Storage& st = storages()[t.storage];
  const uint64_t item = DTypeSize(t.dtype);
  if (t.num_elements == 0) return st.bytes.subspan(0, 0);
  if (DTypeValuesPerByte(t.dtype) > 1) return st.bytes.subspan(0, static_cast<size_t>(DTypePackedBytes(t.dtype, t.num_elements)));
  uint64_t last = static_cast<uint64_t>(t.storage_offset);
  for (size_t i = 0; i < t.shape.size(); ++i) last += static_cast<uint64_t>((t.shape[i] - 1) * t.stride[i]);
  const uint64_t begin = static_cast<uint64_t>(t.storage_offset) * item;
  return st.bytes.subspan(static_cast<size_t>(begin), static_cast<size_t>((last + 1) * item - begin));
}

Result<std::string> Checkpoint::DescribeJson(std::string_view prefix, bool digests) const {
  std::string_view p = prefix;
  if (p.ends_with('.')) p.remove_suffix(1);
  std::optional<ValueId> at = p.empty() ? std::optional<ValueId>(state_->root) : Find(p);
  if (!at) return MakeError(ErrorCode::kInvalidArgument, 0, "no value at '" + std::string(prefix) + "'");
  CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> named, WalkTensors(values(), *at, state_->limits));

  // Tensors whose paths a JSON reader sees as one key, in walk order: the
  // first is under "tensors", all of them under "collisions" with their keys
  // (from a second walk, only when there are any).
  std::map<std::string, std::vector<size_t>> by_key;
  for (size_t i = 0; i < named.size(); ++i) by_key[py::JsonReadBack(named[i].path)].push_back(i);
  std::vector<std::vector<KeyPart>> keys;
  std::vector<bool> wanted(named.size(), false);
  bool any_collision = false;
  for (const auto& [key, group] : by_key) {
    if (group.size() < 2) continue;
    any_collision = true;
    for (size_t i : group) wanted[i] = true;
  }
  if (any_collision) {
    CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> again, WalkTensors(values(), *at, state_->limits, &keys, &wanted));
    if (again.size() != named.size()) return MakeError(ErrorCode::kInternal, 0, "two walks of one load differ");
  }
  std::map<std::string, size_t> listed;  // raw path -> tensor, sorted as the corpus files are
  for (const auto& [key, group] : by_key) listed.emplace(named[group.front()].path, group.front());

  // One tensor's object: its fields are gathered, then written in sorted
  // key order, as every object of this document (a sparse tensor's
  // component names sort among the others).
  std::vector<std::pair<std::string_view, std::string>> fields;
  auto dims = [](std::span<const int64_t> d) {
    std::string out = "[";
    for (size_t k = 0; k < d.size(); ++k) out += (k ? "," : "") + std::to_string(d[k]);
    out.push_back(']');
    return out;
  };
  auto str = [](std::string_view text) {
    std::string out;
    py::AppendJsonStr(out, text);
    return out;
  };
  auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  auto entry = [&](std::string& out, size_t i) -> Status {
    const Tensor& t = this->tensors()[named[i].tensor];
    fields.clear();
    if (t.conj) fields.emplace_back("conj", "true");
    fields.emplace_back("dtype", str(DTypeName(t.dtype)));
    if (t.neg) fields.emplace_back("neg", "true");
    if (!t.numpy_dtype.empty()) fields.emplace_back("numpy_dtype", str(t.numpy_dtype));
    fields.emplace_back("parameter", flag(t.parameter));
    if (t.quant->scheme == QScheme::kPerTensorAffine) {
      std::string scale;
      AppendJsonFloat(scale, t.quant->scale);
      fields.emplace_back("q_scale", std::move(scale));
      fields.emplace_back("q_zero_point", std::to_string(t.quant->zero_point));
    } else if (t.quant->scheme != QScheme::kNone) {
      // Per channel: the scales and zero points as numbers, losslessly
      // (float64 or float32 values are exact as doubles; int64 zero points
      // are read as integers).
      fields.emplace_back("q_per_channel_axis", std::to_string(t.quant->axis));
      CKG_ASSIGN_OR_RETURN(std::vector<double> scales, QuantParams(named[i].tensor, false));
      std::string list = "[";
      for (size_t k = 0; k < scales.size(); ++k) {
        if (k) list.push_back(',');
        AppendJsonFloat(list, scales[k]);
      }
      fields.emplace_back("q_per_channel_scales", list + "]");
      list = "[";
      const Tensor& zp = this->tensors()[t.quant->zero_points];
      CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> zbytes, ContiguousBytes(t.quant->zero_points));
      for (uint64_t k = 0; k < zp.num_elements; ++k) {
        if (k) list.push_back(',');
        if (zp.dtype == DType::kInt64) {
          int64_t z;
          std::memcpy(&z, zbytes.data() + k * 8, 8);
          list += std::to_string(z);
        } else if (zp.dtype == DType::kInt32) {
          int32_t z;
          std::memcpy(&z, zbytes.data() + k * 4, 4);
          list += std::to_string(z);
        } else {
          AppendJsonFloat(list, NumberAt(zbytes, zp.dtype, k));
        }
      }
      fields.emplace_back("q_per_channel_zero_points", list + "]");
    }
    if (t.quant->scheme != QScheme::kNone) fields.emplace_back("qscheme", str(QSchemeName(t.quant->scheme)));
    fields.emplace_back("shape", dims(t.shape));
    if (t.state) {
      // A Parameter's attributes, rendered as the skeleton renders values.
      std::string state;
      SkeletonWriter state_writer(values(), state_->limits);
      CKG_TRY(state_writer.Value(state, *t.state, {}));
      fields.emplace_back("state", std::move(state));
    }
    if (t.layout != TensorLayout::kStrided) {
      // A sparse or nested tensor: its layout, dense size (nested: number of
      // components) and components, each as an ordinary tensor under torch's
      // accessor name.
      auto part = [&](std::string_view name, uint32_t index) -> Status {
        const Tensor& c = this->tensors()[index];
        std::string obj = "{";
        if (c.conj) obj += "\"conj\":true,";
        obj += "\"dtype\":" + str(DTypeName(c.dtype));
        if (c.neg) obj += ",\"neg\":true";
        if (digests) {
          CKG_ASSIGN_OR_RETURN(std::string digest, Sha256Hex(index));
          obj += ",\"sha256\":\"" + digest + "\"";
        }
        obj += ",\"shape\":" + dims(c.shape) + ",\"storage_offset\":" + std::to_string(c.storage_offset) +
               ",\"stride\":" + dims(c.stride) + "}";
        fields.emplace_back(name, std::move(obj));
        return OkStatus();
      };
      const bool rows = t.layout == TensorLayout::kSparseCsr || t.layout == TensorLayout::kSparseBsr;
      if (t.layout == TensorLayout::kNested) {
        CKG_TRY(part("buffer", t.nested->buffer));
        CKG_TRY(part("nested_sizes", t.nested->sizes));
        CKG_TRY(part("nested_storage_offsets", t.nested->offsets));
        CKG_TRY(part("nested_strides", t.nested->strides));
        fields.emplace_back("layout", str(TensorLayoutName(t.layout)));
      } else if (t.layout == TensorLayout::kSparseCoo) {
        CKG_TRY(part("indices", t.sparse->indices));
        if (t.sparse->coalesced) fields.emplace_back("is_coalesced", flag(*t.sparse->coalesced));
      } else {
        CKG_TRY(part(rows ? "crow_indices" : "ccol_indices", t.sparse->indices));
        CKG_TRY(part(rows ? "col_indices" : "row_indices", t.sparse->plain_indices));
      }
      if (t.layout != TensorLayout::kNested) {
        CKG_TRY(part("values", t.sparse->values));
        fields.emplace_back("dense_dim", std::to_string(t.sparse->dense_dim));
        fields.emplace_back("layout", str(TensorLayoutName(t.layout)));
        fields.emplace_back("sparse_dim", std::to_string(t.sparse->sparse_dim));
      }
    } else {
      if (t.meta) fields.emplace_back("meta", "true");
      if (digests && !t.meta) {
        CKG_ASSIGN_OR_RETURN(std::string digest, Sha256Hex(named[i].tensor));
        fields.emplace_back("sha256", "\"" + digest + "\"");
      }
      fields.emplace_back("storage_offset", std::to_string(t.storage_offset));
      fields.emplace_back("stride", dims(t.stride));
    }
    std::sort(fields.begin(), fields.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (size_t k = 0; k < fields.size(); ++k) {
      if (k) out.push_back(',');
      out.push_back('"');
      out += fields[k].first;
      out += "\":";
      out += fields[k].second;
    }
    return OkStatus();
  };

  std::string tensors = "{";
  for (const auto& [path, i] : listed) {
    if (tensors.size() > 1) tensors.push_back(',');
    py::AppendJsonStr(tensors, path);
    tensors += ":{";
    CKG_TRY(entry(tensors, i));
    tensors.push_back('}');
  }
  tensors.push_back('}');

  SkeletonWriter writer(values(), state_->limits);
  std::string skeleton;
  CKG_TRY(writer.Value(skeleton, state_->root, {}));

  std::string collisions;
  for (const auto& [key, group] : by_key) {
    if (group.size() < 2) continue;
    collisions += collisions.empty() ? "[" : ",";
    collisions += "{\"path\":";
    py::AppendJsonStr(collisions, named[group.front()].path);
    collisions += ",\"tensors\":[";
    for (size_t g = 0; g < group.size(); ++g) {
      collisions += g ? ",{\"keys\":" : "{\"keys\":";
      CKG_TRY(writer.Keys(collisions, keys[group[g]]));
      collisions.push_back(',');
      CKG_TRY(entry(collisions, group[g]));
      collisions.push_back('}');
    }
    collisions += "]}";
  }
  if (!collisions.empty()) collisions.push_back(']');

  // OrderedDict attributes (state_dict()._metadata); attributes can hold
  // OrderedDicts with attributes of their own, noted as they are written.
  std::string attrs;
  for (size_t i = 0; i < writer.found().size(); ++i) {
    attrs += attrs.empty() ? "[{\"keys\":" : ",{\"keys\":";
    CKG_TRY(writer.Keys(attrs, writer.found()[i].keys));
    attrs += ",\"attrs\":";
    CKG_TRY(writer.Attrs(attrs, i));
    attrs.push_back('}');
  }
  if (!attrs.empty()) attrs.push_back(']');

  // Members in sorted order, as the corpus's files (and nlohmann) have them.
  std::string out = "{";
  if (!anomalies().empty()) {
    out += "\"anomalies\":[";
    for (size_t i = 0; i < anomalies().size(); ++i) {
      const Anomaly& a = anomalies()[i];
      out += i ? ",{\"detail\":" : "{\"detail\":";
      py::AppendJsonStr(out, a.detail);
      out += ",\"entry\":";
      py::AppendJsonStr(out, a.entry);
      out += ",\"kind\":";
      py::AppendJsonStr(out, a.kind);
      out += ",\"offset\":" + Num(a.offset) + "}";
    }
    out += "],";
  }
  if (!attrs.empty()) out += "\"attrs\":" + attrs + ",";
  if (!collisions.empty()) out += "\"collisions\":" + collisions + ",";
  out += "\"kind\":";
  py::AppendJsonStr(out, ContainerFormatName(format()));
  if (!notes().empty()) {
    out += ",\"notes\":[";
    for (size_t i = 0; i < notes().size(); ++i) {
      if (i) out.push_back(',');
      py::AppendJsonStr(out, notes()[i]);
    }
    out.push_back(']');
  }
  out += ",\"skeleton\":" + skeleton + ",\"tensors\":" + tensors + "}";
  return out;
}

Result<std::string> Checkpoint::SkeletonJson() const {
  SkeletonWriter writer(values(), state_->limits);
  std::string out;
  CKG_TRY(writer.Value(out, state_->root, {}));
  return out;
}

// FindForbiddenGlobal runs the first pickle of every place that holds one
// (but `skip`, already run) in a scratch VM and returns the first
// forbidden-global or budget error.
std::optional<Error> FindForbiddenGlobal(const Container& c, const LoadOptions& options, Budget& budget,
                                         const PickleSource* skip) {
  StorageResolver refuse = [](const StorageRequest& r) -> Result<uint32_t> {
    return MakeError(ErrorCode::kUnsupportedFormat, r.offset, "storage");
  };
  const VmOptions vm_options = PickleVmOptions(options, &budget, false);
  for (const PickleSource& p : c.pickles) {
    if (p.same_as || &p == skip) continue;  // the same bytes were run already
    VmState scratch;
    const Bytes data = p.data.subspan(static_cast<size_t>(p.start));
    Result<ValueId> r =
        RunPickle(data, p.file_offset.value_or(0) + p.start, p.entry.empty() ? "pickle" : p.entry, scratch, refuse, vm_options);
    if (!r && (r.error().code == ErrorCode::kForbiddenGlobal || !r.error().limit.empty())) return r.error();
  }
  return std::nullopt;
}

// TensorLabel names tensor `n` in an error: its dotted path in quotes
// ('encoder.emb') when the tree reaches it, else "tensor n" (a component, or
// the data of a Parameter). It walks the tree, so only a failing check calls
// it.
static std::string TensorLabel(const Checkpoint& ckpt, uint32_t n) {
  if (Result<std::vector<NamedTensor>> named = ckpt.NamedTensors()) {
    for (const NamedTensor& nt : *named) {
      if (nt.tensor == n) return "'" + nt.path + "'";
    }
  }
  return "tensor " + Num(n);
}

// CheckNestedViews checks that every component of every nested tensor is a
// view inside its buffer: non-negative sizes, strides and offset, and
// offset + sum((size - 1) * stride) < the buffer's length, without overflow
// (torch's _nested_view_from_buffer trusts them, and a view past the buffer
// would read memory that is not the tensor's). The index tensors are read
// as digests read them (charged to the budget).
static Status CheckNestedViews(const Checkpoint& ckpt) {
  const std::span<const Tensor> tensors = ckpt.tensors();
  for (uint32_t n = 0; n < tensors.size(); ++n) {
    const Tensor& t = tensors[n];
    if (t.layout != TensorLayout::kNested) continue;
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> sizes, ckpt.ContiguousBytes(t.nested->sizes));
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> strides, ckpt.ContiguousBytes(t.nested->strides));
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> offsets, ckpt.ContiguousBytes(t.nested->offsets));
    const Tensor& sizes_tensor = tensors[t.nested->sizes];
    const uint64_t count = t.shape.empty() ? 0 : static_cast<uint64_t>(t.shape[0]);
    const uint64_t dims = sizes_tensor.shape.size() == 2 ? static_cast<uint64_t>(sizes_tensor.shape[1]) : 0;
    const uint64_t length = tensors[t.nested->buffer].num_elements;
    auto at = [](const std::vector<uint8_t>& bytes, uint64_t i) {
      int64_t v;
      std::memcpy(&v, bytes.data() + i * 8, 8);
      return v;
    };
    for (uint64_t c = 0; c < count; ++c) {
      auto refuse = [&](const std::string& why) {
        return MakeError(ErrorCode::kMalformed, t.sparse->offset,
                         "nested tensor " + TensorLabel(ckpt, n) + ", component " + Num(c) + ": " + why);
      };
      const int64_t offset = at(offsets, c);
      if (offset < 0) return refuse("negative storage offset " + std::to_string(offset));
      uint64_t last = static_cast<uint64_t>(offset);
      bool empty = false;
      for (uint64_t d = 0; d < dims; ++d) {
        const int64_t size = at(sizes, c * dims + d);
        const int64_t stride = at(strides, c * dims + d);
        if (size < 0 || stride < 0) return refuse("negative size or stride in dimension " + Num(d));
        if (size == 0) empty = true;
        uint64_t span = 0;
        if (size > 0 && (__builtin_mul_overflow(static_cast<uint64_t>(size - 1), static_cast<uint64_t>(stride), &span) ||
                         __builtin_add_overflow(last, span, &last))) {
          return refuse("view extent overflows");
        }
      }
      if (!empty && last >= length) {
        return refuse("reaches buffer element " + Num(last) + ", the buffer has " + Num(length));
      }
    }
  }
  return OkStatus();
}

// ConvertCooIndices gives every COO tensor whose indices are not int64 an
// int64 copy of them, as torch's sparse_coo_tensor converts them when it
// rebuilds the tensor (a float truncated toward zero, NaN and values out of
// int64's range to INT64_MIN as x86's conversion gives them; bool as 0/1):
// a new tensor with its own storage, in a buffer the checkpoint owns,
// charged to the budget as a copy. The original component stays in the
// table, unreferenced.
static Status ConvertCooIndices(Checkpoint::State& s, const Checkpoint& ckpt) {
  for (uint32_t n = 0; n < s.vm.tensors.size(); ++n) {
    if (s.vm.tensors[n].layout != TensorLayout::kSparseCoo) continue;
    const uint32_t from = s.vm.tensors[n].sparse->indices;
    const Tensor& old = s.vm.tensors[from];
    if (old.dtype == DType::kInt64) continue;
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ckpt.ContiguousBytes(from));
    const size_t count = static_cast<size_t>(old.num_elements);
    CKG_TRY(s.budget.Charge(BudgetKind::kViewBytes, count * sizeof(int64_t), s.vm.tensors[n].sparse->offset, "",
                            "COO indices converted to int64"));
    auto converted = std::make_unique<std::string>(count * sizeof(int64_t), '\0');
    auto load = [&]<typename T>(T, size_t i) {
      T v;
      std::memcpy(&v, bytes.data() + i * sizeof(T), sizeof(T));
      return v;
    };
    auto from_float = [](double d) -> int64_t {
      // x86's cvttsd2si: out of range and NaN give INT64_MIN.
      if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return INT64_MIN;
      return static_cast<int64_t>(d);
    };
    for (size_t i = 0; i < count; ++i) {
      int64_t v = 0;
      switch (old.dtype) {
        case DType::kInt8: v = load(int8_t{}, i); break;
        case DType::kUInt8: v = load(uint8_t{}, i); break;
        case DType::kBool: v = load(uint8_t{}, i) != 0; break;
        case DType::kInt16: v = load(int16_t{}, i); break;
        case DType::kUInt16: v = load(uint16_t{}, i); break;
        case DType::kInt32: v = load(int32_t{}, i); break;
        case DType::kUInt32: v = load(uint32_t{}, i); break;
        case DType::kUInt64: v = static_cast<int64_t>(load(uint64_t{}, i)); break;
        case DType::kFloat32: v = from_float(load(float{}, i)); break;
        case DType::kFloat64: v = from_float(load(double{}, i)); break;
        default:
          return MakeError(ErrorCode::kInternal, 0, "COO indices of dtype " + std::string(DTypeName(old.dtype)));
      }
      std::memcpy(converted->data() + i * sizeof(int64_t), &v, sizeof(v));
    }
    Storage st{.key = "",
               .location = "cpu",
               .num_elements = count,
               .bytes = AsBytes(*converted),
               .file_offset = 0,
               .dtype = DType::kInt64,
               .big_endian = false,
               .inflated = true};
    s.buffers.push_back(std::move(converted));
    s.vm.storages.push_back(std::move(st));
    Tensor t;
    t.dtype = DType::kInt64;
    t.storage = static_cast<uint32_t>(s.vm.storages.size() - 1);
    t.num_elements = old.num_elements;
    t.shape = old.shape;
    t.stride = DenseStrides(std::span<const int64_t>(old.shape.data(), old.shape.size()), false);
    s.vm.tensors.push_back(std::move(t));
    s.vm.tensors[n].sparse.Mut().indices = static_cast<uint32_t>(s.vm.tensors.size() - 1);
  }
  return OkStatus();
}

// CheckSparseIndices checks the index values of every sparse tensor as
// torch checks them when a load ends (_validate_loaded_sparse_tensors:
// _validate_sparse_coo_tensor_args, _validate_sparse_compressed_tensor_args),
// so that a file torch refuses is refused here too. The VM checked dtypes
// and shapes; this reads the index tensors (charged as digests are).
static Status CheckSparseIndices(const Checkpoint& ckpt) {
  const std::span<const Tensor> tensors = ckpt.tensors();
  for (uint32_t n = 0; n < tensors.size(); ++n) {
    const Tensor& t = tensors[n];
    if (t.layout == TensorLayout::kStrided || t.layout == TensorLayout::kNested || t.parameter) {
      continue;  // a Parameter's data is checked as itself; nested tensors by CheckNestedViews
    }
    auto refuse = [&](const std::string& why) {
      std::string size = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) size += (i ? ", " : "") + std::to_string(t.shape[i]);
      return MakeError(ErrorCode::kMalformed, t.sparse->offset,
                       std::string(TensorLayoutName(t.layout)) + " tensor " + TensorLabel(ckpt, n) + " of size " +
                           size + "]: " + why + " (torch refuses it too)");
    };
    const Tensor& ix = tensors[t.sparse->indices];
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> ibytes, ckpt.ContiguousBytes(t.sparse->indices));
    auto at = [](const std::vector<uint8_t>& bytes, DType dtype, uint64_t i) -> int64_t {
      if (dtype == DType::kInt32) {
        int32_t v;
        std::memcpy(&v, bytes.data() + i * 4, 4);
        return v;
      }
      int64_t v;
      std::memcpy(&v, bytes.data() + i * 8, 8);
      return v;
    };
    if (t.layout == TensorLayout::kSparseCoo) {
      const uint64_t sparse_dim = static_cast<uint64_t>(ix.shape[0]);
      const uint64_t nnz = static_cast<uint64_t>(ix.shape[1]);
      for (uint64_t d = 0; d < sparse_dim; ++d) {
        for (uint64_t k = 0; k < nnz; ++k) {
          const int64_t v = at(ibytes, ix.dtype, d * nnz + k);
          if (v < 0 || v >= t.shape[d]) {
            return refuse("indices[" + Num(d) + "][" + Num(k) + "] = " + std::to_string(v) +
                          " is out of range for dimension " + Num(d) + " of size " + std::to_string(t.shape[d]));
          }
        }
      }
      continue;
    }
    const bool rows = t.layout == TensorLayout::kSparseCsr || t.layout == TensorLayout::kSparseBsr;
    const bool block = t.layout == TensorLayout::kSparseBsr || t.layout == TensorLayout::kSparseBsc;
    const char* cname = rows ? "crow_indices" : "ccol_indices";
    const char* pname = rows ? "col_indices" : "row_indices";
    const Tensor& values = tensors[t.sparse->values];
    const Tensor& px = tensors[t.sparse->plain_indices];
    CKG_ASSIGN_OR_RETURN(std::vector<uint8_t> pbytes, ckpt.ContiguousBytes(t.sparse->plain_indices));
    const size_t batch = ix.shape.size() - 1;
    const int64_t block_rows = block ? values.shape[batch + 1] : 1;
    const int64_t block_cols = block ? values.shape[batch + 2] : 1;
    const int64_t nplain = rows ? t.shape[batch + 1] / block_cols : t.shape[batch] / block_rows;
    const uint64_t ncompressed = static_cast<uint64_t>(ix.shape[batch]);  // entries: compressed dim + 1
    const uint64_t nnz = static_cast<uint64_t>(px.shape[batch]);
    uint64_t batches = 1;
    for (size_t i = 0; i < batch; ++i) batches *= static_cast<uint64_t>(ix.shape[i]);
    for (uint64_t b = 0; b < batches; ++b) {
      const uint64_t c0 = b * ncompressed;
      const uint64_t p0 = b * nnz;
      if (at(ibytes, ix.dtype, c0) != 0) return refuse(std::string(cname) + " of batch " + Num(b) + " does not start at 0");
      if (at(ibytes, ix.dtype, c0 + ncompressed - 1) != static_cast<int64_t>(nnz)) {
        return refuse(std::string(cname) + " of batch " + Num(b) + " does not end at nnz " + Num(nnz));
      }
      for (uint64_t i = 1; i < ncompressed; ++i) {
        const int64_t lo = at(ibytes, ix.dtype, c0 + i - 1);
        const int64_t hi = at(ibytes, ix.dtype, c0 + i);
        if (hi > static_cast<int64_t>(nnz)) {
          // Checked before the plain indices of the slice are read: they end at nnz.
          return refuse(std::string(cname) + "[" + Num(c0 + i) + "] = " + std::to_string(hi) + " is past nnz " +
                        Num(nnz));
        }
        if (hi < lo || hi - lo > nplain) {
          return refuse(std::string(cname) + "[" + Num(c0 + i) + "] - " + cname + "[" + Num(c0 + i - 1) + "] = " +
                        std::to_string(hi - lo) + " is not in [0, " + std::to_string(nplain) + "]");
        }
        for (int64_t k = lo; k < hi; ++k) {
          const int64_t v = at(pbytes, px.dtype, p0 + static_cast<uint64_t>(k));
          if (v < 0 || v >= nplain) {
            return refuse(std::string(pname) + "[" + Num(p0 + static_cast<uint64_t>(k)) + "] = " + std::to_string(v) +
                          " is out of range [0, " + std::to_string(nplain) + ")");
          }
          if (k > lo && at(pbytes, px.dtype, p0 + static_cast<uint64_t>(k) - 1) >= v) {
            return refuse(std::string(pname) + " are not sorted and distinct within " + cname + "[" + Num(c0 + i - 1) +
                          "]:" + cname + "[" + Num(c0 + i) + "]");
          }
        }
      }
    }
  }
  return OkStatus();
}

namespace {

// --- a torch zip's data.pkl run beside its container ------------------------
//
// Opening a torch.save archive of many records (every local header checked
// against the directory, every entry examined for a hidden pickle or archive)
// takes a third of its load, and running data.pkl the rest; the run needs
// only the directory. With LoadOptions::threads > 1, the container is opened
// on a second thread while this one runs data.pkl against a directory-only
// container (DirectoryOnlyTorchZip), with a budget of its own. The run is
// kept only when the opened container agrees with the directory-only one on
// everything the run can read (SameTorchZip: format, prefix, the data.pkl
// source, every entry's name, method, sizes and data offset, no anomaly)
// and the two budgets together stay within the file's limits; otherwise it
// is dropped and data.pkl runs again against the container, as with one
// thread. Either way the Checkpoint is the same (tests compare both on
// every corpus file).

// DirectoryOnlyTorchZip is the container the load of a torch zip reads, made
// from the central directory and the local headers alone; nullopt when the
// bytes are not plainly one (not a zip, no prefix, no stored data.pkl, a
// compressed entry: the container's own reading decides those).
// ZipPrefix is the folder torch takes a zip's records from: the first
// entry's, up to its first '/'; nullopt when it has none (torch refuses
// the archive).
std::optional<std::string> ZipPrefix(std::span<const ZipEntry> entries) {
  if (entries.empty()) return std::nullopt;
  const size_t slash = entries.front().name.find('/');
  if (slash == std::string::npos || slash == 0) return std::nullopt;
  return entries.front().name.substr(0, slash);
}

// TorchDataPickleIn is the data.pkl a torch zip's load would run when the
// archive `zip` is plainly one (DirectoryOnlyTorchZip decides), found from
// its directory alone.
std::optional<Bytes> TorchDataPickleIn(const ZipArchive& zip) {
  const std::optional<std::string> prefix = ZipPrefix(zip.entries());
  if (!prefix) return std::nullopt;
  const std::string pickle_name = *prefix + "/data.pkl";
  for (auto e = zip.entries().rbegin(); e != zip.entries().rend(); ++e) {
    if (e->name != pickle_name) continue;
    if (e->method != kZipMethodStored) return std::nullopt;
    Result<Bytes> data = zip.StoredData(*e);
    return data ? std::optional<Bytes>(*data) : std::nullopt;
  }
  return std::nullopt;
}

// ScanTorchDataPickleAhead scans the memo reads of `pickle` (the data.pkl
// TorchDataPickleIn found, when it found one), for a run with at most
// `max_ops` opcodes; no scan (the run scans for itself) when there is none
// or anything fails.
MemoReadsScan ScanTorchDataPickleAhead(std::optional<Bytes> pickle, const PickleLimits& limits, uint64_t max_ops) {
  try {
    if (pickle) return ScanMemoReadsAhead(*pickle, limits, max_ops);
  } catch (...) {
  }
  return MemoReadsScan{};
}
// DirectoryOnlyTorchZip takes the entries of `zip` (the directory of
// `bytes`, which must be in `zip` too) into the container described above.
std::optional<Container> DirectoryOnlyTorchZip(Bytes bytes, ZipArchive zip) {
  std::optional<std::string> prefix = ZipPrefix(zip.entries());
  if (!prefix) return std::nullopt;
  Container c;
  c.format = ContainerFormat::kTorchZip;
  c.bytes = bytes;
  c.prefix = std::move(*prefix);
  const std::string data_dir = c.prefix + "/data/";
  const std::string pickle_name = c.prefix + "/data.pkl";
  std::optional<size_t> pickle;
  // The entries are moved, names and all, out of the archive (which still
  // reads their local headers).
  BulkVector<ZipEntry> entries = zip.ReleaseEntries();
  const size_t key_limit = RecordKeyLimit(entries.size());
  c.entries.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].method != kZipMethodStored) return std::nullopt;
    Result<uint64_t> offset = zip.DataOffset(entries[i]);
    const ContainerEntry& e =
        c.entries.emplace_back(ContainerEntry{std::move(entries[i]), offset ? std::optional<uint64_t>(*offset) : std::nullopt,
                                              std::nullopt, false, std::nullopt});
    if (e.zip.name == pickle_name) pickle = i;
    // The loader finds numbered records without the index (LoadTorchZip).
    if (!NumberedRecord(e.zip.name, data_dir, key_limit)) c.entry_index.Set(e.zip.name, i);
  }
  if (!pickle || !c.entries[*pickle].data_offset) return std::nullopt;
  const ContainerEntry& p = c.entries[*pickle];
  const uint64_t offset = *p.data_offset;
  c.entries[*pickle].holds_pickle = true;
  c.pickles.push_back(PickleSource{p.zip.name, bytes.subspan(static_cast<size_t>(offset), static_cast<size_t>(p.zip.compressed_len)),
                                   0, offset, false, 0, false, std::nullopt, {}});
  return c;
}

// SameTorchZip: the container as opened reads, for a torch zip's load,
// exactly what the directory-only one does.
bool SameTorchZip(const Container& opened, const Container& directory_only) {
  if (opened.format != ContainerFormat::kTorchZip || opened.error || !opened.anomalies.empty() ||
      opened.prefix != directory_only.prefix || opened.bytes.data() != directory_only.bytes.data() ||
      opened.bytes.size() != directory_only.bytes.size() || opened.entries.size() != directory_only.entries.size()) {
    return false;
  }
  for (size_t i = 0; i < opened.entries.size(); ++i) {
    const ContainerEntry& a = opened.entries[i];
    const ContainerEntry& b = directory_only.entries[i];
    if (a.data_offset != b.data_offset || a.zip.method != b.zip.method || a.zip.compressed_len != b.zip.compressed_len ||
        a.zip.uncompressed_len != b.zip.uncompressed_len || a.zip.local_header_offset != b.zip.local_header_offset ||
        a.zip.name != b.zip.name || a.inflated) {
      return false;
    }
  }
  const PickleSource* x = TorchDataPickle(opened);
  const PickleSource* y = TorchDataPickle(directory_only);
  return x != nullptr && y != nullptr && x->entry == y->entry && x->data.data() == y->data.data() &&
         x->data.size() == y->data.size() && x->start == y->start && x->file_offset == y->file_offset;
}

}  // namespace

Result<Checkpoint> LoadCheckpointImpl(MappedFile file, Bytes data, const LoadOptions& options) {
  const BulkReuse reuse;
  auto state = std::make_unique<Checkpoint::State>();
  state->file = std::move(file);
  state->limits = options.limits.Clamped();
  state->budget = Budget(options.budget);
  const Bytes bytes = state->file.data().empty() ? data : state->file.data();
  // A large zip: its container is opened on a second thread while this one
  // runs data.pkl (see DirectoryOnlyTorchZip above); `beside` is that run.
  // Or, by default, the second thread only scans data.pkl's memo reads while
  // this one opens the container; `ahead` is that scan.
  std::unique_ptr<Checkpoint::State> beside;
  bool beside_ok = false;
  MemoReadsScan ahead;
  const bool parallel = options.threads > 1 && bytes.size() >= options.parallel_min_bytes && LooksLikeZip(bytes);
  if (parallel && !options.run_beside_container) {
    // The most opcodes the run can have: the container's charges only lower it.
    Budget fresh(options.budget);
    fresh.SetFileSize(bytes.size());
    // The second thread reads the directory to find data.pkl; with it, it
    // first compares Python's zipfile's reading with torch's reader's, which
    // the container then need not make (ContainerAhead), then scans data.pkl.
    std::promise<bool> zipfile_same;
    ContainerAhead container_ahead{.file = bytes, .num_entries = 0, .zipfile_same = zipfile_same.get_future().share()};
    std::optional<std::jthread> scanner;
    try {
      scanner.emplace([&] {
        const BulkReuse reuse;
        std::optional<Bytes> pickle;
        bool published = false;
        try {
          const ZipLimits zip_limits = options.container.Clamped().zip;
          Result<ZipArchive> zip = ZipArchive::Open(bytes, zip_limits);
          if (zip) {
            container_ahead.num_entries = zip->entries().size();
            zipfile_same.set_value(ZipfileReadsAsTorch(bytes, zip_limits, *zip));
            published = true;
            pickle = TorchDataPickleIn(*zip);
          }
        } catch (...) {
        }
        if (!published) zipfile_same.set_value(false);  // not known: the container reads it itself
        ahead = ScanTorchDataPickleAhead(std::move(pickle), state->limits.pickle, fresh.remaining(BudgetKind::kOpcodes));
      });
    } catch (const std::system_error&) {
      // No thread to be had: the container and the run do it all.
    }
    state->container = OpenContainer(bytes, options.container, &state->budget, scanner ? &container_ahead : nullptr);
  } else if (parallel) {
    std::exception_ptr container_error;
    // The run's budget, fresh: what the memo scan ahead must assume.
    Budget beside_budget(options.budget);
    beside_budget.SetFileSize(bytes.size());
    // This thread reads the directory; the other first scans data.pkl's
    // memo reads (the run's first step) while this one makes the
    // directory-only container, then opens the container.
    Result<ZipArchive> directory = ZipArchive::Open(bytes, options.container.Clamped().zip);
    const std::optional<Bytes> pickle = directory ? TorchDataPickleIn(*directory) : std::nullopt;
    std::promise<MemoReadsScan> scanned;
    std::future<MemoReadsScan> memo_reads = scanned.get_future();
    {
      std::jthread opener([&] {
        scanned.set_value(ScanTorchDataPickleAhead(pickle, state->limits.pickle,
                                                   beside_budget.remaining(BudgetKind::kOpcodes)));
        try {
          state->container = OpenContainer(bytes, options.container, &state->budget);
          // What the container read need not stay resident (as below); the
          // run reads only data.pkl again.
          state->file.DropResident();
        } catch (...) {
          container_error = std::current_exception();
        }
      });
      std::optional<Container> directory_only;
      if (pickle) directory_only = DirectoryOnlyTorchZip(bytes, std::move(*directory));
      if (directory_only) {
        beside = std::make_unique<Checkpoint::State>();
        beside->limits = state->limits;
        beside->budget = beside_budget;
        beside->container = std::move(*directory_only);
        const MemoReadsScan scan = memo_reads.get();
        beside_ok = static_cast<bool>(Loader(*beside, options, &scan).Load());
      }
    }  // joins the opener
    if (container_error) std::rethrow_exception(container_error);
  } else {
    state->container = OpenContainer(bytes, options.container, &state->budget);
  }
  const Container& c = state->container;
  // A file that changed while it was read explains any error its bytes gave.
  auto fail = [&](Error e) -> Result<Checkpoint> {
    CKG_TRY(state->file.CheckUnchanged());
    return std::unexpected(std::move(e));
  };
  if (c.error) return fail(*c.error);
  if (!options.allow_anomalies && !c.anomalies.empty()) {
    // A hostile file usually carries its payload in a pickle: name the global
    // it imports first (running each pickle in the VM, which calls nothing).
    if (std::optional<Error> forbidden = FindForbiddenGlobal(c, options, state->budget)) {
      forbidden->detail += " (the container also has anomaly " + c.anomalies.front().kind + ")";
      return fail(std::move(*forbidden));
    }
    const Anomaly& a = c.anomalies.front();
    return fail(MakeError(ErrorCode::kMalformed, a.offset,
                     "container anomaly " + a.kind + ": " + a.detail +
                         (c.anomalies.size() > 1 ? " (and " + Num(c.anomalies.size() - 1) + " more; see 'ckptguard info')"
                                                 : std::string()),
                     a.entry).error());
  }
  // The directory, headers and records read to open the container need not
  // stay in this process's memory: what a load keeps resident is what it
  // views (the pickles, then whatever tensors the caller reads).
  state->file.DropResident();
  if (beside_ok && SameTorchZip(c, beside->container) && state->budget.TryAbsorb(beside->budget)) {
    state->vm = std::move(beside->vm);
    state->root = beside->root;
    state->notes = std::move(beside->notes);
    state->buffers = std::move(beside->buffers);
    state->ran_beside_container = true;
  } else {
    beside.reset();
    Loader loader(*state, options, ahead.data != nullptr ? &ahead : nullptr);
    if (Status loaded = loader.Load(); !loaded) return fail(std::move(loaded).error());
    state->scanned_ahead = ahead.used;
  }
  beside.reset();
  CKG_TRY(state->file.CheckUnchanged());
  Checkpoint out(std::move(state));
  if (Status converted = ConvertCooIndices(*out.state_, out); !converted) {
    CKG_TRY(out.CheckUnchanged());
    return std::unexpected(std::move(converted).error());
  }
  if (Status sparse = CheckSparseIndices(out); !sparse) {
    CKG_TRY(out.CheckUnchanged());
    return std::unexpected(std::move(sparse).error());
  }
  if (Status nested = CheckNestedViews(out); !nested) {
    CKG_TRY(out.CheckUnchanged());
    return std::unexpected(std::move(nested).error());
  }
  return out;
}

// TrimBulkCacheAtEnd: what a dropped checkpoint left for this load and it
// did not take is given back when the load returns (BulkReuse).
struct TrimBulkCacheAtEnd {
  ~TrimBulkCacheAtEnd() { TrimBulkCache(); }
};

Result<Checkpoint> LoadCheckpoint(const std::string& path, const LoadOptions& options) {
  const TrimBulkCacheAtEnd trim;
  try {
    CKG_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path, options.file));
    return LoadCheckpointImpl(std::move(file), {}, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory", path);
  }
}

Result<Checkpoint> LoadCheckpointBytes(Bytes data, const LoadOptions& options) {
  const TrimBulkCacheAtEnd trim;
  try {
    return LoadCheckpointImpl(MappedFile(), data, options);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory");
  }
}

}  // namespace ckptguard

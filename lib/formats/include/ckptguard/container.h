// OpenContainer: what a model file is, decided by content the way torch,
// numpy and safetensors decide it, with every anomaly a strict reader sees.
//
// Detection order: a zip when the file starts with PK\x03\x04 (torch's own
// test; then torchscript, torch-zip, numpy-zip or plain zip by its entries);
// numpy when it starts with \x93NUMPY; gzip, bzip2 and xz wrappers are
// unwrapped (bounded) and their content detected in turn; safetensors when
// the first 8 bytes are a header length that fits and JSON follows; a pickle
// stream otherwise (legacy torch when its first pickle is the magic number or
// its second the protocol 1001); else unknown, with the reason. A file (not
// a nested one: torch.jit.load reads files) with "PTMF" at bytes 4..7 is a
// TorchScript flatbuffer module, as torch.jit.load decides before anything
// else: torchscript-flatbuffer when it is nothing else, a
// polyglot.torchscript_flatbuffer anomaly beside the other format otherwise. A file that is
// two things at once (a pickle with a zip appended, a pickle that is also a
// safetensors file, a zip inside a pickle's bytes) is reported as what torch
// reads, plus a "polyglot.*" anomaly and the other reading as a nested
// container.
#ifndef CKPTGUARD_CONTAINER_H_
#define CKPTGUARD_CONTAINER_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/budget.h"
#include "ckptguard/bulk_allocator.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/npy_reader.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/safetensors_reader.h"
#include "ckptguard/storage_refs.h"
#include "ckptguard/torch_legacy.h"
#include "ckptguard/zip_reader.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// The kinds, named as the corpus's .expect.json files name them.
enum class ContainerFormat : uint8_t {
  kTorchZip,     // torch.save since 1.6: <prefix>/data.pkl + data/<key> records
  kTorchLegacy,  // five pickles, then raw storage records
  kTorchScript,  // torch.jit.save: a zip with constants.pkl and code/ (or a mobile module's bytecode.pkl)
  kSafetensors,  // u64 header length, JSON header, raw data
  kNumpy,        // .npy
  kNumpyZip,     // .npz: a zip of .npy members
  kPickle,       // a plain pickle stream
  kZip,          // any other zip
  kZipSequence,  // zip archives back to back (a torch.distributed.checkpoint .distcp file): each
                 // is a nested container "@<offset>", read as a file of its own
  kTorchScriptFlatbuffer,  // a TorchScript module in torch's flatbuffer format ("PTMF" at bytes 4..7, which
                           // torch.jit.load and _load_for_lite_interpreter test before anything else)
  kUnknown,      // none of these; `reason` says why
};

// ContainerFormatName: "torch-zip", "torch-legacy", "torchscript", ...
std::string_view ContainerFormatName(ContainerFormat format);

// kZlib: a raw zlib stream (joblib's compress='zlib'); kLzmaAlone: the old
// .lzma format (lzma.open reads it as well as xz).
// kJoblibZf: joblib's pre-0.10 compressed format ("ZF", a hex length, zlib
// data), which joblib.load still reads.
enum class Wrapper : uint8_t { kGzip, kBzip2, kXz, kZlib, kLzmaAlone, kJoblibZf };
std::string_view WrapperName(Wrapper wrapper);  // "gzip", "bzip2", "xz", "zlib", "lzma", "joblib-zf"

struct ContainerLimits {
  ZipLimits zip;
  PickleLimits pickle;
  SafetensorsLimits safetensors;
  NpyLimits npy;
  // Largest decompressed size of a gzip/bzip2/xz wrapper. Default 4 GiB;
  // ceiling 2^40. The ratio limit of `zip` applies to wrappers too.
  uint64_t max_unwrapped_len = uint64_t{4} << 30;
  // Deepest nesting of wrappers and archives inside archives. Default 4;
  // ceiling 16. Deeper content is reported, not opened.
  uint32_t max_depth = 4;
  // Most containers opened inside one file, all depths together (archives in
  // archives, wrappers, polyglot readings). Default 256; ceiling 65,536. More
  // are reported (container.too_many), not opened.
  uint64_t max_nested = 256;
  // Longest TorchScript code file (code/**/*.py) tokenized to find the
  // builtins it calls that open files (torchscript.file_builtin). Tokens
  // take 12 bytes per byte at most. Default 64 MiB (torch.jit.save writes a
  // few KB to a few MB per file); ceiling 1 GiB. A longer file is reported
  // (torchscript.unchecked_code), not read.
  uint64_t max_torchscript_code_len = uint64_t{64} << 20;
  // Decode a torch archive's data.pkl here to check every data/<key> record
  // against its persistent ids (torch.missing_record, record_size_mismatch,
  // unlisted_record). Default on; the loader turns it off because its VM
  // checks each record it resolves.
  bool check_torch_records = true;

  ContainerLimits Clamped() const;
};

// PickleSource is one run of bytes that holds one or more pickles.
// OffsetRun: bytes rebuilt from pieces of a file (a joblib reading without
// its FRAME headers and inline arrays) starting at `view` came from `source`.
struct OffsetRun {
  uint64_t view = 0;
  uint64_t source = 0;
};

// SourceOffset maps an offset in rebuilt bytes back through `runs` (sorted
// by `view`); with no runs the offset is returned as is.
uint64_t SourceOffset(std::span<const OffsetRun> runs, uint64_t offset);

struct PickleSource {
  std::string entry;       // zip entry name (central directory); empty for the stream itself
  Bytes data;              // the entry's (inflated) data, or the container's bytes
  uint64_t start = 0;      // offset in `data` of the first pickle
  // Where data[0] sits in the container's bytes: set for the stream itself
  // and for stored entries, unset for inflated ones.
  std::optional<uint64_t> file_offset;
  bool deflated = false;
  uint32_t max_pickles = 0;  // 5 for legacy torch (records follow); 0 = until the data ends
  // Found by content only (an entry whose bytes start with a PROTO opcode but
  // whose name says nothing): it may be tensor data that happens to start
  // with those bytes, so a parse error there is not a finding by itself.
  bool sniffed = false;
  // Set when an earlier source (this index in Container::pickles) holds the
  // very same bytes: a zip whose directory names one member several times.
  // Readers that judge content (the scanner) read it once.
  std::optional<size_t> same_as;
  // `data` is rebuilt from pieces (a joblib reading): where each piece sits
  // in the container's bytes, or in the entry's data when `file_offset` is
  // unset (SourceOffset). Empty for bytes read as they are.
  std::vector<OffsetRun> offset_map;
};

// ContainerEntry is one zip entry as `info` shows it.
struct ContainerEntry {
  ZipEntry zip;
  std::optional<uint64_t> data_offset;  // unset when its local header is unreadable
  std::optional<bool> crc_ok;           // unset when it could not be checked
  bool holds_pickle = false;
  // A deflated entry's inflated bytes (in Container::buffers), set once the
  // container layer has inflated it, so that no reader inflates it again.
  std::optional<Bytes> inflated;
};

struct Container;

// EntryIndex maps zip entry names to their index in Container::entries; a
// name set twice keeps the later index. One string
// holds every name and an open-addressing table (at most half full) the
// items, so an archive of 100,000 records allocates a few blocks, not a hash
// node and a name per record. find(name) gives an item whose `second` is the
// index, or end() (as a map's find does).
class EntryIndex {
 public:
  struct Item {
    uint64_t name_offset = 0;  // in the index's name store
    uint32_t name_len = 0;     // a zip name is at most 65,535 bytes, a tar name a few KiB
    uint32_t second = 0;       // the entry's index in Container::entries (fewer than 2^32)
  };
  using const_iterator = const Item*;

  // Reserve makes room for `n` names of `name_bytes` bytes in all without
  // rehashing or regrowing.
  void Reserve(size_t n, size_t name_bytes = 0);
  // Set maps `name` to `index` (replacing an earlier index of that name).
  void Set(std::string_view name, size_t index);
  const_iterator find(std::string_view name) const;
  const_iterator end() const { return nullptr; }
  bool contains(std::string_view name) const { return find(name) != end(); }
  size_t size() const { return items_.size(); }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  std::string_view NameOf(const Item& item) const {
    return std::string_view(names_).substr(static_cast<size_t>(item.name_offset), static_cast<size_t>(item.name_len));
  }
  void Rehash(size_t table_len);

  std::string names_;
  BulkVector<Item> items_;  // bulk_allocator.h: one per tensor of a checkpoint
  BulkVector<uint32_t> table_;  // indices into items_, kEmpty where free; length a power of two
};

// NestedContainer is a container found inside another: a zip entry that is
// itself a zip, the zip appended to a pickle, the content of a wrapper.
struct NestedContainer {
  std::string entry;  // entry name, or "@<offset>" for a container at a byte offset
  std::unique_ptr<Container> container;
};

// JoblibReading is joblib.load's reading of a pickle file whose
// NumpyArrayWrapper arrays follow their BUILDs inline (joblib >= 0.10):
// the opcodes it reads, without the array bytes, are the pickle source
// `pickle` (in Container::pickles); each wrapper BUILD there reads the next
// of `arrays`.
struct JoblibReading {
  struct Array {
    Bytes data;  // the array's bytes (empty for an object array)
    std::optional<uint64_t> file_offset;  // where they start in the container's bytes (unset when inflated)
    // Its data is a pickle joblib runs (an object dtype, or one not worked out).
    bool object = false;
  };
  size_t pickle = 0;
  std::vector<Array> arrays;
  // Read to its STOP with every array known; `end` is where that STOP ends
  // in the stream's data (what follows is not read by joblib.load).
  bool complete = false;
  uint64_t end = 0;
};

struct Container {
  ContainerFormat format = ContainerFormat::kUnknown;
  std::string reason;              // for kUnknown: why; otherwise empty
  // kUnknown only: a tar or 7z archive read to its end, each member opened
  // as a file of its own (in `nested`). No loader reads the archive itself;
  // its members are what a user unpacks and loads.
  bool archive = false;
  std::vector<Wrapper> wrappers;   // outermost first; offsets below are in the unwrapped bytes
  Bytes bytes;                     // the bytes the format was found in
  std::string prefix;              // torch zip/torchscript archive prefix, without the '/'
  BulkVector<ContainerEntry> entries;  // zip entries, directory order
  // Entry name -> index in `entries`; with duplicate names, the later entry
  // (the one Python's zipfile reads), but in a torch archive the one torch's
  // reader finds (NamesRepeat).
  EntryIndex entry_index;
  std::vector<PickleSource> pickles;    // every place holding pickles
  std::optional<LegacyCheckpoint> legacy;
  std::optional<SafetensorsFile> safetensors;
  std::optional<NpyArray> npy;
  std::vector<std::pair<std::string, NpyArray>> npz_members;  // numpy-zip: entry -> array
  std::vector<NestedContainer> nested;
  // kPickle: joblib.load's reading of the stream, when it reads arrays inline.
  std::optional<JoblibReading> joblib;
  Anomalies anomalies;
  // The problem that stopped reading, when the detected format could not be
  // read completely (what was read before it is kept).
  std::optional<Error> error;
  // Inflated and unwrapped data that `bytes`, `pickles` and nested containers may view.
  std::vector<std::unique_ptr<std::string>> buffers;
};

// CheckStorageRecord checks one storage persistent id of a torch archive's
// data.pkl against its record <prefix>/data/<key>: torch.missing_record when
// there is none (at `pid_offset`), torch.record_size_mismatch when the record
// does not hold numel x element-size bytes. nullopt when it is fine or the
// storage type is unknown (the loader refuses those by name).
std::optional<Anomaly> CheckStorageRecord(const Container& c, const StorageRef& ref, uint64_t pid_offset);
// The same with the persistent id's parts as views and the record already
// looked up: `record_index` is the index in c.entries of `name`
// (<prefix>/data/<key>; nullopt: the archive has none). The scanner checks
// one storage per tensor this way without building a StorageRef.
std::optional<Anomaly> CheckStorageRecord(const Container& c, std::optional<size_t> record_index, std::string_view name,
                                          std::string_view module, std::string_view storage_type, std::string_view key,
                                          int64_t numel, uint64_t pid_offset);

// NamesRepeat: `c`'s zip names some entry more than once as torch's reader
// looks names up (zip.duplicate_name or zip.case_duplicate_name). Its
// entry_index then maps each name to the entry that reader finds
// (MinizLocate) in a torch archive, and a loader must look names up there.
bool NamesRepeat(const Container& c);

// ForEachContainer calls `fn` on `root` and then on every nested container,
// depth first, with the entry names that lead to it joined by " > " ("" for
// the root). Iterative: no recursion however deep the nesting.
void ForEachContainer(const Container& root,
                      const std::function<void(const Container&, const std::string& path)>& fn);

// OpenContainer reads `file` (which must outlive the result). It does not
// fail: unreadable content gives kUnknown or a format with `error` set.
// Nesting is bounded by limits.max_depth. Every byte inflated or unwrapped,
// every opcode decoded and every level of nesting is charged to `budget`, the
// file's (nullptr: a budget of this call alone with default limits); when it
// runs out, `error` names the limit.
Container OpenContainer(Bytes file, const ContainerLimits& limits = {}, Budget* budget = nullptr);

// ContainerAhead is work on a zip that OpenContainer would do, done by a
// caller on another thread while OpenContainer runs (LoadCheckpoint's second
// thread, which reads the zip's directory anyway to find data.pkl). It is
// made from ZipArchive::Open(file, limits.Clamped().zip) of the `file` and
// `limits` later given to OpenContainer; OpenContainer uses it only for that
// file, and only where its own reading of the directory has the same number
// of entries (the same function of the same bytes and limits gives the same
// entries), and otherwise does the work itself.
struct ContainerAhead {
  Bytes file;
  // The number of entries of that reading; set before `zipfile_same` is.
  size_t num_entries = 0;
  // ZipfileReadsAsTorch of that reading: true when Python's zipfile reads
  // the archive as torch's reader does. false means "not known": the
  // container makes zipfile's reading itself. OpenContainer waits for it.
  std::shared_future<bool> zipfile_same;
};
// OpenContainer with work done ahead (nullptr: none).
Container OpenContainer(Bytes file, const ContainerLimits& limits, Budget* budget, const ContainerAhead* ahead);

// ZipfileReadsAsTorch: Python's zipfile (ZipArchive::ZipfileReadsAs) reads
// `file` as exactly the entries of `zip`, torch's reader's reading of it
// (ZipArchive::Open(file, limits)): the same names, offsets, sizes, methods
// and flags, in the same order, from offset 0.
bool ZipfileReadsAsTorch(Bytes file, const ZipLimits& limits, const ZipArchive& zip);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_CONTAINER_H_

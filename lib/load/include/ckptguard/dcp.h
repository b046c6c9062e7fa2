// torch.distributed.checkpoint (DCP) folders, as torch 2.x's
// FileSystemWriter writes them and FileSystemReader reads them:
//
//   .metadata       pickle.dump of a Metadata dataclass: state_dict_metadata
//                   (fqn -> TensorStorageMetadata(properties, size, chunks) or
//                   BytesStorageMetadata()) and storage_data (MetadataIndex(fqn,
//                   chunk offsets) -> _StorageInfo(relative_path, offset, length))
//   __0_0.distcp    each write item of rank 0 appended: a value as the bytes of
//   __1_0.distcp    torch.save(value), a tensor chunk as torch.save(chunk); so a
//   ...             file is torch archives back to back
//
// torch reads .metadata with pickle.load and each item with torch.load of its
// byte range; a state dict saved with the default planner has dotted keys
// ("model.fc.weight", "optim.param_groups"). Here .metadata is loaded by the
// VM as declared records (nothing is called), every item's range by
// LoadCheckpointBytes, and a tensor saved in chunks (one per rank of an FSDP
// or DTensor shard) is assembled from them on demand.
#ifndef CKPTGUARD_DCP_H_
#define CKPTGUARD_DCP_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/checkpoint.h"
#include "ckptguard/verify.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// DcpLimits bounds what a .metadata may ask for.
struct DcpLimits {
  // Most entries (tensors and values) and most storage items. Default
  // 10,000,000 each.
  uint64_t max_entries = 10'000'000;
  uint64_t max_items = 10'000'000;
  // Most chunks of one tensor. Default 65,536 (a tensor sharded over that
  // many ranks); they are checked for overlap by a sweep along the
  // dimension they split most.
  uint64_t max_chunks = 65'536;
};

// IsDcpFolder: `path` is a folder holding a `.metadata` file.
bool IsDcpFolder(const std::string& path);

// DcpKeyUnder: the part of a DCP key below a dotted `prefix` ("model" and
// "model.fc.weight" give "fc.weight"), "" for the key equal to it, the key
// itself for an empty prefix; nullopt for a key elsewhere. The default
// planner flattens nested dicts to dotted keys, so a prefix selects a
// sub-dict. (A trailing '.' of the prefix is the caller's to strip.)
std::optional<std::string_view> DcpKeyUnder(std::string_view fqn, std::string_view prefix);

// DcpChunk is one saved chunk of a tensor: where it sits in the whole tensor
// and the archive (index into DcpCheckpoint::archives()) whose root tensor
// holds it.
struct DcpChunk {
  Dims offsets;
  Dims sizes;
  uint32_t archive = 0;
};

// DcpEntry is one key of the saved state dict.
struct DcpEntry {
  std::string fqn;
  bool is_tensor = false;
  // Tensors: dtype, size and chunks (as .metadata declares them and every
  // chunk's archive agrees).
  DType dtype = DType::kFloat32;
  Dims size;
  std::vector<DcpChunk> chunks;
  // Values (BytesStorageMetadata): the archive whose root is the value.
  uint32_t archive = 0;
};

// DcpArchive is where one item's torch archive lies.
struct DcpArchive {
  std::string file;  // relative to the folder
  uint64_t offset = 0;
  uint64_t length = 0;
};

// DcpItemKey is a MetadataIndex as torch hashes and compares it: the key and
// the chunk's offsets (none for a value); its `index` is left out of both.
using DcpItemKey = std::pair<std::string, std::optional<std::vector<int64_t>>>;

// DcpMetadata is what a .metadata declares: every key (the chunks' `archive`
// not yet set) and where each item lies.
struct DcpMetadata {
  std::vector<DcpEntry> entries;
  std::map<DcpItemKey, DcpArchive> items;  // a later equal key wins, as in the dict pickle.load builds
};

// ReadDcpMetadata reads the Metadata record of a loaded .metadata (records
// on): errors as LoadDcpCheckpoint's about .metadata (not a Metadata,
// chunks that overlap, leave the tensor or do not cover it, a limit). Item
// paths are kept as written, even one that leaves the folder
// (PathLeavesFolder: LoadDcpCheckpoint refuses it, the scanner reports it).
Result<DcpMetadata> ReadDcpMetadata(const Checkpoint& metadata, const DcpLimits& limits = {});

class DcpCheckpoint {
 public:
  DcpCheckpoint(DcpCheckpoint&&) noexcept;
  DcpCheckpoint& operator=(DcpCheckpoint&&) noexcept;
  ~DcpCheckpoint();

  const std::filesystem::path& folder() const;
  // The .metadata as the VM loaded it (records).
  const Checkpoint& metadata() const;
  // Every key, in .metadata's order.
  const std::vector<DcpEntry>& entries() const;
  // Every item's archive, each (file, offset, length) once, and its load
  // (zero-copy views of the mapped .distcp file).
  const std::vector<DcpArchive>& archive_refs() const;
  const std::vector<Checkpoint>& archives() const;
  // SingleTensor: the tensor of an entry saved whole (one chunk covering
  // it): its archive and tensor index; nullptr when it was saved in chunks.
  const Checkpoint* SingleTensor(size_t entry, uint32_t* tensor) const;
  // ContiguousBytes is the whole tensor of entry `entry` in C order (its
  // chunks assembled), as Checkpoint::ContiguousBytes; Sha256Hex its digest.
  Result<std::vector<uint8_t>> ContiguousBytes(size_t entry) const;
  Result<std::string> Sha256Hex(size_t entry) const;
  // CheckUnchanged: no file changed while it was read.
  Status CheckUnchanged() const;

  struct State;

 private:
  friend Result<DcpCheckpoint> LoadDcpCheckpoint(const std::string& folder, const LoadOptions& options,
                                                 const DcpLimits& limits);
  explicit DcpCheckpoint(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// LoadDcpCheckpoint loads a DCP folder. Errors name the folder's file and
// the key: .metadata's load errors (a forbidden global in it is
// kForbiddenGlobal, as in any pickle); kMalformed for a .metadata that is not
// a DCP Metadata, an item path that leaves the folder (kInvalidArgument), a
// missing file (kIo), a range past a file's end, an archive that does not
// hold what .metadata says (not one tensor of the declared dtype and chunk
// size), chunks that overlap or leave the tensor or do not cover it; an
// item's load error with its file and offset; kUnsupportedFormat for items
// stored with transforms (torch >= 2.7's compression).
Result<DcpCheckpoint> LoadDcpCheckpoint(const std::string& folder, const LoadOptions& options = {},
                                        const DcpLimits& limits = {});

// DcpProgress reads the training progress of a DCP folder: its top-level
// "global_step" (else "step") and "epoch" values (ints; an epoch may be a
// float).
Progress DcpProgress(const DcpCheckpoint& dcp);

// VerifyDcpCheckpoint checks a DCP folder whole: .metadata, every archive
// with all its CRCs, every tensor assembled and read to its last byte.
// `format` is "dcp"; problems name the file ("__0_0.distcp@1609") and key;
// progress is read from the top-level "global_step"/"step" and "epoch"
// values.
VerifyReport VerifyDcpCheckpoint(const std::string& folder, const LoadOptions& options = {});
// This VerifyDcpCheckpoint also hands the loaded folder to `on_loaded`
// (before its tensors are read), as VerifyCheckpoint does; it is not called
// when the folder does not load.
VerifyReport VerifyDcpCheckpoint(const std::string& folder, const LoadOptions& options,
                                 const std::function<void(const DcpCheckpoint&)>& on_loaded);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_DCP_H_

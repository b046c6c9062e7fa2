// TorchZipBytes / WriteTorchZip: write a checkpoint in the zip layout
// torch.save produces (torch >= 1.6), so that torch.load(weights_only=True)
// and our own LoadCheckpoint read it back.
//
// The caller describes what to save as a SaveTree: an arena of SaveValues
// (None, bool, int, big int, float, str, bytes, list, tuple, dict,
// OrderedDict, tensor) referring to each other by SaveId, plus a table of
// tensors (strided views) and a table of storages (the raw little-endian
// data). Views that share a storage are written as views of one record, so
// sharing and strides survive the round trip. SaveTreeFromCheckpoint builds a
// tree from a loaded Checkpoint, which is how `convert` re-saves a file.
//
// What is written (the layout torch.save writes; torch/serialization.py):
//   <archive>/data.pkl        pickle protocol 2 naming only allowlisted globals
//                             (torch._utils._rebuild_tensor_v2,
//                             torch._utils._rebuild_parameter, torch.<X>Storage,
//                             collections.OrderedDict, _codecs.encode,
//                             __builtin__.bytes)
//   <archive>/byteorder       "little" (torch 2.x reads it, 1.x ignores it)
//   <archive>/data/<key>      one stored record per storage, keys "0", "1"...
//                             in order of first use, written in sorted order
//   <archive>/version         "3\n"
// Every entry is stored (no compression) with its data aligned to 64 bytes by
// an 'FB' extra field of padding, as torch's writer does; the zip has correct
// CRC-32s and sizes in the local headers (no data descriptors), a central
// directory and an end record, and zip64 fields and records only when a size,
// an offset or the entry count needs them.
#ifndef CKPTGUARD_TORCH_WRITER_H_
#define CKPTGUARD_TORCH_WRITER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

class Checkpoint;

using SaveId = uint32_t;

enum class SaveKind : uint8_t {
  kNone,
  kBool,         // bool_value
  kInt,          // int_value
  kBigInt,       // text: decimal digits with an optional leading '-' (any size)
  kFloat,        // float_value (nan and infinities allowed)
  kStr,          // text, UTF-8 (written as is)
  kBytes,        // text holds the raw bytes
  kList,         // items
  kTuple,        // items
  kDict,         // items: key, value, key, value... in order
  kOrderedDict,  // as kDict; attrs: key, value... set by BUILD (state_dict()._metadata)
  kTensor,       // index into SaveTree::tensors
};

struct SaveValue {
  SaveKind kind = SaveKind::kNone;
  bool bool_value = false;
  int64_t int_value = 0;
  double float_value = 0.0;
  uint32_t index = 0;         // kTensor
  std::string text;           // kBigInt, kStr, kBytes
  std::vector<SaveId> items;  // kList, kTuple, kDict, kOrderedDict
  std::vector<SaveId> attrs;  // kOrderedDict only: instance attributes (key, value...)
};

// SaveStorage is one storage record. `data` holds num_elements x
// DTypeSize(dtype) bytes in little-endian order (bool: one 0/1 byte each). It
// is not owned: it must outlive every call that writes the tree (use
// SaveTree::AddOwnedStorage to let the tree own a buffer).
struct SaveStorage {
  DType dtype = DType::kFloat32;
  Bytes data;
};

// SaveTensor is a strided view of a storage exactly as torch describes it:
// element i0,i1,... is storage element storage_offset + sum(i_k * stride_k).
// `dtype` must equal the storage's dtype (torch 1.x typed storages).
struct SaveTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
  int64_t storage_offset = 0;
  uint32_t storage = 0;        // index into SaveTree::storages
  bool parameter = false;      // nn.Parameter (written via _rebuild_parameter)
  bool requires_grad = false;
};

// SaveTree is everything one file holds. Values refer to each other by
// SaveId, so a value may be shared (it is written once and then fetched from
// the pickle memo, as CPython's pickler does); a list or dict may even
// contain itself, but a cycle through a tuple is refused. The builder helpers
// append a value and return its id; `root` must be set before writing. A
// tree is move-only: its storages may view its own buffers (`owned`), which
// a copy would still point into.
struct SaveTree {
  SaveTree() = default;
  SaveTree(const SaveTree&) = delete;
  SaveTree& operator=(const SaveTree&) = delete;
  SaveTree(SaveTree&&) noexcept = default;
  SaveTree& operator=(SaveTree&&) noexcept = default;

  std::vector<SaveValue> values;
  SaveId root = 0;
  std::vector<SaveTensor> tensors;
  std::vector<SaveStorage> storages;
  // Buffers owned by the tree (AddOwnedStorage, byte-swapped storages); a
  // deque so that views into them stay valid as more are added and when the
  // tree is moved.
  std::deque<std::string> owned;

  SaveId Add(SaveValue value) {
    values.push_back(std::move(value));
    return static_cast<SaveId>(values.size() - 1);
  }
  SaveId None() { return Add(SaveValue()); }
  SaveId Bool(bool b) {
    SaveValue v = Of(SaveKind::kBool);
    v.bool_value = b;
    return Add(std::move(v));
  }
  SaveId Int(int64_t i) {
    SaveValue v = Of(SaveKind::kInt);
    v.int_value = i;
    return Add(std::move(v));
  }
  SaveId BigInt(std::string decimal) { return AddText(SaveKind::kBigInt, std::move(decimal)); }
  SaveId Float(double f) {
    SaveValue v = Of(SaveKind::kFloat);
    v.float_value = f;
    return Add(std::move(v));
  }
  SaveId Str(std::string utf8) { return AddText(SaveKind::kStr, std::move(utf8)); }
  SaveId ByteString(std::string raw) { return AddText(SaveKind::kBytes, std::move(raw)); }
  SaveId List(std::vector<SaveId> items) { return AddItems(SaveKind::kList, std::move(items)); }
  SaveId Tuple(std::vector<SaveId> items) { return AddItems(SaveKind::kTuple, std::move(items)); }
  // Dict / OrderedDict take key, value pairs in order.
  SaveId Dict(const std::vector<std::pair<SaveId, SaveId>>& pairs) { return AddDict(SaveKind::kDict, pairs); }
  SaveId OrderedDict(const std::vector<std::pair<SaveId, SaveId>>& pairs) {
    return AddDict(SaveKind::kOrderedDict, pairs);
  }
  // AddStorage appends a storage whose data the caller keeps alive.
  uint32_t AddStorage(SaveStorage storage) {
    storages.push_back(storage);
    return static_cast<uint32_t>(storages.size() - 1);
  }
  // AddOwnedStorage appends a storage whose bytes the tree owns.
  uint32_t AddOwnedStorage(DType dtype, std::string data) {
    owned.push_back(std::move(data));
    return AddStorage({dtype, AsBytes(owned.back())});
  }
  // Tensor appends a tensor and returns the value that refers to it.
  SaveId Tensor(SaveTensor tensor) {
    tensors.push_back(std::move(tensor));
    SaveValue v = Of(SaveKind::kTensor);
    v.index = static_cast<uint32_t>(tensors.size() - 1);
    return Add(std::move(v));
  }

 private:
  static SaveValue Of(SaveKind kind) {
    SaveValue v;
    v.kind = kind;
    return v;
  }
  SaveId AddText(SaveKind kind, std::string text) {
    SaveValue v = Of(kind);
    v.text = std::move(text);
    return Add(std::move(v));
  }
  SaveId AddItems(SaveKind kind, std::vector<SaveId> items) {
    SaveValue v = Of(kind);
    v.items = std::move(items);
    return Add(std::move(v));
  }
  SaveId AddDict(SaveKind kind, const std::vector<std::pair<SaveId, SaveId>>& pairs) {
    SaveValue v = Of(kind);
    for (const auto& [k, val] : pairs) {
      v.items.push_back(k);
      v.items.push_back(val);
    }
    return Add(std::move(v));
  }
};

// SaveLimits bounds one write: the tree comes from the caller, but it may be
// a loaded file's graph, so walks over it stay bounded.
struct SaveLimits {
  // Deepest nesting of containers. Default 1,000 (the loader's max_walk_depth,
  // so whatever we write we can read back).
  uint64_t max_depth = 1'000;
};

// SaveTreeFromCheckpoint builds a tree holding `ckpt`'s root value with the
// same structure, sharing, tensor views and storages. The storages view
// `ckpt`'s data (zero copy), so `ckpt` must outlive the tree; big-endian
// records are byte-swapped into buffers the tree owns (the writer writes
// little-endian), and an untyped storage (torch 2.x) is typed by the tensors
// viewing it (one copy per dtype when views of different dtypes share it).
// Failure: kUnsupportedFormat naming the value's path for kinds the writer
// cannot express (sets, complex scalars, dtypes, devices, globals, objects),
// kLimitExceeded for graphs deeper than limits.max_depth.
Result<SaveTree> SaveTreeFromCheckpoint(const Checkpoint& ckpt, const SaveLimits& limits = {});

// TorchZipBytes returns the bytes of a torch zip checkpoint holding `tree`
// (built in memory: the result is about as large as the storages together),
// with every entry under `archive_name`/ (torch.save uses "archive"; torch 1.x
// used the file's stem). Failure: kInvalidArgument for a bad tree (an id or
// storage index out of range, a view outside its storage, a tensor whose dtype
// differs from its storage's, a cycle through a tuple, an unhashable dict key,
// a malformed big int, an empty or '/'-containing archive name),
// kUnsupportedFormat naming the tensor's path for dtypes without a torch 1.x
// storage class (float8, uint16/32/64, quantized), kLimitExceeded for trees
// deeper than limits.max_depth or out of memory.
Result<std::string> TorchZipBytes(const SaveTree& tree, const std::string& archive_name = "archive",
                                  const SaveLimits& limits = {});

// VerifyTorchZip loads `file` with LoadCheckpointBytes and checks that it
// holds `tree`'s tensors in the order the writer emits them, with the same
// dtype, shape, stride, offset, parameter and requires_grad flags and SHA-256
// of the elements. Failure: the load's error, TorchZipBytes' errors for a bad
// tree, or kInternal naming the first tensor that differs.
Status VerifyTorchZip(Bytes file, const SaveTree& tree, const SaveLimits& limits = {});

// WriteTorchZip writes TorchZipBytes(tree, archive_name) to `path`
// atomically with an AtomicFile: the bytes go to a temporary file beside
// `path`, which is loaded back from disk (LoadCheckpoint) and checked as
// VerifyTorchZip does, and only then renamed over `path`. On any failure
// `path` is untouched and the temporary file removed. Failure: as
// TorchZipBytes and VerifyTorchZip, kIo from the file system.
// `sources_unchanged`, when given, is called once the bytes are built (every
// storage copied out of whatever the tree views) and before anything is
// written; its error stops the write. `ckptguard convert` passes
// Checkpoint::CheckUnchanged, so a source file that changed while it was read
// never becomes an output.
Status WriteTorchZip(const std::string& path, const SaveTree& tree, const std::string& archive_name = "archive",
                     const SaveLimits& limits = {}, const std::function<Status()>& sources_unchanged = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_TORCH_WRITER_H_

// The hardened pickle VM: runs one pickle with a real stack, mark stack and
// memo, but only the operations weights-only checkpoints need, and never
// imports or calls anything.
//
// Globals are looked up in an Allowlist and bound to built-in actions (build a
// tensor view, an OrderedDict, a dtype...). Anything else, and every opcode
// that would call arbitrary code (NEWOBJ, OBJ, INST, EXT*, REDUCE of a
// non-allowlisted callable, BUILD on anything but an OrderedDict), stops the
// run with an error naming the global or opcode and its byte offset. Storages
// come from BINPERSID through a resolver the caller provides, and each tensor
// view is checked against its storage's size before it exists.
#ifndef CKPTGUARD_VM_H_
#define CKPTGUARD_VM_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/allowlist.h"
#include "ckptguard/budget.h"
#include "ckptguard/bulk_allocator.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/value.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct JoblibReading;  // container.h

// VmLimits bounds one load. Each field says what it bounds, its default and
// its ceiling (Clamped). Hitting one is kLimitExceeded naming the field.
struct VmLimits {
  PickleLimits pickle;
  // Most memo entries. Default 2^22 (a state dict of 100,000 tensors uses
  // about 1.2 million). Ceiling 2^28.
  uint64_t max_memo_entries = uint64_t{1} << 22;
  // Deepest object stack. Default 2^20. Ceiling 2^28.
  uint64_t max_stack_depth = uint64_t{1} << 20;
  // Deepest MARK nesting (how deeply literals nest). Default 10,000. Ceiling 2^20.
  uint64_t max_mark_depth = 10'000;
  // Most elements in one container. Default 2^24. Ceiling 2^28.
  uint64_t max_container_len = uint64_t{1} << 24;
  // Most values one load holds at once (a tensor's rebuild arguments, once
  // used up, are reclaimed: VmOptions::reclaim). Default 2^24. Ceiling 2^28.
  uint64_t max_values = uint64_t{1} << 24;
  // Bytes of strings and container slots built, all told (the file's tensor
  // data is never copied and does not count). Default 1 GiB. Ceiling 2^40.
  uint64_t max_alloc_bytes = uint64_t{1} << 30;
  // Most tensors. Default 2^22. Ceiling 2^26.
  uint64_t max_tensors = uint64_t{1} << 22;
  // Most dimensions of one tensor. Default 64 (torch's own cap). Ceiling 1024.
  uint64_t max_tensor_dims = 64;
  // Largest logical size (elements x element size) of one tensor view.
  // Default 64 GiB. A stride-0 view can claim far more elements than its
  // storage holds, and copying or hashing it costs its logical size, so this
  // bounds that work. Ceiling 2^44.
  uint64_t max_view_bytes = uint64_t{64} << 30;
  // Most value visits of one walk over the object graph (tensor paths, the
  // skeleton); shared subobjects count each time they are reached. Default
  // 2^24. Ceiling 2^30.
  uint64_t max_walk_nodes = uint64_t{1} << 24;
  // Deepest path of such a walk (a cycle reaches it). Default 1,000. Ceiling 10,000.
  uint64_t max_walk_depth = 1'000;

  VmLimits Clamped() const;
};

// StorageRequest is one persistent id ('storage', type, key, location, numel[, view]).
struct MemoReadsScan;  // pickle_machine.h

// Its texts are views of the run's values, valid during the resolver's call
// only: a resolver copies what it keeps.
struct StorageRequest {
  std::string_view key;
  DType dtype = DType::kUInt8;   // from the storage type global
  std::string_view type_name;    // "torch.FloatStorage"
  std::string_view location;
  int64_t num_elements = 0;
  uint64_t offset = 0;           // of the BINPERSID opcode
};

// StorageResolver returns the index (into the load's storages) of the record
// for `request`, resolving the same key to the same index; errors name the key.
using StorageResolver = std::function<Result<uint32_t>(const StorageRequest& request)>;

// VmState is what a run builds: the values, tensors and storages (the resolver
// appends storages). Several runs may share one state.
// IsCooIndexDType: a dtype of COO indices that torch converts to int64 when
// it rebuilds the sparse tensor (sparse_coo_tensor: indices.to(torch.long)),
// and the loader converts too (LoadCheckpoint: the sparse tensor's indices
// are then an int64 tensor of their own): the integer dtypes, bool, float32
// and float64 (truncated toward zero).
bool IsCooIndexDType(DType dtype);

struct VmState {
  ValueArena values;
  BulkVector<Tensor> tensors;    // bulk_allocator.h: they grow with the number of tensors
  BulkVector<Storage> storages;
  uint64_t alloc_bytes = 0;  // accounted against max_alloc_bytes
  uint64_t tensor_records = 0;  // tensor records read whole (VmOptions::tensor_records), for tests
};

struct VmOptions {
  const Allowlist* allowlist = nullptr;  // nullptr: BuiltinAllowlist()
  VmLimits limits;
  // TorchScript archives: instances of "__torch__.*" classes become plain
  // attribute holders (kObject), so their tensors can be read. Their code,
  // including any __setstate__, is never run.
  bool script_objects = false;
  // The file's budget (budget.h), charged for opcodes, memo slots, values and
  // nesting besides the per-run limits above. nullptr: a budget of this run
  // alone with default limits.
  Budget* budget = nullptr;
  // Declared records (value.h, kRecord): a call of a data kind of
  // rules/callables.toml (argparse.Namespace, pathlib paths, Enum members,
  // copyreg reconstruction, functools.partial...) or of an allowlist entry
  // with action "record" builds a record and calls nothing. false: only the
  // allowlist's actions, as torch.load(weights_only=True) loads.
  bool records = true;
  // Reclaiming: the values a tensor rebuild or a storage's persistent id
  // uses up, which nothing else can reach (they are memoized only under keys
  // the pickle never reads), are dropped and their slots made again, so a
  // state dict holds two values per tensor (its key and itself), not nine.
  // false keeps every value the pickle built: what a load gives is the same
  // (the fuzzers compare both), only memory differs.
  bool reclaim = true;
  // Tensor records: a state dict's tensor after the first, pickled as
  // torch.save pickles it, is read whole (pickle_machine.h
  // MachineTensorRecord) rather than opcode by opcode, leaving what the
  // opcodes would have left, charges included. false runs every opcode on
  // its own (the tests and fuzzers compare both). Needs reclaim.
  bool tensor_records = true;
  // A memo scan of the pickle made ahead (pickle_machine.h MemoReadsScan),
  // used only when it was made for exactly this run; nullptr: the run scans.
  const MemoReadsScan* memo_reads = nullptr;
  // joblib.load's reading of the file (container.h JoblibReading), run as
  // joblib's NumpyUnpickler runs it: each BUILD of a
  // joblib.numpy_pickle.NumpyArrayWrapper reads the reading's next array
  // and leaves the array, not the wrapper, on the stack. nullptr: a wrapper
  // stays a record. Must outlive the values (the arrays view its bytes).
  const JoblibReading* joblib = nullptr;
};

// RunPickle runs the pickle at the start of `data` (offsets reported as
// base_offset + position; `where` names the entry in errors) and returns the
// root value. `data` and `state` must outlive the values (strings are copied;
// storages view what the resolver gives them).
Result<ValueId> RunPickle(Bytes data, uint64_t base_offset, const std::string& where, VmState& state,
                          const StorageResolver& resolver, const VmOptions& options = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_VM_H_

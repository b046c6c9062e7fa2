// CollectStorageRefs: the storages a torch pickle refers to, without running it.
//
// torch.save writes each storage as BINPERSID of the tuple
// ('storage', <GLOBAL torch XStorage>, key, location, numel[, view_metadata]).
// The container layer needs those (key -> storage type, numel) to check the
// records (zip data/<key>, legacy raw records) before anything loads them.
#ifndef CKPTGUARD_STORAGE_REFS_H_
#define CKPTGUARD_STORAGE_REFS_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct StorageRef {
  uint64_t offset = 0;        // offset of the BINPERSID op
  std::string module;         // "torch"
  std::string storage_type;   // "FloatStorage"
  std::string key;            // "0"
  std::string location;       // "cpu"
  int64_t numel = 0;          // elements of the storage type (bytes for UntypedStorage)
};

// CollectStorageRefs runs the ops of one pickle through the PickleMachine
// (pickle_machine.h) in a domain that knows only literal strings, ints,
// globals and tuples (through the memo), leniently, and returns every
// persistent id shaped like a torch storage (ParseStoragePid in
// pickle_semantics.h), in order (a storage used twice appears twice).
// Anything else on the stack is opaque; nothing is called. Persistent ids of
// another shape are ignored here (the VM refuses them). Linear in the number
// of ops. `budget` (nullptr: one of this walk alone) is charged for opcodes,
// values and memo slots; the walk stops when it runs out.
std::vector<StorageRef> CollectStorageRefs(std::span<const PickleOp> ops, Budget* budget = nullptr);

// CollectStorageRefs (streaming) does the same for the first pickle of
// `data`, decoding as it goes instead of keeping every op (a state dict of
// 20,000 tensors is ~700,000 ops). A decode error, or the data ending before
// STOP, is stored in `error` (the refs before it are returned).
// A budget error is stored in `error` too.
std::vector<StorageRef> CollectStorageRefs(Bytes data, const PickleLimits& limits, std::optional<Error>* error,
                                           Budget* budget = nullptr);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_STORAGE_REFS_H_

// The legacy torch format (torch < 1.6, or _use_new_zipfile_serialization=
// False): five pickles (magic number, protocol version 1001, sys_info, the
// object, the sorted storage keys), then for each key an int64 element count
// and the raw bytes of that storage.
#ifndef CKPTGUARD_TORCH_LEGACY_H_
#define CKPTGUARD_TORCH_LEGACY_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/storage_refs.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct LegacyRecord {
  std::string key;
  std::string storage_type;    // from the object pickle's persistent id
  uint32_t elem_size = 0;
  int64_t declared_numel = 0;  // from the persistent id
  uint64_t count_offset = 0;   // absolute offset of the int64 element count
  uint64_t num_elements = 0;   // the count written in the file
  uint64_t data_offset = 0;    // absolute offset of the raw bytes
  uint64_t data_len = 0;       // num_elements x elem_size
};

struct LegacyCheckpoint {
  uint64_t pickle_offsets[5] = {};     // where each pickle starts
  std::vector<StorageRef> storages;    // persistent ids of the object pickle
  uint64_t records_offset = 0;         // where the first record starts
  std::vector<LegacyRecord> records;   // in key order
  Anomalies anomalies;
};

// IsLegacyHeaderPickle says whether `ops` (one whole pickle) is the legacy
// header pickle number `index`: 0 the magic number 0x1950a86a20f9469cfc6c,
// 1 the protocol version 1001.
bool IsLegacyHeaderPickle(std::span<const PickleOp> ops, int index);

// LooksLikeTorchLegacy decodes at most the first two pickles of `file` and
// says whether it is a legacy torch stream: the first pickle is the magic
// number, or (when a hostile first pickle replaced it) the second is the
// protocol version 1001. Only a header-shaped pickle's few ops are kept; each
// op decoded is charged to `budget` when given (running out: false).
bool LooksLikeTorchLegacy(Bytes file, const PickleLimits& limits = {}, Budget* budget = nullptr);

// ParseTorchLegacy reads the five pickles and walks the storage records,
// checking each count against the file and against its persistent id.
// Failure: the error of a pickle that does not decode, a record that runs past
// the end of the file (kTruncated naming the key), a key without a storage
// (kMalformed). Facts torch tolerates or that differ from what torch writes
// (bad magic, count != declared numel, trailing bytes...) are anomalies.
// Offsets are absolute offsets in `file` (which must outlive the result).
Result<LegacyCheckpoint> ParseTorchLegacy(Bytes file, const PickleLimits& limits = {}, Budget* budget = nullptr);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_TORCH_LEGACY_H_

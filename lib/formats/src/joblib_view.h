// Private to lib/formats: joblib's reading of a pickle stream.
#ifndef CKPTGUARD_LIB_FORMATS_SRC_JOBLIB_VIEW_H_
#define CKPTGUARD_LIB_FORMATS_SRC_JOBLIB_VIEW_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/container.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"

namespace ckptguard {

// JoblibView is what joblib.load reads from a joblib file: its
// NumpyUnpickler (the pure-Python unpickler) meets a BUILD of a
// joblib.numpy_pickle.NumpyArrayWrapper, then reads the array's bytes
// straight from the file (after a padding byte and padding when the state has
// numpy_array_alignment_bytes), or for an object dtype runs pickle.load on the
// file there, and then resumes unpickling after them.
struct JoblibView {
  // The opcodes the unpickler reads, FRAME opcodes and inline array bytes
  // cut out: one pickle the C-unpickler decoder reads as joblib does.
  std::string bytes;
  // Where `bytes` came from: runs of (offset in `bytes`, offset in the
  // source data), in order; a run lasts until the next one starts.
  std::vector<OffsetRun> runs;
  uint32_t num_arrays = 0;  // inline arrays cut out
  // Object-dtype arrays: the offsets (in the source data) of the pickles
  // that pickle.load reads from the file.
  std::vector<uint64_t> object_pickles;
  // Arrays whose dtype is not worked out (it may hold objects): the offsets
  // of the data, read as possible pickles (found by content).
  std::vector<uint64_t> maybe_object_pickles;
  // Where the reading stopped before its STOP and why (an array whose
  // bytes run past the data, a wrapper whose dtype or shape is unknown).
  Anomalies anomalies;
  // Every wrapper BUILD's array, in the order joblib reads them: where its
  // data starts in `data` (after the padding) and its length; an object
  // array's (or one not worked out) is the pickle at `offset`, length 0.
  struct Array {
    uint64_t offset = 0;
    uint64_t len = 0;
    bool object = false;
  };
  std::vector<Array> arrays;
  // The reading got to its STOP with every array known; `end` is the offset
  // in `data` just after that STOP (bytes from there are not read).
  bool complete = false;
  uint64_t end = 0;
};

// ReadJoblibView returns joblib's reading of data[start...] when it holds at
// least one NumpyArrayWrapper BUILD (nullopt otherwise: the stream is then
// read the same by every unpickler, see pickle_views.h). Bounded: every opcode
// is charged to `budget`, and so is the copy; a budget error is the error.
Result<std::optional<JoblibView>> ReadJoblibView(Bytes data, uint64_t start, const PickleLimits& limits,
                                                 Budget& budget, std::string_view where);

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_FORMATS_SRC_JOBLIB_VIEW_H_

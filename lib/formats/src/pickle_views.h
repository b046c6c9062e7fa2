// Private to lib/formats: other unpicklers' readings of a pickle stream.
#ifndef CKPTGUARD_LIB_FORMATS_SRC_PICKLE_VIEWS_H_
#define CKPTGUARD_LIB_FORMATS_SRC_PICKLE_VIEWS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"

namespace ckptguard {

// UnframedView is what the pure-Python unpickler (pickle._Unpickler:
// pickle._load, dill, joblib's NumpyUnpickler) reads from a stream, as one
// stream without FRAME opcodes, so that the C-unpickler decoder reads the
// same opcodes in the same order.
struct UnframedView {
  std::string bytes;
  uint64_t frame_offset = 0;  // offset (in the source data) of the FRAME where the readings part
  std::string detail;         // how they part
};

// PythonUnpicklerView returns the pure-Python reading of data[start...]
// when it differs from the C unpickler's (which checks that a frame's bytes
// are there and then reads through frame boundaries as if there were none):
//   - a FRAME longer than what remains: the C unpickler fails at the FRAME,
//     pickle._Unpickler takes the short frame and runs what it holds;
//   - a STOP inside a frame with frame bytes left: _Unpickler has read the
//     whole frame, so the next pickle.load starts at the frame's end, where
//     the C unpickler starts right after the STOP.
// nullopt when the readings agree (every well-framed pickle: one decode pass,
// nothing copied). Where pickle._Unpickler itself fails (an opcode across a
// frame end, a FRAME inside an unfinished frame, a bad opcode) the view
// stops. `max_pickles` as PickleSource (0: until the data ends). Opcodes are
// charged to `budget` (kOpcodes), the copy to kReadBytes; a budget error is
// returned as the error.
Result<std::optional<UnframedView>> PythonUnpicklerView(Bytes data, uint64_t start, uint32_t max_pickles,
                                                        const PickleLimits& limits, Budget& budget,
                                                        std::string_view where);

// FrameEndPickles: the pickles of data[start...] that the C unpickler runs
// only when it reads a frame whole. It reads a frame with file.read() (a
// frame of 128 KiB or more, one longer than what the file's peek() hands
// out, any file object without peek(), such as io.BytesIO); after a STOP
// inside such a frame the file is left at the frame's end, and the next
// pickle.load (torch's legacy loader, numpy.load called again) starts
// there, where a peeked frame leaves it right after the STOP. Which way a
// frame is read depends on the file object and its buffer, so every
// pickle either way reaches is returned: the start offsets (in `data`)
// not on the after-the-STOP chain the container already reads, in order,
// at most `max_starts` (more: `more` is set). Each pickle is decoded as
// the C unpickler decodes it; `max_pickles` as PickleSource (0: until the
// data ends). Opcodes are charged to `budget`.
struct FrameEndStarts {
  std::vector<uint64_t> starts;
  uint64_t first_stop = 0;   // the STOP (in `data`) of the first such frame
  uint64_t first_left = 0;   // the frame bytes after it
  bool more = false;
};
Result<FrameEndStarts> FrameEndPickles(Bytes data, uint64_t start, uint32_t max_pickles, size_t max_starts,
                                       const PickleLimits& limits, Budget& budget, std::string_view where);

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_FORMATS_SRC_PICKLE_VIEWS_H_

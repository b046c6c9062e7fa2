#include "pickle_views.h"

#include <algorithm>
#include <tuple>

namespace ckptguard {
namespace {

constexpr uint8_t kFrameByte = static_cast<uint8_t>(Opcode::kFrame);
constexpr uint64_t kFrameHeaderLen = 9;  // FRAME + u64 length

std::string Num(uint64_t v) { return std::to_string(v); }

// Diverges runs the C reading once and says where the pure-Python one parts
// from it, or nullopt.
Result<std::optional<std::pair<uint64_t, std::string>>> Diverges(Bytes data, uint64_t start, uint32_t max_pickles,
                                                                  const PickleLimits& limits, Budget& budget,
                                                                  std::string_view where) {
  PickleDecoder decoder(data.subspan(static_cast<size_t>(start)), limits, start);
  std::optional<uint64_t> frame_end;
  uint32_t done = 0;
  while (!decoder.AtEnd() && (max_pickles == 0 || done < max_pickles)) {
    const uint64_t at = decoder.Offset();
    Result<PickleOp> op = decoder.Next();
    if (!op) {
      const Error& e = op.error();
      if ((e.code == ErrorCode::kTruncated || e.code == ErrorCode::kLimitExceeded) && e.offset == at && at < data.size() && data[at] == kFrameByte) {
        return std::optional<std::pair<uint64_t, std::string>>(
            std::pair<uint64_t, std::string>{at, "a FRAME longer than the data left (or than max_frame_len): the C unpickler "
                                                 "stops there, pickle._Unpickler runs the short frame"});
      }
      return std::nullopt;
    }
    CKG_TRY(budget.Charge(BudgetKind::kOpcodes, 1, op->offset, where, "pure-Python unpickler view"));
    const uint64_t op_end = op->offset + op->length;
    if (op->code == Opcode::kFrame) {
      if (frame_end && op->offset < *frame_end) return std::nullopt;  // _Unpickler fails here; C reads on
      frame_end = op_end + op->arg.uint_value;
      if (op->arg.uint_value == 0) frame_end.reset();
      continue;
    }
    if (frame_end && op_end > *frame_end) return std::nullopt;  // _Unpickler fails here; C reads on
    if (op->code == Opcode::kStop) {
      ++done;
      if (frame_end && op_end < *frame_end) {
        return std::optional<std::pair<uint64_t, std::string>>(std::pair<uint64_t, std::string>{
            op->offset, Num(*frame_end - op_end) +
                            " frame bytes after a STOP: the C unpickler's next pickle starts after the STOP, "
                            "pickle._Unpickler's at the frame's end"});
      }
    }
    if (frame_end && op_end == *frame_end) frame_end.reset();
  }
  return std::nullopt;
}

}  // namespace

Result<std::optional<UnframedView>> PythonUnpicklerView(Bytes data, uint64_t start, uint32_t max_pickles,
                                                        const PickleLimits& limits, Budget& budget,
                                                        std::string_view where) {
  if (start >= data.size()) return std::nullopt;
  CKG_ASSIGN_OR_RETURN(auto diverges, Diverges(data, start, max_pickles, limits, budget, where));
  if (!diverges) return std::nullopt;
  UnframedView view;
  view.frame_offset = diverges->first;
  view.detail = std::move(diverges->second);
  // pickle._Unframer: a FRAME reads its length, then that many bytes (fewer
  // at the end of the file) into a buffer that later reads come from until
  // it is empty; an opcode that would run past it fails.
  uint64_t pos = start;
  std::optional<uint64_t> frame_end;
  uint32_t done = 0;
  while (true) {
    if (frame_end && pos >= *frame_end) frame_end.reset();
    const uint64_t limit = frame_end.value_or(data.size());
    if (pos >= limit) break;
    if (data[pos] == kFrameByte) {
      if (frame_end) break;  // "beginning of a new frame before end of current frame"
      ByteCursor c(data.subspan(static_cast<size_t>(pos + 1)), pos + 1);
      Result<uint64_t> len = c.ReadU64LE();
      if (!len) break;
      CKG_TRY(budget.Charge(BudgetKind::kOpcodes, 1, pos, where, "pure-Python unpickler view"));
      pos += kFrameHeaderLen;
      frame_end = *len > data.size() - pos ? data.size() : pos + *len;
      continue;
    }
    PickleDecoder one(data.subspan(static_cast<size_t>(pos), static_cast<size_t>(limit - pos)), limits, pos);
    Result<PickleOp> op = one.Next();
    if (!op) break;  // _Unpickler fails here too (or at an opcode cut by the frame's end)
    CKG_TRY(budget.Charge(BudgetKind::kOpcodes, 1, pos, where, "pure-Python unpickler view"));
    view.bytes.append(reinterpret_cast<const char*>(data.data() + pos), static_cast<size_t>(op->length));
    pos += op->length;
    if (op->code == Opcode::kStop) {
      ++done;
      if (max_pickles != 0 && done >= max_pickles) break;
      if (frame_end) {
        pos = *frame_end;  // the whole frame was read: the next load starts after it
        frame_end.reset();
      }
    }
  }
  CKG_TRY(budget.Charge(BudgetKind::kReadBytes, view.bytes.size(), start, where, "pure-Python unpickler view"));
  return std::optional<UnframedView>(std::move(view));
}

Result<FrameEndStarts> FrameEndPickles(Bytes data, uint64_t start, uint32_t max_pickles, size_t max_starts,
                                       const PickleLimits& limits, Budget& budget, std::string_view where) {
  FrameEndStarts out;
  // (offset, pickles before it, on the after-the-STOP chain) to read; the
  // offsets seen, so that each pickle is decoded once.
  std::vector<std::tuple<uint64_t, uint32_t, bool>> todo{{start, 0, true}};
  std::vector<uint64_t> seen;
  while (!todo.empty()) {
    const auto [at, before, on_chain] = todo.back();
    todo.pop_back();
    if (at >= data.size() || (max_pickles != 0 && before >= max_pickles)) continue;
    if (!on_chain) {
      if (std::find(seen.begin(), seen.end(), at) != seen.end()) continue;
      if (out.starts.size() >= max_starts) {
        out.more = true;
        continue;
      }
      seen.push_back(at);
      out.starts.push_back(at);
    }
    // The pickle at `at`, to its STOP, frames read through; a decode error
    // (the C unpickler fails there too) leaves nothing after it.
    std::optional<uint64_t> frame_end;
    const Result<uint64_t> end = FirstPickleEnd(data.subspan(static_cast<size_t>(at)), limits, at, &budget, where,
                                                false, &frame_end);
    if (!end) {
      if (!end.error().limit.empty()) return std::unexpected(end.error());  // the file's budget
      continue;
    }
    todo.emplace_back(*end, before + 1, on_chain);
    if (frame_end) {
      if (out.starts.empty() && !out.more && on_chain) {
        out.first_stop = *end - 1;  // STOP is one byte
        out.first_left = *frame_end - *end;
      }
      todo.emplace_back(*frame_end, before + 1, false);
    }
  }
  std::sort(out.starts.begin(), out.starts.end());
  return out;
}

}  // namespace ckptguard

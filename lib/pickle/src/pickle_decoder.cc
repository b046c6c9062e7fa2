#include "ckptguard/pickle_decoder.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "py_text.h"

namespace ckptguard {
namespace {

constexpr uint64_t kCeilingOperandLen = uint64_t{1} << 40;
constexpr uint64_t kCeilingLineLen = uint64_t{1} << 30;
constexpr uint64_t kCeilingLongLen = uint64_t{1} << 24;
constexpr uint64_t kCeilingFrameLen = uint64_t{1} << 40;
constexpr uint64_t kCeilingOps = uint64_t{1} << 40;
constexpr uint64_t kCeilingPickles = uint64_t{1} << 20;

std::string Num(uint64_t v) { return std::to_string(v); }

// Rebase turns an error from a text helper (offset relative to the text) into
// one at `base` + that offset, naming the opcode.
Error Rebase(Error error, uint64_t base, std::string_view opname) {
  error.offset += base;
  error.where = std::string(opname);
  return error;
}

void SetInt(PickleArg& arg, const py::PyInt& value) {
  if (value.big) {
    arg.type = PickleArgType::kBigInt;
    arg.SetOwned(value.twos_le);
  } else {
    arg.type = PickleArgType::kInt;
    arg.int_value = value.small;
  }
}

}  // namespace

PickleLimits PickleLimits::Clamped() const {
  PickleLimits out = *this;
  out.max_operand_len = std::min(max_operand_len, kCeilingOperandLen);
  out.max_line_len = std::min(max_line_len, kCeilingLineLen);
  out.max_long_len = std::min(max_long_len, kCeilingLongLen);
  out.max_frame_len = std::min(max_frame_len, kCeilingFrameLen);
  out.max_ops = std::min(max_ops, kCeilingOps);
  out.max_pickles = std::min(max_pickles, kCeilingPickles);
  return out;
}

PickleDecoder::PickleDecoder(Bytes input, const PickleLimits& limits, uint64_t base_offset)
    : cursor_(input, base_offset), limits_(limits.Clamped()) {}

Result<PickleOp> PickleDecoder::Next() {
  PickleOp op;
  CKG_TRY(Next(op));
  return op;
}

Status PickleDecoder::NextSlow(PickleOp& op) {
  if (failed_) return std::unexpected(*failed_);
  const uint64_t start = cursor_.Offset();
  ByteCursor saved = cursor_;
  auto fail = [&](Error error) -> Status {
    cursor_ = saved;
    failed_ = error;
    return std::unexpected(std::move(error));
  };
  if (cursor_.Empty()) {
    if (between_pickles_) {
      return MakeError(ErrorCode::kInvalidArgument, start, "no pickle data left to decode");
    }
    return fail(Error{ErrorCode::kTruncated, start, {}, "pickle exhausted before STOP"});
  }
  if (num_ops_ >= limits_.max_ops) {
    return fail(Error{ErrorCode::kLimitExceeded, start, {},
                      "max_ops (" + Num(limits_.max_ops) + ") opcodes decoded"});
  }
  if (between_pickles_ && num_finished_ >= limits_.max_pickles) {
    return fail(Error{ErrorCode::kLimitExceeded, start, {},
                      "max_pickles (" + Num(limits_.max_pickles) + ") pickles in one stream"});
  }
  uint8_t byte = 0;
  cursor_.TryReadU8(byte);  // not empty: checked above
  const OpcodeInfo* info = FindOpcode(byte);
  if (info == nullptr) {
    static constexpr char kHexDigits[] = "0123456789abcdef";
    std::string shown = "0x";
    shown.push_back(kHexDigits[byte >> 4]);
    shown.push_back(kHexDigits[byte & 0xf]);
    return fail(Error{ErrorCode::kUnsupportedOpcode, start, {}, "unknown opcode " + shown});
  }
  op.code = info->code;
  op.offset = start;
  op.length = 0;
  op.pickle_index = num_finished_;
  op.arg.Reset();
  if (Status st = DecodeOperand(*info, op); !st) {
    Error error = std::move(st).error();
    if (error.where.empty()) error.where = std::string(info->name);
    return fail(std::move(error));
  }
  op.length = cursor_.Offset() - start;
  if (Status st = CheckFrame(op); !st) return fail(std::move(st).error());
  ++num_ops_;
  between_pickles_ = op.code == Opcode::kStop;
  if (between_pickles_) ++num_finished_;
  return OkStatus();
}

Status PickleDecoder::CheckFrame(const PickleOp& op) {
  const uint64_t end = op.offset + op.length;
  if (frame_end_ > op.offset && (op.code == Opcode::kFrame || end > frame_end_)) {
    if (!lenient_operands_ && !frame_splits_allowed_) {
      return MakeError(ErrorCode::kMalformed, op.offset,
                       op.code == Opcode::kFrame
                           ? "a FRAME begins inside the frame ending at byte " + Num(frame_end_) +
                                 ": the C unpickler reading the outer frame whole from a file goes on after it, "
                                 "pickle.loads inside it (no pickler writes this)"
                           : "the opcode runs past the end of its frame at byte " + Num(frame_end_) +
                                 ": the C unpickler reading the frame whole from a file drops the frame's rest and "
                                 "reads the operand after it, pickle.loads reads on (no pickler writes this)");
    }
    if (!frame_split_) frame_split_ = op.offset;
  }
  if (op.code == Opcode::kFrame) {
    // (As pickle.loads reads: a frame inside another changes nothing; the
    // window is then the inner frame's, which ends no later than the input.)
    frame_end_ = end + op.arg.uint_value;
  } else if (end > frame_end_ || op.code == Opcode::kStop) {
    // Read on past a split frame as pickle.loads does. After a STOP, the next
    // pickle is the next load's, by a new unpickler that knows no frame (one
    // that read this frame whole starts at its end: FrameEndPickles).
    frame_end_ = 0;
  }
  return OkStatus();
}

Status PickleDecoder::DecodeOperand(const OpcodeInfo& info, PickleOp& op) {
  PickleArg& arg = op.arg;
  const std::string_view name = info.name;

  // ReadCounted reads a length-prefixed operand after checking the length
  // against `limit` (named `limit_name`) and against what remains.
  auto read_counted = [&](uint64_t len, uint64_t limit, const char* limit_name) -> Result<Bytes> {
    if (len > limit) {
      return MakeError(ErrorCode::kLimitExceeded, op.offset,
                       std::string(limit_name) + " (" + Num(limit) + ") exceeded by an operand of " +
                           Num(len) + " bytes");
    }
    Bytes fast;
    if (cursor_.TryReadBytes(len, fast)) return fast;
    uint64_t at = cursor_.Offset();
    Result<Bytes> bytes = cursor_.ReadBytes(len);
    if (!bytes) {
      return MakeError(ErrorCode::kTruncated, at,
                       "operand of " + Num(len) + " bytes, only " + Num(cursor_.Remaining()) + " remain");
    }
    return bytes;
  };
  // A line past max_line_len is read whole (up to max_operand_len) when
  // operands are lenient, and `cut` to max_line_len: the opcode then
  // decodes as an opaque operand (below).
  bool cut = false;
  auto read_line = [&]() -> Result<Bytes> {
    if (!lenient_operands_) return cursor_.ReadLine(limits_.max_line_len);
    CKG_ASSIGN_OR_RETURN(Bytes line, cursor_.ReadLine(std::max(limits_.max_line_len, limits_.max_operand_len)));
    if (line.size() <= limits_.max_line_len) return line;
    cut = true;
    return line.first(static_cast<size_t>(limits_.max_line_len));
  };
  // Opaque sets the lenient reading of a number or memo key that the C
  // unpickler refuses (or that is too long to convert): kBigInt viewing
  // its raw text or bytes.
  auto opaque = [&](std::string_view raw) {
    arg.type = PickleArgType::kBigInt;
    arg.SetView(raw);
  };
  auto check_utf8 = [&](std::string_view text, uint64_t at, bool surrogates) -> Status {
    if (std::optional<size_t> bad = py::Utf8Error(text, surrogates)) {
      return MakeError(ErrorCode::kMalformed, at + *bad, "invalid UTF-8");
    }
    return OkStatus();
  };

  switch (info.operand) {
    case OperandKind::kNone:
      return OkStatus();
    case OperandKind::kUInt1:
    case OperandKind::kUInt2:
    case OperandKind::kUInt4:
    case OperandKind::kInt4: {
      const size_t width = info.operand == OperandKind::kUInt1 ? 1 : info.operand == OperandKind::kUInt2 ? 2 : 4;
      CKG_ASSIGN_OR_RETURN(Bytes b, cursor_.ReadBytes(width));
      uint32_t raw = 0;
      for (size_t i = width; i-- > 0;) raw = (raw << 8) | b[i];
      SetFixedInt(arg, raw, info.operand == OperandKind::kInt4);
      break;
    }
    case OperandKind::kUInt8: {  // FRAME
      CKG_ASSIGN_OR_RETURN(uint64_t v, cursor_.ReadU64LE());
      arg.type = PickleArgType::kUInt;
      arg.uint_value = v;
      if (v > limits_.max_frame_len) {
        return MakeError(ErrorCode::kLimitExceeded, op.offset,
                         "max_frame_len (" + Num(limits_.max_frame_len) + ") exceeded by a frame of " +
                             Num(v) + " bytes");
      }
      if (v > cursor_.Remaining()) {
        return MakeError(ErrorCode::kTruncated, op.offset,
                         "frame of " + Num(v) + " bytes, only " + Num(cursor_.Remaining()) + " remain");
      }
      break;
    }
    case OperandKind::kFloat8: {
      CKG_ASSIGN_OR_RETURN(double v, cursor_.ReadF64BE());
      arg.type = PickleArgType::kFloat;
      arg.float_value = v;
      break;
    }
    case OperandKind::kDecimalNlShort:  // INT, GET, PUT
    case OperandKind::kDecimalNlLong: {  // LONG
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
      std::string_view text = AsStringView(line);
      if (text.empty()) {
        // load_int & co.: `if (len < 2) return bad_readline();`
        return MakeError(ErrorCode::kMalformed, at, "empty line (pickle data was truncated)");
      }
      if (cut) {
        opaque(text);
        break;
      }
      Result<py::PyInt> value;
      if (op.code == Opcode::kInt) {
        // load_int: strtol(s, &end, 0) first; a two-character line whose
        // value is 0 or 1 is a bool ("00", "01", "+1", " 0", "1\0"...).
        if (std::optional<int64_t> x = py::ParseStrtolLine(text)) {
          if (text.size() == 2 && (*x == 0 || *x == 1)) {
            arg.type = PickleArgType::kBool;
          } else {
            arg.type = PickleArgType::kInt;
          }
          arg.int_value = *x;
          break;
        }
        value = py::ParsePyLong(text, 0);
      } else if (op.code == Opcode::kLong) {
        // load_long: drops one trailing 'L', then PyLong_FromString(s, NULL, 0).
        if (text.back() == 'L') text.remove_suffix(1);
        value = py::ParsePyLong(text, 0);
      } else {
        // load_get/load_put: PyLong_FromString(s, NULL, 10), then
        // PyLong_AsSsize_t; PUT refuses a negative key, and a negative GET
        // key is never in the memo ("Memo value not found").
        value = py::ParsePyLong(text, 10);
        if (lenient_operands_ && (!value || value->big)) {
          // pickle's pure-Python unpickler: int(line), any size, as a dict key.
          opaque(text);
          break;
        }
        if (value && value->big) {
          return MakeError(ErrorCode::kMalformed, at, "memo key does not fit in ssize_t");
        }
        if (value && value->small < 0) {
          return MakeError(ErrorCode::kMalformed, at,
                           op.code == Opcode::kPut ? "negative PUT argument" : "negative GET argument");
        }
      }
      if (!value && lenient_operands_) {
        opaque(text);  // int(line, 0) of the pure-Python unpickler may still read it
        break;
      }
      if (!value) return std::unexpected(Rebase(value.error(), at, name));
      SetInt(arg, *value);
      break;
    }
    case OperandKind::kFloatNl: {
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
      Result<double> value = cut ? Result<double>(std::nan("")) : py::ParseFloatLiteral(AsStringView(line));
      if (!value && lenient_operands_) value = std::nan("");  // float(line) of the pure-Python unpickler
      if (!value) return std::unexpected(Rebase(value.error(), at, name));
      arg.type = PickleArgType::kFloat;
      arg.float_value = *value;
      break;
    }
    case OperandKind::kLong1:
    case OperandKind::kLong4: {
      uint64_t len;
      if (info.operand == OperandKind::kLong1) {
        CKG_ASSIGN_OR_RETURN(uint8_t n, cursor_.ReadU8());
        len = n;
      } else {
        CKG_ASSIGN_OR_RETURN(int32_t n, cursor_.ReadI32LE());
        if (n < 0) return MakeError(ErrorCode::kMalformed, op.offset + 1, "LONG4 byte count < 0");
        len = static_cast<uint64_t>(n);
      }
      if (lenient_operands_ && len > limits_.max_long_len) {
        CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(len, limits_.max_operand_len, "max_operand_len"));
        opaque(AsStringView(bytes));
        break;
      }
      CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(len, limits_.max_long_len, "max_long_len"));
      py::PyInt value = py::IntFromTwosComplement(AsStringView(bytes));
      if (value.big) {
        arg.type = PickleArgType::kBigInt;
        arg.SetView(AsStringView(bytes));
      } else {
        arg.type = PickleArgType::kInt;
        arg.int_value = value.small;
      }
      break;
    }
    case OperandKind::kStringNl: {  // STRING: quoted, escaped
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
      std::string_view text = AsStringView(line);
      if (cut) {
        arg.type = PickleArgType::kBytes;  // its first max_line_len bytes, as written
        arg.SetView(text);
        break;
      }
      if (text.size() < 2 || text.front() != text.back() || (text.front() != '\'' && text.front() != '"')) {
        return MakeError(ErrorCode::kMalformed, at, "the STRING opcode argument must be quoted");
      }
      Result<std::string> decoded = py::DecodeBytesEscape(text.substr(1, text.size() - 2));
      if (!decoded) return std::unexpected(Rebase(decoded.error(), at + 1, name));
      arg.type = PickleArgType::kBytes;
      arg.SetOwned(std::move(*decoded));
      break;
    }
    case OperandKind::kStringNlNoEscape: {  // PERSID: ASCII line
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
      for (size_t i = 0; i < line.size(); ++i) {
        if (line[i] >= 0x80) {
          return MakeError(ErrorCode::kMalformed, at + i, "persistent IDs in protocol 0 must be ASCII strings");
        }
      }
      arg.type = PickleArgType::kString;
      arg.SetView(AsStringView(line));
      break;
    }
    case OperandKind::kStringNlNoEscapePair: {  // GLOBAL, INST: module line, name line
      // load_global decodes each line as strict UTF-8, load_inst as ASCII;
      // both refuse an empty line (bad_readline). The module line is checked
      // before the name line is read, as CPython does.
      auto read_name_line = [&](const char* what) -> Result<Bytes> {
        const uint64_t at = cursor_.Offset();
        CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
        if (line.empty()) {
          return MakeError(ErrorCode::kMalformed, at,
                           std::string("empty ") + what + " line (pickle data was truncated)");
        }
        if (op.code == Opcode::kInst) {
          for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] >= 0x80) return MakeError(ErrorCode::kMalformed, at + i, "INST lines must be ASCII");
          }
        } else {
          CKG_TRY(check_utf8(AsStringView(line), at, false));
        }
        return line;
      };
      CKG_ASSIGN_OR_RETURN(Bytes module, read_name_line("module"));
      CKG_ASSIGN_OR_RETURN(Bytes qualname, read_name_line("name"));
      arg.type = PickleArgType::kGlobal;
      arg.SetView(AsStringView(module));
      arg.SetNameView(AsStringView(qualname));
      break;
    }
    case OperandKind::kString1:
    case OperandKind::kBytes1:
    case OperandKind::kUnicodeString1: {
      uint8_t n;
      if (!cursor_.TryReadU8(n)) {
        CKG_ASSIGN_OR_RETURN(n, cursor_.ReadU8());
      }
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(n, limits_.max_operand_len, "max_operand_len"));
      if (info.operand == OperandKind::kUnicodeString1) {
        CKG_TRY(check_utf8(AsStringView(bytes), at, true));
        arg.type = PickleArgType::kString;
      } else {
        arg.type = PickleArgType::kBytes;
      }
      arg.SetView(AsStringView(bytes));
      break;
    }
    case OperandKind::kString4: {  // BINSTRING: signed length
      CKG_ASSIGN_OR_RETURN(int32_t n, cursor_.ReadI32LE());
      if (n < 0) return MakeError(ErrorCode::kMalformed, op.offset + 1, "BINSTRING pickle has negative byte count");
      CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(static_cast<uint64_t>(n), limits_.max_operand_len, "max_operand_len"));
      arg.type = PickleArgType::kBytes;
      arg.SetView(AsStringView(bytes));
      break;
    }
    case OperandKind::kBytes4:
    case OperandKind::kUnicodeString4: {
      uint32_t n;
      if (!cursor_.TryReadU32LE(n)) {
        CKG_ASSIGN_OR_RETURN(n, cursor_.ReadU32LE());
      }
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(n, limits_.max_operand_len, "max_operand_len"));
      if (info.operand == OperandKind::kUnicodeString4) {
        CKG_TRY(check_utf8(AsStringView(bytes), at, true));
        arg.type = PickleArgType::kString;
      } else {
        arg.type = PickleArgType::kBytes;
      }
      arg.SetView(AsStringView(bytes));
      break;
    }
    case OperandKind::kBytes8:
    case OperandKind::kByteArray8:
    case OperandKind::kUnicodeString8: {
      CKG_ASSIGN_OR_RETURN(uint64_t n, cursor_.ReadU64LE());
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes bytes, read_counted(n, limits_.max_operand_len, "max_operand_len"));
      if (info.operand == OperandKind::kUnicodeString8) {
        CKG_TRY(check_utf8(AsStringView(bytes), at, true));
        arg.type = PickleArgType::kString;
      } else {
        arg.type = PickleArgType::kBytes;
      }
      arg.SetView(AsStringView(bytes));
      break;
    }
    case OperandKind::kUnicodeStringNl: {
      const uint64_t at = cursor_.Offset();
      CKG_ASSIGN_OR_RETURN(Bytes line, read_line());
      if (cut) {
        arg.type = PickleArgType::kString;  // its first max_line_len bytes, as written
        arg.SetView(AsStringView(line));
        break;
      }
      Result<std::string> decoded = py::DecodeRawUnicodeEscape(AsStringView(line));
      if (!decoded) return std::unexpected(Rebase(decoded.error(), at, name));
      arg.type = PickleArgType::kString;
      arg.SetOwned(std::move(*decoded));
      break;
    }
  }
  if (op.code == Opcode::kProto && arg.uint_value > static_cast<uint64_t>(kHighestProtocol)) {
    return MakeError(ErrorCode::kMalformed, op.offset + 1,
                     "unsupported pickle protocol: " + Num(arg.uint_value));
  }
  return OkStatus();
}

Result<uint64_t> FirstPickleEnd(Bytes input, const PickleLimits& limits, uint64_t base_offset, Budget* budget,
                                std::string_view where, bool lenient_operands, std::optional<uint64_t>* frame_end) {
  PickleDecoder decoder(input, limits, base_offset);
  decoder.SetLenientOperands(lenient_operands);
  decoder.SetFrameSplitsAllowed(frame_end != nullptr);
  PickleOp op;
  std::optional<uint64_t> frame;  // the end of the frame being read
  while (true) {
    CKG_TRY(decoder.Next(op));
    if (budget != nullptr) CKG_TRY(budget->Charge(BudgetKind::kOpcodes, 1, op.offset, where, "finding a pickle's end"));
    const uint64_t op_end = decoder.Offset();
    if (op.code == Opcode::kFrame) {
      // A frame begun inside another (a lenient decode reads on): the C
      // unpickler that read the outer one whole is at the outer one's end.
      const uint64_t end = op_end + op.arg.uint_value;
      if (op.arg.uint_value != 0 && (!frame || end > *frame)) frame = end;
      continue;
    }
    if (frame && op_end >= *frame) frame.reset();
    if (op.code == Opcode::kStop) {
      if (frame_end != nullptr) *frame_end = frame;
      return op_end;
    }
  }
}

DecodedStream DecodeStream(Bytes input, const PickleLimits& limits, uint64_t base_offset,
                           uint32_t max_pickles) {
  DecodedStream out;
  PickleDecoder decoder(input, limits, base_offset);
  while (true) {
    if (decoder.BetweenPickles() &&
        (decoder.AtEnd() || (max_pickles != 0 && decoder.NumPicklesFinished() >= max_pickles))) {
      break;
    }
    Result<PickleOp> op = decoder.Next();
    if (!op) {
      out.error = std::move(op).error();
      break;
    }
    out.ops.push_back(std::move(*op));
  }
  out.end_offset = decoder.Offset();
  out.num_pickles = decoder.NumPicklesFinished();
  return out;
}

}  // namespace ckptguard

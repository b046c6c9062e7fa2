// PickleDecoder: a streaming decoder of pickle opcodes (protocols 0 to 5).
//
// It turns bytes into (opcode, offset, decoded operand) one opcode at a time,
// with the operand rules of CPython's C unpickler (_pickle.c), which is what
// torch.load runs. It executes nothing and keeps no stack or memo: that is the
// VM's and the scanner's job. Several pickles may follow one another in one
// stream (the legacy torch format is five); each STOP ends one and the next
// opcode starts the next. Every length, line and count is bounded by
// PickleLimits, and a malformed opcode ends decoding with a precise Error while
// everything decoded before it stays valid.
#ifndef CKPTGUARD_PICKLE_DECODER_H_
#define CKPTGUARD_PICKLE_DECODER_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_opcodes.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// PickleLimits bounds what one decoder will accept. Defaults suit real
// checkpoints (torch writes protocol 2 with short strings and no frames);
// fuzzers use small values. Clamped() caps each field at its hard ceiling.
struct PickleLimits {
  // Longest counted operand in bytes (BINBYTES8, BINUNICODE8, BYTEARRAY8,
  // BINSTRING...). Default 1 GiB: pickled bytes objects can be large, and the
  // operand is a zero-copy view, so this bounds work, not memory. Ceiling 2^40.
  uint64_t max_operand_len = uint64_t{1} << 30;
  // Longest text-opcode line (INT, FLOAT, STRING, UNICODE, GLOBAL, PERSID...),
  // newline excluded. Default 1 MiB: protocol-0 pickles of long strings put
  // them on one line. Ceiling 1 GiB. Text lines are copied when unescaped.
  uint64_t max_line_len = uint64_t{1} << 20;
  // Longest LONG1/LONG4 operand in bytes. Default 64 KiB (a 157,000-digit
  // integer; CPython refuses to print more than 4300 digits anyway). Ceiling
  // 16 MiB.
  uint64_t max_long_len = uint64_t{1} << 16;
  // Largest FRAME length. Default 1 GiB; CPython's pickler makes 64 KiB frames
  // and writes large operands outside them. Ceiling 2^40.
  uint64_t max_frame_len = uint64_t{1} << 30;
  // Most opcodes decoded from one stream, over all its pickles. Default 2^28;
  // a state dict of 10,000 tensors takes about 300,000. Ceiling 2^40.
  uint64_t max_ops = uint64_t{1} << 28;
  // Most pickles in one stream. Default 1024 (legacy torch has 5). Ceiling 2^20.
  uint64_t max_pickles = 1024;

  PickleLimits Clamped() const;
  bool operator==(const PickleLimits&) const = default;
};

// PickleArgType says which fields of a PickleArg hold the operand.
enum class PickleArgType : uint8_t {
  kNone,    // no operand
  kUInt,    // uint_value: PROTO, FRAME, EXT1, EXT2, BININT1, BININT2, BINGET, BINPUT, LONG_BINGET, LONG_BINPUT
  kInt,     // int_value: BININT, EXT4; INT, LONG, LONG1, LONG4, GET, PUT when they fit in int64
  kBigInt,  // Data(): two's-complement little-endian bytes of an int that does not fit in int64
  kBool,    // int_value 0 or 1: INT whose line is two characters that strtol reads as 0 or 1
            // ("00", "01", "+1", " 0", "1\0"), as load_int decides
  kFloat,   // float_value: FLOAT, BINFLOAT
  kBytes,   // Data(): BINBYTES*, SHORT_BINBYTES, BYTEARRAY8, BINSTRING, SHORT_BINSTRING, STRING (unescaped)
  kString,  // Data() as UTF-8 (lone surrogates kept, as CPython's "surrogatepass"): *UNICODE*, PERSID
  kGlobal,  // Data() is the module, Name() the qualified name: GLOBAL, INST
};

// PickleArg is a decoded operand. Counted operands are zero-copy views of the
// decoder's input (valid while the input lives); operands that had to be
// unescaped or converted are owned.
class PickleArg {
 public:
  PickleArgType type = PickleArgType::kNone;
  uint64_t uint_value = 0;
  int64_t int_value = 0;
  double float_value = 0.0;

  // Data returns the bytes/string/module/big-int bytes of the operand.
  std::string_view Data() const { return owned_ ? std::string_view(storage_) : view_; }
  // Name returns the second line of GLOBAL/INST (a view of the input).
  std::string_view Name() const { return name_; }

  void SetView(std::string_view view) {
    view_ = view;
    owned_ = false;
  }
  void SetOwned(std::string data) {
    storage_ = std::move(data);
    owned_ = true;
  }
  // SetNameView sets Name() to `name`, a view of the decoder's input.
  void SetNameView(std::string_view name) { name_ = name; }
  // Reset empties the operand. The owned copy keeps its bytes and capacity
  // (Data() no longer views it), so a decoder loop that reuses one PickleOp
  // allocates only for operands that must be copied, and resetting one
  // costs a few stores.
  void Reset() {
    type = PickleArgType::kNone;
    uint_value = 0;
    int_value = 0;
    float_value = 0.0;
    view_ = {};
    name_ = {};
    owned_ = false;
  }
  // IsOwned is true when Data() views this PickleArg's own copy (unescaped or
  // converted text), false when it views the decoder's input.
  bool IsOwned() const { return owned_; }

 private:
  std::string_view view_;
  std::string_view name_;
  std::string storage_;
  bool owned_ = false;
};

// PickleOp is one decoded opcode: its code, the absolute offset of the opcode
// byte, its length (opcode byte plus operand), the index of the pickle in the
// stream it belongs to (0 for the first), and its operand.
struct PickleOp {
  Opcode code = Opcode::kStop;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t pickle_index = 0;
  PickleArg arg;

  const OpcodeInfo& Info() const { return *FindOpcode(static_cast<uint8_t>(code)); }
};

class PickleDecoder {
 public:
  // PickleDecoder reads `input`, which must outlive the decoder and every op it
  // returns. Offsets are reported as `base_offset` + position in `input`.
  explicit PickleDecoder(Bytes input, const PickleLimits& limits = {}, uint64_t base_offset = 0);

  // SetLenientOperands makes the decoder read as the scanner must: past
  // every operand some unpickler reads. A number or memo key that CPython's
  // C unpickler refuses as a value but the pure-Python one (joblib's, dill's)
  // reads -- a FLOAT, INT or LONG line that float() or int() accepts, a
  // GET/PUT key beyond ssize_t -- or a LONG1/LONG4 operand longer than
  // max_long_len, decodes as kBigInt viewing its raw text or bytes (the
  // machine treats such a memo key as never stored), a FLOAT as NaN; a text
  // line longer than max_line_len is read up to max_operand_len and its
  // first max_line_len bytes are the operand, as written (an INT, LONG,
  // GET or PUT line as kBigInt). Structural errors (no newline, a truncated
  // operand, an unknown opcode) still fail. Off by default (the loader's
  // reading is the C unpickler's).
  void SetLenientOperands(bool lenient) { lenient_operands_ = lenient; }

  // Frames split by an opcode. CPython's picklers end a FRAME at an opcode
  // boundary, write large operands outside any frame and never begin a
  // frame inside another. When the C unpickler reads a frame whole from a
  // file (a frame of 128 KiB or more, or any frame from a file without
  // peek(): torch reads data.pkl through io.BytesIO), it holds just that
  // frame: an opcode whose operand (or line) runs past the frame's end makes
  // it drop the frame's rest and read the operand from after the frame, and
  // a FRAME begun inside it leaves the file at the outer frame's end.
  // pickle.loads reads such bytes straight on and pickle._Unpickler refuses
  // them, so readers disagree about what the pickle holds. The strict
  // decoder (the loader's) fails there; a lenient one (the scanner's) reads
  // on as pickle.loads does and FrameSplit() gives the first such opcode's
  // offset.
  std::optional<uint64_t> FrameSplit() const { return frame_split_; }
  // SetFrameSplitsAllowed: a strict decoder reads on past a frame split
  // too (FirstPickleEnd following where the C unpickler leaves a file).
  void SetFrameSplitsAllowed(bool allowed) { frame_splits_allowed_ = allowed; }

  // Next decodes the next opcode. On failure the decoder stays failed and
  // every later call returns the same error. Calling Next at the end of the
  // input is kTruncated ("pickle exhausted before STOP") inside a pickle, and
  // kInvalidArgument between pickles (check AtEnd first).
  Result<PickleOp> Next();
  // Next(op) decodes into `op`, reusing its storage (the hot loops of the
  // machine and the walkers): same results and errors as Next().
  // The fast path is inline: an opcode without an operand or with a
  // fixed-width integer one, wholly present (most of a state dict's opcodes:
  // MARK, TUPLE*, REDUCE, BINPUT, BINGET, BININT*, NEWFALSE...), decoded as
  // the general path decodes it, without its error plumbing.
  Status Next(PickleOp& op) {
    if (Window() >= 5 && num_ops_ < limits_.max_ops && !between_pickles_ && !failed_) {
      const uint8_t* p = cursor_.Rest().data();
      const uint8_t fixed = opcode_internal::kFixed[p[0]];
      if (fixed != 0) {
        const uint8_t len = fixed & 7;
        op.arg.Reset();
        if (len > 1) {
          // Five bytes or more remain: load four operand bytes and keep the
          // operand's width.
          const uint32_t raw = LoadU32LE(p + 1) & (len == 2 ? 0xffu : len == 3 ? 0xffffu : 0xffffffffu);
          SetFixedInt(op.arg, raw, (fixed & opcode_internal::kFixedSigned) != 0);
        }
        op.code = static_cast<Opcode>(p[0]);
        op.offset = cursor_.Offset();
        op.length = len;
        op.pickle_index = num_finished_;
        Bytes skipped;
        (void)cursor_.TryReadBytes(len, skipped);  // in bounds: 5 bytes or more remain
        ++num_ops_;
        return OkStatus();
      }
      if ((p[0] == static_cast<uint8_t>(Opcode::kBinUnicode) || p[0] == static_cast<uint8_t>(Opcode::kShortBinUnicode)) &&
          NextAsciiText(op, p)) {
        return OkStatus();
      }
    }
    return NextSlow(op);
  }

  // Skim is the byte-level fast path of the pickle machine and the memo
  // scan (a caller that applies or skips the common opcodes itself): while
  // inside a pickle, not failed, and five bytes or more remain
  // and max_ops allows, it calls `op_len(p, remaining)` with the next
  // opcode's bytes (`remaining` of them readable, five or more, never past
  // the end of the frame being read: Next checks an opcode that would) and
  // consumes and counts the opcode as Next would when that returns its
  // length (at most `remaining`), or stops when it returns 0 (the caller
  // then decodes that opcode with Next, which applies every check).
  template <typename F>
  void Skim(F&& op_len) {
    if (between_pickles_ || failed_) return;
    const uint8_t* const data = cursor_.Rest().data();
    const size_t size = Window();
    size_t pos = 0;
    uint64_t ops = num_ops_;
    const uint64_t max_ops = limits_.max_ops;
    while (size - pos >= 5 && ops < max_ops) {
      const uint64_t len = op_len(data + pos, size - pos);
      if (len == 0) break;
      pos += static_cast<size_t>(len);
      ++ops;
    }
    Bytes skipped;
    (void)cursor_.TryReadBytes(pos, skipped);  // in bounds: op_len never passes `remaining`
    num_ops_ = ops;
  }
  // TrySkip consumes and counts an opcode of `len` bytes (a caller that
  // decoded its length itself, as SkipFixed's) when that many remain;
  // otherwise it changes nothing and returns false.
  bool TrySkip(uint64_t len) {
    Bytes skipped;
    if (num_ops_ >= limits_.max_ops || between_pickles_ || failed_ || len > Window() ||
        !cursor_.TryReadBytes(len, skipped)) {
      return false;
    }
    ++num_ops_;
    return true;
  }

  // SkimWindow is the bytes Skim would read from (empty when Skim would
  // read nothing: between pickles, after a failure), for a caller that
  // matches several opcodes at once (the machine's tensor records), which
  // TrySkipOps then consumes.
  Bytes SkimWindow() const {
    if (between_pickles_ || failed_) return {};
    return cursor_.Rest().first(Window());
  }
  // TrySkipOps consumes and counts `ops` opcodes of `len` bytes in all (a
  // caller that decoded them itself from SkimWindow) when they fit the
  // window and max_ops, as Skim would one by one; otherwise it changes
  // nothing and returns false.
  bool TrySkipOps(uint64_t len, uint64_t ops) {
    Bytes skipped;
    if (between_pickles_ || failed_ || ops > limits_.max_ops || num_ops_ > limits_.max_ops - ops || len > Window() ||
        !cursor_.TryReadBytes(len, skipped)) {
      return false;
    }
    num_ops_ += ops;
    return true;
  }
  // IsAscii: every byte of `text` is below 0x80 (valid UTF-8 without
  // looking further), as the inline text paths require.
  static bool IsAscii(const uint8_t* text, uint64_t n) {
    uint64_t bits = 0;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word;
      std::memcpy(&word, text + i, 8);
      bits |= word;
    }
    for (; i < n; ++i) bits |= text[i];
    return (bits & 0x8080808080808080ULL) == 0;
  }

  // AtEnd is true when every byte of the input has been consumed.
  bool AtEnd() const { return cursor_.Empty(); }
  // Rest is the input not consumed yet; limits are the decoder's.
  Bytes Rest() const { return cursor_.Rest(); }
  const PickleLimits& limits() const { return limits_; }
  // BetweenPickles is true before the first opcode and right after a STOP.
  bool BetweenPickles() const { return between_pickles_; }
  // Offset is the absolute offset of the next opcode.
  uint64_t Offset() const { return cursor_.Offset(); }
  // NumOps counts the opcodes decoded (or skipped) so far.
  uint64_t NumOps() const { return num_ops_; }
  // NumPicklesFinished counts the STOPs decoded so far.
  uint32_t NumPicklesFinished() const { return num_finished_; }

  // LoadU32LE reads a UINT4 operand (the inline paths: Next's and the
  // machine's and the memo scan's over Skim's bytes).
  static uint32_t LoadU32LE(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
           (static_cast<uint32_t>(p[3]) << 24);
  }

 private:
  Status NextSlow(PickleOp& op);
  // Window is how many bytes the next opcode may take: to the end of the
  // frame being read, else to the end of the input. (The fast paths stay
  // inside it; NextSlow checks an opcode that crosses a frame's end.)
  size_t Window() const {
    if (frame_end_ == 0) [[likely]] return cursor_.Remaining();  // no frame (torch's protocol 2)
    const uint64_t at = cursor_.Offset();
    return frame_end_ > at ? static_cast<size_t>(frame_end_ - at) : cursor_.Remaining();
  }
  // CheckFrame: `op` (decoded, `op.length` set) against the frame being read.
  Status CheckFrame(const PickleOp& op);
  // NextAsciiText is Next's inline path for BINUNICODE and SHORT_BINUNICODE
  // (a state dict's keys): when the operand is wholly present, within
  // max_operand_len and ASCII (valid UTF-8 without looking further), it
  // decodes the opcode at `p` (five bytes or more remain) as the general
  // path would and returns true; otherwise it changes nothing and returns
  // false, and the general path decodes it (and reports any error).
  bool NextAsciiText(PickleOp& op, const uint8_t* p) {
    const bool short_len = p[0] == static_cast<uint8_t>(Opcode::kShortBinUnicode);
    const uint64_t head = short_len ? 2 : 5;
    const uint64_t n = short_len ? uint64_t{p[1]} : uint64_t{LoadU32LE(p + 1)};
    if (n > limits_.max_operand_len || n > Window() - head) return false;
    const uint8_t* text = p + head;
    if (!IsAscii(text, n)) return false;
    op.arg.Reset();
    op.arg.type = PickleArgType::kString;
    op.arg.SetView(std::string_view(reinterpret_cast<const char*>(text), static_cast<size_t>(n)));
    op.code = static_cast<Opcode>(p[0]);
    op.offset = cursor_.Offset();
    op.length = head + n;
    op.pickle_index = num_finished_;
    Bytes skipped;
    (void)cursor_.TryReadBytes(head + n, skipped);  // in bounds: checked above
    ++num_ops_;
    return true;
  }
  Status DecodeOperand(const OpcodeInfo& info, PickleOp& op);
  // SetFixedInt sets a fixed-width integer operand (UINT1, UINT2, UINT4,
  // INT4) from its little-endian value: the fast path and DecodeOperand
  // share it.
  static void SetFixedInt(PickleArg& arg, uint32_t raw, bool is_signed) {
    if (is_signed) {
      arg.type = PickleArgType::kInt;
      arg.int_value = static_cast<int32_t>(raw);
    } else {
      arg.type = PickleArgType::kUInt;
      arg.uint_value = raw;
    }
  }

  ByteCursor cursor_;
  PickleLimits limits_;
  uint64_t num_ops_ = 0;
  uint32_t num_finished_ = 0;
  bool between_pickles_ = true;
  bool lenient_operands_ = false;
  std::optional<Error> failed_;
  bool frame_splits_allowed_ = false;
  uint64_t frame_end_ = 0;  // absolute end of the frame being read (none when at or below the offset)
  std::optional<uint64_t> frame_split_;
};

// DecodedStream is everything decoded from a stream: the ops of every pickle
// in order, and the error that stopped decoding, if any (the ops before it
// are kept). `end_offset` is the absolute offset where decoding stopped.
struct DecodedStream {
  std::vector<PickleOp> ops;
  std::optional<Error> error;
  uint64_t end_offset = 0;
  uint32_t num_pickles = 0;  // complete pickles (STOPs seen)
};

// DecodeStream decodes pickles one after another until the input ends, an
// error occurs, or `max_pickles` pickles are complete (0 means no such stop;
// the legacy torch format passes 5 because raw storage bytes follow).
// FirstPickleEnd decodes the first pickle of `input` as a stream (its ops are
// not kept) and returns the absolute offset just past its STOP. Each opcode is
// charged to `budget` (BudgetKind::kOpcodes) when given; `where` names the
// input in a budget error; `lenient_operands` decodes as
// PickleDecoder::SetLenientOperands does. When `frame_end` is given, it is
// set to the absolute end of the frame the STOP lies in when frame bytes
// follow the STOP (where the C unpickler leaves a file that it read the
// frame of whole: pickle_views.h; of a frame begun inside another, the
// outer one's), else to nullopt; the decode then reads on past frame splits
// (PickleDecoder::FrameSplit). Failure: the decoder's
// error, or the budget's (Error::limit set).
Result<uint64_t> FirstPickleEnd(Bytes input, const PickleLimits& limits = {}, uint64_t base_offset = 0,
                                Budget* budget = nullptr, std::string_view where = {}, bool lenient_operands = false,
                                std::optional<uint64_t>* frame_end = nullptr);

DecodedStream DecodeStream(Bytes input, const PickleLimits& limits = {}, uint64_t base_offset = 0,
                           uint32_t max_pickles = 0);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PICKLE_DECODER_H_

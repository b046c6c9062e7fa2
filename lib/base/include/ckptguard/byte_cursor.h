// ByteCursor: the one bounds-checked reader of untrusted bytes.
//
// A non-owning view of a byte span plus a read position. Every read checks the
// requested length against what remains (by subtraction, never by forming a
// pointer past the end) and a failed read leaves the cursor unchanged. Errors
// are kTruncated with the absolute offset of the failed read (`base_offset` is
// added so a cursor over a zip entry reports offsets within the whole file when
// asked to).
#ifndef CKPTGUARD_BYTE_CURSOR_H_
#define CKPTGUARD_BYTE_CURSOR_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

using Bytes = std::span<const uint8_t>;

// AsStringView views `bytes` as characters; the view lives as long as `bytes`.
inline std::string_view AsStringView(Bytes bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}
// AsBytes views a string's characters as bytes.
inline Bytes AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

class ByteCursor {
 public:
  // ByteCursor reads `data`, which must outlive the cursor. `base_offset` is
  // added to every offset the cursor reports (Offset(), errors).
  explicit ByteCursor(Bytes data, uint64_t base_offset = 0)
      : data_(data), base_offset_(base_offset) {}

  // Offset is the absolute offset of the next byte to be read.
  uint64_t Offset() const { return base_offset_ + pos_; }
  // Position is the offset of the next byte relative to the start of the span.
  size_t Position() const { return pos_; }
  size_t Remaining() const { return data_.size() - pos_; }
  bool Empty() const { return pos_ == data_.size(); }
  // Rest views the unread bytes without consuming them.
  Bytes Rest() const { return data_.subspan(pos_); }

  // The hot readers are inline (a pickle decode calls them per opcode); the
  // error path is not.
  Result<uint8_t> ReadU8() {
    CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(1));
    return p[0];
  }
  Result<uint16_t> ReadU16LE() {
    CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(2));
    return static_cast<uint16_t>(p[0] | (p[1] << 8));
  }
  Result<uint32_t> ReadU32LE() {
    CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(4));
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  }
  // TryRead* are the hot paths' readers: they read and return true, or
  // return false and consume nothing (the caller then asks Read* for the
  // precise error). No Result is built on the way.
  bool TryReadU8(uint8_t& out) {
    if (pos_ >= data_.size()) return false;
    out = data_[pos_++];
    return true;
  }
  bool TryReadU16LE(uint16_t& out) {
    if (data_.size() - pos_ < 2) return false;
    const uint8_t* p = data_.data() + pos_;
    out = static_cast<uint16_t>(p[0] | (p[1] << 8));
    pos_ += 2;
    return true;
  }
  bool TryReadU32LE(uint32_t& out) {
    if (data_.size() - pos_ < 4) return false;
    const uint8_t* p = data_.data() + pos_;
    out = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
          (static_cast<uint32_t>(p[3]) << 24);
    pos_ += 4;
    return true;
  }
  bool TryReadBytes(uint64_t n, Bytes& out) {
    if (n > data_.size() - pos_) return false;
    out = Bytes(data_.data() + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return true;
  }
  Result<int32_t> ReadI32LE();
  Result<uint64_t> ReadU64LE();
  Result<double> ReadF64BE();
  // PeekU8 returns the next byte without consuming it.
  Result<uint8_t> PeekU8() const;
  // ReadBytes consumes `n` bytes and returns a view of them (zero-copy).
  Result<Bytes> ReadBytes(uint64_t n) {
    CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(n));
    return Bytes(p, static_cast<size_t>(n));
  }
  // ReadCursor consumes `n` bytes and returns a cursor over them whose offsets
  // continue this cursor's absolute offsets.
  Result<ByteCursor> ReadCursor(uint64_t n);
  // ReadLine consumes bytes up to and including the next '\n' and returns them
  // without the newline. It looks at no more than `max_len` bytes before the
  // newline: a longer line is kLimitExceeded, a missing newline kTruncated.
  Result<Bytes> ReadLine(uint64_t max_len);
  // Skip consumes `n` bytes.
  Status Skip(uint64_t n) {
    CKG_TRY(Take(n));
    return OkStatus();
  }

 private:
  // Take is the only place that advances the position: it checks `n` against
  // the remaining length and returns a pointer to the `n` bytes, or an error
  // leaving the cursor unchanged.
  Result<const uint8_t*> Take(uint64_t n) {
    if (n > data_.size() - pos_) return Short(n);
    const uint8_t* p = data_.data() + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  // Short is Take's error: kTruncated saying how many bytes were wanted.
  std::unexpected<Error> Short(uint64_t n) const;

  Bytes data_;
  size_t pos_ = 0;
  uint64_t base_offset_ = 0;
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_BYTE_CURSOR_H_

#include "ckptguard/byte_cursor.h"

#include <bit>
#include <cstring>
#include <string>

namespace ckptguard {

std::unexpected<Error> ByteCursor::Short(uint64_t n) const {
  return MakeError(ErrorCode::kTruncated, Offset(),
                   "needs " + std::to_string(n) + " bytes, " + std::to_string(data_.size() - pos_) + " remain");
}


Result<uint8_t> ByteCursor::PeekU8() const {
  if (pos_ == data_.size()) {
    return MakeError(ErrorCode::kTruncated, Offset(), "needs 1 byte, 0 remain");
  }
  return data_[pos_];
}



Result<int32_t> ByteCursor::ReadI32LE() {
  CKG_ASSIGN_OR_RETURN(uint32_t u, ReadU32LE());
  return std::bit_cast<int32_t>(u);
}

Result<uint64_t> ByteCursor::ReadU64LE() {
  CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(8));
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

Result<double> ByteCursor::ReadF64BE() {
  CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(8));
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return std::bit_cast<double>(v);
}


Result<ByteCursor> ByteCursor::ReadCursor(uint64_t n) {
  uint64_t start = Offset();
  CKG_ASSIGN_OR_RETURN(Bytes bytes, ReadBytes(n));
  return ByteCursor(bytes, start);
}

Result<Bytes> ByteCursor::ReadLine(uint64_t max_len) {
  size_t avail = data_.size() - pos_;
  // Search one byte past max_len so a newline right at the limit is accepted.
  size_t window = max_len < avail ? static_cast<size_t>(max_len) + 1 : avail;
  const void* nl = window == 0 ? nullptr : std::memchr(data_.data() + pos_, '\n', window);
  if (nl == nullptr) {
    if (window < avail) {
      return MakeError(ErrorCode::kLimitExceeded, Offset(),
                       "line longer than max_line_len (" + std::to_string(max_len) + ")");
    }
    return MakeError(ErrorCode::kTruncated, Offset(), "no newline before end of input");
  }
  size_t line_len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (data_.data() + pos_));
  CKG_ASSIGN_OR_RETURN(const uint8_t* p, Take(line_len + 1));
  return Bytes(p, line_len);
}


}  // namespace ckptguard

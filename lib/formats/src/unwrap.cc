#include "unwrap.h"

#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>

#include <algorithm>
#include <array>

namespace ckptguard {
namespace {

constexpr size_t kChunk = size_t{1} << 20;
constexpr uint64_t kRatioFloor = uint64_t{1} << 16;
// xz's decoder may use this much memory for its dictionary; streams asking
// for more are refused (xz -9 needs 65 MiB).
constexpr uint64_t kXzMemLimit = uint64_t{256} << 20;

std::string Num(uint64_t v) { return std::to_string(v); }

// Sink appends decompressed output while enforcing both limits.
struct Sink {
  std::string& out;
  uint64_t in_len;
  uint64_t max_len;
  uint64_t max_ratio;
  std::string_view name;
  Budget* budget = nullptr;
  uint64_t charged = 0;  // bytes of `out` already charged to the budget

  Status Check(uint64_t at) {
    if (budget != nullptr && out.size() > charged) {
      CKG_TRY(budget->Charge(BudgetKind::kInflatedBytes, out.size() - charged, at, name, "unwrap"));
      charged = out.size();
    }
    if (out.size() > max_len) {
      return MakeError(ErrorCode::kLimitExceeded, at,
                       "max_unwrapped_len (" + Num(max_len) + ") exceeded by " + std::string(name) + " content");
    }
    if (out.size() > kRatioFloor && out.size() / std::max<uint64_t>(in_len, 1) > max_ratio) {
      return MakeError(ErrorCode::kLimitExceeded, at,
                       "max_ratio (" + Num(max_ratio) + ") exceeded: " + Num(in_len) + " " + std::string(name) +
                           " bytes inflate past " + Num(out.size()));
    }
    return OkStatus();
  }
};

bool StartsWith(Bytes data, std::initializer_list<uint8_t> magic) {
  if (data.size() < magic.size()) return false;
  return std::equal(magic.begin(), magic.end(), data.begin());
}

Result<Unwrapped> Gunzip(Bytes data, Sink sink) {
  Unwrapped result;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return MakeError(ErrorCode::kInternal, 0, "inflateInit2 failed");
  std::array<uint8_t, kChunk> buf;
  size_t pos = 0;
  while (true) {
    zs.next_in = const_cast<Bytef*>(data.data() + pos);
    zs.avail_in = static_cast<uInt>(std::min(data.size() - pos, kChunk));
    const uInt before_in = zs.avail_in;
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    int rc = inflate(&zs, Z_NO_FLUSH);
    pos += before_in - zs.avail_in;
    sink.out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - zs.avail_out);
    if (Status st = sink.Check(pos); !st) {
      inflateEnd(&zs);
      return std::unexpected(st.error());
    }
    if (rc == Z_STREAM_END) {
      // Another member may follow (gzip files may be concatenated).
      if (pos < data.size() && StartsWith(data.subspan(pos), {0x1f, 0x8b})) {
        inflateReset(&zs);
        continue;
      }
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      const std::string msg = zs.msg != nullptr ? zs.msg : "corrupt data";
      inflateEnd(&zs);
      return MakeError(ErrorCode::kMalformed, pos, "gzip: " + msg);
    }
    if (rc == Z_BUF_ERROR && pos >= data.size()) {
      inflateEnd(&zs);
      return MakeError(ErrorCode::kTruncated, pos, "gzip stream ends before its end marker");
    }
  }
  inflateEnd(&zs);
  result.data = std::move(sink.out);
  return result;
}

Result<Unwrapped> Bunzip2(Bytes data, Sink sink) {
  Unwrapped result;
  std::array<char, kChunk> buf;
  size_t pos = 0;
  while (true) {
    bz_stream bz{};
    if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK) return MakeError(ErrorCode::kInternal, pos, "bzip2 init failed");
    int rc = BZ_OK;
    while (rc == BZ_OK) {
      bz.next_in = const_cast<char*>(reinterpret_cast<const char*>(data.data() + pos));
      bz.avail_in = static_cast<unsigned>(std::min(data.size() - pos, kChunk));
      const unsigned before_in = bz.avail_in;
      bz.next_out = buf.data();
      bz.avail_out = static_cast<unsigned>(buf.size());
      rc = BZ2_bzDecompress(&bz);
      pos += before_in - bz.avail_in;
      const size_t produced = buf.size() - bz.avail_out;
      sink.out.append(buf.data(), produced);
      if (Status st = sink.Check(pos); !st) {
        BZ2_bzDecompressEnd(&bz);
        return std::unexpected(st.error());
      }
      if (rc == BZ_OK && before_in == bz.avail_in && produced == 0) {
        BZ2_bzDecompressEnd(&bz);
        return MakeError(ErrorCode::kTruncated, pos, "bzip2 stream ends before its end marker");
      }
    }
    BZ2_bzDecompressEnd(&bz);
    if (rc != BZ_STREAM_END) {
      return MakeError(ErrorCode::kMalformed, pos, "bzip2: corrupt data (error " + std::to_string(rc) + ")");
    }
    if (pos < data.size() && StartsWith(data.subspan(pos), {'B', 'Z', 'h'})) continue;
    result.trailing_offset = pos;
    result.trailing_len = data.size() - pos;
    break;
  }
  result.data = std::move(sink.out);
  return result;
}

Result<Unwrapped> Unxz(Bytes data, Sink sink) {
  Unwrapped result;
  lzma_stream strm = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&strm, kXzMemLimit, LZMA_CONCATENATED) != LZMA_OK) {
    return MakeError(ErrorCode::kInternal, 0, "xz decoder init failed");
  }
  std::array<uint8_t, kChunk> buf;
  size_t pos = 0;
  lzma_ret rc = LZMA_OK;
  while (rc == LZMA_OK) {
    strm.next_in = data.data() + pos;
    strm.avail_in = std::min(data.size() - pos, kChunk);
    const size_t before_in = strm.avail_in;
    strm.next_out = buf.data();
    strm.avail_out = buf.size();
    rc = lzma_code(&strm, pos + before_in >= data.size() ? LZMA_FINISH : LZMA_RUN);
    pos += before_in - strm.avail_in;
    sink.out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - strm.avail_out);
    if (Status st = sink.Check(pos); !st) {
      lzma_end(&strm);
      return std::unexpected(st.error());
    }
  }
  lzma_end(&strm);
  if (rc == LZMA_MEMLIMIT_ERROR) {
    return MakeError(ErrorCode::kLimitExceeded, pos, "xz stream needs more than 256 MiB to decode");
  }
  if (rc == LZMA_BUF_ERROR) return MakeError(ErrorCode::kTruncated, pos, "xz stream ends before its end marker");
  if (rc != LZMA_STREAM_END) return MakeError(ErrorCode::kMalformed, pos, "xz: corrupt data (error " + std::to_string(rc) + ")");
  result.trailing_offset = pos;
  result.trailing_len = data.size() - pos;
  result.data = std::move(sink.out);
  return result;
}

}  // namespace

std::optional<Wrapper> DetectWrapper(Bytes data) {
  if (StartsWith(data, {0x1f, 0x8b, 0x08})) return Wrapper::kGzip;
  if (data.size() >= 4 && StartsWith(data, {'B', 'Z', 'h'}) && data[3] >= '1' && data[3] <= '9') return Wrapper::kBzip2;
  if (StartsWith(data, {0xfd, '7', 'z', 'X', 'Z', 0x00})) return Wrapper::kXz;
  return std::nullopt;
}

Result<Unwrapped> Unwrap(Wrapper wrapper, Bytes data, uint64_t max_len, uint64_t max_ratio, Budget* budget) {
  std::string out;
  Sink sink{out, data.size(), max_len, max_ratio, WrapperName(wrapper), budget};
  switch (wrapper) {
    case Wrapper::kGzip: return Gunzip(data, sink);
    case Wrapper::kBzip2: return Bunzip2(data, sink);
    case Wrapper::kXz: return Unxz(data, sink);
  }
  return MakeError(ErrorCode::kInternal, 0, "unknown wrapper");
}

}  // namespace ckptguard

#include "unwrap.h"

#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>

#include <algorithm>
#include <vector>

namespace ckptguard {
namespace {

constexpr size_t kChunk = size_t{1} << 20;
constexpr uint64_t kRatioFloor = uint64_t{1} << 16;
// xz's decoder may use this much memory for its dictionary; streams asking
// for more are refused (xz -9 needs 65 MiB).
constexpr uint64_t kXzMemLimit = uint64_t{256} << 20;
// Most streams (gzip members, xz/bzip2/zlib streams) read from one wrapper:
// each costs a decoder set-up, so a file of empty members is bounded here.
constexpr uint32_t kMaxStreams = 65'536;

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

bool ZlibHeaderOk(Bytes data) {
  // joblib recognises its zlib files by the first byte 0x78 (deflate with a
  // 32 KiB window); zlib itself checks the header checksum and FDICT.
  return data.size() >= 2 && data[0] == 0x78 && ((data[0] << 8) | data[1]) % 31 == 0 && (data[1] & 0x20) == 0;
}

bool AloneHeaderOk(Bytes data) {
  if (data.size() < 13 || data[0] >= 9 * 5 * 5) return false;
  // Little-endian fields at 1 (dictionary size) and 5 (uncompressed size),
  // read in place: every zip member that is not a pickle or an archive is
  // tested here.
  uint32_t dict = 0;
  for (size_t i = 4; i >= 1; --i) dict = (dict << 8) | data[i];
  uint64_t size = 0;
  for (size_t i = 12; i >= 5; --i) size = (size << 8) | data[i];
  if (dict != UINT32_MAX) {
    // liblzma's alone_decoder with picky = true: 2^n or 2^n + 2^(n-1) (and
    // 0, whose dict - 1 wraps round to pass the same test).
    uint32_t d = dict - 1;
    d |= d >> 2;
    d |= d >> 3;
    d |= d >> 4;
    d |= d >> 8;
    d |= d >> 16;
    ++d;
    if (d != dict) return false;
  }
  return size == UINT64_MAX || size < (uint64_t{1} << 38);
}

// Stream is one decoder's run over data[pos...]: what it consumed and how it ended.
enum class StreamEnd { kComplete, kCorrupt, kTruncated };
struct StreamRun {
  StreamEnd end = StreamEnd::kComplete;
  uint64_t consumed = 0;  // input bytes the decoder took
  uint64_t produced = 0;  // output bytes appended to the sink
  std::string message;    // the decoder's own words when it failed
};

// InflateStream runs one zlib (window_bits > 0) or raw deflate (< 0) stream.
Result<StreamRun> InflateStream(Bytes data, uint64_t pos, int window_bits, Sink& sink, std::vector<uint8_t>& buf,
                                uint32_t* crc_out) {
  StreamRun run;
  z_stream zs{};
  if (inflateInit2(&zs, window_bits) != Z_OK) return MakeError(ErrorCode::kInternal, pos, "inflateInit2 failed");
  uint32_t crc = static_cast<uint32_t>(crc32(0, nullptr, 0));
  uint64_t at = pos;
  while (true) {
    zs.next_in = const_cast<Bytef*>(data.data() + at);
    zs.avail_in = static_cast<uInt>(std::min<uint64_t>(data.size() - at, kChunk));
    const uInt before_in = zs.avail_in;
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    const int rc = inflate(&zs, Z_NO_FLUSH);
    at += before_in - zs.avail_in;
    const size_t produced = buf.size() - zs.avail_out;
    sink.out.append(reinterpret_cast<const char*>(buf.data()), produced);
    crc = static_cast<uint32_t>(crc32(crc, buf.data(), static_cast<uInt>(produced)));
    run.produced += produced;
    if (Status st = sink.Check(at); !st) {
      inflateEnd(&zs);
      return std::unexpected(st.error());
    }
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      run.end = StreamEnd::kCorrupt;
      run.message = zs.msg != nullptr ? zs.msg : "corrupt data";
      break;
    }
    if (at >= data.size() && produced == 0) {
      run.end = StreamEnd::kTruncated;
      break;
    }
  }
  inflateEnd(&zs);
  run.consumed = at - pos;
  if (crc_out != nullptr) *crc_out = crc;
  return run;
}

// Gunzip reads members as Python's gzip._GzipReader does: its own header
// parser (reserved flag bits and the header CRC are not checked), raw
// deflate, the CRC-32 and size trailer (checked only after the member's data
// has been handed out), zero bytes between members skipped, anything else
// after a member is trailing data (gzip raises only when asked for more).
Result<Unwrapped> Gunzip(Bytes data, Sink sink) {
  Unwrapped result;
  std::vector<uint8_t> buf(kChunk);
  uint64_t pos = 0;
  auto fail = [&](ErrorCode code, uint64_t at, std::string detail) {
    result.error = Error{code, at, "gzip", std::move(detail)};
  };
  while (pos < data.size()) {
    if (result.num_streams >= kMaxStreams) {
      return MakeError(ErrorCode::kLimitExceeded, pos, "more than " + Num(kMaxStreams) + " gzip members");
    }
    ByteCursor c(data.subspan(static_cast<size_t>(pos)), pos);
    if (!StartsWith(data.subspan(static_cast<size_t>(pos)), {0x1f, 0x8b})) {
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    (void)c.Skip(2);
    Result<uint8_t> method = c.ReadU8();
    Result<uint8_t> flags = c.ReadU8();
    if (!method || !flags || !c.Skip(6)) {
      fail(ErrorCode::kTruncated, pos, "gzip member header is truncated");
      break;
    }
    if (*method != 8) {
      fail(ErrorCode::kMalformed, pos + 2, "gzip member with unknown compression method " + Num(*method));
      break;
    }
    bool header_ok = true;
    if (*flags & 0x04) {  // FEXTRA
      Result<uint16_t> len = c.ReadU16LE();
      header_ok = len && c.Skip(*len);
    }
    for (uint8_t bit : {uint8_t{0x08}, uint8_t{0x10}}) {  // FNAME, FCOMMENT: up to a NUL or the end
      if (!header_ok || (*flags & bit) == 0) continue;
      while (true) {
        Result<uint8_t> ch = c.ReadU8();
        if (!ch || *ch == 0) break;
      }
    }
    if (header_ok && (*flags & 0x02)) header_ok = static_cast<bool>(c.Skip(2));  // FHCRC, not checked
    if (!header_ok) {
      fail(ErrorCode::kTruncated, pos, "gzip member header is truncated");
      break;
    }
    const uint64_t body = c.Offset();
    uint32_t crc = 0;
    CKG_ASSIGN_OR_RETURN(StreamRun run, InflateStream(data, body, -MAX_WBITS, sink, buf, &crc));
    const uint64_t end = body + run.consumed;
    if (run.end == StreamEnd::kCorrupt) {
      fail(ErrorCode::kMalformed, end, "gzip: " + run.message);
      break;
    }
    if (run.end == StreamEnd::kTruncated) {
      fail(ErrorCode::kTruncated, end, "gzip member ends before its end marker");
      break;
    }
    ByteCursor trailer(data.subspan(static_cast<size_t>(end)), end);
    Result<uint32_t> want_crc = trailer.ReadU32LE();
    Result<uint32_t> want_len = trailer.ReadU32LE();
    if (!want_crc || !want_len) {
      fail(ErrorCode::kTruncated, end, "gzip member ends inside its CRC/size trailer");
      break;
    }
    if (*want_crc != crc || *want_len != static_cast<uint32_t>(run.produced)) {
      fail(ErrorCode::kMalformed, end, "gzip member CRC-32 or length does not match its trailer");
      break;
    }
    ++result.num_streams;
    pos = trailer.Offset();
    while (pos < data.size() && data[pos] == 0) ++pos;  // padding gzip skips
  }
  result.data = std::move(sink.out);
  return result;
}

// Unzlib reads concatenated zlib streams (joblib's BinaryZlibFile goes on to
// the next stream; zlib.decompress stops after the first).
Result<Unwrapped> Unzlib(Bytes data, Sink sink) {
  Unwrapped result;
  std::vector<uint8_t> buf(kChunk);
  uint64_t pos = 0;
  while (pos < data.size()) {
    if (result.num_streams >= kMaxStreams) {
      return MakeError(ErrorCode::kLimitExceeded, pos, "more than " + Num(kMaxStreams) + " zlib streams");
    }
    if (!ZlibHeaderOk(data.subspan(static_cast<size_t>(pos)))) {
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    CKG_ASSIGN_OR_RETURN(StreamRun run, InflateStream(data, pos, MAX_WBITS, sink, buf, nullptr));
    pos += run.consumed;
    if (run.end != StreamEnd::kComplete) {
      result.error = Error{run.end == StreamEnd::kCorrupt ? ErrorCode::kMalformed : ErrorCode::kTruncated, pos,
                           "zlib",
                           run.end == StreamEnd::kCorrupt ? "zlib: " + run.message
                                                          : std::string("zlib stream ends before its end marker")};
      break;
    }
    ++result.num_streams;
  }
  result.data = std::move(sink.out);
  return result;
}

// JoblibZfBody: where the zlib data of joblib's pre-0.10 compressed format
// begins ("ZF", then the uncompressed length as Python's hex() padded with
// spaces to 19 bytes, which joblib reads back with int(text, 16), then an
// optional space some writers added: numpy_pickle_compat.read_zfile), or
// nullopt when `data` is not one.
std::optional<size_t> JoblibZfBody(Bytes data) {
  constexpr size_t kPrefix = 2;
  constexpr size_t kLenField = 19;  // len(hex(2**64))
  if (data.size() < kPrefix + kLenField + 2 || data[0] != 'Z' || data[1] != 'F') return std::nullopt;
  // int(text, 16): ASCII whitespace around, an optional sign and 0x prefix,
  // hex digits with single underscores between them.
  auto space = [](uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  auto hex = [](uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
  size_t i = kPrefix;
  const size_t end = kPrefix + kLenField;
  while (i < end && space(data[i])) ++i;
  if (i < end && (data[i] == '+' || data[i] == '-')) ++i;
  if (i + 1 < end && data[i] == '0' && (data[i + 1] == 'x' || data[i + 1] == 'X')) {
    i += 2;
    if (i < end && data[i] == '_') ++i;
  }
  size_t digits = 0;
  while (i < end && hex(data[i])) {
    ++digits;
    ++i;
    if (i + 1 < end && data[i] == '_' && hex(data[i + 1])) ++i;
  }
  if (digits == 0) return std::nullopt;
  while (i < end && space(data[i])) ++i;
  if (i != end) return std::nullopt;
  return data[end] == ' ' ? end + 1 : end;
}

// UnJoblibZf reads joblib's "ZF" format: the header, then zlib streams.
// Offsets are of the whole file.
Result<Unwrapped> UnJoblibZf(Bytes data, Sink sink) {
  const std::optional<size_t> body = JoblibZfBody(data);
  if (!body) return MakeError(ErrorCode::kMalformed, 0, "not a joblib ZF header");
  CKG_ASSIGN_OR_RETURN(Unwrapped u, Unzlib(data.subspan(*body), std::move(sink)));
  if (u.trailing_len > 0) u.trailing_offset += *body;
  if (u.error) u.error->offset += *body;
  if (u.num_streams == 0 && !u.error) {
    u.error = Error{ErrorCode::kMalformed, *body, "joblib-zf", "no zlib stream after the joblib ZF header"};
  }
  return u;
}

// Bunzip2 reads concatenated bzip2 streams as bz2.BZ2File does: after a
// stream, bytes that do not start another one are trailing data it ignores.
Result<Unwrapped> Bunzip2(Bytes data, Sink sink) {
  Unwrapped result;
  std::vector<char> buf(kChunk);
  uint64_t pos = 0;
  while (pos < data.size()) {
    if (result.num_streams >= kMaxStreams) {
      return MakeError(ErrorCode::kLimitExceeded, pos, "more than " + Num(kMaxStreams) + " bzip2 streams");
    }
    if (!StartsWith(data.subspan(static_cast<size_t>(pos)), {'B', 'Z', 'h'})) {
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    bz_stream bz{};
    if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK) return MakeError(ErrorCode::kInternal, pos, "bzip2 init failed");
    int rc = BZ_OK;
    uint64_t produced_total = 0;
    while (rc == BZ_OK) {
      bz.next_in = const_cast<char*>(reinterpret_cast<const char*>(data.data() + pos));
      bz.avail_in = static_cast<unsigned>(std::min<uint64_t>(data.size() - pos, kChunk));
      const unsigned before_in = bz.avail_in;
      bz.next_out = buf.data();
      bz.avail_out = static_cast<unsigned>(buf.size());
      rc = BZ2_bzDecompress(&bz);
      pos += before_in - bz.avail_in;
      const size_t produced = buf.size() - bz.avail_out;
      produced_total += produced;
      sink.out.append(buf.data(), produced);
      if (Status st = sink.Check(pos); !st) {
        BZ2_bzDecompressEnd(&bz);
        return std::unexpected(st.error());
      }
      if (rc == BZ_OK && before_in == bz.avail_in && produced == 0) {
        rc = BZ_UNEXPECTED_EOF;
      }
    }
    BZ2_bzDecompressEnd(&bz);
    if (rc == BZ_STREAM_END) {
      ++result.num_streams;
      continue;
    }
    if (result.num_streams > 0 && produced_total == 0 && rc != BZ_UNEXPECTED_EOF) {
      // BZ2File ignores a next "stream" that fails at once (trailing data).
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    result.error = rc == BZ_UNEXPECTED_EOF
                       ? Error{ErrorCode::kTruncated, pos, "bzip2", "bzip2 stream ends before its end marker"}
                       : Error{ErrorCode::kMalformed, pos, "bzip2", "bzip2: corrupt data (error " + std::to_string(rc) + ")"};
    break;
  }
  result.data = std::move(sink.out);
  return result;
}

// RunLzma drives an initialised liblzma decoder over data[pos...] to its end.
Result<StreamRun> RunLzma(lzma_stream& strm, Bytes data, uint64_t pos, Sink& sink, std::vector<uint8_t>& buf) {
  StreamRun run;
  uint64_t at = pos;
  lzma_ret rc = LZMA_OK;
  while (rc == LZMA_OK) {
    strm.next_in = data.data() + at;
    strm.avail_in = std::min<uint64_t>(data.size() - at, kChunk);
    const size_t before_in = strm.avail_in;
    strm.next_out = buf.data();
    strm.avail_out = buf.size();
    rc = lzma_code(&strm, at + before_in >= data.size() ? LZMA_FINISH : LZMA_RUN);
    at += before_in - strm.avail_in;
    const size_t produced = buf.size() - strm.avail_out;
    sink.out.append(reinterpret_cast<const char*>(buf.data()), produced);
    run.produced += produced;
    if (Status st = sink.Check(at); !st) {
      lzma_end(&strm);
      return std::unexpected(st.error());
    }
  }
  lzma_end(&strm);
  run.consumed = at - pos;
  if (rc == LZMA_MEMLIMIT_ERROR) {
    return MakeError(ErrorCode::kLimitExceeded, at, "an LZMA stream needs more than 256 MiB to decode");
  }
  if (rc == LZMA_BUF_ERROR) {
    run.end = StreamEnd::kTruncated;
  } else if (rc != LZMA_STREAM_END) {
    run.end = StreamEnd::kCorrupt;
    run.message = "error " + std::to_string(static_cast<int>(rc));
  }
  return run;
}

// Unlzma reads what lzma.open (FORMAT_AUTO) reads: xz streams and LZMA-alone
// streams, one after another; bytes that start no stream are trailing data
// (LZMAFile ignores them). LZMAFile starts its next decoder right where an
// xz stream ended: zeros there that make an LZMA-alone header (properties
// 0, dictionary size 0) start a stream. Other zero padding is skipped (a
// further xz stream after it is read, though LZMAFile would stop: more
// than it reads, never less).
Result<Unwrapped> Unlzma(Bytes data, Sink sink) {
  Unwrapped result;
  std::vector<uint8_t> buf(kChunk);
  uint64_t pos = 0;
  while (pos < data.size()) {
    if (result.num_streams >= kMaxStreams) {
      return MakeError(ErrorCode::kLimitExceeded, pos, "more than " + Num(kMaxStreams) + " xz/lzma streams");
    }
    const Bytes rest = data.subspan(static_cast<size_t>(pos));
    lzma_stream strm = LZMA_STREAM_INIT;
    const bool xz = StartsWith(rest, {0xfd, '7', 'z', 'X', 'Z', 0x00});
    if (xz) {
      if (lzma_stream_decoder(&strm, kXzMemLimit, 0) != LZMA_OK) {
        return MakeError(ErrorCode::kInternal, pos, "xz decoder init failed");
      }
    } else if (AloneHeaderOk(rest)) {
      if (lzma_alone_decoder(&strm, kXzMemLimit) != LZMA_OK) {
        return MakeError(ErrorCode::kInternal, pos, "lzma decoder init failed");
      }
    } else {
      result.trailing_offset = pos;
      result.trailing_len = data.size() - pos;
      break;
    }
    CKG_ASSIGN_OR_RETURN(StreamRun run, RunLzma(strm, data, pos, sink, buf));
    if (run.end != StreamEnd::kComplete) {
      if (result.num_streams > 0 && run.produced == 0 && run.end == StreamEnd::kCorrupt) {
        result.trailing_offset = pos;  // LZMAFile ignores a next stream that fails at once
        result.trailing_len = data.size() - pos;
        break;
      }
      const std::string name = xz ? "xz" : "lzma";
      result.error = run.end == StreamEnd::kTruncated
                         ? Error{ErrorCode::kTruncated, pos + run.consumed, name, name + " stream ends before its end marker"}
                         : Error{ErrorCode::kMalformed, pos + run.consumed, name, name + ": corrupt data (" + run.message + ")"};
      break;
    }
    ++result.num_streams;
    pos += run.consumed;
    if (xz && !AloneHeaderOk(data.subspan(static_cast<size_t>(pos)))) {
      while (pos < data.size() && data[pos] == 0) ++pos;  // stream padding
    }
  }
  result.data = std::move(sink.out);
  return result;
}

// UnzipLzmaMember reads a zip member of method 14 as zipfile's LZMADecompressor:
// version (2 bytes), properties length (2), properties, then raw LZMA1.
Result<Unwrapped> UnzipLzmaMember(Bytes data, Sink sink) {
  Unwrapped result;
  ByteCursor c(data);
  Result<uint16_t> version = c.ReadU16LE();
  Result<uint16_t> props_len = version ? c.ReadU16LE() : version;
  Result<Bytes> props = props_len ? c.ReadBytes(*props_len) : Result<Bytes>(std::unexpected(props_len.error()));
  if (!props) {
    result.error = Error{ErrorCode::kTruncated, 0, "lzma", "zip LZMA member header is truncated"};
    return result;
  }
  lzma_filter filters[2] = {{LZMA_FILTER_LZMA1, nullptr}, {LZMA_VLI_UNKNOWN, nullptr}};
  if (lzma_properties_decode(&filters[0], nullptr, props->data(), props->size()) != LZMA_OK) {
    result.error = Error{ErrorCode::kMalformed, 4, "lzma", "zip LZMA member has bad LZMA1 properties"};
    return result;
  }
  const auto* options = static_cast<const lzma_options_lzma*>(filters[0].options);
  if (options->dict_size > kXzMemLimit) {
    free(filters[0].options);
    return MakeError(ErrorCode::kLimitExceeded, 4, "an LZMA stream needs more than 256 MiB to decode");
  }
  lzma_stream strm = LZMA_STREAM_INIT;
  const lzma_ret init = lzma_raw_decoder(&strm, filters);
  free(filters[0].options);
  if (init != LZMA_OK) return MakeError(ErrorCode::kInternal, 0, "lzma raw decoder init failed");
  std::vector<uint8_t> buf(kChunk);
  const uint64_t body = c.Offset();
  CKG_ASSIGN_OR_RETURN(StreamRun run, RunLzma(strm, data, body, sink, buf));
  // Without an end marker the raw decoder runs out of input: zipfile stops
  // at the member's compressed size, so that is a complete member too.
  if (run.end == StreamEnd::kCorrupt) {
    result.error = Error{ErrorCode::kMalformed, body + run.consumed, "lzma", "lzma: corrupt data (" + run.message + ")"};
  } else {
    result.num_streams = 1;
  }
  result.data = std::move(sink.out);
  return result;
}

}  // namespace

std::optional<Wrapper> DetectWrapper(Bytes data) {
  if (StartsWith(data, {0x1f, 0x8b, 0x08})) return Wrapper::kGzip;
  if (data.size() >= 4 && StartsWith(data, {'B', 'Z', 'h'}) && data[3] >= '1' && data[3] <= '9') return Wrapper::kBzip2;
  if (StartsWith(data, {0xfd, '7', 'z', 'X', 'Z', 0x00})) return Wrapper::kXz;
  if (JoblibZfBody(data)) return Wrapper::kJoblibZf;
  if (ZlibHeaderOk(data)) return Wrapper::kZlib;
  // A pickle starts with 0x80 (PROTO), which is also a valid properties
  // byte: the dictionary-size test rules real pickles out.
  if (AloneHeaderOk(data)) return Wrapper::kLzmaAlone;
  return std::nullopt;
}

Result<Unwrapped> Unwrap(Wrapper wrapper, Bytes data, uint64_t max_len, uint64_t max_ratio, Budget* budget) {
  std::string out;
  Sink sink{out, data.size(), max_len, max_ratio, WrapperName(wrapper), budget};
  switch (wrapper) {
    case Wrapper::kGzip: return Gunzip(data, sink);
    case Wrapper::kBzip2: return Bunzip2(data, sink);
    case Wrapper::kXz:
    case Wrapper::kLzmaAlone: return Unlzma(data, sink);
    case Wrapper::kZlib: return Unzlib(data, sink);
    case Wrapper::kJoblibZf: return UnJoblibZf(data, sink);
  }
  return MakeError(ErrorCode::kInternal, 0, "unknown wrapper");
}

Result<Unwrapped> DecompressZipMember(uint16_t method, Bytes data, uint64_t max_len, uint64_t max_ratio,
                                      Budget* budget) {
  std::string out;
  if (method == kZipMethodBzip2) {
    Sink sink{out, data.size(), max_len, max_ratio, "bzip2", budget};
    CKG_ASSIGN_OR_RETURN(Unwrapped u, Bunzip2(data, sink));
    if (u.num_streams == 0 && !u.error) {
      u.error = Error{ErrorCode::kMalformed, 0, "bzip2", "zip bzip2 member does not start with a bzip2 stream"};
    }
    return u;
  }
  if (method == kZipMethodLzma) {
    Sink sink{out, data.size(), max_len, max_ratio, "lzma", budget};
    return UnzipLzmaMember(data, sink);
  }
  return MakeError(ErrorCode::kInternal, 0, "DecompressZipMember: method " + Num(method));
}

}  // namespace ckptguard

#include "ckptguard/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <limits>

namespace ckptguard {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint64_t kEndRecordLen = 22;
constexpr uint64_t kMaxCommentLen = 0xffff;
constexpr uint64_t kZip64LocatorLen = 20;

std::string Num(uint64_t v) { return std::to_string(v); }

uint32_t LoadU32(Bytes b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}

// FindEndRecord scans backwards, as miniz does, for the end-of-central-
// directory signature within the last 22 + 65535 bytes.
Result<uint64_t> FindEndRecord(Bytes file) {
  if (file.size() < kEndRecordLen) {
    return MakeError(ErrorCode::kTruncated, 0, "too short for an end-of-central-directory record");
  }
  const uint64_t last = file.size() - kEndRecordLen;
  const uint64_t first = last > kMaxCommentLen ? last - kMaxCommentLen : 0;
  for (uint64_t pos = last + 1; pos-- > first;) {
    if (LoadU32(file, static_cast<size_t>(pos)) == kEndSig) return pos;
  }
  return MakeError(ErrorCode::kMalformed, last, "no end-of-central-directory record");
}

struct Directory {
  uint64_t num_entries = 0;
  uint64_t size = 0;
  uint64_t offset = 0;
};

Result<Directory> ReadDirectoryLocation(Bytes file, uint64_t end_pos) {
  ByteCursor end(file.subspan(static_cast<size_t>(end_pos)), end_pos);
  CKG_TRY(end.Skip(4));
  CKG_ASSIGN_OR_RETURN(uint16_t disk, end.ReadU16LE());
  CKG_ASSIGN_OR_RETURN(uint16_t cd_disk, end.ReadU16LE());
  CKG_ASSIGN_OR_RETURN(uint16_t entries_on_disk, end.ReadU16LE());
  CKG_ASSIGN_OR_RETURN(uint16_t entries_total, end.ReadU16LE());
  CKG_ASSIGN_OR_RETURN(uint32_t cd_size, end.ReadU32LE());
  CKG_ASSIGN_OR_RETURN(uint32_t cd_offset, end.ReadU32LE());
  Directory dir{entries_total, cd_size, cd_offset};
  if (disk != 0 || cd_disk != 0 || entries_on_disk != entries_total) {
    return MakeError(ErrorCode::kUnsupportedFormat, end_pos, "multi-disk zip archives are not supported");
  }
  // A zip64 locator right before the end record points at the zip64 end record.
  if (end_pos >= kZip64LocatorLen &&
      LoadU32(file, static_cast<size_t>(end_pos - kZip64LocatorLen)) == kZip64LocatorSig) {
    ByteCursor loc(file.subspan(static_cast<size_t>(end_pos - kZip64LocatorLen)), end_pos - kZip64LocatorLen);
    CKG_TRY(loc.Skip(8));
    CKG_ASSIGN_OR_RETURN(uint64_t z64_pos, loc.ReadU64LE());
    if (z64_pos > file.size() || file.size() - z64_pos < 56) {
      return MakeError(ErrorCode::kMalformed, end_pos - kZip64LocatorLen,
                       "zip64 locator points outside the file");
    }
    ByteCursor z64(file.subspan(static_cast<size_t>(z64_pos)), z64_pos);
    CKG_ASSIGN_OR_RETURN(uint32_t sig, z64.ReadU32LE());
    if (sig != kZip64EndSig) {
      return MakeError(ErrorCode::kMalformed, z64_pos, "bad zip64 end-of-central-directory signature");
    }
    CKG_TRY(z64.Skip(8 + 2 + 2 + 4 + 4));
    CKG_ASSIGN_OR_RETURN(uint64_t z_on_disk, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_total, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_size, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_offset, z64.ReadU64LE());
    if (z_on_disk != z_total) {
      return MakeError(ErrorCode::kUnsupportedFormat, z64_pos, "multi-disk zip archives are not supported");
    }
    dir = Directory{z_total, z_size, z_offset};
  }
  if (dir.offset > file.size() || dir.size > file.size() - dir.offset) {
    return MakeError(ErrorCode::kMalformed, end_pos,
                     "central directory (" + Num(dir.size) + " bytes at " + Num(dir.offset) +
                         ") lies outside the file");
  }
  return dir;
}

// ApplyZip64Extra replaces 0xffffffff fields with the values of the zip64
// extended-information extra field (id 0x0001), in the order the spec gives.
Status ApplyZip64Extra(Bytes extra, uint64_t extra_offset, ZipEntry& entry, bool need_usize,
                       bool need_csize, bool need_offset) {
  ByteCursor c(extra, extra_offset);
  while (c.Remaining() >= 4) {
    CKG_ASSIGN_OR_RETURN(uint16_t id, c.ReadU16LE());
    CKG_ASSIGN_OR_RETURN(uint16_t len, c.ReadU16LE());
    CKG_ASSIGN_OR_RETURN(ByteCursor field, c.ReadCursor(len));
    if (id != 0x0001) continue;
    if (need_usize) {
      CKG_ASSIGN_OR_RETURN(entry.uncompressed_len, field.ReadU64LE());
    }
    if (need_csize) {
      CKG_ASSIGN_OR_RETURN(entry.compressed_len, field.ReadU64LE());
    }
    if (need_offset) {
      CKG_ASSIGN_OR_RETURN(entry.local_header_offset, field.ReadU64LE());
    }
    return OkStatus();
  }
  if (need_usize || need_csize || need_offset) {
    return MakeError(ErrorCode::kMalformed, extra_offset, "zip64 sizes announced but no zip64 extra field");
  }
  return OkStatus();
}

}  // namespace

ZipLimits ZipLimits::Clamped() const {
  ZipLimits out = *this;
  out.max_entries = std::min<uint64_t>(max_entries, uint64_t{1} << 24);
  out.max_name_len = std::min<uint64_t>(max_name_len, 0xffff);
  out.max_inflated_len = std::min<uint64_t>(max_inflated_len, uint64_t{1} << 40);
  out.max_ratio = std::min<uint64_t>(max_ratio, 1'000'000);
  return out;
}

bool LooksLikeZip(Bytes file) { return file.size() >= 4 && LoadU32(file, 0) == kLocalHeaderSig; }

Result<ZipArchive> ZipArchive::Open(Bytes file, const ZipLimits& limits) {
  ZipArchive zip;
  zip.file_ = file;
  zip.limits_ = limits.Clamped();
  CKG_ASSIGN_OR_RETURN(uint64_t end_pos, FindEndRecord(file));
  CKG_ASSIGN_OR_RETURN(Directory dir, ReadDirectoryLocation(file, end_pos));
  if (dir.num_entries > zip.limits_.max_entries) {
    return MakeError(ErrorCode::kLimitExceeded, end_pos,
                     "max_entries (" + Num(zip.limits_.max_entries) + ") exceeded: the directory lists " +
                         Num(dir.num_entries) + " entries");
  }
  ByteCursor cd(file.subspan(static_cast<size_t>(dir.offset), static_cast<size_t>(dir.size)), dir.offset);
  for (uint64_t i = 0; i < dir.num_entries; ++i) {
    ZipEntry entry;
    entry.central_offset = cd.Offset();
    CKG_ASSIGN_OR_RETURN(uint32_t sig, cd.ReadU32LE());
    if (sig != kCentralHeaderSig) {
      return MakeError(ErrorCode::kMalformed, entry.central_offset,
                       "bad central directory signature for entry " + Num(i));
    }
    CKG_TRY(cd.Skip(4));  // versions
    CKG_ASSIGN_OR_RETURN(entry.flags, cd.ReadU16LE());
    CKG_ASSIGN_OR_RETURN(entry.method, cd.ReadU16LE());
    CKG_TRY(cd.Skip(4));  // time, date
    CKG_ASSIGN_OR_RETURN(entry.crc32, cd.ReadU32LE());
    CKG_ASSIGN_OR_RETURN(uint32_t csize, cd.ReadU32LE());
    CKG_ASSIGN_OR_RETURN(uint32_t usize, cd.ReadU32LE());
    CKG_ASSIGN_OR_RETURN(uint16_t name_len, cd.ReadU16LE());
    CKG_ASSIGN_OR_RETURN(uint16_t extra_len, cd.ReadU16LE());
    CKG_ASSIGN_OR_RETURN(uint16_t comment_len, cd.ReadU16LE());
    CKG_TRY(cd.Skip(2 + 2 + 4));  // disk, internal and external attributes
    CKG_ASSIGN_OR_RETURN(uint32_t local_offset, cd.ReadU32LE());
    if (name_len > zip.limits_.max_name_len) {
      return MakeError(ErrorCode::kLimitExceeded, entry.central_offset,
                       "max_name_len (" + Num(zip.limits_.max_name_len) + ") exceeded by a name of " +
                           Num(name_len) + " bytes");
    }
    CKG_ASSIGN_OR_RETURN(Bytes name, cd.ReadBytes(name_len));
    const uint64_t extra_offset = cd.Offset();
    CKG_ASSIGN_OR_RETURN(Bytes extra, cd.ReadBytes(extra_len));
    CKG_TRY(cd.Skip(comment_len));
    entry.name = std::string(AsStringView(name));
    entry.compressed_len = csize;
    entry.uncompressed_len = usize;
    entry.local_header_offset = local_offset;
    CKG_TRY(ApplyZip64Extra(extra, extra_offset, entry, usize == 0xffffffffu, csize == 0xffffffffu,
                            local_offset == 0xffffffffu));
    zip.entries_.push_back(std::move(entry));
  }
  return zip;
}

Result<uint64_t> ZipArchive::DataOffset(const ZipEntry& entry) const {
  const uint64_t at = entry.local_header_offset;
  if (at > file_.size() || file_.size() - at < 30) {
    return MakeError(ErrorCode::kMalformed, entry.central_offset,
                     "local header offset " + Num(at) + " lies outside the file", entry.name);
  }
  ByteCursor local(file_.subspan(static_cast<size_t>(at)), at);
  CKG_ASSIGN_OR_RETURN(uint32_t sig, local.ReadU32LE());
  if (sig != kLocalHeaderSig) {
    return MakeError(ErrorCode::kMalformed, at, "bad local header signature", entry.name);
  }
  CKG_TRY(local.Skip(22));
  CKG_ASSIGN_OR_RETURN(uint16_t name_len, local.ReadU16LE());
  CKG_ASSIGN_OR_RETURN(uint16_t extra_len, local.ReadU16LE());
  const uint64_t data = at + 30 + name_len + extra_len;
  if (data > file_.size() || entry.compressed_len > file_.size() - data) {
    return MakeError(ErrorCode::kTruncated, data,
                     "entry data (" + Num(entry.compressed_len) + " bytes) runs past the end of the file",
                     entry.name);
  }
  return data;
}

Result<Bytes> ZipArchive::StoredData(const ZipEntry& entry) const {
  if (entry.method != kZipMethodStored) {
    return MakeError(ErrorCode::kInvalidArgument, entry.central_offset, "entry is not stored", entry.name);
  }
  CKG_ASSIGN_OR_RETURN(uint64_t data, DataOffset(entry));
  return file_.subspan(static_cast<size_t>(data), static_cast<size_t>(entry.compressed_len));
}

Result<std::string> ZipArchive::ReadEntry(const ZipEntry& entry) const {
  if (entry.method == kZipMethodStored) {
    CKG_ASSIGN_OR_RETURN(Bytes data, StoredData(entry));
    return std::string(AsStringView(data));
  }
  if (entry.method != kZipMethodDeflated) {
    return MakeError(ErrorCode::kUnsupportedFormat, entry.central_offset,
                     "compression method " + Num(entry.method) + " is not supported (torch reads stored and deflated)",
                     entry.name);
  }
  CKG_ASSIGN_OR_RETURN(uint64_t data_offset, DataOffset(entry));
  if (entry.uncompressed_len > limits_.max_inflated_len) {
    return MakeError(ErrorCode::kLimitExceeded, entry.central_offset,
                     "max_inflated_len (" + Num(limits_.max_inflated_len) + ") exceeded: declared size " +
                         Num(entry.uncompressed_len),
                     entry.name);
  }
  const uint64_t ratio_base = std::max<uint64_t>(entry.compressed_len, 1);
  if (entry.uncompressed_len > (uint64_t{1} << 16) && entry.uncompressed_len / ratio_base > limits_.max_ratio) {
    return MakeError(ErrorCode::kLimitExceeded, entry.central_offset,
                     "max_ratio (" + Num(limits_.max_ratio) + ") exceeded: " + Num(entry.compressed_len) +
                         " bytes declared to inflate to " + Num(entry.uncompressed_len),
                     entry.name);
  }
  std::string out(static_cast<size_t>(entry.uncompressed_len), '\0');
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
    return MakeError(ErrorCode::kInternal, data_offset, "zlib inflateInit2 failed", entry.name);
  }
  Bytes in = file_.subspan(static_cast<size_t>(data_offset), static_cast<size_t>(entry.compressed_len));
  uint64_t in_pos = 0, out_pos = 0;
  int rc = Z_OK;
  constexpr uint64_t kChunk = uint64_t{1} << 30;  // z_stream counts are 32-bit
  while (rc == Z_OK) {
    const uint64_t in_left = in.size() - in_pos, out_left = out.size() - out_pos;
    uint8_t spare = 0;
    zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
    zs.avail_in = static_cast<uInt>(std::min(in_left, kChunk));
    // With no output room left, offer one spare byte: inflating into it means
    // the data is larger than declared.
    zs.next_out = out_left > 0 ? reinterpret_cast<Bytef*>(out.data() + out_pos) : &spare;
    zs.avail_out = static_cast<uInt>(out_left > 0 ? std::min(out_left, kChunk) : 1);
    const uInt avail_in_before = zs.avail_in, avail_out_before = zs.avail_out;
    rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += avail_in_before - zs.avail_in;
    const uint64_t produced = avail_out_before - zs.avail_out;
    if (out_left == 0 && produced > 0) {
      inflateEnd(&zs);
      return MakeError(ErrorCode::kMalformed, data_offset + in_pos,
                       "inflates to more than the declared " + Num(entry.uncompressed_len) + " bytes", entry.name);
    }
    out_pos += produced;
    if (rc == Z_OK && avail_in_before == zs.avail_in && produced == 0) rc = Z_BUF_ERROR;
  }
  const std::string zlib_msg = zs.msg != nullptr ? zs.msg : "incomplete";
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    return MakeError(in_pos >= in.size() ? ErrorCode::kTruncated : ErrorCode::kMalformed,
                     data_offset + in_pos, "deflate stream is corrupt (zlib: " + zlib_msg + ")", entry.name);
  }
  if (out_pos != out.size()) {
    return MakeError(ErrorCode::kMalformed, data_offset + in_pos,
                     "inflates to " + Num(out_pos) + " bytes, not the declared " + Num(entry.uncompressed_len),
                     entry.name);
  }
  return out;
}

}  // namespace ckptguard

#include "ckptguard/zip_reader.h"

#include <libdeflate.h>
#include <zlib.h>


#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <cstdio>
#include <map>
#include <unordered_map>
#include <optional>

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
uint16_t LoadU16(Bytes b, size_t at) { return static_cast<uint16_t>(b[at] | (b[at + 1] << 8)); }

constexpr uint64_t kCentralHeaderLen = 46;  // the fixed part of a central directory header

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
  uint64_t zip64_end_offset = 0;
  uint64_t zip64_end_len = 0;
  bool zip64 = false;
  uint16_t disk_number = 0;  // the end record's (0, or 1 as the directory's disk too)
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
  Directory dir{entries_total, cd_size, cd_offset, 0, 0, false, disk};
  // miniz's test (mz_zip_reader_read_central_dir): disk numbers 0/0, or 1/1
  // (the last disk of a spanned set, read as a whole archive all the same);
  // the entry counts must agree. Python's zipfile ignores all three fields
  // (its reading is ZipArchive::OpenAsZipfile).
  if (((disk | cd_disk) != 0 && (disk != 1 || cd_disk != 1)) || entries_on_disk != entries_total) {
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
    CKG_ASSIGN_OR_RETURN(uint64_t z_record_size, z64.ReadU64LE());
    CKG_TRY(z64.Skip(2 + 2 + 4 + 4));
    CKG_ASSIGN_OR_RETURN(uint64_t z_on_disk, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_total, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_size, z64.ReadU64LE());
    CKG_ASSIGN_OR_RETURN(uint64_t z_offset, z64.ReadU64LE());
    if (z_on_disk != z_total) {
      return MakeError(ErrorCode::kUnsupportedFormat, z64_pos, "multi-disk zip archives are not supported");
    }
    // The record's own length, at most up to the locator (a larger size
    // field is the writer's business: the bytes past it are accounted as
    // the record's).
    const uint64_t z_len = std::min<uint64_t>(z_record_size > UINT64_MAX - 12 ? UINT64_MAX : 12 + z_record_size,
                                              end_pos - kZip64LocatorLen > z64_pos ? end_pos - kZip64LocatorLen - z64_pos : 0);
    dir = Directory{z_total, z_size, z_offset, z64_pos, z_len, true, disk};
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
  if (!need_usize && !need_csize && !need_offset) {
    // Nothing to apply (every entry of an archive under 4 GiB): the fields
    // are only walked, as below, to the first zip64 field or the end. A
    // field that runs past the end takes the walk below, for its error.
    size_t pos = 0;
    while (extra.size() - pos >= 4) {
      const uint16_t id = LoadU16(extra, pos);
      const uint16_t len = LoadU16(extra, pos + 2);
      if (len > extra.size() - pos - 4) break;
      if (id == 0x0001) return OkStatus();
      pos += 4 + size_t{len};
    }
    if (extra.size() - pos < 4) return OkStatus();
  }
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

std::vector<EmbeddedZip> FindEmbeddedZips(Bytes file, size_t max, bool* more) {
  std::vector<EmbeddedZip> out;
  if (more != nullptr) *more = false;
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  constexpr std::string_view kSig("PK\x05\x06", 4);
  constexpr uint64_t kZip64EndLen = 56;
  for (size_t p = text.find(kSig); p != std::string_view::npos; p = text.find(kSig, p + 1)) {
    if (file.size() - p < kEndRecordLen) break;
    const uint64_t entries = LoadU16(file, p + 10);
    const uint64_t cd_size = LoadU32(file, p + 12);
    const uint64_t cd_offset = LoadU32(file, p + 16);
    const uint64_t end = std::min<uint64_t>(file.size(), p + kEndRecordLen + LoadU16(file, p + 20));
    uint64_t begin = 0;
    uint64_t num_entries = entries;
    if (p >= kZip64LocatorLen + kZip64EndLen && LoadU32(file, p - kZip64LocatorLen) == kZip64LocatorSig &&
        LoadU32(file, p - kZip64LocatorLen - kZip64EndLen) == kZip64EndSig) {
      // The zip64 end record right before the locator; the locator's offset
      // of it counts from the archive's beginning.
      const uint64_t z64_at = p - kZip64LocatorLen - kZip64EndLen;
      const uint64_t z64_rel = static_cast<uint64_t>(LoadU32(file, p - kZip64LocatorLen + 8)) |
                               static_cast<uint64_t>(LoadU32(file, p - kZip64LocatorLen + 12)) << 32;
      if (z64_rel > z64_at) continue;
      begin = z64_at - z64_rel;
      num_entries = static_cast<uint64_t>(LoadU32(file, z64_at + 32)) |
                    static_cast<uint64_t>(LoadU32(file, z64_at + 36)) << 32;
    } else {
      if (cd_size + cd_offset > p) continue;
      begin = p - cd_size - cd_offset;
    }
    if (num_entries == 0 || file.size() - begin < 4 || LoadU32(file, begin) != kLocalHeaderSig) continue;
    if (out.size() == max) {
      if (more != nullptr) *more = true;
      break;
    }
    out.push_back({begin, end});
  }
  return out;
}

Result<ZipArchive> ZipArchive::Open(Bytes file, const ZipLimits& limits) {
  ZipArchive zip;
  zip.file_ = file;
  zip.limits_ = limits.Clamped();
  CKG_ASSIGN_OR_RETURN(uint64_t end_pos, FindEndRecord(file));
  CKG_ASSIGN_OR_RETURN(Directory dir, ReadDirectoryLocation(file, end_pos));
  {
    ByteCursor end(file.subspan(static_cast<size_t>(end_pos)), end_pos);
    CKG_TRY(end.Skip(20));
    CKG_ASSIGN_OR_RETURN(uint16_t comment_len, end.ReadU16LE());
    zip.layout_.end_record_offset = end_pos;
    zip.layout_.end_record_len = kEndRecordLen + comment_len;
    zip.layout_.directory_offset = dir.offset;
    zip.layout_.directory_len = dir.size;
    zip.layout_.zip64 = dir.zip64;
    zip.layout_.zip64_end_offset = dir.zip64_end_offset;
    zip.layout_.zip64_end_len = dir.zip64_end_len;
    zip.layout_.disk_number = dir.disk_number;
  }
  if (dir.num_entries > zip.limits_.max_entries) {
    return MakeError(ErrorCode::kLimitExceeded, end_pos,
                     "max_entries (" + Num(zip.limits_.max_entries) + ") exceeded: the directory lists " +
                         Num(dir.num_entries) + " entries");
  }
  ByteCursor cd(file.subspan(static_cast<size_t>(dir.offset), static_cast<size_t>(dir.size)), dir.offset);
  // Room for the entries the directory declares, but never more than its
  // bytes can hold (a record takes 46 bytes or more): a count alone must
  // not size an allocation.
  zip.entries_.reserve(static_cast<size_t>(std::min<uint64_t>(dir.num_entries, dir.size / kCentralHeaderLen)));
  for (uint64_t i = 0; i < dir.num_entries; ++i) {
    ZipEntry entry;
    entry.central_offset = cd.Offset();
    uint32_t csize = 0, usize = 0, local_offset = 0;
    uint16_t name_len = 0, extra_len = 0, comment_len = 0;
    if (cd.Remaining() >= kCentralHeaderLen) {
      // The whole fixed part is there: one bounds check (below, the same
      // reads field by field, whose errors say which field was cut).
      const Bytes h = cd.Rest().first(kCentralHeaderLen);
      if (LoadU32(h, 0) != kCentralHeaderSig) {
        return MakeError(ErrorCode::kMalformed, entry.central_offset,
                         "bad central directory signature for entry " + Num(i));
      }
      entry.flags = LoadU16(h, 8);
      entry.method = LoadU16(h, 10);
      entry.crc32 = LoadU32(h, 16);
      csize = LoadU32(h, 20);
      usize = LoadU32(h, 24);
      name_len = LoadU16(h, 28);
      extra_len = LoadU16(h, 30);
      comment_len = LoadU16(h, 32);
      local_offset = LoadU32(h, 42);
      Bytes fixed;
      (void)cd.TryReadBytes(kCentralHeaderLen, fixed);  // there: checked above
    } else {
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
      CKG_ASSIGN_OR_RETURN(csize, cd.ReadU32LE());
      CKG_ASSIGN_OR_RETURN(usize, cd.ReadU32LE());
      CKG_ASSIGN_OR_RETURN(name_len, cd.ReadU16LE());
      CKG_ASSIGN_OR_RETURN(extra_len, cd.ReadU16LE());
      CKG_ASSIGN_OR_RETURN(comment_len, cd.ReadU16LE());
      CKG_TRY(cd.Skip(2 + 2 + 4));  // disk, internal and external attributes
      CKG_ASSIGN_OR_RETURN(local_offset, cd.ReadU32LE());
    }
    if (name_len > zip.limits_.max_name_len) {
      return MakeError(ErrorCode::kLimitExceeded, entry.central_offset,
                       "max_name_len (" + Num(zip.limits_.max_name_len) + ") exceeded by a name of " +
                           Num(name_len) + " bytes");
    }
    // TryReadBytes first (no Result built per entry); when it refuses,
    // ReadBytes and Skip fail with the precise error.
    Bytes name;
    if (!cd.TryReadBytes(name_len, name)) {
      CKG_ASSIGN_OR_RETURN(name, cd.ReadBytes(name_len));
    }
    const uint64_t extra_offset = cd.Offset();
    Bytes extra;
    if (!cd.TryReadBytes(extra_len, extra)) {
      CKG_ASSIGN_OR_RETURN(extra, cd.ReadBytes(extra_len));
    }
    Bytes comment;
    if (!cd.TryReadBytes(comment_len, comment)) CKG_TRY(cd.Skip(comment_len));
    entry.name = std::string(AsStringView(name));
    entry.compressed_len = csize;
    entry.uncompressed_len = usize;
    entry.local_header_offset = local_offset;
    CKG_TRY(ApplyZip64Extra(extra, extra_offset, entry, usize == 0xffffffffu, csize == 0xffffffffu,
                            local_offset == 0xffffffffu));
    zip.entries_.push_back(std::move(entry));
  }
  zip.layout_.directory_end = cd.Offset();
  return zip;
}

namespace {

// ValidUtf8 is Python's strict UTF-8 decoder's test (no overlong forms, no
// surrogates, nothing above U+10FFFF).
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = static_cast<uint8_t>(s[i]);
    size_t n = 0;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t b = static_cast<uint8_t>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace

// ReadAsZipfile is OpenAsZipfile's reading into `zip` (its file, base,
// concat and layout), handing each record to `on_entry(entry, name)` with
// the entry's name left empty and `name` the one zipfile gives: false from
// on_entry stops the reading (the result is then false; true when every
// record was read).
template <typename OnEntry>
Result<bool> ZipArchive::ReadAsZipfile(Bytes whole, const ZipLimits& limits, ZipArchive& zip, OnEntry&& on_entry) {
  // _EndRecData: an end record with no comment in the last 22 bytes, else
  // the last signature in the last 64 KiB + 22 bytes (which must have its
  // 22 bytes: zipfile does not look for an earlier one).
  const uint64_t size = whole.size();
  if (size < kEndRecordLen) {
    return MakeError(ErrorCode::kTruncated, 0, "too short for an end-of-central-directory record");
  }
  uint64_t end_pos = size - kEndRecordLen;
  if (!(LoadU32(whole, static_cast<size_t>(end_pos)) == kEndSig && LoadU16(whole, static_cast<size_t>(size - 2)) == 0)) {
    const uint64_t first = size > (uint64_t{1} << 16) + kEndRecordLen ? size - (uint64_t{1} << 16) - kEndRecordLen : 0;
    const std::string_view tail(reinterpret_cast<const char*>(whole.data()) + first, static_cast<size_t>(size - first));
    const size_t found = tail.rfind(std::string_view("PK\x05\x06", 4));
    if (found == std::string_view::npos) {
      return MakeError(ErrorCode::kMalformed, first, "no end-of-central-directory record");
    }
    end_pos = first + found;
    if (size - end_pos < kEndRecordLen) {
      return MakeError(ErrorCode::kTruncated, end_pos, "the last end-of-central-directory record is cut short");
    }
  }
  uint64_t cd_size = LoadU32(whole, static_cast<size_t>(end_pos + 12));
  uint64_t cd_offset = LoadU32(whole, static_cast<size_t>(end_pos + 16));
  const uint16_t comment_len = LoadU16(whole, static_cast<size_t>(end_pos + 20));
  // _EndRecData64: a locator right before the end record (its disk fields
  // are checked, its offset is not used), and the zip64 end record assumed
  // to sit right before the locator, 56 bytes long.
  constexpr uint64_t kZip64EndLen = 56;
  bool zip64 = false;
  if (end_pos >= kZip64LocatorLen && LoadU32(whole, static_cast<size_t>(end_pos - kZip64LocatorLen)) == kZip64LocatorSig) {
    const uint64_t loc = end_pos - kZip64LocatorLen;
    if (LoadU32(whole, static_cast<size_t>(loc + 4)) != 0 || LoadU32(whole, static_cast<size_t>(loc + 16)) > 1) {
      return MakeError(ErrorCode::kUnsupportedFormat, loc, "zipfiles that span multiple disks are not supported");
    }
    if (loc >= kZip64EndLen && LoadU32(whole, static_cast<size_t>(loc - kZip64EndLen)) == kZip64EndSig) {
      ByteCursor z64(whole.subspan(static_cast<size_t>(loc - kZip64EndLen + 40), 16), loc - kZip64EndLen + 40);
      cd_size = *z64.ReadU64LE();
      cd_offset = *z64.ReadU64LE();
      zip64 = true;
    }
  }
  // _RealGetContents: the directory is the cd_size bytes that end at the
  // end record (or at the zip64 records), whatever cd_offset says; the
  // difference (`concat`, bytes prepended to the archive) shifts every
  // local header offset.
  const uint64_t records_end = end_pos - (zip64 ? kZip64EndLen + kZip64LocatorLen : 0);
  if (zip64 && end_pos < kZip64EndLen + kZip64LocatorLen) {
    return MakeError(ErrorCode::kMalformed, end_pos, "Bad offset for central directory");
  }
  if (cd_size > records_end) {
    return MakeError(ErrorCode::kMalformed, end_pos, "Bad offset for central directory");
  }
  const uint64_t start_dir = records_end - cd_size;
  // concat = start_dir - cd_offset, as a sign and a magnitude (both are
  // 64-bit values).
  const bool shifted_back = cd_offset > start_dir;
  const uint64_t shift = shifted_back ? cd_offset - start_dir : start_dir - cd_offset;
  // The archive's file starts at `concat` when it is positive: zipfile reads
  // nothing before it (offsets are unsigned), and offsets in the view count
  // from there.
  const uint64_t base = shifted_back ? 0 : shift;
  zip.file_ = whole.subspan(static_cast<size_t>(base));
  zip.limits_ = limits.Clamped();
  zip.base_ = base;
  const int64_t clamped = static_cast<int64_t>(std::min<uint64_t>(shift, INT64_MAX));
  zip.concat_ = shifted_back ? -clamped : clamped;
  zip.layout_.end_record_offset = end_pos - base;
  zip.layout_.end_record_len = std::min<uint64_t>(kEndRecordLen + comment_len, size - end_pos);
  zip.layout_.directory_offset = start_dir - base;
  zip.layout_.directory_len = cd_size;
  zip.layout_.zip64 = zip64;
  if (zip64) {
    zip.layout_.zip64_end_offset = end_pos - kZip64LocatorLen - kZip64EndLen - base;
    zip.layout_.zip64_end_len = kZip64EndLen;
  }
  // The records are read from the directory's bytes (fewer when the file
  // ends first) until cd_size bytes are counted: the end record's count is
  // not used. Any bad record refuses the whole archive, as zipfile does.
  const uint64_t available = std::min<uint64_t>(cd_size, size - start_dir);
  ByteCursor cd(whole.subspan(static_cast<size_t>(start_dir), static_cast<size_t>(available)), start_dir);
  uint64_t total = 0;
  size_t count = 0;
  while (total < cd_size) {
    if (cd.Remaining() < kCentralHeaderLen) {
      return MakeError(ErrorCode::kTruncated, cd.Offset(), "Truncated central directory");
    }
    if (count >= zip.limits_.max_entries) {
      return MakeError(ErrorCode::kLimitExceeded, cd.Offset(),
                       "max_entries (" + Num(zip.limits_.max_entries) + ") exceeded by Python's zipfile reading");
    }
    ZipEntry entry;
    entry.central_offset = cd.Offset() - base;
    const Bytes h = cd.Rest().first(kCentralHeaderLen);
    if (LoadU32(h, 0) != kCentralHeaderSig) {
      return MakeError(ErrorCode::kMalformed, cd.Offset(), "Bad magic number for central directory");
    }
    const uint8_t extract_version = h[6];
    entry.flags = LoadU16(h, 8);
    entry.method = LoadU16(h, 10);
    entry.crc32 = LoadU32(h, 16);
    entry.compressed_len = LoadU32(h, 20);
    entry.uncompressed_len = LoadU32(h, 24);
    const uint16_t name_len = LoadU16(h, 28), extra_len = LoadU16(h, 30), comment = LoadU16(h, 32);
    uint64_t header_offset = LoadU32(h, 42);
    Bytes fixed;
    (void)cd.TryReadBytes(kCentralHeaderLen, fixed);
    if (name_len > zip.limits_.max_name_len) {
      return MakeError(ErrorCode::kLimitExceeded, entry.central_offset + base,
                       "max_name_len (" + Num(zip.limits_.max_name_len) + ") exceeded by a name of " + Num(name_len) +
                           " bytes");
    }
    // fp.read(n) of the directory's bytes: short at their end, never an error.
    auto read_short = [&](uint64_t n) {
      Bytes out;
      const uint64_t take = std::min<uint64_t>(n, cd.Remaining());
      (void)cd.TryReadBytes(take, out);
      return out;
    };
    const std::string_view raw_name = AsStringView(read_short(name_len));
    const uint64_t extra_offset = cd.Offset();
    Bytes extra = read_short(extra_len);
    (void)read_short(comment);
    if ((entry.flags & 0x0800) != 0 && !ValidUtf8(raw_name)) {
      return MakeError(ErrorCode::kMalformed, entry.central_offset + base,
                       "a name flagged UTF-8 that is not (zipfile's decode fails)");
    }
    if (extract_version > 63) {
      return MakeError(ErrorCode::kUnsupportedFormat, entry.central_offset + base,
                       "zip file version " + Num(extract_version / 10) + "." + Num(extract_version % 10) +
                           " (zipfile refuses the archive)");
    }
    // _decodeExtra: every zip64 field (0x0001), in order, fills the values
    // that are still 0xffffffff; a field longer than the rest refuses the
    // archive, and so does a zip64 field too short for what it must fill.
    while (extra.size() >= 4) {
      const uint16_t id = LoadU16(extra, 0), len = LoadU16(extra, 2);
      if (uint64_t{len} + 4 > extra.size()) {
        return MakeError(ErrorCode::kMalformed, extra_offset, "Corrupt extra field");
      }
      if (id == 0x0001) {
        ByteCursor field(extra.subspan(4, len), extra_offset + 4);
        auto fill = [&](uint64_t& value) -> Status {
          CKG_ASSIGN_OR_RETURN(value, field.ReadU64LE());
          return OkStatus();
        };
        if (entry.uncompressed_len == 0xffffffffu || entry.uncompressed_len == UINT64_MAX) CKG_TRY(fill(entry.uncompressed_len));
        if (entry.compressed_len == 0xffffffffu) CKG_TRY(fill(entry.compressed_len));
        if (header_offset == 0xffffffffu) CKG_TRY(fill(header_offset));
      }
      extra = extra.subspan(4 + size_t{len});
    }
    // header_offset + concat, counted from the view's base; one before the
    // file's start (a negative concat) is unreadable to zipfile too.
    // (Counted from base: + shift - base is + 0 when concat >= 0.)
    entry.local_header_offset = !shifted_back ? header_offset
                                : header_offset >= shift ? header_offset - shift
                                                         : UINT64_MAX;
    // ZipInfo: the name ends at the first NUL (os.sep is '/' here).
    if (!on_entry(entry, raw_name.substr(0, raw_name.find('\0')))) return false;
    ++count;
    total += kCentralHeaderLen + uint64_t{name_len} + extra_len + comment;
  }
  zip.layout_.directory_end = cd.Offset() - base;
  return true;
}

Result<ZipArchive> ZipArchive::OpenAsZipfile(Bytes whole, const ZipLimits& limits) {
  ZipArchive zip;
  CKG_TRY(ReadAsZipfile(whole, limits, zip, [&](ZipEntry& entry, std::string_view name) {
    entry.name = std::string(name);
    zip.entries_.push_back(std::move(entry));
    return true;
  }));
  return zip;
}

bool ZipArchive::ZipfileReadsAs(Bytes file, const ZipLimits& limits, size_t count,
                                const std::function<bool(size_t, const ZipEntry&, std::string_view)>& same) {
  ZipArchive zip;
  size_t i = 0;
  const Result<bool> read = ReadAsZipfile(file, limits, zip, [&](const ZipEntry& entry, std::string_view name) {
    return i < count && same(i++, entry, name);
  });
  return read && *read && i == count && zip.base_ == 0;
}

namespace {

// MinizLower is miniz's MZ_TOLOWER: ASCII capitals only.
uint8_t MinizLower(uint8_t c) { return c >= 'A' && c <= 'Z' ? static_cast<uint8_t>(c - 'A' + 'a') : c; }

// MinizCompare is miniz's name comparison (mz_zip_filename_compare; its
// sort's mz_zip_reader_filename_less is MinizCompare < 0): bytes compared
// with case ignored up to the shorter name's length, then the lengths.
int MinizCompare(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const uint8_t l = MinizLower(static_cast<uint8_t>(a[i])), r = MinizLower(static_cast<uint8_t>(b[i]));
    if (l != r) return l < r ? -1 : 1;
  }
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

}  // namespace

std::vector<uint32_t> MinizNameOrder(std::span<const ZipEntry> entries) {
  const int64_t size = static_cast<int64_t>(entries.size());
  std::vector<uint32_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  auto less = [&](int64_t x, int64_t y) {
    return MinizCompare(entries[order[static_cast<size_t>(x)]].name, entries[order[static_cast<size_t>(y)]].name) < 0;
  };
  // Sifts order[root] down the heap order[0, end), as miniz does: to the
  // larger child (the right one only when the left is less), while the
  // root is less than it.
  auto sift = [&](int64_t root, int64_t end) {
    while (true) {
      int64_t child = 2 * root + 1;
      if (child >= end) break;
      if (child + 1 < end && less(child, child + 1)) ++child;
      if (!less(root, child)) break;
      std::swap(order[static_cast<size_t>(root)], order[static_cast<size_t>(child)]);
      root = child;
    }
  };
  for (int64_t start = (size - 2) / 2; size >= 2 && start >= 0; --start) sift(start, size);
  for (int64_t end = size - 1; end > 0; --end) {
    std::swap(order[static_cast<size_t>(end)], order[0]);
    sift(0, end);
  }
  return order;
}

std::optional<size_t> MinizLocate(std::span<const ZipEntry> entries, std::span<const uint32_t> order,
                                  std::string_view name) {
  int64_t low = 0, high = static_cast<int64_t>(order.size()) - 1;
  while (low <= high) {
    const int64_t mid = low + ((high - low) >> 1);
    const uint32_t index = order[static_cast<size_t>(mid)];
    const int comp = MinizCompare(entries[index].name, name);
    if (comp == 0) return index;
    if (comp < 0) {
      low = mid + 1;
    } else {
      high = mid - 1;
    }
  }
  return std::nullopt;
}

Result<ZipLocalHeader> ZipArchive::ReadLocalHeader(const ZipEntry& entry) const {
  const uint64_t at = entry.local_header_offset;
  if (at > file_.size() || file_.size() - at < 30) {
    return MakeError(ErrorCode::kMalformed, entry.central_offset,
                     "local header offset " + Num(at) + " lies outside the file", entry.name);
  }
  ByteCursor local(file_.subspan(static_cast<size_t>(at)), at);
  // The 30 fixed bytes are there (checked above): read them in place.
  const Bytes h = local.Rest().first(30);
  if (LoadU32(h, 0) != kLocalHeaderSig) {
    return MakeError(ErrorCode::kMalformed, at, "bad local header signature", entry.name);
  }
  ZipLocalHeader header;
  header.flags = LoadU16(h, 6);  // after the version needed
  header.method = LoadU16(h, 8);
  header.crc32 = LoadU32(h, 14);  // after time and date
  const uint32_t csize = LoadU32(h, 18);
  const uint32_t usize = LoadU32(h, 22);
  const uint16_t name_len = LoadU16(h, 26);
  const uint16_t extra_len = LoadU16(h, 28);
  Bytes fixed;
  (void)local.TryReadBytes(30, fixed);  // there: checked above
  Bytes name;
  Bytes extra;
  const bool name_read = local.TryReadBytes(name_len, name);
  const uint64_t extra_offset = local.Offset();
  if (!name_read || !local.TryReadBytes(extra_len, extra)) {
    return MakeError(ErrorCode::kTruncated, at, "local header name or extra field runs past the end of the file",
                     entry.name);
  }
  header.name = AsStringView(name);
  header.compressed_len = csize;
  header.uncompressed_len = usize;
  ZipEntry sizes;
  sizes.compressed_len = csize;
  sizes.uncompressed_len = usize;
  if (ApplyZip64Extra(extra, extra_offset, sizes, usize == 0xffffffffu, csize == 0xffffffffu, false)) {
    header.compressed_len = sizes.compressed_len;
    header.uncompressed_len = sizes.uncompressed_len;
  }
  header.data_offset = local.Offset();
  return header;
}

Result<uint64_t> ZipArchive::DataOffset(const ZipEntry& entry) const {
  CKG_ASSIGN_OR_RETURN(ZipLocalHeader local, ReadLocalHeader(entry));
  const uint64_t data = local.data_offset;
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

Result<std::string> ZipArchive::ReadEntry(const ZipEntry& entry, Budget* budget) const {
  if (entry.method == kZipMethodStored) {
    CKG_ASSIGN_OR_RETURN(Bytes data, StoredData(entry));
    if (budget != nullptr) {
      CKG_TRY(budget->Charge(BudgetKind::kReadBytes, data.size(), entry.local_header_offset, entry.name, "zip entry copy"));
    }
    return std::string(AsStringView(data));
  }
  CKG_ASSIGN_OR_RETURN(ZipEntryPrefix read, Inflate(entry, budget, false));
  return std::move(read.data);
}

Result<ZipEntryPrefix> ZipArchive::ReadEntryPrefix(const ZipEntry& entry, Budget* budget) const {
  return Inflate(entry, budget, true);
}

Result<ZipEntryPrefix> ZipArchive::Inflate(const ZipEntry& entry, Budget* budget, bool keep_prefix) const {
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
  // The output grows as data arrives (never sized from the declared length
  // alone: a 100-byte entry may declare 4 GiB), and every inflated byte is
  // charged to the file's budget before it is kept.
  ZipEntryPrefix result;
  std::string& out = result.data;
  const uint64_t declared = entry.uncompressed_len;
  const uint64_t first_len = std::min<uint64_t>(declared, std::max<uint64_t>(uint64_t{1} << 16, entry.compressed_len * 4));
  out.resize(static_cast<size_t>(first_len));
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
    return MakeError(ErrorCode::kInternal, data_offset, "zlib inflateInit2 failed", entry.name);
  }
  Bytes in = file_.subspan(static_cast<size_t>(data_offset), static_cast<size_t>(entry.compressed_len));
  uint64_t in_pos = 0, out_pos = 0;
  int rc = Z_OK;
  constexpr uint64_t kChunk = uint64_t{1} << 30;  // z_stream counts are 32-bit
  // Where the stream broke, when it did: with keep_prefix the bytes
  // inflated before are the result (Python's ZipExtFile hands them out
  // before it raises, cut at the declared size), and this is the damage.
  std::optional<Error> damage;
  while (rc == Z_OK) {
    if (out_pos == out.size() && out.size() < declared) {
      out.resize(static_cast<size_t>(std::min<uint64_t>(declared, out.size() * 2)));
    }
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
      damage = Error{ErrorCode::kMalformed, data_offset + in_pos, entry.name,
                     "inflates to more than the declared " + Num(entry.uncompressed_len) + " bytes"};
      break;
    }
    if (budget != nullptr && produced > 0) {
      if (Status charged = budget->Charge(BudgetKind::kInflatedBytes, produced, data_offset + in_pos, entry.name,
                                          "zip entry inflate");
          !charged) {
        inflateEnd(&zs);
        return std::unexpected(std::move(charged).error());
      }
    }
    out_pos += produced;
    if (rc == Z_OK && avail_in_before == zs.avail_in && produced == 0) rc = Z_BUF_ERROR;
  }
  const std::string zlib_msg = zs.msg != nullptr ? zs.msg : "incomplete";
  inflateEnd(&zs);
  if (!damage && rc != Z_STREAM_END) {
    damage = Error{in_pos >= in.size() ? ErrorCode::kTruncated : ErrorCode::kMalformed, data_offset + in_pos,
                   entry.name, "deflate stream is corrupt (zlib: " + zlib_msg + ")"};
  }
  if (!damage && out_pos != declared) {
    damage = Error{ErrorCode::kMalformed, data_offset + in_pos, entry.name,
                   "inflates to " + Num(out_pos) + " bytes, not the declared " + Num(entry.uncompressed_len)};
  }
  if (damage) {
    if (!keep_prefix) return std::unexpected(std::move(*damage));
    out.resize(static_cast<size_t>(out_pos));
    result.damage = std::move(damage);
  }
  return result;
}

uint64_t ZipStoredReadLen(Bytes file, const ZipEntry& entry, uint64_t data_offset) {
  if (data_offset <= file.size() && entry.uncompressed_len <= file.size() - data_offset) return entry.uncompressed_len;
  return std::min(entry.compressed_len, entry.uncompressed_len);
}

namespace {

constexpr uint32_t kDataDescriptorSig = 0x08074b50;
constexpr uint16_t kFlagEncrypted = 0x0001;
constexpr uint16_t kFlagDataDescriptor = 0x0008;
constexpr uint16_t kFlagPatched = 0x0020;
constexpr uint16_t kFlagStrongEncryption = 0x0040;

}  // namespace

uint32_t ZipCrc32(Bytes data) {
  // libdeflate's CRC-32 is zlib's (the same polynomial and result) and folds
  // with carry-less multiplication where the CPU has it (chosen at run
  // time): a checkpoint's pickle is checked whole on every load and scan,
  // and zlib 1.2.13's table costs about four instructions a byte.
  uint32_t crc = 0;
  size_t pos = 0;
  while (pos < data.size()) {
    const size_t n = std::min<size_t>(data.size() - pos, size_t{1} << 30);
    crc = libdeflate_crc32(crc, data.data() + pos, n);
    pos += n;
  }
  return crc;
}

namespace {

// DescriptorLen is the length of the data descriptor that follows an entry's
// data when flag bit 3 is set: signature optional, sizes 4 or 8 bytes. The
// length that makes the next record start right after it wins.
uint64_t DescriptorLen(Bytes file, uint64_t data_end, uint64_t next_start) {
  const bool has_sig = data_end <= file.size() && file.size() - data_end >= 4 &&
                       LoadU32(file, static_cast<size_t>(data_end)) == kDataDescriptorSig;
  const uint64_t short_len = has_sig ? 16 : 12, long_len = has_sig ? 24 : 20;
  return data_end + long_len == next_start ? long_len : short_len;
}

struct Span {
  uint64_t begin, end;
  size_t entry;  // index, or SIZE_MAX for the archive's own records
};

}  // namespace

Anomalies CheckZip(const ZipArchive& zip, BulkVector<ZipEntryStatus>* statuses, bool check_deflated) {
  Anomalies out;
  if (zip.layout().disk_number != 0) {
    out.push_back({"zip.disk_numbers", zip.layout().end_record_offset, "",
                   "the end record numbers this disk " + Num(zip.layout().disk_number) +
                       " (a spanned archive's last disk): torch's reader and Python's zipfile read it as a whole "
                       "archive all the same"});
  }
  BulkVector<ZipEntryStatus> local_statuses;
  BulkVector<ZipEntryStatus>& status = statuses != nullptr ? *statuses : local_statuses;
  status.assign(zip.entries().size(), ZipEntryStatus{});
  const Bytes file = zip.file();
  const std::span<const ZipEntry> entries = zip.entries();
  const ZipLayout& layout = zip.layout();
  // One span per entry, plus the archive's own records.
  BulkVector<Span> spans;
  spans.reserve(entries.size() + 4);
  // Name -> (first index, last index, count), as a checkpoint's directory
  // has one record per tensor: an open-addressing table of indices into
  // `uses` (no node allocated per name), at most half full. Names are
  // compared without regard to ASCII case, as torch's reader (miniz's
  // mz_zip_reader_locate_file without MZ_ZIP_FLAG_CASE_SENSITIVE) finds
  // them: 'archive/DATA.PKL' and 'archive/data.pkl' are one name to torch,
  // and which of the two it reads depends on the directory's order.
  struct NameUse {
    std::string_view name;
    size_t first, last, count;
    std::string_view other_case;  // a spelling differing from `name` in case, if any
  };
  BulkVector<NameUse> uses;
  uses.reserve(entries.size());
  size_t table_len = 16;
  while (table_len < 2 * entries.size()) table_len *= 2;
  BulkVector<uint32_t> table(table_len, UINT32_MAX);
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  // Eight bytes at a time: ASCII 'A'-'Z' lowered in place (a byte with its
  // top bit set is left alone), then mixed into the hash.
  auto lower_word = [](uint64_t w) {
    constexpr uint64_t kOnes = 0x0101010101010101ull;
    const uint64_t low7 = w & (0x7f * kOnes);
    const uint64_t above_z = low7 + (0x25 * kOnes);     // top bit: byte > 'Z'
    const uint64_t from_a = low7 + (0x3f * kOnes);      // top bit: byte >= 'A'
    const uint64_t upper = (from_a & ~above_z) & ~w & (0x80 * kOnes);
    return w | (upper >> 2);
  };
  // MurmurHash3's word mixing and finalizer (every input bit reaches the
  // table's low bits; record names differ only in their last bytes).
  auto mix = [](uint64_t h, uint64_t w) {
    w *= 0x87c37b91114253d5ull;
    w = (w << 31) | (w >> 33);
    w *= 0x4cf5ad432745937full;
    h ^= w;
    return ((h << 27) | (h >> 37)) * 5 + 0x52dce729;
  };
  // Seeded per call (the table's address, which ASLR moves, and the clock):
  // names chosen to collide in one process's table do not in another's.
  // Nothing reported depends on the table's order.
  const uint64_t seed = mix(reinterpret_cast<uintptr_t>(table.data()),
                            static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  auto hash = [&](std::string_view name) {
    uint64_t h = seed ^ name.size();
    size_t k = 0;
    for (; k + 8 <= name.size(); k += 8) {
      uint64_t w;
      std::memcpy(&w, name.data() + k, 8);
      h = mix(h, lower_word(w));
    }
    if (k < name.size()) {
      // The last eight bytes (overlapping the words before: names equal
      // without regard to case still hash alike), or the short name's bytes.
      uint64_t w = 0;
      if (name.size() >= 8) {
        std::memcpy(&w, name.data() + name.size() - 8, 8);
      } else {
        for (size_t b = 0; b < name.size(); ++b) w |= uint64_t{static_cast<uint8_t>(name[b])} << (8 * b);
      }
      h = mix(h, lower_word(w));
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return static_cast<size_t>(h);
  };
  auto same_name = [&](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    if (a == b) return true;
    for (size_t k = 0; k < a.size(); ++k) {
      if (a[k] != b[k] && lower(a[k]) != lower(b[k])) return false;
    }
    return true;
  };
  // The local headers lie between the records, one cache line (and, in a
  // checkpoint of small records, one page) each: asking for a few ahead lets
  // their reads overlap instead of waiting on memory one by one.
  constexpr size_t kPrefetchAhead = 8;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i + kPrefetchAhead < entries.size() && entries[i + kPrefetchAhead].local_header_offset < file.size()) {
      __builtin_prefetch(file.data() + entries[i + kPrefetchAhead].local_header_offset);
    }
    const ZipEntry& e = entries[i];
    for (size_t slot = hash(e.name) & (table_len - 1);; slot = (slot + 1) & (table_len - 1)) {
      if (table[slot] == UINT32_MAX) {
        table[slot] = static_cast<uint32_t>(uses.size());
        uses.push_back({e.name, i, i, 1, {}});
        break;
      }
      NameUse& use = uses[table[slot]];
      if (same_name(use.name, e.name)) {
        use.last = i;
        ++use.count;
        if (use.name != e.name && use.other_case.empty()) use.other_case = e.name;
        break;
      }
    }
    if ((e.flags & kFlagEncrypted) != 0) {
      out.push_back({"zip.encrypted", e.central_offset, e.name, "entry is encrypted (flag bit 0); torch refuses it"});
    }
    if ((e.flags & (kFlagPatched | kFlagStrongEncryption)) != 0) {
      out.push_back({"zip.refused_flags", e.central_offset, e.name,
                     std::string((e.flags & kFlagPatched) != 0 ? "flag bit 5 (patched data)" : "flag bit 6 (strong encryption)") +
                         " is refused by torch's reader"});
    }
    if (e.method != kZipMethodStored && e.method != kZipMethodDeflated) {
      out.push_back({"zip.unsupported_method", e.central_offset, e.name,
                     "compression method " + Num(e.method) + "; torch reads only stored (0) and deflated (8)"});
    }
    if (e.method == kZipMethodStored && e.compressed_len != e.uncompressed_len) {
      // miniz reads a stored entry's uncompressed size (and only refuses
      // the sizes differing when the method and time fields, read as one
      // 32-bit word, are zero); Python's zipfile reads the smaller size.
      out.push_back({"zip.stored_size_mismatch", e.central_offset, e.name,
                     "stored entry of " + Num(e.compressed_len) + " bytes declares " + Num(e.uncompressed_len) +
                         " uncompressed: torch's reader (miniz) reads " + Num(e.uncompressed_len) +
                         " bytes from its data (past its end, into what follows, when larger), Python's zipfile " +
                         Num(std::min(e.compressed_len, e.uncompressed_len)) + "; what torch reads is scanned"});
    }
    Result<ZipLocalHeader> local = zip.ReadLocalHeader(e);
    if (!local) {
      out.push_back({"zip.bad_entry", local.error().offset, e.name, local.error().detail});
      continue;
    }
    if (local->name != e.name) {
      out.push_back({"zip.local_name_mismatch", e.local_header_offset, e.name,
                     "local header names it '" + std::string(local->name) + "'; torch reads the central directory's '" + e.name +
                         "'"});
    }
    std::string fields;
    if (local->method != e.method) fields += " method";
    if ((local->flags & ~kFlagDataDescriptor) != (e.flags & ~kFlagDataDescriptor)) fields += " flags";
    // With a data descriptor the local sizes and CRC may legitimately be zero.
    const bool deferred = (local->flags & kFlagDataDescriptor) != 0;
    if (!(deferred && local->crc32 == 0) && local->crc32 != e.crc32) fields += " crc32";
    if (!(deferred && local->compressed_len == 0) && local->compressed_len != e.compressed_len) {
      fields += " compressed_size";
    }
    if (!(deferred && local->uncompressed_len == 0) && local->uncompressed_len != e.uncompressed_len) {
      fields += " uncompressed_size";
    }
    if (!fields.empty()) {
      out.push_back({"zip.local_header_mismatch", e.local_header_offset, e.name,
                     "local header disagrees with the central directory on:" + fields});
    }
    if (local->data_offset > file.size() || e.compressed_len > file.size() - local->data_offset) {
      out.push_back({"zip.bad_entry", local->data_offset, e.name, "entry data runs past the end of the file"});
      continue;
    }
    status[i].data_offset = local->data_offset;
    const uint64_t data_end = local->data_offset + e.compressed_len;
    spans.push_back({e.local_header_offset, data_end, i});
    // CRC: torch never checks it, so a mismatch means the bytes were changed.
    if ((e.flags & kFlagEncrypted) == 0 && e.uncompressed_len <= zip.limits().max_crc_check_len &&
        (check_deflated || e.method != kZipMethodDeflated)) {
      std::optional<uint32_t> crc;
      if (e.method == kZipMethodStored) {
        crc = ZipCrc32(file.subspan(static_cast<size_t>(local->data_offset), static_cast<size_t>(e.compressed_len)));
      } else if (e.method == kZipMethodDeflated) {
        Result<std::string> data = zip.ReadEntry(e);
        if (data) {
          crc = ZipCrc32(AsBytes(*data));
        } else {
          out.push_back({"zip.bad_entry", data.error().offset, e.name, data.error().detail});
        }
      }
      if (crc) status[i].crc_ok = *crc == e.crc32;
      if (crc && *crc != e.crc32) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "CRC-32 is %08x, the directory says %08x", *crc, e.crc32);
        out.push_back({"zip.crc_mismatch", local->data_offset, e.name,
                       std::string(buf) + " (torch does not check CRCs)"});
      }
    }
  }
  std::vector<std::pair<std::string_view, NameUse>> duplicates;
  bool mixed_case = false;
  for (const NameUse& use : uses) {
    if (use.count >= 2) duplicates.emplace_back(use.name, use);
    mixed_case = mixed_case || !use.other_case.empty();
  }
  if (mixed_case) {
    // A group of names that differ in case may also repeat one name exactly
    // (zip.duplicate_name, which every reader sees, not torch's alone): its
    // entries are found again by their group and compared by exact name.
    // Rare, so the common path pays nothing.
    std::vector<std::pair<std::string_view, size_t>> spelled;  // (name, entry) in groups of several spellings
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string_view name = entries[i].name;
      for (size_t slot = hash(name) & (table_len - 1);; slot = (slot + 1) & (table_len - 1)) {
        const NameUse& use = uses[table[slot]];
        if (!same_name(use.name, name)) continue;
        if (!use.other_case.empty()) spelled.emplace_back(name, i);
        break;
      }
    }
    std::stable_sort(spelled.begin(), spelled.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t run = 0, next = 0; run < spelled.size(); run = next) {
      next = run + 1;
      while (next < spelled.size() && spelled[next].first == spelled[run].first) ++next;
      if (next - run < 2) continue;
      duplicates.emplace_back(spelled[run].first,
                              NameUse{spelled[run].first, spelled[run].second, spelled[next - 1].second, next - run, {}});
    }
  }
  // By name, as before (a name's exact repeats before its case group):
  // deterministic.
  std::sort(duplicates.begin(), duplicates.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second.other_case.empty() > b.second.other_case.empty();
  });
  // Which entry torch's reader reads for each such name: miniz's lookup
  // over its name-sorted directory (MinizNameOrder), sorted only here.
  std::vector<uint32_t> miniz_order;
  if (!duplicates.empty()) miniz_order = MinizNameOrder(entries);
  auto torch_reads = [&](std::string_view name) {
    const std::optional<size_t> found = MinizLocate(entries, miniz_order, name);
    if (!found) return std::string("none of them");  // not reached: the name is there
    const ZipEntry& e = entries[*found];
    return (e.name == name ? std::string("the copy") : "'" + e.name + "'") + " at offset " + Num(e.local_header_offset);
  };
  for (const auto& [name, use] : duplicates) {
    if (!use.other_case.empty()) {
      out.push_back({"zip.case_duplicate_name", entries[use.first].central_offset, std::string(name),
                     "name appears " + Num(use.count) + " times when case is ignored (also as '" +
                         std::string(use.other_case) +
                         "'): torch's reader looks names up without regard to case and reads " + torch_reads(name) +
                         " (the one its binary search over the names, sorted by an unstable heap sort, meets)"});
      continue;
    }
    out.push_back({"zip.duplicate_name", entries[use.first].central_offset, std::string(name),
                   "name appears " + Num(use.count) + " times; torch's reader reads " + torch_reads(name) +
                       " (the one its binary search over the names, sorted by an unstable heap sort, meets)"});
  }
  // Coverage: entries (with their data descriptors), then the directory and
  // end records; anything between is a gap, anything overlapping is hostile.
  // Writers put entries in file order: then the spans are already sorted,
  // and sorting 20,000 of them again was a tenth of a checkpoint's scan.
  // Skipped only when strictly increasing (std::sort may reorder ties, and
  // the reports must not change).
  const auto by_begin = [](const Span& a, const Span& b) { return a.begin < b.begin; };
  const bool strictly_sorted =
      std::adjacent_find(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin >= b.begin; }) ==
      spans.end();
  if (!strictly_sorted) std::sort(spans.begin(), spans.end(), by_begin);
  for (size_t i = 0; i < spans.size(); ++i) {
    const ZipEntry& e = entries[spans[i].entry];
    if ((e.flags & kFlagDataDescriptor) != 0) {
      const uint64_t next = i + 1 < spans.size() ? spans[i + 1].begin : layout.directory_offset;
      spans[i].end = std::min<uint64_t>(file.size(), spans[i].end + DescriptorLen(file, spans[i].end, next));
    }
  }
  spans.push_back({layout.directory_offset, layout.directory_end, SIZE_MAX});
  if (layout.zip64) {
    // The zip64 end record (56 bytes + extensible data, as its size field
    // says) and the locator right before the end record. Bytes between the
    // two are no record's: a zip64 locator that points far back (at an
    // earlier archive's record, as in archives back to back) leaves a gap.
    spans.push_back({layout.zip64_end_offset, layout.zip64_end_offset + layout.zip64_end_len, SIZE_MAX});
    spans.push_back({layout.end_record_offset - kZip64LocatorLen, layout.end_record_offset, SIZE_MAX});
  }
  spans.push_back({layout.end_record_offset, layout.end_record_offset + layout.end_record_len, SIZE_MAX});
  // (A stable sort of sorted spans changes nothing.)
  if (!std::is_sorted(spans.begin(), spans.end(), by_begin)) std::stable_sort(spans.begin(), spans.end(), by_begin);
  auto name_of = [&](const Span& s) { return s.entry == SIZE_MAX ? std::string("the central directory") : entries[s.entry].name; };
  uint64_t covered = 0;
  const Span* previous = nullptr;
  for (const Span& s : spans) {
    if (s.begin > covered) {
      out.push_back({"zip.gap", covered, previous ? name_of(*previous) : std::string(),
                     Num(s.begin - covered) + " bytes that no entry or record accounts for"});
    } else if (s.begin < covered && previous != nullptr) {
      out.push_back({"zip.overlapping_entries", s.begin, name_of(s),
                     "starts inside " + name_of(*previous) + ", which ends at " + Num(covered)});
    }
    if (s.end > covered) {
      covered = s.end;
      previous = &s;
    }
  }
  if (covered < file.size()) {
    out.push_back({"zip.trailing_data", covered, "", Num(file.size() - covered) + " bytes after the end record"});
  }
  return out;
}

}  // namespace ckptguard

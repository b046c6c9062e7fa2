// ZipArchive: reads a zip the way torch's reader (miniz) does.
//
// Names, sizes, methods and offsets come from the central directory (found
// through the end-of-central-directory record, or its zip64 form); the local
// header is read only for its name and extra-field lengths, to find the data.
// Stored entries are zero-copy views of the input; deflated entries are
// inflated with zlib into an owned buffer, bounded by ZipLimits.
#ifndef CKPTGUARD_ZIP_READER_H_
#define CKPTGUARD_ZIP_READER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/budget.h"
#include "ckptguard/bulk_allocator.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// ZipLimits bounds what one archive may make us do.
struct ZipLimits {
  // Most central-directory entries. Default 1,000,000 (a checkpoint has one
  // record per storage plus a few). Ceiling 2^24.
  uint64_t max_entries = 1'000'000;
  // Longest entry name in bytes. Default 4096 (PATH_MAX). Ceiling 65535 (the
  // field is 16 bits).
  uint64_t max_name_len = 4096;
  // Largest inflated size of one deflated entry. Default 4 GiB; ceiling 2^40.
  uint64_t max_inflated_len = uint64_t{4} << 30;
  // Largest inflated/compressed ratio of one deflated entry (zip bombs).
  // Default 1100 (deflate's best is about 1032). Ceiling 1,000,000.
  uint64_t max_ratio = 1100;
  // Largest entry (uncompressed) whose CRC CheckZip computes. Default: all
  // (2^40), as `info` and `verify` want. The loader and the scanner pass a
  // small value so that opening a checkpoint never reads its tensor records;
  // larger entries are left unchecked (crc_ok unset).
  uint64_t max_crc_check_len = uint64_t{1} << 40;

  ZipLimits Clamped() const;
};

inline constexpr uint16_t kZipMethodStored = 0;
inline constexpr uint16_t kZipMethodDeflated = 8;

// ZipEntry is one central-directory record, with zip64 values applied.
struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_len = 0;
  uint64_t uncompressed_len = 0;
  uint64_t local_header_offset = 0;
  uint64_t central_offset = 0;  // where this record sits in the file
};

// ZipLayout is where the archive's own records sit in the file.
struct ZipLayout {
  uint64_t directory_offset = 0;   // first central-directory record
  uint64_t directory_len = 0;      // as the end record declares it
  uint64_t directory_end = 0;      // where parsing the records actually ended
  uint64_t zip64_end_offset = 0;   // zip64 end record, when present
  uint64_t zip64_end_len = 0;      // its 12 + declared size bytes (the locator follows it)
  bool zip64 = false;
  uint64_t end_record_offset = 0;  // end-of-central-directory record
  uint64_t end_record_len = 0;     // 22 + its comment
  uint16_t disk_number = 0;        // the end record's: 0, or 1 (miniz reads 1/1 as one archive)
};

// ZipEntryPrefix is what a lenient reader hands out of an entry: the bytes
// decoded before the data broke, and where and how it broke (unset when the
// entry decoded whole, to its declared size).
struct ZipEntryPrefix {
  std::string data;
  std::optional<Error> damage;
};

// ZipLocalHeader is an entry's local file header.
struct ZipLocalHeader {
  std::string_view name;           // a view of the archive's file
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_len = 0;     // 0xffffffff fields resolved from its zip64 extra
  uint64_t uncompressed_len = 0;
  uint64_t data_offset = 0;        // right after the header, its name and extra field
};

class ZipArchive {
 public:
  // Open parses the end records and the whole central directory of `file`
  // (which must outlive the archive). Failure: kTruncated/kMalformed with the
  // offset of the bad record, kLimitExceeded naming the limit.
  static Result<ZipArchive> Open(Bytes file, const ZipLimits& limits = {});

  // OpenAsZipfile reads `file`'s directory as Python's zipfile does
  // (zipfile.py's _EndRecData, _EndRecData64, _RealGetContents and ZipInfo),
  // which numpy.load and any zipfile user read: the last end record (one
  // with no comment at the very end first), the zip64 end record assumed
  // right before its locator, the directory taken as the cd_size bytes that
  // end at those records whatever their offset field says, every offset
  // shifted by the difference (`concat`, bytes prepended to the archive),
  // records read until cd_size bytes are counted (the entry counts and disk
  // numbers are not used), names cut at their first NUL. Any bad record
  // fails the whole reading, as zipfile refuses the archive. The archive's
  // file() is `file` from base() on (the shift, when positive: zipfile reads
  // nothing before it), and every offset in it counts from there.
  static Result<ZipArchive> OpenAsZipfile(Bytes file, const ZipLimits& limits = {});
  // ZipfileReadsAs: OpenAsZipfile(file, limits) would succeed with base() 0
  // and give exactly `count` entries, entry i one for which `same(i, entry,
  // name)` holds (`name` is the name zipfile gives it; entry.name is left
  // empty). It stops at the first that differs and keeps no entry: the cheap
  // way to learn that zipfile reads what another reading already holds.
  static bool ZipfileReadsAs(Bytes file, const ZipLimits& limits, size_t count,
                             const std::function<bool(size_t, const ZipEntry&, std::string_view)>& same);
  // Where file() starts in the file OpenAsZipfile was given (0 for Open).
  uint64_t base() const { return base_; }
  // zipfile's `concat`: the shift of every offset (0 for Open).
  int64_t concat() const { return concat_; }

  std::span<const ZipEntry> entries() const { return entries_; }
  // ReleaseEntries hands the entries over (the archive keeps none).
  BulkVector<ZipEntry> ReleaseEntries() { return std::exchange(entries_, {}); }
  const ZipLayout& layout() const { return layout_; }
  Bytes file() const { return file_; }
  const ZipLimits& limits() const { return limits_; }

  // ReadLocalHeader parses the local header of `entry` (kMalformed when its
  // signature is wrong or it lies outside the file).
  Result<ZipLocalHeader> ReadLocalHeader(const ZipEntry& entry) const;

  // DataOffset locates an entry's data through its local header and checks
  // that `compressed_len` bytes fit in the file.
  Result<uint64_t> DataOffset(const ZipEntry& entry) const;
  // StoredData is the zero-copy view of a stored entry's data.
  Result<Bytes> StoredData(const ZipEntry& entry) const;
  // ReadEntry returns the entry's uncompressed bytes: a copy of a stored entry
  // or the inflated data of a deflated one, bounded by the limits. Other
  // methods are kUnsupportedFormat. The output grows as data inflates; each
  // inflated byte (and a stored entry's copy) is charged to `budget` when
  // given, and running out stops the inflate with the budget's error.
  Result<std::string> ReadEntry(const ZipEntry& entry, Budget* budget = nullptr) const;
  // ReadEntryPrefix inflates a deflated entry as Python's ZipExtFile hands
  // it out: up to its declared size, and when the stream breaks (or ends
  // short, or runs on) the bytes inflated before, with the damage. The
  // limits and the budget still fail it.
  Result<ZipEntryPrefix> ReadEntryPrefix(const ZipEntry& entry, Budget* budget = nullptr) const;

 private:
  template <typename OnEntry>
  static Result<bool> ReadAsZipfile(Bytes whole, const ZipLimits& limits, ZipArchive& zip, OnEntry&& on_entry);
  Result<ZipEntryPrefix> Inflate(const ZipEntry& entry, Budget* budget, bool keep_prefix) const;

  uint64_t base_ = 0;
  int64_t concat_ = 0;
  Bytes file_;
  ZipLimits limits_;
  ZipLayout layout_;
  BulkVector<ZipEntry> entries_;  // bulk_allocator.h: one per tensor of a checkpoint
};

// MinizNameOrder is the order in which torch's zip reader (miniz, which
// PyTorchStreamReader opens with the central directory sorted) keeps the
// entries to look names up: miniz's heap sort of the entry indexes by name
// with ASCII case ignored. A heap sort is not stable, so among entries of
// one name (or of names equal but for case) which comes where follows only
// from this exact sort of the whole directory.
std::vector<uint32_t> MinizNameOrder(std::span<const ZipEntry> entries);
// MinizLocate is the entry torch's reader reads for `name`
// (mz_zip_reader_locate_file: a binary search of `order`, which
// MinizNameOrder made from `entries`, case ignored, stopping at the first
// equal name it meets); nullopt when it finds none.
std::optional<size_t> MinizLocate(std::span<const ZipEntry> entries, std::span<const uint32_t> order,
                                  std::string_view name);

// CheckZip lists what a strict reader notices and torch's does not: local
// headers that disagree with the central directory (zip.local_name_mismatch,
// zip.local_header_mismatch), CRC mismatches (zip.crc_mismatch; torch does not
// check them), flag bits torch refuses (zip.encrypted, zip.refused_flags),
// compression methods it cannot read (zip.unsupported_method), stored entries
// whose two sizes differ (zip.stored_size_mismatch: torch's reader reads the
// uncompressed size), an end record numbering its disk 1 (zip.disk_numbers),
// duplicate names
// (zip.duplicate_name, naming the entry torch reads: MinizLocate), names
// that differ only in ASCII case (zip.case_duplicate_name: one name to
// torch's reader, which looks names up without regard to case; the
// container keeps it for torch archives only, as zipfile and numpy tell
// such names apart), entries
// overlapping each other (zip.overlapping_entries), bytes no entry accounts
// for (zip.gap), bytes after the end record (zip.trailing_data), unreadable
// local headers or data (zip.bad_entry). Offsets are absolute. CRCs of
// deflated entries are checked by inflating them within the archive's limits;
// entries larger than max_crc_check_len are not checked.
// When `statuses` is given it receives one status per entry, in directory order.
struct ZipEntryStatus {
  std::optional<uint64_t> data_offset;  // unset when the local header is unreadable
  std::optional<bool> crc_ok;           // unset when the CRC was not (or could not be) computed
};
// With `check_deflated` false, deflated entries are neither inflated nor
// CRC-checked (nor their inflate errors reported) here: a caller that
// inflates them anyway checks them then (ZipCrc32), so nothing is inflated twice.
Anomalies CheckZip(const ZipArchive& zip, BulkVector<ZipEntryStatus>* statuses = nullptr,
                   bool check_deflated = true);

// ZipStoredReadLen is how many bytes of a stored entry whose data starts at
// `data_offset` of `file` its readers read: torch's reader (miniz's
// mz_zip_reader_extract_to_mem) reads the uncompressed size, Python's
// zipfile reads the compressed size cut at the uncompressed one. The
// uncompressed size when it fits in the file (it covers both), else the
// smaller of the two.
uint64_t ZipStoredReadLen(Bytes file, const ZipEntry& entry, uint64_t data_offset);

// ZipCrc32 is the zip CRC-32 of `data`.
uint32_t ZipCrc32(Bytes data);

// LooksLikeZip is true when `file` starts with a local file header
// (PK\x03\x04): the test torch itself uses to choose the zip reader.
bool LooksLikeZip(Bytes file);

// EmbeddedZip is a zip archive found inside a file by its end record: the
// bytes [begin, end) that a reader handed just that range reads as a whole
// archive (its directory offsets count from `begin`). torch.distributed.
// checkpoint writes .distcp files of torch archives back to back and reads
// each through such a range (torch.load of a file slice).
struct EmbeddedZip {
  uint64_t begin = 0;
  uint64_t end = 0;
};

// FindEmbeddedZips returns, in file order, every archive of at least one
// entry whose end record lies in `file`: an end record (with its zip64
// records when a locator precedes it) whose directory, counted back from
// the record, starts at a local file header. At most `max` are returned
// (`*more` is set when there were more). It reads the whole file.
std::vector<EmbeddedZip> FindEmbeddedZips(Bytes file, size_t max, bool* more = nullptr);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_ZIP_READER_H_

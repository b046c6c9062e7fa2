// Private to lib/formats: tar and 7z archives, read with libarchive.
//
// torch.load reads a tar as the legacy format of torch < 0.4 (members
// 'storages', 'tensors' and 'pickle', each run through the unpickler) before
// it tries anything else; 7z archives hold model files as any archive does.
#ifndef CKPTGUARD_LIB_FORMATS_SRC_ARCHIVE_READER_H_
#define CKPTGUARD_LIB_FORMATS_SRC_ARCHIVE_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"

namespace ckptguard {

enum class ArchiveKind : uint8_t { kTar, kSevenZip };

// DetectArchive: 7z by its 6-byte signature; tar when the first 512-byte
// header's checksum holds, as Python's tarfile.is_tarfile decides (so old v7
// tars without the "ustar" magic count too).
std::optional<ArchiveKind> DetectArchive(Bytes data);

// PythonReadsAsTar: Python's tarfile takes the first 512-byte header (its
// checksum field read as tarfile.nti reads numbers: int(s, 8), so '0o',
// a sign, blanks and underscores are taken). torch.load tries that before
// anything else for a file that does not start with a zip local header.
bool PythonReadsAsTar(Bytes data);

// TarReadingDiffers walks a tar's headers as Python's tarfile does (at most
// `max_headers`) and returns the first place where Python and C tar readers
// (libarchive) may read different members: a checksum or size field the two
// read as different numbers (libarchive: octal digits up to the first other
// byte), or (`extension`) a pax, GNU long-name or sparse header or a type
// tarfile reads as a regular file, each of which the two read differently.
struct TarReadingDifference {
  uint64_t offset = 0;
  std::string detail;
  bool extension = false;
};
std::optional<TarReadingDifference> TarReadingDiffers(Bytes data, uint64_t max_headers);

struct ArchiveMember {
  std::string name;  // as the archive spells it
  std::string data;  // its whole content (regular files only)
};

struct ArchiveContents {
  std::vector<ArchiveMember> members;  // in archive order, duplicates kept
  // Where reading stopped early (a corrupt or truncated archive); the
  // members read before it are kept.
  std::optional<Error> error;
};

// ReadArchive reads every regular member of `data`. Bounds: at most
// `max_members` members, `max_member_len` bytes each and `max_ratio` x the
// archive's size in all (7z compresses); every byte read out is charged to
// `budget` (kInflatedBytes). Those failing is the returned error
// (kLimitExceeded naming the limit); a corrupt archive is not (see
// ArchiveContents::error).
Result<ArchiveContents> ReadArchive(Bytes data, ArchiveKind kind, uint64_t max_members, uint64_t max_member_len,
                                    uint64_t max_ratio, Budget& budget);

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_FORMATS_SRC_ARCHIVE_READER_H_

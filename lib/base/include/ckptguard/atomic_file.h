// AtomicFile: write a file whole or not at all.
//
// The bytes go to a temporary file in the destination's folder; Commit()
// fsyncs it, renames it over the destination and fsyncs the folder. A crash
// or failure at any step leaves either the old file or the new one, never a
// torn one; a failed or abandoned AtomicFile removes its temporary file.
//
// Every file ckptguard writes (reports, conversions, signatures, keys,
// pulled blobs) goes through here, so these rules hold for all of them:
// - The temporary name is unpredictable and created with O_EXCL: a file or
//   link planted next to the destination is never written through.
// - An existing destination keeps its permission bits (0600 stays 0600) and,
//   where the process may set them, its owner and group.
// - A destination that is a symbolic link, a folder, a device, a FIFO or a
//   socket is refused before anything is written: replacing a link would
//   silently turn it into a regular file, and writing through it would let
//   whoever planted it choose the file. Name the link's target instead.
// - A destination name up to NAME_MAX bytes works (the temporary name is
//   shortened to fit).
// - A write that fails (ENOSPC, EFBIG past `ulimit -f`: the CLI and the
//   daemon ignore SIGXFSZ so that this is an error, not a kill) removes the
//   temporary file.
#ifndef CKPTGUARD_ATOMIC_FILE_H_
#define CKPTGUARD_ATOMIC_FILE_H_

#include <cstdint>
#include <string>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

class AtomicFile {
 public:
  // Create opens a new temporary file ".<name>.tmp-XXXXXX" next to `path`
  // (O_EXCL, O_CLOEXEC; mode 0666 minus the umask for a new file, the
  // existing file's permission bits and owner otherwise). Failure:
  // kInvalidArgument for an empty path or a destination that is not a
  // regular file (a link, folder, device...), kIo naming `path`, the folder
  // and the errno text.
  static Result<AtomicFile> Create(const std::string& path);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // The destructor removes the temporary file unless Commit succeeded.
  ~AtomicFile();

  // Write appends `data` (short writes and EINTR are retried). Failure: kIo
  // naming the destination and the errno text (e.g. "No space left on device");
  // the temporary file is then removed and a later Commit fails.
  Status Write(Bytes data);
  uint64_t size() const { return size_; }
  const std::string& temp_path() const { return temp_path_; }
  // SetMode sets the permission bits of the (temporary, then final) file,
  // e.g. 0600 before a private key is written into it.
  Status SetMode(uint32_t mode);

  // Commit: fsync the file, close it, rename it over the destination, fsync
  // the folder. A failure before the rename (fsync, close, rename) leaves the
  // destination unchanged and removes the temporary file. A failure of the
  // folder fsync comes after the rename: the new file is in place (it is
  // complete and flushed; only the durability of the rename is unknown), and
  // the error says so. Commit works once; any call after a failure fails.
  Status Commit();

 private:
  AtomicFile() = default;
  void Abandon();
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint32_t writes_ = 0;
  bool committed_ = false;
};

// WriteFileAtomically writes `data` to `path` with an AtomicFile.
Status WriteFileAtomically(const std::string& path, Bytes data);

// SetAtomicFileFailureForTesting is for tests only: it makes one step of
// every AtomicFile in the process fail with `errno_value` (kWrite: the `nth`
// Write call of each file, counting from 1), without touching the disk for
// that step. kNone turns injection off. Not thread-safe with respect to the
// AtomicFiles it affects; never call it outside tests.
enum class AtomicFileStep : uint8_t { kNone, kCreate, kWrite, kFsync, kRename, kFsyncDir };
void SetAtomicFileFailureForTesting(AtomicFileStep step, int errno_value, uint32_t nth = 1);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_ATOMIC_FILE_H_

// Opening input files: the one place that decides what may be read.
//
// Everything ckptguard reads from a path (model files, rule files, keys,
// schemas, signatures, files to hash or to push) is opened by OpenInputFile,
// which refuses anything that is not a regular file BEFORE opening it, so a
// FIFO, a device, a socket or a folder given where a file is expected never
// blocks and is never read:
//   1. stat (or lstat) the path, without opening it: refuse non-regular files;
//   2. open with O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_NOCTTY (a FIFO swapped in
//      between the two steps cannot block the open);
//   3. fstat the descriptor: refuse a non-regular file or one that is not the
//      inode step 1 saw; then clear O_NONBLOCK.
// FileIdentity is what step 3 saw; comparing it with a later fstat tells
// whether the file changed while it was read (ChangedWhileReading).
#ifndef CKPTGUARD_INPUT_FILE_H_
#define CKPTGUARD_INPUT_FILE_H_

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// FileIdentity: the fields of a stat that change when a file is replaced in
// place, truncated, extended or rewritten (ctime changes on every write, even
// one that keeps size and mtime, e.g. after utimensat).
struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t size = 0;
  int64_t mtime_sec = 0;
  int64_t mtime_nsec = 0;
  int64_t ctime_sec = 0;
  int64_t ctime_nsec = 0;

  static FileIdentity Of(const struct stat& st);
  bool operator==(const FileIdentity&) const = default;
};

struct OpenInputOptions {
  // false: a symbolic link at `path` itself is refused (lstat, O_NOFOLLOW),
  // as model signing wants. Links in the folders above are always followed.
  bool follow_symlinks = true;
};

// InputFile owns a descriptor opened by OpenInputFile (closed on
// destruction) and the identity the file had when it was opened.
class InputFile {
 public:
  InputFile() = default;
  InputFile(InputFile&& other) noexcept;
  InputFile& operator=(InputFile&& other) noexcept;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile();

  int fd() const { return fd_; }
  const FileIdentity& identity() const { return identity_; }
  const std::string& path() const { return path_; }
  // CheckUnchanged fstats the descriptor again: kIo ChangedWhileReading when
  // the identity differs from the one at open (or fstat fails).
  Status CheckUnchanged() const;

 private:
  friend Result<InputFile> OpenInputFile(const std::string& path, const OpenInputOptions& options);
  int fd_ = -1;
  FileIdentity identity_;
  std::string path_;
};

// OpenInputFile opens `path` for reading as described at the top. Failure:
// kIo naming the path: "cannot open"/"cannot stat" with the errno text, or
// "is a FIFO (named pipe), not a regular file" (also "a character device",
// "a block device", "a socket", "a folder", "a symbolic link"), or "was
// replaced while it was opened".
Result<InputFile> OpenInputFile(const std::string& path, const OpenInputOptions& options = {});

// ReadInputFile reads a whole regular file of at most `max_len` bytes into a
// string (rule files, keys, schemas, signatures). Failure: OpenInputFile's
// errors, kLimitExceeded when the file is larger than `max_len`, kIo
// ChangedWhileReading when it changed while it was read.
Result<std::string> ReadInputFile(const std::string& path, uint64_t max_len, const OpenInputOptions& options = {});

// ChangedWhileReading: the one error for a file that changed (was truncated,
// rewritten or extended) while ckptguard read it: kIo, "changed while being
// read", naming `path`. Callers report it instead of any result computed from
// the torn bytes.
std::unexpected<Error> ChangedWhileReading(const std::string& path, std::string_view how = {});

// IsChangedWhileReading: whether `error` is ChangedWhileReading's.
bool IsChangedWhileReading(const Error& error);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_INPUT_FILE_H_

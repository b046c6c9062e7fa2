#include "ckptguard/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ckptguard {
namespace {

constexpr std::string_view kChanged = "changed while being read";

// KindName: what a non-regular file is, for the refusal.
const char* KindName(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISLNK(mode)) return "a symbolic link (not followed)";
  return "not a regular file";
}

std::unexpected<Error> NotRegular(const std::string& path, mode_t mode) {
  const std::string kind = KindName(mode);
  return MakeError(ErrorCode::kIo, 0,
                   (kind.starts_with("not ") ? kind : "is " + kind + ", not a regular file") + ": refused unread",
                   path);
}

std::unexpected<Error> Errno(const char* what, int err, const std::string& path) {
  return MakeError(ErrorCode::kIo, 0, std::string(what) + ": " + std::strerror(err), path);
}

}  // namespace

FileIdentity FileIdentity::Of(const struct stat& st) {
  FileIdentity id;
  id.dev = static_cast<uint64_t>(st.st_dev);
  id.ino = static_cast<uint64_t>(st.st_ino);
  id.size = static_cast<int64_t>(st.st_size);
  id.mtime_sec = static_cast<int64_t>(st.st_mtim.tv_sec);
  id.mtime_nsec = static_cast<int64_t>(st.st_mtim.tv_nsec);
  id.ctime_sec = static_cast<int64_t>(st.st_ctim.tv_sec);
  id.ctime_nsec = static_cast<int64_t>(st.st_ctim.tv_nsec);
  return id;
}

InputFile::InputFile(InputFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), identity_(other.identity_), path_(std::move(other.path_)) {}

InputFile& InputFile::operator=(InputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    identity_ = other.identity_;
    path_ = std::move(other.path_);
  }
  return *this;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status InputFile::CheckUnchanged() const {
  struct stat st {};
  if (fd_ < 0) return OkStatus();
  if (::fstat(fd_, &st) != 0) return ChangedWhileReading(path_, std::string("fstat failed: ") + std::strerror(errno));
  if (!(FileIdentity::Of(st) == identity_)) return ChangedWhileReading(path_);
  return OkStatus();
}

Result<InputFile> OpenInputFile(const std::string& path, const OpenInputOptions& options) {
  if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "empty path");
  struct stat before {};
  const int stat_rc = options.follow_symlinks ? ::stat(path.c_str(), &before) : ::lstat(path.c_str(), &before);
  if (stat_rc != 0) return Errno("cannot open", errno, path);
  if (!S_ISREG(before.st_mode)) return NotRegular(path, before.st_mode);
  int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  InputFile out;
  out.path_ = path;
  out.fd_ = ::open(path.c_str(), flags);
  if (out.fd_ < 0) return Errno("cannot open", errno, path);
  struct stat st {};
  if (::fstat(out.fd_, &st) != 0) return Errno("cannot stat", errno, path);
  if (!S_ISREG(st.st_mode)) return NotRegular(path, st.st_mode);
  if (st.st_dev != before.st_dev || st.st_ino != before.st_ino) {
    return MakeError(ErrorCode::kIo, 0, "was replaced while it was opened", path);
  }
  const int fl = ::fcntl(out.fd_, F_GETFL);
  if (fl < 0 || ::fcntl(out.fd_, F_SETFL, fl & ~O_NONBLOCK) != 0) return Errno("cannot clear O_NONBLOCK", errno, path);
  out.identity_ = FileIdentity::Of(st);
  return out;
}

Result<std::string> ReadInputFile(const std::string& path, uint64_t max_len, const OpenInputOptions& options) {
  CKG_ASSIGN_OR_RETURN(InputFile file, OpenInputFile(path, options));
  auto too_large = [&] {
    return MakeError(ErrorCode::kLimitExceeded, max_len,
                     "file is larger than the " + std::to_string(max_len) + "-byte limit", path);
  };
  if (static_cast<uint64_t>(file.identity().size) > max_len) return too_large();
  std::string out;
  out.reserve(static_cast<size_t>(file.identity().size));
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(file.fd(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return MakeError(ErrorCode::kIo, out.size(), std::string("cannot read: ") + std::strerror(errno), path);
    }
    if (n == 0) break;
    if (static_cast<uint64_t>(n) > max_len - out.size()) return too_large();
    out.append(buf, static_cast<size_t>(n));
  }
  CKG_TRY(file.CheckUnchanged());
  if (out.size() != static_cast<uint64_t>(file.identity().size)) return ChangedWhileReading(path);
  return out;
}

std::unexpected<Error> ChangedWhileReading(const std::string& path, std::string_view how) {
  std::string detail(kChanged);
  if (!how.empty()) detail += " (" + std::string(how) + ")";
  return MakeError(ErrorCode::kIo, 0, std::move(detail), path);
}

bool IsChangedWhileReading(const Error& error) {
  return error.code == ErrorCode::kIo && std::string_view(error.detail).starts_with(kChanged);
}

}  // namespace ckptguard

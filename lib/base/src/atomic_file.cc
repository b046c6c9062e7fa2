#include "ckptguard/atomic_file.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <utility>

namespace ckptguard {
namespace {

std::atomic<AtomicFileStep> g_fail_step{AtomicFileStep::kNone};
std::atomic<int> g_fail_errno{0};
std::atomic<uint32_t> g_fail_nth{1};

// Injected returns the errno to fail `step` with, or 0.
int Injected(AtomicFileStep step, uint32_t nth = 1) {
  if (g_fail_step.load() != step) return 0;
  if (step == AtomicFileStep::kWrite && nth != g_fail_nth.load()) return 0;
  return g_fail_errno.load();
}

std::unexpected<Error> IoError(const std::string& path, const std::string& what, int err) {
  return MakeError(ErrorCode::kIo, 0, what + ": " + std::strerror(err), path);
}

std::string FolderOf(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// TempPrefix is ".<name>.tmp-" in the destination's folder, with <name>
// shortened so that the whole temporary name (and its six random letters)
// fits in NAME_MAX bytes whenever the destination's name does.
std::string TempPrefix(const std::string& folder, const std::string& name) {
  static constexpr size_t kExtra = 1 + 5 + 6;  // ".", ".tmp-", XXXXXX
  const std::string kept = name.size() + kExtra > NAME_MAX ? name.substr(0, NAME_MAX - kExtra) : name;
  return (std::filesystem::path(folder) / ("." + kept + ".tmp-")).string();
}

// What Create keeps of an existing destination.
struct Existing {
  mode_t mode;
  uid_t uid;
  gid_t gid;
};

// Destination looks at `path` without following a link: nullopt when there
// is nothing there yet, the regular file's mode and owner, or an error for
// anything that cannot be replaced safely.
Result<std::optional<Existing>> Destination(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<Existing>();
    return IoError(path, "cannot look at the output path", errno);
  }
  if (S_ISREG(st.st_mode)) return std::optional<Existing>(Existing{st.st_mode, st.st_uid, st.st_gid});
  const char* what = S_ISLNK(st.st_mode)   ? "a symbolic link"
                     : S_ISDIR(st.st_mode) ? "a folder"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "a device";
  std::string detail = std::string("the output path is ") + what + ", not a regular file; ckptguard writes a new file and renames it into place, so it neither writes through nor replaces one";
  if (S_ISLNK(st.st_mode)) detail += " (name the link's target instead)";
  return MakeError(ErrorCode::kInvalidArgument, 0, detail, path);
}

}  // namespace

void SetAtomicFileFailureForTesting(AtomicFileStep step, int errno_value, uint32_t nth) {
  g_fail_errno = errno_value;
  g_fail_nth = nth;
  g_fail_step = step;
}

Result<AtomicFile> AtomicFile::Create(const std::string& path) {
  if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "empty output path");
  const std::string folder = FolderOf(path);
  const std::string prefix = TempPrefix(folder, std::filesystem::path(path).filename().string());
  CKG_ASSIGN_OR_RETURN(const std::optional<Existing> existing, Destination(path));
  if (int err = Injected(AtomicFileStep::kCreate)) return IoError(path, "cannot create a temporary file in " + folder, err);
  // open(O_CREAT | O_EXCL, 0666) rather than mkstemp: mkstemp makes 0600, and
  // fixing that up needs the umask, which only umask() (process-wide, racy
  // with other threads) can read. Here the kernel applies the umask itself.
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::array<uint8_t, 6> random{};
    if (::getrandom(random.data(), random.size(), 0) != static_cast<ssize_t>(random.size())) {
      // No getrandom (old kernel, seccomp): names need only be unlikely to
      // collide, O_EXCL does the rest. std::random_device could throw.
      static std::atomic<uint64_t> counter{0};
      const uint64_t fallback =
          (static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull) ^
          (static_cast<uint64_t>(::getpid()) << 20) ^ counter.fetch_add(1);
      for (size_t i = 0; i < random.size(); ++i) random[i] = static_cast<uint8_t>(fallback >> (8 * i));
    }
    std::string temp = prefix;
    for (uint8_t r : random) temp.push_back(kAlphabet[r % kAlphabet.size()]);
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) return IoError(path, "cannot create a temporary file in " + folder, errno);
    AtomicFile out;
    out.path_ = path;
    out.temp_path_ = std::move(temp);
    out.fd_ = fd;
    if (existing) {
      // The owner first (a chown may clear mode bits), where the process may
      // set it: root anything, others a group they are in. A file that was
      // another user's becomes the writer's, as with any editor's save.
      if (existing->uid != ::geteuid() || existing->gid != ::getegid()) {
        if (::fchown(fd, existing->uid, existing->gid) != 0) (void)::fchown(fd, static_cast<uid_t>(-1), existing->gid);
      }
      CKG_TRY(out.SetMode(existing->mode & 0777));
    }
    return out;
  }
  return IoError(path, "cannot create a temporary file in " + folder, EEXIST);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      size_(other.size_),
      writes_(other.writes_),
      committed_(std::exchange(other.committed_, true)) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    writes_ = other.writes_;
    committed_ = std::exchange(other.committed_, true);
  }
  return *this;
}

AtomicFile::~AtomicFile() { Abandon(); }

void AtomicFile::Abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
  committed_ = true;
}

Status AtomicFile::Write(Bytes data) {
  if (fd_ < 0) return MakeError(ErrorCode::kInvalidArgument, 0, "write after commit or failure", path_);
  ++writes_;
  // A failed write leaves a file of unknown content: drop it, so that a later
  // Commit fails instead of publishing it.
  if (int err = Injected(AtomicFileStep::kWrite, writes_)) {
    Abandon();
    return IoError(path_, "cannot write", err);
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd_, data.data() + done, std::min<size_t>(data.size() - done, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      Abandon();
      return IoError(path_, "cannot write", err);
    }
    done += static_cast<size_t>(n);
  }
  size_ += data.size();
  return OkStatus();
}

Status AtomicFile::SetMode(uint32_t mode) {
  if (fd_ < 0) return MakeError(ErrorCode::kInvalidArgument, 0, "chmod after commit or failure", path_);
  if (::fchmod(fd_, static_cast<mode_t>(mode)) != 0) {
    const int err = errno;
    Abandon();
    return IoError(path_, "cannot set the file's mode", err);
  }
  return OkStatus();
}

Status AtomicFile::Commit() {
  if (fd_ < 0) return MakeError(ErrorCode::kInvalidArgument, 0, "commit after commit or failure", path_);
  int err = Injected(AtomicFileStep::kFsync);
  if (err == 0 && ::fsync(fd_) != 0) err = errno;
  // After a failed fsync the page cache may already have dropped the dirty
  // pages (retrying can "succeed" on lost data): give the file up.
  if (err != 0) {
    Abandon();
    return IoError(path_, "cannot flush to disk", err);
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    err = errno;
    Abandon();
    return IoError(path_, "cannot close", err);
  }
  err = Injected(AtomicFileStep::kRename);
  if (err == 0 && ::rename(temp_path_.c_str(), path_.c_str()) != 0) err = errno;
  if (err != 0) {
    Abandon();
    return IoError(path_, "cannot rename the finished file into place", err);
  }
  committed_ = true;  // the new file is in place; only its folder entry may still be unsynced
  err = Injected(AtomicFileStep::kFsyncDir);
  const int dir = err == 0 ? ::open(FolderOf(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (err == 0 && dir < 0) err = errno;
  if (err == 0 && ::fsync(dir) != 0) err = errno;
  if (dir >= 0) ::close(dir);
  if (err != 0) return IoError(path_, "written, but the folder could not be flushed to disk", err);
  return OkStatus();
}

Status WriteFileAtomically(const std::string& path, Bytes data) {
  CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  CKG_TRY(file.Write(data));
  return file.Commit();
}

}  // namespace ckptguard

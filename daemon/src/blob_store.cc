#include "ckptguard/daemon/blob_store.h"

#include "ckptguard/sha256.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <string_view>
#include <system_error>
#include <utility>

namespace ckptguard::daemon {
namespace {

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::unexpected<Error> IoError(const std::string& path, std::string_view what, int err) {
  return MakeError(ErrorCode::kIo, 0, std::string(what) + ": " + std::strerror(err), path);
}

// FsyncDir flushes a folder's entries (after a create, rename or unlink in it).
Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(dir, "cannot open folder to flush it", errno);
  int err = 0;
  if (::fsync(fd) != 0) err = errno;
  ::close(fd);
  if (err != 0) return IoError(dir, "cannot flush folder to disk", err);
  return OkStatus();
}

// MakeDir creates `dir` (mode 0700) unless it exists as a folder; `created`
// says whether it did.
Status MakeDir(const std::string& dir, bool* created = nullptr) {
  if (created != nullptr) *created = false;
  if (::mkdir(dir.c_str(), 0700) == 0) {
    if (created != nullptr) *created = true;
    return OkStatus();
  }
  const int err = errno;
  struct stat st{};
  if (err == EEXIST && ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return OkStatus();
  return IoError(dir, "cannot create folder", err == EEXIST ? ENOTDIR : err);
}

Status WriteAll(int fd, const uint8_t* data, size_t len, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::write(fd, data + done, std::min<size_t>(len - done, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError(path, "cannot write upload", n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

}  // namespace

namespace {

// BackgroundHasher: SHA-256 on a thread of its own, fed in order through a
// bounded queue, so hashing a large upload overlaps receiving and writing it
// (the bytes are still hashed exactly once, as they stream).
class BackgroundHasher {
 public:
  explicit BackgroundHasher(Sha256* hash) : hash_(hash), thread_([this] { Run(); }) {}
  ~BackgroundHasher() { Close(); }
  BackgroundHasher(const BackgroundHasher&) = delete;
  BackgroundHasher& operator=(const BackgroundHasher&) = delete;

  // Push copies the chunk; it blocks while kMaxQueued bytes wait.
  void Push(const uint8_t* data, size_t n) {
    std::unique_lock lock(mu_);
    space_.wait(lock, [&] { return queued_ < kMaxQueued; });
    queue_.emplace_back(data, data + n);
    queued_ += n;
    ready_.notify_one();
  }
  // Close waits until everything pushed is hashed.
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    ready_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static constexpr size_t kMaxQueued = size_t{16} << 20;
  void Run() {
    for (;;) {
      std::vector<uint8_t> chunk;
      {
        std::unique_lock lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || closed_; });
        if (queue_.empty()) return;
        chunk = std::move(queue_.front());
        queue_.pop_front();
      }
      hash_->Update(chunk.data(), chunk.size());
      {
        std::lock_guard lock(mu_);
        queued_ -= chunk.size();
      }
      space_.notify_one();
    }
  }
  Sha256* hash_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::deque<std::vector<uint8_t>> queue_;
  size_t queued_ = 0;
  bool closed_ = false;
  std::thread thread_;
};

// Below this size an upload is hashed inline (a thread is not worth it).
constexpr uint64_t kInlineHashBytes = uint64_t{4} << 20;
// Writeback is started every this many bytes, so Finish's fsync has little left.
constexpr uint64_t kWritebackBytes = uint64_t{16} << 20;

}  // namespace

struct Upload::Impl {
  std::string temp_path;
  int fd = -1;
  Sha256 hash;
  std::unique_ptr<BackgroundHasher> hasher;  // after hash: destroyed (joined) first
  uint64_t writeback_from = 0;
  uint64_t size = 0;
  uint64_t max_bytes = 0;
  std::string sha256;
  bool finished = false;
  bool failed = false;
  bool committed = false;  // the temp file was moved into place or dropped

  ~Impl() {
    if (fd >= 0) ::close(fd);
    if (!committed && !temp_path.empty()) ::unlink(temp_path.c_str());
  }
};

Upload::Upload(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Upload::~Upload() = default;
Upload::Upload(Upload&&) noexcept = default;
Upload& Upload::operator=(Upload&&) noexcept = default;

Status Upload::Append(Bytes chunk) {
  if (!impl_) return MakeError(ErrorCode::kInvalidArgument, 0, "append to a moved-from upload");
  Impl& u = *impl_;
  if (u.finished || u.failed || u.fd < 0) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "append after finish or failure", u.temp_path);
  }
  if (chunk.size() > u.max_bytes - u.size) {
    u.failed = true;
    return MakeError(ErrorCode::kLimitExceeded, u.size,
                     "upload exceeds max_bytes (" + std::to_string(u.max_bytes) + ")", u.temp_path);
  }
  if (!u.hasher && u.size + chunk.size() > kInlineHashBytes) {
    u.hasher = std::make_unique<BackgroundHasher>(&u.hash);
  }
  if (u.hasher) {
    u.hasher->Push(chunk.data(), chunk.size());
  } else {
    u.hash.Update(chunk.data(), chunk.size());
  }
  if (auto st = WriteAll(u.fd, chunk.data(), chunk.size(), u.temp_path); !st) {
    u.failed = true;
    return st;
  }
  u.size += chunk.size();
  if (u.size - u.writeback_from >= kWritebackBytes) {
    // Start writing back what is written so far (no wait); a failure here is
    // only lost overlap, Finish's fsync still decides.
    (void)::sync_file_range(u.fd, static_cast<off_t>(u.writeback_from),
                            static_cast<off_t>(u.size - u.writeback_from), SYNC_FILE_RANGE_WRITE);
    u.writeback_from = u.size;
  }
  return OkStatus();
}

Status Upload::Finish() {
  if (!impl_) return MakeError(ErrorCode::kInvalidArgument, 0, "finish a moved-from upload");
  Impl& u = *impl_;
  if (u.finished || u.failed || u.fd < 0) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "finish after finish or failure", u.temp_path);
  }
  if (u.hasher) u.hasher->Close();
  if (::fsync(u.fd) != 0) {
    u.failed = true;
    return IoError(u.temp_path, "cannot flush upload to disk", errno);
  }
  const int fd = std::exchange(u.fd, -1);
  if (::close(fd) != 0) {
    u.failed = true;
    return IoError(u.temp_path, "cannot close upload", errno);
  }
  auto hex = u.hash.FinishHex();
  if (!hex) {
    u.failed = true;
    return std::unexpected(hex.error());
  }
  u.sha256 = std::move(*hex);
  u.finished = true;
  return OkStatus();
}

uint64_t Upload::size() const { return impl_ ? impl_->size : 0; }

const std::string& Upload::sha256() const {
  static const std::string kEmpty;
  return impl_ ? impl_->sha256 : kEmpty;
}

const std::string& Upload::temp_path() const {
  static const std::string kEmpty;
  return impl_ ? impl_->temp_path : kEmpty;
}

Result<BlobStore> BlobStore::Open(const std::string& root, const std::string& upload_folder) {
  if (root.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "empty blob store root");
  if (upload_folder.find('/') != std::string::npos || upload_folder == "." || upload_folder == "..") {
    return MakeError(ErrorCode::kInvalidArgument, 0, "an upload folder is one name inside tmp/", upload_folder);
  }
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return IoError(root, "cannot create blob store root", ec.value());
  CKG_TRY(MakeDir(root + "/blobs"));
  CKG_TRY(MakeDir(root + "/tmp"));
  std::string upload_dir = root + "/tmp";
  if (!upload_folder.empty()) {
    upload_dir += "/" + upload_folder;
    CKG_TRY(MakeDir(upload_dir));
  }
  return BlobStore(root, std::move(upload_dir));
}

Result<Upload> BlobStore::BeginUpload(uint64_t max_bytes) const {
  try {
    auto impl = std::make_unique<Upload::Impl>();
    std::string templ = upload_dir_ + "/upload-XXXXXX";
    // mkostemp: O_EXCL, mode 0600, unique name.
    int fd = ::mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
      // The folder is gone: another server's cleanup judged this one dead
      // while its catalog connection was down. Make it again.
      CKG_TRY(MakeDir(upload_dir_));
      templ = upload_dir_ + "/upload-XXXXXX";
      fd = ::mkostemp(templ.data(), O_CLOEXEC);
    }
    if (fd < 0) return IoError(upload_dir_, "cannot create upload file", errno);
    impl->fd = fd;
    impl->temp_path = std::move(templ);
    impl->max_bytes = max_bytes;
    return Upload(std::move(impl));
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kIo, 0, "begin upload: out of memory", root_);
  }
}

Status BlobStore::Commit(Upload& upload) const {
  if (!upload.impl_) return MakeError(ErrorCode::kInvalidArgument, 0, "commit a moved-from upload");
  Upload::Impl& u = *upload.impl_;
  if (!u.finished || u.committed) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "commit needs a finished, uncommitted upload", u.temp_path);
  }
  if (!IsSha256Hex(u.sha256)) return MakeError(ErrorCode::kInternal, 0, "upload digest is not hex", u.temp_path);
  const std::string blobs = root_ + "/blobs";
  const std::string fan = blobs + "/" + u.sha256.substr(0, 2);
  const std::string dest = fan + "/" + u.sha256;
  bool created = false;
  CKG_TRY(MakeDir(fan, &created));
  if (created) CKG_TRY(FsyncDir(blobs));
  // Publish with link(): atomic, and it never replaces a blob another
  // process published (EEXIST: same digest, same content; keep theirs).
  // Where the filesystem has no hard links, rename() (also atomic; it
  // replaces a blob only with the same bytes).
  if (::link(u.temp_path.c_str(), dest.c_str()) != 0) {
    const int err = errno;
    if (err == EEXIST) {
      ::unlink(u.temp_path.c_str());
      u.committed = true;
      return OkStatus();
    }
    if (err != EPERM && err != ENOTSUP && err != ENOSYS) {
      return IoError(dest, "cannot publish upload into the blob store", err);
    }
    if (::rename(u.temp_path.c_str(), dest.c_str()) != 0) {
      return IoError(dest, "cannot move upload into the blob store", errno);
    }
  } else {
    ::unlink(u.temp_path.c_str());
  }
  u.committed = true;
  CKG_TRY(FsyncDir(fan));
  return FsyncDir(blobs);
}

std::string BlobStore::PathOf(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return {};
  return root_ + "/blobs/" + sha256.substr(0, 2) + "/" + sha256;
}

bool BlobStore::Has(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st{};
  return ::lstat(PathOf(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Status BlobStore::Remove(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "blob digest is not 64 lower-case hex digits");
  }
  const std::string path = PathOf(sha256);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return OkStatus();  // already gone: removal is idempotent
    return IoError(path, "cannot remove blob", errno);
  }
  return FsyncDir(root_ + "/blobs/" + sha256.substr(0, 2));
}

Result<std::vector<std::string>> BlobStore::List() const {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  const std::string blobs = root_ + "/blobs";
  fs::directory_iterator fans(blobs, ec);
  if (ec) return IoError(blobs, "cannot list blobs", ec.value());
  for (; fans != fs::directory_iterator(); fans.increment(ec)) {
    if (ec) return IoError(blobs, "cannot list blobs", ec.value());
    const std::string fan_name = fans->path().filename().string();
    if (fan_name.size() != 2 || !fans->is_directory(ec)) continue;
    fs::directory_iterator files(fans->path(), ec);
    if (ec) return IoError(fans->path().string(), "cannot list blobs", ec.value());
    for (; files != fs::directory_iterator(); files.increment(ec)) {
      if (ec) return IoError(fans->path().string(), "cannot list blobs", ec.value());
      const std::string name = files->path().filename().string();
      if (IsSha256Hex(name) && name.compare(0, 2, fan_name) == 0 && files->is_regular_file(ec)) {
        out.push_back(name);
      }
    }
    if (ec) return IoError(fans->path().string(), "cannot list blobs", ec.value());
  }
  if (ec) return IoError(blobs, "cannot list blobs", ec.value());
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<std::string>> BlobStore::UploadEntries() const {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string tmp = root_ + "/tmp";
  std::vector<std::string> out;
  fs::directory_iterator it(tmp, ec);
  if (ec) return IoError(tmp, "cannot list temp folder", ec.value());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return IoError(tmp, "cannot list temp folder", ec.value());
    out.push_back(it->path().filename().string());
  }
  if (ec) return IoError(tmp, "cannot list temp folder", ec.value());
  std::sort(out.begin(), out.end());
  return out;
}

Status BlobStore::RemoveUploads(const std::string& name) const {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "not a name inside tmp/", name);
  }
  std::error_code ec;
  const std::string path = root_ + "/tmp/" + name;
  std::filesystem::remove_all(path, ec);
  if (ec) return IoError(path, "cannot remove temp file", ec.value());
  return OkStatus();
}

}  // namespace ckptguard::daemon

#include "ckptguard/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ckptguard {

Result<MappedFile> MappedFile::Open(const std::string& path) {
  auto io_error = [&](const char* what) {
    return MakeError(ErrorCode::kIo, 0, std::string(what) + ": " + std::strerror(errno), path);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    auto err = io_error("cannot stat");
    ::close(fd);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return MakeError(ErrorCode::kIo, 0, "not a regular file", path);
  }
  MappedFile out;
  out.path_ = path;
  out.size_ = static_cast<size_t>(st.st_size);
  if (out.size_ > 0) {
    void* addr = ::mmap(nullptr, out.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      auto err = io_error("cannot map");
      ::close(fd);
      return err;
    }
    out.addr_ = addr;
  }
  ::close(fd);
  return out;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      path_(std::move(other.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
    path_ = std::move(other.path_);
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

void MappedFile::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

void MappedFile::AdviseRandom() const {
  if (addr_ != nullptr && size_ > 0) ::madvise(addr_, size_, MADV_RANDOM);
}

}  // namespace ckptguard

#include "ckptguard/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "ckptguard/input_file.h"

namespace ckptguard {
namespace {

EVP_MD_CTX* Ctx(void* p) { return static_cast<EVP_MD_CTX*>(p); }

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  ok_ = ctx_ != nullptr && EVP_DigestInit_ex(Ctx(ctx_), EVP_sha256(), nullptr) == 1;
}

Sha256::~Sha256() { EVP_MD_CTX_free(Ctx(ctx_)); }

Sha256::Sha256(Sha256&& other) noexcept
    : ctx_(std::exchange(other.ctx_, nullptr)), ok_(other.ok_), size_(other.size_) {}

Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(Ctx(ctx_));
    ctx_ = std::exchange(other.ctx_, nullptr);
    ok_ = other.ok_;
    size_ = other.size_;
  }
  return *this;
}

void Sha256::Update(const void* data, size_t size) {
  if (size == 0) return;
  ok_ = ok_ && ctx_ != nullptr && EVP_DigestUpdate(Ctx(ctx_), data, size) == 1;
  size_ += size;
}

Result<std::string> Sha256::FinishHex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!ok_ || ctx_ == nullptr || EVP_DigestFinal_ex(Ctx(ctx_), digest, &len) != 1 || len != 32) {
    ok_ = false;
    return MakeError(ErrorCode::kInternal, 0, "OpenSSL SHA-256 failed");
  }
  ok_ = false;  // spent
  return HexLower(std::string_view(reinterpret_cast<const char*>(digest), len));
}

std::string HexLower(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 hash;
  hash.Update(bytes);
  auto hex = hash.FinishHex();
  return hex ? *hex : std::string(64, '0');
}

Result<std::string> Sha256FdHex(int fd, const std::string& name) {
  // A regular file that changes while it is hashed (truncated, rewritten in
  // place) would give the digest of bytes that never existed together.
  struct stat before {};
  const bool regular = ::fstat(fd, &before) == 0 && S_ISREG(before.st_mode);
  Sha256 hash;
  std::vector<char> buffer(size_t{1} << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return MakeError(ErrorCode::kIo, hash.size(), std::string("cannot read: ") + std::strerror(errno), name);
    }
    if (n == 0) break;
    hash.Update(buffer.data(), static_cast<size_t>(n));
  }
  if (regular) {
    struct stat after {};
    if (::fstat(fd, &after) != 0 || !(FileIdentity::Of(after) == FileIdentity::Of(before))) {
      return ChangedWhileReading(name);
    }
  }
  return hash.FinishHex();
}

Result<std::string> Sha256FileHex(const std::string& path) {
  CKG_ASSIGN_OR_RETURN(InputFile file, OpenInputFile(path));
  CKG_ASSIGN_OR_RETURN(std::string hex, Sha256FdHex(file.fd(), path));
  CKG_TRY(file.CheckUnchanged());  // also against the identity OpenInputFile saw
  return hex;
}

}  // namespace ckptguard

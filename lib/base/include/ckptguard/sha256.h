// SHA-256 for every component (OpenSSL EVP underneath): streaming, one shot,
// whole files in bounded chunks, and the lower-case hex the project prints.
#ifndef CKPTGUARD_SHA256_H_
#define CKPTGUARD_SHA256_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(Bytes data) { Update(data.data(), data.size()); }
  void Update(std::string_view text) { Update(text.data(), text.size()); }
  uint64_t size() const { return size_; }
  // FinishHex: 64 lower-case hex digits. Fails (kInternal) only when OpenSSL
  // did, at any step; the object is spent afterwards.
  Result<std::string> FinishHex();

 private:
  void* ctx_ = nullptr;  // EVP_MD_CTX
  bool ok_ = true;
  uint64_t size_ = 0;
};

// HexLower: two lower-case hex digits per byte.
std::string HexLower(std::string_view bytes);
// Sha256Hex: the digest of `bytes` in one call (OpenSSL failing here is an
// abort-worthy invariant, reported as 64 zeros never matching a real digest).
std::string Sha256Hex(std::string_view bytes);
// Sha256FileHex hashes a whole file in 1 MiB reads (no mapping, no full
// read), opened with OpenInputFile (input_file.h: FIFOs, devices, sockets and
// folders are refused unopened); kIo names the path, the byte reached and the
// errno text, or is ChangedWhileReading when the file changed while hashed.
Result<std::string> Sha256FileHex(const std::string& path);
// Sha256FdHex: the same for a file the caller opened (and checked) itself,
// read from where it stands to its end; `name` is what errors name. The
// caller keeps and closes `fd`. For a regular file, an fstat before and after
// must agree (else kIo ChangedWhileReading).
Result<std::string> Sha256FdHex(int fd, const std::string& name);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_SHA256_H_

// BlobStore: the registry's content-addressed file store under DATA/blobs.
// A blob's path is blobs/<first two hex>/<sha256>; uploads are written to
// DATA/tmp first and hashed while they stream, so the bytes are read once.
// Commit fsyncs the file, renames it into place and fsyncs the folders: a
// blob is either whole under its digest or absent.
#ifndef CKPTGUARD_DAEMON_BLOB_STORE_H_
#define CKPTGUARD_DAEMON_BLOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"

namespace ckptguard::daemon {

// An upload in progress: a temp file plus a running SHA-256. Destroying an
// Upload that was not committed removes its temp file.
class Upload {
 public:
  ~Upload();
  Upload(Upload&&) noexcept;
  Upload& operator=(Upload&&) noexcept;
  Upload(const Upload&) = delete;
  Upload& operator=(const Upload&) = delete;

  // Append fails with kLimitExceeded once size() would pass max_bytes.
  Status Append(Bytes chunk);
  // Finish flushes and fsyncs the temp file and fixes the digest; no Append after it.
  Status Finish();
  uint64_t size() const;
  const std::string& sha256() const;      // hex; valid after Finish
  const std::string& temp_path() const;   // the file to scan before Commit

 private:
  friend class BlobStore;
  struct Impl;
  explicit Upload(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class BlobStore {
 public:
  // Open creates root/blobs and root/tmp when missing.
  static Result<BlobStore> Open(const std::string& root);

  Result<Upload> BeginUpload(uint64_t max_bytes) const;
  // Commit moves a finished upload to PathOf(upload.sha256()); when that blob
  // already exists the upload's temp file is dropped instead (same content).
  Status Commit(Upload& upload) const;
  std::string PathOf(const std::string& sha256) const;
  bool Has(const std::string& sha256) const;
  Status Remove(const std::string& sha256) const;
  Result<std::vector<std::string>> List() const;  // digests of every blob
  // RemoveTemp deletes everything under root/tmp (run at start-up: those
  // are uploads a crash interrupted).
  Status RemoveTemp() const;
  const std::string& root() const { return root_; }

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// (Sha256FileHex, to re-hash a blob, is in ckptguard/sha256.h.)

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_BLOB_STORE_H_

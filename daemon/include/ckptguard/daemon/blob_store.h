// BlobStore: the registry's content-addressed file store under DATA/blobs.
// A blob's path is blobs/<first two hex>/<sha256>; uploads are written to
// DATA/tmp/<upload folder> first and hashed while they stream, so the bytes
// are read once. Commit fsyncs the file, publishes it under its digest with
// link() (never replacing a blob: the first publisher wins, later ones of
// the same content drop their copy) and fsyncs the folders: a blob is
// either whole under its digest or absent. Nothing here relies on a
// process-local lock, so several servers may share the folder (a shared
// filesystem with atomic link/rename, such as NFSv4 or CephFS); which blobs
// may be removed is decided through the catalog (Catalog::SweepBlob).
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
  // Open creates root/blobs, root/tmp and root/tmp/<upload_folder> (where
  // this process's uploads go; "" means root/tmp itself) when missing.
  static Result<BlobStore> Open(const std::string& root, const std::string& upload_folder = "");

  Result<Upload> BeginUpload(uint64_t max_bytes) const;
  // Commit moves a finished upload to PathOf(upload.sha256()); when that blob
  // already exists the upload's temp file is dropped instead (same content).
  Status Commit(Upload& upload) const;
  std::string PathOf(const std::string& sha256) const;
  bool Has(const std::string& sha256) const;
  Status Remove(const std::string& sha256) const;
  Result<std::vector<std::string>> List() const;  // digests of every blob
  // UploadEntries lists the names in root/tmp (processes' upload folders,
  // and files an older layout left there); RemoveUploads deletes one of them
  // with everything in it (uploads a crash interrupted).
  Result<std::vector<std::string>> UploadEntries() const;
  Status RemoveUploads(const std::string& name) const;
  const std::string& root() const { return root_; }

 private:
  BlobStore(std::string root, std::string upload_dir) : root_(std::move(root)), upload_dir_(std::move(upload_dir)) {}
  std::string root_;
  std::string upload_dir_;  // root/tmp[/<upload folder>]
};

// (Sha256FileHex, to re-hash a blob, is in ckptguard/sha256.h.)

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_BLOB_STORE_H_

// MappedFile: a read-only memory map of a whole file.
//
// Model files are mapped, never read whole into memory; tensors and stored zip
// entries are zero-copy views of the mapping. The map is MAP_PRIVATE and
// PROT_READ: nothing can write through it.
#ifndef CKPTGUARD_MAPPED_FILE_H_
#define CKPTGUARD_MAPPED_FILE_H_

#include <cstdint>
#include <string>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"

namespace ckptguard {

class MappedFile {
 public:
  // Open maps `path` read-only. Failure: kIo naming the path and errno text
  // (also for directories and other non-regular files). An empty file maps to
  // an empty span. The span lives as long as the MappedFile.
  static Result<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  Bytes data() const { return {static_cast<const uint8_t*>(addr_), size_}; }
  // AdviseRandom tells the kernel that access will be sparse (a scan reads
  // directories, headers and pickles, never tensor data): no readahead
  // around each page touched. Advisory; errors are ignored.
  void AdviseRandom() const;
  const std::string& path() const { return path_; }

 private:
  void Reset();

  void* addr_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace ckptguard

#endif  // CKPTGUARD_MAPPED_FILE_H_

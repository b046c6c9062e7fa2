// MappedFile: the bytes of a whole file, as a read-only memory map or read
// into memory the MappedFile owns.
//
// Model files are mapped, never read whole into memory; tensors and stored zip
// entries are zero-copy views of the mapping. The map is MAP_PRIVATE and
// PROT_READ: nothing can write through it (copy_on_write: writes go to private
// copies of the pages, never to the file).
//
// Files are not memory: another process may truncate or rewrite the file while
// it is mapped (torch.save rewrites a checkpoint in place, truncating first).
// Reading a mapped page past the new end of file raises SIGBUS, which would
// kill the process. Every live mapping is therefore registered in a small
// process-wide table, and a SIGBUS handler (installed once, at the first
// mapping; it chains to the previous handler for any other address) replaces
// the pages from the faulting one to the end of the mapping with zero pages,
// marks the mapping as faulted and lets the read go on. The bytes are then
// torn, which CheckUnchanged reports: every entry point that reads a file whole
// calls it after reading and returns its error instead of a result computed
// from torn bytes.
//
// The hazard of zero-copy views: what a view (a Checkpoint's tensors, a stored
// zip entry) shows is the file's content at the time of the read. If the file
// changes later, the data may change under the view or become zero pages;
// CheckUnchanged tells. MapMode::kRead reads the file into owned memory with
// pread instead (bounded by max_read_len) and so is immune to later changes.
#ifndef CKPTGUARD_MAPPED_FILE_H_
#define CKPTGUARD_MAPPED_FILE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/input_file.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

enum class MapMode : uint8_t {
  kMap,   // zero-copy read-only mmap, guarded against truncation (the default)
  kRead,  // read into owned, read-only memory with pread: immune to later changes
};

struct MappedFileOptions {
  MapMode mode = MapMode::kMap;
  // kMap only: map the file copy-on-write (PROT_READ | PROT_WRITE,
  // MAP_PRIVATE) instead of read-only, for callers that hand views to code
  // that may write them (the Python package's torch tensors): a write makes
  // a private copy of the page and never reaches the file. Reading is the
  // same; every view still starts as the file's bytes.
  bool copy_on_write = false;
  // kRead only: the largest file read into memory, bytes. A larger file fails
  // with kLimitExceeded (limit "max_read_len"). Default 4 GiB.
  uint64_t max_read_len = uint64_t{4} << 30;
  // Called once the file is open and mapped (kMap) or read (kRead), before
  // Open returns. A place to observe the open; tests use it to change the file
  // between the map and the reads. Empty: nothing is called.
  std::function<void(const std::string& path)> after_open;
};

class MappedFile {
 public:
  // Open opens `path` with OpenInputFile (input_file.h: a FIFO, device, socket
  // or folder is refused before it is opened, nothing blocks) and maps or
  // reads it as options.mode says. Failure: kIo naming the path and errno
  // text; kLimitExceeded when more than 4096 maps are live at once (max_maps)
  // or, in kRead mode, when the file exceeds max_read_len; kIo
  // ChangedWhileReading when a kRead read saw the file change. An empty file
  // is an empty span. The span lives as long as the MappedFile.
  static Result<MappedFile> Open(const std::string& path, const MappedFileOptions& options = {});

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
  // DropResident lets the kernel take back the pages of the mapping this
  // process has read so far (madvise MADV_DONTNEED): they stay in the page
  // cache, leave this process's resident set, and are read again from the
  // file if touched again. A load calls it once the archive's directory and
  // headers are checked, so that what stays resident is what is viewed
  // (the pickles it runs, the tensors a caller reads). The bytes a later read
  // sees are the file's then (the zero-copy hazard above, nothing new;
  // CheckUnchanged tells). kRead mode and errors: nothing happens.
  void DropResident() const;
  const std::string& path() const { return path_; }
  MapMode mode() const { return mode_; }

  // CheckUnchanged: kIo ChangedWhileReading (input_file.h), naming the path,
  // when a read of the mapping faulted because the file shrank, or when the
  // file's identity (device, inode, size, mtime, ctime; fstat on the
  // descriptor kept open) differs from the one at Open. OK for a kRead file
  // (its bytes were checked when read and cannot change) and an empty
  // MappedFile. Call it after reading, before trusting what was computed.
  Status CheckUnchanged() const;
  // faulted: whether a read of this mapping hit a page past the end of the
  // file (and saw zero pages instead).
  bool faulted() const;

 private:
  void Reset();

  void* addr_ = nullptr;
  size_t size_ = 0;     // bytes of file data
  size_t map_len_ = 0;  // bytes mapped (size_, or 0 for an empty file)
  int slot_ = -1;       // index in the guard table, -1 when not guarded
  MapMode mode_ = MapMode::kMap;
  InputFile file_;      // kMap: kept open for CheckUnchanged
  std::string path_;
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_MAPPED_FILE_H_

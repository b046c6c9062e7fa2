// BulkAllocator: the allocator of the few arrays that grow with the number
// of tensors (a checkpoint's tensors and storages, a zip's and a
// container's entries, the pickle memo, the value arena's slabs).
//
// A 20,000-tensor state dict holds about 8 MiB in such arrays, and every
// load maps them fresh (malloc serves blocks this large with mmap and gives
// them back on free), so a load touches some 2,000 new pages, one page fault
// each. On a virtual machine whose guest page faults exit to the hypervisor
// that was a third of the load's time. A block of kBulkMinBytes or more is
// therefore mapped on its own, aligned to 2 MiB, advised MADV_HUGEPAGE and
// populated in one call (MADV_POPULATE_WRITE, Linux 5.14): the kernel backs
// each whole 2 MiB of it with a huge page where transparent huge pages are
// enabled ("always" or "madvise") and the rest with ordinary pages, without
// a fault per page. The block is rounded up to whole huge pages when that
// adds at most 1 MiB (its last huge page is at least half used), else to
// whole pages: rounding every block would add up to 2 MiB of resident
// memory per array, which a scan's peak felt. Smaller blocks come from
// operator new.
//
// Failure to map throws std::bad_alloc, as operator new does. Under
// AddressSanitizer every block comes from operator new (BulkBlocksAreMapped).
#ifndef CKPTGUARD_BULK_ALLOCATOR_H_
#define CKPTGUARD_BULK_ALLOCATOR_H_

#include <cstddef>
#include <new>
#include <vector>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// Blocks of at least this many bytes are mapped as huge pages.
inline constexpr size_t kBulkMinBytes = size_t{1} << 20;

// AllocateBulk returns `bytes` (> 0) bytes aligned to `align` (at most a
// page); FreeBulk gives back a block AllocateBulk returned for `bytes` and
// `align`.
void* AllocateBulk(size_t bytes, size_t align);
void FreeBulk(void* p, size_t bytes, size_t align) noexcept;
// BulkReuse: while one lives on a thread, the mapped blocks that thread
// frees are kept (kBulkCacheMaxBytes in all, process-wide) for AllocateBulk
// to hand out again, instead of being unmapped: the smallest kept block of
// the mapped length asked or more, its tail unmapped. A process that loads
// checkpoint after checkpoint (a service, the Python package, a benchmark)
// then reuses the memory of the one it dropped, and a load the blocks it
// let go of on the way, without mapping them again and having the kernel
// zero and populate every page (about 1 ms of kernel time in a 20,000-
// tensor load of 17-20 ms). A reused block holds old bytes; every user constructs elements
// before it reads them, as it must with operator new's blocks.
// LoadCheckpoint opens one for the load (and its second thread), and
// Checkpoint's destructor for the arrays it frees. TrimBulkCache unmaps
// every kept block: LoadCheckpoint calls it when it returns, so a block is
// kept until the next load returns (or the process ends), and a load keeps
// nothing of another beyond it.
class BulkReuse {
 public:
  BulkReuse() noexcept;
  ~BulkReuse();
  BulkReuse(const BulkReuse&) = delete;
  BulkReuse& operator=(const BulkReuse&) = delete;
};
inline constexpr size_t kBulkCacheMaxBytes = size_t{64} << 20;
void TrimBulkCache() noexcept;
// BulkCacheBytes: the bytes kept now (tests).
size_t BulkCacheBytes() noexcept;

// BulkBlocksAreMapped: large blocks are mapped as above. False in builds
// with AddressSanitizer, where every block comes from operator new so that
// the sanitizer sees overflows of these arrays too.
bool BulkBlocksAreMapped();

template <typename T>
struct BulkAllocator {
  using value_type = T;

  BulkAllocator() = default;
  template <typename U>
  BulkAllocator(const BulkAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor): rebinding

  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(AllocateBulk(n * sizeof(T), alignof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeBulk(p, n * sizeof(T), alignof(T)); }

  template <typename U>
  bool operator==(const BulkAllocator<U>&) const noexcept {
    return true;
  }
};

// BulkVector: a std::vector whose storage BulkAllocator provides.
template <typename T>
using BulkVector = std::vector<T, BulkAllocator<T>>;

}  // namespace ckptguard
CKPTGUARD_API_END

#endif  // CKPTGUARD_BULK_ALLOCATOR_H_

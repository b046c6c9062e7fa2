#include "ckptguard/bulk_allocator.h"

#include <sys/mman.h>

#include <cstdint>

namespace ckptguard {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPage = 4096;  // a multiple of any page size munmap needs here (x86-64, arm64 4K)

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMapLargeBlocks = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kMapLargeBlocks = false;
#else
constexpr bool kMapLargeBlocks = true;
#endif
#else
constexpr bool kMapLargeBlocks = true;
#endif

bool Mapped(size_t bytes) { return kMapLargeBlocks && bytes >= kBulkMinBytes; }
// MappedLength: whole huge pages when that adds at most half of one (the
// last huge page is then at least half used), else whole pages: the tail is
// ordinary pages, populated at once all the same.
size_t MappedLength(size_t bytes) {
  const size_t tail = bytes % kHugePage;
  if (tail == 0 || tail >= kHugePage / 2) return bytes + (tail == 0 ? 0 : kHugePage - tail);
  return (bytes + kPage - 1) / kPage * kPage;
}

}  // namespace

bool BulkBlocksAreMapped() { return kMapLargeBlocks; }

void* AllocateBulk(size_t bytes, size_t align) {
  if (!Mapped(bytes)) return ::operator new(bytes, std::align_val_t(align));
  if (bytes > SIZE_MAX - 2 * kHugePage) throw std::bad_alloc();
  const size_t len = MappedLength(bytes);
  // Map one huge page more than needed and cut the block at a 2 MiB boundary
  // out of it (mmap aligns only to pages).
  void* raw = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t tail = aligned + len;
  const uintptr_t end = start + len + kHugePage;
  if (end > tail) ::munmap(reinterpret_cast<void*>(tail), end - tail);
  // Hints: without transparent huge pages the block is ordinary pages, and
  // before Linux 5.14 it is populated page by page as it is touched.
  (void)::madvise(reinterpret_cast<void*>(aligned), len, MADV_HUGEPAGE);
  (void)::madvise(reinterpret_cast<void*>(aligned), len, MADV_POPULATE_WRITE);
  return reinterpret_cast<void*>(aligned);
}

void FreeBulk(void* p, size_t bytes, size_t align) noexcept {
  if (p == nullptr) return;
  if (!Mapped(bytes)) {
    ::operator delete(p, std::align_val_t(align));
    return;
  }
  ::munmap(p, MappedLength(bytes));
}

}  // namespace ckptguard

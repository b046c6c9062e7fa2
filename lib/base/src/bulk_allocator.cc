#include "ckptguard/bulk_allocator.h"

#include <sys/mman.h>

#include <cstdint>
#include <mutex>
#include <vector>

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

// The blocks BulkReuse keeps: (start, mapped length). Never destroyed, so
// that blocks freed during exit find it.
struct Cache {
  std::mutex mu;
  std::vector<std::pair<void*, size_t>> blocks;
  size_t bytes = 0;
};
Cache& TheCache() {
  static Cache* cache = new Cache;
  return *cache;
}
thread_local unsigned reuse_depth = 0;

// Take the smallest kept block of a mapped length of `len` or more, cut to
// `len` (its tail unmapped: blocks start on a 2 MiB boundary and end on a
// page, so the head keeps both); nullptr when there is none.
void* TakeCached(size_t len) {
  Cache& cache = TheCache();
  void* p = nullptr;
  size_t have = 0;
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    if (cache.bytes == 0) return nullptr;
    size_t best = cache.blocks.size();
    for (size_t i = 0; i < cache.blocks.size(); ++i) {
      const size_t n = cache.blocks[i].second;
      if (n >= len && (best == cache.blocks.size() || n < cache.blocks[best].second)) best = i;
    }
    if (best == cache.blocks.size()) return nullptr;
    p = cache.blocks[best].first;
    have = cache.blocks[best].second;
    cache.blocks.erase(cache.blocks.begin() + static_cast<std::ptrdiff_t>(best));
    cache.bytes -= have;
  }
  if (have > len) ::munmap(static_cast<char*>(p) + len, have - len);
  return p;
}

// Keep a block (BulkReuse open on this thread and room left); false: the
// caller unmaps it.
bool KeepCached(void* p, size_t len) noexcept {
  if (reuse_depth == 0) return false;
  Cache& cache = TheCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  if (len > kBulkCacheMaxBytes - cache.bytes) return false;
  try {
    cache.blocks.emplace_back(p, len);
  } catch (...) {
    return false;
  }
  cache.bytes += len;
  return true;
}

}  // namespace

BulkReuse::BulkReuse() noexcept { ++reuse_depth; }
BulkReuse::~BulkReuse() { --reuse_depth; }

void TrimBulkCache() noexcept {
  Cache& cache = TheCache();
  std::vector<std::pair<void*, size_t>> blocks;
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    if (cache.bytes == 0) return;
    blocks.swap(cache.blocks);
    cache.bytes = 0;
  }
  for (const auto& [p, len] : blocks) ::munmap(p, len);
}

size_t BulkCacheBytes() noexcept {
  Cache& cache = TheCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.bytes;
}

bool BulkBlocksAreMapped() { return kMapLargeBlocks; }

void* AllocateBulk(size_t bytes, size_t align) {
  if (!Mapped(bytes)) return ::operator new(bytes, std::align_val_t(align));
  if (bytes > SIZE_MAX - 2 * kHugePage) throw std::bad_alloc();
  const size_t len = MappedLength(bytes);
  if (void* kept = TakeCached(len)) return kept;
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
  const size_t len = MappedLength(bytes);
  if (!KeepCached(p, len)) ::munmap(p, len);
}

}  // namespace ckptguard

// lib/base bulk_allocator.h: large arrays mapped as huge pages, and the
// ValueArena's chunks cut from such blocks.
#define BOOST_TEST_MODULE bulk_allocator_test
#include "ckptguard/bulk_allocator.h"

#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>

#include "ckptguard/value.h"

using namespace ckptguard;

namespace {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

// VmFlagsOf returns the VmFlags line of the mapping holding `p` in
// /proc/self/smaps ("" when none is found).
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
      continue;
    }
    if (inside && line.starts_with("VmFlags:")) return line;
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(small_blocks_come_from_operator_new_and_large_ones_are_huge_page_aligned) {
  BulkAllocator<uint64_t> alloc;
  uint64_t* small = alloc.allocate(16);
  for (size_t i = 0; i < 16; ++i) small[i] = i;
  BOOST_TEST(reinterpret_cast<uintptr_t>(small) % alignof(uint64_t) == 0u);
  alloc.deallocate(small, 16);

  const size_t n = (kBulkMinBytes + 12345) / sizeof(uint64_t);
  uint64_t* large = alloc.allocate(n);
  for (size_t i = 0; i < n; ++i) large[i] = i * 3;  // every byte is usable
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += large[i];
  BOOST_TEST(sum == 3 * (uint64_t{n} * (n - 1) / 2));
  if (BulkBlocksAreMapped()) {
    BOOST_TEST(reinterpret_cast<uintptr_t>(large) % kHugePage == 0u);
    // Advised for transparent huge pages where the kernel has them ("hg").
    if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) {
      const std::string flags = VmFlagsOf(large);
      BOOST_TEST(flags.find(" hg") != std::string::npos, flags);
    }
  }
  alloc.deallocate(large, n);
}

BOOST_AUTO_TEST_CASE(a_bulk_vector_keeps_its_elements_across_the_threshold) {
  BulkVector<uint32_t> v;
  const size_t n = 3 * kBulkMinBytes / sizeof(uint32_t);
  for (size_t i = 0; i < n; ++i) v.push_back(static_cast<uint32_t>(i));
  BOOST_REQUIRE(v.size() == n);
  bool same = true;
  for (size_t i = 0; i < n; ++i) same = same && v[i] == i;
  BOOST_TEST(same);
  BulkVector<uint32_t> moved = std::move(v);
  BOOST_TEST(moved.size() == n);
  BOOST_TEST(moved.back() == n - 1);
  moved.shrink_to_fit();
  moved.resize(10);
  moved.shrink_to_fit();
  BOOST_TEST(std::accumulate(moved.begin(), moved.end(), uint64_t{0}) == 45u);
}

BOOST_AUTO_TEST_CASE(a_value_arena_past_its_small_chunks_keeps_every_value_in_place) {
  ValueArena arena;
  // Past the small chunks and into a second slab.
  const size_t n = (ValueArena::kSmallChunks + ValueArena::kSlabChunks + 3) * ValueArena::kChunkSize;
  std::vector<const Value*> where;
  where.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    ValueId id = 0;
    Value& v = arena.Emplace(id);
    BOOST_REQUIRE(id == i);
    BOOST_REQUIRE(v.kind == ValueKind::kNone);  // handed out default
    v.kind = ValueKind::kInt;
    v.int_value = static_cast<int64_t>(i);
    if (i % 7 == 0) v.text = "a text long enough to live on the heap: " + std::to_string(i);
    where.push_back(&v);
  }
  bool same = true;
  for (size_t i = 0; i < n; ++i) {
    const Value& v = arena.Get(static_cast<ValueId>(i));
    same = same && &v == where[i] && v.int_value == static_cast<int64_t>(i);
  }
  BOOST_TEST(same);
  // PopLast resets a slot, which is handed out default again.
  arena.PopLast();
  ValueId id = 0;
  BOOST_TEST((arena.Emplace(id).kind == ValueKind::kNone));
  BOOST_TEST(id == n - 1);
  // Moved, the values stay where they were; the moved-from arena is empty.
  ValueArena other = std::move(arena);
  BOOST_TEST(other.size() == n);
  BOOST_TEST(&other.Get(5) == where[5]);
  BOOST_TEST(arena.size() == 0u);  // NOLINT(bugprone-use-after-move): a moved-from arena is empty
  ValueId again = 0;
  arena.Emplace(again).int_value = 42;
  BOOST_TEST(again == 0u);
  BOOST_TEST(arena.Get(0).int_value == 42);
  arena = std::move(other);
  BOOST_TEST(arena.size() == n);
  BOOST_TEST(arena.Get(static_cast<ValueId>(n - 2)).int_value == static_cast<int64_t>(n - 2));
}

BOOST_AUTO_TEST_CASE(blocks_freed_under_bulk_reuse_are_handed_out_again_then_trimmed) {
  TrimBulkCache();
  BulkAllocator<uint8_t> alloc;
  const size_t big = 3 * kBulkMinBytes;
  const size_t small = 2 * kBulkMinBytes;
  // Freed outside a BulkReuse: unmapped, nothing kept.
  uint8_t* outside = alloc.allocate(big);
  alloc.deallocate(outside, big);
  BOOST_TEST(BulkCacheBytes() == 0u);
  if (!BulkBlocksAreMapped()) return;  // AddressSanitizer: operator new's blocks, never kept

  uint8_t* kept = alloc.allocate(big);
  std::fill(kept, kept + big, uint8_t{7});
  {
    const BulkReuse reuse;
    alloc.deallocate(kept, big);
  }
  BOOST_TEST(BulkCacheBytes() >= big);
  // A smaller block comes out of it, cut to its length, and is usable to its
  // last byte; the cut-off tail is given back, not kept.
  uint8_t* again = alloc.allocate(small);
  BOOST_TEST(again == kept);
  BOOST_TEST(BulkCacheBytes() == 0u);
  std::fill(again, again + small, uint8_t{9});
  BOOST_TEST(again[small - 1] == 9);
  // Nothing kept fits a larger block: a fresh one.
  {
    const BulkReuse reuse;
    alloc.deallocate(again, small);
  }
  uint8_t* larger = alloc.allocate(big);
  BOOST_TEST(larger != again);
  BOOST_TEST(BulkCacheBytes() > 0u);
  // TrimBulkCache gives back everything kept.
  TrimBulkCache();
  BOOST_TEST(BulkCacheBytes() == 0u);
  alloc.deallocate(larger, big);
  // At most kBulkCacheMaxBytes are kept.
  const size_t huge = kBulkCacheMaxBytes + kBulkMinBytes;
  uint8_t* too_big = alloc.allocate(huge);
  {
    const BulkReuse reuse;
    alloc.deallocate(too_big, huge);
  }
  BOOST_TEST(BulkCacheBytes() == 0u);
}

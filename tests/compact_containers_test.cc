// Tests of the compact containers a loaded checkpoint is made of:
// InlineVec (ids, shapes and strides) and CompactText (a value's text).
#define BOOST_TEST_MODULE compact_containers_test
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/compact_text.h"
#include "ckptguard/inline_vec.h"

using ckptguard::CompactText;
using ckptguard::InlineVec;

BOOST_AUTO_TEST_CASE(InlineVecIsItsSizeAndItsInlineArray) {
  // The heap pointer lives in the inline array and the capacity in the heap
  // block: six ids take 28 bytes, aligned as ids.
  static_assert(sizeof(InlineVec<uint32_t, 6>) == 28);
  static_assert(alignof(InlineVec<uint32_t, 6>) == 4);
  static_assert(sizeof(InlineVec<uint32_t, 2>) == 12);
  static_assert(sizeof(InlineVec<int64_t, 4>) == 40);
}

BOOST_AUTO_TEST_CASE(InlineVecGrowsOntoTheHeapAndKeepsEveryElement) {
  InlineVec<uint32_t, 2> v;
  BOOST_TEST(v.empty());
  BOOST_TEST(v.capacity() == 2u);
  std::vector<uint32_t> want;
  for (uint32_t i = 0; i < 1000; ++i) {
    v.push_back(i * 7);
    want.push_back(i * 7);
    BOOST_REQUIRE(v.size() == want.size());
    BOOST_REQUIRE(v.back() == i * 7);
  }
  BOOST_TEST(v.capacity() >= 1000u);
  BOOST_TEST((v == want));
  // Shrinking keeps the block; the size never takes the heap flag's bit.
  v.resize(3);
  BOOST_TEST(v.size() == 3u);
  BOOST_TEST(v[2] == 14u);
  v.pop_back();
  BOOST_TEST(v.size() == 2u);
  v.clear();
  BOOST_TEST(v.empty());
  v.push_back(5);
  BOOST_TEST(v.front() == 5u);
}

BOOST_AUTO_TEST_CASE(InlineVecCopiesAndMovesInlineAndHeapContents) {
  for (size_t n : {0u, 1u, 4u, 5u, 40u}) {
    InlineVec<int64_t, 4> a;
    for (size_t i = 0; i < n; ++i) a.push_back(static_cast<int64_t>(i) - 3);
    const std::vector<int64_t> want(a.begin(), a.end());
    InlineVec<int64_t, 4> copy = a;
    BOOST_TEST((copy == want));
    InlineVec<int64_t, 4> moved = std::move(a);
    BOOST_TEST((moved == want));
    BOOST_TEST(a.empty());  // NOLINT: a moved-from InlineVec is empty
    a.push_back(9);         // and usable
    BOOST_TEST(a.size() == 1u);
    InlineVec<int64_t, 4> assigned{1, 2, 3, 4, 5, 6};
    assigned = std::move(moved);
    BOOST_TEST((assigned == want));
    assigned = copy;
    BOOST_TEST((assigned == want));
  }
}

BOOST_AUTO_TEST_CASE(InlineVecInsertsAndErasesAnywhere) {
  InlineVec<uint32_t, 3> v{1, 2, 3};
  const uint32_t more[] = {7, 8, 9};
  v.insert(v.begin() + 1, std::begin(more), std::end(more));
  BOOST_TEST((v == std::vector<uint32_t>{1, 7, 8, 9, 2, 3}));
  v.erase(v.begin());
  BOOST_TEST((v == std::vector<uint32_t>{7, 8, 9, 2, 3}));
  v.insert(v.end(), 4u);
  BOOST_TEST((v == std::vector<uint32_t>{7, 8, 9, 2, 3, 4}));
  const std::vector<uint32_t> as_vector = v;
  BOOST_TEST(as_vector.size() == 6u);
}

BOOST_AUTO_TEST_CASE(CompactTextIsOneWord) {
  static_assert(sizeof(CompactText) == 8);
  CompactText empty;
  BOOST_TEST(empty.empty());
  BOOST_TEST(empty.size() == 0u);
  BOOST_TEST(empty.view() == "");
}

BOOST_AUTO_TEST_CASE(CompactTextKeepsInlineAndHeapBytesExactly) {
  // Every length around the inline limit, and bytes a pickle may hold: NULs
  // and high bytes.
  for (size_t n = 0; n < 40; ++n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(i * 37 + (i % 3 == 0 ? 0 : 128)));
    CompactText t(s);
    BOOST_REQUIRE(t.size() == n);
    BOOST_REQUIRE(t.view() == s);
    BOOST_REQUIRE(t.empty() == s.empty());
    CompactText copy = t;
    BOOST_REQUIRE(copy == t);
    CompactText moved = std::move(copy);
    BOOST_REQUIRE(moved.view() == s);
    BOOST_REQUIRE(copy.empty());  // NOLINT: moved-from is empty
    std::string back = t;
    BOOST_REQUIRE(back == s);
  }
}

BOOST_AUTO_TEST_CASE(CompactTextAssignsAppendsAndCompares) {
  CompactText t = "cpu";
  BOOST_TEST(t == "cpu");
  BOOST_TEST(t == std::string("cpu"));
  BOOST_TEST(t == std::string_view("cpu"));
  BOOST_TEST(!(t == "cuda"));
  t = "blocks.0.layer0.weight";  // inline -> heap
  BOOST_TEST(t.starts_with("blocks."));
  BOOST_TEST(t.ends_with(".weight"));
  BOOST_TEST(t.find('.') == 6u);
  t += ".extra";
  BOOST_TEST(t == "blocks.0.layer0.weight.extra");
  t = t.substr(0, 6);  // assigning a view of its own bytes
  BOOST_TEST(t == "blocks");
  t = t.view();  // itself, inline
  BOOST_TEST(t == "blocks");
  t = "";  // heap -> empty
  BOOST_TEST(t.empty());
  BOOST_TEST(("<" + CompactText("x") + ">") == "<x>");
  BOOST_TEST((CompactText("a") < CompactText("b")));
  CompactText self = "a long enough text to be on the heap";
  self = self;  // NOLINT: self-assignment keeps the text
  BOOST_TEST(self == "a long enough text to be on the heap");
}

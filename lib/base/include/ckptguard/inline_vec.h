// InlineVec: a vector whose first N elements live in the object itself.
//
// A loaded checkpoint holds hundreds of thousands of short lists: the items
// of a tuple (a storage's persistent id, a rebuild call's arguments) and the
// shape and stride of each tensor. Most have a handful of elements, so
// keeping them inline saves an allocation and a free each, and the memory
// a heap block costs. The interface is the subset of std::vector the
// project uses (iterators are pointers); an InlineVec converts to a
// std::vector (a copy) and to a span, and compares with both.
#ifndef CKPTGUARD_INLINE_VEC_H_
#define CKPTGUARD_INLINE_VEC_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

template <typename T, uint32_t N>
class InlineVec {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "InlineVec holds plain values (ids, integers)");
  static_assert(N >= 1);
  static_assert(alignof(T) <= alignof(std::max_align_t));

 public:
  static constexpr uint32_t kInline = N;
  using value_type = T;
  using size_type = size_t;
  using iterator = T*;
  using const_iterator = const T*;

  InlineVec() noexcept {}
  InlineVec(std::initializer_list<T> values) { assign(values.begin(), values.end()); }
  InlineVec(const std::vector<T>& values) { assign(values.begin(), values.end()); }  // NOLINT: as a vector converts
  InlineVec(std::span<const T> values) { assign(values.begin(), values.end()); }     // NOLINT
  // n copies of `fill`, as std::vector(n, fill).
  InlineVec(size_t n, T fill) { resize(n, fill); }
  template <typename It>
    requires(!std::is_integral_v<It>)
  InlineVec(It first, It last) {
    assign(first, last);
  }
  InlineVec(const InlineVec& other) { assign(other.begin(), other.end()); }
  InlineVec(InlineVec&& other) noexcept { Steal(other); }
  InlineVec& operator=(const InlineVec& other) {
    if (this != &other) assign(other.begin(), other.end());
    return *this;
  }
  InlineVec& operator=(InlineVec&& other) noexcept {
    if (this != &other) {
      Release();
      Steal(other);
    }
    return *this;
  }
  InlineVec& operator=(std::initializer_list<T> values) {
    assign(values.begin(), values.end());
    return *this;
  }
  InlineVec& operator=(const std::vector<T>& values) {
    assign(values.begin(), values.end());
    return *this;
  }
  ~InlineVec() { Release(); }

  // As a std::vector (callers that keep a copy, or APIs that take one). A
  // span is made by std::span's constructor from a contiguous range.
  operator std::vector<T>() const { return std::vector<T>(begin(), end()); }  // NOLINT

  size_t size() const { return size_ & kSizeMask; }
  bool empty() const { return size() == 0; }
  size_t capacity() const { return OnHeap() ? HeapBlock()->capacity : N; }
  T* data() { return OnHeap() ? HeapBlock()->items() : inline_; }
  const T* data() const { return OnHeap() ? HeapBlock()->items() : inline_; }
  iterator begin() { return data(); }
  iterator end() { return data() + size(); }
  const_iterator begin() const { return data(); }
  const_iterator end() const { return data() + size(); }
  auto rbegin() const { return std::reverse_iterator<const_iterator>(end()); }
  auto rend() const { return std::reverse_iterator<const_iterator>(begin()); }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  T& front() { return data()[0]; }
  const T& front() const { return data()[0]; }
  T& back() { return data()[size() - 1]; }
  const T& back() const { return data()[size() - 1]; }

  void clear() { SetSize(0); }
  void reserve(size_t n) {
    if (n > capacity()) Grow(n);
  }
  void resize(size_t n, T fill = T{}) {
    reserve(n);
    T* d = data();
    for (size_t i = size(); i < n; ++i) d[i] = fill;
    SetSize(n);
  }
  void push_back(T value) {
    const size_t n = size();
    if (n == capacity()) Grow(n * 2);
    data()[n] = value;
    SetSize(n + 1);
  }
  T& emplace_back(T value) {
    push_back(value);
    return back();
  }
  void pop_back() { SetSize(size() - 1); }
  void assign(size_t n, T fill) {
    SetSize(0);
    resize(n, fill);
  }
  template <typename It>
    requires(!std::is_integral_v<It>)
  void assign(It first, It last) {
    const size_t n = static_cast<size_t>(std::distance(first, last));
    if constexpr (std::random_access_iterator<It>) {
      if (n <= N && !OnHeap()) {
        // A few elements into the inline array: element by element (a
        // loop of unknown length becomes a memmove call, which costs more
        // than the copy of a tuple's ids).
        for (uint32_t i = 0; i < N; ++i) {
          if (i == n) break;
          inline_[i] = first[i];
        }
        size_ = static_cast<uint32_t>(n);
        return;
      }
    }
    SetSize(0);
    reserve(n);
    std::copy(first, last, data());
    SetSize(n);
  }
  // insert of a range (at any position; the elements after it move up).
  template <typename It>
  iterator insert(const_iterator pos, It first, It last) {
    const size_t at = static_cast<size_t>(pos - begin());
    const size_t n = static_cast<size_t>(std::distance(first, last));
    const size_t old = size();
    if (old + n > capacity()) Grow(std::max(old + n, 2 * capacity()));  // amortised, as a vector
    T* d = data();
    std::copy_backward(d + at, d + old, d + old + n);
    std::copy(first, last, d + at);
    SetSize(old + n);
    return d + at;
  }
  iterator insert(const_iterator pos, T value) { return insert(pos, &value, &value + 1); }
  iterator erase(const_iterator pos) {
    const size_t at = static_cast<size_t>(pos - begin());
    T* d = data();
    std::copy(d + at + 1, d + size(), d + at);
    SetSize(size() - 1);
    return d + at;
  }

  friend bool operator==(const InlineVec& a, const InlineVec& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend bool operator==(const InlineVec& a, const std::vector<T>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  // Past N elements they live in one heap block that records its own
  // capacity, so the object itself is a 32-bit size and the inline array
  // (the pointer to the block is kept in the array's bytes: an
  // InlineVec<uint32_t, 6> is 28 bytes, aligned as its elements).
  struct Heap {
    size_t capacity;
    T* items() { return reinterpret_cast<T*>(this + 1); }
  };
  static constexpr uint32_t kOnHeap = uint32_t{1} << 31;
  static constexpr uint32_t kSizeMask = kOnHeap - 1;
  static_assert(sizeof(T) * N >= sizeof(Heap*), "the inline array holds the heap pointer");

  bool OnHeap() const { return (size_ & kOnHeap) != 0; }
  Heap* HeapBlock() const {
    Heap* h;
    std::memcpy(&h, inline_, sizeof(h));
    return h;
  }
  void SetSize(size_t n) { size_ = (size_ & kOnHeap) | static_cast<uint32_t>(n); }
  void Grow(size_t n) {
    if (n >= kSizeMask) throw std::length_error("InlineVec");
    n = std::max<size_t>(n, 2 * size_t{N});
    static_assert(sizeof(Heap) % alignof(T) == 0);
    Heap* fresh = static_cast<Heap*>(::operator new(sizeof(Heap) + n * sizeof(T)));
    fresh->capacity = n;
    const size_t count = size();
    std::copy(begin(), end(), fresh->items());
    Release();
    std::memcpy(inline_, &fresh, sizeof(fresh));
    size_ = kOnHeap | static_cast<uint32_t>(count);
  }
  void Release() {
    if (OnHeap()) ::operator delete(HeapBlock());
    size_ &= kSizeMask;
  }
  void Steal(InlineVec& other) {
    size_ = other.size_;
    // The whole inline array (always initialised), whatever it holds: a
    // copy of fixed length is a few moves, one of variable length a call.
    std::memcpy(inline_, other.inline_, sizeof(inline_));
    other.size_ = 0;
  }

  uint32_t size_ = 0;  // kOnHeap | number of elements
  T inline_[N]{};  // zeroed: a moved or copied empty InlineVec reads no indeterminate bytes
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_INLINE_VEC_H_

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
#include <initializer_list>
#include <iterator>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace ckptguard {

template <typename T, uint32_t N>
class InlineVec {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "InlineVec holds plain values (ids, integers)");
  static_assert(N >= 1);

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

  // As a std::vector (callers that keep a copy, or APIs that take one).
  operator std::vector<T>() const { return std::vector<T>(begin(), end()); }  // NOLINT
  operator std::span<const T>() const { return {data(), size()}; }           // NOLINT

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return cap_; }
  T* data() { return cap_ > N ? heap_ : inline_; }
  const T* data() const { return cap_ > N ? heap_ : inline_; }
  iterator begin() { return data(); }
  iterator end() { return data() + size_; }
  const_iterator begin() const { return data(); }
  const_iterator end() const { return data() + size_; }
  auto rbegin() const { return std::reverse_iterator<const_iterator>(end()); }
  auto rend() const { return std::reverse_iterator<const_iterator>(begin()); }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  T& front() { return data()[0]; }
  const T& front() const { return data()[0]; }
  T& back() { return data()[size_ - 1]; }
  const T& back() const { return data()[size_ - 1]; }

  void clear() { size_ = 0; }
  void reserve(size_t n) {
    if (n > cap_) Grow(n);
  }
  void resize(size_t n, T fill = T{}) {
    reserve(n);
    for (size_t i = size_; i < n; ++i) data()[i] = fill;
    size_ = static_cast<uint32_t>(n);
  }
  void push_back(T value) {
    if (size_ == cap_) Grow(size_t{cap_} * 2);
    data()[size_++] = value;
  }
  T& emplace_back(T value) {
    push_back(value);
    return back();
  }
  void pop_back() { --size_; }
  void assign(size_t n, T fill) {
    size_ = 0;
    resize(n, fill);
  }
  template <typename It>
    requires(!std::is_integral_v<It>)
  void assign(It first, It last) {
    const size_t n = static_cast<size_t>(std::distance(first, last));
    size_ = 0;
    reserve(n);
    std::copy(first, last, data());
    size_ = static_cast<uint32_t>(n);
  }
  // insert of a range (at any position; the elements after it move up).
  template <typename It>
  iterator insert(const_iterator pos, It first, It last) {
    const size_t at = static_cast<size_t>(pos - begin());
    const size_t n = static_cast<size_t>(std::distance(first, last));
    if (size_t{size_} + n > cap_) Grow(std::max(size_t{size_} + n, 2 * size_t{cap_}));  // amortised, as a vector
    T* d = data();
    std::copy_backward(d + at, d + size_, d + size_ + n);
    std::copy(first, last, d + at);
    size_ += static_cast<uint32_t>(n);
    return d + at;
  }
  iterator insert(const_iterator pos, T value) { return insert(pos, &value, &value + 1); }
  iterator erase(const_iterator pos) {
    const size_t at = static_cast<size_t>(pos - begin());
    T* d = data();
    std::copy(d + at + 1, d + size_, d + at);
    --size_;
    return d + at;
  }

  friend bool operator==(const InlineVec& a, const InlineVec& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  friend bool operator==(const InlineVec& a, const std::vector<T>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  void Grow(size_t n) {
    if (n > UINT32_MAX) throw std::length_error("InlineVec");
    n = std::max<size_t>(n, 2 * size_t{N});
    T* fresh = new T[n];
    std::copy(begin(), end(), fresh);
    Release();
    heap_ = fresh;
    cap_ = static_cast<uint32_t>(n);
  }
  void Release() {
    if (cap_ > N) delete[] heap_;
    cap_ = N;
  }
  void Steal(InlineVec& other) {
    size_ = other.size_;
    cap_ = other.cap_;
    if (other.cap_ > N) {
      heap_ = other.heap_;
    } else {
      std::copy(other.inline_, other.inline_ + other.size_, inline_);
    }
    other.size_ = 0;
    other.cap_ = N;
  }

  uint32_t size_ = 0;
  uint32_t cap_ = N;
  union {
    T inline_[N];
    T* heap_;
  };
};

}  // namespace ckptguard

#endif  // CKPTGUARD_INLINE_VEC_H_

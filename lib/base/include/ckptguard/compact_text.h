// CompactText: an owned byte string in one machine word.
//
// A loaded checkpoint keeps a text per value that has one (a state dict's
// keys, storage keys, class names), and a std::string costs 32 bytes in
// every value whether it has a text or not. CompactText is 8 bytes: empty,
// up to 7 bytes inline, or a pointer to one heap block that holds the
// length and the bytes. It owns its bytes (copies are deep), reads as a
// std::string_view and is assigned from one. Bytes may be any (a pickle's
// BINBYTES, big-int digits); there is no terminating NUL.
#ifndef CKPTGUARD_COMPACT_TEXT_H_
#define CKPTGUARD_COMPACT_TEXT_H_

#include <bit>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

class CompactText {
 public:
  static constexpr size_t kInline = 7;

  CompactText() noexcept = default;
  CompactText(std::string_view text) { Set(text); }   // NOLINT: as a std::string converts
  CompactText(const char* text) { Set(text); }        // NOLINT
  CompactText(const std::string& text) { Set(text); }  // NOLINT
  CompactText(const CompactText& other) { Set(other.view()); }
  CompactText(CompactText&& other) noexcept : word_(other.word_) { other.word_ = 0; }
  CompactText& operator=(const CompactText& other) {
    if (this != &other) Assign(other.view());
    return *this;
  }
  CompactText& operator=(CompactText&& other) noexcept {
    if (this != &other) {
      Free();
      word_ = other.word_;
      other.word_ = 0;
    }
    return *this;
  }
  CompactText& operator=(std::string_view text) {
    Assign(text);
    return *this;
  }
  CompactText& operator=(const char* text) { return *this = std::string_view(text); }
  CompactText& operator=(const std::string& text) { return *this = std::string_view(text); }
  ~CompactText() { Free(); }

  std::string_view view() const {
    if (word_ == 0) return {};
    if ((word_ & kInlineTag) != 0) return {InlineBytes(), static_cast<size_t>((word_ & 0xff) >> 1)};
    const Block* b = HeapBlock();
    return {b->bytes(), b->size};
  }
  operator std::string_view() const { return view(); }   // NOLINT: reads as a string
  operator std::string() const { return std::string(view()); }  // NOLINT: and copies into one
  void assign(const char* bytes, size_t n) { Assign(std::string_view(bytes, n)); }
  std::string str() const { return std::string(view()); }
  const char* data() const { return view().data(); }
  size_t size() const { return view().size(); }
  size_t length() const { return size(); }
  bool empty() const { return word_ == 0; }
  auto begin() const { return view().begin(); }
  auto end() const { return view().end(); }
  char operator[](size_t i) const { return view()[i]; }
  char front() const { return view().front(); }
  char back() const { return view().back(); }
  bool starts_with(std::string_view prefix) const { return view().starts_with(prefix); }
  bool ends_with(std::string_view suffix) const { return view().ends_with(suffix); }
  size_t find(std::string_view what, size_t pos = 0) const { return view().find(what, pos); }
  size_t find(char what, size_t pos = 0) const { return view().find(what, pos); }
  size_t rfind(std::string_view what, size_t pos = std::string_view::npos) const { return view().rfind(what, pos); }
  size_t rfind(char what, size_t pos = std::string_view::npos) const { return view().rfind(what, pos); }
  std::string_view substr(size_t pos, size_t n = std::string_view::npos) const { return view().substr(pos, n); }

  CompactText& operator+=(std::string_view more) {
    std::string joined(view());
    joined.append(more);
    Assign(joined);
    return *this;
  }
  CompactText& operator+=(char more) { return *this += std::string_view(&more, 1); }

  friend bool operator==(const CompactText& a, const CompactText& b) { return a.view() == b.view(); }
  friend bool operator==(const CompactText& a, std::string_view b) { return a.view() == b; }
  friend bool operator==(const CompactText& a, const char* b) { return a.view() == std::string_view(b); }
  friend bool operator==(const CompactText& a, const std::string& b) { return a.view() == b; }
  friend auto operator<=>(const CompactText& a, const CompactText& b) { return a.view() <=> b.view(); }
  friend std::string operator+(const std::string& a, const CompactText& b) { return a + std::string(b.view()); }
  friend std::string operator+(const char* a, const CompactText& b) { return a + std::string(b.view()); }
  friend std::string operator+(const CompactText& a, const std::string& b) { return std::string(a.view()) + b; }
  friend std::string operator+(const CompactText& a, const char* b) { return std::string(a.view()) + b; }
  friend std::ostream& operator<<(std::ostream& os, const CompactText& t) { return os << t.view(); }

 private:
  // The word is 0 (empty), a pointer to a Block (heap blocks are aligned, so
  // its low bit is 0), or inline: the low byte is (size << 1) | 1 and the
  // bytes are the word's other seven, in memory order.
  struct Block {
    size_t size;
    char* bytes() { return reinterpret_cast<char*>(this + 1); }
    const char* bytes() const { return reinterpret_cast<const char*>(this + 1); }
  };
  static constexpr uint64_t kInlineTag = 1;
  static_assert(sizeof(void*) <= sizeof(uint64_t));
  static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);
  // Where the low byte of the word lives, and where inline bytes start.
  static constexpr size_t kTagByte = std::endian::native == std::endian::little ? 0 : sizeof(uint64_t) - 1;
  static constexpr size_t kFirstByte = kTagByte == 0 ? 1 : 0;

  const char* InlineBytes() const { return reinterpret_cast<const char*>(&word_) + kFirstByte; }
  const Block* HeapBlock() const { return reinterpret_cast<const Block*>(static_cast<uintptr_t>(word_)); }

  void Set(std::string_view text) {
    if (text.empty()) {
      word_ = 0;
    } else if (text.size() <= kInline) {
      uint64_t w = 0;
      char* bytes = reinterpret_cast<char*>(&w);
      std::memcpy(bytes + kFirstByte, text.data(), text.size());
      bytes[kTagByte] = static_cast<char>((text.size() << 1) | kInlineTag);
      word_ = w;
    } else {
      if (text.size() > (size_t{1} << 48)) throw std::length_error("CompactText");
      auto* b = static_cast<Block*>(::operator new(sizeof(Block) + text.size()));
      b->size = text.size();
      std::memcpy(b->bytes(), text.data(), text.size());
      word_ = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(b));
    }
  }
  // Assign copies first: `text` may view this object's own bytes.
  void Assign(std::string_view text) {
    const uint64_t old = word_;
    Set(text);
    if (old != 0 && (old & kInlineTag) == 0) ::operator delete(reinterpret_cast<Block*>(static_cast<uintptr_t>(old)));
  }
  void Free() {
    if (word_ != 0 && (word_ & kInlineTag) == 0) ::operator delete(const_cast<Block*>(HeapBlock()));
    word_ = 0;
  }

  uint64_t word_ = 0;
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_COMPACT_TEXT_H_

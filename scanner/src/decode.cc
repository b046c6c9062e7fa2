#include "decode.h"

#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>

#include <algorithm>
#include <array>

namespace ckptguard::scanner {
namespace {

constexpr size_t kChunk = 64 * 1024;

std::optional<std::string> Base64(std::string_view in, bool url) {
  // As binascii.a2b_base64 without strict mode (what base64.b64decode,
  // urlsafe_b64decode and the base64 codec call): characters outside the
  // alphabet are skipped; a '=' is skipped unless it completes a group
  // that holds two or three characters, which ends the decoding; a group
  // left unfinished is an error. urlsafe_b64decode translates '-' and '_'
  // to '+' and '/' first, so both spellings are digits there.
  std::array<int, 256> value{};
  value.fill(-1);
  const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (size_t i = 0; i < alphabet.size(); ++i) value[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  value[static_cast<unsigned char>('+')] = 62;
  value[static_cast<unsigned char>('/')] = 63;
  if (url) {
    value[static_cast<unsigned char>('-')] = 62;
    value[static_cast<unsigned char>('_')] = 63;
  }
  std::string out;
  out.reserve(in.size() / 4 * 3);
  uint32_t left = 0;
  int quad = 0;  // digits of the current group
  int pads = 0;  // '=' since the last digit
  for (char c : in) {
    if (c == '=') {
      if (quad >= 2 && quad + ++pads >= 4) return out;
      continue;
    }
    const int v = value[static_cast<unsigned char>(c)];
    if (v < 0) continue;
    pads = 0;
    switch (quad) {
      case 0:
        left = static_cast<uint32_t>(v);
        quad = 1;
        break;
      case 1:
        out.push_back(static_cast<char>((left << 2) | (static_cast<uint32_t>(v) >> 4)));
        left = static_cast<uint32_t>(v) & 0x0f;
        quad = 2;
        break;
      case 2:
        out.push_back(static_cast<char>((left << 4) | (static_cast<uint32_t>(v) >> 2)));
        left = static_cast<uint32_t>(v) & 0x03;
        quad = 3;
        break;
      default:
        out.push_back(static_cast<char>((left << 6) | static_cast<uint32_t>(v)));
        quad = 0;
        break;
    }
  }
  if (quad != 0) return std::nullopt;  // binascii.Error: the caller never gets bytes
  return out;
}

std::optional<std::string> Hex(std::string_view in) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  int high = -1;
  for (char c : in) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') continue;  // bytes.fromhex skips whitespace
    const int n = nibble(c);
    if (n < 0) return std::nullopt;
    if (high < 0) {
      high = n;
    } else {
      out.push_back(static_cast<char>(high << 4 | n));
      high = -1;
    }
  }
  return out;
}

// Sink appends decoded bytes within max_len and the budget.
struct Sink {
  std::string out;
  uint64_t max_len;
  Budget& budget;
  bool Append(const char* data, size_t len) {
    if (len > max_len - out.size()) return false;
    if (!budget.Charge(BudgetKind::kInflatedBytes, len, 0, "", "nested payload")) return false;
    out.append(data, len);
    return true;
  }
};

std::optional<std::string> Zlib(std::string_view in, int window_bits, bool members, uint64_t max_len, Budget& budget) {
  Sink sink{{}, max_len, budget};
  size_t pos = 0;
  std::string buf(kChunk, '\0');
  do {
    z_stream z{};
    if (inflateInit2(&z, window_bits) != Z_OK) return std::nullopt;
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
    z.avail_in = static_cast<uInt>(std::min<size_t>(in.size() - pos, UINT32_MAX));
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
      z.next_out = reinterpret_cast<Bytef*>(buf.data());
      z.avail_out = static_cast<uInt>(buf.size());
      rc = inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) {
        inflateEnd(&z);
        return std::nullopt;
      }
      if (!sink.Append(buf.data(), buf.size() - z.avail_out)) {
        inflateEnd(&z);
        return std::nullopt;
      }
      if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
        inflateEnd(&z);
        return std::nullopt;  // truncated
      }
    }
    pos = in.size() - z.avail_in;
    inflateEnd(&z);
    if (!members) break;
    // gzip.decompress: the NUL bytes after a member are dropped; then the
    // data ends, or another member starts (anything else: BadGzipFile).
    while (pos < in.size() && in[pos] == '\0') ++pos;
    if (pos == in.size()) break;
    if (pos + 2 > in.size() || in[pos] != '\x1f' || in[pos + 1] != '\x8b') return std::nullopt;
  } while (true);
  return std::move(sink.out);
}

std::optional<std::string> Bz2(std::string_view in, uint64_t max_len, Budget& budget) {
  Sink sink{{}, max_len, budget};
  std::string buf(kChunk, '\0');
  size_t pos = 0;
  do {
    bz_stream bz{};
    if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK) return std::nullopt;
    bz.next_in = const_cast<char*>(in.data() + pos);
    bz.avail_in = static_cast<unsigned>(std::min<size_t>(in.size() - pos, UINT32_MAX));
    int rc = BZ_OK;
    while (rc != BZ_STREAM_END) {
      bz.next_out = buf.data();
      bz.avail_out = static_cast<unsigned>(buf.size());
      rc = BZ2_bzDecompress(&bz);
      if ((rc != BZ_OK && rc != BZ_STREAM_END) || !sink.Append(buf.data(), buf.size() - bz.avail_out) ||
          (rc == BZ_OK && bz.avail_in == 0 && bz.avail_out != 0)) {
        BZ2_bzDecompressEnd(&bz);
        return std::nullopt;
      }
    }
    pos = in.size() - bz.avail_in;
    BZ2_bzDecompressEnd(&bz);
  } while (pos + 3 <= in.size() && in.substr(pos, 3) == "BZh");
  return std::move(sink.out);
}

std::optional<std::string> Lzma(std::string_view in, uint64_t max_len, Budget& budget) {
  Sink sink{{}, max_len, budget};
  lzma_stream s = LZMA_STREAM_INIT;
  // Concatenated xz streams and the legacy .lzma format, as Python's lzma
  // module (FORMAT_AUTO) reads them.
  if (lzma_auto_decoder(&s, uint64_t{256} << 20, LZMA_CONCATENATED) != LZMA_OK) return std::nullopt;
  std::string buf(kChunk, '\0');
  s.next_in = reinterpret_cast<const uint8_t*>(in.data());
  s.avail_in = in.size();
  lzma_ret rc = LZMA_OK;
  while (rc != LZMA_STREAM_END) {
    s.next_out = reinterpret_cast<uint8_t*>(buf.data());
    s.avail_out = buf.size();
    rc = lzma_code(&s, s.avail_in == 0 ? LZMA_FINISH : LZMA_RUN);
    if ((rc != LZMA_OK && rc != LZMA_STREAM_END) || !sink.Append(buf.data(), buf.size() - s.avail_out)) {
      lzma_end(&s);
      return std::nullopt;
    }
  }
  lzma_end(&s);
  return std::move(sink.out);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '-' || c == ' ') c = '_';
  }
  return out;
}

}  // namespace

std::optional<std::string> DecodePayload(std::string_view method, std::string_view encoding, std::string_view in,
                                         uint64_t max_len, Budget& budget) {
  if (method == "codecs") {
    // Python's codec registry names and aliases (encodings/aliases.py).
    const std::string e = Lower(encoding);
    if (e == "base64" || e == "base_64" || e == "base64_codec") method = "base64";
    else if (e == "hex" || e == "hex_codec") method = "hex";
    else if (e == "zlib" || e == "zip" || e == "zlib_codec") method = "zlib";
    else if (e == "bz2" || e == "bz2_codec") method = "bz2";
    else return std::nullopt;
  }
  std::optional<std::string> out;
  if (method == "base64" || method == "base64url") {
    out = Base64(in, method == "base64url");
  } else if (method == "hex") {
    out = Hex(in);
  } else if (method == "zlib") {
    return Zlib(in, 15 + 32, false, max_len, budget);  // zlib or gzip header, as wbits=47 would
  } else if (method == "gzip") {
    return Zlib(in, 15 + 16, true, max_len, budget);
  } else if (method == "bz2") {
    return Bz2(in, max_len, budget);
  } else if (method == "lzma") {
    return Lzma(in, max_len, budget);
  } else {
    return std::nullopt;
  }
  if (!out || out->size() > max_len) return std::nullopt;
  if (!budget.Charge(BudgetKind::kInflatedBytes, out->size(), 0, "", "nested payload")) return std::nullopt;
  return out;
}

}  // namespace ckptguard::scanner

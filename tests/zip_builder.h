// ZipBuilder: builds zip archives byte by byte for tests, with a knob for
// every lie a hostile archive can tell (local header disagreeing with the
// central directory, wrong CRC, flags, gaps, overlaps, trailing data...).
#ifndef CKPTGUARD_TESTS_ZIP_BUILDER_H_
#define CKPTGUARD_TESTS_ZIP_BUILDER_H_

#include <zlib.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ckptguard::testing {

inline void PutU16(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
}
inline void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline uint32_t Crc32Of(const std::string& data) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
}

// Deflate compresses `data` with zlib's window_bits convention: negative for
// a raw stream, 16 + MAX_WBITS for a gzip member.
inline std::string Deflate(const std::string& data, int window_bits) {
  z_stream zs{};
  deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, static_cast<uLong>(data.size())) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// RawDeflate compresses `data` as a zip "deflated" entry (no zlib header).
inline std::string RawDeflate(const std::string& data) { return Deflate(data, -MAX_WBITS); }

// Gzip wraps `data` in a gzip member.
inline std::string Gzip(const std::string& data) { return Deflate(data, 16 + MAX_WBITS); }

struct ZipItem {
  std::string name;
  std::string data;              // uncompressed content
  bool deflate = false;
  // Lies, each applied only where it says:
  std::optional<std::string> local_name;    // local header name (central keeps `name`)
  std::optional<uint32_t> crc;              // both headers' CRC (default: the true one)
  std::optional<uint16_t> local_method;     // local header method
  std::optional<uint32_t> local_size;       // local header uncompressed size
  uint16_t flags = 0;                       // both headers
  std::optional<uint16_t> method_override;  // both headers (e.g. 12 = bzip2)
  bool in_directory = true;                 // false: local header and data only
};

struct ZipBuilder {
  std::vector<ZipItem> items;
  std::string leading;         // bytes before the first local header
  std::string between;         // bytes between every two entries
  std::string before_directory;
  std::string trailing;        // bytes after the end record
  std::string comment;
  // The directory record of entry `overlap_index` points at the previous entry's local header.
  std::optional<size_t> overlap_index;
  // Write a zip64 end record and locator (the classic end record then holds
  // 0xffff/0xffffffff, as writers do when the archive needs zip64).
  bool zip64 = false;

  std::string Build() const {
    std::string out = leading;
    std::vector<uint32_t> offsets;
    std::vector<std::string> stored;  // compressed data
    for (size_t i = 0; i < items.size(); ++i) {
      const ZipItem& it = items[i];
      if (i > 0) out += between;
      offsets.push_back(static_cast<uint32_t>(out.size()));
      const std::string data = it.deflate ? RawDeflate(it.data) : it.data;
      stored.push_back(data);
      const std::string& lname = it.local_name ? *it.local_name : it.name;
      const uint16_t method = it.method_override ? *it.method_override : (it.deflate ? 8 : 0);
      PutU32(out, 0x04034b50);
      PutU16(out, 20);
      PutU16(out, it.flags);
      PutU16(out, it.local_method ? *it.local_method : method);
      PutU16(out, 0);
      PutU16(out, 0);
      PutU32(out, it.crc ? *it.crc : Crc32Of(it.data));
      PutU32(out, static_cast<uint32_t>(data.size()));
      PutU32(out, it.local_size ? *it.local_size : static_cast<uint32_t>(it.data.size()));
      PutU16(out, static_cast<uint32_t>(lname.size()));
      PutU16(out, 0);
      out += lname;
      out += data;
    }
    out += before_directory;
    const uint32_t cd_offset = static_cast<uint32_t>(out.size());
    uint16_t count = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const ZipItem& it = items[i];
      if (!it.in_directory) continue;
      ++count;
      const uint16_t method = it.method_override ? *it.method_override : (it.deflate ? 8 : 0);
      PutU32(out, 0x02014b50);
      PutU16(out, 20);
      PutU16(out, 20);
      PutU16(out, it.flags);
      PutU16(out, method);
      PutU16(out, 0);
      PutU16(out, 0);
      PutU32(out, it.crc ? *it.crc : Crc32Of(it.data));
      PutU32(out, static_cast<uint32_t>(stored[i].size()));
      PutU32(out, static_cast<uint32_t>(it.data.size()));
      PutU16(out, static_cast<uint32_t>(it.name.size()));
      PutU16(out, 0);
      PutU16(out, 0);
      PutU16(out, 0);
      PutU16(out, 0);
      PutU32(out, 0);
      PutU32(out, overlap_index && *overlap_index == i && i > 0 ? offsets[i - 1] : offsets[i]);
      out += it.name;
    }
    const uint32_t cd_size = static_cast<uint32_t>(out.size()) - cd_offset;
    if (zip64) {
      const uint64_t z64_pos = out.size();
      PutU32(out, 0x06064b50);
      PutU64(out, 44);  // size of the rest of the record
      PutU16(out, 45);
      PutU16(out, 45);
      PutU32(out, 0);
      PutU32(out, 0);
      PutU64(out, count);
      PutU64(out, count);
      PutU64(out, cd_size);
      PutU64(out, cd_offset);
      PutU32(out, 0x07064b50);
      PutU32(out, 0);
      PutU64(out, z64_pos);
      PutU32(out, 1);
    }
    PutU32(out, 0x06054b50);
    PutU16(out, 0);
    PutU16(out, 0);
    PutU16(out, zip64 ? 0xffff : count);
    PutU16(out, zip64 ? 0xffff : count);
    PutU32(out, zip64 ? 0xffffffff : cd_size);
    PutU32(out, zip64 ? 0xffffffff : cd_offset);
    PutU16(out, static_cast<uint32_t>(comment.size()));
    out += comment;
    out += trailing;
    return out;
  }
};

// kMinimalDataPkl is the data.pkl torch 1.13's pickler writes for
// {'w': tensor of 2 floats in storage '0'}, generated with CPython's pickle
// (protocol 2, persistent id ('storage', torch.FloatStorage, '0', 'cpu', 2)).
inline const std::string kMinimalDataPkl(
    "\x80\x02\x7d\x71\x00\x58\x01\x00\x00\x00\x77\x71\x01\x63\x74\x6f"
    "\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75"
    "\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72\x5f\x76\x32\x0a\x71\x02"
    "\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65\x71\x03"
    "\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72"
    "\x61\x67\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x30\x71\x05\x58\x03"
    "\x00\x00\x00\x63\x70\x75\x71\x06\x4b\x02\x74\x71\x07\x51\x4b\x00"
    "\x4b\x02\x85\x71\x08\x4b\x01\x85\x71\x09\x89\x63\x63\x6f\x6c\x6c"
    "\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44"
    "\x69\x63\x74\x0a\x71\x0a\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d"
    "\x73\x2e",
    162);

// BuildZip builds an honest archive of `items`.
inline std::string BuildZip(std::vector<ZipItem> items) {
  ZipBuilder builder;
  builder.items = std::move(items);
  return builder.Build();
}

// MinimalTorchZip: a torch.save-like archive holding that tensor, its 8-byte
// record data/0 and the version record.
inline std::vector<ZipItem> MinimalTorchZip(const std::string& prefix = "archive") {
  return {
      ZipItem{prefix + "/data.pkl", kMinimalDataPkl},
      ZipItem{prefix + "/data/0", std::string(8, '\x01')},
      ZipItem{prefix + "/version", "3\n"},
  };
}

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_ZIP_BUILDER_H_

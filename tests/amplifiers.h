// Amplifiers: small hostile files that made work far larger than themselves
// before the per-file budget (issue 13), built byte by byte. Each is named for
// what it multiplies; the tests (amplifier_test.cc, registry_test.cc) check
// that `scan`, `inspect` and a registry push end with a correct answer or an
// error naming the limit, within bounded memory.
#ifndef CKPTGUARD_TESTS_AMPLIFIERS_H_
#define CKPTGUARD_TESTS_AMPLIFIERS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "zip_builder.h"

namespace ckptguard::testing {

// SharedMemberZip: one local header and its data, named `num_names` times by
// the central directory (every record points at the same local header).
inline std::string SharedMemberZip(const std::string& member, int num_names, bool deflate) {
  const std::string data = deflate ? RawDeflate(member) : member;
  const uint16_t method = deflate ? 8 : 0;
  const std::string local_name = "m0.zip";
  std::string out;
  PutU32(out, 0x04034b50);
  PutU16(out, 20);
  PutU16(out, 0);
  PutU16(out, method);
  PutU16(out, 0);
  PutU16(out, 0);
  PutU32(out, Crc32Of(member));
  PutU32(out, static_cast<uint32_t>(data.size()));
  PutU32(out, static_cast<uint32_t>(member.size()));
  PutU16(out, static_cast<uint32_t>(local_name.size()));
  PutU16(out, 0);
  out += local_name;
  out += data;
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  for (int i = 0; i < num_names; ++i) {
    // The first name matches the local header; the others are the lie.
    const std::string name = "m" + std::to_string(i) + ".zip";
    PutU32(out, 0x02014b50);
    PutU16(out, 20);
    PutU16(out, 20);
    PutU16(out, 0);
    PutU16(out, method);
    PutU16(out, 0);
    PutU16(out, 0);
    PutU32(out, Crc32Of(member));
    PutU32(out, static_cast<uint32_t>(data.size()));
    PutU32(out, static_cast<uint32_t>(member.size()));
    PutU16(out, static_cast<uint32_t>(name.size()));
    PutU16(out, 0);
    PutU16(out, 0);
    PutU16(out, 0);
    PutU16(out, 0);
    PutU32(out, 0);
    PutU32(out, 0);  // every record: the one local header at offset 0
    out += name;
  }
  const uint32_t cd_size = static_cast<uint32_t>(out.size()) - cd_offset;
  PutU32(out, 0x06054b50);
  PutU16(out, 0);
  PutU16(out, 0);
  PutU16(out, static_cast<uint32_t>(num_names));
  PutU16(out, static_cast<uint32_t>(num_names));
  PutU32(out, cd_size);
  PutU32(out, cd_offset);
  PutU16(out, 0);
  return out;
}

// NestedSharedZip: a pickle in a zip whose directory names it 32 times,
// inside a zip that names that zip 32 times, four levels deep: about 7 KB
// that a reader opening every name opens 32^4 = 1,048,576 times.
inline std::string NestedSharedZip(int levels = 4, int names = 32) {
  std::string inner = BuildZip({ZipItem{"payload.pkl", std::string("\x80\x02N.", 4)}});
  for (int i = 0; i < levels; ++i) inner = SharedMemberZip(inner, names, true);
  return inner;
}

// NonePopPickle: PROTO 2, then `pairs` NONE POP pairs, then NONE STOP (a 4 MB
// pickle for two million pairs). Each NONE makes a value that POP drops.
inline std::string NonePopPickle(size_t pairs = 2'000'000) {
  std::string out("\x80\x02", 2);
  out.reserve(2 + 2 * pairs + 2);
  for (size_t i = 0; i < pairs; ++i) out += "N0";
  out += "N.";
  return out;
}

// SparseMemoPickle: NONE, then LONG_BINPUT with keys 1023 apart (each PUT
// 5 bytes), then STOP: a memo that grows its dense part by 1023 slots per PUT
// when it is sized from the keys. 64,000 PUTs: about 320 KB.
inline std::string SparseMemoPickle(uint32_t puts = 64'000, uint32_t gap = 1023) {
  std::string out("\x80\x02N", 3);
  for (uint32_t i = 1; i <= puts; ++i) {
    out += 'r';
    PutU32(out, i * gap);
  }
  out += '.';
  return out;
}

// HugeDeclaredEntryZip: a torch-zip-shaped archive whose data.pkl is a
// deflated entry declaring 4 GiB - 16 uncompressed bytes over `compressed_len`
// bytes of data that are not a deflate stream (the ratio check passes: 4 MiB
// of input may legitimately inflate to 4 GiB). A reader that sizes its buffer
// from the declaration zero-fills 4 GiB before inflating a byte.
inline std::string HugeDeclaredEntryZip(uint32_t compressed_len = 4u << 20) {
  ZipBuilder builder;
  builder.items = {ZipItem{"archive/data.pkl", std::string(compressed_len, '\xff')},
                   ZipItem{"archive/version", "3\n"}};
  builder.items[0].method_override = 8;
  builder.items[0].local_size = 0xfffffff0u;  // (0xffffffff would mean "see zip64")
  std::string zip = builder.Build();
  // The directory's uncompressed size of the first entry: patch it to 4 GiB - 16
  // (the builder writes the real length; the record is the first after cd_offset).
  const size_t cd = zip.find(std::string("\x50\x4b\x01\x02", 4));
  zip[cd + 24] = '\xf0';
  for (int i = 1; i < 4; ++i) zip[cd + 24 + i] = '\xff';
  return zip;
}

// BroadcastViewCheckpoint: a torch zip whose data.pkl rebuilds a stride-0
// view of 2^30 float32 elements over a 1-element storage: 4 GiB of logical
// elements to hash or copy, from a file of a few hundred bytes.
inline std::string BroadcastViewCheckpoint(uint32_t num_elements = 1u << 30) {
  // {'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 1), 0,
  //                          (num_elements,), (0,), False, OrderedDict())}
  std::string pkl("\x80" "\x02" "}q" "\x00" "X" "\x01" "\x00" "\x00" "\x00" "wq" "\x01" "ctorch._utils" "\x0a" "_rebuild_tensor_v2" "\x0a" "q" "\x02" "((X" "\x07" "\x00" "\x00" "\x00" "storageq" "\x03" "ctorch" "\x0a" "FloatStorage" "\x0a" "q" "\x04" "X" "\x01" "\x00" "\x00" "\x00" "0q" "\x05" "X" "\x03" "\x00" "\x00" "\x00" "cpuq" "\x06" "K" "\x01" "tq" "\x07" "QK" "\x00" "J", 113);
  PutU32(pkl, num_elements);
  pkl += std::string("\x85" "q" "\x08" "K" "\x00" "\x85" "q" "\x09" "\x89" "ccollections" "\x0a" "OrderedDict" "\x0a" "q" "\x0a" ")Rq" "\x0b" "tq" "\x0c" "Rq" "\x0d" "s.", 48);
  return BuildZip({ZipItem{"archive/data.pkl", pkl}, ZipItem{"archive/data/0", std::string(4, '\0')},
                   ZipItem{"archive/version", "3\n"}});
}

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_AMPLIFIERS_H_

// ParseSafetensors: reads a safetensors file the way the reference reader
// (huggingface/safetensors, src/tensor.rs: SafeTensors::read_metadata and
// Metadata::validate) does, and a little more strictly.
//
// Layout: a u64 little-endian header length N, N bytes of UTF-8 JSON, then
// the data. The JSON maps tensor names to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data start), plus an optional
// "__metadata__" object of string -> string.
//
// Hard errors: everything the reference refuses, plus a few ambiguities it
// lets through. Error offsets are absolute offsets in the file; errors about
// one tensor point at the opening quote of its key in the header and name it
// in `where` ("__metadata__" for the metadata object).
//   kTruncated      the file is shorter than 8 bytes (offset 0); the header
//                   runs past the end of the file (offset 8); the tensor data
//                   runs past the end of the file (offset: where the first
//                   tensor that does not fit begins, or the end of the file).
//   kLimitExceeded  N > max_header_len (offset 0); more than max_tensors
//                   tensors, max_rank dimensions or max_metadata_entries
//                   metadata entries (offset of the key that is one too many).
//   kMalformed      invalid UTF-8 or a NUL byte anywhere in the header (offset
//                   of the bad byte; nlohmann would take a NUL for the end of
//                   the input, serde refuses it); JSON syntax errors (offset where the JSON parser
//                   stopped); a root that is not an object, an entry that is
//                   not {dtype, shape, data_offsets}, a dtype the reference
//                   does not know, shape or offsets that are not non-negative
//                   integers fitting in 64 bits (floats, negatives, -0 and
//                   too-large numbers are refused, as serde refuses them for
//                   usize), data_offsets without exactly two entries, metadata
//                   values that are not strings; in the data-offset order the
//                   reference sorts by: a first tensor not at 0, a gap, an
//                   overlap, end < begin; shape products or bit counts that
//                   overflow 64 bits; a bit count that is not a whole number
//                   of bytes (sub-byte dtypes); end - begin different from the
//                   tensor's byte size; bytes after the end of the tensor data
//                   (the reference's MetadataIncompleteBuffer: trailing data is
//                   an error, offset where it starts).
//   Stricter than the reference (it accepts these, we refuse them, kMalformed):
//                   duplicate keys at any level (serde keeps the last one, a
//                   different reader may keep the first); a header whose first
//                   byte is not '{' (the reference's own check is commented out
//                   "until 0.4.0"); unknown fields in a tensor entry (serde
//                   ignores them); nesting deeper than root object, entry
//                   object, shape/offsets array (only reachable through fields
//                   we refuse anyway).
//
// Anomalies (the reference reads the file; a strict reader notes it):
//   safetensors.unordered_tensors  the header does not list tensors in data-
//                                  offset order (the reference writer does; the
//                                  reader sorts, so it still loads)
//   safetensors.unaligned_data     the data does not start at a multiple of 8
//                                  (the reference writer pads the header with
//                                  spaces so that it does)
//   safetensors.null_metadata      "__metadata__": null (serde reads it as "no
//                                  metadata")
// Not anomalies: space padding after the JSON (every writer does it) and other
// trailing JSON whitespace (tab, CR, LF), which the reference also accepts.
//
// Dtypes and their element sizes in bits follow the reference (0.6): BOOL 8,
// F4 4, F6_E2M3 6, F6_E3M2 6, U8 8, I8 8, F8_E5M2 8, F8_E4M3 8, F8_E8M0 8,
// I16 16, U16 16, F16 16, BF16 16, I32 32, U32 32, F32 32, C64 64, F64 64,
// I64 64, U64 64. Any other dtype string is refused.
//
// JSON is parsed with nlohmann::json's SAX interface (iterative; no DOM):
// depth, counts and duplicates are checked as events arrive, so a hostile
// header costs at most one pass over at most max_header_len bytes.
#ifndef CKPTGUARD_SAFETENSORS_READER_H_
#define CKPTGUARD_SAFETENSORS_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// SafetensorsLimits bounds what one file may make us do. Clamped() caps each
// field at its hard ceiling.
struct SafetensorsLimits {
  // Longest JSON header in bytes. Default and ceiling 100,000,000: the
  // reference reader's MAX_HEADER_SIZE, so nothing it reads is refused.
  uint64_t max_header_len = 100'000'000;
  // Most tensors in one header. Default 1,000,000 (large LLM shards hold a few
  // thousand). Ceiling 2^24. Each costs its name plus ~100 bytes.
  uint64_t max_tensors = 1'000'000;
  // Most dimensions of one tensor. Default 64 (torch's own maximum). Ceiling
  // 1024.
  uint64_t max_rank = 64;
  // Most "__metadata__" entries. Default 100,000 (writers store a handful).
  // Ceiling 2^24.
  uint64_t max_metadata_entries = 100'000;

  SafetensorsLimits Clamped() const;
};

// SafetensorsTensor is one tensor entry of the header.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;            // as written: "F32", "BF16", "F8_E4M3", ...
  uint32_t elem_bits = 0;       // bits per element: 32 for F32, 8 for BOOL, 4 for F4
  std::vector<uint64_t> shape;  // empty for a scalar (one element)
  uint64_t begin = 0;           // data_offsets, relative to the data start
  uint64_t end = 0;
  uint64_t file_offset = 0;     // absolute offset of `begin` in the file
  uint64_t header_offset = 0;   // absolute offset of the opening quote of the key
};

// SafetensorsFile is a parsed and validated file. Tensors are in header order
// (the reference's order is data-offset order; see unordered_tensors).
struct SafetensorsFile {
  uint64_t header_len = 0;   // N, as declared (padding included)
  uint64_t data_offset = 0;  // 8 + N
  std::vector<SafetensorsTensor> tensors;
  // "__metadata__" entries in header order; values are strings only.
  std::vector<std::pair<std::string, std::string>> metadata;
  Anomalies anomalies;
};

// SafetensorsDtypeBits returns the element size in bits of a reference dtype
// name ("F32" -> 32), or nullopt for a name the reference does not know.
std::optional<uint32_t> SafetensorsDtypeBits(std::string_view dtype);

// ParseSafetensors parses and validates the header of `file` (the whole file)
// against the tensor data that follows. Success means the reference reader
// would read the file and none of our stricter rules fired; every tensor's
// bytes are file[file_offset, file_offset + end - begin). Failure: an Error
// as described at the top of this header. The result owns copies of names and
// strings; it does not refer to `file`.
Result<SafetensorsFile> ParseSafetensors(Bytes file, const SafetensorsLimits& limits = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_SAFETENSORS_READER_H_

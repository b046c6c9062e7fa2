// ParseNpy: reads a numpy .npy header the way numpy.lib.format does
// (read_magic, _check_version, _read_array_header: ast.literal_eval of the
// header, keys exactly 'descr', 'fortran_order', 'shape'), without Python.
//
// Layout: "\x93NUMPY", major, minor, a little-endian header length (u16 for
// 1.0, u32 for 2.0 and 3.0), the header (latin-1 for 1.0/2.0, UTF-8 for 3.0):
// a Python dict literal padded with spaces and ending in '\n'; then the data,
// or a pickle when the dtype holds Python objects.
//
// The header grammar accepted is what numpy's writer produces plus the
// variations a hand-written or Python 2 header may have: either quote style,
// a u'' prefix, backslash escapes (\\ \' \" \a \b \f \n \r \t \v, octal,
// \xhh, \uXXXX, \UXXXXXXXX, backslash-newline; unknown escapes stay as
// written, as in Python), any whitespace between tokens, trailing commas,
// leading spaces/tabs, and for 1.0/2.0 the Python 2 'L' suffix on shape ints
// (numpy retries with _filter_header). Refused although Python would parse
// them (kMalformed): comments, implicit string concatenation, triple quotes,
// other string prefixes, \N{...} escapes, surrogate escapes, integers that
// are not plain decimal (hex, underscores, leading zeros, signs), booleans in
// the shape, and duplicate keys (Python keeps the last one silently).
//
// Errors (offsets absolute: `base_offset` + position in `file`):
//   kTruncated         the file ends inside the magic, version or length
//                      (offset of the read); the header runs past the end
//                      (offset of the header); a plain array has fewer data
//                      bytes than shape x itemsize (offset data_offset); an
//                      object array has no pickle bytes at all.
//   kMalformed         bad magic (offset 0); a NUL byte or (3.0) invalid UTF-8
//                      in the header; a header that is not a dict literal,
//                      with a missing, unknown or duplicate key, a shape that
//                      is not a tuple of non-negative ints, a fortran_order
//                      that is not True/False, a descr that is neither a
//                      string nor a list/tuple; text after the dict other than
//                      whitespace; a shape product or data length that
//                      overflows 64 bits (offset of the token at fault).
//   kUnsupportedFormat a version other than 1.0, 2.0, 3.0 (offset 6); a descr
//                      string that is not a dtype string numpy writes
//                      ([<>|=]? kind digits, datetime units in brackets).
//   kLimitExceeded     header_len > max_header_len (offset of the length
//                      field); more than max_rank dimensions; structured
//                      descr nesting deeper than max_descr_depth.
//
// Anomalies (numpy loads the file; a strict reader notes it):
//   npy.header_no_newline  the header does not end with '\n' (numpy's writer
//                          always ends it so; literal_eval does not care)
//   npy.large_header       the header is longer than 10,000 characters, which
//                          numpy.load refuses unless max_header_size is raised
//                          or allow_pickle=True
//   npy.trailing_data      bytes after shape x itemsize bytes of data (numpy.load
//                          and mmap ignore them)
//   npy.native_byte_order  descr has byte order '=' or none: the bytes mean
//                          different numbers on machines of different
//                          endianness (numpy's writer always says '<', '>' or '|')
//   npy.python2_header     an 'L' suffix on a shape int (a Python 2 writer)
//   npy.unaligned_data     the data does not start at a multiple of 16 bytes
//                          from the start of the .npy (numpy's writer aligns it
//                          to 64 bytes, old versions to 16)
// An object dtype is not an anomaly here: callers see is_object and decide.
#ifndef CKPTGUARD_NPY_READER_H_
#define CKPTGUARD_NPY_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/anomaly.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// NpyLimits bounds what one header may make us do. Clamped() caps each field
// at its hard ceiling.
struct NpyLimits {
  // Longest header in bytes. Default 100,000: numpy refuses more than 10,000
  // characters unless told otherwise (reported as npy.large_header), and wide
  // structured dtypes legitimately exceed that. Ceiling 1,000,000.
  uint64_t max_header_len = 100'000;
  // Most dimensions in the shape. Default 64 (numpy's NPY_MAXDIMS since 2.0;
  // 32 before). Ceiling 1024.
  uint64_t max_rank = 64;
  // Deepest nesting of lists/tuples in a structured descr. Default 32; Python's
  // parser stops at 200. Ceiling 200.
  uint64_t max_descr_depth = 32;

  NpyLimits Clamped() const;
};

// NpyArray is a parsed header and the facts derived from it.
struct NpyArray {
  uint8_t major = 0;
  uint8_t minor = 0;
  uint64_t header_len = 0;   // as declared (padding and newline included)
  uint64_t data_offset = 0;  // absolute offset of the first data (or pickle) byte
  // descr as written: the string value (escapes undone) for a simple dtype;
  // the raw header text of the literal for a structured (list) or subarray
  // (tuple) descr.
  std::string descr;
  char byte_order = '|';     // '<', '>', '|' or '=' ('=' also when descr has none)
  char kind = 'V';           // numpy's dtype.kind: 'b','i','u','f','c','O','S','U','V','M','m' ('a' reads as 'S')
  uint64_t item_size = 0;    // bytes per element; structured: numpy's itemsize, 0 when not worked out
  bool fortran_order = false;
  std::vector<uint64_t> shape;  // empty for a 0-d array (one element)
  uint64_t num_elements = 1;
  // The data is a pickle (numpy.load needs allow_pickle=True): descr is an
  // object dtype ('|O', 'O', '|O8'...), or a structured descr mentions one
  // anywhere (conservative: a field named "O" counts too).
  bool is_object = false;
  // descr is a list (structured dtype) or tuple (subarray dtype), kept as raw
  // text. item_size is the itemsize numpy's descr_to_dtype gives it (fields
  // (name or (title, name), format[, shape]) summed, padding fields
  // included; a subarray's format times its shape), or 0 when the literal is
  // not such a dtype; data_len is 0 and the data length is not checked here
  // (a loader checks num_elements x item_size). kind 'V', byte_order '|'.
  bool structured = false;
  // num_elements x item_size; 0 for object and structured arrays.
  uint64_t data_len = 0;
  Anomalies anomalies;
};

// SimpleDescr is a dtype string as numpy writes it (dtype.str, or the
// descr a pickled numpy.dtype is called with): byte order ('=' when the
// string gives none), kind ('a' read as 'S'), item size in bytes (a 'U'
// string's characters times 4), whether it is an object dtype. A datetime's
// unit ("[ns]") is checked but not kept.
struct SimpleDescr {
  char order = '=';
  char kind = 'V';
  uint64_t item_size = 0;
  bool is_object = false;
};

// ParseSimpleDescr: nullopt for a string that is not a dtype numpy writes
// (the .npy reader and the VM's pickled numpy dtypes share it).
std::optional<SimpleDescr> ParseSimpleDescr(std::string_view s);

// ParseNpy parses the .npy in `file` (the whole .npy; for an .npz member, the
// member's uncompressed bytes) and checks its data length. `base_offset` is
// added to every reported offset, so a caller parsing a stored .npz member in
// place gets offsets in the .npz. Success: the header as numpy reads it, and
// for plain arrays at least data_len bytes at data_offset. Failure: an Error
// as described at the top of this header. The result owns its strings and
// does not refer to `file`.
Result<NpyArray> ParseNpy(Bytes file, const NpyLimits& limits = {}, uint64_t base_offset = 0);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_NPY_READER_H_

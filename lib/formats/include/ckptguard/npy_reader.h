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
// variations ast.literal_eval takes that a hand-written or Python 2 header may
// have: either quote style, a u'' prefix, backslash escapes (\\ \' \" \a \b
// \f \n \r \t \v, octal, \xhh, \uXXXX, \UXXXXXXXX, backslash-newline;
// unknown escapes stay as written, as in Python), any whitespace between
// tokens, comments, line continuations, adjacent strings (joined), trailing
// commas, leading spaces/tabs, duplicate keys (the last wins, as in Python;
// npy.duplicate_key), and for 1.0/2.0 the Python 2 'L' suffix on shape ints
// (numpy's _filter_header). The descr may be any literal of strings, ints,
// True/False/None, lists and tuples: numpy's dtype for it is worked out by
// InterpretDescr (below), and one it does not work out is read as possibly
// holding objects (object_unsure). Refused although Python would parse them
// (kMalformed): triple quotes, other string prefixes, \N{...} escapes,
// surrogate escapes, shape integers that are not plain decimal (hex,
// underscores, leading zeros, signs), booleans in the shape. A caller that
// meets a refused header still reads the data after it as a possible pickle
// (numpy may read the header).
//
// Errors (offsets absolute: `base_offset` + position in `file`):
//   kTruncated         the file ends inside the magic, version or length
//                      (offset of the read); the header runs past the end
//                      (offset of the header); a plain array has fewer data
//                      bytes than shape x itemsize (offset data_offset); an
//                      object array (not object_unsure) has no pickle bytes.
//   kMalformed         bad magic (offset 0); a NUL byte or (3.0) invalid UTF-8
//                      in the header; a header that is not a dict literal,
//                      with a missing or unknown key, a shape that is not a
//                      tuple of non-negative ints, a fortran_order that is
//                      not True/False, a descr that is not a literal of
//                      strings, ints, True/False/None, lists and tuples;
//                      text after the dict
//                      other than whitespace and comments; a shape product or data length that
//                      overflows 64 bits (offset of the token at fault).
//   kUnsupportedFormat a version other than 1.0, 2.0, 3.0 (offset 6).
//   kLimitExceeded     header_len > max_header_len (offset of the length
//                      field); more than max_rank dimensions; descr nesting
//                      deeper than max_descr_depth, or more than 1,000,000
//                      values in it.
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
//   npy.duplicate_key      a key of the dict is given twice (the last wins)
//   npy.unknown_dtype      numpy's dtype for descr is not worked out: the data
//                          is read as a possible pickle (object_unsure)
//   npy.unaligned_data     the data does not start at a multiple of 16 bytes
//                          from the start of the .npy (numpy's writer aligns it
//                          to 64 bytes, old versions to 16)
// An object dtype is not an anomaly here: callers see is_object and decide.
#ifndef CKPTGUARD_NPY_READER_H_
#define CKPTGUARD_NPY_READER_H_

#include <cstdint>
#include <optional>
#include <span>
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
  // The data is a pickle (numpy.load needs allow_pickle=True): numpy's
  // dtype for descr has objects (InterpretDescr: '|O', 'object0', 'i4,O',
  // '2O', a field of any depth...), or may have them (object_unsure).
  bool is_object = false;
  // InterpretDescr could not work the dtype out (kUnknown): is_object is set
  // so that the data is read as a pickle, found by content (it may be plain
  // data); item_size is 0.
  bool object_unsure = false;
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
// (the VM's pickled numpy dtypes use it).
std::optional<SimpleDescr> ParseSimpleDescr(std::string_view s);

// NumpyDtype is what numpy 1.24 makes of a dtype description, as far as a
// reader of the data needs it: whether the dtype holds Python objects (then
// numpy.load and joblib.load unpickle the data), and otherwise its item size.
// One interpreter decides it for the .npy/.npz reader and joblib's
// NumpyArrayWrapper view, so that they cannot disagree.
struct NumpyDtype {
  enum class Holds : uint8_t {
    kPlain,    // no object field anywhere: the data is item_size bytes per element
    kObjects,  // dtype.hasobject: the data is a pickle
    kUnknown,  // not worked out (a spelling, a shape or a form the interpreter
               // does not know, or one numpy refuses): may hold objects, so a
               // reader must read the data as a possible pickle, never as harmless
  };
  Holds holds = Holds::kUnknown;
  uint64_t item_size = 0;  // kPlain: numpy's dtype.itemsize
  // numpy's dtype.kind for a dtype without fields or subarray ('b', 'i', 'u',
  // 'f', 'c', 'O', 'S', 'U', 'V', 'M', 'm'); 'V' for a structured or
  // subarray dtype.
  char kind = 'V';
  // The byte order as spelled: '<', '>', '|', or '=' when the spelling gives
  // none (a type name such as 'float64', or a bare code such as 'd').
  char order = '=';
  bool structured = false;  // fields or a subarray
  // 'S', 'U', 'V' without a size ('S', 'str', 'void'...): numpy reads a
  // following int as the size in (dtype, n).
  bool unsized = false;
};

// InterpretDtypeString is numpy.dtype(s) for a str `s` (numpy 1.24's
// _convert_from_str: byte order, one-letter codes, kind + size, the names of
// np.sctypeDict such as 'float64' or 'object0', datetimes, and comma / repeat
// strings such as 'i4,O', '2O' or '(2,)O' through _internal._commastring).
NumpyDtype InterpretDtypeString(std::string_view s);

// DescrValue is one node of a Python literal (what ast.literal_eval gives
// for an .npy header's descr, or what a pickled numpy.dtype call is given):
// nodes are in post-order, a container's items are indices of earlier nodes.
struct DescrValue {
  enum class Kind : uint8_t { kStr, kInt, kTuple, kList, kOther } kind = Kind::kOther;
  std::string text;                 // kStr
  bool is_bool = false;             // kInt: True or False (an int to Python)
  std::optional<int64_t> number;    // kInt: its value when it fits
  std::vector<uint32_t> items;      // kTuple, kList
};

// InterpretDescr is numpy.lib.format.descr_to_dtype(values.back()) (a str:
// numpy.dtype(str); a tuple: (descr_to_dtype(t[0]), t[1]) as a subarray; any
// other sequence: fields (name, descr[, shape]) whose sizes are summed). No
// recursion: one pass over the post-order nodes. An empty span is kUnknown.
NumpyDtype InterpretDescr(std::span<const DescrValue> values);

// ParseDescrLiteral parses the Python literal `text` (strings, ints, True,
// False, tuples and lists, as an .npy header writes a descr) and interprets
// it with InterpretDescr. Malformed text is an error.
Result<NumpyDtype> ParseDescrLiteral(std::string_view text);

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

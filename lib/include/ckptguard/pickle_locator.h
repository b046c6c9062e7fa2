// LocatePickles: where the pickles of a model file are, decided by content.
//
// A first, deliberately small container layer (issue 3 brings the full
// container reader with anomalies): a zip (first bytes PK\x03\x04, as torch
// decides) is read through its central directory and every entry that holds a
// pickle is a source (name ending in .pkl, data starting with PROTO 2..5, or an
// object-dtype .npy); an object-dtype .npy file is a source after its header;
// a safetensors file holds none; anything else is a pickle stream from byte 0.
#ifndef CKPTGUARD_PICKLE_LOCATOR_H_
#define CKPTGUARD_PICKLE_LOCATOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/zip_reader.h"

namespace ckptguard {

// PickleSource is one run of bytes that holds one or more pickles.
struct PickleSource {
  std::string entry;       // zip entry name (central directory); empty for the file itself
  Bytes data;              // the entry's (inflated) data, or the whole file
  uint64_t start = 0;      // offset in `data` of the first pickle
  // Where data[0] sits in the file: set for the file itself and for stored
  // entries, unset for inflated ones.
  std::optional<uint64_t> file_offset;
  bool deflated = false;
};

// LocatedPickles owns the inflated buffers its sources may view; the sources
// also view the caller's file bytes, which must outlive this object.
struct LocatedPickles {
  std::string container;   // "zip", "npy", "safetensors" or "pickle"
  std::vector<PickleSource> sources;
  std::vector<std::string> notes;   // facts worth telling ("safetensors: holds no pickle")
  std::vector<Error> entry_errors;  // zip entries that could not be read (the rest still are)
  std::vector<std::unique_ptr<std::string>> buffers;
};

// LocatePickles finds the pickle sources of `file`. Failure only when the
// container itself cannot be read (a zip whose directory is broken); a bad
// entry is recorded in entry_errors and the other entries are still located.
Result<LocatedPickles> LocatePickles(Bytes file, const ZipLimits& zip_limits = {});

// NpyPickleOffset returns the offset of the pickle in an object-dtype .npy
// (descr '|O'), nullopt for other arrays, or an error for a broken header.
Result<std::optional<uint64_t>> NpyPickleOffset(Bytes npy);

}  // namespace ckptguard

#endif  // CKPTGUARD_PICKLE_LOCATOR_H_

// Safetensors writer: tensors in the layout of the reference implementation.
//
// Tensors are ordered as the reference serializer orders them (larger dtypes
// first, then by name), the header is JSON with "__metadata__" (a string
// map) first and each tensor's dtype, shape and data_offsets, padded with
// spaces to a multiple of 8 bytes; the data follows, each tensor's bytes
// C-order little-endian.
#ifndef CKPTGUARD_SAFETENSORS_WRITER_H_
#define CKPTGUARD_SAFETENSORS_WRITER_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct SafetensorsTensorData {
  std::string name;             // unique, valid UTF-8, not "__metadata__"
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;   // empty for a scalar
  Bytes data;                   // exactly numel x DTypeSize bytes, C order, little-endian
};

// SafetensorsDTypeName: "F32" ... for the dtypes safetensors has; nullopt
// for others (complex128, quantized).
std::optional<std::string_view> SafetensorsDTypeName(DType dtype);

// SafetensorsHeader builds the header (length prefix included) and orders
// `tensors` as they must be written. Failure: kInvalidArgument naming the
// tensor (size mismatch, bad shape, duplicate or bad name) or the metadata
// entry (invalid UTF-8, duplicate key), kUnsupportedFormat naming the tensor
// for a dtype safetensors cannot hold.
Result<std::string> SafetensorsHeader(std::vector<SafetensorsTensorData>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata);

// SafetensorsBytes is the whole file in memory: SafetensorsHeader, then each
// tensor's data in that order (byte-identical to the reference's serialize()
// for the same tensors and at most one metadata entry; with more, the
// reference's HashMap order is unspecified and ours is `metadata` order).
Result<std::string> SafetensorsBytes(std::vector<SafetensorsTensorData> tensors,
                                     const std::vector<std::pair<std::string, std::string>>& metadata = {});

// WriteSafetensors writes the file atomically (AtomicFile): header, then each
// tensor's data; before the rename, the written file is parsed back with the
// strict reader (ParseSafetensors, over a fresh read-only mapping of the
// temporary file) and each tensor's name and bytes compared, so a file that
// does not read back never replaces anything. Streams: no whole-file buffer.
// Errors as SafetensorsHeader and AtomicFile.
Status WriteSafetensors(const std::string& path, std::vector<SafetensorsTensorData> tensors,
                        const std::vector<std::pair<std::string, std::string>>& metadata = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_SAFETENSORS_WRITER_H_

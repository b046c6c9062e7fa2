// Safetensors writer: tensors in the layout of the reference implementation.
//
// Tensors are ordered as the reference serializer orders them (larger dtypes
// first, then by name), the header is JSON with "__metadata__" (a string
// map) first and each tensor's dtype, shape and data_offsets, padded with
// spaces to a multiple of 8 bytes; the data follows, each tensor's bytes
// C-order little-endian.
#ifndef CKPTGUARD_SAFETENSORS_WRITER_H_
#define CKPTGUARD_SAFETENSORS_WRITER_H_

#include <string>
#include <utility>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"

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
// tensor (size mismatch, duplicate or bad name), kUnsupportedFormat for a
// dtype safetensors cannot hold.
Result<std::string> SafetensorsHeader(std::vector<SafetensorsTensorData>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata);

// WriteSafetensors writes the file atomically (AtomicFile): header, then each
// tensor's data; before the rename, the written file is parsed back with the
// strict reader (ParseSafetensors) and each tensor's bytes compared.
Status WriteSafetensors(const std::string& path, std::vector<SafetensorsTensorData> tensors,
                        const std::vector<std::pair<std::string, std::string>>& metadata = {});

}  // namespace ckptguard

#endif  // CKPTGUARD_SAFETENSORS_WRITER_H_

// Torch storage type names (the GLOBALs `torch.FloatStorage`, ...) and the
// element sizes of their records, as formats.md lists them.
#ifndef CKPTGUARD_STORAGE_TYPES_H_
#define CKPTGUARD_STORAGE_TYPES_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct StorageType {
  std::string_view name;   // "FloatStorage"
  std::string_view dtype;  // "float32", as torch prints it without "torch."
  uint32_t elem_size;      // bytes per element of the record
};

// FindStorageType looks up a storage class name of module `torch` (the name
// only, e.g. "FloatStorage"; "UntypedStorage" counts bytes). nullopt for any
// other name.
std::optional<StorageType> FindStorageType(std::string_view name);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_STORAGE_TYPES_H_

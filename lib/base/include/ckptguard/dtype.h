// DType: the element types of tensors ckptguard loads, with their names as
// torch prints them ("float32", "bfloat16", "quint8") and their sizes.
#ifndef CKPTGUARD_DTYPE_H_
#define CKPTGUARD_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace ckptguard {

enum class DType : uint8_t {
  kFloat32, kFloat64, kFloat16, kBFloat16,
  kInt8, kUInt8, kInt16, kInt32, kInt64,
  kUInt16, kUInt32, kUInt64,
  kBool, kComplex64, kComplex128,
  kFloat8E5M2, kFloat8E4M3FN,
  kQInt8, kQUInt8, kQInt32,
};

// DTypeName: "float32", ... as torch prints str(dtype) without "torch.".
std::string_view DTypeName(DType dtype);
// ParseDType is the inverse of DTypeName.
std::optional<DType> ParseDType(std::string_view name);
// DTypeSize: bytes per element.
uint32_t DTypeSize(DType dtype);
// DTypeSwapUnit: the size of the scalars a byte swap reverses (complex types
// swap each half; one-byte types never swap).
uint32_t DTypeSwapUnit(DType dtype);
// DTypeFromNumpy maps numpy's dtype.kind ('f', 'i', 'u', 'b', 'c') and
// itemsize to the element type; nullopt for what ckptguard does not load
// (datetimes, strings, void, object, long double...).
std::optional<DType> DTypeFromNumpy(char kind, uint64_t item_size);

}  // namespace ckptguard

#endif  // CKPTGUARD_DTYPE_H_

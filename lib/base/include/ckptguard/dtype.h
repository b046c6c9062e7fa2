// DType: the element types of tensors ckptguard loads, with their names as
// torch prints them ("float32", "bfloat16", "quint8") and their sizes.
#ifndef CKPTGUARD_DTYPE_H_
#define CKPTGUARD_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

enum class DType : uint8_t {
  kFloat32, kFloat64, kFloat16, kBFloat16,
  kInt8, kUInt8, kInt16, kInt32, kInt64,
  kUInt16, kUInt32, kUInt64,
  kBool, kComplex64, kComplex128,
  kFloat8E5M2, kFloat8E4M3FN,
  kQInt8, kQUInt8, kQInt32,
  // torch 2.x's newer dtypes (torch.storage._new_dtypes: written only as
  // UntypedStorage + _rebuild_tensor_v3). The sub-byte ones hold one value
  // (uint1..7, int1..7) or a packed pair/quad/octet (float4_e2m1fn_x2,
  // bits1x8, bits2x4, bits4x2) per byte; their element size is 1.
  kFloat8E5M2FNUZ, kFloat8E4M3FNUZ, kFloat8E8M0FNU, kFloat4E2M1FNx2, kComplex32,
  kBits8, kBits16, kBits1x8, kBits2x4, kBits4x2,
  kUInt1, kUInt2, kUInt3, kUInt4, kUInt5, kUInt6, kUInt7,
  kInt1, kInt2, kInt3, kInt4, kInt5, kInt6, kInt7,
  // Packed quantized integers (torch.quint4x2, torch.quint2x4): a tensor's
  // shape counts 4-bit or 2-bit values, its storage's bytes hold two or four
  // of them, low bits first (DTypeValuesPerByte).
  kQUInt4x2, kQUInt2x4,
};

// DTypeName: "float32", ... as torch prints str(dtype) without "torch.".
std::string_view DTypeName(DType dtype);
// ParseDType is the inverse of DTypeName.
std::optional<DType> ParseDType(std::string_view name);
// DTypeSize: bytes per element.
uint32_t DTypeSize(DType dtype);
// DTypeValuesPerByte: how many of a tensor's elements one storage byte
// holds: 2 for quint4x2, 4 for quint2x4 (whose tensors count packed values
// while their storages count bytes), 1 for every other dtype (whose element
// is DTypeSize bytes, even the x2/x4/x8 ones torch counts as one element).
uint32_t DTypeValuesPerByte(DType dtype);
// DTypePackedBytes: the bytes `values` contiguous elements of a packed
// dtype take (rounded up to a whole byte); values x DTypeSize otherwise.
// Saturates at UINT64_MAX.
uint64_t DTypePackedBytes(DType dtype, uint64_t values);
// DTypeIsComplex: complex32, complex64, complex128 (two scalars per element).
bool DTypeIsComplex(DType dtype);
// DTypeIsQuantized: the integer representations of quantized tensors
// (quint8, qint8, qint32, quint4x2, quint2x4).
bool DTypeIsQuantized(DType dtype);
// DTypeSwapUnit: the size of the scalars a byte swap reverses (complex types
// swap each half; one-byte types never swap).
uint32_t DTypeSwapUnit(DType dtype);
// DTypeFromNumpy maps numpy's dtype.kind ('f', 'i', 'u', 'b', 'c') and
// itemsize to the element type; nullopt for what ckptguard does not load
// (datetimes, strings, void, object, long double...).
std::optional<DType> DTypeFromNumpy(char kind, uint64_t item_size);
// DTypeToNumpy is the inverse: numpy's kind and itemsize of `dtype`; nullopt
// for the element types numpy lacks (bfloat16, float8_*, quantized...).
struct NumpyKind {
  char kind;
  uint32_t item_size;
};
std::optional<NumpyKind> DTypeToNumpy(DType dtype);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_DTYPE_H_

#include "ckptguard/dtype.h"

#include <array>

namespace ckptguard {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  uint32_t size;
  uint32_t swap_unit;
};

constexpr std::array<DTypeInfo, 46> kDTypes = {{
    {DType::kFloat32, "float32", 4, 4},      {DType::kFloat64, "float64", 8, 8},
    {DType::kFloat16, "float16", 2, 2},      {DType::kBFloat16, "bfloat16", 2, 2},
    {DType::kInt8, "int8", 1, 1},            {DType::kUInt8, "uint8", 1, 1},
    {DType::kInt16, "int16", 2, 2},          {DType::kInt32, "int32", 4, 4},
    {DType::kInt64, "int64", 8, 8},          {DType::kUInt16, "uint16", 2, 2},
    {DType::kUInt32, "uint32", 4, 4},        {DType::kUInt64, "uint64", 8, 8},
    {DType::kBool, "bool", 1, 1},            {DType::kComplex64, "complex64", 8, 4},
    {DType::kComplex128, "complex128", 16, 8}, {DType::kFloat8E5M2, "float8_e5m2", 1, 1},
    {DType::kFloat8E4M3FN, "float8_e4m3fn", 1, 1}, {DType::kQInt8, "qint8", 1, 1},
    {DType::kQUInt8, "quint8", 1, 1},        {DType::kQInt32, "qint32", 4, 4},
    {DType::kFloat8E5M2FNUZ, "float8_e5m2fnuz", 1, 1}, {DType::kFloat8E4M3FNUZ, "float8_e4m3fnuz", 1, 1},
    {DType::kFloat8E8M0FNU, "float8_e8m0fnu", 1, 1}, {DType::kFloat4E2M1FNx2, "float4_e2m1fn_x2", 1, 1},
    {DType::kComplex32, "complex32", 4, 2},  {DType::kBits8, "bits8", 1, 1},
    {DType::kBits16, "bits16", 2, 2},        {DType::kBits1x8, "bits1x8", 1, 1},
    {DType::kBits2x4, "bits2x4", 1, 1},      {DType::kBits4x2, "bits4x2", 1, 1},
    {DType::kUInt1, "uint1", 1, 1},          {DType::kUInt2, "uint2", 1, 1},
    {DType::kUInt3, "uint3", 1, 1},          {DType::kUInt4, "uint4", 1, 1},
    {DType::kUInt5, "uint5", 1, 1},          {DType::kUInt6, "uint6", 1, 1},
    {DType::kUInt7, "uint7", 1, 1},          {DType::kInt1, "int1", 1, 1},
    {DType::kInt2, "int2", 1, 1},            {DType::kInt3, "int3", 1, 1},
    {DType::kInt4, "int4", 1, 1},            {DType::kInt5, "int5", 1, 1},
    {DType::kInt6, "int6", 1, 1},            {DType::kInt7, "int7", 1, 1},
    {DType::kQUInt4x2, "quint4x2", 1, 1},    {DType::kQUInt2x4, "quint2x4", 1, 1},
}};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

}  // namespace

std::string_view DTypeName(DType dtype) { return Info(dtype).name; }
uint32_t DTypeSize(DType dtype) { return Info(dtype).size; }
uint32_t DTypeSwapUnit(DType dtype) { return Info(dtype).swap_unit; }

bool DTypeIsComplex(DType dtype) {
  return dtype == DType::kComplex32 || dtype == DType::kComplex64 || dtype == DType::kComplex128;
}

bool DTypeIsQuantized(DType dtype) {
  switch (dtype) {
    case DType::kQUInt8: case DType::kQInt8: case DType::kQInt32: case DType::kQUInt4x2: case DType::kQUInt2x4:
      return true;
    default:
      return false;
  }
}

uint32_t DTypeValuesPerByte(DType dtype) {
  switch (dtype) {
    case DType::kQUInt4x2: return 2;
    case DType::kQUInt2x4: return 4;
    default: return 1;
  }
}

uint64_t DTypePackedBytes(DType dtype, uint64_t values) {
  const uint64_t per_byte = DTypeValuesPerByte(dtype);
  if (per_byte > 1) return values / per_byte + (values % per_byte != 0 ? 1 : 0);
  const uint64_t size = DTypeSize(dtype);
  return values > UINT64_MAX / size ? UINT64_MAX : values * size;
}

std::optional<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

namespace {
// numpy's dtype.kind and itemsize of the element types numpy has.
constexpr struct {
  char kind;
  uint32_t size;
  DType dtype;
} kNumpyKinds[] = {
    {'f', 8, DType::kFloat64}, {'f', 4, DType::kFloat32}, {'f', 2, DType::kFloat16},
    {'i', 8, DType::kInt64},   {'i', 4, DType::kInt32},   {'i', 2, DType::kInt16},
    {'i', 1, DType::kInt8},    {'u', 8, DType::kUInt64},  {'u', 4, DType::kUInt32},
    {'u', 2, DType::kUInt16},  {'u', 1, DType::kUInt8},   {'b', 1, DType::kBool},
    {'c', 8, DType::kComplex64}, {'c', 16, DType::kComplex128},
};
}  // namespace

std::optional<DType> DTypeFromNumpy(char kind, uint64_t item_size) {
  for (const auto& m : kNumpyKinds) {
    if (m.kind == kind && m.size == item_size) return m.dtype;
  }
  return std::nullopt;
}

std::optional<NumpyKind> DTypeToNumpy(DType dtype) {
  for (const auto& m : kNumpyKinds) {
    if (m.dtype == dtype) return NumpyKind{m.kind, m.size};
  }
  return std::nullopt;
}

}  // namespace ckptguard

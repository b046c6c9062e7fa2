#include "ckptguard/storage_types.h"

namespace ckptguard {
namespace {

constexpr StorageType kStorageTypes[] = {
    {"DoubleStorage", "float64", 8},       {"FloatStorage", "float32", 4},
    {"HalfStorage", "float16", 2},         {"BFloat16Storage", "bfloat16", 2},
    {"LongStorage", "int64", 8},           {"IntStorage", "int32", 4},
    {"ShortStorage", "int16", 2},          {"CharStorage", "int8", 1},
    {"ByteStorage", "uint8", 1},           {"BoolStorage", "bool", 1},
    {"ComplexFloatStorage", "complex64", 8}, {"ComplexDoubleStorage", "complex128", 16},
    {"QInt8Storage", "qint8", 1},          {"QUInt8Storage", "quint8", 1},
    {"QInt32Storage", "qint32", 4},        {"QUInt4x2Storage", "quint4x2", 1},
    {"QUInt2x4Storage", "quint2x4", 1},    {"UntypedStorage", "uint8", 1},
};

}  // namespace

std::optional<StorageType> FindStorageType(std::string_view name) {
  for (const StorageType& type : kStorageTypes) {
    if (type.name == name) return type;
  }
  return std::nullopt;
}

}  // namespace ckptguard

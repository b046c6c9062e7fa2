#include "ckptguard/safetensors_writer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "ckptguard/atomic_file.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/safetensors_reader.h"
#include "py_text.h"

namespace ckptguard {
namespace {

// The reference's Dtype enum (safetensors/src/tensor.rs, "MUST be in
// increasing alignment order") in declaration order, which is its derived Ord
// and so the sort key of its serializer: BOOL, F4, F6_E2M3, F6_E3M2, U8, I8,
// F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64,
// I64, U64 (the sub-byte and E8M0 types have no DType here; leaving them out
// keeps the relative order of the rest).
constexpr std::array<std::pair<DType, std::string_view>, 17> kNames = {{
    {DType::kBool, "BOOL"},        {DType::kUInt8, "U8"},       {DType::kInt8, "I8"},
    {DType::kFloat8E5M2, "F8_E5M2"}, {DType::kFloat8E4M3FN, "F8_E4M3"}, {DType::kFloat8E8M0FNU, "F8_E8M0"},
    {DType::kInt16, "I16"},
    {DType::kUInt16, "U16"},       {DType::kFloat16, "F16"},    {DType::kBFloat16, "BF16"},
    {DType::kInt32, "I32"},        {DType::kUInt32, "U32"},     {DType::kFloat32, "F32"},
    {DType::kComplex64, "C64"},    {DType::kFloat64, "F64"},    {DType::kInt64, "I64"},
    {DType::kUInt64, "U64"},
}};

int Rank(DType dtype) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i].first == dtype) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

std::optional<std::string_view> SafetensorsDTypeName(DType dtype) {
  const int rank = Rank(dtype);
  if (rank < 0) return std::nullopt;
  return kNames[static_cast<size_t>(rank)].second;
}

Result<std::string> SafetensorsHeader(std::vector<SafetensorsTensorData>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata) {
  std::set<std::string_view> names;
  for (const SafetensorsTensorData& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || py::Utf8Error(t.name, false)) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "tensor name '" + t.name + "' cannot be a safetensors key");
    }
    if (!names.insert(t.name).second) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "two tensors named '" + t.name + "'");
    }
    if (!SafetensorsDTypeName(t.dtype)) {
      return MakeError(ErrorCode::kUnsupportedFormat, 0,
                       "tensor '" + t.name + "': safetensors has no " + std::string(DTypeName(t.dtype)) + " dtype");
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return MakeError(ErrorCode::kInvalidArgument, 0, "tensor '" + t.name + "': bad shape");
      }
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, uint64_t{DTypeSize(t.dtype)}, &bytes) || bytes != t.data.size()) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "tensor '" + t.name + "': " + std::to_string(t.data.size()) + " bytes of data for " +
                           std::to_string(numel) + " elements of " + std::string(DTypeName(t.dtype)));
    }
  }
  std::set<std::string_view> keys;
  for (const auto& [k, v] : metadata) {
    if (py::Utf8Error(k, false) || py::Utf8Error(v, false)) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "metadata entry '" + k + "' is not valid UTF-8");
    }
    if (!keys.insert(k).second) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "two metadata entries named '" + k + "'");
    }
  }
  // The reference (safetensors' prepare()) sorts by dtype, descending in the
  // enum order above (larger alignment first), then by name (byte order).
  std::sort(tensors.begin(), tensors.end(), [](const SafetensorsTensorData& a, const SafetensorsTensorData& b) {
    const int ra = Rank(a.dtype), rb = Rank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const SafetensorsTensorData& t : tensors) {
    header[t.name] = {{"dtype", std::string(*SafetensorsDTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

Result<std::string> SafetensorsBytes(std::vector<SafetensorsTensorData> tensors,
                                     const std::vector<std::pair<std::string, std::string>>& metadata) {
  CKG_ASSIGN_OR_RETURN(std::string out, SafetensorsHeader(tensors, metadata));
  for (const SafetensorsTensorData& t : tensors) out.append(AsStringView(t.data));
  return out;
}

Status WriteSafetensors(const std::string& path, std::vector<SafetensorsTensorData> tensors,
                        const std::vector<std::pair<std::string, std::string>>& metadata) {
  CKG_ASSIGN_OR_RETURN(const std::string header, SafetensorsHeader(tensors, metadata));
  CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  CKG_TRY(file.Write(AsBytes(header)));
  for (const SafetensorsTensorData& t : tensors) CKG_TRY(file.Write(t.data));
  // Read back what reached the temporary file and check it before it
  // replaces anything.
  CKG_ASSIGN_OR_RETURN(MappedFile written, MappedFile::Open(file.temp_path()));
  Result<SafetensorsFile> parsed = ParseSafetensors(written.data());
  if (!parsed) {
    Error e = parsed.error();
    e.detail = "the written file does not read back: " + e.detail;
    return std::unexpected(std::move(e));
  }
  if (parsed->tensors.size() != tensors.size()) {
    return MakeError(ErrorCode::kIo, 0, "the written file holds another number of tensors", path);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensorData& t = tensors[i];
    const SafetensorsTensor& r = parsed->tensors[i];
    const Bytes data = written.data().subspan(static_cast<size_t>(r.file_offset), static_cast<size_t>(r.end - r.begin));
    if (r.name != t.name || data.size() != t.data.size() ||
        (!data.empty() && std::memcmp(data.data(), t.data.data(), data.size()) != 0)) {
      return MakeError(ErrorCode::kIo, r.file_offset, "the written file reads back different bytes for '" + t.name + "'",
                       path);
    }
  }
  return file.Commit();
}

}  // namespace ckptguard

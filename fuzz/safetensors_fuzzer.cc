// Fuzz target for ParseSafetensors (lib/safetensors_reader.h) and, on what it
// accepts, the writer (lib/safetensors_writer.h).
//
// Invariants checked (abort on violation):
//  * never a kInternal error; an error offset lies within the input;
//  * on success: data_offset = 8 + header_len <= size; every tensor's
//    [file_offset, file_offset + end - begin) lies inside the data, with
//    file_offset = data_offset + begin; end - begin = product(shape) x
//    elem_bits / 8, elem_bits = SafetensorsDtypeBits(dtype); sorted by begin,
//    the tensors tile the data exactly (no gap, no overlap, nothing after);
//    each key's header_offset lies inside the header; anomaly offsets lie in
//    the input;
//  * round trip: when every dtype is one the writer has and no name is empty
//    (the writer refuses "", a name no state dict has), SafetensorsBytes of
//    the parsed tensors (same names, dtypes, shapes, bytes, metadata) parses
//    again, with no anomaly, to the same tensors, bytes and metadata;
//  * parsing is deterministic (two parses give the same tensors).
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/safetensors_reader.h"
#include "ckptguard/safetensors_writer.h"
#include "fuzz_check.h"

namespace {

using ckptguard::Bytes;
using ckptguard::ErrorCode;
using ckptguard::Result;
using ckptguard::SafetensorsFile;
using ckptguard::SafetensorsTensor;
using ckptguard::fuzz::Check;

ckptguard::SafetensorsLimits Limits() {
  ckptguard::SafetensorsLimits limits;
  limits.max_header_len = 1 << 20;
  limits.max_tensors = 1 << 12;
  limits.max_rank = 64;
  limits.max_metadata_entries = 1 << 12;
  return limits;
}

// The writer's dtypes, by safetensors name (the reference's names that have
// a torch dtype; F4, F6_*, F8_E8M0 have none).
std::optional<ckptguard::DType> WriterDType(std::string_view name) {
  for (ckptguard::DType d : {ckptguard::DType::kFloat64, ckptguard::DType::kFloat32, ckptguard::DType::kFloat16,
                             ckptguard::DType::kBFloat16, ckptguard::DType::kInt64, ckptguard::DType::kInt32,
                             ckptguard::DType::kInt16, ckptguard::DType::kInt8, ckptguard::DType::kUInt64,
                             ckptguard::DType::kUInt32, ckptguard::DType::kUInt16, ckptguard::DType::kUInt8,
                             ckptguard::DType::kBool, ckptguard::DType::kComplex64, ckptguard::DType::kFloat8E5M2,
                             ckptguard::DType::kFloat8E4M3FN}) {
    std::optional<std::string_view> n = ckptguard::SafetensorsDTypeName(d);
    if (n && *n == name) return d;
  }
  return std::nullopt;
}

bool SameTensor(const SafetensorsTensor& a, const SafetensorsTensor& b) {
  return a.name == b.name && a.dtype == b.dtype && a.elem_bits == b.elem_bits && a.shape == b.shape &&
         a.begin == b.begin && a.end == b.end && a.file_offset == b.file_offset && a.header_offset == b.header_offset;
}

void CheckParsed(const SafetensorsFile& f, size_t size) {
  Check(f.data_offset == 8 + f.header_len, "data_offset is 8 + header_len");
  Check(f.data_offset <= size, "the data starts inside the input");
  const uint64_t data_len = size - f.data_offset;
  std::vector<const SafetensorsTensor*> by_begin;
  for (const SafetensorsTensor& t : f.tensors) {
    Check(t.begin <= t.end && t.end <= data_len, "tensor [begin, end) inside the data", t.name);
    Check(t.file_offset == f.data_offset + t.begin, "file_offset is data_offset + begin", t.name);
    Check(t.header_offset >= 8 && t.header_offset < f.data_offset, "key offset inside the header", t.name);
    std::optional<uint32_t> bits = ckptguard::SafetensorsDtypeBits(t.dtype);
    Check(bits.has_value() && *bits == t.elem_bits, "elem_bits is the dtype's", t.name);
    uint64_t n = t.elem_bits;
    bool overflow = false, zero = false;
    for (uint64_t d : t.shape) {
      zero = zero || d == 0;
      overflow = __builtin_mul_overflow(n, d, &n) || overflow;
    }
    if (zero) {
      n = 0;
      overflow = false;
    }
    Check(!overflow && n % 8 == 0 && n / 8 == t.end - t.begin, "end - begin is the shape's byte size", t.name);
    by_begin.push_back(&t);
  }
  std::stable_sort(by_begin.begin(), by_begin.end(),
                   [](const SafetensorsTensor* a, const SafetensorsTensor* b) { return a->begin < b->begin; });
  uint64_t pos = 0;
  for (const SafetensorsTensor* t : by_begin) {
    Check(t->begin == pos, "tensors tile the data (no gap, no overlap)", t->name);
    pos = t->end;
  }
  Check(pos == data_len, "nothing after the last tensor");
  for (const auto& a : f.anomalies) Check(a.offset <= size, "anomaly offset inside the input", a.kind);
}

void RoundTrip(const SafetensorsFile& f, Bytes input) {
  std::vector<ckptguard::SafetensorsTensorData> tensors;
  for (const SafetensorsTensor& t : f.tensors) {
    std::optional<ckptguard::DType> dtype = WriterDType(t.dtype);
    if (!dtype) return;  // a dtype the writer cannot hold
    // The format allows an empty tensor name; the writer refuses one on
    // purpose (no state-dict key is empty: torch's register_parameter and
    // register_buffer refuse "" too). Found by the hour-long run:
    // fuzz/regressions/safetensors/empty-tensor-name.safetensors.
    if (t.name.empty()) return;
    ckptguard::SafetensorsTensorData d;
    d.name = t.name;
    d.dtype = *dtype;
    for (uint64_t s : t.shape) {
      if (s > static_cast<uint64_t>(INT64_MAX)) return;
      d.shape.push_back(static_cast<int64_t>(s));
    }
    d.data = input.subspan(t.file_offset, t.end - t.begin);
    tensors.push_back(std::move(d));
  }
  Result<std::string> written = ckptguard::SafetensorsBytes(tensors, f.metadata);
  Check(written.has_value(), "the writer writes what the reader read", written ? "" : written.error().ToString());
  const Bytes out(reinterpret_cast<const uint8_t*>(written->data()), written->size());
  Result<SafetensorsFile> again = ckptguard::ParseSafetensors(out, Limits());
  Check(again.has_value(), "the reader reads what the writer wrote", again ? "" : again.error().ToString());
  Check(again->anomalies.empty(), "the writer's file has no anomaly", again->anomalies.empty() ? "" : again->anomalies[0].kind);
  Check(again->metadata == f.metadata, "metadata round-trips");
  Check(again->tensors.size() == f.tensors.size(), "tensor count round-trips");
  std::map<std::string, const SafetensorsTensor*> by_name;
  for (const SafetensorsTensor& t : again->tensors) by_name[t.name] = &t;
  Check(by_name.size() == f.tensors.size(), "names stay unique");
  for (const SafetensorsTensor& t : f.tensors) {
    auto it = by_name.find(t.name);
    Check(it != by_name.end(), "every tensor round-trips", t.name);
    const SafetensorsTensor& u = *it->second;
    Check(u.dtype == t.dtype && u.shape == t.shape, "dtype and shape round-trip", t.name);
    Check(u.end - u.begin == t.end - t.begin, "byte size round-trips", t.name);
    Check(std::equal(out.begin() + static_cast<ptrdiff_t>(u.file_offset),
                     out.begin() + static_cast<ptrdiff_t>(u.file_offset + (u.end - u.begin)),
                     input.begin() + static_cast<ptrdiff_t>(t.file_offset)),
          "tensor bytes round-trip", t.name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes input(data, size);
  Result<SafetensorsFile> parsed = ckptguard::ParseSafetensors(input, Limits());
  if (!parsed) {
    Check(parsed.error().code != ErrorCode::kInternal, "never kInternal", parsed.error().ToString());
    Check(parsed.error().offset <= size, "error offset inside the input", parsed.error().ToString());
    return 0;
  }
  CheckParsed(*parsed, size);
  Result<SafetensorsFile> twice = ckptguard::ParseSafetensors(input, Limits());
  Check(twice.has_value() && twice->tensors.size() == parsed->tensors.size() && twice->metadata == parsed->metadata,
        "parsing is deterministic");
  for (size_t i = 0; i < parsed->tensors.size(); ++i) {
    Check(SameTensor(parsed->tensors[i], twice->tensors[i]), "parsing is deterministic", parsed->tensors[i].name);
  }
  RoundTrip(*parsed, input);
  return 0;
}

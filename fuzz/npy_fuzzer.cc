// Fuzz target for ParseNpy (lib/npy_reader.h).
//
// Invariants checked (abort on violation):
//  * never a kInternal error; an error offset lies within the input;
//  * on success: data_offset = 10 + header_len (1.0) or 12 + header_len
//    (2.0, 3.0) and lies inside the input; num_elements = product(shape);
//    rank <= max_rank; a plain array has data_len = num_elements x
//    item_size, item_size > 0 unless the dtype is flexible (S, U, V: '<U0'
//    is valid), and data_offset + data_len <= size; an
//    object or structured array has data_len 0 (an object array at least one
//    pickle byte; a structured one an item_size below 2^31); anomaly offsets
//    lie inside the input;
//  * base_offset shifts every offset and nothing else: parsing with
//    base_offset 1000 gives the same result (or error code and detail) with
//    offsets + 1000;
//  * parsing is deterministic.
#include <cstdint>
#include <string>

#include "ckptguard/error.h"
#include "fuzz_limits.h"
#include "ckptguard/npy_reader.h"
#include "fuzz_check.h"

namespace {

using ckptguard::Bytes;
using ckptguard::ErrorCode;
using ckptguard::NpyArray;
using ckptguard::Result;
using ckptguard::fuzz::Check;

constexpr uint64_t kBase = 1000;

ckptguard::NpyLimits Limits() {
  ckptguard::NpyLimits limits;
  if (ckptguard::fuzz::kDefaultLimits) return limits;
  limits.max_header_len = 1 << 16;
  limits.max_rank = 64;
  limits.max_descr_depth = 32;
  return limits;
}

void CheckSameShifted(const NpyArray& a, const NpyArray& b, uint64_t shift) {
  Check(a.major == b.major && a.minor == b.minor && a.header_len == b.header_len &&
            a.data_offset + shift == b.data_offset && a.descr == b.descr && a.byte_order == b.byte_order &&
            a.kind == b.kind && a.item_size == b.item_size && a.fortran_order == b.fortran_order &&
            a.shape == b.shape && a.num_elements == b.num_elements && a.is_object == b.is_object &&
            a.structured == b.structured && a.data_len == b.data_len,
        "same header at another base offset");
  Check(a.anomalies.size() == b.anomalies.size(), "same anomalies at another base offset");
  for (size_t i = 0; i < a.anomalies.size(); ++i) {
    Check(a.anomalies[i].kind == b.anomalies[i].kind && a.anomalies[i].offset + shift == b.anomalies[i].offset,
          "anomaly offsets shift with the base offset", a.anomalies[i].kind);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes input(data, size);
  const Result<NpyArray> parsed = ckptguard::ParseNpy(input, Limits());
  const Result<NpyArray> shifted = ckptguard::ParseNpy(input, Limits(), kBase);
  Check(parsed.has_value() == shifted.has_value(), "the base offset does not change success");
  if (!parsed) {
    const ckptguard::Error& e = parsed.error();
    Check(e.code != ErrorCode::kInternal, "never kInternal", e.ToString());
    Check(e.offset <= size, "error offset inside the input", e.ToString());
    const ckptguard::Error& s = shifted.error();
    Check(s.code == e.code && s.offset == e.offset + kBase, "error offsets shift with the base offset",
          e.ToString() + " vs " + s.ToString());
    return 0;
  }
  const NpyArray& a = *parsed;
  Check(a.data_offset == (a.major == 1 ? 10 : 12) + a.header_len, "data_offset follows the header");
  Check(a.data_offset <= size, "the data starts inside the input");
  Check(a.shape.size() <= Limits().max_rank, "rank within the limit");
  uint64_t n = 1;
  for (uint64_t d : a.shape) n *= d;  // ParseNpy refuses overflow
  Check(n == a.num_elements, "num_elements is the product of the shape");
  if (a.is_object) {
    // A dtype the interpreter could not work out (object_unsure) may hold
    // plain data, or none at all; an array of objects has pickle bytes.
    Check(a.data_len == 0 && (a.data_offset < size || a.object_unsure),
          "an object array has pickle bytes and no data_len");
  } else if (a.structured) {
    Check(a.data_len == 0, "a structured array has no data_len (its loader checks the data)");
    Check(a.item_size <= 0x7fffffffu, "a structured itemsize fits numpy's C int");
  } else {
    // Flexible dtypes may have size 0 ('<U0', '|S0', '|V0'); numpy reads them.
    Check(a.item_size > 0 || a.kind == 'S' || a.kind == 'U' || a.kind == 'V', "a plain array has an item size",
          a.descr);
    Check(a.data_len == a.num_elements * a.item_size, "data_len is num_elements x item_size");
    Check(a.data_len <= size - a.data_offset, "the data lies inside the input");
  }
  for (const auto& an : a.anomalies) Check(an.offset <= size, "anomaly offset inside the input", an.kind);
  CheckSameShifted(a, *shifted, kBase);
  const Result<NpyArray> again = ckptguard::ParseNpy(input, Limits());
  Check(again.has_value(), "parsing is deterministic");
  CheckSameShifted(a, *again, 0);
  return 0;
}

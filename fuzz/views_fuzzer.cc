// Fuzz target for the other readers' views (lib/formats/src): Unwrap of every
// wrapper as Python's readers read them, ReadArchive (tar, 7z through
// libarchive), PythonUnpicklerView (pickle._Unpickler's FRAME handling) and
// ReadJoblibView (joblib's inline arrays). The first input byte picks the
// reader; the rest is its input.
//
// Invariants checked (abort on violation):
//  * never a kInternal error; error offsets (returned, or the stop of a
//    decoded prefix) lie within the input; trailing data lies within it;
//  * a decompressed prefix stays within max_len and the budget's bounds;
//  * the pure-Python and joblib views only drop bytes: they are never longer
//    than the input, and object-array pickles start inside it;
//  * every reader is deterministic.
#include <cstdint>
#include <string>

#include "archive_reader.h"
#include "ckptguard/budget.h"
#include "ckptguard/error.h"
#include "fuzz_check.h"
#include "fuzz_limits.h"
#include "joblib_view.h"
#include "pickle_views.h"
#include "unwrap.h"

namespace {

using ckptguard::Budget;
using ckptguard::Bytes;
using ckptguard::ErrorCode;
using ckptguard::fuzz::Check;

constexpr uint64_t kMaxLen = uint64_t{1} << 22;

void CheckError(const ckptguard::Error& e, uint64_t size) {
  Check(e.code != ErrorCode::kInternal, "no internal error", e.ToString());
  Check(e.offset <= size, "error offset within the input", e.ToString());
}

void RunUnwrap(ckptguard::Wrapper wrapper, Bytes input) {
  Budget budget;
  budget.SetFileSize(input.size());
  auto r = ckptguard::Unwrap(wrapper, input, kMaxLen, 1100, &budget);
  if (!r) {
    CheckError(r.error(), input.size());
    return;
  }
  Check(r->data.size() <= kMaxLen, "decompressed within max_len");
  Check(r->trailing_offset <= input.size() && r->trailing_len <= input.size() - r->trailing_offset,
        "trailing data within the input");
  if (r->error) CheckError(*r->error, input.size());
  Budget again;
  again.SetFileSize(input.size());
  auto r2 = ckptguard::Unwrap(wrapper, input, kMaxLen, 1100, &again);
  Check(r2 && r2->data == r->data, "unwrap is deterministic");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t pick = data[0] % 8;
  const Bytes input(data + 1, size - 1);
  const ckptguard::PickleLimits limits = ckptguard::fuzz::SmallPickleLimits();
  switch (pick) {
    case 0: RunUnwrap(ckptguard::Wrapper::kGzip, input); break;
    case 1: RunUnwrap(ckptguard::Wrapper::kBzip2, input); break;
    case 2: RunUnwrap(ckptguard::Wrapper::kXz, input); break;
    case 3: RunUnwrap(ckptguard::Wrapper::kZlib, input); break;
    case 4:
      RunUnwrap((data[0] & 0x80) != 0 ? ckptguard::Wrapper::kJoblibZf : ckptguard::Wrapper::kLzmaAlone, input);
      break;
    case 5: {
      Budget budget;
      budget.SetFileSize(input.size());
      const auto kind = (data[0] & 0x80) != 0 ? ckptguard::ArchiveKind::kSevenZip : ckptguard::ArchiveKind::kTar;
      auto r = ckptguard::ReadArchive(input, kind, 64, kMaxLen, 1100, budget);
      if (!r) {
        CheckError(r.error(), input.size());
      } else if (r->error) {
        Check(r->error->code != ErrorCode::kInternal, "no internal error", r->error->ToString());
      }
      break;
    }
    case 6: {
      Budget budget;
      budget.SetFileSize(input.size());
      auto r = ckptguard::PythonUnpicklerView(input, 0, 0, limits, budget, "fuzz");
      if (!r) {
        CheckError(r.error(), input.size());
      } else if (*r) {
        Check((*r)->bytes.size() <= input.size(), "the unframed view only drops bytes");
        Check((*r)->frame_offset < input.size(), "the parting FRAME lies in the input");
      }
      Budget again;
      again.SetFileSize(input.size());
      auto r2 = ckptguard::PythonUnpicklerView(input, 0, 0, limits, again, "fuzz");
      Check(r.has_value() == r2.has_value() && (!r || r->has_value() == r2->has_value()) &&
                (!r || !*r || (*r)->bytes == (*r2)->bytes),
            "the unframed view is deterministic");
      break;
    }
    case 7: {
      Budget budget;
      budget.SetFileSize(input.size());
      auto r = ckptguard::ReadJoblibView(input, 0, limits, budget, "fuzz");
      if (!r) {
        CheckError(r.error(), input.size());
      } else if (*r) {
        Check((*r)->bytes.size() <= input.size(), "the joblib view only drops bytes");
        for (uint64_t at : (*r)->object_pickles) Check(at <= input.size(), "object pickles start in the input");
      }
      break;
    }
  }
  return 0;
}

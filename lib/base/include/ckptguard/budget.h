// Budget: one allowance of work per file, charged by every stage that reads it.
//
// Per-parser limits bound each parser alone, and small hostile files multiply
// them: a zip whose central directory names one member many times, archives in
// archives, a pickle that makes the memo or a view grow. A Budget is created
// once per file (LoadCheckpoint, ScanFile, a registry push) and handed to
// every stage: unwrapping and inflating, containers, each pickle's decoder and
// machine, the walks over what the machine built, hashing and copying views.
// Each charge adds to a running total; the first total to pass its limit fails
// the charge with kLimitExceeded naming the limit (Error::limit), and the stage
// stops. Nothing here measures time: the same file gives the same answer on any
// machine.
//
// Not thread-safe: one file is read by one thread. Copying a Budget copies its
// totals (a fresh Budget per file is the rule).
#ifndef CKPTGUARD_BUDGET_H_
#define CKPTGUARD_BUDGET_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// BudgetKind names what a charge counts.
enum class BudgetKind : uint8_t {
  kReadBytes,      // bytes of the file and of inflated data handed to a parser
  kInflatedBytes,  // bytes produced by inflate, gzip, bzip2, xz (all members, all depths)
  kOpcodes,        // pickle opcodes decoded, over every pickle of the file
  kMemoSlots,      // memo slots allocated (a dense slot counts even when unused)
  kValues,         // values built by the VM or the scanner's machine
  kNesting,        // deepest nesting: MARKs, containers in containers, archives in archives
  kViewBytes,      // logical bytes of tensor views hashed, copied or written
};
inline constexpr size_t kNumBudgetKinds = 7;

// BudgetLimitName is the stable name of a kind's limit, as flags and errors
// spell it: "max_read_bytes", "max_inflated_bytes", ...
std::string_view BudgetLimitName(BudgetKind kind);

// BudgetLimits: the allowance of one file. Each field says what it bounds, its
// default and its ceiling (Clamped). The max_* fields are absolute; once the
// file's size is known (Budget::SetFileSize, which OpenContainer calls) the
// limits also scale with the input, so that a small file cannot make work much
// larger than itself while the largest real checkpoints (a 100 GB file of
// 100,000 tensors) pass:
//   inflated bytes      <= inflate_per_file_byte x file size + floor_bytes
//   view bytes          <= views_per_file_byte   x file size + floor_bytes
//   read bytes          <= work_per_input_byte   x input     + floor_bytes
//   opcodes, values,
//   memo slots          <= work_per_input_byte   x input     + floor_count
// where input = file size + bytes inflated so far (a compressed pickle holds
// more opcodes than its file has bytes). Set a ratio to 0 to turn its scaling off.
struct BudgetLimits {
  // Bytes handed to parsers: the file itself and every inflated or unwrapped
  // buffer (each time a stage reads it). Default 2^40 (1 TiB). Ceiling 2^50.
  uint64_t max_read_bytes = uint64_t{1} << 40;
  // Bytes made by decompression, all entries and wrappers of the file at every
  // nesting level together. Default 8 GiB. Ceiling 2^44.
  uint64_t max_inflated_bytes = uint64_t{8} << 30;
  // Pickle opcodes decoded, every pickle of the file together, each time one
  // is decoded. Default 2^28 (a 100,000-tensor state dict decodes ~3.5M).
  // Ceiling 2^36.
  uint64_t max_opcodes = uint64_t{1} << 28;
  // Memo slots allocated, every pickle together. Default 2^24. Ceiling 2^30.
  uint64_t max_memo_slots = uint64_t{1} << 24;
  // Values built, every pickle together. Default 2^25. Ceiling 2^31.
  uint64_t max_values = uint64_t{1} << 25;
  // Deepest nesting of MARKs, containers and archives. Default 10,000.
  // Ceiling 2^20.
  uint64_t max_nesting = 10'000;
  // Logical bytes that tensor views expand to when hashed, copied or written
  // (a stride-0 view of 2^30 elements counts 4 GiB although its storage holds
  // 4 bytes). Default 256 GiB. Ceiling 2^48.
  uint64_t max_view_bytes = uint64_t{256} << 30;

  // Deflate's best ratio is about 1032:1; 1100 lets every honest entry and
  // wrapper through, while entries that share or overlap compressed bytes
  // cannot multiply it. Default 1100. Ceiling 2^20.
  uint64_t inflate_per_file_byte = 1100;
  // Every stage reads the input a few times (container checks, the machine,
  // storage records): 16 passes is far more than any honest file needs.
  // Default 16. Ceiling 2^20.
  uint64_t work_per_input_byte = 16;
  // Views of a storage (tied weights, slices of one buffer) rarely add up to
  // more than a few times the data; stride-0 broadcasts can claim any size.
  // Default 16. Ceiling 2^20.
  uint64_t views_per_file_byte = 16;
  // What a tiny file may always use. Defaults 64 MiB and 2^20. Ceilings 2^40.
  uint64_t floor_bytes = uint64_t{64} << 20;
  uint64_t floor_count = uint64_t{1} << 20;

  BudgetLimits Clamped() const;
  uint64_t Get(BudgetKind kind) const;
  void Set(BudgetKind kind, uint64_t value);
};

class Budget {
 public:
  explicit Budget(const BudgetLimits& limits = {}) : limits_(limits.Clamped()) { Refresh(); }

  // SetFileSize turns on the limits that scale with the input (see
  // BudgetLimits). The first call wins: nested containers do not reset it.
  void SetFileSize(uint64_t file_len);
  bool HasFileSize() const { return file_len_.has_value(); }
  // Limit is the limit in force now for `kind` (absolute, or scaled).
  uint64_t Limit(BudgetKind kind) const;

  // Charge adds `amount` to the total of `kind`. Failure: kLimitExceeded at
  // `offset` in `where`, with Error::limit set to the limit's name and the
  // detail saying the limit, the total it would reach and what was charging.
  // A failed charge leaves the total at the limit (later charges fail too).
  // Inline fast path (a pickle charges per opcode): the limit in force is
  // cached and recomputed only when it can change (SetFileSize, inflation).
  Status Charge(BudgetKind kind, uint64_t amount, uint64_t offset = 0, std::string_view where = {},
                std::string_view what = {}) {
    if (TryCharge(kind, amount)) return OkStatus();
    return ChargeSlow(kind, amount, offset, where, what);
  }
  // TryCharge is Charge's success path alone: it adds `amount` and returns
  // true when Charge would succeed without recomputing a limit, and returns
  // false, changing nothing, otherwise (the caller then calls Charge, which
  // decides and builds the error). The pickle machine's per-opcode charges
  // build no Status on the way.
  bool TryCharge(BudgetKind kind, uint64_t amount) {
    if (CanCharge(kind, amount)) {
      used_[static_cast<size_t>(kind)] += amount;
      return true;
    }
    return false;
  }
  // CanCharge is true when TryCharge(kind, amount) would succeed (a caller
  // that charges two kinds checks both before it charges either).
  bool CanCharge(BudgetKind kind, uint64_t amount) const {
    const size_t k = static_cast<size_t>(kind);
    return amount <= cached_limit_[k] - used_[k] && used_[k] <= cached_limit_[k] && !exhausted_[k] &&
           kind != BudgetKind::kInflatedBytes;
  }
  // Nest raises the current nesting depth to `depth` (MARK depth, archive
  // depth); only the deepest is kept. Same failure as Charge.
  Status Nest(uint64_t depth, uint64_t offset = 0, std::string_view where = {}, std::string_view what = {});

  // TryAbsorb adds the charges of `other`, a budget of the same file that a
  // stage charged on its own (a pickle run beside the container, on another
  // thread), when the totals stay within the limits in force here (the
  // deepest nesting of the two within its limit) and neither budget is
  // exhausted; otherwise it returns false and changes nothing. Totals only
  // grow, so the sums fit exactly when every charge of both, made one after
  // the other on one budget, would have fit.
  bool TryAbsorb(const Budget& other);

  uint64_t used(BudgetKind kind) const { return used_[static_cast<size_t>(kind)]; }
  uint64_t remaining(BudgetKind kind) const;
  const BudgetLimits& limits() const { return limits_; }

 private:
  Status ChargeSlow(BudgetKind kind, uint64_t amount, uint64_t offset, std::string_view where, std::string_view what);
  // Refresh recomputes cached_limit_ from the limits, the file size and the
  // bytes inflated so far.
  void Refresh();
  std::unexpected<Error> Exceeded(BudgetKind kind, uint64_t would_be, uint64_t offset, std::string_view where,
                                  std::string_view what) const;

  BudgetLimits limits_;
  std::array<uint64_t, kNumBudgetKinds> used_{};
  std::array<bool, kNumBudgetKinds> exhausted_{};
  std::array<uint64_t, kNumBudgetKinds> cached_limit_{};
  std::optional<uint64_t> file_len_;
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_BUDGET_H_

#include "ckptguard/budget.h"

#include <algorithm>

namespace ckptguard {
namespace {

struct KindInfo {
  std::string_view name;
  uint64_t BudgetLimits::*field;
  uint64_t ceiling;
};

constexpr std::array<KindInfo, kNumBudgetKinds> kKinds = {{
    {"max_read_bytes", &BudgetLimits::max_read_bytes, uint64_t{1} << 50},
    {"max_inflated_bytes", &BudgetLimits::max_inflated_bytes, uint64_t{1} << 44},
    {"max_opcodes", &BudgetLimits::max_opcodes, uint64_t{1} << 36},
    {"max_memo_slots", &BudgetLimits::max_memo_slots, uint64_t{1} << 30},
    {"max_values", &BudgetLimits::max_values, uint64_t{1} << 31},
    {"max_nesting", &BudgetLimits::max_nesting, uint64_t{1} << 20},
    {"max_view_bytes", &BudgetLimits::max_view_bytes, uint64_t{1} << 48},
}};

const KindInfo& Info(BudgetKind kind) { return kKinds[static_cast<size_t>(kind)]; }

uint64_t SatMul(uint64_t a, uint64_t b) { return (b != 0 && a > UINT64_MAX / b) ? UINT64_MAX : a * b; }
uint64_t SatAdd(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

}  // namespace

std::string_view BudgetLimitName(BudgetKind kind) { return Info(kind).name; }

BudgetLimits BudgetLimits::Clamped() const {
  BudgetLimits out = *this;
  for (const KindInfo& k : kKinds) out.*k.field = std::min(out.*k.field, k.ceiling);
  constexpr uint64_t kRatioCeiling = uint64_t{1} << 20, kFloorCeiling = uint64_t{1} << 40;
  out.inflate_per_file_byte = std::min(out.inflate_per_file_byte, kRatioCeiling);
  out.work_per_input_byte = std::min(out.work_per_input_byte, kRatioCeiling);
  out.views_per_file_byte = std::min(out.views_per_file_byte, kRatioCeiling);
  out.floor_bytes = std::min(out.floor_bytes, kFloorCeiling);
  out.floor_count = std::min(out.floor_count, kFloorCeiling);
  return out;
}

void Budget::SetFileSize(uint64_t file_len) {
  if (!file_len_) file_len_ = file_len;
  Refresh();
}

void Budget::Refresh() {
  for (size_t k = 0; k < kNumBudgetKinds; ++k) cached_limit_[k] = Limit(static_cast<BudgetKind>(k));
}

uint64_t Budget::Limit(BudgetKind kind) const {
  const uint64_t absolute = limits_.Get(kind);
  if (!file_len_) return absolute;
  const uint64_t file = *file_len_;
  const uint64_t input = SatAdd(file, used_[static_cast<size_t>(BudgetKind::kInflatedBytes)]);
  auto scaled = [&](uint64_t ratio, uint64_t base, uint64_t floor) {
    return ratio == 0 ? absolute : std::min(absolute, SatAdd(SatMul(ratio, base), floor));
  };
  switch (kind) {
    case BudgetKind::kInflatedBytes: return scaled(limits_.inflate_per_file_byte, file, limits_.floor_bytes);
    case BudgetKind::kViewBytes: return scaled(limits_.views_per_file_byte, file, limits_.floor_bytes);
    case BudgetKind::kReadBytes: return scaled(limits_.work_per_input_byte, input, limits_.floor_bytes);
    case BudgetKind::kOpcodes:
    case BudgetKind::kValues:
    case BudgetKind::kMemoSlots: return scaled(limits_.work_per_input_byte, input, limits_.floor_count);
    case BudgetKind::kNesting: return absolute;
  }
  return absolute;
}

uint64_t BudgetLimits::Get(BudgetKind kind) const { return this->*Info(kind).field; }

void BudgetLimits::Set(BudgetKind kind, uint64_t value) { this->*Info(kind).field = value; }

uint64_t Budget::remaining(BudgetKind kind) const {
  const uint64_t limit = Limit(kind);
  const uint64_t used = used_[static_cast<size_t>(kind)];
  return used >= limit ? 0 : limit - used;
}

std::unexpected<Error> Budget::Exceeded(BudgetKind kind, uint64_t would_be, uint64_t offset,
                                        std::string_view where, std::string_view what) const {
  const uint64_t limit = Limit(kind);
  std::string detail = "budget limit " + std::string(Info(kind).name) + " (" + std::to_string(limit) + ") exceeded";
  if (limit < limits_.Get(kind)) {
    detail += " (scaled to this file's " + std::to_string(*file_len_) + " bytes; absolute limit " +
              std::to_string(limits_.Get(kind)) + ")";
  }
  if (kind == BudgetKind::kNesting) {
    detail += ": nesting depth " + std::to_string(would_be);
  } else {
    detail += ": the file's total would reach " + std::to_string(would_be);
  }
  if (!what.empty()) detail += " (" + std::string(what) + ")";
  Error e{ErrorCode::kLimitExceeded, offset, std::string(where), std::move(detail), std::string(Info(kind).name)};
  return std::unexpected<Error>(std::move(e));
}

Status Budget::ChargeSlow(BudgetKind kind, uint64_t amount, uint64_t offset, std::string_view where,
                          std::string_view what) {
  uint64_t& used = used_[static_cast<size_t>(kind)];
  const uint64_t limit = Limit(kind);
  const uint64_t would_be = SatAdd(used, amount);
  if (would_be > limit) {
    std::unexpected<Error> error = Exceeded(kind, would_be, offset, where, what);
    used = std::max(used, limit);
    exhausted_[static_cast<size_t>(kind)] = true;
    return error;
  }
  if (exhausted_[static_cast<size_t>(kind)]) return Exceeded(kind, would_be, offset, where, what);
  used = would_be;
  // Inflated bytes are input too: the limits that scale with it move.
  if (kind == BudgetKind::kInflatedBytes) Refresh();
  return OkStatus();
}

bool Budget::TryAbsorb(const Budget& other) {
  std::array<uint64_t, kNumBudgetKinds> sum{};
  for (size_t k = 0; k < kNumBudgetKinds; ++k) {
    if (exhausted_[k] || other.exhausted_[k]) return false;
    const auto kind = static_cast<BudgetKind>(k);
    sum[k] = kind == BudgetKind::kNesting ? std::max(used_[k], other.used_[k]) : SatAdd(used_[k], other.used_[k]);
  }
  // The limits that scale with the input move with the inflated bytes: the
  // ones in force after both stages' inflation.
  Budget merged = *this;
  merged.used_ = sum;
  for (size_t k = 0; k < kNumBudgetKinds; ++k) {
    if (sum[k] > merged.Limit(static_cast<BudgetKind>(k))) return false;
  }
  used_ = sum;
  Refresh();
  return true;
}

Status Budget::Nest(uint64_t depth, uint64_t offset, std::string_view where, std::string_view what) {
  uint64_t& used = used_[static_cast<size_t>(BudgetKind::kNesting)];
  if (depth > Limit(BudgetKind::kNesting)) return Exceeded(BudgetKind::kNesting, depth, offset, where, what);
  used = std::max(used, depth);
  return OkStatus();
}

}  // namespace ckptguard

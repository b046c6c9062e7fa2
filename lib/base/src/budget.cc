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

}  // namespace

std::string_view BudgetLimitName(BudgetKind kind) { return Info(kind).name; }

BudgetLimits BudgetLimits::Clamped() const {
  BudgetLimits out = *this;
  for (const KindInfo& k : kKinds) out.*k.field = std::min(out.*k.field, k.ceiling);
  return out;
}

uint64_t BudgetLimits::Get(BudgetKind kind) const { return this->*Info(kind).field; }

void BudgetLimits::Set(BudgetKind kind, uint64_t value) { this->*Info(kind).field = value; }

uint64_t Budget::remaining(BudgetKind kind) const {
  const uint64_t limit = limits_.Get(kind);
  const uint64_t used = used_[static_cast<size_t>(kind)];
  return used >= limit ? 0 : limit - used;
}

std::unexpected<Error> Budget::Exceeded(BudgetKind kind, uint64_t would_be, uint64_t offset,
                                        std::string_view where, std::string_view what) const {
  std::string detail = "budget limit " + std::string(Info(kind).name) + " (" + std::to_string(limits_.Get(kind)) +
                       ") exceeded";
  if (kind == BudgetKind::kNesting) {
    detail += ": nesting depth " + std::to_string(would_be);
  } else {
    detail += ": the file's total would reach " + std::to_string(would_be);
  }
  if (!what.empty()) detail += " (" + std::string(what) + ")";
  Error e{ErrorCode::kLimitExceeded, offset, std::string(where), std::move(detail), std::string(Info(kind).name)};
  return std::unexpected<Error>(std::move(e));
}

Status Budget::Charge(BudgetKind kind, uint64_t amount, uint64_t offset, std::string_view where,
                      std::string_view what) {
  uint64_t& used = used_[static_cast<size_t>(kind)];
  const uint64_t limit = limits_.Get(kind);
  const uint64_t would_be = amount > UINT64_MAX - used ? UINT64_MAX : used + amount;
  if (would_be > limit) {
    used = limit;
    return Exceeded(kind, would_be, offset, where, what);
  }
  used = would_be;
  return OkStatus();
}

Status Budget::Nest(uint64_t depth, uint64_t offset, std::string_view where, std::string_view what) {
  uint64_t& used = used_[static_cast<size_t>(BudgetKind::kNesting)];
  if (depth > limits_.max_nesting) return Exceeded(BudgetKind::kNesting, depth, offset, where, what);
  used = std::max(used, depth);
  return OkStatus();
}

}  // namespace ckptguard

// Tests of Budget: one allowance per file, charged by every stage.
#define BOOST_TEST_MODULE budget_test
#include <boost/test/unit_test.hpp>

#include "ckptguard/budget.h"

using ckptguard::Budget;
using ckptguard::BudgetKind;
using ckptguard::BudgetLimits;
using ckptguard::ErrorCode;

BOOST_AUTO_TEST_CASE(ChargesAddUpAcrossStagesAndFailAtTheLimit) {
  BudgetLimits limits;
  limits.max_inflated_bytes = 100;
  Budget budget(limits);
  BOOST_TEST(budget.Charge(BudgetKind::kInflatedBytes, 60, 10, "a.pt > inner.zip", "inflate").has_value());
  BOOST_TEST(budget.used(BudgetKind::kInflatedBytes) == 60u);
  BOOST_TEST(budget.remaining(BudgetKind::kInflatedBytes) == 40u);
  auto s = budget.Charge(BudgetKind::kInflatedBytes, 41, 77, "data.pkl", "inflate");
  BOOST_REQUIRE(!s);
  BOOST_TEST(static_cast<int>(s.error().code) == static_cast<int>(ErrorCode::kLimitExceeded));
  BOOST_TEST(s.error().limit == "max_inflated_bytes");
  BOOST_TEST(s.error().offset == 77u);
  BOOST_TEST(s.error().where == "data.pkl");
  BOOST_TEST(s.error().detail.find("max_inflated_bytes (100)") != std::string::npos);
  BOOST_TEST(s.error().detail.find("101") != std::string::npos);
  // A failed charge keeps the budget spent: nothing charges after it.
  BOOST_TEST(!budget.Charge(BudgetKind::kInflatedBytes, 1));
  // Other kinds are independent.
  BOOST_TEST(budget.Charge(BudgetKind::kOpcodes, 1000).has_value());
}

BOOST_AUTO_TEST_CASE(OverflowSaturatesAndFails) {
  Budget budget;
  BOOST_TEST(budget.Charge(BudgetKind::kReadBytes, 5).has_value());
  auto s = budget.Charge(BudgetKind::kReadBytes, UINT64_MAX);
  BOOST_REQUIRE(!s);
  BOOST_TEST(s.error().limit == "max_read_bytes");
}

BOOST_AUTO_TEST_CASE(NestingKeepsTheDeepest) {
  BudgetLimits limits;
  limits.max_nesting = 3;
  Budget budget(limits);
  BOOST_TEST(budget.Nest(2).has_value());
  BOOST_TEST(budget.Nest(1).has_value());
  BOOST_TEST(budget.used(BudgetKind::kNesting) == 2u);
  BOOST_TEST(budget.Nest(3).has_value());
  auto s = budget.Nest(4, 9, "x");
  BOOST_REQUIRE(!s);
  BOOST_TEST(s.error().limit == "max_nesting");
}

BOOST_AUTO_TEST_CASE(LimitsAreClampedAndNamed) {
  BudgetLimits limits;
  limits.max_nesting = UINT64_MAX;
  limits.max_opcodes = UINT64_MAX;
  const BudgetLimits c = limits.Clamped();
  BOOST_TEST(c.max_nesting == (uint64_t{1} << 20));
  BOOST_TEST(c.max_opcodes == (uint64_t{1} << 36));
  BOOST_TEST(ckptguard::BudgetLimitName(BudgetKind::kViewBytes) == "max_view_bytes");
  BudgetLimits set;
  set.Set(BudgetKind::kMemoSlots, 7);
  BOOST_TEST(set.max_memo_slots == 7u);
  BOOST_TEST(set.Get(BudgetKind::kMemoSlots) == 7u);
}

BOOST_AUTO_TEST_CASE(LimitsScaleWithTheFileOnceItsSizeIsKnown) {
  BudgetLimits limits;
  limits.floor_bytes = 1000;
  limits.floor_count = 100;
  Budget budget(limits);
  // Unknown size: the absolute limits.
  BOOST_TEST(budget.Limit(BudgetKind::kInflatedBytes) == limits.max_inflated_bytes);
  budget.SetFileSize(10);
  budget.SetFileSize(1'000'000);  // the first call wins (nested containers)
  BOOST_TEST(budget.Limit(BudgetKind::kInflatedBytes) == 1100u * 10 + 1000);
  BOOST_TEST(budget.Limit(BudgetKind::kViewBytes) == 16u * 10 + 1000);
  BOOST_TEST(budget.Limit(BudgetKind::kOpcodes) == 16u * 10 + 100);
  // Inflated bytes are input too: a compressed pickle may hold more opcodes.
  BOOST_TEST(budget.Charge(BudgetKind::kInflatedBytes, 500).has_value());
  BOOST_TEST(budget.Limit(BudgetKind::kOpcodes) == 16u * 510 + 100);
  auto s = budget.Charge(BudgetKind::kViewBytes, 2000, 5, "data.pkl", "digest of tensor 'w'");
  BOOST_REQUIRE(!s);
  BOOST_TEST(s.error().limit == "max_view_bytes");
  BOOST_TEST(s.error().detail.find("scaled to this file's 10 bytes") != std::string::npos);
  BOOST_TEST(s.error().detail.find("digest of tensor 'w'") != std::string::npos);
  // A ratio of 0 turns scaling off for its kinds.
  BudgetLimits off = limits;
  off.views_per_file_byte = 0;
  Budget unscaled(off);
  unscaled.SetFileSize(10);
  BOOST_TEST(unscaled.Limit(BudgetKind::kViewBytes) == off.max_view_bytes);
}

BOOST_AUTO_TEST_CASE(AStageChargedAsideIsAbsorbedOnlyWithinTheLimits) {
  BudgetLimits limits;
  limits.max_opcodes = 100;
  limits.max_nesting = 5;
  Budget file(limits);
  Budget aside(limits);
  BOOST_TEST(file.Charge(BudgetKind::kOpcodes, 60).has_value());
  BOOST_TEST(aside.Charge(BudgetKind::kOpcodes, 40).has_value());
  BOOST_TEST(file.Nest(3).has_value());
  BOOST_TEST(aside.Nest(4).has_value());
  BOOST_TEST(file.TryAbsorb(aside));
  BOOST_TEST(file.used(BudgetKind::kOpcodes) == 100u);
  BOOST_TEST(file.used(BudgetKind::kNesting) == 4u);  // the deeper, not the sum
  // One more opcode aside would have failed one after the other: refused,
  // and nothing changes.
  Budget more(limits);
  BOOST_TEST(more.Charge(BudgetKind::kOpcodes, 1).has_value());
  BOOST_TEST(!file.TryAbsorb(more));
  BOOST_TEST(file.used(BudgetKind::kOpcodes) == 100u);
  // An exhausted budget is never absorbed.
  Budget spent(limits);
  BOOST_TEST(!spent.Charge(BudgetKind::kOpcodes, 101));
  Budget fresh(limits);
  BOOST_TEST(!fresh.TryAbsorb(spent));
  BOOST_TEST(fresh.used(BudgetKind::kOpcodes) == 0u);
}

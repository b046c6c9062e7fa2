// The one pickle machine (pickle_machine.h) and its domains: the restricted
// VM (strict), the scanner (lenient), the storage-reference walker and a
// counting domain of this test must see the same stack, MARK and memo
// semantics; the file's Budget is charged; and the loader and the scanner
// agree (a differential test over the corpus and byte-built hostile pickles).
#define BOOST_TEST_MODULE pickle_machine_test
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"
#include "ckptguard/scanner/scan.h"
#include "ckptguard/storage_refs.h"
#include "ckptguard/vm.h"
#include "test_util.h"

namespace ckptguard {
namespace scanner {
std::ostream& boost_test_print_type(std::ostream& os, Verdict v) { return os << VerdictName(v); }
}  // namespace scanner
namespace {

using namespace std::string_literals;
using scanner::FileReport;
using scanner::Finding;
using scanner::Verdict;
using testing::CorpusDir;

// CountingDomain: every value opaque; records what the machine reports.
struct CountingDomain {
  using Id = MachineId;
  uint32_t next = 0;
  std::vector<std::string> malformed;
  std::vector<std::string> globals;

  Id New() { return next++; }
  Result<Id> Literal(const PickleOp&) { return New(); }
  Result<Id> Tuple(const PickleOp&, std::span<const Id>) { return New(); }
  Result<Id> List(const PickleOp&, std::span<const Id>) { return New(); }
  Result<Id> Dict(const PickleOp&, std::span<const Id>) { return New(); }
  Result<Id> Set(const PickleOp&, std::span<const Id>, bool) { return New(); }
  Status Append(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Status SetItems(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Status AddItems(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Result<Id> Global(const PickleOp&, std::string_view m, std::string_view n) {
    globals.push_back(std::string(m) + "." + std::string(n));
    return New();
  }
  Result<Id> StackGlobal(const PickleOp&, Id, Id) { return New(); }
  Result<Id> Reduce(const PickleOp&, Id, Id) { return New(); }
  Result<Id> NewObj(const PickleOp&, Id, Id, const Id*) { return New(); }
  Result<Id> Obj(const PickleOp&, Id, std::span<const Id>) { return New(); }
  Result<Id> Inst(const PickleOp&, std::string_view, std::string_view, std::span<const Id>) { return New(); }
  Status Build(const PickleOp&, Id, Id) { return OkStatus(); }
  Result<Id> Ext(const PickleOp&, uint64_t) { return New(); }
  Result<Id> PersistentLoad(const PickleOp&, const Id*) { return New(); }
  Result<Id> Buffer(const PickleOp&, const Id*) { return New(); }
  Id Opaque() { return New(); }
  void Malformed(const Error& e) { malformed.push_back(e.detail); }
};

Status RunCounting(const std::string& bytes, MachineMode mode, CountingDomain& domain, Budget& budget) {
  PickleDecoder decoder(AsBytes(bytes));
  PickleMachine<CountingDomain> machine(domain, MachineLimits{}, budget, mode, "test");
  Result<MachineId> root = machine.Run(decoder);
  if (!root) return std::unexpected(root.error());
  return OkStatus();
}

// A storage resolver that makes every requested storage 64 bytes long.
struct Storages {
  std::string bytes = std::string(64, '\0');
  StorageResolver resolver;
  explicit Storages(VmState& state) {
    resolver = [&state, this](const StorageRequest& r) -> Result<uint32_t> {
      Storage s;
      s.key = r.key;
      s.location = r.location;
      s.dtype = r.dtype;
      s.num_elements = static_cast<uint64_t>(r.num_elements);
      s.bytes = AsBytes(bytes).first(std::min<size_t>(bytes.size(), static_cast<size_t>(r.num_elements) * DTypeSize(r.dtype)));
      state.storages.push_back(s);
      return static_cast<uint32_t>(state.storages.size() - 1);
    };
  }
};

Result<ValueId> RunVm(const std::string& bytes, const VmOptions& options = {}) {
  VmState state;
  Storages storages(state);
  return RunPickle(AsBytes(bytes), 0, "pickle", state, storages.resolver, options);
}

std::string Describe(const FileReport& r) {
  std::string out = r.path + " [" + std::string(scanner::VerdictName(r.verdict)) + "]";
  for (const Finding& f : r.findings) {
    out += "\n  " + f.rule + " @" + std::to_string(f.offset) + " (" + f.entry + ") " + f.global + ": " + f.message;
  }
  if (r.error) out += "\n  error: " + r.error->ToString();
  return out;
}

bool HasFinding(const FileReport& r, const std::string& rule, const std::string& needle) {
  for (const Finding& f : r.findings) {
    if (f.rule == rule && f.message.find(needle) != std::string::npos) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// 1. Stack, MARK and memo edge cases, the same for every domain.

struct EdgeCase {
  std::string name;
  std::string bytes;
  std::string error;  // the C unpickler's failure (machine detail); "" = the pickle runs
};

std::vector<EdgeCase> EdgeCases() {
  const std::string p2 = "\x80\x02"s;
  const std::string p4 = "\x80\x04"s;
  return {
      {"POP on an empty stack", p2 + "0N.", "POP: stack underflow"},
      {"POP takes a MARK at the top", p2 + "K\x01(0.", ""},
      {"DUP right after a MARK", p2 + "K\x01(2K\x02t.", "DUP: stack underflow (below the MARK)"},
      {"TUPLE without a MARK", p2 + "K\x01t.", "TUPLE: no MARK"},
      {"POP_MARK without a MARK", p2 + "K\x01" "1.", "POP_MARK: no MARK"},
      {"TUPLE2 across a MARK", p2 + "K\x01(K\x02\x86.", "TUPLE2: stack underflow (below the MARK)"},
      {"BINGET of a key never stored", p2 + "K\x01q\x04h\x05.", "BINGET: memo key 5 was never stored"},
      {"LONG_BINGET of a sparse key never stored", p2 + "j\x00\x00\x00\x40."s, "LONG_BINGET: memo key 1073741824"},
      {"BINPUT on an empty stack", p2 + "q\x00N."s, "BINPUT: stack underflow"},
      {"MEMOIZE right after a MARK", p4 + "K\x01(\x94t.", "MEMOIZE: stack underflow (below the MARK)"},
      {"MEMOIZE stores at len(memo)", p4 + "K\x01q\x05K\x02\x94h\x01h\x05\x86.", ""},
      {"sparse LONG_BINPUT keys", p2 + "K\x01r\x00\x00\x00\x40r\xff\xff\xff\x7fj\x00\x00\x00\x40."s, ""},
      {"DICT with an odd number of items", p2 + "(K\x01" "d.", "odd number of items for a dict"},
      {"SETITEMS with an odd number of items", p2 + "}(K\x01K\x02K\x03u.", "odd number of items for SETITEMS"},
      {"APPENDS with no items is nothing to do", p2 + "](e.", ""},
      {"APPENDS with its list below the outer MARK", p2 + "]((K\x01" "e1.", "APPENDS: stack underflow"},
      {"APPEND with its list below the MARK", p2 + "](K\x01" "a1.", "APPEND: stack underflow (below the MARK)"},
      {"SETITEM with two items", p2 + "}K\x01s.", "SETITEM: stack underflow"},
      {"BUILD across a MARK", p2 + "}(}b1.", "BUILD: stack underflow (below the MARK)"},
      {"STACK_GLOBAL with one item", p4 + "\x8c\x02os\x93.", "STACK_GLOBAL: stack underflow"},
      {"STOP with only a MARK above the value", p2 + "K\x01(.", "STOP: stack underflow (below the MARK)"},
      {"STOP with an empty stack", p2 + ".", "STOP: stack underflow"},
      {"nested containers through the memo", p2 + "](K\x01K\x02" "eq\x00h\x00h\x00\x86."s, ""},
  };
}

BOOST_AUTO_TEST_CASE(edge_cases_are_decided_once_for_every_domain) {
  for (const EdgeCase& c : EdgeCases()) {
    BOOST_TEST_CONTEXT(c.name) {
      // The machine itself, strict and lenient.
      CountingDomain strict_domain;
      Budget budget;
      const Status strict = RunCounting(c.bytes, MachineMode::kStrict, strict_domain, budget);
      CountingDomain lenient_domain;
      const Status lenient = RunCounting(c.bytes, MachineMode::kLenient, lenient_domain, budget);
      BOOST_TEST(lenient.has_value(), (lenient ? "" : lenient.error().ToString()));
      // The VM (strict).
      const Result<ValueId> vm = RunVm(c.bytes);
      // The scanner (lenient).
      const FileReport report = scanner::ScanBytes(AsBytes(c.bytes), c.name);
      // The storage walker (lenient; no error but the decoder's).
      std::optional<Error> walk_error;
      const std::vector<StorageRef> refs = CollectStorageRefs(AsBytes(c.bytes), PickleLimits{}, &walk_error);
      BOOST_TEST(refs.empty());
      BOOST_TEST(!walk_error.has_value());
      if (c.error.empty()) {
        BOOST_TEST(strict.has_value(), (strict ? "" : strict.error().ToString()));
        BOOST_TEST(lenient_domain.malformed.empty());
        BOOST_TEST(vm.has_value(), (vm ? "" : vm.error().ToString()));
        BOOST_TEST(!HasFinding(report, "CKG-F020", ""), Describe(report));
        BOOST_TEST(report.verdict == Verdict::kSafe, Describe(report));
        continue;
      }
      BOOST_REQUIRE(!strict.has_value());
      BOOST_TEST(strict.error().detail.find(c.error) != std::string::npos, strict.error().ToString());
      BOOST_TEST((strict.error().code == ErrorCode::kMalformed));
      BOOST_REQUIRE(!lenient_domain.malformed.empty());
      BOOST_TEST(lenient_domain.malformed.front() == strict.error().detail);
      BOOST_REQUIRE(!vm.has_value());
      BOOST_TEST((vm.error().code == ErrorCode::kMalformed));
      BOOST_TEST(vm.error().detail == strict.error().detail, vm.error().ToString());
      BOOST_TEST(HasFinding(report, "CKG-F020", strict.error().detail), Describe(report));
      BOOST_TEST(report.verdict != Verdict::kSafe, Describe(report));
    }
  }
}

// ReclaimingDomain asks Run for the scan of memo reads (kReclaimsConsumed).
struct ReclaimingDomain : CountingDomain {
  static constexpr bool kReclaimsConsumed = true;
};

// SharedHigh runs `bytes` through Run (scanned first when the domain asks)
// and returns shared_high().
template <typename Domain>
int64_t SharedHigh(const std::string& bytes) {
  Domain domain;
  Budget budget;
  PickleDecoder decoder(AsBytes(bytes));
  PickleMachine<Domain> machine(domain, MachineLimits{}, budget, MachineMode::kStrict, "test");
  Result<MachineId> root = machine.Run(decoder);
  BOOST_REQUIRE_MESSAGE(root.has_value(), (root ? std::string() : root.error().ToString()));
  return machine.shared_high();
}

BOOST_AUTO_TEST_CASE(memo_reads_are_scanned_before_a_run) {
  const std::string p2 = "\x80\x02"s;
  const std::string p4 = "\x80\x04"s;
  // Keys 0, 1 and 20 stored, 0 and 20 read (BINGET, LONG_BINGET, GET).
  const std::string puts = p2 + "]q\x00]q\x01]r\x14\x00\x00\x00h\x00j\x14\x00\x00\x00\x87g0\n\x86."s;
  const MemoReads reads = ScanMemoReads(AsBytes(puts), {}, UINT64_MAX);
  BOOST_TEST(!reads.all());
  BOOST_TEST(reads.Read(0));
  BOOST_TEST(!reads.Read(1));
  BOOST_TEST(reads.Read(20));
  BOOST_TEST(!reads.Read(21));
  // MEMOIZE stores at len(memo): the second value is key 1.
  const MemoReads memoized = ScanMemoReads(AsBytes(p4 + "]\x94]\x94h\x01\x86."s), {}, UINT64_MAX);
  BOOST_TEST(!memoized.all());
  BOOST_TEST(!memoized.Read(0));
  BOOST_TEST(memoized.Read(1));
  // Undecided: MEMOIZE with PUT, a key far beyond the stores, a pickle
  // without its STOP, more opcodes than allowed.
  BOOST_TEST(ScanMemoReads(AsBytes(p4 + "]\x94]q\x05h\x05\x86."s), {}, UINT64_MAX).all());
  BOOST_TEST(ScanMemoReads(AsBytes(p2 + "]r\x00\x10\x00\x00j\x00\x10\x00\x00\x86."s), {}, UINT64_MAX).all());
  BOOST_TEST(ScanMemoReads(AsBytes(p2 + "]q\x00h\x00"s), {}, UINT64_MAX).all());
  BOOST_TEST(ScanMemoReads(AsBytes(puts), {}, 5).all());
  // Strings are skipped whole: a BINGET byte inside one is not a read.
  const MemoReads in_text = ScanMemoReads(AsBytes(p2 + "X\x02\x00\x00\x00h\x07q\x00\x8c\x02h\x07q\x01."s), {}, UINT64_MAX);
  BOOST_TEST(!in_text.all());
  BOOST_TEST(!in_text.Read(7));
}

BOOST_AUTO_TEST_CASE(shared_high_counts_only_what_can_come_back) {
  const std::string p2 = "\x80\x02"s;
  // [] as key 0 (read again), [] as key 1 (never read): only value 0 is
  // held twice. Without the scan every memoized value counts.
  const std::string memo = p2 + "]q\x00]q\x01h\x00\x87."s;
  BOOST_TEST(SharedHigh<ReclaimingDomain>(memo) == 0);
  BOOST_TEST(SharedHigh<CountingDomain>(memo) == 1);
  // DUP holds its value twice.
  BOOST_TEST(SharedHigh<ReclaimingDomain>(p2 + "]]2\x87."s) == 1);
  // Nothing shared.
  BOOST_TEST(SharedHigh<ReclaimingDomain>(p2 + "]]\x86."s) == -1);
}

BOOST_AUTO_TEST_CASE(memoize_stores_at_len_memo_in_the_vm) {
  // PUT 5 then MEMOIZE: len(memo) is 1, so MEMOIZE stores at key 1.
  VmState state;
  Storages storages(state);
  const std::string bytes = "\x80\x04K\x01q\x05K\x02\x94h\x01h\x05\x86."s;
  const Result<ValueId> root = RunPickle(AsBytes(bytes), 0, "pickle", state, storages.resolver);
  BOOST_REQUIRE(root.has_value());
  const Value& t = state.values.Get(*root);
  BOOST_REQUIRE(t.items.size() == 2u);
  BOOST_TEST(state.values.Get(t.items[0]).int_value == 2);
  BOOST_TEST(state.values.Get(t.items[1]).int_value == 1);
}

// ---------------------------------------------------------------------------
// 2. The shared helpers.

const std::string kStoragePid =
    "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ"s;

BOOST_AUTO_TEST_CASE(storage_pid_is_read_the_same_by_the_vm_and_the_walker) {
  const std::string bytes = "\x80\x02"s + kStoragePid + ".";
  std::optional<Error> error;
  const std::vector<StorageRef> refs = CollectStorageRefs(AsBytes(bytes), PickleLimits{}, &error);
  BOOST_REQUIRE(refs.size() == 1u);
  BOOST_TEST(refs[0].module == "torch");
  BOOST_TEST(refs[0].storage_type == "FloatStorage");
  BOOST_TEST(refs[0].key == "0");
  BOOST_TEST(refs[0].location == "cpu");
  BOOST_TEST(refs[0].numel == 4);
  VmState state;
  Storages storages(state);
  const Result<ValueId> root = RunPickle(AsBytes(bytes), 0, "pickle", state, storages.resolver);
  BOOST_REQUIRE_MESSAGE(root.has_value(), (root ? "" : root.error().ToString()));
  BOOST_REQUIRE(state.storages.size() == 1u);
  BOOST_TEST(state.storages[0].key == "0");
  BOOST_TEST(state.storages[0].num_elements == 4u);
  // A negative count is not a storage for either.
  const std::string negative = "\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0"
                               "X\x03\x00\x00\x00" "cpuJ\xff\xff\xff\xfftQ."s;
  BOOST_TEST(CollectStorageRefs(AsBytes(negative), PickleLimits{}, &error).empty());
  BOOST_TEST(!RunVm(negative).has_value());
}

BOOST_AUTO_TEST_CASE(stack_global_operands) {
  BOOST_TEST(StackGlobalName({true, true, "os"}, {true, true, "system"}).has_value());
  BOOST_TEST((StackGlobalName({false, true, "os"}, {true, true, "system"}).error().code == ErrorCode::kForbiddenGlobal));
  BOOST_TEST((StackGlobalName({true, true, "os"}, {false, true, ""}).error().code == ErrorCode::kForbiddenGlobal));
  BOOST_TEST((StackGlobalName({true, false, "os"}, {true, true, "x"}).error().code == ErrorCode::kUnsupportedFormat));
}

BOOST_AUTO_TEST_CASE(latin1_is_decoded_once) {
  BOOST_TEST(*CodecsEncodeLatin1("a\xc3\xbf\xc2\x80", "latin1") == "a\xff\x80"s);
  BOOST_TEST(*CodecsEncodeLatin1("", "iso-8859-1") == "");
  BOOST_TEST((CodecsEncodeLatin1("\xc4\x80", "latin1").error().code == ErrorCode::kMalformed));
  BOOST_TEST((CodecsEncodeLatin1("\xc3", "latin1").error().code == ErrorCode::kMalformed));
  BOOST_TEST((CodecsEncodeLatin1("\xc3(", "latin1").error().code == ErrorCode::kMalformed));
  BOOST_TEST((CodecsEncodeLatin1("a", "utf-8").error().code == ErrorCode::kUnsupportedFormat));
  BOOST_TEST((CodecsEncodeLatin1("a", std::nullopt).error().code == ErrorCode::kUnsupportedFormat));
}

// ---------------------------------------------------------------------------
// 3. The budget.

// SparsePuts: one value stored under `n` keys 1023 apart (the MemoTable of
// old grew its dense vector by 1023 slots for each).
std::string SparsePuts(uint32_t n) {
  std::string out = "\x80\x02K\x01"s;
  for (uint32_t i = 1; i <= n; ++i) {
    const uint32_t key = i * 1023;
    out += 'r';
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((key >> (8 * b)) & 0xff));
  }
  return out + ".";
}

BOOST_AUTO_TEST_CASE(sparse_memo_keys_stay_sparse_and_are_charged) {
  const std::string bytes = SparsePuts(50'000);  // ~250 KB
  Budget budget;
  VmOptions options;
  options.budget = &budget;
  BOOST_REQUIRE(RunVm(bytes, options).has_value());
  // Each sparse key costs kSparseSlotCost, not 1023 dense slots.
  BOOST_TEST(budget.used(BudgetKind::kMemoSlots) <= 50'000 * MachineMemo::kSparseSlotCost + 64);
  BOOST_TEST(budget.used(BudgetKind::kOpcodes) == 50'003u);

  BudgetLimits small;
  small.max_memo_slots = 1000;
  Budget tight(small);
  options.budget = &tight;
  const Result<ValueId> refused = RunVm(bytes, options);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST((refused.error().code == ErrorCode::kLimitExceeded));
  BOOST_TEST(refused.error().limit == "max_memo_slots");
}

BOOST_AUTO_TEST_CASE(dense_memo_slots_are_charged_as_allocated) {
  std::string bytes = "\x80\x02K\x01"s;
  for (int i = 0; i < 200; ++i) bytes += "q"s + static_cast<char>(i);
  bytes += ".";
  Budget budget;
  VmOptions options;
  options.budget = &budget;
  BOOST_REQUIRE(RunVm(bytes, options).has_value());
  BOOST_TEST(budget.used(BudgetKind::kMemoSlots) >= 200u);
  BOOST_TEST(budget.used(BudgetKind::kMemoSlots) <= 512u);
}

BOOST_AUTO_TEST_CASE(each_budget_kind_stops_the_vm_and_the_scanner_but_nesting_only_the_vm) {
  struct Row {
    BudgetKind kind;
    uint64_t limit;
    std::string bytes;
  };
  std::string deep = "\x80\x02"s;
  for (int i = 0; i < 20; ++i) deep += "(";
  for (int i = 0; i < 20; ++i) deep += "t";
  deep += ".";
  std::string many = "\x80\x02("s;
  for (int i = 0; i < 100; ++i) many += "K\x01";
  many += "l.";
  const std::vector<Row> rows = {
      {BudgetKind::kOpcodes, 50, many},
      {BudgetKind::kValues, 50, many},
      {BudgetKind::kNesting, 10, deep},
  };
  for (const Row& r : rows) {
    BOOST_TEST_CONTEXT(BudgetLimitName(r.kind)) {
      BudgetLimits limits;
      limits.Set(r.kind, r.limit);
      Budget budget(limits);
      VmOptions options;
      options.budget = &budget;
      const Result<ValueId> vm = RunVm(r.bytes, options);
      BOOST_REQUIRE(!vm.has_value());
      BOOST_TEST(vm.error().limit == std::string(BudgetLimitName(r.kind)));
      BOOST_TEST(RunVm(r.bytes).has_value());  // the default budget lets it through

      scanner::ScanOptions scan;
      scan.budget = limits;
      const FileReport report = scanner::ScanBytes(AsBytes(r.bytes), "budget", scan);
      if (r.kind == BudgetKind::kNesting) {
        // The scanner keeps MARKs as offsets and walks nothing recursively:
        // nesting no unpickler limits must not hide what follows it (a
        // payload after 10,001 MARKs runs), so only the loader stops there.
        BOOST_TEST(report.verdict == Verdict::kSafe, Describe(report));
        BOOST_TEST(!report.error.has_value(), Describe(report));
        continue;
      }
      BOOST_TEST(report.verdict == Verdict::kError, Describe(report));
      BOOST_REQUIRE(report.error.has_value());
      BOOST_TEST(report.error->limit == std::string(BudgetLimitName(r.kind)), Describe(report));
      BOOST_TEST(report.error->detail.find(std::string(BudgetLimitName(r.kind))) != std::string::npos);
      BOOST_TEST(scanner::ScanBytes(AsBytes(r.bytes), "budget").verdict == Verdict::kSafe);
    }
  }
}

// Latin1ToUtf8: the str whose latin1 encoding is `bytes`.
std::string Latin1ToUtf8(std::string_view bytes) {
  std::string out;
  for (char ch : bytes) {
    const auto c = static_cast<uint8_t>(ch);
    if (c < 0x80) {
      out.push_back(ch);
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

BOOST_AUTO_TEST_CASE(nested_pickles_charge_the_same_budget) {
  // pickle.loads(_codecs.encode('<inner pickle>', 'latin1')): the inner
  // pickle's opcodes are charged to the file's budget too.
  std::string inner = "\x80\x02("s;
  for (int i = 0; i < 40; ++i) inner += "K\x01";
  inner += "l.";
  const std::string inner_text = Latin1ToUtf8(inner);
  std::string outer = "\x80\x02" "cpickle\nloads\n" "c_codecs\nencode\n" "X"s;
  for (int b = 0; b < 4; ++b) outer.push_back(static_cast<char>((inner_text.size() >> (8 * b)) & 0xff));
  outer += inner_text + "X\x06\x00\x00\x00latin1\x86R\x85R."s;
  const FileReport free = scanner::ScanBytes(AsBytes(outer), "nested");
  BOOST_TEST(HasFinding(free, "CKG-F062", "pickle.loads"), Describe(free));
  BudgetLimits limits;
  // The outer pickle takes 9 opcodes, charged three times (the container's
  // detection and trailing-data pass, then the scan): 27 of 40; the inner
  // pickle's 42 are past the budget.
  limits.max_opcodes = 40;
  scanner::ScanOptions scan;
  scan.budget = limits;
  const FileReport report = scanner::ScanBytes(AsBytes(outer), "nested", scan);
  BOOST_REQUIRE(report.error.has_value());
  BOOST_TEST(report.error->limit == "max_opcodes", Describe(report));
  // The dangerous finding is never hidden behind the error: pickle.loads is
  // judged by its literal only when that literal was scanned to the end;
  // here it was not, so it is reported by its rule.
  BOOST_TEST(HasFinding(report, "CKG-D033", "pickle.loads"), Describe(report));
  BOOST_TEST(report.verdict == Verdict::kDangerous, Describe(report));
}

// ---------------------------------------------------------------------------
// 4. Differential: the loader and the scanner agree.

// QuotedGlobal returns G from a VM detail "... global 'G' ..." (a refused
// GLOBAL, STACK_GLOBAL or INST), else "".
std::string QuotedGlobal(const std::string& detail) {
  const size_t at = detail.find("global '");
  if (at == std::string::npos) return "";
  const size_t begin = at + 8;
  const size_t end = detail.find('\'', begin);
  return end == std::string::npos ? "" : detail.substr(begin, end - begin);
}

// CheckAgreement: a forbidden global or call refused by the loader is a
// finding of the scanner (the global by name, or a finding at the refused
// opcode); what the scanner calls safe, the loader loads.
void CheckAgreement(const std::string& name, const std::string& bytes) {
  BOOST_TEST_CONTEXT(name) {
    const Result<Checkpoint> loaded = LoadCheckpointBytes(AsBytes(bytes));
    const FileReport report = scanner::ScanBytes(AsBytes(bytes), name);
    if (!loaded) BOOST_TEST((loaded.error().code != ErrorCode::kInternal), loaded.error().ToString());
    if (report.error) BOOST_TEST((report.error->code != ErrorCode::kInternal), Describe(report));
    if (!loaded && loaded.error().code == ErrorCode::kForbiddenGlobal) {
      const Error& e = loaded.error();
      BOOST_TEST(report.verdict != Verdict::kSafe, e.ToString() + "\n" + Describe(report));
      // The global by name when the loader names one (looked up in the
      // detail, since a name may hold quotes), else a finding at the opcode.
      const bool names_global = !QuotedGlobal(e.detail).empty();
      bool found = false;
      for (const Finding& f : report.findings) {
        found = found || (names_global && !f.global.empty() &&
                          e.detail.find("global '" + f.global + "'") != std::string::npos) ||
                (!names_global && f.offset == e.offset);
      }
      BOOST_TEST(found, "the loader refused: " + e.ToString() + "\n" + Describe(report));
    }
    // What the scanner calls safe, the loader loads, unless it is a
    // feature the loader deliberately does not implement (quantized
    // tensors, say: kUnsupportedFormat naming it).
    if (report.verdict == Verdict::kSafe) {
      BOOST_TEST((loaded.has_value() || loaded.error().code == ErrorCode::kUnsupportedFormat),
                 Describe(report) + "\nloader: " + (loaded ? "" : loaded.error().ToString()));
    }
  }
}

std::vector<std::filesystem::path> CorpusFiles() {
  std::vector<std::filesystem::path> out;
  for (const char* dir : {"benign", "malicious"}) {
    for (const auto& e : std::filesystem::directory_iterator(CorpusDir() / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext == ".json" || ext == ".jsonl" || ext == ".md") continue;
      out.push_back(e.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

BOOST_AUTO_TEST_CASE(differential_over_the_corpus) {
  const std::vector<std::filesystem::path> files = CorpusFiles();
  BOOST_TEST(files.size() > 20u);
  for (const auto& path : files) CheckAgreement(path.filename().string(), testing::ReadFile(path));
}

std::string Bin(std::string_view s) {  // BINUNICODE
  std::string out = "X";
  for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((s.size() >> (8 * b)) & 0xff));
  return out + std::string(s);
}

std::vector<std::pair<std::string, std::string>> HostilePickles() {
  const std::string p2 = "\x80\x02"s;
  const std::string p4 = "\x80\x04"s;
  const std::string od = "ccollections\nOrderedDict\n)R"s;
  return {
      {"GLOBAL os.system", p2 + "cos\nsystem\n" + Bin("id") + "\x85R."},
      {"STACK_GLOBAL os.system", p4 + Bin("os") + Bin("system") + "\x93" + Bin("id") + "\x85R."},
      {"STACK_GLOBAL through the memo", p4 + Bin("os") + "\x94" + Bin("system") + "\x94h\x00h\x01\x93."s},
      {"STACK_GLOBAL with bytes operands", p4 + "C\x02osC\x06system\x93."},
      {"STACK_GLOBAL with int operands", p4 + "K\x01K\x02\x93."},
      {"INST os.system", "(S'id'\nios\nsystem\n."},
      {"OBJ of os.system", p2 + "(cos\nsystem\n" + Bin("id") + "o."},
      {"NEWOBJ of an allowlisted class", p2 + "ccollections\nOrderedDict\n)\x81."},
      {"NEWOBJ_EX of an allowlisted class", p4 + "ccollections\nOrderedDict\n)}\x92."},
      {"INST of an allowlisted class", "(icollections\nOrderedDict\n."},
      {"EXT1", p2 + "\x82\x01."},
      {"REDUCE of a tuple", p2 + "))R."},
      {"REDUCE of a dtype", p2 + "ctorch\nfloat32\n)R."},
      {"REDUCE of a storage type", p2 + "ctorch\nFloatStorage\n)R."},
      {"APPENDS on a set", p4 + "\x8f(K\x01" "e."},
      {"APPEND on an OrderedDict", p2 + od + "K\x01" "a."},
      {"SETITEMS on a tuple", p2 + ")(K\x01K\x02u."},
      {"SETITEM on a list", p2 + "]K\x01K\x02s."},
      {"ADDITEMS on a frozenset", p4 + "(\x91(K\x01\x90."},
      {"ADDITEMS on a list", p4 + "](K\x01\x90."},
      {"BUILD on a plain dict", p2 + "}}b."},
      {"BUILD on a str", p2 + Bin("x") + "}b."},
      {"nested pickle in _codecs.encode",
       p2 + "cpickle\nloads\nc_codecs\nencode\n" + Bin("\xc2\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00id\x85R."s) +
           Bin("latin1") + "\x86R\x85R."},
      {"a second pickle after STOP", p2 + "N." + p2 + "cos\nsystem\n" + Bin("id") + "\x85R."},
      {"a forbidden global after a stack underflow", p2 + "0cos\nsystem\n."},
      {"benign: OrderedDict with items and metadata", p2 + od + "(" + Bin("a") + "K\x01u}b."},
      {"benign: latin1 bytes", p2 + "c_codecs\nencode\n" + Bin("\xc3\xbf") + Bin("latin1") + "\x86R."},
      {"benign: a set and a frozenset", p4 + "\x8f(K\x01\x90(K\x02\x91\x86."},
      {"benign: torch.Size", p2 + "ctorch\nSize\n((K\x02K\x03t\x85R."},
  };
}

BOOST_AUTO_TEST_CASE(differential_over_hostile_pickles) {
  for (const auto& [name, bytes] : HostilePickles()) CheckAgreement(name, bytes);
  for (const EdgeCase& c : EdgeCases()) CheckAgreement(c.name, c.bytes);
}

BOOST_AUTO_TEST_CASE(other_globals_are_named_through_the_machine) {
  // After the first forbidden global the VM names the others, including one
  // that STACK_GLOBAL takes from the memo.
  const std::string bytes = "\x80\x04" "cos\nsystem\n" "\x8c\x02nt\x94\x8c\x06" "system\x94h\x00h\x01\x93" "."s;
  const Result<ValueId> vm = RunVm(bytes);
  BOOST_REQUIRE(!vm.has_value());
  BOOST_TEST((vm.error().code == ErrorCode::kForbiddenGlobal));
  BOOST_TEST(vm.error().detail.find("'os.system'") != std::string::npos, vm.error().detail);
  BOOST_TEST(vm.error().detail.find("also names: nt.system") != std::string::npos, vm.error().detail);
}


// ---------------------------------------------------------------------------
// Run's byte-level fast path (FastStep) and Step must be one machine: the
// same root, error, values built, reports and budget charges, whatever the
// limits, on every prefix of a limit and on damaged pickles.

// SharingDomain shares literals as the VM does (ScalarLiteralSlot), so
// that the fast path's shared BININT1, NONE, NEWTRUE and NEWFALSE are
// exercised.
struct SharingDomain : CountingDomain {
  size_t LiteralSlot(const PickleOp& op) const { return ScalarLiteralSlot(op); }
};

struct MachineOutcome {
  std::string result;  // "root N" or the error
  uint32_t values = 0;
  uint64_t ops = 0;
  std::vector<std::string> malformed;
  std::vector<uint64_t> used;
};

template <typename Domain>
MachineOutcome RunMachine(const std::string& bytes, MachineMode mode, const BudgetLimits& limits,
                          const MachineLimits& machine_limits, bool step_only) {
  Domain domain;
  Budget budget(limits);
  PickleDecoder decoder(AsBytes(bytes));
  PickleMachine<Domain> machine(domain, machine_limits, budget, mode, "test");
  Result<MachineId> root;
  if (!step_only) {
    root = machine.Run(decoder);
  } else {
    PickleOp op;
    while (true) {
      if (Status st = decoder.Next(op); !st) {
        root = std::unexpected(std::move(st).error());
        break;
      }
      if (Status st = machine.Step(op); !st) {
        root = std::unexpected(std::move(st).error());
        break;
      }
      if (op.code == Opcode::kStop) {
        root = machine.root();
        break;
      }
    }
  }
  MachineOutcome out;
  out.result = root ? "root " + std::to_string(*root) : root.error().ToString() + " limit=" + root.error().limit;
  out.values = domain.next;
  out.ops = machine.ops();
  out.malformed = domain.malformed;
  for (size_t k = 0; k < kNumBudgetKinds; ++k) out.used.push_back(budget.used(static_cast<BudgetKind>(k)));
  return out;
}

template <typename Domain>
void CheckFastPath(const std::string& name, const std::string& bytes, const BudgetLimits& limits,
                   const MachineLimits& machine_limits) {
  for (MachineMode mode : {MachineMode::kStrict, MachineMode::kLenient}) {
    const MachineOutcome fast = RunMachine<Domain>(bytes, mode, limits, machine_limits, false);
    const MachineOutcome slow = RunMachine<Domain>(bytes, mode, limits, machine_limits, true);
    BOOST_TEST_CONTEXT(name << (mode == MachineMode::kStrict ? " (strict)" : " (lenient)")) {
      BOOST_TEST(fast.result == slow.result);
      BOOST_TEST(fast.values == slow.values);
      BOOST_TEST(fast.ops == slow.ops);
      BOOST_TEST(fast.malformed == slow.malformed, boost::test_tools::per_element());
      BOOST_TEST(fast.used == slow.used, boost::test_tools::per_element());
    }
  }
}

std::vector<std::pair<std::string, std::string>> FastPathPickles() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& path : CorpusFiles()) {
    const std::string bytes = testing::ReadFile(path);
    const Container c = OpenContainer(AsBytes(bytes));
    for (const PickleSource& p : c.pickles) {
      const Bytes data = p.data.subspan(std::min<size_t>(p.data.size(), static_cast<size_t>(p.start)));
      if (data.size() > (1u << 16)) continue;  // enough: the test runs each many times
      out.emplace_back(path.filename().string() + ":" + p.entry,
                       std::string(reinterpret_cast<const char*>(data.data()), data.size()));
    }
  }
  // The machine's edge cases, with bytes after them so that the fast path
  // (five bytes or more left) sees their opcodes.
  for (const EdgeCase& c : EdgeCases()) out.emplace_back(c.name, c.bytes + "NNNNNN."s);
  const std::string p2 = "\x80\x02"s;
  out.emplace_back("deep MARKs", p2 + std::string(300, '(') + "N" + std::string(300, '1') + "N.");
  out.emplace_back("a BININT1 and a BININT2 of one value", p2 + "M\x05\x00K\x05K\x05\x86q\x00h\x00h\x00\x87.NNNNN"s);
  out.emplace_back("BINPUT over a key", p2 + "K\x01q\x00K\x02q\x00h\x00h\x00\x86.NNNNN"s);
  out.emplace_back("LONG_BINPUT past the dense end", p2 + "K\x01r\x00\x01\x00\x00K\x02q\x00h\x00j\x00\x01\x00\x00\x86.NNNNN"s);
  return out;
}

BOOST_AUTO_TEST_CASE(run_fast_path_and_step_are_one_machine) {
  const std::vector<std::pair<std::string, std::string>> pickles = FastPathPickles();
  BOOST_TEST(pickles.size() > 30u);
  std::mt19937 rng(20261206);
  for (const auto& [name, bytes] : pickles) {
    CheckFastPath<CountingDomain>(name, bytes, {}, {});
    CheckFastPath<SharingDomain>(name, bytes, {}, {});
    // Every budget kind the fast path charges or checks, stopped a few
    // opcodes in, half-way and near the end.
    const uint64_t n = bytes.size();
    for (uint64_t at : {uint64_t{3}, uint64_t{7}, n / 4, n / 2, n - n / 8}) {
      BudgetLimits ops;
      ops.max_opcodes = at;
      CheckFastPath<SharingDomain>(name + " max_opcodes=" + std::to_string(at), bytes, ops, {});
      BudgetLimits values;
      values.max_values = at / 2;
      CheckFastPath<SharingDomain>(name + " max_values=" + std::to_string(at / 2), bytes, values, {});
      BudgetLimits memo;
      memo.max_memo_slots = at / 4;
      CheckFastPath<SharingDomain>(name + " max_memo_slots=" + std::to_string(at / 4), bytes, memo, {});
      MachineLimits machine;
      machine.max_memo_entries = at / 8;
      machine.max_stack_depth = at / 8 + 1;
      machine.max_mark_depth = at / 64 + 1;
      CheckFastPath<SharingDomain>(name + " machine limits " + std::to_string(at), bytes, {}, machine);
    }
    BudgetLimits nest;
    nest.max_nesting = 2;
    CheckFastPath<SharingDomain>(name + " max_nesting=2", bytes, nest, {});
    // Damaged copies: bytes changed to the fast path's opcodes and others.
    static const char kBytes[] = {'q', 'r', 'h', 'j', '(', 'K', 'N', '\x88', '\x89', '0', '1', 't', '.', '\0', '\xff'};
    for (int round = 0; round < 8 && n > 4; ++round) {
      std::string damaged = bytes;
      for (int k = 0; k < 3; ++k) {
        damaged[2 + rng() % (n - 2)] = kBytes[rng() % sizeof(kBytes)];
      }
      CheckFastPath<SharingDomain>(name + " damaged " + std::to_string(round), damaged, {}, {});
    }
  }
}

}  // namespace
}  // namespace ckptguard

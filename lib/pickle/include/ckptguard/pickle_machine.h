// PickleMachine: the one implementation of pickle's stack semantics.
//
// The restricted VM (lib/load), the scanner's symbolic machine (scanner/) and
// the storage-reference walker (storage_refs.h) differ only in what a value
// is and what a global, a call or a persistent id means; the stack, the MARK
// stack, the memo, the limits and the mapping opcode -> operation are here,
// once, with the C unpickler's rules (_pickle.c, which torch.load runs):
// the fence a MARK puts on the stack, POP taking a MARK at the top, the
// order in which operands are popped, "nothing to do" for an empty APPENDS,
// SETITEMS and ADDITEMS, MEMOIZE storing at len(memo), and so on.
//
// A Domain is a class with these members (Id is MachineId, a handle the
// domain hands out; kMachineNoValue is never one):
//
//   // Scalars and literals: NONE, NEWTRUE/NEWFALSE, INT, BININT*, LONG*,
//   // FLOAT, BINFLOAT, STRING, BINSTRING, SHORT_BINSTRING, *UNICODE*,
//   // *BINBYTES*, BYTEARRAY8 (the operand is op.arg).
//   Result<Id> Literal(const PickleOp& op);
//   // Containers: EMPTY_TUPLE/TUPLE/TUPLE1-3, EMPTY_LIST/LIST,
//   // EMPTY_DICT/DICT (items are key, value pairs), EMPTY_SET/FROZENSET.
//   Result<Id> Tuple(const PickleOp& op, std::span<const Id> items);
//   Result<Id> List(const PickleOp& op, std::span<const Id> items);
//   Result<Id> Dict(const PickleOp& op, std::span<const Id> items);
//   Result<Id> Set(const PickleOp& op, std::span<const Id> items, bool frozen);
//   // In-place updates (never called with no items, as _pickle.c):
//   // APPEND/APPENDS, SETITEM/SETITEMS (pairs), ADDITEMS.
//   Status Append(const PickleOp& op, Id list, std::span<const Id> items);
//   Status SetItems(const PickleOp& op, Id dict, std::span<const Id> items);
//   Status AddItems(const PickleOp& op, Id set, std::span<const Id> items);
//   // Names: GLOBAL (module, name from op.arg) and STACK_GLOBAL (the two
//   // popped values; StackGlobalName in pickle_semantics.h decides them).
//   Result<Id> Global(const PickleOp& op, std::string_view module, std::string_view name);
//   Result<Id> StackGlobal(const PickleOp& op, Id module, Id name);
//   // Calls: REDUCE, NEWOBJ/NEWOBJ_EX (kwargs null for NEWOBJ), OBJ, INST,
//   // BUILD (obj stays on the stack), EXT1/2/4.
//   Result<Id> Reduce(const PickleOp& op, Id callable, Id args);
//   Result<Id> NewObj(const PickleOp& op, Id cls, Id args, const Id* kwargs);
//   Result<Id> Obj(const PickleOp& op, Id cls, std::span<const Id> args);
//   Result<Id> Inst(const PickleOp& op, std::string_view module, std::string_view name, std::span<const Id> args);
//   Status Build(const PickleOp& op, Id obj, Id state);
//   Result<Id> Ext(const PickleOp& op, uint64_t code);
//   // Persistent ids: BINPERSID (pid popped) and PERSID (pid null; the text
//   // is op.arg). Out-of-band buffers: NEXT_BUFFER (target null) and
//   // READONLY_BUFFER (target: the top, which the result replaces).
//   Result<Id> PersistentLoad(const PickleOp& op, const Id* pid);
//   Result<Id> Buffer(const PickleOp& op, const Id* target);
//   // Lenient mode only: an unknown value put where the C unpickler would
//   // have failed, and the failure itself (a stack underflow, a missing
//   // MARK, a memo key never stored...), reported before the machine reads on.
//   Id Opaque();
//   void Malformed(const Error& error);
//   // Optional: POP and POP_MARK dropped `id` and nothing the machine holds
//   // refers to it any more (not the memo, not another stack slot). A
//   // domain may reclaim it when it was the last value it built (a pickle of
//   // NONE POP pairs then costs no memory per pair).
//   void Discard(Id id);
//   // Optional: shared literals. A domain whose scalars are never changed
//   // once made may share one value per literal: LiteralSlot names the
//   // literal's slot (below kMachineLiteralSlots; kMachineNoSlot: not
//   // shared), and the machine asks Literal once per slot and pickle (per
//   // Reset), pushes the same id for every later literal of that slot (the
//   // value is still charged to the budget), and never passes a shared id
//   // to Discard. Shareable, if defined, may refuse to share an id Literal
//   // returned (the scanner's overflow value).
//   size_t LiteralSlot(const PickleOp& op) const;
//   bool Shareable(Id id) const;
//   // Optional: one owner per value. A domain that defines
//   // `static constexpr bool kReclaimsConsumed = true` has Run look through
//   // a strict run's pickle first for the memo keys it reads (MemoReads), so
//   // that shared_high() stays below the values nobody can reach twice; the
//   // domain may then reclaim a value a call used up (a tensor's rebuild
//   // arguments, a storage's persistent id) with everything only it held.
//   // Optional, with reclaiming: tensor records (MachineTensorRecord
//   // below). FusesCallsOf says whether a GLOBAL or STACK_GLOBAL's value is
//   // the callable whose records the machine may hand over whole. Then
//   // RecordStorage does what the record's opcodes up to its BINPERSID
//   // would have done, or returns std::nullopt, having changed nothing (the
//   // machine then runs them one by one), and RecordTensor does what the
//   // rest would have done with the storage it gave. A domain that does
//   // says so with `static constexpr bool kFusesTensorRecords = true`, and
//   // its LiteralSlot must be ScalarLiteralSlot.
//   bool FusesCallsOf(Id callable) const;
//   Result<std::optional<Id>> RecordStorage(const MachineTensorRecord& record);
//   Result<Id> RecordTensor(const MachineTensorRecord& record, Id storage);
//
// shared_high() is the highest id the machine may hold in more than one
// place: one stored under a memo key the pickle reads, shared as a literal,
// or copied by DUP. Any id above it that the domain built was pushed once,
// and after it left the stack it is held only where the domain put it.
//
// In strict mode (the VM) every such failure ends the run with kMalformed at
// the opcode; in lenient mode (the scanner, the walkers) the domain hears of
// it and the machine goes on, so that what follows is still seen. Limits
// (MachineLimits, and the file's Budget: opcodes, values built, memo slots,
// MARK nesting) end the run in both modes with kLimitExceeded.
//
// The hot loop allocates nothing per opcode beyond what the domain builds:
// container items are passed as spans of the machine's own stack.
#ifndef CKPTGUARD_PICKLE_MACHINE_H_
#define CKPTGUARD_PICKLE_MACHINE_H_

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/bulk_allocator.h"
#include "ckptguard/error.h"
#include "ckptguard/inline_vec.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

using MachineId = uint32_t;
inline constexpr MachineId kMachineNoValue = UINT32_MAX;
// Shared literals (the Domain's LiteralSlot): enough for None, False, True
// and the ints 0..1023, which a state dict repeats hundreds of thousands of
// times (sizes, strides, offsets, False).
inline constexpr size_t kMachineLiteralSlots = 1024 + 3;
inline constexpr size_t kMachineNoSlot = SIZE_MAX;

// ScalarLiteralSlot is the LiteralSlot of a domain whose None, bools and
// small ints are never changed once made (the VM's): ints 0..1023 of any int
// opcode, then False, True and None; kMachineNoSlot for any other op.
inline size_t ScalarLiteralSlot(const PickleOp& op) {
  const PickleArg& arg = op.arg;
  switch (op.code) {
    case Opcode::kNone: return 1024 + 2;
    case Opcode::kNewTrue: return 1024 + 1;
    case Opcode::kNewFalse: return 1024;
    case Opcode::kInt:
    case Opcode::kBinInt:
    case Opcode::kBinInt1:
    case Opcode::kBinInt2:
    case Opcode::kLong:
    case Opcode::kLong1:
    case Opcode::kLong4:
      if (arg.type == PickleArgType::kBool) return 1024 + (arg.int_value != 0 ? 1 : 0);
      if (arg.type == PickleArgType::kUInt) return arg.uint_value < 1024 ? static_cast<size_t>(arg.uint_value) : kMachineNoSlot;
      if (arg.type == PickleArgType::kInt) {
        return arg.int_value >= 0 && arg.int_value < 1024 ? static_cast<size_t>(arg.int_value) : kMachineNoSlot;
      }
      return kMachineNoSlot;
    default: return kMachineNoSlot;
  }
}

// MachineTensorRecord is one tensor of a state dict as torch.save pickles
// it after the first (protocol 2, the callable and the persistent id's
// constants already in the memo), from the callable's BINGET to the REDUCE
// that calls it:
//
//   BINGET fn  MARK  MARK  BINGET 'storage'  BINGET type  BINUNICODE key [PUT]
//   BINGET location  int numel  TUPLE [PUT]  BINPERSID  int offset
//   size [PUT]  stride [PUT]  NEWFALSE|NEWTRUE  BINGET hooks  EMPTY_TUPLE
//   REDUCE [PUT]  TUPLE [PUT]  REDUCE
//
// (a size or stride is EMPTY_TUPLE, one to three ints and TUPLE1-3, or MARK,
// ints and TUPLE; an int is BININT1, BININT2 or BININT, never negative;
// a BINGET may be LONG_BINGET and a PUT BINPUT or LONG_BINPUT.) When every
// opcode of it would run without a limit reached, a memo key it stores read
// later, or a shared literal not made yet, the machine hands the record to
// the domain whole (RecordStorage, RecordTensor) instead of running its
// 30-odd opcodes, and charges, counts and stores what they would have. The
// domain must leave what running them would have left: here the VM's one
// tensor value, its arguments and persistent id reclaimed; an error must be
// the one the opcode that meets it would have made, with the file's budget
// charged up to that opcode (tensor_records_test compares both ways under
// every limit).
struct MachineTensorRecord {
  MachineId fn = 0;            // the callable (FusesCallsOf)
  MachineId pid_storage = 0;   // the persistent id's items the memo gave
  MachineId pid_type = 0;
  MachineId pid_location = 0;
  MachineId hooks = 0;         // the callable called with () for the hooks
  std::string_view key;        // the storage key (ASCII)
  int64_t numel = 0;
  int64_t offset = 0;
  InlineVec<int64_t, 4> size;
  InlineVec<int64_t, 4> stride;
  bool requires_grad = false;
  // The ints among numel, offset, size and stride that no literal slot
  // shares (each a value the opcodes would have built).
  bool numel_shared = true;
  bool offset_shared = true;
  uint32_t unshared_size = 0;
  uint32_t unshared_stride = 0;
  // Absolute offsets of the opcodes a domain names in errors.
  uint64_t persid_offset = 0;
  uint64_t reduce_offset = 0;
};

// MachineLimits bounds one run of the machine (one pickle). Each field says
// what it bounds, its default and its ceiling (Clamped). The file's Budget
// bounds all runs of a file together.
struct MachineLimits {
  // Deepest object stack. Default 2^20. Ceiling 2^28.
  uint64_t max_stack_depth = uint64_t{1} << 20;
  // Deepest MARK nesting. Default 10,000. Ceiling 2^20.
  uint64_t max_mark_depth = 10'000;
  // Most memo entries. Default 2^22 (a state dict of 100,000 tensors uses
  // about 1.2 million). Ceiling 2^28.
  uint64_t max_memo_entries = uint64_t{1} << 22;

  MachineLimits Clamped() const {
    MachineLimits out = *this;
    out.max_stack_depth = std::min<uint64_t>(max_stack_depth, uint64_t{1} << 28);
    out.max_mark_depth = std::min<uint64_t>(max_mark_depth, uint64_t{1} << 20);
    out.max_memo_entries = std::min<uint64_t>(max_memo_entries, uint64_t{1} << 28);
    return out;
  }
};

enum class MachineMode : uint8_t {
  kStrict,   // a failure of the C unpickler ends the run (the loader)
  kLenient,  // it is reported to the domain and the run goes on (the scanner, walkers)
};

// MemoSlots is the dense part of MachineMemo: a std::vector's size,
// capacity, reserve, resize, push_back and clear, with the capacity exactly
// what reserve asked (the budget is charged for it), and a push_back that is
// a store when there is room (the memo's common case: its caller checked
// the capacity first). New slots are not written until used.
class MemoSlots {
 public:
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  MachineId& operator[](size_t i) { return slots_[i]; }
  const MachineId& operator[](size_t i) const { return slots_[i]; }
  MemoSlots() = default;
  MemoSlots(const MemoSlots&) = delete;
  MemoSlots& operator=(const MemoSlots&) = delete;
  ~MemoSlots() { BulkAllocator<MachineId>().deallocate(slots_, capacity_); }
  void reserve(size_t n) {
    if (n <= capacity_) return;
    MachineId* fresh = BulkAllocator<MachineId>().allocate(n);
    if (size_ != 0) std::copy(slots_, slots_ + size_, fresh);
    BulkAllocator<MachineId>().deallocate(slots_, capacity_);
    slots_ = fresh;
    capacity_ = n;
  }
  [[gnu::always_inline]] void push_back(MachineId id) {
    if (size_ == capacity_) [[unlikely]] reserve(std::max<size_t>(2 * capacity_, 64));
    slots_[size_++] = id;
  }
  void resize(size_t n, MachineId fill) {
    reserve(n);
    if (n > size_) std::fill(slots_ + size_, slots_ + n, fill);
    size_ = n;
  }
  void clear() { size_ = 0; }

 private:
  MachineId* slots_ = nullptr;  // BulkAllocator: a state dict's memo runs to megabytes
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// MachineMemo maps memo keys to ids. Picklers number keys 0, 1, 2...: those
// live in a dense vector; a key that would leave the dense part less than
// half full (a hostile pickle's 2^60, or keys 1000 apart) goes to a hash
// map, so no key sizes an allocation. Every slot allocated is charged to the
// budget (BudgetKind::kMemoSlots): dense capacity as it grows, and
// kSparseSlotCost per sparse key (a hash node is about eight dense slots).
class MachineMemo {
 public:
  static constexpr uint64_t kSparseSlotCost = 8;
  static constexpr uint64_t kDenseSlack = 64;  // farthest a key may land past the dense end

  const MachineId* Find(uint64_t key) const {
    if (key < dense_.size()) return dense_[key] == kMachineNoValue ? nullptr : &dense_[key];
    if (sparse_.empty()) return nullptr;
    auto it = sparse_.find(key);
    return it == sparse_.end() ? nullptr : &it->second;
  }
  MachineId* Find(uint64_t key) { return const_cast<MachineId*>(std::as_const(*this).Find(key)); }
  // Set stores `value` at `key`, charging `budget` for new slots first.
  Status Set(uint64_t key, MachineId value, Budget& budget, uint64_t offset, std::string_view where) {
    if (key < dense_.size()) {
      count_ += dense_[key] == kMachineNoValue ? 1 : 0;
      dense_[key] = value;
      return OkStatus();
    }
    const bool dense = key < dense_.size() + kDenseSlack && key < (uint64_t{1} << 28) &&
                       2 * (dense_count_ + 1) >= key + 1;
    if (dense) {
      if (key >= dense_.capacity()) {
        const uint64_t cap = std::max<uint64_t>({2 * dense_.capacity(), key + 1, 64});
        CKG_TRY(budget.Charge(BudgetKind::kMemoSlots, cap - dense_.capacity(), offset, where, "memo"));
        dense_.reserve(static_cast<size_t>(cap));
      }
      if (key == dense_.size()) {
        dense_.push_back(value);  // the picklers' case: keys 0, 1, 2...
        ++count_;
        ++dense_count_;
        return OkStatus();
      }
      dense_.resize(static_cast<size_t>(key) + 1, kMachineNoValue);
      dense_[key] = value;
      ++count_;
      ++dense_count_;
      return OkStatus();
    }
    auto it = sparse_.find(key);
    if (it != sparse_.end()) {
      it->second = value;
      return OkStatus();
    }
    CKG_TRY(budget.Charge(BudgetKind::kMemoSlots, kSparseSlotCost, offset, where, "memo"));
    sparse_.emplace(key, value);
    ++count_;
    return OkStatus();
  }
  // TryAppend stores `value` at `key` when that is Set's common case with
  // nothing to charge (the next dense key, room reserved, no sparse keys
  // that could hold it) and returns true; otherwise it changes nothing.
  [[gnu::always_inline]] bool TryAppend(uint64_t key, MachineId value) {
    if (!CanAppend(key)) return false;
    Append(value);
    return true;
  }
  // CanAppend and Append are TryAppend in two steps (the machine's fast
  // path checks everything before it changes anything).
  [[gnu::always_inline]] bool CanAppend(uint64_t key) const {
    return key == dense_.size() && key < dense_.capacity() && sparse_.empty() && key < (uint64_t{1} << 28) &&
           2 * (dense_count_ + 1) >= key + 1;
  }
  // CanAppendRun: `count` keys from `key` on could each be appended in
  // turn (CanAppend before each Append).
  bool CanAppendRun(uint64_t key, uint64_t count) const {
    return count == 0 || (CanAppend(key) && key + count <= dense_.capacity() && key + count <= (uint64_t{1} << 28));
  }
  [[gnu::always_inline]] void Append(MachineId value) {
    dense_.push_back(value);
    ++count_;
    ++dense_count_;
  }
  // size is the number of keys stored (len(memo), where MEMOIZE stores).
  uint64_t size() const { return count_; }
  void Clear() {
    dense_.clear();
    sparse_.clear();
    count_ = 0;
    dense_count_ = 0;
  }

 private:
  MemoSlots dense_;
  std::unordered_map<uint64_t, MachineId> sparse_;
  uint64_t count_ = 0;
  uint64_t dense_count_ = 0;  // keys stored in dense_
};

// MemoKey is the memo key of a GET, PUT or EXT operand (an unsigned or a
// signed integer operand; the machine refuses a negative or huge one first).
inline uint64_t MemoKey(const PickleArg& arg) {
  return arg.type == PickleArgType::kUInt ? arg.uint_value : static_cast<uint64_t>(arg.int_value);
}

// MemoReads is the set of memo keys a pickle reads (GET, BINGET,
// LONG_BINGET), found by ScanMemoReads before the pickle runs. A value that
// the pickle stores only under keys it never reads cannot come back from the
// memo, so storing it does not make it shared (shared_high). A pickle whose
// keys cannot be decided that way (a decode error before STOP, MEMOIZE mixed
// with PUT, a key far beyond the number of stores) reads All.
class MemoReads {
 public:
  static MemoReads All() {
    MemoReads r;
    r.all_ = true;
    return r;
  }
  bool Read(uint64_t key) const {
    if (all_) return true;
    return key < uint64_t{bits_.size()} * 64 && ((bits_[static_cast<size_t>(key >> 6)] >> (key & 63)) & 1) != 0;
  }
  bool all() const { return all_; }

 private:
  friend MemoReads ScanMemoReads(Bytes pickle, const PickleLimits& limits, uint64_t max_ops, uint64_t* ops_to_stop);
  bool all_ = false;
  std::vector<uint64_t> bits_;
};

// ScanMemoReads decodes the pickle at the start of `pickle` up to its STOP
// (at most `max_ops` opcodes) and returns the memo keys it reads. The bit
// set is at most eight bytes per memo store of the pickle; anything
// undecided reads All. When it reached the STOP, `ops_to_stop` (if given)
// receives the opcodes it decoded, STOP included: the answer is then the
// same for any max_ops of at least that many.
MemoReads ScanMemoReads(Bytes pickle, const PickleLimits& limits, uint64_t max_ops, uint64_t* ops_to_stop = nullptr);

// MemoReadsScan is a ScanMemoReads made ahead, with the arguments it was
// made for: a run given one (PickleMachine::UseScan, VmOptions::memo_reads)
// uses its answer only when the run would scan exactly those bytes with
// those limits, and scans itself otherwise. A loader scans data.pkl on
// another thread while this one reads the zip directory.
struct MemoReadsScan {
  const uint8_t* data = nullptr;  // nullptr: no scan
  size_t size = 0;
  PickleLimits limits;
  uint64_t max_ops = 0;
  uint64_t ops_to_stop = 0;  // 0: the scan stopped before the STOP (an error or max_ops)
  MemoReads reads = MemoReads::All();
  mutable bool used = false;  // a run took its answer (For held); for tests

  // For: the run's own scan would answer the same. A scan that reached the
  // STOP answers the same for any max_ops that lets it get there (the run's
  // budget has usually been charged by then, by opening the container); one
  // that did not, only for its own max_ops.
  bool For(Bytes pickle, const PickleLimits& run_limits, uint64_t run_max_ops) const {
    if (data == nullptr || data != pickle.data() || size != pickle.size() || !(limits == run_limits)) return false;
    if (ops_to_stop != 0 && ops_to_stop <= max_ops) return ops_to_stop <= run_max_ops;
    return max_ops == run_max_ops;
  }
};
inline MemoReadsScan ScanMemoReadsAhead(Bytes pickle, const PickleLimits& limits, uint64_t max_ops) {
  MemoReadsScan out{pickle.data(), pickle.size(), limits, max_ops, 0, MemoReads::All(), false};
  out.reads = ScanMemoReads(pickle, limits, max_ops, &out.ops_to_stop);
  return out;
}

// MachineStack is the object stack: a vector whose push is inline (the
// machine pushes for most opcodes; std::vector's push_back, with its
// reallocation, stayed a call from Step).
class MachineStack {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  MachineId& back() { return buf_[size_ - 1]; }
  MachineId back() const { return buf_[size_ - 1]; }
  MachineId operator[](size_t i) const { return buf_[i]; }
  const MachineId* data() const { return buf_.data(); }
  [[gnu::always_inline]] void push_back(MachineId id) {
    if (size_ == buf_.size()) [[unlikely]] Grow(size_ + 1);
    buf_[size_++] = id;
  }
  void pop_back() { --size_; }
  // resize as std::vector's: new slots are 0.
  void resize(size_t n) {
    if (n > buf_.size()) Grow(n);
    if (n > size_) std::fill(buf_.begin() + static_cast<std::ptrdiff_t>(size_), buf_.begin() + static_cast<std::ptrdiff_t>(n), 0);
    size_ = n;
  }
  void clear() { size_ = 0; }
  operator std::span<const MachineId>() const { return {buf_.data(), size_}; }

 private:
  [[gnu::noinline]] void Grow(size_t min_len) { buf_.resize(std::max<size_t>({min_len, 2 * buf_.size(), 64})); }

  std::vector<MachineId> buf_;
  size_t size_ = 0;
};

template <typename Domain>
class PickleMachine {
 public:
  using Id = MachineId;

  // PickleMachine runs pickles for `domain`, charging `budget`; both must
  // outlive it. `where` names the entry in errors.
  PickleMachine(Domain& domain, const MachineLimits& limits, Budget& budget, MachineMode mode, std::string where = {})
      : domain_(domain), limits_(limits.Clamped()), budget_(budget), mode_(mode), where_(std::move(where)) {
    if constexpr (kSharesLiterals) {
      literals_.fill(kMachineNoValue);
      fast_literals_.fill(kMachineNoValue);
    }
  }

  // UseScan gives Run a memo scan made ahead (MemoReadsScan), used when it
  // was made for the pickle Run starts; `scan` must outlive the runs.
  void UseScan(const MemoReadsScan* scan) { scan_ = scan; }

  // Reset forgets the stack, marks and memo: a new pickle starts.
  void Reset() {
    stack_.clear();
    marks_.clear();
    memo_.Clear();
    shared_high_ = -1;
    reads_ = MemoReads::All();
    if constexpr (kSharesLiterals) {
      literals_.fill(kMachineNoValue);
      fast_literals_.fill(kMachineNoValue);
    }
    ops_ = 0;
    fuse_fn_ = kMachineNoValue;
    fuse_next_ = false;
    decode_failed_ = false;
    ended_before_stop_ = false;
  }

  // Run applies the ops of one pickle from `decoder` until its STOP and
  // returns the root value. Errors are the decoder's (decode_failed(); when
  // the data ended before a STOP, ended_before_stop() too), the machine's
  // and the domain's.
  Result<Id> Run(PickleDecoder& decoder) {
    if constexpr (kReclaimsConsumed) {
      // Strict only: a lenient run goes on past a PUT or MEMOIZE that failed,
      // and the keys MEMOIZE stores at would no longer be the scan's.
      if (mode_ == MachineMode::kStrict) {
        const Bytes rest = decoder.Rest();
        const uint64_t max_ops = budget_.remaining(BudgetKind::kOpcodes);
        if (scan_ != nullptr && scan_->For(rest, decoder.limits(), max_ops)) {
          reads_ = scan_->reads;
          scan_->used = true;
        } else {
          reads_ = ScanMemoReads(rest, decoder.limits(), max_ops);
        }
      }
    }
    PickleOp op;  // reused: operands that are views allocate nothing
    while (true) {
      // The common opcodes in one loop over the bytes (Skim keeps the
      // position and count in registers); the rest, and every error, Step.
      decoder.Skim([this](const uint8_t* p, size_t n) -> uint64_t { return FastStep(p, n); });
      if constexpr (kFusesTensorRecords) {
        if (fuse_next_) {
          // FastStep stopped at the BINGET that may start a tensor record.
          fuse_next_ = false;
          CKG_ASSIGN_OR_RETURN(const bool fused, TryTensorRecord(decoder));
          if (fused) continue;
        }
      }
      ended_before_stop_ = decoder.AtEnd();
      if (Status st = decoder.Next(op); !st) {
        decode_failed_ = true;
        return std::unexpected(std::move(st).error());
      }
      CKG_TRY(Step(op));
      if (op.code == Opcode::kStop) return root_;
    }
  }

  // Step applies one op. After STOP, root() is the pickle's value.
  Status Step(const PickleOp& op) {
    ++ops_;
    if (!budget_.TryCharge(BudgetKind::kOpcodes, 1)) [[unlikely]] {
      CKG_TRY(ChargeSlow(BudgetKind::kOpcodes, op, "pickle opcodes"));
    }
    const PickleArg& arg = op.arg;
    switch (op.code) {
      case Opcode::kProto:
      case Opcode::kFrame:
        return OkStatus();
      case Opcode::kStop: {
        CKG_ASSIGN_OR_RETURN(root_, Pop(op));
        return OkStatus();
      }
      case Opcode::kMark:
        if (marks_.size() >= limits_.max_mark_depth) return Limit(op, "max_mark_depth", limits_.max_mark_depth);
        // A lenient run (the scanner's) keeps its marks as offsets, as CPython
        // does, with no nesting to walk: only the opcode budget bounds them,
        // so that MARKs no unpickler limits cannot hide what follows them.
        if (mode_ == MachineMode::kStrict) CKG_TRY(budget_.Nest(marks_.size() + 1, op.offset, where_, "MARK nesting"));
        marks_.push_back(stack_.size());
        return OkStatus();
      case Opcode::kPop:
        // As load_pop: a MARK right at the top is popped instead.
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
          return OkStatus();
        }
        if (stack_.size() <= Fence()) return Structural(op, Underflow(op));
        DropTo(stack_.size() - 1);
        return OkStatus();
      case Opcode::kPopMark: {
        CKG_ASSIGN_OR_RETURN(size_t start, PopMark(op));
        DropTo(start);
        return OkStatus();
      }
      case Opcode::kDup: {
        if (stack_.size() <= Fence()) {
          CKG_TRY(Structural(op, Underflow(op)));
          return Push(op, domain_.Opaque());
        }
        // Held twice now: never reclaimed (shared_high).
        Shared(stack_.back());
        return Push(op, stack_.back());
      }
      case Opcode::kNone:
      case Opcode::kNewTrue:
      case Opcode::kNewFalse:
      case Opcode::kInt:
      case Opcode::kBinInt:
      case Opcode::kBinInt1:
      case Opcode::kBinInt2:
      case Opcode::kLong:
      case Opcode::kLong1:
      case Opcode::kLong4:
      case Opcode::kFloat:
      case Opcode::kBinFloat:
      case Opcode::kString:
      case Opcode::kBinString:
      case Opcode::kShortBinString:
      case Opcode::kUnicode:
      case Opcode::kBinUnicode:
      case Opcode::kShortBinUnicode:
      case Opcode::kBinUnicode8:
      case Opcode::kBinBytes:
      case Opcode::kShortBinBytes:
      case Opcode::kBinBytes8:
      case Opcode::kByteArray8: {
        CKG_TRY(ChargeValue(op));
        if constexpr (kSharesLiterals) {
          const size_t slot = domain_.LiteralSlot(op);
          if (slot < kMachineLiteralSlots) {
            Id& shared = literals_[slot];
            if (shared != kMachineNoValue) {
              RememberFastLiteral(op, shared);
              return Push(op, shared);
            }
            CKG_ASSIGN_OR_RETURN(Id v, domain_.Literal(op));
            if (Shareable(v)) {
              shared = v;
              // Never Discarded (DropTo): shared like a memoized value.
              Shared(v);
              RememberFastLiteral(op, v);
            }
            return Push(op, v);
          }
        }
        CKG_ASSIGN_OR_RETURN(Id v, domain_.Literal(op));
        return Push(op, v);
      }
      case Opcode::kEmptyTuple:
        return Make(op, [&] { return domain_.Tuple(op, {}); });
      case Opcode::kEmptyList:
        return Make(op, [&] { return domain_.List(op, {}); });
      case Opcode::kEmptyDict:
        return Make(op, [&] { return domain_.Dict(op, {}); });
      case Opcode::kEmptySet:
        return Make(op, [&] { return domain_.Set(op, {}, false); });
      case Opcode::kTuple:
      case Opcode::kList:
      case Opcode::kDict:
      case Opcode::kFrozenSet: {
        CKG_ASSIGN_OR_RETURN(size_t start, PopMark(op));
        std::span<const Id> items = Above(start);
        if (op.code == Opcode::kDict && items.size() % 2 != 0) {
          CKG_TRY(Structural(op, Name(op) + ": odd number of items for a dict"));
          items = items.first(items.size() - 1);
        }
        CKG_TRY(ChargeValue(op));
        Result<Id> v = op.code == Opcode::kTuple  ? domain_.Tuple(op, items)
                       : op.code == Opcode::kList ? domain_.List(op, items)
                       : op.code == Opcode::kDict ? domain_.Dict(op, items)
                                                  : domain_.Set(op, items, true);
        if (!v) return std::unexpected(std::move(v).error());
        stack_.resize(start);
        return Push(op, *v);
      }
      case Opcode::kTuple1:
      case Opcode::kTuple2:
      case Opcode::kTuple3: {
        const size_t n = op.code == Opcode::kTuple1 ? 1 : op.code == Opcode::kTuple2 ? 2 : 3;
        Id items[3];
        for (size_t i = n; i-- > 0;) {
          CKG_ASSIGN_OR_RETURN(items[i], Pop(op));
        }
        return Make(op, [&] { return domain_.Tuple(op, std::span<const Id>(items, n)); });
      }
      case Opcode::kAppend:
      case Opcode::kSetItem: {
        // do_append / do_setitems at len - 1 (len - 2): the target must be
        // above the fence too.
        const size_t n = op.code == Opcode::kAppend ? 1 : 2;
        if (stack_.size() < Fence() + n + 1) {
          CKG_TRY(Structural(op, Underflow(op)));
          stack_.resize(std::max(Fence(), stack_.size() >= n ? stack_.size() - n : 0));
          return OkStatus();
        }
        const size_t start = stack_.size() - n;
        const Id target = stack_[start - 1];
        CKG_TRY(op.code == Opcode::kAppend ? domain_.Append(op, target, Above(start))
                                           : domain_.SetItems(op, target, Above(start)));
        stack_.resize(start);
        return OkStatus();
      }
      case Opcode::kAppends:
      case Opcode::kSetItems:
      case Opcode::kAddItems: {
        CKG_ASSIGN_OR_RETURN(size_t start, PopMark(op));
        if (start <= Fence()) {
          // No target above the (new) fence.
          CKG_TRY(Structural(op, Underflow(op)));
          stack_.resize(std::max(start, Fence()));
          return OkStatus();
        }
        std::span<const Id> items = Above(start);
        if (items.empty()) return OkStatus();  // "nothing to do": the target is not even looked at
        if (op.code == Opcode::kSetItems && items.size() % 2 != 0) {
          CKG_TRY(Structural(op, Name(op) + ": odd number of items for SETITEMS"));
          items = items.first(items.size() - 1);
        }
        const Id target = stack_[start - 1];
        CKG_TRY(op.code == Opcode::kAppends    ? domain_.Append(op, target, items)
                : op.code == Opcode::kSetItems ? domain_.SetItems(op, target, items)
                                               : domain_.AddItems(op, target, items));
        stack_.resize(start);
        return OkStatus();
      }
      case Opcode::kGet:
      case Opcode::kBinGet:
      case Opcode::kLongBinGet: {
        if (arg.type == PickleArgType::kInt && arg.int_value < 0) {
          CKG_TRY(Structural(op, Name(op) + ": negative memo key"));
          return Push(op, domain_.Opaque());
        }
        const uint64_t key = MemoKey(arg);
        const Id* found = arg.type == PickleArgType::kBigInt ? nullptr : memo_.Find(key);
        if (found == nullptr) {
          CKG_TRY(Structural(op, Name(op) + ": memo key " + std::to_string(key) + " was never stored"));
          return Push(op, domain_.Opaque());
        }
        return Push(op, *found);
      }
      case Opcode::kPut:
      case Opcode::kBinPut:
      case Opcode::kLongBinPut:
        if (arg.type == PickleArgType::kInt && arg.int_value < 0) {
          return Structural(op, Name(op) + ": negative memo key");
        }
        if (arg.type == PickleArgType::kBigInt) return Structural(op, Name(op) + ": memo key too large");
        return Memo(op, MemoKey(arg));
      case Opcode::kMemoize:
        return Memo(op, memo_.size());
      case Opcode::kGlobal:
        CKG_TRY(Make(op, [&] { return domain_.Global(op, arg.Data(), arg.Name()); }));
        NoteFusable(stack_.back());
        return OkStatus();
      case Opcode::kStackGlobal: {
        CKG_ASSIGN_OR_RETURN(Id name, Pop(op));
        CKG_ASSIGN_OR_RETURN(Id module, Pop(op));
        CKG_TRY(Make(op, [&] { return domain_.StackGlobal(op, module, name); }));
        NoteFusable(stack_.back());
        return OkStatus();
      }
      case Opcode::kReduce: {
        CKG_ASSIGN_OR_RETURN(Id args, Pop(op));
        CKG_ASSIGN_OR_RETURN(Id callable, Pop(op));
        return Make(op, [&] { return domain_.Reduce(op, callable, args); });
      }
      case Opcode::kNewObj:
      case Opcode::kNewObjEx: {
        Id kwargs = kMachineNoValue;
        if (op.code == Opcode::kNewObjEx) {
          CKG_ASSIGN_OR_RETURN(kwargs, Pop(op));
        }
        CKG_ASSIGN_OR_RETURN(Id args, Pop(op));
        CKG_ASSIGN_OR_RETURN(Id cls, Pop(op));
        return Make(op, [&] {
          return domain_.NewObj(op, cls, args, op.code == Opcode::kNewObjEx ? &kwargs : nullptr);
        });
      }
      case Opcode::kObj: {
        // load_obj: the MARK, then at least the class above it.
        CKG_ASSIGN_OR_RETURN(size_t start, PopMark(op));
        if (stack_.size() <= start) {
          CKG_TRY(Structural(op, Underflow(op)));
          return Push(op, domain_.Opaque());
        }
        const std::span<const Id> items = Above(start);
        CKG_TRY(ChargeValue(op));
        CKG_ASSIGN_OR_RETURN(Id v, domain_.Obj(op, items[0], items.subspan(1)));
        stack_.resize(start);
        return Push(op, v);
      }
      case Opcode::kInst: {
        // load_inst: the MARK first, then find_class, then the arguments.
        CKG_ASSIGN_OR_RETURN(size_t start, PopMark(op));
        CKG_TRY(ChargeValue(op));
        CKG_ASSIGN_OR_RETURN(Id v, domain_.Inst(op, arg.Data(), arg.Name(), Above(start)));
        stack_.resize(start);
        return Push(op, v);
      }
      case Opcode::kBuild: {
        CKG_ASSIGN_OR_RETURN(Id state, Pop(op));
        if (stack_.size() <= Fence()) return Structural(op, Underflow(op));
        if constexpr (std::is_same_v<decltype(domain_.Build(op, stack_.back(), state)), Result<Id>>) {
          // A domain whose BUILD may leave another value in the object's
          // place (joblib's NumpyUnpickler leaves the array it reads).
          CKG_ASSIGN_OR_RETURN(const Id top, domain_.Build(op, stack_.back(), state));
          stack_.back() = top;
          return OkStatus();
        } else {
          return domain_.Build(op, stack_.back(), state);
        }
      }
      case Opcode::kExt1:
      case Opcode::kExt2:
      case Opcode::kExt4:
        return Make(op, [&] { return domain_.Ext(op, MemoKey(arg)); });
      case Opcode::kPersId:
        return Make(op, [&] { return domain_.PersistentLoad(op, nullptr); });
      case Opcode::kBinPersId: {
        CKG_ASSIGN_OR_RETURN(Id pid, Pop(op));
        return Make(op, [&] { return domain_.PersistentLoad(op, &pid); });
      }
      case Opcode::kNextBuffer:
        return Make(op, [&] { return domain_.Buffer(op, nullptr); });
      case Opcode::kReadonlyBuffer: {
        if (stack_.size() <= Fence()) return Structural(op, Underflow(op));
        const Id target = stack_.back();
        CKG_ASSIGN_OR_RETURN(Id v, domain_.Buffer(op, &target));
        stack_.back() = v;
        return OkStatus();
      }
    }
    return std::unexpected(Error{ErrorCode::kUnsupportedOpcode, op.offset, where_, Name(op) + ": not handled"});
  }

  // root is the value STOP popped.
  Id root() const { return root_; }
  // shared_high: see the top of this file (-1: nothing shared yet).
  int64_t shared_high() const { return shared_high_; }
  // ops counts the opcodes of the current pickle (since Reset).
  uint64_t ops() const { return ops_; }
  bool decode_failed() const { return decode_failed_; }
  bool ended_before_stop() const { return ended_before_stop_; }
  // stack is the object stack, bottom first (for error messages).
  std::span<const Id> stack() const { return stack_; }
  const std::string& where() const { return where_; }
  void set_where(std::string where) { where_ = std::move(where); }

 private:
  static constexpr bool kSharesLiterals = requires(const Domain& d, const PickleOp& op) {
    { d.LiteralSlot(op) } -> std::convertible_to<size_t>;
  };
  static constexpr bool kReclaimsConsumed = [] {
    if constexpr (requires { Domain::kReclaimsConsumed; }) {
      return Domain::kReclaimsConsumed;
    } else {
      return false;
    }
  }();
  // (A flag the domain declares, as kReclaimsConsumed: clang 16 crashes on
  // a requires-expression with return-type requirements here.)
  static constexpr bool kFusesTensorRecords = [] {
    if constexpr (requires { Domain::kFusesTensorRecords; }) {
      return kReclaimsConsumed && kSharesLiterals && Domain::kFusesTensorRecords;
    } else {
      return false;
    }
  }();
  // NoteFusable: a GLOBAL or STACK_GLOBAL just pushed `id`; a later BINGET
  // of it may start a tensor record (strict runs only: the records stand
  // for opcodes that would all have run).
  void NoteFusable(Id id) {
    if constexpr (kFusesTensorRecords) {
      if (mode_ == MachineMode::kStrict && domain_.FusesCallsOf(id)) fuse_fn_ = id;
    }
  }
  bool Shareable(Id id) const {
    if constexpr (requires(const Domain& d) { d.Shareable(id); }) {
      return domain_.Shareable(id);
    } else {
      return true;
    }
  }
  static std::string Name(const PickleOp& op) { return std::string(op.Info().name); }
  // Shared: `id` may now be held in more than one place (shared_high).
  void Shared(Id id) { shared_high_ = std::max<int64_t>(shared_high_, static_cast<int64_t>(id)); }
  // Stored: `id` went into the memo under `key`; it is shared only when the
  // pickle reads that key (MemoReads).
  void Stored(uint64_t key, Id id) {
    if (reads_.Read(key)) Shared(id);
  }
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  std::span<const Id> Above(size_t start) const {
    return std::span<const Id>(stack_.data() + start, stack_.size() - start);
  }
  std::string Underflow(const PickleOp& op) const {
    return Name(op) + ": stack underflow" + (marks_.empty() ? "" : " (below the MARK)");
  }

  // Structural: a failure of the C unpickler. Strict: the run's error.
  // Lenient: the domain hears of it and the caller substitutes.
  Status Structural(const PickleOp& op, std::string detail) {
    Error e{ErrorCode::kMalformed, op.offset, where_, std::move(detail)};
    if (mode_ == MachineMode::kStrict) return std::unexpected(std::move(e));
    domain_.Malformed(e);
    return OkStatus();
  }
  std::unexpected<Error> Limit(const PickleOp& op, const char* name, uint64_t value) const {
    return std::unexpected(Error{ErrorCode::kLimitExceeded, op.offset, where_,
                                 std::string(name) + " (" + std::to_string(value) + ") exceeded"});
  }
  // ChargeSlow is the budget's decision and error, out of the hot path.
  [[gnu::noinline, gnu::cold]] Status ChargeSlow(BudgetKind kind, const PickleOp& op, const char* what) {
    return budget_.Charge(kind, 1, op.offset, where_, what);
  }
  [[gnu::always_inline]] Status ChargeValue(const PickleOp& op) {
    if (budget_.TryCharge(BudgetKind::kValues, 1)) [[likely]] return OkStatus();
    return ChargeSlow(BudgetKind::kValues, op, "values built");
  }

  [[gnu::always_inline]] Status Push(const PickleOp& op, Id id) {
    if (stack_.size() >= limits_.max_stack_depth) [[unlikely]] return PushLimit(op);
    stack_.push_back(id);
    return OkStatus();
  }
  [[gnu::noinline, gnu::cold]] Status PushLimit(const PickleOp& op) const {
    return Limit(op, "max_stack_depth", limits_.max_stack_depth);
  }
  // Make charges one value, asks the domain for it and pushes it.
  template <typename F>
  [[gnu::always_inline]] Status Make(const PickleOp& op, F&& make) {
    CKG_TRY(ChargeValue(op));
    CKG_ASSIGN_OR_RETURN(Id v, make());
    return Push(op, v);
  }
  [[gnu::always_inline]] Result<Id> Pop(const PickleOp& op) {
    if (stack_.size() <= Fence()) [[unlikely]] {
      CKG_TRY(Structural(op, Underflow(op)));
      return domain_.Opaque();
    }
    const Id id = stack_.back();
    stack_.pop_back();
    return id;
  }
  // PopMark removes the topmost MARK (as marker() does; the fence drops to
  // the MARK below) and returns where the items above it start. Lenient and
  // no MARK: no items.
  Result<size_t> PopMark(const PickleOp& op) {
    if (marks_.empty()) {
      CKG_TRY(Structural(op, Name(op) + ": no MARK"));
      return stack_.size();
    }
    const size_t start = marks_.back();
    marks_.pop_back();
    return start;
  }
  // FastStep is Run's byte-level path for the opcodes that make most of a
  // state dict (BINPUT, LONG_BINPUT, BINGET, LONG_BINGET, MARK and the
  // shared literals BININT1, NONE, NEWTRUE, NEWFALSE): when the opcode at
  // `p` is one of them and its common case holds (nothing to report, no
  // limit reached, nothing that needs the domain), it applies it exactly
  // as Step would, opcode and value charges included, and returns its
  // length; otherwise it changes nothing and returns 0, and Step takes the
  // opcode (and any error) as usual. `p` has five readable bytes.
  [[gnu::always_inline]] size_t FastStep(const uint8_t* p, size_t avail) {
    (void)avail;
    switch (p[0]) {
      case static_cast<uint8_t>(Opcode::kBinPut):
      case static_cast<uint8_t>(Opcode::kLongBinPut): {
        const bool long_key = p[0] == static_cast<uint8_t>(Opcode::kLongBinPut);
        const uint64_t key = long_key ? PickleDecoder::LoadU32LE(p + 1) : p[1];
        if (stack_.size() <= Fence() || memo_.size() >= limits_.max_memo_entries || !memo_.CanAppend(key) ||
            !budget_.TryCharge(BudgetKind::kOpcodes, 1)) {
          return 0;
        }
        ++ops_;
        const Id top = stack_.back();
        memo_.Append(top);
        Stored(key, top);
        return long_key ? 5 : 2;
      }
      case static_cast<uint8_t>(Opcode::kBinGet):
      case static_cast<uint8_t>(Opcode::kLongBinGet): {
        const bool long_key = p[0] == static_cast<uint8_t>(Opcode::kLongBinGet);
        const Id* found = memo_.Find(long_key ? PickleDecoder::LoadU32LE(p + 1) : p[1]);
        if constexpr (kFusesTensorRecords) {
          // The callable of tensor records, then MARK MARK: Run tries the
          // record whole.
          const size_t len = long_key ? 5 : 2;
          if (found != nullptr && *found == fuse_fn_ && avail >= len + 2 &&
              p[len] == static_cast<uint8_t>(Opcode::kMark) && p[len + 1] == static_cast<uint8_t>(Opcode::kMark)) {
            fuse_next_ = true;
            return 0;
          }
        }
        if (found == nullptr || stack_.size() >= limits_.max_stack_depth ||
            !budget_.TryCharge(BudgetKind::kOpcodes, 1)) {
          return 0;
        }
        ++ops_;
        stack_.push_back(*found);
        return long_key ? 5 : 2;
      }
      case static_cast<uint8_t>(Opcode::kMark):
        // Budget::Nest has nothing to do at a depth the file reached before.
        if (marks_.size() >= limits_.max_mark_depth ||
            (mode_ == MachineMode::kStrict && marks_.size() + 1 > budget_.used(BudgetKind::kNesting)) ||
            !budget_.TryCharge(BudgetKind::kOpcodes, 1)) {
          return 0;
        }
        ++ops_;
        marks_.push_back(stack_.size());
        return 1;
      default:
        break;
    }
    if constexpr (kSharesLiterals) {
      const size_t slot = FastLiteralSlot(p[0], p[1]);
      if (slot == kFastLiteralSlots) return 0;
      const Id shared = fast_literals_[slot];
      if (shared == kMachineNoValue || stack_.size() >= limits_.max_stack_depth ||
          !budget_.CanCharge(BudgetKind::kOpcodes, 1) || !budget_.CanCharge(BudgetKind::kValues, 1)) {
        return 0;
      }
      (void)budget_.TryCharge(BudgetKind::kOpcodes, 1);
      (void)budget_.TryCharge(BudgetKind::kValues, 1);
      ++ops_;
      stack_.push_back(shared);
      return p[0] == static_cast<uint8_t>(Opcode::kBinInt1) ? 2 : 1;
    }
    return 0;
  }
  // TryTensorRecord reads a tensor record (MachineTensorRecord) at the
  // decoder's position, which FastStep left at its callable's BINGET. When
  // every opcode of it would run here without an error of the machine's (a
  // limit, the budget, a memo key it stores that the pickle reads later, a
  // shared literal not made yet) and the domain takes it, it charges,
  // counts, stores and pushes as those opcodes would have and returns true;
  // otherwise it changes nothing and returns false, and Step runs them. The
  // domain's error (a storage that does not resolve, a view past its
  // storage) is the run's, as the opcode that meets it would have made it.
  [[gnu::noinline]] Result<bool> TryTensorRecord(PickleDecoder& decoder) {
    const Bytes window = decoder.SkimWindow();
    const uint8_t* const p = window.data();
    const size_t n = window.size();
    const uint64_t base = decoder.Offset();
    size_t pos = 0;
    uint64_t ops = 0;
    uint64_t values = 0;
    // The stack above its top now, its peak, and the MARKs open (as heights).
    size_t height = 0;
    size_t peak = 0;
    size_t marks[2];
    size_t num_marks = 0;
    size_t max_marks = 0;
    uint64_t puts = 0;
    MachineTensorRecord r;
    auto at = [&](Opcode code) __attribute__((always_inline)) { return pos < n && p[pos] == static_cast<uint8_t>(code); };
    auto push = [&]() __attribute__((always_inline)) {
      ++height;
      peak = std::max(peak, height);
    };
    auto op1 = [&](Opcode code) __attribute__((always_inline)) {  // an opcode without an operand
      if (!at(code)) return false;
      ++pos;
      ++ops;
      return true;
    };
    auto get = [&](Id& id) __attribute__((always_inline)) {
      uint64_t key;
      if (at(Opcode::kBinGet) && n - pos >= 2) {
        key = p[pos + 1];
        pos += 2;
      } else if (at(Opcode::kLongBinGet) && n - pos >= 5) {
        key = PickleDecoder::LoadU32LE(p + pos + 1);
        pos += 5;
      } else {
        return false;
      }
      const Id* found = memo_.Find(key);
      if (found == nullptr) return false;
      id = *found;
      ++ops;
      push();
      return true;
    };
    auto put = [&]() __attribute__((always_inline)) {  // optional; its key must be the memo's next and never read
      uint64_t key;
      size_t len;
      if (at(Opcode::kBinPut) && n - pos >= 2) {
        key = p[pos + 1];
        len = 2;
      } else if (at(Opcode::kLongBinPut) && n - pos >= 5) {
        key = PickleDecoder::LoadU32LE(p + pos + 1);
        len = 5;
      } else {
        return !at(Opcode::kBinPut) && !at(Opcode::kLongBinPut);
      }
      if (key != memo_.size() + puts || reads_.Read(key)) return false;
      pos += len;
      ++ops;
      ++puts;
      return true;
    };
    auto mark = [&]() __attribute__((always_inline)) {
      if (num_marks == 2 || !op1(Opcode::kMark)) return false;
      marks[num_marks++] = height;
      max_marks = std::max(max_marks, num_marks);
      return true;
    };
    // A literal the machine would share (ScalarLiteralSlot, the domain's
    // LiteralSlot) must be made already: the slot, or kMachineNoSlot.
    auto made = [&](size_t slot) __attribute__((always_inline)) {
      return slot == kMachineNoSlot || literals_[slot] != kMachineNoValue;
    };
    auto integer = [&](int64_t& v, bool& is_shared) __attribute__((always_inline)) {
      if (pos >= n) return false;
      uint32_t raw;
      size_t len;
      bool is_signed = false;
      switch (static_cast<Opcode>(p[pos])) {
        case Opcode::kBinInt1: len = 2; break;
        case Opcode::kBinInt2: len = 3; break;
        case Opcode::kBinInt: len = 5; is_signed = true; break;
        default: return false;
      }
      if (n - pos < 5) return false;  // (five bytes read: as the decoder's own fast path)
      raw = PickleDecoder::LoadU32LE(p + pos + 1) & (len == 2 ? 0xffu : len == 3 ? 0xffffu : 0xffffffffu);
      v = is_signed ? int64_t{static_cast<int32_t>(raw)} : int64_t{raw};
      if (v < 0) return false;
      const size_t slot = v < 1024 ? static_cast<size_t>(v) : kMachineNoSlot;
      if (!made(slot)) return false;
      is_shared = slot != kMachineNoSlot;
      pos += len;
      ++ops;
      ++values;
      push();
      return true;
    };
    // A tuple of ints (size, stride), as the picklers write one.
    auto ints = [&](InlineVec<int64_t, 4>& out, uint32_t& unshared) __attribute__((always_inline)) {
      constexpr size_t kMaxDims = 16;  // the domain reclaims a record's values in one window
      int64_t v;
      bool is_shared;
      if (op1(Opcode::kEmptyTuple)) {
        ++values;
        push();
        return true;
      }
      const bool marked = at(Opcode::kMark);
      if (marked && !mark()) return false;
      while (out.size() < kMaxDims && pos < n &&
             (at(Opcode::kBinInt1) || at(Opcode::kBinInt2) || at(Opcode::kBinInt))) {
        if (!integer(v, is_shared)) return false;
        out.push_back(v);
        unshared += is_shared ? 0 : 1;
      }
      if (marked) {
        if (!op1(Opcode::kTuple)) return false;
        --num_marks;
      } else if (!(out.size() == 1 && op1(Opcode::kTuple1)) && !(out.size() == 2 && op1(Opcode::kTuple2)) &&
                 !(out.size() == 3 && op1(Opcode::kTuple3))) {
        return false;
      }
      ++values;
      height -= out.size();
      push();
      return out.empty() || put();
    };
    auto pop_to_mark = [&](size_t items) __attribute__((always_inline)) {  // TUPLE of `items` above the innermost MARK
      if (num_marks == 0 || height - marks[num_marks - 1] != items) return false;
      height = marks[--num_marks];
      ++values;
      push();
      return true;
    };

    Id fn;
    if (!get(fn) || fn != fuse_fn_ || !mark() || !mark()) return false;
    if (!get(r.pid_storage) || !get(r.pid_type)) return false;
    {  // the storage key: BINUNICODE or SHORT_BINUNICODE, ASCII
      const bool short_len = at(Opcode::kShortBinUnicode);
      if (!short_len && !at(Opcode::kBinUnicode)) return false;
      const size_t head = short_len ? 2 : 5;
      if (n - pos < head) return false;
      const uint64_t len = short_len ? uint64_t{p[pos + 1]} : uint64_t{PickleDecoder::LoadU32LE(p + pos + 1)};
      if (len > decoder.limits().max_operand_len || len > n - pos - head ||
          !PickleDecoder::IsAscii(p + pos + head, len)) {
        return false;
      }
      r.key = std::string_view(reinterpret_cast<const char*>(p + pos + head), static_cast<size_t>(len));
      pos += head + static_cast<size_t>(len);
      ++ops;
      ++values;
      push();
    }
    if (!put() || !get(r.pid_location) || !integer(r.numel, r.numel_shared)) return false;
    if (!op1(Opcode::kTuple) || !pop_to_mark(5) || !put()) return false;
    r.persid_offset = base + pos;
    if (!op1(Opcode::kBinPersId)) return false;
    ++values;  // the persistent id's place: the storage
    const uint64_t ops_to_storage = ops;
    const uint64_t values_to_storage = values;
    if (!integer(r.offset, r.offset_shared)) return false;
    if (!ints(r.size, r.unshared_size) || !ints(r.stride, r.unshared_stride)) return false;
    {
      const bool grad = at(Opcode::kNewTrue);
      if (!grad && !at(Opcode::kNewFalse)) return false;
      if (!made(grad ? 1024 + 1 : 1024)) return false;
      r.requires_grad = grad;
      ++pos;
      ++ops;
      ++values;
      push();
    }
    if (!get(r.hooks) || !op1(Opcode::kEmptyTuple)) return false;
    ++values;
    push();
    if (!op1(Opcode::kReduce)) return false;
    ++values;
    height -= 1;  // callable and () make the hooks
    if (!put() || !op1(Opcode::kTuple) || !pop_to_mark(6) || !put()) return false;
    r.reduce_offset = base + pos;
    if (!op1(Opcode::kReduce)) return false;
    ++values;
    r.fn = fn;

    // What Step would have checked on the way.
    if (stack_.size() + peak > limits_.max_stack_depth || marks_.size() + max_marks > limits_.max_mark_depth ||
        marks_.size() + max_marks > budget_.used(BudgetKind::kNesting) ||
        memo_.size() + puts > limits_.max_memo_entries || !memo_.CanAppendRun(memo_.size(), puts) ||
        !budget_.CanCharge(BudgetKind::kOpcodes, ops) || !budget_.CanCharge(BudgetKind::kValues, values) ||
        decoder.NumOps() > decoder.limits().max_ops || ops > decoder.limits().max_ops - decoder.NumOps()) {
      return false;
    }
    // The charges of the opcodes through BINPERSID, then of the rest, as
    // Step makes them before each opcode's work (checked above: they fit).
    Result<std::optional<Id>> storage = domain_.RecordStorage(r);
    if (storage && !storage->has_value()) return false;
    (void)budget_.TryCharge(BudgetKind::kOpcodes, ops_to_storage);
    (void)budget_.TryCharge(BudgetKind::kValues, values_to_storage);
    if (!storage) return std::unexpected(std::move(storage).error());
    Result<Id> tensor = domain_.RecordTensor(r, **storage);
    (void)budget_.TryCharge(BudgetKind::kOpcodes, ops - ops_to_storage);
    (void)budget_.TryCharge(BudgetKind::kValues, values - values_to_storage);
    if (!tensor) return std::unexpected(std::move(tensor).error());
    ops_ += ops;
    for (uint64_t i = 0; i < puts; ++i) memo_.Append(*tensor);  // (never read)
    stack_.push_back(*tensor);
    (void)decoder.TrySkipOps(pos, ops);
    return true;
  }

  // The fast path's literals, by opcode byte and operand byte: BININT1
  // 0..255, then NONE, NEWTRUE and NEWFALSE; kFastLiteralSlots for any other
  // opcode. Step records the value it shared for each (RememberFastLiteral);
  // the domain's LiteralSlot decides what is shared.
  static constexpr size_t kFastLiteralSlots = 256 + 3;
  static size_t FastLiteralSlot(uint8_t code, uint8_t operand) {
    switch (code) {
      case static_cast<uint8_t>(Opcode::kBinInt1): return operand;
      case static_cast<uint8_t>(Opcode::kNone): return 256;
      case static_cast<uint8_t>(Opcode::kNewTrue): return 257;
      case static_cast<uint8_t>(Opcode::kNewFalse): return 258;
      default: return kFastLiteralSlots;
    }
  }
  void RememberFastLiteral(const PickleOp& op, Id v) {
    const size_t slot = FastLiteralSlot(static_cast<uint8_t>(op.code), static_cast<uint8_t>(op.arg.uint_value));
    if (slot < kFastLiteralSlots) fast_literals_[slot] = v;
  }

  // Memo: PUT/BINPUT/LONG_BINPUT/MEMOIZE. A picklers' next key is stored
  // inline (one per value of a state dict); the rest in MemoSlow.
  [[gnu::always_inline]] Status Memo(const PickleOp& op, uint64_t key) {
    if (stack_.size() > Fence() && memo_.size() < limits_.max_memo_entries) [[likely]] {
      const Id top = stack_.back();
      if (memo_.TryAppend(key, top)) {
        Stored(key, top);
        return OkStatus();
      }
    }
    return MemoSlow(op, key);
  }
  [[gnu::noinline]] Status MemoSlow(const PickleOp& op, uint64_t key) {
    if (stack_.size() <= Fence()) return Structural(op, Underflow(op));
    const Id top = stack_.back();
    Id* found = memo_.Find(key);
    if (found == nullptr && memo_.size() >= limits_.max_memo_entries) {
      return Limit(op, "max_memo_entries", limits_.max_memo_entries);
    }
    Stored(key, top);
    if (found != nullptr) {
      *found = top;  // what Set does for a key already stored, without a second lookup
      return OkStatus();
    }
    return memo_.Set(key, top, budget_, op.offset, where_);
  }

  // DropTo shrinks the stack to `size` (POP, POP_MARK), telling a domain that
  // wants to know (Discard) of each dropped id nothing refers to any more:
  // ids are handed out in increasing order, so one above shared_high() is
  // not in the memo under a key the pickle reads, and was never DUPed.
  void DropTo(size_t size) {
    while (stack_.size() > size) {
      const Id id = stack_.back();
      stack_.pop_back();
      if constexpr (requires(Domain& d) { d.Discard(id); }) {
        if (id != kMachineNoValue && static_cast<int64_t>(id) > shared_high_) {
          domain_.Discard(id);
        }
      }
    }
  }

  Domain& domain_;
  MachineLimits limits_;
  Budget& budget_;
  MachineMode mode_;
  std::string where_;
  MachineStack stack_;
  std::vector<size_t> marks_;
  MachineMemo memo_;
  int64_t shared_high_ = -1;  // shared_high() (-1: none)
  MemoReads reads_ = MemoReads::All();  // the keys the running pickle reads (Run)
  const MemoReadsScan* scan_ = nullptr;  // UseScan
  // Shared literals (LiteralSlot -> id), for domains that share them.
  std::array<Id, kMachineLiteralSlots> literals_;
  std::array<Id, kFastLiteralSlots> fast_literals_;  // FastStep's view of literals_
  Id root_ = kMachineNoValue;
  Id fuse_fn_ = kMachineNoValue;  // NoteFusable
  bool fuse_next_ = false;        // FastStep stopped at a record's first BINGET
  uint64_t ops_ = 0;
  bool decode_failed_ = false;
  bool ended_before_stop_ = false;
};

// CollectGlobalNames reads on from `decoder` (after a run stopped, say)
// through the machine in a names-only domain (str, int, tuple and global
// values; everything else opaque; lenient) and calls `on_global` with the
// (module, name) of every GLOBAL, resolved STACK_GLOBAL and INST, in order,
// until STOP, the end of the data, a decode error, `max_ops` opcodes, or
// `on_global` returning false. The VM names the other globals of a pickle
// this way after refusing one.
void CollectGlobalNames(PickleDecoder& decoder, uint64_t max_ops,
                        const std::function<bool(std::string_view module, std::string_view name)>& on_global);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PICKLE_MACHINE_H_

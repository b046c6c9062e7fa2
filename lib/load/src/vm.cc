#include "ckptguard/vm.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <cstring>
#include <set>
#include <unordered_map>

#include "ckptguard/callables.h"
#include "ckptguard/container.h"
#include "ckptguard/npy_reader.h"
#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"
#include "ckptguard/printable.h"
#include "py_text.h"

namespace ckptguard {
bool IsCooIndexDType(DType dtype) {
  switch (dtype) {
    case DType::kInt8: case DType::kUInt8: case DType::kInt16: case DType::kUInt16: case DType::kInt32:
    case DType::kUInt32: case DType::kInt64: case DType::kUInt64: case DType::kBool: case DType::kFloat32:
    case DType::kFloat64:
      return true;
    default:
      return false;
  }
}

namespace {

constexpr uint32_t kScriptClass = 0xffff;  // kGlobal index for a TorchScript "__torch__.*" class
// kGlobal index of a callable of a record kind of rules/callables.toml
// (int_value: its CallableKind) or of an allowlist entry with action
// "record" (int_value: CallableKind::kConstructor).
constexpr uint32_t kRecordCallable = 0xfffe;
// kGlobal index of a global on neither list while records are on
// (int_value: index of the error its use raises). It may only be the owner
// of a getattr that makes a record of a class attribute (an Enum member);
// any other use, including being reachable from the root when the pickle
// ends, fails the load with that error, naming the GLOBAL's offset.
constexpr uint32_t kUnknownGlobal = 0xfffd;

// IsPublicName: a Python identifier that does not start with '_' (the
// attribute names a record of a class attribute may use).
bool IsPublicName(std::string_view s) {
  if (s.empty() || s.size() > 256 || s[0] == '_' || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::string Num(uint64_t v) { return std::to_string(v); }

std::string Limit(const char* name, uint64_t value) {
  return std::string(name) + " (" + Num(value) + ") exceeded";
}

// AppendScalarKey appends the key text of a hashable scalar to `out` and
// returns false for anything else (nan floats, bytearrays, containers).
// Keys Python considers equal get equal text: 1, True and 1.0 are "i1".
bool AppendScalarKey(const Value& v, std::string& out) {
  switch (v.kind) {
    case ValueKind::kNone:
      out += 'n';
      return true;
    case ValueKind::kBool:
    case ValueKind::kInt: {
      char buf[24];
      const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v.int_value);
      out += 'i';
      out.append(buf, end);
      return true;
    }
    case ValueKind::kBigInt:
      out += 'i';
      out += v.text;
      return true;
    case ValueKind::kFloat: {
      double ip;
      if (std::isfinite(v.float_value) && std::modf(v.float_value, &ip) == 0.0) {
        char buf[400];
        if (std::fabs(ip) < 9.2e18) {
          const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(ip));
          out += 'i';
          out.append(buf, end);
          return true;
        }
        // An integral float beyond int64 equals the int of the same value:
        // print its exact decimal expansion, as the big int's repr would.
        std::snprintf(buf, sizeof(buf), "%.0f", ip);
        out += 'i';
        out += buf;
        return true;
      }
      if (std::isnan(v.float_value)) return false;  // nan keys are never equal
      out += 'f';
      out += py::ReprFloat(v.float_value);
      return true;
    }
    case ValueKind::kStr:
      out += 's';
      out += v.text;
      return true;
    case ValueKind::kBytes:
      if (v.byte_array) return false;
      out += 'b';
      out += v.text;
      return true;
    case ValueKind::kDtype:
      out += 'd';
      out += DTypeName(v.dtype);
      return true;
    case ValueKind::kDevice:
      out += 'v';
      out += v.text;
      return true;
    case ValueKind::kGlobal:
      out += 'g';
      out += v.text;
      return true;
    default:
      return false;
  }
}

// KeyIndex finds the items of one dict or set by key: an open-addressed
// table of (hash of the key text, position in the items), so adding a key
// allocates nothing but the table's own growth. Equal hashes are confirmed
// by comparing the key texts.
class KeyIndex {
 public:
  static constexpr uint32_t kEmpty = UINT32_MAX;

  // Find returns the position stored for a key of text hash `hash` that
  // `same(position)` confirms, or kEmpty; `slot` receives where to insert.
  template <typename Same>
  uint32_t Find(uint64_t hash, const Same& same, size_t& slot) {
    if (pos_.empty()) Rehash(16);
    const size_t mask = pos_.size() - 1;
    for (size_t i = static_cast<size_t>(hash) & mask;; i = (i + 1) & mask) {
      if (pos_[i] == kEmpty) {
        slot = i;
        return kEmpty;
      }
      if (hash_[i] == static_cast<uint32_t>(hash) && same(pos_[i])) return pos_[i];
    }
  }
  // Insert stores `position` at `slot` (from Find, with no insert between).
  void Insert(size_t slot, uint64_t hash, uint32_t position) {
    pos_[slot] = position;
    hash_[slot] = static_cast<uint32_t>(hash);
    if (4 * ++count_ > 3 * pos_.size()) Rehash(2 * pos_.size());  // at most 3/4 full
  }

 private:
  // Slots keep the hash's low 32 bits (the probe start uses fewer; `same`
  // decides equality): 8 bytes a slot.
  void Rehash(size_t size) {
    std::vector<uint32_t> old_pos = std::move(pos_);
    std::vector<uint32_t> old_hash = std::move(hash_);
    pos_.assign(size, kEmpty);
    hash_.assign(size, 0);
    const size_t mask = size - 1;
    for (size_t j = 0; j < old_pos.size(); ++j) {
      if (old_pos[j] == kEmpty) continue;
      size_t i = static_cast<size_t>(old_hash[j]) & mask;
      while (pos_[i] != kEmpty) i = (i + 1) & mask;
      pos_[i] = old_pos[j];
      hash_[i] = old_hash[j];
    }
  }

  std::vector<uint32_t> pos_;
  std::vector<uint32_t> hash_;
  size_t count_ = 0;
};

// Vm is the restricted VM: the PickleMachine's strict domain whose values
// live in the run's ValueArena.
class Vm {
 public:
  using Id = MachineId;

  Vm(Bytes data, uint64_t base_offset, const std::string& where, VmState& state, const StorageResolver& resolver,
     const VmOptions& options)
      : data_(data),
        base_offset_(base_offset),
        joblib_(options.joblib),
        where_(where),
        state_(state),
        resolver_(resolver),
        allowlist_(options.allowlist != nullptr ? *options.allowlist : BuiltinAllowlist()),
        limits_(options.limits.Clamped()),
        script_objects_(options.script_objects),
        records_(options.records),
        reclaim_(options.reclaim),
        tensor_records_(options.tensor_records),
        memo_reads_(options.memo_reads),
        budget_(options.budget != nullptr ? *options.budget : own_budget_) {}

  Result<ValueId> Run() {
    // A value takes at least ~4 pickle bytes in real files (an opcode and a
    // memo PUT): reserving the arena's chunk list from the length avoids
    // regrowing it. Capped (2^18 values: 256 chunk pointers) so that a pickle
    // full of bytes cannot inflate it.
    state_.values.Reserve(static_cast<size_t>(std::min<uint64_t>(
        state_.values.size() + std::min<uint64_t>(data_.size() / 4, uint64_t{1} << 18), limits_.max_values)));
    PickleDecoder decoder(data_, limits_.pickle, base_offset_);
    MachineLimits machine_limits{limits_.max_stack_depth, limits_.max_mark_depth, limits_.max_memo_entries};
    PickleMachine<Vm> machine(*this, machine_limits, budget_, MachineMode::kStrict, where_);
    machine.UseScan(memo_reads_);
    machine_ = reclaim_ ? &machine : nullptr;  // (Reclaim does nothing without it)
    // Values of earlier runs (a legacy file's other pickles) are the loader's.
    pinned_high_ = static_cast<int64_t>(state_.values.size()) - 1;
    Result<ValueId> root = machine.Run(decoder);
    machine_ = nullptr;
    if (root && !unknown_.empty()) {
      if (Status ok = CheckNoUnknownGlobal(*root); !ok) root = std::unexpected(std::move(ok).error());
    }
    if (root) return root;
    Error e = std::move(root).error();
    // A global that may not be a value, named before the failure and not
    // used as one may be, is what stopped the load first (as when every
    // unlisted global was refused at its GLOBAL).
    for (size_t i = 0; i < unknown_.size(); ++i) {
      if (consumed_[i] == 0 && unknown_[i].offset < e.offset) {
        e = unknown_[i];
        break;
      }
    }
    if (machine.decode_failed() && e.code != ErrorCode::kForbiddenGlobal) {
      // The decoder names the opcode; keep the entry too.
      e.where = e.where.empty() ? where_ : where_ + ": " + e.where;
    } else {
      if (e.code == ErrorCode::kForbiddenGlobal) {
        PickleDecoder again(data_, limits_.pickle, base_offset_);  // the machine's may have read to the end
        AppendOtherGlobals(again, e);
      }
      if (e.where.empty()) e.where = where_;
    }
    return std::unexpected(std::move(e));
  }

  // --- the domain (pickle_machine.h) -------------------------------------
  Result<Id> Literal(const PickleOp& op) {
    switch (op.code) {
      case Opcode::kString:
      case Opcode::kBinString:
      case Opcode::kShortBinString:
        return StrFromBytes(op);
      default:
        break;
    }
    return AddInPlace(op, [&](Value& v) { LiteralInto(op, v); });
  }
  // LiteralInto fills a fresh value with a literal opcode's value (every
  // literal but the byte strings, which StrFromBytes decodes).
  void LiteralInto(const PickleOp& op, Value& v) const {
    const PickleArg& arg = op.arg;
    switch (op.code) {
      case Opcode::kNone:
        break;
      case Opcode::kNewTrue:
      case Opcode::kNewFalse:
        v.kind = ValueKind::kBool;
        v.int_value = op.code == Opcode::kNewTrue ? 1 : 0;
        break;
      case Opcode::kFloat:
      case Opcode::kBinFloat:
        v.kind = ValueKind::kFloat;
        v.float_value = arg.float_value;
        break;
      case Opcode::kUnicode:
      case Opcode::kBinUnicode:
      case Opcode::kShortBinUnicode:
      case Opcode::kBinUnicode8:
        v.kind = ValueKind::kStr;
        v.text = arg.Data();
        break;
      case Opcode::kBinBytes:
      case Opcode::kShortBinBytes:
      case Opcode::kBinBytes8:
      case Opcode::kByteArray8:
        v.kind = ValueKind::kBytes;
        v.byte_array = op.code == Opcode::kByteArray8;
        v.text = arg.Data();
        break;
      default:  // INT, BININT*, LONG*
        if (arg.type == PickleArgType::kBool) {
          v.kind = ValueKind::kBool;
          v.int_value = arg.int_value;
        } else if (arg.type == PickleArgType::kBigInt) {
          v = IntValue(py::IntFromTwosComplement(arg.Data()));
        } else {
          v.kind = ValueKind::kInt;
          v.int_value = arg.type == PickleArgType::kUInt ? static_cast<int64_t>(arg.uint_value) : arg.int_value;
        }
        break;
    }
  }
  // LiteralSlot: None, bools and small ints are never changed once made, and
  // a state dict repeats the same few (sizes, strides, offsets, False)
  // hundreds of thousands of times: the machine shares one value each
  // (pickle_machine.h), as CPython shares them too.
  size_t LiteralSlot(const PickleOp& op) const { return ScalarLiteralSlot(op); }
  // Tensor records (pickle_machine.h MachineTensorRecord): FusesCallsOf,
  // RecordStorage, RecordTensor below; LiteralSlot is ScalarLiteralSlot.
  static constexpr bool kFusesTensorRecords = true;
  // One owner per value (pickle_machine.h): Reduce and PersistentLoad
  // reclaim what the tensor rebuilds and storages use up.
  static constexpr bool kReclaimsConsumed = true;
  Result<Id> Tuple(const PickleOp& op, std::span<const Id> items) {
    // One empty tuple per run, as CPython's () is one object: a state dict
    // pickles one per tensor (the OrderedDict() of its backward hooks). No
    // value is changed once built as a tuple, and Discard never takes one.
    if (items.empty() && empty_tuple_ != kMachineNoValue) return empty_tuple_;
    CKG_TRY(CheckLen(op, items.size()));
    CKG_ASSIGN_OR_RETURN(ValueId id, AddInPlace(op, [&](Value& v) {
      v.kind = ValueKind::kTuple;
      v.items.assign(items.begin(), items.end());
    }));
    if (items.empty()) {
      empty_tuple_ = id;
      pinned_high_ = std::max<int64_t>(pinned_high_, id);  // handed out again and again: never reclaimed
    }
    return id;
  }
  Result<Id> List(const PickleOp& op, std::span<const Id> items) {
    CKG_TRY(CheckLen(op, items.size()));
    return AddInPlace(op, [&](Value& v) {
      v.kind = ValueKind::kList;
      v.items.assign(items.begin(), items.end());
    });
  }
  Result<Id> Dict(const PickleOp& op, std::span<const Id> items) {
    CKG_ASSIGN_OR_RETURN(ValueId d, NewDict(op, false));
    for (size_t i = 0; i + 1 < items.size(); i += 2) CKG_TRY(SetItem(op, d, items[i], items[i + 1]));
    return d;
  }
  Result<Id> Set(const PickleOp& op, std::span<const Id> items, bool frozen) {
    Value v;
    v.kind = ValueKind::kSet;
    v.frozen = frozen;
    CKG_ASSIGN_OR_RETURN(ValueId s, Add(op, std::move(v)));
    for (ValueId item : items) CKG_TRY(AddToSet(op, s, item));
    return s;
  }
  Status Append(const PickleOp& op, Id list, std::span<const Id> items) {
    if (Get(list).kind != ValueKind::kList) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  std::string(op.Info().name) + " on a " + std::string(ValueKindName(Get(list).kind)) +
                      " (only lists; on other objects it would call their append/extend)");
    }
    Value& l = state_.values.Mutable(list);
    CKG_TRY(CheckLen(op, l.items.size() + items.size()));
    CKG_TRY(Account(op, items.size() * sizeof(ValueId)));
    l.items.insert(l.items.end(), items.begin(), items.end());
    return OkStatus();
  }
  Status SetItems(const PickleOp& op, Id d, std::span<const Id> items) {
    if (Get(d).kind != ValueKind::kDict) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  std::string(op.Info().name) + " on a " + std::string(ValueKindName(Get(d).kind)) +
                      " (only dicts; on other objects it would call their __setitem__)");
    }
    for (size_t i = 0; i + 1 < items.size(); i += 2) CKG_TRY(SetItem(op, d, items[i], items[i + 1]));
    return OkStatus();
  }
  Status AddItems(const PickleOp& op, Id s, std::span<const Id> items) {
    if (Get(s).kind != ValueKind::kSet || Get(s).frozen) {
      return Fail(ErrorCode::kForbiddenGlobal, op, "ADDITEMS on a " + std::string(ValueKindName(Get(s).kind)));
    }
    for (ValueId item : items) CKG_TRY(AddToSet(op, s, item));
    return OkStatus();
  }
  Result<Id> Global(const PickleOp& op, std::string_view module, std::string_view name) {
    return GlobalValue(op, module, name);
  }
  Result<Id> StackGlobal(const PickleOp& op, Id module, Id name) {
    const Value& m = Get(module);
    const Value& n = Get(name);
    Result<GlobalName> g = StackGlobalName(StrOperand{m.kind == ValueKind::kStr, true, m.text},
                                           StrOperand{n.kind == ValueKind::kStr, true, n.text});
    if (!g) return Fail(g.error().code, op, g.error().detail);
    // The views point into the arena's strings, which GlobalValue copies
    // before it adds a value.
    const std::string module_text(g->module);
    const std::string name_text(g->name);
    return GlobalValue(op, module_text, name_text);
  }
  Result<Id> NewObj(const PickleOp& op, Id cls, Id args, const Id* kwargs) {
    const Value& c = Get(cls);
    if (c.kind == ValueKind::kGlobal && c.index == kUnknownGlobal) return UnknownUse(c);
    if (kwargs == nullptr && IsRecordClass(c)) {
      const Value& a = Get(args);
      if (a.kind != ValueKind::kTuple) return Malformed(op, "arguments must be a tuple");
      if (RecordKind(c) == CallableKind::kClass && !a.items.empty()) return ClassCalled(op, c.text);
      if (RecordKind(c) != CallableKind::kClass && RecordKind(c) != CallableKind::kConstructor) {
        return Fail(ErrorCode::kForbiddenGlobal, op, "NEWOBJ: '" + c.text + "' is not a class (" +
                                                         std::string(CallableKindName(RecordKind(c))) + ")");
      }
      const std::vector<ValueId> items = a.items;
      return MakeRecord(op, std::string(c.text), RecordForm::kNew, items);
    }
    if (kwargs != nullptr) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  "NEWOBJ_EX: creating an instance" +
                      (c.kind == ValueKind::kGlobal ? " of '" + c.text + "'" : std::string()) + " is not allowed");
    }
    if (c.kind == ValueKind::kGlobal && c.index == kScriptClass) {
      if (Get(args).kind != ValueKind::kTuple || !Get(args).items.empty()) {
        return Malformed(op, "NEWOBJ of TorchScript class '" + c.text + "' with arguments");
      }
      Value v;
      v.kind = ValueKind::kObject;
      v.text = c.text;
      return Add(op, std::move(v));
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                "NEWOBJ: creating an instance of " +
                    (c.kind == ValueKind::kGlobal ? "'" + c.text + "'" : std::string(ValueKindName(c.kind))) +
                    " is not allowed");
  }
  Result<Id> Obj(const PickleOp& op, Id cls, std::span<const Id> args) {
    const Value& c = Get(cls);
    if (c.kind == ValueKind::kGlobal && c.index == kUnknownGlobal) return UnknownUse(c);
    if (IsRecordClass(c)) {
      const std::vector<ValueId> items(args.begin(), args.end());
      return RecordCall(op, std::string(c.text), RecordKind(c), items);
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                "OBJ: creating an instance" + (c.kind == ValueKind::kGlobal ? " of '" + c.text + "'" : std::string()) +
                    " is not allowed");
  }
  Result<Id> Inst(const PickleOp& op, std::string_view module, std::string_view name, std::span<const Id> args) {
    // INST module name: a call of the class it names (protocol 0 objects);
    // a record for a class declared as one.
    if (std::optional<CallableKind> kind = RecordClassKind(module, name)) {
      const std::vector<ValueId> items(args.begin(), args.end());
      return RecordCall(op, std::string(allowlist_.CanonicalModule(module)) + "." + std::string(name), *kind, items);
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                "INST: global '" + std::string(module) + "." + std::string(name) +
                    "' is not on the allowlist (nothing was imported or called)");
  }
  Result<Id> Ext(const PickleOp& op, uint64_t code) {
    return Fail(ErrorCode::kForbiddenGlobal, op,
                std::string(op.Info().name) + ": extension code " + Num(code) + " (copyreg registry) is not allowed");
  }
  Result<Id> Buffer(const PickleOp& op, const Id*) {
    return Fail(ErrorCode::kUnsupportedFormat, op,
                std::string(op.Info().name) + ": out-of-band buffers are not supported");
  }
  // Strict mode: the machine never substitutes values.
  Id Opaque() { return 0; }
  // Discard reclaims a plain value the pickle dropped right after building
  // it (NONE POP, 1 POP...): nothing can refer to it, and without this a
  // pickle of such pairs would grow the arena by a Value per two bytes.
  void Discard(Id id) {
    if (id + 1 != state_.values.size()) return;  // (the machine never passes a shared value, LiteralSlot)
    switch (state_.values.Get(id).kind) {
      case ValueKind::kNone:
      case ValueKind::kBool:
      case ValueKind::kInt:
      case ValueKind::kBigInt:
      case ValueKind::kFloat:
      case ValueKind::kStr:
      case ValueKind::kBytes:
        state_.values.PopLast();
        break;
      default:
        break;
    }
  }
  void Malformed(const Error&) {}

 private:
  friend class PickleMachine<Vm>;

  // --- errors -------------------------------------------------------------
  std::unexpected<Error> Fail(ErrorCode code, const PickleOp& op, std::string detail) const {
    return MakeError(code, op.offset, std::move(detail), where_);
  }
  std::unexpected<Error> Malformed(const PickleOp& op, std::string detail) const {
    return Fail(ErrorCode::kMalformed, op, std::string(op.Info().name) + ": " + detail);
  }

  // After a forbidden global, name the other globals the pickle imports (a
  // pickled nn.Module names all its classes), reading on without running.
  void AppendOtherGlobals(PickleDecoder& decoder, Error& error) const {
    std::vector<std::string> names;
    std::set<std::string> seen;
    CollectGlobalNames(decoder, 1'000'000, [&](std::string_view module, std::string_view global) {
      // Find joins module and name again, so any split of the dotted name
      // works; the first keeps module aliases ("__builtin__") applicable.
      const std::string name = std::string(module) + "." + std::string(global);
      if (!allowlist_.Find(module, global) && seen.insert(name).second &&
          error.detail.find("'" + name + "'") == std::string::npos) {
        names.push_back(name);
      }
      return names.size() < 12;
    });
    if (names.empty()) return;
    error.detail += "; the pickle also names:";
    for (size_t i = 0; i < names.size(); ++i) error.detail += (i == 0 ? " " : ", ") + names[i];
  }

  // --- arena and accounting ------------------------------------------------
  Result<ValueId> Add(const PickleOp& op, Value&& v) {
    return AddInPlace(op, [&](Value& slot) { slot = std::move(v); });
  }
  // AddInPlace adds a value that `fill` builds in its arena slot (a default
  // Value), charged as Add charges; `fill` must not add values itself.
  template <typename F>
  Result<ValueId> AddInPlace(const PickleOp& op, F&& fill) {
    if (state_.values.size() >= limits_.max_values) [[unlikely]] {
      return Fail(ErrorCode::kLimitExceeded, op, Limit("max_values", limits_.max_values));
    }
    ValueId id;
    Value& v = state_.values.Emplace(id);
    fill(v);
    if (Status st = Account(op, sizeof(Value) + v.text.size() + v.items.size() * sizeof(ValueId)); !st) [[unlikely]] {
      state_.values.PopLast();
      return std::unexpected(std::move(st).error());
    }
    return id;
  }
  // Account is inline (every value charges it); its failure is not.
  [[gnu::always_inline]] Status Account(const PickleOp& op, uint64_t bytes) {
    state_.alloc_bytes += bytes;
    if (state_.alloc_bytes > limits_.max_alloc_bytes) [[unlikely]] return AllocExceeded(op);
    return OkStatus();
  }
  [[gnu::noinline, gnu::cold]] Status AllocExceeded(const PickleOp& op) const {
    return Fail(ErrorCode::kLimitExceeded, op, Limit("max_alloc_bytes", limits_.max_alloc_bytes));
  }
  const Value& Get(ValueId id) const { return state_.values.Get(id); }

  // --- containers ----------------------------------------------------------
  // HashKey renders a dict key or set element so that keys Python considers
  // equal render the same. Tuples (also nested, also frozensets) are walked
  // with an explicit stack; anything unhashable in CPython (a list, a dict, a
  // set) or not a plain scalar fails the load, as it fails in torch.
  Status HashKey(const PickleOp& op, ValueId id, std::string& key) {
    key.clear();
    std::vector<KeyItem>& todo = key_todo_;
    todo.clear();
    todo.push_back({id, false});
    size_t visited = 0;
    while (!todo.empty()) {
      const KeyItem item = todo.back();
      todo.pop_back();
      if (item.close) {
        key += ")";
        continue;
      }
      const Value& v = Get(item.id);
      if (++visited > 4096 || key.size() > (size_t{1} << 20)) {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(op.Info().name) + ": dict key or set element too large or too deeply nested");
      }
      if (v.kind == ValueKind::kTuple || (v.kind == ValueKind::kSet && v.frozen)) {
        key += v.kind == ValueKind::kTuple ? "t(" : "z(";
        todo.push_back({0, true});
        // Frozenset elements are already deduplicated; their order is part of
        // the key here, which only makes two equal frozensets distinct keys
        // (a stricter dict than Python's, never a merged one).
        for (size_t i = v.items.size(); i-- > 0;) todo.push_back({v.items[i], false});
        continue;
      }
      scalar_key_.clear();
      if (v.kind == ValueKind::kRecord) {
        // An Enum member hashes by its class and name (getattr returns the
        // one member); any other object by identity, as object.__hash__.
        if (v.index == static_cast<uint32_t>(RecordForm::kMember)) {
          scalar_key_ = "m" + v.text + "." + Get(v.items[0]).text;
        } else {
          scalar_key_ = "o" + Num(item.id);
        }
      } else if (!AppendScalarKey(v, scalar_key_)) {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(op.Info().name) + ": a " + std::string(ValueKindName(v.kind)) +
                        " as a dict key or set element is not supported (unhashable, or not a plain value)");
      }
      char len[24];
      const auto [end, ec] = std::to_chars(len, len + sizeof(len), scalar_key_.size());
      key.append(len, end);
      key += ':';
      key += scalar_key_;
      key += ',';
    }
    return OkStatus();
  }

  // FindKey looks `key_id` up in the index of `container` (whose items hold
  // keys at positions from `position_of_key`): the position of an equal key,
  // or KeyIndex::kEmpty with `slot`, `hash` and `index` set for Insert.
  // key_len_ is the length of the key's rendering (HashKey), which SetItem
  // charges.
  Result<uint32_t> FindKey(const PickleOp& op, ValueId container, ValueId key_id, size_t& slot, uint64_t& hash,
                           KeyIndex*& index) {
    const Value& key = Get(key_id);
    if (key.kind == ValueKind::kStr) {
      index = &dict_index_[container];
      // A str (a state dict's keys) equals only a str of the same text: its
      // hash is that of the text itself, without rendering it, and it is
      // confirmed against other str keys directly. (Hashes only pick the
      // candidates; `same` decides, so str and rendered keys may share one
      // index.) Its rendering would be "<n+1>:s<text>,".
      const std::string_view text = key.text;
      char digits[24];
      const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), text.size() + 1);
      key_len_ = static_cast<size_t>(end - digits) + text.size() + 3;
      hash = std::hash<std::string_view>{}(text);
      return index->Find(hash, [&](uint32_t position) {
        const Value& other = Get(Get(container).items[position]);
        return other.kind == ValueKind::kStr && other.text.view() == text;
      }, slot);
    }
    CKG_TRY(HashKey(op, key_id, key_text_));
    key_len_ = key_text_.size();
    hash = std::hash<std::string_view>{}(key_text_);
    index = &dict_index_[container];
    Status same_failed = OkStatus();
    const uint32_t found = index->Find(hash, [&](uint32_t position) {
      const ValueId other = Get(container).items[position];
      if (Get(other).kind == ValueKind::kStr) return false;  // renders with 's': never this key's text
      Status st = HashKey(op, other, other_key_text_);
      if (!st) {
        same_failed = std::move(st);
        return false;
      }
      return other_key_text_ == key_text_;
    }, slot);
    CKG_TRY(std::move(same_failed));
    return found;
  }

  [[gnu::always_inline]] Status CheckLen(const PickleOp& op, size_t len) const {
    if (len > limits_.max_container_len) [[unlikely]] return LenExceeded(op);
    return OkStatus();
  }
  [[gnu::noinline, gnu::cold]] Status LenExceeded(const PickleOp& op) const {
    return Fail(ErrorCode::kLimitExceeded, op, Limit("max_container_len", limits_.max_container_len));
  }

  // SetItem: d[key] = value with dict semantics (a repeated key keeps its
  // place and takes the new value).
  Status SetItem(const PickleOp& op, ValueId dict, ValueId key, ValueId value) {
    size_t slot = 0;
    uint64_t hash = 0;
    KeyIndex* index = nullptr;
    CKG_ASSIGN_OR_RETURN(uint32_t found, FindKey(op, dict, key, slot, hash, index));
    Value& d = state_.values.Mutable(dict);
    if (found != KeyIndex::kEmpty) {
      d.items[found + 1] = value;
      return OkStatus();
    }
    CKG_TRY(CheckLen(op, d.items.size() / 2 + 1));
    CKG_TRY(Account(op, 2 * sizeof(ValueId) + key_len_ + 32));
    index->Insert(slot, hash, static_cast<uint32_t>(d.items.size()));
    d.items.push_back(key);
    d.items.push_back(value);
    return OkStatus();
  }

  Status AddToSet(const PickleOp& op, ValueId set, ValueId item) {
    size_t slot = 0;
    uint64_t hash = 0;
    KeyIndex* index = nullptr;
    CKG_ASSIGN_OR_RETURN(uint32_t found, FindKey(op, set, item, slot, hash, index));
    if (found != KeyIndex::kEmpty) return OkStatus();
    Value& s = state_.values.Mutable(set);
    CKG_TRY(CheckLen(op, s.items.size() + 1));
    CKG_TRY(Account(op, sizeof(ValueId) + 32));
    index->Insert(slot, hash, static_cast<uint32_t>(s.items.size()));
    s.items.push_back(item);
    return OkStatus();
  }

  Result<ValueId> NewDict(const PickleOp& op, bool ordered) {
    return AddInPlace(op, [&](Value& v) {
      v.kind = ValueKind::kDict;
      v.ordered_dict = ordered;
    });
  }

  // --- scalars -------------------------------------------------------------
  Value IntValue(const py::PyInt& i) const {
    Value v;
    if (!i.big) {
      v.kind = ValueKind::kInt;
      v.int_value = i.small;
    } else {
      v.kind = ValueKind::kBigInt;
      v.text = py::ReprInt(i);
    }
    return v;
  }

  Result<ValueId> StrFromBytes(const PickleOp& op) {
    // torch.load unpickles with encoding='utf-8': Python 2 str operands
    // become str, and bytes that are not UTF-8 fail the load.
    const std::string_view data = op.arg.Data();
    if (std::optional<size_t> bad = py::Utf8Error(data, false)) {
      return Fail(ErrorCode::kMalformed, op,
                  std::string(op.Info().name) + ": Python 2 string is not UTF-8 at byte " + Num(*bad) +
                      " of the operand (torch.load decodes it as UTF-8)");
    }
    Value v;
    v.kind = ValueKind::kStr;
    v.text = std::string(data);
    return Add(op, std::move(v));
  }

  // --- globals -------------------------------------------------------------
  Result<ValueId> GlobalValue(const PickleOp& op, std::string_view module, std::string_view name) {
    const std::string full = std::string(module) + "." + std::string(name);
    if (script_objects_ && (module == "__torch__" || module.starts_with("__torch__."))) {
      Value v;
      v.kind = ValueKind::kGlobal;
      v.index = kScriptClass;
      v.text = full;
      return Add(op, std::move(v));
    }
    const AllowEntry* entry = allowlist_.Find(module, name);
    if (entry == nullptr) {
      const std::string_view canonical = allowlist_.CanonicalModule(module);
      const std::string named =
          "global '" + full + "'" +
          (canonical != module ? " (" + std::string(canonical) + "." + std::string(name) + ")" : "");
      std::unexpected<Error> refused =
          Fail(ErrorCode::kForbiddenGlobal, op, named + " is not on the allowlist (nothing was imported or called)");
      if (!records_) return refused;
      Value v;
      v.kind = ValueKind::kGlobal;
      v.text = std::string(canonical) + "." + std::string(name);
      const CallableEntry* callable = BuiltinCallables().Find(v.text);
      if (callable != nullptr && IsRecordKind(callable->kind)) {
        v.index = kRecordCallable;
        v.int_value = static_cast<int64_t>(callable->kind);
        if (callable->kind == CallableKind::kConstructor || callable->kind == CallableKind::kClass) {
          return Add(op, std::move(v));
        }
        // getattr, functools.partial, copyreg's reconstructors, defaultdict:
        // only their calls make records; handed on as a value, they would be
        // functions a caller could call.
        refused.error().detail =
            named + " is loaded only as a call that makes a record, not as a value (nothing was imported or called)";
      } else {
        v.index = kUnknownGlobal;
        v.int_value = static_cast<int64_t>(unknown_.size());
      }
      CKG_ASSIGN_OR_RETURN(ValueId id, Add(op, std::move(v)));
      late_errors_.emplace(id, unknown_.size());
      unknown_.push_back(std::move(refused).error());
      consumed_.push_back(0);
      return id;
    }
    Value v;
    if (entry->action == AllowAction::kRecord) {
      v.kind = ValueKind::kGlobal;
      v.index = kRecordCallable;
      v.int_value = static_cast<int64_t>(CallableKind::kConstructor);
      v.text = std::string(allowlist_.CanonicalModule(module)) + "." + std::string(name);
    } else if (entry->action == AllowAction::kDtype) {
      v.kind = ValueKind::kDtype;
      v.dtype = *entry->dtype;
    } else {
      v.kind = ValueKind::kGlobal;
      v.index = static_cast<uint32_t>(entry->action);
      v.text = std::string(allowlist_.CanonicalModule(module)) + "." + std::string(name);
      if (entry->dtype) v.dtype = *entry->dtype;
    }
    return Add(op, std::move(v));
  }

  // --- argument helpers ----------------------------------------------------
  // Arity checks that `fn` got from `lo` to `hi` arguments (REDUCE of an
  // allowlist action and of a record kind alike).
  Status Arity(const PickleOp& op, std::string_view fn, size_t n, size_t lo, size_t hi) const {
    if (n < lo || n > hi) {
      return Malformed(op, std::string(fn) + " takes " + (lo == hi ? Num(lo) : Num(lo) + " to " + Num(hi)) + " arguments, got " +
                               Num(n));
    }
    return OkStatus();
  }
  Result<int64_t> ArgInt(const PickleOp& op, std::string_view fn, ValueId id, const char* what) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kInt && v.kind != ValueKind::kBool) {
      return Malformed(op, std::string(fn) + ": " + what + " must be an int, not " + std::string(ValueKindName(v.kind)));
    }
    return v.int_value;
  }
  Result<bool> ArgBool(const PickleOp& op, std::string_view fn, ValueId id, const char* what) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kBool && v.kind != ValueKind::kInt) {
      return Malformed(op, std::string(fn) + ": " + what + " must be a bool, not " + std::string(ValueKindName(v.kind)));
    }
    return v.int_value != 0;
  }
  Result<Dims> ArgInts(const PickleOp& op, std::string_view fn, ValueId id, const char* what) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kTuple && v.kind != ValueKind::kList) {
      return Malformed(op, std::string(fn) + ": " + what + " must be a tuple of ints, not " + std::string(ValueKindName(v.kind)));
    }
    if (v.items.size() > limits_.max_tensor_dims) {
      return Fail(ErrorCode::kLimitExceeded, op, Limit("max_tensor_dims", limits_.max_tensor_dims));
    }
    Dims out;
    out.reserve(v.items.size());
    for (ValueId item : v.items) {
      const Value& x = Get(item);
      if (x.kind != ValueKind::kInt && x.kind != ValueKind::kBool) [[unlikely]] {
        return std::unexpected(ArgInt(op, fn, item, what).error());
      }
      out.push_back(x.int_value);
    }
    return out;
  }
  Status NoHooks(const PickleOp& op, std::string_view fn, ValueId id) const {
    const Value& v = Get(id);
    if (v.kind == ValueKind::kNone) return OkStatus();
    if (v.kind != ValueKind::kDict || !v.items.empty()) {
      return Fail(ErrorCode::kUnsupportedFormat, op, std::string(fn) + ": backward hooks are not loaded (expected an empty OrderedDict)");
    }
    return OkStatus();
  }

  // MakeTensor checks a view against its storage and adds the tensor.
  Result<ValueId> MakeTensor(const PickleOp& op, std::string_view fn, ValueId storage_id, int64_t offset,
                    Dims shape, Dims stride, bool requires_grad,
                    std::optional<DType> dtype) {
    const Value& sv = Get(storage_id);
    if (sv.kind != ValueKind::kStorage) {
      return Malformed(op, std::string(fn) + ": first argument must be a storage, not " + std::string(ValueKindName(sv.kind)));
    }
    const Storage& storage = state_.storages[sv.index];
    // The tensor is made in its table's slot once every check passed
    // (AddTensor's charges first), not built aside and moved in.
    const DType view_dtype = dtype.value_or(storage.dtype);
    if (shape.size() != stride.size()) {
      return Malformed(op, std::string(fn) + ": size has " + Num(shape.size()) + " dimensions, stride " + Num(stride.size()));
    }
    if (offset < 0) return Malformed(op, std::string(fn) + ": negative storage offset " + std::to_string(offset));
    // Extent in elements: offset + sum((size-1)*stride) + 1, with overflow checks.
    uint64_t numel = 1;
    uint64_t last = static_cast<uint64_t>(offset);
    bool empty = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] < 0 || stride[i] < 0) {
        return Malformed(op, std::string(fn) + ": negative size or stride in dimension " + Num(i));
      }
      if (shape[i] == 0) empty = true;
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(shape[i]), &numel)) {
        return Malformed(op, std::string(fn) + ": element count overflows");
      }
    }
    if (!empty) {
      for (size_t i = 0; i < shape.size(); ++i) {
        uint64_t span;
        if (__builtin_mul_overflow(static_cast<uint64_t>(shape[i] - 1), static_cast<uint64_t>(stride[i]), &span) ||
            __builtin_add_overflow(last, span, &last)) {
          return Malformed(op, std::string(fn) + ": view extent overflows");
        }
      }
    }
    const uint64_t item = DTypeSize(view_dtype);
    uint64_t view_bytes;
    if (numel > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, item, &view_bytes) ||
        view_bytes > limits_.max_view_bytes) {
      // torch refuses views of more than INT64_MAX elements; stride-0 views
      // can claim far more elements than their storage holds, and copying or
      // hashing one costs its logical size.
      return Fail(ErrorCode::kLimitExceeded, op,
                  std::string(fn) + ": a view of " + Num(numel) + " elements of " + Num(item) + " bytes: " +
                      Limit("max_view_bytes", limits_.max_view_bytes));
    }
    const uint64_t storage_bytes = storage.bytes.size();
    uint64_t end_bytes;  // bytes the view needs from the start of the storage
    if (DTypeValuesPerByte(view_dtype) > 1) {
      // Packed values (quint4x2, quint2x4): torch makes and saves only
      // contiguous tensors of them from the storage's start, whose bytes are
      // its int_repr(); any other view would address half a byte.
      int64_t expect = 1;
      for (size_t i = shape.size(); i-- > 0;) {
        if (!empty && shape[i] != 1 && stride[i] != expect) {
          return Fail(ErrorCode::kUnsupportedFormat, op,
                      std::string(fn) + ": a " + std::string(DTypeName(view_dtype)) + " view with stride " + DimsText(stride) +
                          " for size " + DimsText(shape) + " is not contiguous (packed values are loaded only so)");
        }
        expect *= std::max<int64_t>(shape[i], 1);
      }
      if (offset != 0) {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(fn) + ": a " + std::string(DTypeName(view_dtype)) + " view at storage offset " +
                        std::to_string(offset) + " (packed values are loaded only from offset 0)");
      }
      end_bytes = DTypePackedBytes(view_dtype, numel);
      if (end_bytes > storage_bytes) {
        return Fail(ErrorCode::kMalformed, op,
                    std::string(fn) + ": " + Num(numel) + " " + std::string(DTypeName(view_dtype)) + " values need " + Num(end_bytes) +
                        " bytes, storage '" + storage.key + "' has " + Num(storage_bytes));
      }
    } else if (__builtin_mul_overflow(empty ? static_cast<uint64_t>(offset) : last + 1, item, &end_bytes) ||
        end_bytes > storage_bytes) {
      return Fail(ErrorCode::kMalformed, op,
                  std::string(fn) + ": view (offset " + std::to_string(offset) + ", size " + DimsText(shape) + ", stride " +
                      DimsText(stride) + ") reaches past storage '" + storage.key + "' (" + Num(storage_bytes) +
                      " bytes of " + std::string(DTypeName(storage.dtype)) + ")");
    }
    CKG_TRY(ChargeTensor(op, shape.size()));
    Tensor& t = state_.tensors.emplace_back();
    t.dtype = view_dtype;
    t.storage = sv.index;
    t.requires_grad = requires_grad;
    t.shape = std::move(shape);
    t.stride = std::move(stride);
    t.storage_offset = offset;
    t.num_elements = numel;
    return AddTensorValue(op);
  }

  // TensorMetadata applies the metadata argument of _rebuild_tensor_v2/v3
  // (torch >= 2.0) as torch's setTensorMetadata does: a dict of str -> bool
  // whose keys "conj" and "neg" set the tensor's conjugate and negative bits
  // (present means set, whatever the value). Other keys are refused: on
  // other devices they are backend data this loader cannot interpret.
  Status TensorMetadata(const PickleOp& op, std::string_view fn, ValueId id, Tensor& t) const {
    const Value& m = Get(id);
    if (m.kind == ValueKind::kNone) return OkStatus();
    if (m.kind != ValueKind::kDict) {
      return Malformed(op, std::string(fn) + ": metadata must be a dict, not " + std::string(ValueKindName(m.kind)));
    }
    for (size_t i = 0; i + 1 < m.items.size(); i += 2) {
      const Value& key = Get(m.items[i]);
      const Value& value = Get(m.items[i + 1]);
      if (key.kind != ValueKind::kStr || value.kind != ValueKind::kBool) {
        return Malformed(op, std::string(fn) + ": metadata must map str to bool");
      }
      if (key.text == "conj") {
        t.conj = true;
      } else if (key.text == "neg") {
        t.neg = true;
      } else {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(fn) + ": tensor metadata '" + Printable(key.text.substr(0, 64)) + "' is not supported (only conj and neg)");
      }
    }
    if (t.neg && !IsFloating(t.dtype)) {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  std::string(fn) + ": the negative bit on a " + std::string(DTypeName(t.dtype)) +
                      " tensor is not supported (only floating and complex)");
    }
    return OkStatus();
  }
  static bool IsFloating(DType d) {
    switch (d) {
      case DType::kFloat32: case DType::kFloat64: case DType::kFloat16: case DType::kBFloat16:
      case DType::kFloat8E5M2: case DType::kFloat8E4M3FN:
        return true;
      // Not the fnuz and e8m0 float8s: they have no negative zero (0x80 is
      // their NaN) or no sign at all, so flipping a sign bit is not negation.
      default:
        return DTypeIsComplex(d);
    }
  }

  // QuantizerParams checks _rebuild_qtensor's quantizer_params as torch's
  // _rebuild_qtensor and make_per_channel_affine_quantizer do:
  // (torch.per_tensor_affine, scale, zero_point) or
  // (torch.per_channel_affine[_float_qparams], scales, zero_points, axis)
  // with 1-D tensors of size[axis] elements (per_channel_affine: floating
  // scales, integer zero points; float_qparams: both floating).
  Result<Quantization> QuantizerParams(const PickleOp& op, std::string_view fn, ValueId id,
                                       const Dims& size) const {
    const Value& p = Get(id);
    if (p.kind != ValueKind::kTuple || p.items.empty() || Get(p.items[0]).kind != ValueKind::kGlobal) {
      return Malformed(op, std::string(fn) + ": quantizer_params must be a tuple (qscheme, ...)");
    }
    const std::string& scheme = Get(p.items[0]).text;
    Quantization q;
    if (scheme == "torch.per_tensor_affine") {
      if (p.items.size() != 3) return Malformed(op, std::string(fn) + ": per_tensor_affine takes (qscheme, scale, zero_point)");
      const Value& scale = Get(p.items[1]);
      if (scale.kind == ValueKind::kFloat) {
        q.scale = scale.float_value;
      } else if (scale.kind == ValueKind::kInt || scale.kind == ValueKind::kBool) {
        q.scale = static_cast<double>(scale.int_value);
      } else {
        return Malformed(op, std::string(fn) + ": scale must be a float, not " + std::string(ValueKindName(scale.kind)));
      }
      CKG_ASSIGN_OR_RETURN(q.zero_point, ArgInt(op, fn, p.items[2], "zero_point"));
      q.scheme = QScheme::kPerTensorAffine;
      return q;
    }
    if (scheme != "torch.per_channel_affine" && scheme != "torch.per_channel_affine_float_qparams") {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  std::string(fn) + ": qscheme '" + scheme + "' is not supported (torch cannot deserialize it either)");
    }
    // torch.save writes per_channel_affine for both per-channel schemes;
    // ATen's make_per_channel_affine_quantizer picks float qparams when the
    // zero points are floating.
    if (p.items.size() != 4) {
      return Malformed(op, std::string(fn) + ": " + scheme.substr(6) + " takes (qscheme, scales, zero_points, axis)");
    }
    CKG_ASSIGN_OR_RETURN(q.axis, ArgInt(op, fn, p.items[3], "axis"));
    if (q.axis < 0 || static_cast<uint64_t>(q.axis) >= size.size()) {
      return Malformed(op, std::string(fn) + ": axis " + std::to_string(q.axis) + " is out of range for a tensor of " +
                               Num(size.size()) + " dimensions");
    }
    const int64_t channels = size[static_cast<size_t>(q.axis)];
    auto param = [&](ValueId item, const char* what, bool want_float, uint32_t& out) -> Status {
      const Value& v = Get(item);
      if (v.kind == ValueKind::kList) {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(fn) + ": per-channel " + what + " as a list (written by old torch) are not loaded");
      }
      if (v.kind != ValueKind::kTensor) {
        return Malformed(op, std::string(fn) + ": per-channel " + what + " must be a tensor, not " +
                                 std::string(ValueKindName(v.kind)));
      }
      const Tensor& t = state_.tensors[v.index];
      const bool is_float = t.dtype == DType::kFloat64 || t.dtype == DType::kFloat32;
      const bool is_int = t.dtype == DType::kInt64 || t.dtype == DType::kInt32;
      if (!t.HasData()) {
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    std::string(fn) + ": per-channel " + what + " must be a strided tensor with data, not a " +
                        (t.meta ? std::string("meta") : std::string(TensorLayoutName(t.layout))) + " tensor");
      }
      if (t.quant->scheme != QScheme::kNone || t.conj || t.neg || (want_float ? !is_float : !(is_int || is_float))) {
        return Malformed(op, std::string(fn) + ": per-channel " + what + " must be a tensor of " +
                                 (want_float ? "float64 or float32" : "int64, int32, float64 or float32") + ", not " +
                                 std::string(DTypeName(t.dtype)) + (t.conj || t.neg ? " with a conj/neg bit" : ""));
      }
      if (t.shape.size() != 1 || t.shape[0] != channels) {
        return Malformed(op, std::string(fn) + ": per-channel " + what + " has shape " + DimsText(t.shape) + ", expected [" +
                                 std::to_string(channels) + "] (size[" + std::to_string(q.axis) + "])");
      }
      out = v.index;
      return OkStatus();
    };
    CKG_TRY(param(p.items[1], "scales", true, q.scales));
    CKG_TRY(param(p.items[2], "zero_points", false, q.zero_points));
    const DType zp = state_.tensors[q.zero_points].dtype;
    q.scheme = zp == DType::kFloat32 || zp == DType::kFloat64 ? QScheme::kPerChannelAffineFloatQParams
                                                              : QScheme::kPerChannelAffine;
    return q;
  }

  static std::string DimsText(const Dims& dims) {
    std::string out = "[";
    for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
    return out + "]";
  }

  // --- sparse and meta tensors ----------------------------------------------
  // LayoutNamed: the layout torch prints as `name` ("torch.sparse_coo").
  static std::optional<TensorLayout> LayoutNamed(std::string_view name) {
    static constexpr std::pair<std::string_view, TensorLayout> kLayouts[] = {
        {"torch.strided", TensorLayout::kStrided},       {"torch.sparse_coo", TensorLayout::kSparseCoo},
        {"torch.sparse_csr", TensorLayout::kSparseCsr}, {"torch.sparse_csc", TensorLayout::kSparseCsc},
        {"torch.sparse_bsr", TensorLayout::kSparseBsr}, {"torch.sparse_bsc", TensorLayout::kSparseBsc},
    };
    for (const auto& [n, layout] : kLayouts) {
      if (n == name) return layout;
    }
    return std::nullopt;
  }

  // GetLayout is torch.serialization._get_layout(name): copyreg pickles a
  // torch.layout as this call of its str(). The result is the same value a
  // GLOBAL of the layout constant gives.
  Result<ValueId> GetLayout(const PickleOp& op, std::string_view fn, std::span<const ValueId> args) {
    CKG_TRY(Arity(op, fn, args.size(), 1, 1));
    const Value& name = Get(args[0]);
    if (name.kind != ValueKind::kStr) {
      return Malformed(op, std::string(fn) + ": the layout name must be a str, not " + std::string(ValueKindName(name.kind)));
    }
    if (!LayoutNamed(name.text)) {
      if (name.text == "torch._mkldnn" || name.text == "torch.jagged") {
        return Fail(ErrorCode::kUnsupportedFormat, op, std::string(fn) + ": layout '" + name.text + "' is not supported");
      }
      return Malformed(op, std::string(fn) + ": no layout is named '" + Printable(name.text.substr(0, 64)) + "'");
    }
    Value v;
    v.kind = ValueKind::kGlobal;
    v.index = static_cast<uint32_t>(AllowAction::kConstant);
    v.text = name.text;
    return Add(op, std::move(v));
  }

  // SparseLayoutArg: the layout argument of a sparse rebuild (a layout
  // constant by GLOBAL or by _get_layout), which must be a sparse layout.
  Result<TensorLayout> SparseLayoutArg(const PickleOp& op, std::string_view fn, ValueId id) const {
    const Value& v = Get(id);
    std::optional<TensorLayout> layout;
    if (v.kind == ValueKind::kGlobal && v.index == static_cast<uint32_t>(AllowAction::kConstant)) {
      layout = LayoutNamed(v.text);
    }
    if (!layout) {
      return Malformed(op, std::string(fn) + ": layout must be a torch layout, not " +
                               (v.kind == ValueKind::kGlobal ? "'" + v.text + "'" : "a " + std::string(ValueKindName(v.kind))));
    }
    if (*layout == TensorLayout::kStrided) {
      return Malformed(op, std::string(fn) + ": torch.strided is not a sparse layout (torch raises NotImplementedError)");
    }
    return *layout;
  }

  // SparsePart: a component of a sparse tensor, which must be an ordinary
  // strided tensor with data (as torch's sparse constructors require).
  Result<uint32_t> SparsePart(const PickleOp& op, std::string_view fn, ValueId id, const char* what) const {
    const Value& v = Get(id);
    if (v.kind != ValueKind::kTensor) {
      return Malformed(op, std::string(fn) + ": " + what + " must be a tensor, not " + std::string(ValueKindName(v.kind)));
    }
    const Tensor& t = state_.tensors[v.index];
    if (!t.HasData() || t.quant->scheme != QScheme::kNone) {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  std::string(fn) + ": " + what + " must be a strided tensor with data, not a " +
                      (t.meta ? "meta" : t.layout != TensorLayout::kStrided ? std::string(TensorLayoutName(t.layout))
                                                                             : std::string("quantized")) +
                      " tensor");
    }
    return v.index;
  }

  // SizeArg: a sparse tensor's dense size (a torch.Size), non-negative, with
  // a product torch's int64 numel holds.
  Result<std::pair<Dims, uint64_t>> DenseSize(const PickleOp& op, std::string_view fn,
                                                               ValueId id) const {
    CKG_ASSIGN_OR_RETURN(Dims size, ArgInts(op, fn, id, "size"));
    uint64_t numel = 1;
    bool empty = false;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0) return Malformed(op, std::string(fn) + ": negative size " + DimsText(size));
      if (size[i] == 0) empty = true;
    }
    for (int64_t d : size) {
      if (empty) break;
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > static_cast<uint64_t>(INT64_MAX)) {
        return Malformed(op, std::string(fn) + ": size " + DimsText(size) + " has more than 2^63-1 elements");
      }
    }
    return std::make_pair(std::move(size), empty ? uint64_t{0} : numel);
  }

  static Dims DimRange(const Dims& d, size_t from, size_t to) { return Dims(d.begin() + from, d.begin() + to); }

  // RebuildSparse is _rebuild_sparse_tensor(layout, data) and torch 1.13's
  // _rebuild_sparse_csr_tensor(layout, data): a tensor of the layout whose
  // data are the component tensors, checked as torch's
  // _validate_sparse_coo_tensor_args / _validate_sparse_compressed_tensor_args
  // check dtypes and shapes. (The index values themselves are not read.)
  Result<ValueId> RebuildSparse(const PickleOp& op, std::string_view fn, std::span<const ValueId> args) {
    CKG_TRY(Arity(op, fn, args.size(), 2, 2));
    CKG_ASSIGN_OR_RETURN(TensorLayout layout, SparseLayoutArg(op, fn, args[0]));
    const bool csr_only = fn == "torch._utils._rebuild_sparse_csr_tensor";
    if (csr_only && layout != TensorLayout::kSparseCsr) {
      return Malformed(op, std::string(fn) + ": layout must be torch.sparse_csr, not torch." + std::string(TensorLayoutName(layout)));
    }
    const Value& data = Get(args[1]);
    if (data.kind != ValueKind::kTuple && data.kind != ValueKind::kList) {
      return Malformed(op, std::string(fn) + ": data must be a tuple, not " + std::string(ValueKindName(data.kind)));
    }
    const std::vector<ValueId> items = data.items;
    Tensor out;
    out.layout = layout;
    const std::string what = std::string(fn) + " (" + std::string(TensorLayoutName(layout)) + ")";
    auto dtype_name = [](DType d) { return std::string(DTypeName(d)); };
    if (layout == TensorLayout::kSparseCoo) {
      if (items.size() != 3 && items.size() != 4) {
        return Malformed(op, what + ": data must be (indices, values, size[, is_coalesced]), got " + Num(items.size()) +
                                 " items");
      }
      CKG_ASSIGN_OR_RETURN(out.sparse.Mut().indices, SparsePart(op, fn, items[0], "indices"));
      CKG_ASSIGN_OR_RETURN(out.sparse.Mut().values, SparsePart(op, fn, items[1], "values"));
      CKG_ASSIGN_OR_RETURN(auto size, DenseSize(op, fn, items[2]));
      if (items.size() == 4 && Get(items[3]).kind != ValueKind::kNone) {
        if (Get(items[3]).kind != ValueKind::kBool) {
          return Malformed(op, what + ": is_coalesced must be a bool or None, not " +
                                   std::string(ValueKindName(Get(items[3]).kind)));
        }
        out.sparse.Mut().coalesced = Get(items[3]).int_value != 0;
      }
      const Tensor& indices = state_.tensors[out.sparse->indices];
      const Tensor& values = state_.tensors[out.sparse->values];
      if (!IsCooIndexDType(indices.dtype)) {
        return Malformed(op, what + ": indices must be an integer, bool or float32/64 tensor (torch converts them "
                                    "to int64), not " + dtype_name(indices.dtype));
      }
      if (indices.shape.size() != 2) {
        return Malformed(op, what + ": indices must be sparse_dim x nnz, not of shape " + DimsText(indices.shape));
      }
      if (values.shape.empty()) {
        return Malformed(op, what + ": values must have at least one dimension (nnz), not shape []");
      }
      out.sparse.Mut().sparse_dim = indices.shape[0];
      out.sparse.Mut().dense_dim = static_cast<int64_t>(values.shape.size()) - 1;
      const size_t sparse_dim = static_cast<size_t>(out.sparse->sparse_dim);
      if (sparse_dim + values.shape.size() - 1 != size.first.size()) {
        return Malformed(op, what + ": size " + DimsText(size.first) + " has " + Num(size.first.size()) +
                                 " dimensions, but indices give " + Num(sparse_dim) + " sparse and values " +
                                 Num(values.shape.size() - 1) + " dense dimensions");
      }
      if (indices.shape[1] != values.shape[0]) {
        return Malformed(op, what + ": indices give " + std::to_string(indices.shape[1]) + " elements (nnz), values " +
                                 std::to_string(values.shape[0]));
      }
      if (DimRange(values.shape, 1, values.shape.size()) != DimRange(size.first, sparse_dim, size.first.size())) {
        return Malformed(op, what + ": values of shape " + DimsText(values.shape) + " do not match the dense dimensions of size " +
                                 DimsText(size.first));
      }
      out.shape = std::move(size.first);
      out.num_elements = size.second;
    } else {
      const bool rows = layout == TensorLayout::kSparseCsr || layout == TensorLayout::kSparseBsr;
      const bool block = layout == TensorLayout::kSparseBsr || layout == TensorLayout::kSparseBsc;
      const char* compressed_name = rows ? "crow_indices" : "ccol_indices";
      const char* plain_name = rows ? "col_indices" : "row_indices";
      if (items.size() != 4) {
        return Malformed(op, what + ": data must be (" + compressed_name + ", " + plain_name + ", values, size), got " +
                                 Num(items.size()) + " items");
      }
      CKG_ASSIGN_OR_RETURN(out.sparse.Mut().indices, SparsePart(op, fn, items[0], compressed_name));
      CKG_ASSIGN_OR_RETURN(out.sparse.Mut().plain_indices, SparsePart(op, fn, items[1], plain_name));
      CKG_ASSIGN_OR_RETURN(out.sparse.Mut().values, SparsePart(op, fn, items[2], "values"));
      CKG_ASSIGN_OR_RETURN(auto size, DenseSize(op, fn, items[3]));
      const Tensor& compressed = state_.tensors[out.sparse->indices];
      const Tensor& plain = state_.tensors[out.sparse->plain_indices];
      const Tensor& values = state_.tensors[out.sparse->values];
      if (compressed.dtype != DType::kInt64 && compressed.dtype != DType::kInt32) {
        return Malformed(op, what + ": " + compressed_name + " must be an int64 or int32 tensor, not " +
                                 dtype_name(compressed.dtype));
      }
      if (plain.dtype != compressed.dtype) {
        return Malformed(op, what + ": " + plain_name + " must have the dtype of " + compressed_name + " (" +
                                 dtype_name(compressed.dtype) + "), not " + dtype_name(plain.dtype));
      }
      if (compressed.shape.empty() || compressed.shape.size() != plain.shape.size()) {
        return Malformed(op, what + ": " + compressed_name + " of shape " + DimsText(compressed.shape) + " and " +
                                 plain_name + " of shape " + DimsText(plain.shape) +
                                 " must have the same number of dimensions, at least one");
      }
      const size_t batch = compressed.shape.size() - 1;
      const size_t block_dims = block ? 2 : 0;
      if (values.shape.size() < batch + 1 + block_dims) {
        return Malformed(op, what + ": values of shape " + DimsText(values.shape) + " need at least " +
                                 Num(batch + 1 + block_dims) + " dimensions (batch, nnz" + (block ? ", block)" : ")"));
      }
      const size_t dense = values.shape.size() - batch - 1 - block_dims;
      out.sparse.Mut().sparse_dim = 2;
      out.sparse.Mut().dense_dim = static_cast<int64_t>(dense);
      const Dims& sz = size.first;
      if (sz.size() != batch + 2 + dense) {
        return Malformed(op, what + ": size " + DimsText(sz) + " must have " + Num(batch + 2 + dense) + " dimensions (" +
                                 Num(batch) + " batch, 2 sparse, " + Num(dense) + " dense)");
      }
      const Dims batch_shape = DimRange(sz, 0, batch);
      if (DimRange(compressed.shape, 0, batch) != batch_shape || DimRange(plain.shape, 0, batch) != batch_shape ||
          DimRange(values.shape, 0, batch) != batch_shape) {
        return Malformed(op, what + ": batch dimensions of " + compressed_name + " " + DimsText(compressed.shape) + ", " +
                                 plain_name + " " + DimsText(plain.shape) + " and values " + DimsText(values.shape) +
                                 " must equal those of size " + DimsText(sz));
      }
      int64_t block_rows = 1;
      int64_t block_cols = 1;
      if (block) {
        block_rows = values.shape[batch + 1];
        block_cols = values.shape[batch + 2];
        if (block_rows <= 0 || block_cols <= 0) {
          return Malformed(op, what + ": blocksize (" + std::to_string(block_rows) + ", " + std::to_string(block_cols) +
                                   ") must be positive");
        }
      }
      const int64_t nrows = sz[batch];
      const int64_t ncols = sz[batch + 1];
      if (nrows % block_rows != 0 || ncols % block_cols != 0) {
        return Malformed(op, what + ": size " + DimsText(sz) + " is not a multiple of blocksize (" +
                                 std::to_string(block_rows) + ", " + std::to_string(block_cols) + ")");
      }
      const int64_t ncompressed = rows ? nrows / block_rows : ncols / block_cols;
      if (compressed.shape[batch] - 1 != ncompressed) {  // (ncompressed + 1 may not fit an int64)
        return Malformed(op, what + ": " + compressed_name + " has " + std::to_string(compressed.shape[batch]) +
                                 " entries in its last dimension, expected " +
                                 std::to_string(static_cast<uint64_t>(ncompressed) + 1));
      }
      if (plain.shape[batch] != values.shape[batch]) {
        return Malformed(op, what + ": " + plain_name + " gives " + std::to_string(plain.shape[batch]) +
                                 " elements (nnz), values " + std::to_string(values.shape[batch]));
      }
      if (DimRange(values.shape, batch + 1 + block_dims, values.shape.size()) != DimRange(sz, batch + 2, sz.size())) {
        return Malformed(op, what + ": values of shape " + DimsText(values.shape) +
                                 " do not match the dense dimensions of size " + DimsText(sz));
      }
      out.shape = std::move(size.first);
      out.num_elements = size.second;
    }
    out.dtype = state_.tensors[out.sparse->values].dtype;
    out.sparse.Mut().offset = op.offset;
    return AddTensor(op, std::move(out));
  }

  // RebuildNested is torch 2.x's _rebuild_nested_tensor(buffer, sizes,
  // strides, storage_offsets), which calls torch._nested_view_from_buffer:
  // a nested tensor of n components, each a view of the 1-D buffer. Shapes
  // and dtypes are checked here (as _nested_view_from_buffer checks them);
  // that every component stays inside the buffer is checked once the load
  // has read the index tensors (CheckNestedViews, checkpoint.cc).
  Result<ValueId> RebuildNested(const PickleOp& op, std::string_view fn, std::span<const ValueId> args) {
    CKG_TRY(Arity(op, fn, args.size(), 4, 4));
    Tensor out;
    out.layout = TensorLayout::kNested;
    CKG_ASSIGN_OR_RETURN(out.nested.Mut().buffer, SparsePart(op, fn, args[0], "buffer"));
    CKG_ASSIGN_OR_RETURN(out.nested.Mut().sizes, SparsePart(op, fn, args[1], "sizes"));
    CKG_ASSIGN_OR_RETURN(out.nested.Mut().strides, SparsePart(op, fn, args[2], "strides"));
    CKG_ASSIGN_OR_RETURN(out.nested.Mut().offsets, SparsePart(op, fn, args[3], "storage_offsets"));
    const Tensor& buffer = state_.tensors[out.nested->buffer];
    const Tensor& sizes = state_.tensors[out.nested->sizes];
    const Tensor& strides = state_.tensors[out.nested->strides];
    const Tensor& offsets = state_.tensors[out.nested->offsets];
    if (buffer.shape.size() != 1) {
      return Malformed(op, std::string(fn) + ": buffer must be 1-D, not of shape " + DimsText(buffer.shape));
    }
    const std::pair<const Tensor*, const char*> indexes[] = {
        {&sizes, "sizes"}, {&strides, "strides"}, {&offsets, "storage_offsets"}};
    for (const auto& [t, name] : indexes) {
      if (t->dtype != DType::kInt64) {
        return Malformed(op, std::string(fn) + ": " + name + " must be an int64 tensor, not " + std::string(DTypeName(t->dtype)));
      }
    }
    // sizes and strides: n x d (a 1-D empty tensor is taken as no
    // components); storage_offsets: n.
    const bool none = sizes.shape.size() == 1 && sizes.shape[0] == 0;
    if (sizes.shape.size() != 2 && !none) {
      return Malformed(op, std::string(fn) + ": sizes must be components x dimensions, not of shape " + DimsText(sizes.shape));
    }
    if (strides.shape != sizes.shape) {
      return Malformed(op, std::string(fn) + ": strides of shape " + DimsText(strides.shape) + " do not match sizes " +
                               DimsText(sizes.shape));
    }
    const int64_t n = sizes.shape[0];
    if (offsets.shape.size() != 1 || offsets.shape[0] != n) {
      return Malformed(op, std::string(fn) + ": storage_offsets of shape " + DimsText(offsets.shape) + " do not give one offset for each of " +
                               std::to_string(n) + " components");
    }
    out.dtype = buffer.dtype;
    out.shape = {n};
    out.num_elements = buffer.num_elements;
    out.sparse.Mut().offset = op.offset;
    return AddTensor(op, std::move(out));
  }

  // RebuildMeta is _rebuild_meta_tensor_no_storage(dtype, size, stride,
  // requires_grad) (torch 1.13 and 2.x): torch.empty_strided on the meta
  // device, a tensor with a shape and no data.
  Result<ValueId> RebuildMeta(const PickleOp& op, std::string_view fn, std::span<const ValueId> args) {
    CKG_TRY(Arity(op, fn, args.size(), 4, 4));
    const Value& d = Get(args[0]);
    if (d.kind != ValueKind::kDtype) {
      return Malformed(op, std::string(fn) + ": dtype must be a dtype, not " + std::string(ValueKindName(d.kind)));
    }
    Tensor t;
    t.dtype = d.dtype;
    t.meta = true;
    CKG_ASSIGN_OR_RETURN(auto size, DenseSize(op, fn, args[1]));
    CKG_ASSIGN_OR_RETURN(Dims stride, ArgInts(op, fn, args[2], "stride"));
    CKG_ASSIGN_OR_RETURN(t.requires_grad, ArgBool(op, fn, args[3], "requires_grad"));
    if (stride.size() != size.first.size()) {
      return Malformed(op, std::string(fn) + ": size has " + Num(size.first.size()) + " dimensions, stride " + Num(stride.size()));
    }
    for (size_t i = 0; i < stride.size(); ++i) {
      if (stride[i] < 0) return Malformed(op, std::string(fn) + ": negative stride in dimension " + Num(i));
    }
    t.shape = std::move(size.first);
    t.stride = std::move(stride);
    t.num_elements = size.second;
    return AddTensor(op, std::move(t));
  }

  // RebuildFromNumpy is _rebuild_device_tensor_from_numpy(data, dtype,
  // device, requires_grad): torch.from_numpy(data).to(dtype=dtype,
  // device=device), as torch writes tensors of devices without storages
  // (XLA, ORT, privateuse1). The array has loaded as a tensor (numpy arrays
  // are declared records); a dtype other than the array's own would be a
  // conversion (torch 2.x writes bfloat16 as a float32 array), which is
  // refused rather than made. The device is not kept: data is on the host.
  Result<ValueId> RebuildFromNumpy(const PickleOp& op, std::string_view fn, std::span<const ValueId> args) {
    CKG_TRY(Arity(op, fn, args.size(), 4, 4));
    const Value& data = Get(args[0]);
    if (data.kind != ValueKind::kTensor) {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  std::string(fn) + ": data must be a numpy array (which loads as a tensor when records are on), not " +
                      (data.kind == ValueKind::kRecord ? "a record of '" + data.text + "'"
                                                       : std::string(ValueKindName(data.kind))));
    }
    const Value& d = Get(args[1]);
    if (d.kind != ValueKind::kDtype) {
      return Malformed(op, std::string(fn) + ": dtype must be a dtype, not " + std::string(ValueKindName(d.kind)));
    }
    const Value& device = Get(args[2]);
    if (device.kind != ValueKind::kStr || device.text.size() > 64) {
      return Malformed(op, std::string(fn) + ": device must be a short str");
    }
    CKG_ASSIGN_OR_RETURN(bool requires_grad, ArgBool(op, fn, args[3], "requires_grad"));
    Tensor t = state_.tensors[data.index];
    if (!t.HasData() || t.quant->scheme != QScheme::kNone || t.parameter) {
      return Malformed(op, std::string(fn) + ": data must be a numpy array");
    }
    if (t.dtype != d.dtype) {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  std::string(fn) + ": converting the array's " + std::string(DTypeName(t.dtype)) + " to " +
                      std::string(DTypeName(d.dtype)) + " is not supported (only the array's own dtype loads)");
    }
    t.requires_grad = requires_grad;
    return AddTensor(op, std::move(t));
  }

  // AddTensor adds a tensor made without MakeTensor (sparse, meta, or a
  // copy of a checked one) to the table.
  Result<ValueId> AddTensor(const PickleOp& op, Tensor&& t) {
    CKG_TRY(ChargeTensor(op, t.shape.size()));
    state_.tensors.push_back(std::move(t));
    return AddTensorValue(op);
  }
  // ChargeTensor: the checks and charge of adding a tensor of `num_dims`
  // dimensions to the table (AddTensor, MakeTensor).
  Status ChargeTensor(const PickleOp& op, size_t num_dims) {
    if (state_.tensors.size() >= limits_.max_tensors) {
      return Fail(ErrorCode::kLimitExceeded, op, Limit("max_tensors", limits_.max_tensors));
    }
    return Account(op, sizeof(Tensor) + 16 * num_dims);
  }
  // AddTensorValue adds the value of the table's last tensor.
  Result<ValueId> AddTensorValue(const PickleOp& op) {
    return AddInPlace(op, [&](Value& v) {
      v.kind = ValueKind::kTensor;
      v.index = static_cast<uint32_t>(state_.tensors.size() - 1);
    });
  }

  // --- REDUCE --------------------------------------------------------------
  Result<Id> Reduce(const PickleOp& op, Id fn_id, Id args_id) {
    const bool consumes = ConsumesArgs(Get(fn_id));
    CKG_ASSIGN_OR_RETURN(Id result, Call(op, fn_id, args_id));
    return consumes ? Reclaim(result, args_id) : result;
  }
  // ConsumesArgs: a call of `fn` keeps nothing of its arguments (the tensor
  // rebuilds copy sizes and strides, read flags and name the storage by
  // index), so Reclaim may take them.
  static bool ConsumesArgs(const Value& fn) {
    if (fn.kind != ValueKind::kGlobal) return false;
    switch (static_cast<AllowAction>(fn.index)) {
      case AllowAction::kRebuildTensor:
      case AllowAction::kRebuildTensorV2:
      case AllowAction::kRebuildTensorV3:
      case AllowAction::kRebuildQTensor:
      case AllowAction::kRebuildParameter:
        return true;
      default:
        return false;
    }
  }

  // Reclaim: the call that just built `result`, the arena's last value, used
  // up `consumed` (its argument tuple, a persistent id) and kept nothing of
  // it. A value above both the machine's shared_high() and pinned_high_ was
  // pushed once and is held in one place only, so `consumed` and every such
  // value that only it holds, directly or through its containers, are
  // garbage. When they are the values just below `result`, they are
  // dropped and `result` moves down into the first of their slots, whose id
  // is returned: a state dict's tensor then leaves two values (its key and
  // itself) instead of nine, which is most of a many-tensor load's memory.
  // Bounded: a tensor's arguments are a handful of values; more is left be.
  ValueId Reclaim(ValueId result, ValueId consumed) {
    if (machine_ == nullptr || static_cast<size_t>(result) + 1 != state_.values.size()) return result;
    const int64_t pinned = std::max(machine_->shared_high(), pinned_high_);
    // Bit i of `garbage`: value result - 1 - i is garbage. Only the 64
    // values below `result` are looked at; missing one only frees less.
    uint64_t garbage = 0;
    bool indexed = false;  // a dict or set with keys (dict_index_) is among it
    constexpr size_t kMaxTodo = 64;
    std::array<ValueId, kMaxTodo> todo;
    size_t num_todo = 0;
    todo[num_todo++] = consumed;
    while (num_todo > 0) {
      const ValueId id = todo[--num_todo];
      if (static_cast<int64_t>(id) <= pinned || id >= result || result - id > 64) continue;
      const uint64_t bit = uint64_t{1} << (result - 1 - id);
      if ((garbage & bit) != 0) continue;
      const Value& v = Get(id);
      if (!Reclaimable(v) || (!late_errors_.empty() && late_errors_.contains(id))) continue;
      garbage |= bit;
      indexed |= (v.kind == ValueKind::kDict || v.kind == ValueKind::kSet) && !v.items.empty();
      if (v.kind == ValueKind::kTuple || v.kind == ValueKind::kList || v.kind == ValueKind::kDict ||
          v.kind == ValueKind::kSet) {
        if (v.items.size() > kMaxTodo - num_todo) break;  // what is marked is garbage all the same
        for (ValueId item : v.items) todo[num_todo++] = item;
      }
    }
    const ValueId first = result - static_cast<ValueId>(std::countr_one(garbage));  // the garbage is [first, result)
    if (first == result) return result;
    if (indexed) {
      for (ValueId id = first; id < result; ++id) {
        const Value& v = Get(id);
        if ((v.kind == ValueKind::kDict || v.kind == ValueKind::kSet) && !v.items.empty()) dict_index_.erase(id);
      }
    }
    state_.values.Mutable(first) = std::move(state_.values.Mutable(result));
    state_.values.Truncate(static_cast<size_t>(first) + 1);
    return first;
  }
  // Reclaimable: a plain value Reclaim may drop (no attributes, nothing the
  // VM keeps beside it: not a global, record or object).
  static bool Reclaimable(const Value& v) {
    if (v.attrs_slot != 0) return false;
    switch (v.kind) {
      case ValueKind::kGlobal:
      case ValueKind::kObject:
      case ValueKind::kRecord:
        return false;
      default:
        return true;
    }
  }

  // Call is REDUCE's call of `fn_id` with `args_id`.
  Result<Id> Call(const PickleOp& op, Id fn_id, Id args_id) {
    const Value& fnv = Get(fn_id);
    if (fnv.kind != ValueKind::kGlobal) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  "REDUCE: calling a " + std::string(ValueKindName(fnv.kind)) + " is not allowed");
    }
    // Views of the callable's name and the argument tuple's items: values
    // never move (the arena grows by chunks), a global's name and a built
    // tuple never change, and nothing is reclaimed until the call returns.
    const std::string_view fn = fnv.text;
    if (fnv.index == kScriptClass) {
      return Fail(ErrorCode::kForbiddenGlobal, op, "REDUCE: calling TorchScript class '" + std::string(fn) + "' is not allowed");
    }
    if (fnv.index == kUnknownGlobal) return UnknownUse(fnv);
    const Value& argv = Get(args_id);
    if (argv.kind != ValueKind::kTuple) {
      return Malformed(op, std::string(fn) + ": arguments must be a tuple, not " + std::string(ValueKindName(argv.kind)));
    }
    if (fnv.index == kRecordCallable) {
      Consume(fn_id);
      const std::vector<ValueId> record_args(argv.items.begin(), argv.items.end());
      return RecordCall(op, std::string(fn), RecordKind(fnv), record_args);
    }
    const std::span<const ValueId> args(argv.items.data(), argv.items.size());
    auto want = [&](size_t lo, size_t hi) { return Arity(op, fn, args.size(), lo, hi); };
    const AllowAction action = static_cast<AllowAction>(fnv.index);
    switch (action) {
      case AllowAction::kRebuildTensor: {
        // torch._utils._rebuild_tensor: a view of the storage with its own
        // dtype, no requires_grad, no hooks (torch <= 0.3 wrote it).
        CKG_TRY(want(4, 4));
        CKG_ASSIGN_OR_RETURN(int64_t offset, ArgInt(op, fn, args[1], "storage_offset"));
        CKG_ASSIGN_OR_RETURN(Dims size, ArgInts(op, fn, args[2], "size"));
        CKG_ASSIGN_OR_RETURN(Dims stride, ArgInts(op, fn, args[3], "stride"));
        return MakeTensor(op, fn, args[0], offset, std::move(size), std::move(stride), false, std::nullopt);
      }
      case AllowAction::kRebuildTensorV2:
      case AllowAction::kRebuildTensorV3: {
        const bool v3 = action == AllowAction::kRebuildTensorV3;
        CKG_TRY(v3 ? want(7, 8) : want(6, 7));
        CKG_ASSIGN_OR_RETURN(int64_t offset, ArgInt(op, fn, args[1], "storage_offset"));
        CKG_ASSIGN_OR_RETURN(Dims size, ArgInts(op, fn, args[2], "size"));
        CKG_ASSIGN_OR_RETURN(Dims stride, ArgInts(op, fn, args[3], "stride"));
        CKG_ASSIGN_OR_RETURN(bool requires_grad, ArgBool(op, fn, args[4], "requires_grad"));
        CKG_TRY(NoHooks(op, fn, args[5]));
        std::optional<DType> dtype;
        if (v3) {
          const Value& d = Get(args[6]);
          if (d.kind != ValueKind::kDtype) return Malformed(op, std::string(fn) + ": dtype argument is not a dtype");
          dtype = d.dtype;
        }
        const size_t metadata_at = v3 ? 7 : 6;
        CKG_ASSIGN_OR_RETURN(ValueId t, MakeTensor(op, fn, args[0], offset, std::move(size), std::move(stride),
                                                   requires_grad, dtype));
        if (args.size() > metadata_at) CKG_TRY(TensorMetadata(op, fn, args[metadata_at], state_.tensors.back()));
        return t;
      }
      case AllowAction::kRebuildQTensor: {
        CKG_TRY(want(7, 7));
        const Value& sv = Get(args[0]);
        if (sv.kind == ValueKind::kStorage && !DTypeIsQuantized(state_.storages[sv.index].dtype)) {
          return Malformed(op, std::string(fn) + ": storage of " + std::string(DTypeName(state_.storages[sv.index].dtype)) +
                                   " is not a quantized storage (QUInt8Storage, QInt8Storage, QInt32Storage)");
        }
        CKG_ASSIGN_OR_RETURN(int64_t offset, ArgInt(op, fn, args[1], "storage_offset"));
        CKG_ASSIGN_OR_RETURN(Dims size, ArgInts(op, fn, args[2], "size"));
        CKG_ASSIGN_OR_RETURN(Dims stride, ArgInts(op, fn, args[3], "stride"));
        CKG_ASSIGN_OR_RETURN(Quantization quant, QuantizerParams(op, fn, args[4], size));
        CKG_ASSIGN_OR_RETURN(bool requires_grad, ArgBool(op, fn, args[5], "requires_grad"));
        CKG_TRY(NoHooks(op, fn, args[6]));
        CKG_ASSIGN_OR_RETURN(ValueId t, MakeTensor(op, fn, args[0], offset, std::move(size), std::move(stride),
                                                   requires_grad, std::nullopt));
        state_.tensors.back().quant = quant;
        return t;
      }
      case AllowAction::kRebuildSparse:
        return RebuildSparse(op, fn, args);
      case AllowAction::kRebuildMeta:
        return RebuildMeta(op, fn, args);
      case AllowAction::kRebuildNested:
        return RebuildNested(op, fn, args);
      case AllowAction::kGetLayout:
        return GetLayout(op, fn, args);
      case AllowAction::kRebuildFromNumpy:
        return RebuildFromNumpy(op, fn, args);
      case AllowAction::kRebuildParameter:
      case AllowAction::kRebuildParameterWithState: {
        const bool with_state = action == AllowAction::kRebuildParameterWithState;
        CKG_TRY(with_state ? want(4, 4) : want(3, 3));
        const Value& data = Get(args[0]);
        if (data.kind != ValueKind::kTensor) return Malformed(op, std::string(fn) + ": data must be a tensor");
        CKG_ASSIGN_OR_RETURN(bool requires_grad, ArgBool(op, fn, args[1], "requires_grad"));
        CKG_TRY(NoHooks(op, fn, args[2]));
        std::optional<ValueId> param_state;
        if (with_state) {
          // torch's _set_obj_state: a dict, or a (dict, slots dict) pair,
          // either of which may be None.
          const Value& st = Get(args[3]);
          auto dict_or_none = [&](const Value& x) { return x.kind == ValueKind::kDict || x.kind == ValueKind::kNone; };
          if (st.kind == ValueKind::kTuple) {
            if (st.items.size() != 2 || !dict_or_none(Get(st.items[0])) || !dict_or_none(Get(st.items[1]))) {
              return Malformed(op, std::string(fn) + ": state must be a dict or a (dict, slots dict) pair");
            }
          } else if (!dict_or_none(st)) {
            return Malformed(op, std::string(fn) + ": state must be a dict");
          }
          if (!(st.kind == ValueKind::kNone || (st.kind == ValueKind::kDict && st.items.empty()))) {
            param_state = args[3];
          }
        }
        Tensor t = state_.tensors[data.index];
        t.state = param_state;
        t.parameter = true;
        t.requires_grad = requires_grad;
        if (state_.tensors.size() >= limits_.max_tensors) {
          return Fail(ErrorCode::kLimitExceeded, op, Limit("max_tensors", limits_.max_tensors));
        }
        state_.tensors.push_back(std::move(t));
        Value v;
        v.kind = ValueKind::kTensor;
        v.index = static_cast<uint32_t>(state_.tensors.size() - 1);
        return Add(op, std::move(v));
      }
      case AllowAction::kOrderedDict:
      case AllowAction::kCounter: {
        CKG_TRY(want(0, 1));
        CKG_ASSIGN_OR_RETURN(ValueId d, NewDict(op, true));
        if (args.size() == 1) {
          const Value& src = Get(args[0]);
          if (src.kind == ValueKind::kDict) {
            const std::vector<ValueId> items = src.items;
            for (size_t i = 0; i + 1 < items.size(); i += 2) CKG_TRY(SetItem(op, d, items[i], items[i + 1]));
          } else if (src.kind == ValueKind::kList || src.kind == ValueKind::kTuple) {
            const std::vector<ValueId> pairs = src.items;
            for (ValueId p : pairs) {
              const Value& pair = Get(p);
              if ((pair.kind != ValueKind::kTuple && pair.kind != ValueKind::kList) || pair.items.size() != 2) {
                return Malformed(op, std::string(fn) + ": items must be (key, value) pairs");
              }
              CKG_TRY(SetItem(op, d, pair.items[0], pair.items[1]));
            }
          } else {
            return Malformed(op, std::string(fn) + ": argument must be a dict or a list of pairs");
          }
        }
        return d;
      }
      case AllowAction::kTorchSize: {
        CKG_TRY(want(1, 1));
        CKG_ASSIGN_OR_RETURN(Dims dims, ArgInts(op, fn, args[0], "sizes"));
        Value v;
        v.kind = ValueKind::kTuple;
        v.frozen = true;
        v.items = Get(args[0]).items;
        return Add(op, std::move(v));
      }
      case AllowAction::kDevice: {
        CKG_TRY(want(1, 2));
        const Value& type = Get(args[0]);
        if (type.kind != ValueKind::kStr || type.text.size() > 64) return Malformed(op, std::string(fn) + ": device must be a short str");
        Value v;
        v.kind = ValueKind::kDevice;
        v.text = type.text;
        if (args.size() == 2) {
          CKG_ASSIGN_OR_RETURN(int64_t index, ArgInt(op, fn, args[1], "index"));
          v.text += ":" + std::to_string(index);
        }
        return Add(op, std::move(v));
      }
      case AllowAction::kCodecsEncode: {
        CKG_TRY(want(1, 2));
        const Value& text = Get(args[0]);
        if (text.kind != ValueKind::kStr) return Malformed(op, std::string(fn) + ": text must be a str");
        std::optional<std::string_view> encoding;
        if (args.size() == 2 && Get(args[1]).kind == ValueKind::kStr) encoding = Get(args[1]).text;
        if (args.size() == 2 && !encoding) encoding = std::string_view("(not a str)");
        // One decoding for the VM and the scanner (pickle_semantics.h).
        Result<std::string> bytes = CodecsEncodeLatin1(text.text, encoding);
        if (!bytes) return Fail(bytes.error().code, op, std::string(fn) + ": " + bytes.error().detail);
        Value v;
        v.kind = ValueKind::kBytes;
        v.text = std::move(*bytes);
        return Add(op, std::move(v));
      }
      case AllowAction::kSet:
      case AllowAction::kFrozenSet: {
        CKG_TRY(want(0, 1));
        Value v;
        v.kind = ValueKind::kSet;
        v.frozen = action == AllowAction::kFrozenSet;
        CKG_ASSIGN_OR_RETURN(ValueId s, Add(op, std::move(v)));
        if (args.size() == 1) {
          const Value& src = Get(args[0]);
          if (src.kind != ValueKind::kList && src.kind != ValueKind::kTuple && src.kind != ValueKind::kSet) {
            return Malformed(op, std::string(fn) + ": argument must be a list, tuple or set");
          }
          const std::vector<ValueId> items = src.items;
          for (ValueId item : items) CKG_TRY(AddToSet(op, s, item));
        }
        return s;
      }
      case AllowAction::kComplex: {
        CKG_TRY(want(1, 2));
        auto number = [&](ValueId id) -> Result<double> {
          const Value& x = Get(id);
          if (x.kind == ValueKind::kFloat) return x.float_value;
          if (x.kind == ValueKind::kInt || x.kind == ValueKind::kBool) return static_cast<double>(x.int_value);
          return Malformed(op, std::string(fn) + ": arguments must be numbers");
        };
        Value v;
        v.kind = ValueKind::kComplex;
        CKG_ASSIGN_OR_RETURN(v.float_value, number(args[0]));
        if (args.size() == 2) {
          CKG_ASSIGN_OR_RETURN(const double imag, number(args[1]));
          v.set_imag_value(imag);
        }
        return Add(op, std::move(v));
      }
      case AllowAction::kByteArray:
      case AllowAction::kBytes: {
        CKG_TRY(want(0, 1));
        Value v;
        v.kind = ValueKind::kBytes;
        v.byte_array = action == AllowAction::kByteArray;
        if (args.size() == 1) {
          const Value& src = Get(args[0]);
          if (src.kind != ValueKind::kBytes) return Malformed(op, std::string(fn) + ": argument must be bytes");
          v.text = src.text;
        }
        return Add(op, std::move(v));
      }
      case AllowAction::kUninitializedTensor: {
        // UninitializedTensorMixin.__reduce_ex__ gives (cls, (requires_grad,)):
        // a placeholder without shape or data, kept as an object of its class.
        CKG_TRY(want(0, 3));
        Value v;
        v.kind = ValueKind::kObject;
        v.text = fn;
        return Add(op, std::move(v));
      }
      case AllowAction::kIdentity: {
        // TorchScript's pickler tags lists with their element type:
        // build_intlist(data), restore_type_tag(value, 'List[str]')... return
        // the value itself (torch/jit/_pickle.py; the C++ unpickler keeps it).
        CKG_TRY(want(1, 2));
        if (args.size() == 2 && Get(args[1]).kind != ValueKind::kStr) {
          return Malformed(op, std::string(fn) + ": the type tag must be a str, not a " +
                                   std::string(ValueKindName(Get(args[1]).kind)));
        }
        const ValueId value = args[0];
        // Held by the argument tuple and wherever the result goes: never
        // reclaimed as a value only one place holds.
        pinned_high_ = std::max<int64_t>(pinned_high_, value);
        return value;
      }
      case AllowAction::kUnsupported: {
        const AllowEntry* entry = FindEntry(std::string(fn));
        return Fail(ErrorCode::kUnsupportedFormat, op,
                    "'" + std::string(fn) + "' is not supported: " + (entry != nullptr ? entry->why : std::string("not loaded")));
      }
      case AllowAction::kStorageType:
      case AllowAction::kDtype:
      case AllowAction::kConstant:
        return Fail(ErrorCode::kForbiddenGlobal, op, "REDUCE: '" + std::string(fn) + "' is not callable here");
      case AllowAction::kRecord:  // bound to kRecordCallable by GlobalValue
        break;
    }
    return Fail(ErrorCode::kInternal, op, "unhandled allowlist action");
  }

  // --- records (rules/callables.toml's data kinds) --------------------------
  static bool IsRecordClass(const Value& c) { return c.kind == ValueKind::kGlobal && c.index == kRecordCallable; }
  // RecordClassKind: the kind of module.name when records are on and it is a
  // class or constructor a record may be made of (the allowlist's "record"
  // entries count as constructors).
  std::optional<CallableKind> RecordClassKind(std::string_view module, std::string_view name) const {
    if (!records_) return std::nullopt;
    if (const AllowEntry* entry = allowlist_.Find(module, name)) {
      if (entry->action == AllowAction::kRecord) return CallableKind::kConstructor;
      return std::nullopt;
    }
    const CallableEntry* callable =
        BuiltinCallables().Find(std::string(allowlist_.CanonicalModule(module)) + "." + std::string(name));
    if (callable != nullptr && (callable->kind == CallableKind::kConstructor || callable->kind == CallableKind::kClass)) {
      return callable->kind;
    }
    return std::nullopt;
  }
  static CallableKind RecordKind(const Value& c) { return static_cast<CallableKind>(c.int_value); }

  // Consume notes that a global which may not be a value was used as one
  // may be: a function kind called, an unlisted global as getattr's owner.
  void Consume(ValueId id) {
    if (late_errors_.empty()) return;
    if (auto it = late_errors_.find(id); it != late_errors_.end()) consumed_[it->second] = 1;
  }

  // UnknownUse: the error of a kUnknownGlobal (int_value indexes unknown_).
  std::unexpected<Error> UnknownUse(const Value& global) const {
    return std::unexpected(unknown_[static_cast<size_t>(global.int_value)]);
  }
  std::unexpected<Error> ClassCalled(const PickleOp& op, const std::string& cls) const {
    return Fail(ErrorCode::kForbiddenGlobal, op,
                std::string(op.Info().name) + ": calling class '" + cls +
                    "' with arguments would run its code; only its empty instance is built as a record");
  }

  Result<ValueId> MakeRecord(const PickleOp& op, std::string cls, RecordForm form, std::span<const ValueId> items) {
    CKG_TRY(CheckLen(op, items.size()));
    Value v;
    v.kind = ValueKind::kRecord;
    v.index = static_cast<uint32_t>(form);
    v.text = std::move(cls);
    v.items.assign(items.begin(), items.end());
    return Add(op, std::move(v));
  }

  // RecordClassOf checks that `id` names a class a record may be made of
  // (copyreg's reconstructors are handed it as an argument).
  Result<std::string> RecordClassOf(const PickleOp& op, std::string_view fn, ValueId id) const {
    const Value& c = Get(id);
    if (c.kind == ValueKind::kGlobal && c.index == kUnknownGlobal) return UnknownUse(c);
    if (IsRecordClass(c) && (RecordKind(c) == CallableKind::kConstructor || RecordKind(c) == CallableKind::kClass)) {
      return c.text;
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                std::string(fn) + ": the class must be one declared as a record, not " +
                    (c.kind == ValueKind::kGlobal ? "'" + c.text + "'" : "a " + std::string(ValueKindName(c.kind))));
  }

  // RecordCall is REDUCE/OBJ/INST of a callable of a record kind: the value
  // the call would return, made without calling anything.
  Result<ValueId> RecordCall(const PickleOp& op, std::string_view fn, CallableKind kind,
                             std::span<const ValueId> args) {
    auto want = [&](size_t lo, size_t hi) { return Arity(op, fn, args.size(), lo, hi); };
    switch (kind) {
      case CallableKind::kConstructor: {
        if (fn == "numpy.core.multiarray.scalar" || fn == "numpy._core.multiarray.scalar") {
          CKG_ASSIGN_OR_RETURN(std::optional<ValueId> scalar, NumpyScalar(op, args));
          if (scalar) return *scalar;
        }
        if (fn == "numpy.core.numeric._frombuffer" || fn == "numpy._core.numeric._frombuffer") {
          CKG_ASSIGN_OR_RETURN(std::optional<ValueId> array, NumpyFromBuffer(op, fn, args));
          if (array) return *array;
        }
        return MakeRecord(op, std::string(fn), RecordForm::kCall, args);
      }
      case CallableKind::kClass:
        if (!args.empty()) return ClassCalled(op, std::string(fn));
        return MakeRecord(op, std::string(fn), RecordForm::kCall, args);
      case CallableKind::kPartial:
        // functools.partial(f, *args): f is kept as a reference (a global
        // that is on neither list stays refused), never called.
        CKG_TRY(want(1, limits_.max_container_len));
        return MakeRecord(op, std::string(fn), RecordForm::kCall, args);
      case CallableKind::kGetattr: {
        // getattr(Class, 'NAME'): how Python 3.11+ pickles an Enum member.
        // The owner may be any global that is a class by naming convention
        // (IsClassName: a capital letter after any leading underscores, as
        // Enum classes have; it is only named), never a module or function
        // (getattr(os, 'system') is how payloads reach a callable); the
        // attribute a literal public name.
        CKG_TRY(want(2, 2));
        const Value& owner = Get(args[0]);
        const Value& attr = Get(args[1]);
        if (owner.kind != ValueKind::kGlobal || owner.index == kScriptClass) {
          return Fail(ErrorCode::kForbiddenGlobal, op,
                      std::string(fn) + " of a " + std::string(ValueKindName(owner.kind)) +
                          " reaches an attribute the file does not show");
        }
        if (owner.text.find('.') == std::string::npos || !IsClassName(owner.text)) {
          return Fail(ErrorCode::kForbiddenGlobal, op,
                      std::string(fn) + "('" + owner.text + "', ...): only an attribute of a class (a capitalized name, as an "
                           "Enum's) is loaded as a record, not of a module or function");
        }
        if (attr.kind != ValueKind::kStr || !IsPublicName(attr.text)) {
          return Fail(ErrorCode::kForbiddenGlobal, op,
                      std::string(fn) + "('" + owner.text + "', ...): only a literal public attribute name is loaded (as a record)");
        }
        const ValueId name = args[1];
        Consume(args[0]);
        return MakeRecord(op, std::string(owner.text), RecordForm::kMember, std::span<const ValueId>(&name, 1));
      }
      case CallableKind::kReconstructor: {
        // copyreg._reconstructor(cls, base, state): base.__new__(cls[, state])
        // as protocols 0 and 1 pickle plain objects.
        CKG_TRY(want(3, 3));
        CKG_ASSIGN_OR_RETURN(std::string cls, RecordClassOf(op, fn, args[0]));
        const Value& base = Get(args[1]);
        const bool plain = base.kind == ValueKind::kGlobal && base.text == "builtins.object";
        if (!plain && !(IsRecordClass(base) && RecordKind(base) == CallableKind::kConstructor)) {
          return Fail(ErrorCode::kForbiddenGlobal, op, std::string(fn) + ": base must be builtins.object or a data constructor");
        }
        const bool no_state = Get(args[2]).kind == ValueKind::kNone;
        return MakeRecord(op, std::move(cls), RecordForm::kNew,
                          no_state ? std::span<const ValueId>() : std::span<const ValueId>(&args[2], 1));
      }
      case CallableKind::kNewObj: {
        // copyreg.__newobj__(cls, *args): cls.__new__(cls, *args).
        CKG_TRY(want(1, limits_.max_container_len));
        CKG_ASSIGN_OR_RETURN(std::string cls, RecordClassOf(op, fn, args[0]));
        return MakeRecord(op, std::move(cls), RecordForm::kNew, std::span<const ValueId>(args).subspan(1));
      }
      case CallableKind::kDefaultDict: {
        // collections.defaultdict(factory): a dict (SETITEMS fill it) whose
        // factory is kept as the attribute "default_factory".
        CKG_TRY(want(0, 1));
        ValueId factory = 0;
        if (args.empty()) {
          CKG_ASSIGN_OR_RETURN(factory, Add(op, Value{}));
        } else {
          factory = args[0];
          const Value& f = Get(factory);
          if (f.kind != ValueKind::kNone && f.kind != ValueKind::kGlobal) {
            return Fail(ErrorCode::kForbiddenGlobal, op, std::string(fn) + ": the default factory must be a global or None");
          }
        }
        Value key;
        key.kind = ValueKind::kStr;
        key.text = "default_factory";
        CKG_ASSIGN_OR_RETURN(ValueId key_id, Add(op, std::move(key)));
        CKG_ASSIGN_OR_RETURN(ValueId d, NewDict(op, false));
        state_.values.MutableAttrs(d) = {key_id, factory};
        return d;
      }
      default:
        break;
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                "'" + std::string(fn) + "' (" + std::string(CallableKindName(kind)) + ") is not loaded as a record");
  }

  // --- numpy values: arrays become tensors, scalars plain values -------------
  struct NumpyType {
    DType dtype;
    bool big_endian;
    // A dtype torch has no equivalent of (datetime64, timedelta64, bytes,
    // str, void, long double and its complex): its elements are kept as raw
    // bytes (dtype uint8, raw_item bytes each) and numpy_dtype is numpy's
    // dtype.str ("<U3", "|S2", "<M8[ns]", "<f16"), as for .npy files.
    uint64_t raw_item = 0;
    std::string numpy_dtype;
  };
  // NumpyTypeOf reads a record numpy.dtype(descr, align, copy) given its
  // state (version, byteorder, subarray, names, fields, elsize, alignment,
  // flags[, metadata]): nullopt for a dtype not loaded (object, structured
  // and subarray dtypes: it stays a record).
  std::optional<NumpyType> NumpyTypeOf(ValueId id) const {
    const Value& d = Get(id);
    if (d.kind != ValueKind::kRecord || d.text != "numpy.dtype" || d.items.empty()) return std::nullopt;
    const Value& descr = Get(d.items[0]);
    if (descr.kind != ValueKind::kStr) return std::nullopt;
    const std::optional<SimpleDescr> sd = ParseSimpleDescr(descr.text);
    // The descr a pickle calls numpy.dtype with has no byte order and no unit.
    if (!sd || sd->is_object || sd->order != '=' || descr.text.find('[') != std::string::npos) return std::nullopt;
    const Value* st = Attr(d, "__state__");
    char order = '=';
    if (st != nullptr && st->kind == ValueKind::kTuple && st->items.size() >= 2 &&
        Get(st->items[1]).kind == ValueKind::kStr && Get(st->items[1]).text.size() == 1) {
      order = Get(st->items[1]).text[0];
    }
    if (order != '<' && order != '>' && order != '|' && order != '=') return std::nullopt;
    if (const std::optional<DType> dtype = DTypeFromNumpy(sd->kind, sd->item_size)) {
      return NumpyType{*dtype, order == '>' && sd->item_size > 1, 0, {}};
    }
    // Kept as bytes: a plain dtype only (no subarray, names or fields in
    // the state; numpy writes None for each).
    if (st == nullptr || st->kind != ValueKind::kTuple || st->items.size() < 8 || sd->item_size == 0) return std::nullopt;
    for (size_t k = 2; k <= 4; ++k) {
      if (Get(st->items[k]).kind != ValueKind::kNone) return std::nullopt;
    }
    // dtype.str: byte order, kind, size ('U' in characters; 'a' reads as 'S').
    std::string str(1, order == '=' ? '<' : order);
    str += sd->kind;
    str += std::to_string(sd->kind == 'U' ? sd->item_size / 4 : sd->item_size);
    if (sd->kind == 'M' || sd->kind == 'm') {
      // Version 4 states end with (metadata, (unit, num, den, events)).
      if (st->items.size() != 9) return std::nullopt;
      const Value& meta = Get(st->items[8]);
      if (meta.kind != ValueKind::kTuple || meta.items.size() != 2) return std::nullopt;
      const Value& dt = Get(meta.items[1]);
      if (dt.kind != ValueKind::kTuple || dt.items.size() != 4) return std::nullopt;
      const Value& unit = Get(dt.items[0]);
      const Value& num = Get(dt.items[1]);
      if (unit.kind != ValueKind::kBytes || unit.text.empty() || unit.text.size() > 8 || num.kind != ValueKind::kInt ||
          num.int_value < 1) {
        return std::nullopt;
      }
      for (char c : unit.text) {
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return std::nullopt;
      }
      str += '[';
      if (num.int_value != 1) str += std::to_string(num.int_value);
      str += unit.text;
      str += ']';
    }
    return NumpyType{DType::kUInt8, false, sd->item_size, std::move(str)};
  }

  // NumpyArray turns a record numpy.core.multiarray._reconstruct(
  // numpy.ndarray, (0,), b'b') given ndarray's state (version, shape, dtype,
  // is_fortran, data bytes) into a tensor viewing those bytes. Anything else
  // (object arrays, whose data is a list; subclasses; dtypes not loaded)
  // stays a record.
  Status NumpyArray(const PickleOp& op, ValueId obj, ValueId state) {
    const Value& r = Get(obj);
    if (r.text != "numpy.core.multiarray._reconstruct" && r.text != "numpy._core.multiarray._reconstruct") {
      return OkStatus();
    }
    if (r.items.empty() || Get(r.items[0]).kind != ValueKind::kGlobal || Get(r.items[0]).text != "numpy.ndarray") {
      return OkStatus();
    }
    const Value& st = Get(state);
    if (st.kind != ValueKind::kTuple || (st.items.size() != 5 && st.items.size() != 4)) return OkStatus();
    const size_t k = st.items.size() == 5 ? 1 : 0;
    if (k == 1 && (Get(st.items[0]).kind != ValueKind::kInt || Get(st.items[0]).int_value != 1)) return OkStatus();
    const ValueId data_id = st.items[k + 3];
    const Value& data = Get(data_id);
    if (data.kind != ValueKind::kBytes) return OkStatus();
    const std::optional<NumpyType> type = NumpyTypeOf(st.items[k + 1]);
    if (!type) return OkStatus();
    const std::string fn = "numpy.ndarray.__setstate__";
    CKG_ASSIGN_OR_RETURN(Dims shape, ArgInts(op, fn, st.items[k], "shape"));
    CKG_ASSIGN_OR_RETURN(bool fortran, ArgBool(op, fn, st.items[k + 2], "is_fortran"));
    CKG_ASSIGN_OR_RETURN(const ValueId tensor_id, ArrayOfBytes(op, fn, data, *type, std::move(shape), fortran));
    const uint32_t tensor = Get(tensor_id).index;
    Value& target = state_.values.Mutable(obj);
    target = Value{};
    target.kind = ValueKind::kTensor;
    target.index = tensor;
    return OkStatus();
  }

  // ArrayOfBytes makes the tensor of a numpy array whose elements are
  // `data`'s bytes (a bytes value the arena keeps in place for the load), of
  // `type`, in C or Fortran order; its tensor value.
  Result<ValueId> ArrayOfBytes(const PickleOp& op, std::string_view fn, const Value& data, const NumpyType& type,
                               Dims shape, bool fortran) {
    return ArrayOfBytes(op, fn, Bytes(reinterpret_cast<const uint8_t*>(data.text.data()), data.text.size()),
                        "numpy array at byte " + Num(op.offset), std::nullopt, type, std::move(shape), fortran);
  }
  // The same for `data` from anywhere the load keeps in place: a view of the
  // file at `file_offset`, or (unset) of a buffer.
  Result<ValueId> ArrayOfBytes(const PickleOp& op, std::string_view fn, Bytes data, std::string key,
                               std::optional<uint64_t> file_offset, const NumpyType& type, Dims shape, bool fortran) {
    const uint64_t item = type.raw_item != 0 ? type.raw_item : DTypeSize(type.dtype);
    uint64_t numel = 1;
    for (int64_t dim : shape) {
      if (dim < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel)) {
        return Malformed(op, std::string(fn) + ": bad shape " + DimsText(shape));
      }
    }
    const std::string type_name = type.raw_item != 0 ? type.numpy_dtype : std::string(DTypeName(type.dtype));
    uint64_t need = 0;
    if (__builtin_mul_overflow(numel, item, &need) || need != data.size()) {
      return Malformed(op, std::string(fn) + ": shape " + DimsText(shape) + " of " + type_name + " needs " + Num(need) +
                               " bytes, the data holds " + Num(data.size()));
    }
    // Raw bytes: the element is a last dimension of its bytes, stride 1 and
    // innermost in C and Fortran order alike, as for .npy files.
    const int64_t unit = type.raw_item != 0 ? static_cast<int64_t>(item) : 1;
    Dims stride = DenseStrides(shape, fortran, unit);
    if (type.raw_item != 0) {
      if (shape.size() >= limits_.max_tensor_dims) {  // the byte dimension is one more, as for .npy files
        return Fail(ErrorCode::kLimitExceeded, op, Limit("max_tensor_dims", limits_.max_tensor_dims));
      }
      shape.push_back(unit);
      stride.push_back(1);
      numel = need;
    }
    // The storage views the bytes: a bytes value the arena keeps in place, or
    // the file or a buffer the load keeps, for the life of the load.
    CKG_TRY(Account(op, sizeof(Storage)));
    Storage storage{.key = std::move(key),
                    .location = "cpu",
                    .num_elements = numel,
                    .bytes = data,
                    .file_offset = file_offset.value_or(0),
                    .dtype = type.dtype,
                    .big_endian = type.big_endian,
                    .inflated = !file_offset};
    state_.storages.push_back(std::move(storage));
    Value sv;
    sv.kind = ValueKind::kStorage;
    sv.index = static_cast<uint32_t>(state_.storages.size() - 1);
    CKG_ASSIGN_OR_RETURN(ValueId storage_id, Add(op, std::move(sv)));
    CKG_ASSIGN_OR_RETURN(ValueId tensor_id, MakeTensor(op, fn, storage_id, 0, std::move(shape), std::move(stride), false,
                                                       type.dtype));
    state_.tensors[Get(tensor_id).index].numpy_dtype = type.numpy_dtype;
    return tensor_id;
  }

  // NumpyFromBuffer is numpy's protocol-5 array,
  // numpy.core.numeric._frombuffer(buffer, dtype, shape, order), which is
  // frombuffer(buffer, dtype).reshape(shape, order=order): the buffer's
  // elements in C ('C') or Fortran ('F') order. nullopt (a record stays)
  // when the arguments are not those.
  Result<std::optional<ValueId>> NumpyFromBuffer(const PickleOp& op, std::string_view fn,
                                                 std::span<const ValueId> args) {
    if (args.size() != 4) return std::optional<ValueId>();
    const Value& data = Get(args[0]);
    const Value& order = Get(args[3]);
    if (data.kind != ValueKind::kBytes || order.kind != ValueKind::kStr || (order.text != "C" && order.text != "F")) {
      return std::optional<ValueId>();
    }
    const std::optional<NumpyType> type = NumpyTypeOf(args[1]);
    if (!type || Get(args[2]).kind != ValueKind::kTuple) return std::optional<ValueId>();
    CKG_ASSIGN_OR_RETURN(Dims shape, ArgInts(op, fn, args[2], "shape"));
    CKG_ASSIGN_OR_RETURN(const ValueId tensor, ArrayOfBytes(op, fn, data, *type, std::move(shape), order.text == "F"));
    return std::optional<ValueId>(tensor);
  }

  // NumpyScalar is numpy.core.multiarray.scalar(dtype, bytes) as a plain
  // value (bool, int, float, complex), or nullopt (a record stays).
  Result<std::optional<ValueId>> NumpyScalar(const PickleOp& op, std::span<const ValueId> args) {
    if (args.size() != 2) return std::optional<ValueId>();
    const std::optional<NumpyType> type = NumpyTypeOf(args[0]);
    const Value& data = Get(args[1]);
    if (!type || type->raw_item != 0 || data.kind != ValueKind::kBytes || data.text.size() != DTypeSize(type->dtype)) {
      return std::optional<ValueId>();
    }
    uint8_t b[16];
    const size_t n = data.text.size();
    std::memcpy(b, data.text.data(), n);
    if (type->big_endian) {
      const size_t unit = DTypeSwapUnit(type->dtype);
      for (size_t at = 0; at < n; at += unit) std::reverse(b + at, b + at + unit);
    }
    auto le = [&](size_t from, size_t len) {
      uint64_t x = 0;
      for (size_t i = len; i-- > 0;) x = (x << 8) | b[from + i];
      return x;
    };
    Value v;
    switch (type->dtype) {
      case DType::kBool:
        v.kind = ValueKind::kBool;
        v.int_value = b[0] != 0;
        break;
      case DType::kInt8: case DType::kInt16: case DType::kInt32: case DType::kInt64: {
        const uint64_t x = le(0, n);
        const unsigned shift = static_cast<unsigned>(64 - 8 * n);
        v.kind = ValueKind::kInt;
        v.int_value = shift == 0 ? static_cast<int64_t>(x) : static_cast<int64_t>(x << shift) >> shift;
        break;
      }
      case DType::kUInt8: case DType::kUInt16: case DType::kUInt32: case DType::kUInt64: {
        const uint64_t x = le(0, n);
        if (x > static_cast<uint64_t>(INT64_MAX)) {
          v.kind = ValueKind::kBigInt;
          v.text = std::to_string(x);
        } else {
          v.kind = ValueKind::kInt;
          v.int_value = static_cast<int64_t>(x);
        }
        break;
      }
      case DType::kFloat32: case DType::kComplex64: {
        float re, im = 0;
        const uint32_t r = static_cast<uint32_t>(le(0, 4));
        std::memcpy(&re, &r, 4);
        if (type->dtype == DType::kComplex64) {
          const uint32_t i = static_cast<uint32_t>(le(4, 4));
          std::memcpy(&im, &i, 4);
        }
        v.kind = type->dtype == DType::kComplex64 ? ValueKind::kComplex : ValueKind::kFloat;
        v.float_value = re;
        v.set_imag_value(im);
        break;
      }
      case DType::kFloat64: case DType::kComplex128: {
        const uint64_t r = le(0, 8);
        std::memcpy(&v.float_value, &r, 8);
        if (type->dtype == DType::kComplex128) {
          const uint64_t i = le(8, 8);
          v.int_value = static_cast<int64_t>(i);  // imag_value()'s bytes
        }
        v.kind = type->dtype == DType::kComplex128 ? ValueKind::kComplex : ValueKind::kFloat;
        break;
      }
      case DType::kFloat16: {
        // IEEE binary16, exactly as a double (every half is one): numpy's
        // float16 scalar, as np.float16(x).item() gives it.
        const uint32_t h = static_cast<uint32_t>(le(0, 2));
        const uint32_t exp = (h >> 10) & 0x1f;
        const uint32_t frac = h & 0x3ff;
        double x = 0;
        if (exp == 0) {
          x = std::ldexp(static_cast<double>(frac), -24);  // zero and subnormals
        } else if (exp == 31) {
          x = frac != 0 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
        } else {
          x = std::ldexp(static_cast<double>(frac | 0x400), static_cast<int>(exp) - 25);
        }
        v.kind = ValueKind::kFloat;
        v.float_value = std::copysign(x, (h & 0x8000) != 0 ? -1.0 : 1.0);
        break;
      }
      default:
        return std::optional<ValueId>();  // (no other scalar dtype reaches here: kept as a record)
    }
    CKG_ASSIGN_OR_RETURN(ValueId id, Add(op, std::move(v)));
    return std::optional<ValueId>(id);
  }

  // CheckNoUnknownGlobal fails, naming the first one in the pickle, when a
  // global that may not be a value (on neither list, or a function kind of
  // the records) was never used as one may be (getattr's owner, called); and
  // when one is reachable from the root (through items, attributes and
  // Parameter state) even though it was also used so: a real unpickler would
  // import it and hand it to the caller.
  Status CheckNoUnknownGlobal(ValueId root) {
    for (size_t i = 0; i < unknown_.size(); ++i) {
      if (consumed_[i] == 0) return std::unexpected(unknown_[i]);
    }
    std::vector<uint8_t> seen(state_.values.size(), 0);
    std::vector<ValueId> todo{root};
    uint64_t visits = 0;
    while (!todo.empty()) {
      const ValueId id = todo.back();
      todo.pop_back();
      if (id >= seen.size() || seen[id] != 0) continue;
      seen[id] = 1;
      if (++visits > limits_.max_walk_nodes) {
        return MakeError(ErrorCode::kLimitExceeded, 0, Limit("max_walk_nodes", limits_.max_walk_nodes), where_);
      }
      const Value& v = Get(id);
      if (v.kind == ValueKind::kGlobal) {
        if (auto it = late_errors_.find(id); it != late_errors_.end()) return std::unexpected(unknown_[it->second]);
      }
      todo.insert(todo.end(), v.items.begin(), v.items.end());
      const std::span<const ValueId> attrs = state_.values.Attrs(v);
      todo.insert(todo.end(), attrs.begin(), attrs.end());
      if (v.kind == ValueKind::kTensor && v.index < state_.tensors.size() && state_.tensors[v.index].state) {
        todo.push_back(*state_.tensors[v.index].state);
      }
    }
    return OkStatus();
  }

  const AllowEntry* FindEntry(const std::string& full) const {
    auto it = allowlist_.entries().find(full);
    return it == allowlist_.entries().end() ? nullptr : &it->second;
  }

  // --- BINPERSID -----------------------------------------------------------
  Result<Id> PersistentLoad(const PickleOp& op, const Id* pid_ptr) {
    if (pid_ptr == nullptr) {
      return Fail(ErrorCode::kUnsupportedFormat, op, "PERSID: text persistent ids are not torch storages");
    }
    const ValueId pid_id = *pid_ptr;
    const Value& pid = Get(pid_id);
    if (pid.kind != ValueKind::kTuple || pid.items.size() < 5 || pid.items.size() > 6) {
      return Malformed(op, "persistent id must be ('storage', type, key, location, numel[, view]), not a " +
                               std::string(ValueKindName(pid.kind)) + " of " + Num(pid.items.size()));
    }
    PidItem items[6];
    for (size_t i = 0; i < pid.items.size(); ++i) items[i] = PidItemOf(Get(pid.items[i]));
    CKG_ASSIGN_OR_RETURN(const uint32_t index,
                         ResolveStorage(op, std::span<const PidItem>(items, pid.items.size()), Get(pid.items[1])));
    CKG_ASSIGN_OR_RETURN(ValueId storage, AddInPlace(op, [&](Value& v) {
      v.kind = ValueKind::kStorage;
      v.index = index;
    }));
    return Reclaim(storage, pid_id);  // the request copied what it needed
  }
  // PidItemOf is a persistent id's item as ParseStoragePid reads it.
  static PidItem PidItemOf(const Value& x) {
    PidItem item;
    switch (x.kind) {
      case ValueKind::kStr:
        item.kind = PidItem::kStr;
        item.text = x.text;
        break;
      case ValueKind::kInt:
        item.kind = PidItem::kInt;
        item.number = x.int_value;
        break;
      case ValueKind::kNone:
        item.kind = PidItem::kNone;
        break;
      case ValueKind::kGlobal:
        item.kind = PidItem::kGlobal;
        item.module = x.text;
        item.storage_type = x.index == static_cast<uint32_t>(AllowAction::kStorageType);
        break;
      default:
        break;
    }
    return item;
  }
  // ResolveStorage checks a persistent id's items (the shape is decided
  // once, for the VM, the scanner and the container layer's walker:
  // ParseStoragePid) and asks the resolver for its storage; `type` is the
  // value of its second item.
  [[gnu::always_inline]] Result<uint32_t> ResolveStorage(const PickleOp& op, std::span<const PidItem> items, const Value& type) {
    Result<StoragePid> parsed = ParseStoragePid(items);
    if (!parsed) {
      const Error& e = parsed.error();
      return e.code == ErrorCode::kMalformed ? Malformed(op, e.detail) : Fail(e.code, op, e.detail);
    }
    if (parsed->view_metadata) {
      return Fail(ErrorCode::kUnsupportedFormat, op,
                  "persistent id: storage views (legacy view_metadata) are not supported");
    }
    // Views of the persistent id's values, which stay put while the
    // resolver runs (it adds no value).
    const StorageRequest request{.key = parsed->key,
                                 .dtype = type.dtype,
                                 .type_name = type.text,
                                 .location = parsed->location,
                                 .num_elements = parsed->numel,
                                 .offset = op.offset};
    return resolver_(request);
  }

  // --- tensor records (pickle_machine.h MachineTensorRecord) ---------------
  // The records of torch._utils._rebuild_tensor_v2 with an empty
  // OrderedDict of hooks: a state dict's tensors.
  bool FusesCallsOf(Id id) const {
    if (!tensor_records_) return false;
    const Value& v = Get(id);
    return v.kind == ValueKind::kGlobal && v.index == static_cast<uint32_t>(AllowAction::kRebuildTensorV2);
  }
  // RecordStorage and RecordTensor do what a record's opcodes would:
  // PersistentLoad's storage, then the REDUCE of the hooks' OrderedDict(),
  // the argument tuple and the REDUCE that rebuilds the tensor, with
  // Reclaim after PersistentLoad and after the rebuild. Of the values they
  // build, Reclaim would leave only the tensor, in the first slot they
  // took; so do these, charging what they would have. RecordStorage takes a
  // record only when none of those steps could fail but in the resolver or
  // MakeTensor (whose errors are then the same, at the same opcodes) and
  // Reclaim would take every value they build; otherwise it changes
  // nothing and returns std::nullopt.
  Result<std::optional<Id>> RecordStorage(const MachineTensorRecord& r) {
    const Value& hooks = Get(r.hooks);
    if (machine_ == nullptr || !late_errors_.empty() || !FusesCallsOf(r.fn) || hooks.kind != ValueKind::kGlobal ||
        hooks.index != static_cast<uint32_t>(AllowAction::kOrderedDict) || empty_tuple_ == kMachineNoValue) {
      return std::nullopt;
    }
    const ValueId first = static_cast<ValueId>(state_.values.size());
    if (static_cast<int64_t>(first) <= std::max(machine_->shared_high(), pinned_high_)) return std::nullopt;
    const size_t dims = std::max(r.size.size(), r.stride.size());
    if (std::max<size_t>(6, dims) > limits_.max_container_len || dims > limits_.max_tensor_dims) return std::nullopt;
    // Values held as each is added (an add needs fewer than max_values
    // before it): the key, an unshared numel, the persistent id and the
    // storage; then, the first three reclaimed, the storage, unshared
    // ints, the size and stride tuples, the hooks, the arguments and the
    // tensor.
    const uint64_t unshared_numel = r.numel_shared ? 0 : 1;
    const uint64_t unshared = (r.offset_shared ? 0 : 1) + r.unshared_size + r.unshared_stride;
    const uint64_t tuples = (r.size.empty() ? 0 : 1) + (r.stride.empty() ? 0 : 1);
    const uint64_t most = std::max<uint64_t>(3 + unshared_numel, 4 + unshared + tuples);
    if (first + most > limits_.max_values) return std::nullopt;
    const uint64_t total = RecordBytesBeforeStorage(r) + sizeof(Value) + RecordBytesBeforeTensor(r) + sizeof(Tensor) +
                           16 * r.size.size() + sizeof(Value);
    if (state_.alloc_bytes > limits_.max_alloc_bytes || total > limits_.max_alloc_bytes - state_.alloc_bytes) {
      return std::nullopt;
    }
    // From here on, as the opcodes.
    PidItem items[5] = {PidItemOf(Get(r.pid_storage)), PidItemOf(Get(r.pid_type)), PidItem{}, PidItemOf(Get(r.pid_location)),
                        PidItem{}};
    items[2].kind = PidItem::kStr;
    items[2].text = r.key;
    items[4].kind = PidItem::kInt;
    items[4].number = r.numel;
    state_.alloc_bytes += RecordBytesBeforeStorage(r);
    record_op_.code = Opcode::kBinPersId;
    record_op_.offset = r.persid_offset;
    CKG_ASSIGN_OR_RETURN(const uint32_t index, ResolveStorage(record_op_, items, Get(r.pid_type)));
    return AddInPlace(record_op_, [&](Value& v) {
      v.kind = ValueKind::kStorage;
      v.index = index;
    });
  }
  Result<Id> RecordTensor(const MachineTensorRecord& r, Id storage) {
    state_.alloc_bytes += RecordBytesBeforeTensor(r);
    record_op_.code = Opcode::kReduce;
    record_op_.offset = r.reduce_offset;
    CKG_ASSIGN_OR_RETURN(const ValueId tensor, MakeTensor(record_op_, Get(r.fn).text, storage, r.offset, r.size, r.stride,
                                                          r.requires_grad, std::nullopt));
    state_.values.Mutable(storage) = std::move(state_.values.Mutable(tensor));
    state_.values.Truncate(static_cast<size_t>(storage) + 1);
    ++state_.tensor_records;
    return storage;
  }
  // The bytes the opcodes of a record account for the values that are not
  // made when it is read whole: before the storage, the key, an unshared
  // numel and the persistent id; before the tensor, unshared ints, the size
  // and stride tuples, the hooks' OrderedDict and the argument tuple.
  static uint64_t RecordBytesBeforeStorage(const MachineTensorRecord& r) {
    return (sizeof(Value) + r.key.size()) + (r.numel_shared ? 0 : sizeof(Value)) + (sizeof(Value) + 5 * sizeof(ValueId));
  }
  static uint64_t RecordBytesBeforeTensor(const MachineTensorRecord& r) {
    const uint64_t unshared = (r.offset_shared ? 0 : 1) + r.unshared_size + r.unshared_stride;
    auto tuple = [](size_t n) { return n == 0 ? 0 : sizeof(Value) + n * sizeof(ValueId); };
    return unshared * sizeof(Value) + tuple(r.size.size()) + tuple(r.stride.size()) + sizeof(Value) + tuple(6);
  }

  // StatePairs is the name, value... pairs BUILD's state gives an object
  // whose __setstate__ is never run: a dict's items, with `slots` also a
  // (dict or None, dict or None) tuple's (copyreg's slots state), else the
  // state itself under the name "__state__". Charged to the allocation limit.
  Result<std::vector<ValueId>> StatePairs(const PickleOp& op, ValueId state, bool slots) {
    const Value& s = Get(state);
    auto dict_or_none = [&](ValueId id) {
      const ValueKind k = Get(id).kind;
      return k == ValueKind::kDict || k == ValueKind::kNone;
    };
    std::vector<ValueId> pairs;
    if (s.kind == ValueKind::kDict) {
      pairs = s.items;
    } else if (slots && s.kind == ValueKind::kTuple && s.items.size() == 2 && dict_or_none(s.items[0]) &&
               dict_or_none(s.items[1])) {
      for (ValueId part : s.items) {
        const Value& d = Get(part);
        pairs.insert(pairs.end(), d.items.begin(), d.items.end());
      }
    } else {
      Value key;
      key.kind = ValueKind::kStr;
      key.text = "__state__";
      CKG_ASSIGN_OR_RETURN(ValueId k, Add(op, std::move(key)));
      pairs = {k, state};
    }
    CKG_TRY(Account(op, pairs.size() * sizeof(ValueId)));
    return pairs;
  }

  // Build applies BUILD to `obj` and returns what the stack's top becomes:
  // `obj`, or the array joblib's NumpyUnpickler puts in a wrapper's place.
  Result<Id> Build(const PickleOp& op, Id obj, Id state) {
    const Value& o = Get(obj);
    const Value& s = Get(state);
    if (o.kind == ValueKind::kDict && o.ordered_dict) {
      // OrderedDict.__reduce__ gives vars(od) as state: state_dict()._metadata.
      if (s.kind == ValueKind::kNone) return obj;
      if (s.kind != ValueKind::kDict) return Malformed(op, "state of an OrderedDict must be a dict");
      std::vector<ValueId> attrs = s.items;
      CKG_TRY(Account(op, attrs.size() * sizeof(ValueId)));
      IdList& target = state_.values.MutableAttrs(obj);
      target.insert(target.end(), attrs.begin(), attrs.end());
      return obj;
    }
    if (o.kind == ValueKind::kRecord) {
      // A record's state (its __dict__, or (dict, slots dict) from
      // copyreg's __reduce_ex__, or whatever __getstate__ gave): kept, and no
      // __setstate__ is run.
      CKG_ASSIGN_OR_RETURN(std::vector<ValueId> attrs, StatePairs(op, state, /*slots=*/true));
      IdList& target = state_.values.MutableAttrs(obj);
      target.insert(target.end(), attrs.begin(), attrs.end());
      if (joblib_ != nullptr && IsJoblibWrapper(Get(obj))) return JoblibArray(op, obj);
      CKG_TRY(NumpyArray(op, obj, state));
      return obj;
    }
    if (o.kind == ValueKind::kObject) {
      // A TorchScript object: record its state; its __setstate__ (TorchScript
      // code, if any) is never run.
      CKG_ASSIGN_OR_RETURN(std::vector<ValueId> attrs, StatePairs(op, state, /*slots=*/false));
      Value& target = state_.values.Mutable(obj);
      target.items.insert(target.items.end(), attrs.begin(), attrs.end());
      return obj;
    }
    return Fail(ErrorCode::kForbiddenGlobal, op,
                "BUILD on a " + std::string(ValueKindName(o.kind)) +
                    " is not allowed (it would call __setstate__ or set attributes)");
  }

  // --- joblib's inline arrays ----------------------------------------------
  static bool IsJoblibWrapper(const Value& v) {
    return v.kind == ValueKind::kRecord && v.text == "joblib.numpy_pickle.NumpyArrayWrapper";
  }
  // Attr: the value of a record's attribute `name` (the last one set), or
  // nullptr (a dtype's BUILD state is its attribute "__state__").
  const Value* Attr(const Value& record, std::string_view name, ValueId* id = nullptr) const {
    const Value* found = nullptr;
    const std::span<const ValueId> attrs = state_.values.Attrs(record);
    for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
      const Value& key = Get(attrs[i]);
      if (key.kind == ValueKind::kStr && key.text == name) {
        found = &Get(attrs[i + 1]);
        if (id != nullptr) *id = attrs[i + 1];
      }
    }
    return found;
  }
  // JoblibArray is NumpyArrayWrapper.read(): the next array of joblib's
  // reading (JoblibReading), of the wrapper's dtype and shape, in its order
  // ('F': Fortran, anything else C), in the wrapper's place. The memo keeps
  // the wrapper, as joblib's does. Refused: an object array (its data is a
  // pickle joblib runs), a dtype not loaded, a subclass other than
  // numpy.ndarray or numpy.memmap (joblib makes one through its
  // __array_prepare__), and arrays the reading does not have.
  Result<Id> JoblibArray(const PickleOp& op, ValueId wrapper) {
    const std::string fn = "joblib.numpy_pickle.NumpyArrayWrapper.read";
    if (joblib_next_ >= joblib_->arrays.size()) {
      return Malformed(op, fn + ": joblib's reading of the file has no array for this wrapper");
    }
    const JoblibReading::Array& array = joblib_->arrays[joblib_next_++];
    if (array.object) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  fn + ": an object array, whose data is a pickle joblib.load runs; not loaded");
    }
    const Value& w = Get(wrapper);
    // The attributes joblib writes; any other would shadow one of the
    // wrapper's methods that read() calls (its state setting `read` makes
    // joblib call that value).
    static constexpr std::string_view kWrapperAttrs[] = {"subclass", "shape", "order", "dtype", "allow_mmap",
                                                         "numpy_array_alignment_bytes"};
    const std::span<const ValueId> attrs = state_.values.Attrs(w);
    for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
      const Value& key = Get(attrs[i]);
      const bool known = key.kind == ValueKind::kStr &&
                         std::any_of(std::begin(kWrapperAttrs), std::end(kWrapperAttrs),
                                     [&](std::string_view name) { return key.text == name; });
      if (!known) {
        return Fail(ErrorCode::kForbiddenGlobal, op,
                    fn + ": the wrapper's state sets " +
                        (key.kind == ValueKind::kStr ? "attribute '" + Printable(key.text.substr(0, 64)) + "'" : "a non-str attribute") +
                        ", which joblib does not write (an attribute named as a method of the wrapper is what "
                        "joblib calls)");
      }
    }
    const Value* subclass = Attr(w, "subclass");
    if (subclass == nullptr || subclass->kind != ValueKind::kGlobal ||
        (subclass->text != "numpy.ndarray" && subclass->text != "numpy.memmap" &&
         subclass->text != "numpy.core.memmap.memmap")) {
      return Fail(ErrorCode::kForbiddenGlobal, op,
                  fn + ": the array's subclass is not numpy.ndarray (joblib would build one and call its "
                       "__array_prepare__)");
    }
    ValueId dtype_id = 0;
    ValueId shape_id = 0;
    if (Attr(w, "dtype", &dtype_id) == nullptr || Attr(w, "shape", &shape_id) == nullptr) {
      return Malformed(op, fn + ": the wrapper has no dtype or shape");
    }
    const std::optional<NumpyType> type = NumpyTypeOf(dtype_id);
    if (!type) return Fail(ErrorCode::kUnsupportedFormat, op, fn + ": the array's dtype is not one the loader reads");
    CKG_ASSIGN_OR_RETURN(Dims shape, ArgInts(op, fn, shape_id, "shape"));
    const Value* order = Attr(w, "order");
    const bool fortran = order != nullptr && order->kind == ValueKind::kStr && order->text == "F";
    CKG_ASSIGN_OR_RETURN(const ValueId tensor,
                         ArrayOfBytes(op, fn, array.data, "joblib array " + Num(joblib_next_ - 1), array.file_offset,
                                      *type, std::move(shape), fortran));
    return tensor;
  }

  Bytes data_;
  uint64_t base_offset_;
  const JoblibReading* joblib_;
  size_t joblib_next_ = 0;  // the next of joblib_'s arrays a wrapper BUILD reads
  const std::string& where_;
  VmState& state_;
  const StorageResolver& resolver_;
  const Allowlist& allowlist_;
  VmLimits limits_;
  bool script_objects_;
  bool records_;
  bool reclaim_;
  bool tensor_records_;
  const MemoReadsScan* memo_reads_;
  // The errors of globals that may not be values (kUnknownGlobal, and the
  // function kinds of records), raised when one is used or is reachable from
  // the root at the end; late_errors_ maps their ids to unknown_.
  std::vector<Error> unknown_;
  std::vector<uint8_t> consumed_;  // parallel to unknown_: used as getattr's owner, or called
  std::unordered_map<ValueId, size_t> late_errors_;
  Budget own_budget_;  // when the options name no budget
  Budget& budget_;
  struct KeyItem {
    ValueId id;
    bool close;  // emit the tuple's closing bracket
  };
  std::unordered_map<ValueId, KeyIndex> dict_index_;
  // Reused buffers of the key rendering (HashKey), so that indexing a key
  // allocates nothing once they have grown.
  std::vector<KeyItem> key_todo_;
  std::string key_text_;
  std::string other_key_text_;
  size_t key_len_ = 0;  // the rendering's length of FindKey's key
  std::string scalar_key_;
  ValueId empty_tuple_ = kMachineNoValue;  // the run's (), once built (Tuple)
  PickleMachine<Vm>* machine_ = nullptr;   // the running machine (Run) when reclaiming
  // The highest id Reclaim must never take besides the machine's
  // shared_high(): the values before this run, and the shared ().
  int64_t pinned_high_ = -1;
  PickleOp record_op_;  // RecordStorage's and RecordTensor's opcodes, for their steps' errors
};

}  // namespace

void ValueArena::AddChunk() {
  Value* chunk = nullptr;
  if (slab_left_ > 0) {
    const Block& slab = blocks_.back();
    chunk = slab.first + (slab.chunks - slab_left_) * kChunkSize;
    --slab_left_;
  } else {
    const size_t n = chunks_.size() < kSmallChunks ? 1 : kSlabChunks;
    chunks_.reserve(chunks_.size() + n);  // so that push_back below cannot throw
    blocks_.reserve(blocks_.size() + 1);
    chunk = BulkAllocator<Value>().allocate(n * kChunkSize);
    blocks_.push_back(Block{chunk, n});
    slab_left_ = n - 1;
  }
  std::uninitialized_value_construct_n(chunk, kChunkSize);
  chunks_.push_back(chunk);
}

void ValueArena::Release() noexcept {
  for (Value* chunk : chunks_) std::destroy_n(chunk, kChunkSize);
  for (const Block& block : blocks_) BulkAllocator<Value>().deallocate(block.first, block.chunks * kChunkSize);
  chunks_.clear();
  blocks_.clear();
  slab_left_ = 0;
  size_ = 0;
}

std::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kNone: return "None";
    case ValueKind::kBool: return "bool";
    case ValueKind::kInt: return "int";
    case ValueKind::kBigInt: return "int";
    case ValueKind::kFloat: return "float";
    case ValueKind::kComplex: return "complex";
    case ValueKind::kStr: return "str";
    case ValueKind::kBytes: return "bytes";
    case ValueKind::kTuple: return "tuple";
    case ValueKind::kList: return "list";
    case ValueKind::kDict: return "dict";
    case ValueKind::kSet: return "set";
    case ValueKind::kTensor: return "tensor";
    case ValueKind::kStorage: return "storage";
    case ValueKind::kGlobal: return "global";
    case ValueKind::kDtype: return "dtype";
    case ValueKind::kDevice: return "device";
    case ValueKind::kObject: return "object";
    case ValueKind::kRecord: return "record";
  }
  return "value";
}

std::string_view RecordFormName(RecordForm form) {
  switch (form) {
    case RecordForm::kCall: return "call";
    case RecordForm::kNew: return "new";
    case RecordForm::kMember: return "member";
  }
  return "unknown";
}

std::string_view TensorLayoutName(TensorLayout layout) {
  switch (layout) {
    case TensorLayout::kStrided: return "strided";
    case TensorLayout::kSparseCoo: return "sparse_coo";
    case TensorLayout::kSparseCsr: return "sparse_csr";
    case TensorLayout::kSparseCsc: return "sparse_csc";
    case TensorLayout::kSparseBsr: return "sparse_bsr";
    case TensorLayout::kSparseBsc: return "sparse_bsc";
    case TensorLayout::kNested: return "nested";
  }
  return "strided";
}

Dims DenseStrides(std::span<const int64_t> shape, bool fortran, int64_t unit) {
  Dims stride(shape.size(), 0);
  int64_t step = unit;
  for (size_t n = 0; n < shape.size(); ++n) {
    const size_t i = fortran ? n : shape.size() - 1 - n;
    stride[i] = step;
    step *= std::max<int64_t>(shape[i], 1);
  }
  return stride;
}

std::optional<std::string> NotAPlainArray(const Tensor& t) {
  if (t.quant->scheme != QScheme::kNone) {
    return "a quantized tensor (" + std::string(DTypeName(t.dtype)) + ", " + std::string(QSchemeName(t.quant->scheme)) +
           ")";
  }
  if (!t.numpy_dtype.empty()) return "a tensor of numpy dtype " + t.numpy_dtype + " (kept as its bytes)";
  if (t.meta) return "a meta tensor (" + std::string(DTypeName(t.dtype)) + ")";
  if (t.layout == TensorLayout::kNested) return "a nested tensor (" + std::to_string(t.shape.empty() ? 0 : t.shape[0]) + " components)";
  if (t.layout != TensorLayout::kStrided) return "a sparse tensor (" + std::string(TensorLayoutName(t.layout)) + ")";
  return std::nullopt;
}

std::string_view QSchemeName(QScheme scheme) {
  switch (scheme) {
    case QScheme::kNone: return "none";
    case QScheme::kPerTensorAffine: return "per_tensor_affine";
    case QScheme::kPerChannelAffine: return "per_channel_affine";
    case QScheme::kPerChannelAffineFloatQParams: return "per_channel_affine_float_qparams";
  }
  return "none";
}

VmLimits VmLimits::Clamped() const {
  VmLimits out = *this;
  out.pickle = pickle.Clamped();
  out.max_memo_entries = std::min<uint64_t>(max_memo_entries, uint64_t{1} << 28);
  out.max_stack_depth = std::min<uint64_t>(max_stack_depth, uint64_t{1} << 28);
  out.max_mark_depth = std::min<uint64_t>(max_mark_depth, uint64_t{1} << 20);
  out.max_container_len = std::min<uint64_t>(max_container_len, uint64_t{1} << 28);
  out.max_values = std::min<uint64_t>(max_values, uint64_t{1} << 28);
  out.max_alloc_bytes = std::min<uint64_t>(max_alloc_bytes, uint64_t{1} << 40);
  out.max_tensors = std::min<uint64_t>(max_tensors, uint64_t{1} << 26);
  out.max_tensor_dims = std::min<uint64_t>(max_tensor_dims, 1024);
  out.max_view_bytes = std::min<uint64_t>(max_view_bytes, uint64_t{1} << 44);
  out.max_walk_nodes = std::min<uint64_t>(max_walk_nodes, uint64_t{1} << 30);
  out.max_walk_depth = std::min<uint64_t>(max_walk_depth, 10'000);
  return out;
}

Result<ValueId> RunPickle(Bytes data, uint64_t base_offset, const std::string& where, VmState& state,
                          const StorageResolver& resolver, const VmOptions& options) {
  Vm vm(data, base_offset, where, state, resolver, options);
  return vm.Run();
}

}  // namespace ckptguard

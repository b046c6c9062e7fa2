// LiteralDomain: a PickleMachine domain that knows only literal str, int,
// None, tuples and globals (everything else, every call and every persistent
// load is an opaque value). Lenient. The storage-reference walker and the
// names-only domain the VM continues in after a forbidden global are this.
#ifndef CKPTGUARD_PICKLE_LITERAL_DOMAIN_H_
#define CKPTGUARD_PICKLE_LITERAL_DOMAIN_H_

#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"

namespace ckptguard {

class LiteralDomain {
 public:
  using Id = MachineId;

  struct Value {
    PidItem::Kind kind = PidItem::kOther;
    bool tuple = false;
    std::string_view text;    // kStr
    std::string_view module;  // kGlobal
    std::string_view name;    // kGlobal
    int64_t number = 0;       // kInt
    uint32_t first = 0;       // tuple: items in items_
    uint32_t count = 0;
  };

  // on_global hears every GLOBAL, resolved STACK_GLOBAL and INST.
  std::function<void(std::string_view module, std::string_view name)> on_global;
  // on_persistent hears every BINPERSID that is a storage id.
  std::function<void(const PickleOp& op, const StoragePid& pid)> on_storage;

  void Clear() {
    values_.clear();
    items_.clear();
    owned_.clear();
  }

  Result<Id> Literal(const PickleOp& op) {
    const PickleArg& arg = op.arg;
    Value v;
    switch (op.code) {
      case Opcode::kNone:
        v.kind = PidItem::kNone;
        break;
      case Opcode::kInt:
      case Opcode::kBinInt:
      case Opcode::kBinInt1:
      case Opcode::kBinInt2:
      case Opcode::kLong:
      case Opcode::kLong1:
      case Opcode::kLong4:
        if (arg.type == PickleArgType::kInt || arg.type == PickleArgType::kUInt) {
          if (arg.type == PickleArgType::kUInt && arg.uint_value > static_cast<uint64_t>(INT64_MAX)) break;
          v.kind = PidItem::kInt;
          v.number = arg.type == PickleArgType::kUInt ? static_cast<int64_t>(arg.uint_value) : arg.int_value;
        }
        break;
      case Opcode::kString:
      case Opcode::kBinString:
      case Opcode::kShortBinString:
      case Opcode::kUnicode:
      case Opcode::kBinUnicode:
      case Opcode::kShortBinUnicode:
      case Opcode::kBinUnicode8:
        v.kind = PidItem::kStr;
        v.text = Keep(arg, arg.Data());
        break;
      default:
        break;
    }
    return Add(v);
  }
  Result<Id> Tuple(const PickleOp&, std::span<const Id> items) {
    Value t;
    t.tuple = true;
    t.first = static_cast<uint32_t>(items_.size());
    t.count = static_cast<uint32_t>(items.size());
    items_.insert(items_.end(), items.begin(), items.end());
    return Add(t);
  }
  Result<Id> List(const PickleOp&, std::span<const Id>) { return Opaque(); }
  Result<Id> Dict(const PickleOp&, std::span<const Id>) { return Opaque(); }
  Result<Id> Set(const PickleOp&, std::span<const Id>, bool) { return Opaque(); }
  Status Append(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Status SetItems(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Status AddItems(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }

  Result<Id> Global(const PickleOp& op, std::string_view module, std::string_view name) {
    Value g;
    g.kind = PidItem::kGlobal;
    g.module = Keep(op.arg, module);
    g.name = KeepCopy(name);  // GLOBAL's name is always owned by the op
    if (on_global) on_global(g.module, g.name);
    return Add(g);
  }
  Result<Id> StackGlobal(const PickleOp&, Id module, Id name) {
    Result<GlobalName> n = StackGlobalName(Str(module), Str(name));
    if (!n) return Opaque();
    Value g;
    g.kind = PidItem::kGlobal;
    g.module = n->module;
    g.name = n->name;
    if (on_global) on_global(g.module, g.name);
    return Add(g);
  }
  Result<Id> Reduce(const PickleOp&, Id, Id) { return Opaque(); }
  Result<Id> NewObj(const PickleOp&, Id, Id, const Id*) { return Opaque(); }
  Result<Id> Obj(const PickleOp&, Id, std::span<const Id>) { return Opaque(); }
  Result<Id> Inst(const PickleOp&, std::string_view module, std::string_view name, std::span<const Id>) {
    if (on_global) on_global(module, name);
    return Opaque();
  }
  Status Build(const PickleOp&, Id, Id) { return OkStatus(); }
  Result<Id> Ext(const PickleOp&, uint64_t) { return Opaque(); }
  Result<Id> PersistentLoad(const PickleOp& op, const Id* pid) {
    if (pid != nullptr && on_storage) {
      const Value& t = values_[*pid];
      if (t.tuple && t.count >= 5 && t.count <= 6) {
        PidItem items[6];
        for (uint32_t i = 0; i < t.count; ++i) {
          const Value& v = values_[items_[t.first + i]];
          items[i] = PidItem{v.kind, v.text, v.module, v.name, v.number, v.kind == PidItem::kGlobal};
        }
        if (Result<StoragePid> s = ParseStoragePid(std::span<const PidItem>(items, t.count))) on_storage(op, *s);
      }
    }
    return Opaque();
  }
  Result<Id> Buffer(const PickleOp&, const Id* target) { return target != nullptr ? *target : Opaque(); }
  Id Opaque() { return Add(Value{}); }
  void Malformed(const Error&) {}

 private:
  Id Add(const Value& v) {
    values_.push_back(v);
    return static_cast<Id>(values_.size() - 1);
  }
  StrOperand Str(Id id) const {
    const Value& v = values_[id];
    return StrOperand{v.kind == PidItem::kStr, true, v.text};
  }
  // Keep views `data` when it points into the input; text the op owns is
  // copied (the op does not outlive its step).
  std::string_view Keep(const PickleArg& arg, std::string_view data) {
    return arg.IsOwned() ? KeepCopy(data) : data;
  }
  std::string_view KeepCopy(std::string_view data) {
    owned_.emplace_back(data);
    return owned_.back();
  }

  std::vector<Value> values_;
  std::vector<Id> items_;
  std::deque<std::string> owned_;
};

}  // namespace ckptguard

#endif  // CKPTGUARD_PICKLE_LITERAL_DOMAIN_H_

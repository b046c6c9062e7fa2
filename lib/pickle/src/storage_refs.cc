#include "ckptguard/storage_refs.h"

#include <deque>
#include <optional>
#include <unordered_map>

namespace ckptguard {
namespace {

// A value as far as this walk cares.
struct Value {
  enum class Kind : uint8_t { kOther, kStr, kInt, kGlobal, kTuple } kind = Kind::kOther;
  std::string_view text;   // kStr; kGlobal's module
  std::string_view name;   // kGlobal's name
  int64_t number = 0;      // kInt
  uint32_t first = 0;      // kTuple: items in Walker::items_
  uint32_t count = 0;
};

class Walker {
 public:
  std::vector<StorageRef> Run(std::span<const PickleOp> ops) {
    for (const PickleOp& op : ops) Step(op);
    return std::move(refs_);
  }

  // RunDecoder walks one pickle straight from a decoder, without keeping its
  // ops; text the ops own is copied into the walker first.
  std::vector<StorageRef> RunDecoder(PickleDecoder& decoder, std::optional<Error>* error) {
    while (!decoder.AtEnd()) {
      Result<PickleOp> op = decoder.Next();
      if (!op) {
        if (error != nullptr) *error = op.error();
        break;
      }
      if (op->code == Opcode::kStop) break;
      keep_owned_ = true;
      current_ = &op->arg;
      Step(*op);
      current_ = nullptr;
    }
    if (error != nullptr && !*error && !decoder.BetweenPickles()) {
      *error = Error{ErrorCode::kTruncated, decoder.Offset(), "", "pickle exhausted before STOP"};
    }
    return std::move(refs_);
  }

 private:
  uint32_t Add(Value v) {
    values_.push_back(v);
    return static_cast<uint32_t>(values_.size() - 1);
  }
  void Push(Value v) { stack_.push_back(Add(v)); }
  // Pop returns the top value id, or an opaque one when the stack is empty.
  uint32_t Pop() {
    if (stack_.size() <= StackFloor()) return Add(Value{});
    uint32_t id = stack_.back();
    stack_.pop_back();
    return id;
  }
  size_t StackFloor() const { return marks_.empty() ? 0 : marks_.back(); }
  // PopToMark removes everything above the topmost MARK and the MARK itself,
  // returning the removed values bottom-first.
  std::vector<uint32_t> PopToMark() {
    std::vector<uint32_t> out;
    if (marks_.empty()) return out;
    const size_t floor = marks_.back();
    marks_.pop_back();
    if (floor <= stack_.size()) {
      out.assign(stack_.begin() + static_cast<std::ptrdiff_t>(floor), stack_.end());
      stack_.resize(floor);
    }
    return out;
  }
  Value MakeTuple(const std::vector<uint32_t>& ids) {
    Value t;
    t.kind = Value::Kind::kTuple;
    t.first = static_cast<uint32_t>(items_.size());
    t.count = static_cast<uint32_t>(ids.size());
    items_.insert(items_.end(), ids.begin(), ids.end());
    return t;
  }
  static uint64_t MemoKey(const PickleArg& arg) {
    // The decoder refuses negative and oversized memo keys (as CPython).
    return arg.type == PickleArgType::kUInt ? arg.uint_value : static_cast<uint64_t>(arg.int_value);
  }
  // Text views the op's data; when the op owns it (and the op will not
  // outlive this step) a copy is kept.
  std::string_view Text(std::string_view data) {
    if (!keep_owned_ || current_ == nullptr || !current_->IsOwned()) return data;
    owned_.emplace_back(data);
    return owned_.back();
  }
  std::string_view Name(std::string_view name) {
    if (!keep_owned_) return name;
    owned_.emplace_back(name);  // GLOBAL's name is always owned by the op
    return owned_.back();
  }

  void Persistent(uint64_t offset, uint32_t id) {
    const Value& v = values_[id];
    if (v.kind != Value::Kind::kTuple || v.count < 5) return;
    const Value& tag = values_[items_[v.first]];
    const Value& type = values_[items_[v.first + 1]];
    const Value& key = values_[items_[v.first + 2]];
    const Value& location = values_[items_[v.first + 3]];
    const Value& numel = values_[items_[v.first + 4]];
    if (tag.kind != Value::Kind::kStr || tag.text != "storage" || type.kind != Value::Kind::kGlobal ||
        key.kind != Value::Kind::kStr || location.kind != Value::Kind::kStr || numel.kind != Value::Kind::kInt) {
      return;
    }
    refs_.push_back(StorageRef{offset, std::string(type.text), std::string(type.name), std::string(key.text),
                               std::string(location.text), numel.number});
  }

  void Step(const PickleOp& op) {
    const PickleArg& arg = op.arg;
    switch (op.code) {
      case Opcode::kMark:
        marks_.push_back(stack_.size());
        return;
      case Opcode::kGlobal: {
        Value g;
        g.kind = Value::Kind::kGlobal;
        g.text = Text(arg.Data());
        g.name = Name(arg.Name());
        Push(g);
        return;
      }
      case Opcode::kStackGlobal: {
        const Value name = values_[Pop()];
        const Value module = values_[Pop()];
        Value g;
        if (name.kind == Value::Kind::kStr && module.kind == Value::Kind::kStr) {
          g.kind = Value::Kind::kGlobal;
          g.text = module.text;
          g.name = name.text;
        }
        Push(g);
        return;
      }
      case Opcode::kTuple:
        Push(MakeTuple(PopToMark()));
        return;
      case Opcode::kEmptyTuple:
        Push(MakeTuple({}));
        return;
      case Opcode::kTuple1:
      case Opcode::kTuple2:
      case Opcode::kTuple3: {
        const size_t n = static_cast<size_t>(op.code) - static_cast<size_t>(Opcode::kTuple1) + 1;
        std::vector<uint32_t> ids(n);
        for (size_t i = n; i-- > 0;) ids[i] = Pop();
        Push(MakeTuple(ids));
        return;
      }
      case Opcode::kPut:
      case Opcode::kBinPut:
      case Opcode::kLongBinPut:
        if (stack_.size() > StackFloor()) memo_[MemoKey(arg)] = stack_.back();
        return;
      case Opcode::kMemoize:
        if (stack_.size() > StackFloor()) memo_[memo_.size()] = stack_.back();
        return;
      case Opcode::kGet:
      case Opcode::kBinGet:
      case Opcode::kLongBinGet: {
        auto it = memo_.find(MemoKey(arg));
        if (it == memo_.end()) {
          Push(Value{});
        } else {
          stack_.push_back(it->second);
        }
        return;
      }
      case Opcode::kBinPersId: {
        const uint32_t id = Pop();
        Persistent(op.offset, id);
        Push(Value{});
        return;
      }
      case Opcode::kDup:
        if (stack_.size() > StackFloor()) {
          stack_.push_back(stack_.back());
        } else {
          Push(Value{});
        }
        return;
      default:
        break;
    }
    switch (arg.type) {
      case PickleArgType::kString:
      case PickleArgType::kBytes: {
        Value s;
        s.kind = Value::Kind::kStr;
        s.text = Text(arg.Data());
        Push(s);
        return;
      }
      case PickleArgType::kInt:
      case PickleArgType::kBool:
      case PickleArgType::kUInt:
        if (op.code == Opcode::kProto || op.code == Opcode::kFrame) return;
        if (op.code == Opcode::kInt || op.code == Opcode::kBinInt || op.code == Opcode::kBinInt1 ||
            op.code == Opcode::kBinInt2 || op.code == Opcode::kLong || op.code == Opcode::kLong1 ||
            op.code == Opcode::kLong4) {
          Value n;
          n.kind = Value::Kind::kInt;
          n.number = arg.type == PickleArgType::kUInt ? static_cast<int64_t>(arg.uint_value) : arg.int_value;
          Push(n);
          return;
        }
        break;
      default:
        break;
    }
    // Everything else: apply the opcode's stack effect with opaque results.
    const OpcodeInfo& info = op.Info();
    size_t to_pop = info.num_before;
    if (info.mark_index >= 0) {
      PopToMark();
      to_pop = static_cast<size_t>(info.mark_index);
    }
    for (size_t i = 0; i < to_pop; ++i) Pop();
    for (size_t i = 0; i < info.num_after; ++i) Push(Value{});
  }

  std::vector<Value> values_;
  std::vector<uint32_t> items_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::vector<StorageRef> refs_;
  std::deque<std::string> owned_;  // stable addresses for views
  bool keep_owned_ = false;
  const PickleArg* current_ = nullptr;
};

}  // namespace

std::vector<StorageRef> CollectStorageRefs(std::span<const PickleOp> ops) { return Walker().Run(ops); }

std::vector<StorageRef> CollectStorageRefs(Bytes data, const PickleLimits& limits, std::optional<Error>* error) {
  PickleDecoder decoder(data, limits);
  return Walker().RunDecoder(decoder, error);
}

}  // namespace ckptguard

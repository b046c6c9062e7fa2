#include "joblib_view.h"

#include <span>

#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"

namespace ckptguard {
namespace {

constexpr uint8_t kFrameByte = static_cast<uint8_t>(Opcode::kFrame);
constexpr size_t kMaxText = 4096;               // bytes kept of one string
constexpr uint64_t kMaxValues = uint64_t{1} << 22;  // values kept by one view (then opaque)

std::string Num(uint64_t v) { return std::to_string(v); }

// The little of a value the view needs: strings, ints, tuples and dicts (the
// wrapper's state), globals, numpy dtypes and wrapper objects.
struct JVal {
  enum Kind : uint8_t { kOther, kStr, kInt, kTuple, kDict, kGlobal, kDtype, kWrapper } kind = kOther;
  bool truncated = false;       // kStr: text was cut at kMaxText
  std::string text;             // kStr, kGlobal (module.name), kDtype (the dtype string)
  int64_t number = 0;           // kInt
  std::vector<MachineId> items;  // kTuple items, kDict key/value pairs
  int64_t item_size = -1;       // kDtype: elsize from its BUILD state (> 0 for structured dtypes)
};

// Pending is a wrapper BUILD the driver must act on: the array's bytes follow.
struct Pending {
  bool object = false;
  std::optional<uint64_t> len;  // bytes of array data (unset: unknown)
  bool aligned = false;         // a padding byte (and padding) comes first
  std::string why;              // when len is unset
};

bool IsWrapperName(std::string_view name) {
  return name == "joblib.numpy_pickle.NumpyArrayWrapper" || name == "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper";
}

// DtypeItemSize reads numpy's dtype strings: [<>|=]? kind [digits], with
// 'U' counting 4 bytes a character; nullopt when not understood.
std::optional<uint64_t> DtypeItemSize(std::string_view s, bool* object) {
  if (!s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=')) s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  const char kind = s[0];
  s.remove_prefix(1);
  uint64_t digits = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9' || digits > (uint64_t{1} << 40)) return std::nullopt;
    digits = digits * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (kind == 'O') {
    *object = true;
    return 8;
  }
  if (s.empty()) {
    switch (kind) {
      case '?': case 'b': case 'B': return 1;
      case 'h': case 'H': case 'e': return 2;
      case 'i': case 'I': case 'f': case 'l': case 'L': return kind == 'l' || kind == 'L' ? 8 : 4;
      case 'q': case 'Q': case 'd': case 'g': return 8;
      default: return std::nullopt;
    }
  }
  return kind == 'U' ? digits * 4 : digits;
}

class JoblibDomain {
 public:
  using Id = MachineId;
  std::optional<Pending> pending;

  Result<Id> Literal(const PickleOp& op) {
    JVal v;
    switch (op.arg.type) {
      case PickleArgType::kString:
        v.kind = JVal::kStr;
        v.text = std::string(op.arg.Data().substr(0, kMaxText));
        v.truncated = op.arg.Data().size() > kMaxText;
        break;
      case PickleArgType::kInt:
      case PickleArgType::kBool:
        v.kind = JVal::kInt;
        v.number = op.arg.int_value;
        break;
      case PickleArgType::kUInt:
        v.kind = JVal::kInt;
        v.number = static_cast<int64_t>(std::min<uint64_t>(op.arg.uint_value, INT64_MAX));
        break;
      default:
        break;
    }
    return New(std::move(v));
  }
  Result<Id> Tuple(const PickleOp&, std::span<const Id> items) {
    JVal v;
    v.kind = JVal::kTuple;
    v.items.assign(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(items.size(), 64)));
    return New(std::move(v));
  }
  Result<Id> List(const PickleOp&, std::span<const Id>) { return New(JVal{}); }
  Result<Id> Dict(const PickleOp&, std::span<const Id> items) {
    JVal v;
    v.kind = JVal::kDict;
    Add(v, items);
    return New(std::move(v));
  }
  Result<Id> Set(const PickleOp&, std::span<const Id>, bool) { return New(JVal{}); }
  Status Append(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Status SetItems(const PickleOp&, Id dict, std::span<const Id> items) {
    if (Val(dict).kind == JVal::kDict) Add(Val(dict), items);
    return OkStatus();
  }
  Status AddItems(const PickleOp&, Id, std::span<const Id>) { return OkStatus(); }
  Result<Id> Global(const PickleOp&, std::string_view module, std::string_view name) {
    JVal v;
    v.kind = JVal::kGlobal;
    v.text = std::string(module) + "." + std::string(name);
    return New(std::move(v));
  }
  Result<Id> StackGlobal(const PickleOp&, Id module, Id name) {
    const JVal& m = Val(module);
    const JVal& n = Val(name);
    Result<GlobalName> g = StackGlobalName(StrOperand{m.kind == JVal::kStr, !m.truncated, m.text},
                                           StrOperand{n.kind == JVal::kStr, !n.truncated, n.text});
    if (!g) return New(JVal{});
    JVal v;
    v.kind = JVal::kGlobal;
    v.text = std::string(g->module) + "." + std::string(g->name);
    return New(std::move(v));
  }
  Result<Id> Call(Id callable, std::span<const Id> args) {
    const JVal& c = Val(callable);
    JVal v;
    if (c.kind == JVal::kGlobal && IsWrapperName(c.text)) {
      v.kind = JVal::kWrapper;
    } else if (c.kind == JVal::kGlobal && (c.text == "numpy.dtype" || c.text == "numpy.core.multiarray.dtype") &&
               !args.empty() && Val(args[0]).kind == JVal::kStr) {
      v.kind = JVal::kDtype;
      v.text = Val(args[0]).text;
    }
    return New(std::move(v));
  }
  Result<Id> Reduce(const PickleOp&, Id callable, Id args) { return Call(callable, TupleItems(args)); }
  Result<Id> NewObj(const PickleOp&, Id cls, Id args, const Id*) { return Call(cls, TupleItems(args)); }
  Result<Id> Obj(const PickleOp&, Id cls, std::span<const Id> args) { return Call(cls, args); }
  Result<Id> Inst(const PickleOp& op, std::string_view module, std::string_view name, std::span<const Id> args) {
    CKG_ASSIGN_OR_RETURN(Id g, Global(op, module, name));
    return Call(g, args);
  }
  Status Build(const PickleOp&, Id obj, Id state) {
    JVal& o = Val(obj);
    const JVal& s = Val(state);
    if (o.kind == JVal::kDtype && s.kind == JVal::kTuple && s.items.size() >= 6 && Val(s.items[5]).kind == JVal::kInt) {
      o.item_size = Val(s.items[5]).number;
    } else if (o.kind == JVal::kWrapper) {
      pending = WrapperRead(s);
    }
    return OkStatus();
  }
  Result<Id> Ext(const PickleOp&, uint64_t) { return New(JVal{}); }
  Result<Id> PersistentLoad(const PickleOp&, const Id*) { return New(JVal{}); }
  Result<Id> Buffer(const PickleOp&, const Id* target) { return target != nullptr ? *target : New(JVal{}); }
  Id Opaque() { return *New(JVal{}); }
  void Malformed(const Error&) {}
  void Discard(Id) {}

 private:
  Result<Id> New(JVal v) {
    if (values_.size() >= kMaxValues) {
      if (values_.empty()) values_.emplace_back();
      return 0;
    }
    values_.push_back(std::move(v));
    return static_cast<Id>(values_.size() - 1);
  }
  JVal& Val(Id id) { return values_[id]; }
  void Add(JVal& dict, std::span<const Id> items) {
    for (size_t i = 0; i + 1 < items.size() && dict.items.size() < 64; i += 2) {
      dict.items.push_back(items[i]);
      dict.items.push_back(items[i + 1]);
    }
  }
  std::vector<Id> TupleItems(Id args) {
    return Val(args).kind == JVal::kTuple ? Val(args).items : std::vector<Id>{};
  }
  const JVal* Get(const JVal& dict, std::string_view key) {
    const JVal* found = nullptr;  // the last one, as a dict keeps it
    for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
      if (Val(dict.items[i]).kind == JVal::kStr && Val(dict.items[i]).text == key) found = &Val(dict.items[i + 1]);
    }
    return found;
  }
  // WrapperRead is NumpyArrayWrapper.read_array's plan for this state.
  Pending WrapperRead(const JVal& state) {
    Pending p;
    if (state.kind != JVal::kDict) {
      p.why = "its BUILD state is not a plain dict";
      return p;
    }
    p.aligned = Get(state, "numpy_array_alignment_bytes") != nullptr;
    const JVal* dtype = Get(state, "dtype");
    const JVal* shape = Get(state, "shape");
    if (dtype == nullptr || dtype->kind != JVal::kDtype) {
      p.why = "its dtype is not a numpy.dtype of a literal string";
      return p;
    }
    bool object = false;
    std::optional<uint64_t> item = DtypeItemSize(dtype->text, &object);
    if (dtype->item_size > 0) item = static_cast<uint64_t>(dtype->item_size);
    if (object) {
      p.object = true;
      return p;
    }
    if (!item) {
      p.why = "its dtype '" + dtype->text + "' is not understood";
      return p;
    }
    uint64_t count = 1;
    if (shape == nullptr || shape->kind != JVal::kTuple) {
      p.why = "its shape is not a tuple";
      return p;
    }
    for (Id d : shape->items) {
      const JVal& dim = Val(d);
      if (dim.kind != JVal::kInt || dim.number < 0) {
        p.why = "its shape holds something other than a non-negative int";
        return p;
      }
      const uint64_t n = static_cast<uint64_t>(dim.number);
      if (n != 0 && count > UINT64_MAX / n) {
        p.why = "its shape overflows";
        return p;
      }
      count *= n;
    }
    if (*item != 0 && count > UINT64_MAX / *item) {
      p.why = "its size overflows";
      return p;
    }
    p.len = count * *item;
    return p;
  }

  std::vector<JVal> values_;
};

// MayHoldWrapper: a cheap test before decoding anything (the name can only
// be spelled in plain text, or in protocol-0 escapes).
bool MayHoldWrapper(Bytes data) {
  const std::string_view text = AsStringView(data);
  return text.find("ArrayWrapper") != std::string_view::npos || text.find("\\u00") != std::string_view::npos ||
         text.find("\\x") != std::string_view::npos;
}

}  // namespace

Result<std::optional<JoblibView>> ReadJoblibView(Bytes data, uint64_t start, const PickleLimits& limits,
                                                 Budget& budget, std::string_view where) {
  if (start >= data.size() || !MayHoldWrapper(data.subspan(static_cast<size_t>(start)))) return std::nullopt;
  JoblibDomain domain;
  MachineLimits machine_limits;
  PickleMachine<JoblibDomain> machine(domain, machine_limits, budget, MachineMode::kLenient, std::string(where));
  machine.Reset();
  JoblibView view;
  // As the pure-Python unpickler reads (pickle_views.h): FRAME buffers.
  uint64_t pos = start;
  std::optional<uint64_t> frame_end;
  while (true) {
    if (frame_end && pos >= *frame_end) frame_end.reset();
    const uint64_t limit = frame_end.value_or(data.size());
    if (pos >= limit) break;
    if (data[pos] == kFrameByte) {
      if (frame_end) break;
      ByteCursor c(data.subspan(static_cast<size_t>(pos + 1)), pos + 1);
      Result<uint64_t> len = c.ReadU64LE();
      if (!len) break;
      pos += 9;
      frame_end = *len > data.size() - pos ? data.size() : pos + *len;
      continue;
    }
    PickleDecoder one(data.subspan(static_cast<size_t>(pos), static_cast<size_t>(limit - pos)), limits, pos);
    Result<PickleOp> op = one.Next();
    if (!op) break;
    if (Status st = machine.Step(*op); !st) {
      if (!st.error().limit.empty()) return std::unexpected(st.error());
      break;
    }
    view.bytes.append(reinterpret_cast<const char*>(data.data() + pos), static_cast<size_t>(op->length));
    pos += op->length;
    if (op->code == Opcode::kStop) break;
    if (!domain.pending) continue;
    const Pending pending = *domain.pending;
    domain.pending.reset();
    // The array's bytes come from the file, after the unpickler's buffer:
    // joblib ends the frame right after the wrapper's BUILD.
    if (frame_end && pos != *frame_end) {
      view.anomalies.push_back({"joblib.array_in_frame", pos, std::string(where),
                                "a NumpyArrayWrapper BUILD inside a frame: joblib reads its array after the frame"});
      pos = *frame_end;
    }
    frame_end.reset();
    ++view.num_arrays;
    if (pending.object) {
      // pickle.load(file): one pickle, run by the C unpickler.
      Result<uint64_t> end = FirstPickleEnd(data.subspan(static_cast<size_t>(pos)), limits, pos, &budget, where);
      view.object_pickles.push_back(pos);
      if (!end) {
        if (!end.error().limit.empty()) return std::unexpected(end.error());
        break;  // scanned from `pos` as its own pickle source
      }
      pos = *end;
      continue;
    }
    if (!pending.len) {
      view.anomalies.push_back({"joblib.unknown_array", pos, std::string(where),
                                "a NumpyArrayWrapper whose array length cannot be known (" + pending.why +
                                    "): joblib's reading is not followed past it"});
      break;
    }
    uint64_t skip = 0;
    if (pending.aligned) {
      if (pos >= data.size()) break;
      skip = 1 + data[pos];
    }
    if (skip > data.size() - pos || *pending.len > data.size() - pos - skip) {
      view.anomalies.push_back({"joblib.truncated_array", pos, std::string(where),
                                "a NumpyArrayWrapper array of " + Num(*pending.len) + " bytes runs past the data"});
      break;
    }
    pos += skip + *pending.len;
  }
  if (view.num_arrays == 0) return std::nullopt;
  CKG_TRY(budget.Charge(BudgetKind::kReadBytes, view.bytes.size(), start, where, "joblib view"));
  return std::optional<JoblibView>(std::move(view));
}

}  // namespace ckptguard

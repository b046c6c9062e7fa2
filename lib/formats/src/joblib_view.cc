#include "joblib_view.h"

#include <algorithm>
#include <span>
#include <unordered_map>

#include "ckptguard/npy_reader.h"
#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"

namespace ckptguard {
namespace {

constexpr uint8_t kFrameByte = static_cast<uint8_t>(Opcode::kFrame);
// A reading joblib.dump never writes, which joblib.load may read on from
// where the view cannot follow: a polyglot (CKG-F011, dangerous).
constexpr std::string_view kForeignReading = "polyglot.joblib_reading";
constexpr size_t kMaxText = 4096;               // bytes kept of one string
constexpr uint64_t kMaxValues = uint64_t{1} << 22;  // values kept by one view (then opaque)
constexpr size_t kMaxItems = 64;                 // items kept of one tuple, list or dict
constexpr size_t kMaxDescrNodes = 4096;          // values of one dtype description worked out

std::string Num(uint64_t v) { return std::to_string(v); }

// The little of a value the view needs: strings, ints, tuples, lists and
// dicts (the wrapper's state, a dtype's description), globals, numpy dtypes
// and wrapper objects.
struct JVal {
  enum Kind : uint8_t { kOther, kNone, kStr, kInt, kTuple, kList, kDict, kGlobal, kDtype, kWrapper } kind = kOther;
  bool truncated = false;       // kStr: text cut at kMaxText; kTuple/kList/kDict: items cut at kMaxItems
  std::string text;             // kStr, kGlobal (module.name)
  int64_t number = 0;           // kInt
  bool is_bool = false;         // kInt: True or False
  std::vector<MachineId> items;  // kTuple/kList items, kDict key/value pairs
  // kDtype: what numpy.dtype was called with, and the BUILD state, if any.
  std::optional<MachineId> dtype_arg;
  std::optional<MachineId> dtype_state;
  // kWrapper: made by calling the class (its __init__ sets attributes,
  // numpy_array_alignment_bytes among them), and BUILT already (attributes
  // set then stay): joblib writes neither, it makes each wrapper with
  // cls.__new__ and BUILDs it once.
  bool constructed = false;
  bool built = false;
  // kOther: a call whose arguments name the wrapper class in a way the view
  // does not follow (a call of a call): it may be a wrapper, whose BUILD
  // joblib follows with an array's bytes.
  bool maybe_wrapper = false;
};

// Pending is a wrapper BUILD the driver must act on: the array's bytes follow.
struct Pending {
  bool object = false;
  // The dtype is not worked out: joblib may unpickle the data (read as a
  // possible pickle, then followed past its STOP when it is one).
  bool maybe_object = false;
  std::optional<uint64_t> len;  // bytes of array data (unset: unknown)
  bool aligned = false;         // a padding byte (and padding) comes first
  std::string why;              // when len is unset
  // A wrapper joblib never writes (made by a call, BUILT twice, a state or
  // shape of another form): where joblib reads on is not known, and bytes
  // it may run lie there (the reading stops, reported as a polyglot).
  bool foreign = false;
};

// IsWrapperName: a global that names joblib's NumpyArrayWrapper. The
// class is found through any module that imports it (joblib._store_backends
// names numpy_pickle, and protocol 4 resolves a dotted name attribute by
// attribute), so any name whose last part is the class's counts.
bool IsWrapperName(std::string_view name) {
  constexpr std::string_view kClass = "NumpyArrayWrapper";
  return name.size() > kClass.size() && name.ends_with(kClass) && name[name.size() - kClass.size() - 1] == '.';
}

// IsRebuildFromType: torch's _rebuild_from_type_v2(func, new_type, args,
// state), which calls func(*args) (and returns that untouched for
// new_type Tensor).
bool IsRebuildFromType(std::string_view name) {
  return name == "torch._tensor._rebuild_from_type_v2" || name == "torch._utils._rebuild_from_type_v2";
}

// copyreg's reconstructors, which make an object of the class they are given.
bool IsNewObjName(std::string_view name) {
  return name == "copyreg.__newobj__" || name == "copyreg._reconstructor" || name == "copy_reg.__newobj__" ||
         name == "copy_reg._reconstructor";
}

class JoblibDomain {
 public:
  using Id = MachineId;
  std::optional<Pending> pending;

  Result<Id> Literal(const PickleOp& op) {
    JVal v;
    if (op.code == Opcode::kNone) {
      v.kind = JVal::kNone;
      return New(std::move(v));
    }
    // A Python 2 str (STRING, BINSTRING, SHORT_BINSTRING) is a str to
    // joblib's unpickler (encoding 'ASCII'): a STACK_GLOBAL may take it.
    const bool py2_str = op.code == Opcode::kString || op.code == Opcode::kBinString || op.code == Opcode::kShortBinString;
    switch (py2_str ? PickleArgType::kString : op.arg.type) {
      case PickleArgType::kString:
        v.kind = JVal::kStr;
        v.text = std::string(op.arg.Data().substr(0, kMaxText));
        v.truncated = op.arg.Data().size() > kMaxText;
        break;
      case PickleArgType::kInt:
      case PickleArgType::kBool:
        v.kind = JVal::kInt;
        v.number = op.arg.int_value;
        v.is_bool = op.arg.type == PickleArgType::kBool;
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
    AddItems(v, items);
    return New(std::move(v));
  }
  Result<Id> List(const PickleOp&, std::span<const Id> items) {
    JVal v;
    v.kind = JVal::kList;
    AddItems(v, items);
    return New(std::move(v));
  }
  Result<Id> Dict(const PickleOp&, std::span<const Id> items) {
    JVal v;
    v.kind = JVal::kDict;
    Add(v, items);
    return New(std::move(v));
  }
  Result<Id> Set(const PickleOp&, std::span<const Id>, bool) { return New(JVal{}); }
  Status Append(const PickleOp&, Id list, std::span<const Id> items) {
    if (Val(list).kind == JVal::kList) AddItems(Val(list), items);
    return OkStatus();
  }
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
  // Call is callable(*args); `init` is false for cls.__new__(cls, *args)
  // (NEWOBJ, copyreg.__newobj__), which runs no __init__.
  Result<Id> Call(Id callable, std::span<const Id> args, bool init = true) {
    const JVal& c = Val(callable);
    JVal v;
    if (c.kind == JVal::kGlobal && IsRebuildFromType(c.text) && args.size() == 4 && Val(args[2]).kind == JVal::kTuple &&
        !Val(args[2]).truncated && !in_rebuild_) {
      // func(*args), as torch returns it for a Tensor type; for another
      // type, what as_subclass makes of it.
      const JVal& new_type = Val(args[1]);
      const bool tensor = new_type.kind == JVal::kGlobal &&
                          (new_type.text == "torch._tensor.Tensor" || new_type.text == "torch.Tensor");
      const std::vector<Id> inner_args = Val(args[2]).items;  // (New may grow values_)
      in_rebuild_ = true;
      Result<Id> inner = Call(args[0], inner_args);
      in_rebuild_ = false;
      if (tensor || !inner) return inner;
      if (Val(*inner).kind != JVal::kWrapper && !Val(*inner).maybe_wrapper) return inner;
      v.maybe_wrapper = true;
      return New(std::move(v));
    }
    if (c.kind == JVal::kGlobal && (c.text == "builtins.getattr" || c.text == "__builtin__.getattr") &&
        args.size() >= 2 && Val(args[1]).kind == JVal::kStr) {
      // getattr(module or class, 'name'): the global it names (a
      // NumpyArrayWrapper reached as an attribute of joblib.numpy_pickle).
      const JVal& owner = Val(args[0]);
      const std::string& attr = Val(args[1]).text;
      if (owner.kind == JVal::kGlobal) {
        v.kind = JVal::kGlobal;
        v.text = owner.text + "." + attr;
      } else {
        v.maybe_wrapper = IsWrapperName("." + attr) || owner.maybe_wrapper;
      }
      return New(std::move(v));
    }
    if (c.kind == JVal::kGlobal && IsWrapperName(c.text)) {
      v.kind = JVal::kWrapper;
      v.constructed = init;
    } else if (c.kind == JVal::kGlobal && IsNewObjName(c.text) && !args.empty() && Val(args[0]).kind == JVal::kGlobal &&
               IsWrapperName(Val(args[0]).text)) {
      // copyreg.__newobj__(cls, *args) is cls.__new__(cls, *args);
      // copyreg._reconstructor(cls, object, None) is object.__new__(cls)
      // (pickle protocols 0 and 1 write it), with any other base or state
      // that base's constructor.
      v.kind = JVal::kWrapper;
      v.constructed = c.text.ends_with("._reconstructor") &&
                      !(args.size() == 3 && Val(args[1]).kind == JVal::kGlobal &&
                        (Val(args[1]).text == "builtins.object" || Val(args[1]).text == "__builtin__.object") &&
                        Val(args[2]).kind == JVal::kNone);
    } else if (c.kind == JVal::kGlobal && (c.text == "numpy.dtype" || c.text == "numpy.core.multiarray.dtype")) {
      v.kind = JVal::kDtype;
      if (!args.empty()) v.dtype_arg = args[0];
    } else if (c.kind == JVal::kGlobal && (c.text == "builtins.dict" || c.text == "__builtin__.dict") &&
               (args.empty() || (args.size() == 1 && Val(args[0]).kind == JVal::kDict))) {
      // dict() or dict(d): a state spelled as a call is the dict it copies.
      if (!args.empty()) v = Val(args[0]);
      v.kind = JVal::kDict;
    } else if (NamesWrapper(callable) || std::any_of(args.begin(), args.end(), [&](Id a) { return NamesWrapper(a); })) {
      v.maybe_wrapper = true;
    }
    return New(std::move(v));
  }
  // NamesWrapper: `id` is the wrapper class, a value that may be a wrapper,
  // or a tuple holding one (two levels: the arguments of a call of a call).
  bool NamesWrapper(Id id) {
    const JVal& v = Val(id);
    auto direct = [&](const JVal& x) {
      return (x.kind == JVal::kGlobal && IsWrapperName(x.text)) || x.kind == JVal::kWrapper || x.maybe_wrapper;
    };
    if (direct(v)) return true;
    if (v.kind != JVal::kTuple) return false;
    for (Id item : v.items) {
      const JVal& x = Val(item);
      if (direct(x)) return true;
      if (x.kind == JVal::kTuple) {
        for (Id inner : x.items) {
          if (direct(Val(inner))) return true;
        }
      }
    }
    return false;
  }
  Result<Id> Reduce(const PickleOp&, Id callable, Id args) { return Call(callable, TupleItems(args)); }
  Result<Id> NewObj(const PickleOp&, Id cls, Id args, const Id*) { return Call(cls, TupleItems(args), false); }
  Result<Id> Obj(const PickleOp&, Id cls, std::span<const Id> args) { return Call(cls, args); }
  Result<Id> Inst(const PickleOp& op, std::string_view module, std::string_view name, std::span<const Id> args) {
    CKG_ASSIGN_OR_RETURN(Id g, Global(op, module, name));
    return Call(g, args);
  }
  Status Build(const PickleOp&, Id obj, Id state) {
    JVal& o = Val(obj);
    const JVal& s = Val(state);
    (void)s;
    if (o.kind == JVal::kDtype) {
      o.dtype_state = state;
    } else if (o.maybe_wrapper) {
      pending = Pending{};
      pending->foreign = true;
      pending->why = "a BUILD of a value that may be a NumpyArrayWrapper, made by a call the view does not follow "
                     "(joblib reads an array's bytes after the BUILD of any wrapper)";
    } else if (o.kind == JVal::kWrapper) {
      const bool built_before = o.built;
      o.built = true;
      if (o.constructed || built_before) {
        pending = Pending{};
        pending->foreign = true;
        pending->why = built_before ? "a wrapper BUILT a second time (attributes the first BUILD set stay)"
                                    : "a wrapper made by calling its class (its __init__ sets attributes the BUILD "
                                      "state does not show, numpy_array_alignment_bytes among them)";
      } else {
        pending = WrapperRead(StateAttributes(s));
      }
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
  bool in_rebuild_ = false;  // Call follows one _rebuild_from_type_v2 level
  void Add(JVal& dict, std::span<const Id> items) {
    for (size_t i = 0; i + 1 < items.size(); i += 2) {
      if (dict.items.size() >= kMaxItems) {
        dict.truncated = true;
        break;
      }
      dict.items.push_back(items[i]);
      dict.items.push_back(items[i + 1]);
    }
  }
  static void AddItems(JVal& seq, std::span<const Id> items) {
    for (Id item : items) {
      if (seq.items.size() >= kMaxItems) {
        seq.truncated = true;
        return;
      }
      seq.items.push_back(item);
    }
  }
  // DescrOf converts the value numpy.dtype was called with into
  // InterpretDescr's post-order nodes, iteratively (a value shared through
  // the memo is converted once; a cycle or a value the view did not keep
  // is kOther, which InterpretDescr reads as unknown).
  std::vector<DescrValue> DescrOf(Id root) {
    std::vector<DescrValue> out;
    std::unordered_map<Id, uint32_t> done;
    std::unordered_map<Id, bool> open;
    std::vector<std::pair<Id, bool>> work{{root, false}};  // (value, its items are done)
    while (!work.empty()) {
      auto [id, expanded] = work.back();
      work.pop_back();
      if (done.contains(id)) continue;
      const JVal& v = Val(id);
      const bool seq = (v.kind == JVal::kTuple || v.kind == JVal::kList) && !v.truncated;
      if (!expanded && seq) {
        if (open[id]) {  // a cycle: not a literal numpy reads
          DescrValue other;
          if (out.size() >= kMaxDescrNodes) return {};
          out.push_back(other);
          done[id] = static_cast<uint32_t>(out.size() - 1);
          continue;
        }
        open[id] = true;
        work.push_back({id, true});
        for (auto it = v.items.rbegin(); it != v.items.rend(); ++it) work.push_back({*it, false});
        continue;
      }
      if (out.size() >= kMaxDescrNodes) return {};
      DescrValue d;
      if (v.kind == JVal::kStr && !v.truncated) {
        d.kind = DescrValue::Kind::kStr;
        d.text = v.text;
      } else if (v.kind == JVal::kInt) {
        d.kind = DescrValue::Kind::kInt;
        d.number = v.number;
        d.is_bool = v.is_bool;
      } else if (seq) {
        d.kind = v.kind == JVal::kTuple ? DescrValue::Kind::kTuple : DescrValue::Kind::kList;
        for (Id item : v.items) {
          auto it = done.find(item);
          if (it == done.end()) return {};  // (a cycle through an item: unknown)
          d.items.push_back(it->second);
        }
      }
      out.push_back(std::move(d));
      done[id] = static_cast<uint32_t>(out.size() - 1);
    }
    return out;
  }
  // DtypeOf is what numpy makes of a pickled numpy.dtype: the description
  // it was called with, then its BUILD state, whose flags (item 7 of a
  // version 3 or 4 state) alone decide dtype.hasobject (numpy's
  // __setstate__ takes them as given) and whose elsize (item 5) sizes a
  // flexible or structured dtype.
  NumpyDtype DtypeOf(const JVal& dtype) {
    if (!dtype.dtype_arg) return NumpyDtype{};
    NumpyDtype d = InterpretDescr(DescrOf(*dtype.dtype_arg));
    if (!dtype.dtype_state) return d;
    const JVal& st = Val(*dtype.dtype_state);
    if (st.kind != JVal::kTuple || st.truncated || st.items.size() < 8 || Val(st.items[0]).kind != JVal::kInt ||
        (Val(st.items[0]).number != 3 && Val(st.items[0]).number != 4) || Val(st.items[7]).kind != JVal::kInt) {
      return NumpyDtype{};  // a state numpy may read otherwise: not worked out
    }
    const bool has_object = (Val(st.items[7]).number & 1) != 0;
    if (has_object) return d.holds == NumpyDtype::Holds::kUnknown ? d : NumpyDtype{NumpyDtype::Holds::kObjects, 8, 'O'};
    if (d.holds != NumpyDtype::Holds::kPlain) return NumpyDtype{};  // objects without the flag: not worked out
    const JVal& elsize = Val(st.items[5]);
    if ((d.unsized || d.structured || d.kind == 'V') && elsize.kind == JVal::kInt && elsize.number > 0) {
      d.item_size = static_cast<uint64_t>(elsize.number);
      d.unsized = false;
    }
    return d;
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
  // StateAttributes is the attributes pickle's default BUILD gives an
  // object from `state`: a dict's items, or a (dict or None, slots dict or
  // None) pair's, the slots last (set after the dict; Get keeps the last).
  // Anything else is returned as it is (WrapperRead gives up on it).
  JVal StateAttributes(const JVal& state) {
    if (state.kind != JVal::kTuple || state.items.size() != 2) return state;
    JVal merged;
    merged.kind = JVal::kDict;
    for (Id part : state.items) {
      const JVal& p = Val(part);
      if (p.kind == JVal::kNone) continue;
      if (p.kind != JVal::kDict) return state;
      merged.items.insert(merged.items.end(), p.items.begin(), p.items.end());
      merged.truncated = merged.truncated || p.truncated;
    }
    return merged;
  }
  // WrapperRead is NumpyArrayWrapper.read_array's plan for this state.
  Pending WrapperRead(const JVal& state) {
    Pending p;
    if (state.kind != JVal::kDict) {
      p.foreign = true;
      p.why = "its BUILD state is not a plain dict";
      return p;
    }
    // safe_get_numpy_array_alignment_bytes() is not None: a padding byte
    // (and its padding) precede the data; None (or no key) means none.
    const JVal* alignment = Get(state, "numpy_array_alignment_bytes");
    p.aligned = alignment != nullptr && alignment->kind != JVal::kNone;
    const JVal* dtype = Get(state, "dtype");
    const JVal* shape = Get(state, "shape");
    if (state.truncated) {
      p.foreign = true;
      p.why = "its BUILD state has more items than the view keeps";
      return p;
    }
    // joblib.dump writes these attributes and no other (older joblibs
    // leave out the alignment): any other key is an instance attribute that
    // may shadow one of the wrapper's methods (read_array calls
    // self.safe_get_numpy_array_alignment_bytes(), not the attribute the
    // view reads), and a key that is not a str is no attribute joblib writes.
    static constexpr std::string_view kWritten[] = {"subclass", "shape", "order", "dtype", "allow_mmap",
                                                    "numpy_array_alignment_bytes"};
    for (size_t i = 0; i < state.items.size(); i += 2) {
      const JVal& key = Val(state.items[i]);
      if (key.kind != JVal::kStr ||
          std::find(std::begin(kWritten), std::end(kWritten), std::string_view(key.text)) == std::end(kWritten)) {
        p.foreign = true;
        p.why = key.kind == JVal::kStr
                    ? "its BUILD state sets '" + std::string(key.text).substr(0, 64) +
                          "', an attribute joblib.dump never writes (it may shadow a method read_array calls)"
                    : "its BUILD state has a key that is not a str";
        return p;
      }
    }
    if (dtype == nullptr || dtype->kind != JVal::kDtype) {
      p.foreign = true;
      p.why = "its dtype is not a numpy.dtype call";
      return p;
    }
    const NumpyDtype dt = DtypeOf(*dtype);
    if (dt.holds == NumpyDtype::Holds::kObjects) {
      p.object = true;
      return p;
    }
    if (dt.holds == NumpyDtype::Holds::kUnknown || dt.unsized) {
      p.maybe_object = true;
      p.why = "its dtype is not worked out";
      return p;
    }
    const std::optional<uint64_t> item = dt.item_size;
    uint64_t count = 1;
    // joblib: count = np.multiply.reduce([np.int64(x) for x in self.shape]).
    if (shape == nullptr || (shape->kind != JVal::kTuple && shape->kind != JVal::kList) || shape->truncated) {
      p.foreign = true;
      p.why = "its shape is not a tuple or list";
      return p;
    }
    for (Id d : shape->items) {
      const JVal& dim = Val(d);
      if (dim.kind != JVal::kInt || dim.number < 0) {
        p.foreign = true;
        p.why = "its shape holds something other than a non-negative int";
        return p;
      }
      const uint64_t n = static_cast<uint64_t>(dim.number);
      if (n != 0 && count > UINT64_MAX / n) {
        p.foreign = true;
        p.why = "its shape overflows";
        return p;
      }
      count *= n;
    }
    if (*item != 0 && count > UINT64_MAX / *item) {
      p.foreign = true;
      p.why = "its size overflows";
      return p;
    }
    p.len = count * *item;
    return p;
  }

  std::vector<JVal> values_;
};

// MayHoldWrapper: a cheap test before decoding anything. The name can only
// be spelled in plain text or in protocol-0 escapes: a UNICODE operand's
// \u00XX or \U000000XX, a STRING operand's \xXX or octal \ooo (looked for
// only on the lines of STRING opcodes, S'...' or S"...", since a backslash
// and a digit are common bytes of binary operands).
bool MayHoldWrapper(Bytes data) {
  const std::string_view text = AsStringView(data);
  if (text.find("ArrayWrapper") != std::string_view::npos || text.find("\\u00") != std::string_view::npos ||
      text.find("\\U0000") != std::string_view::npos || text.find("\\x") != std::string_view::npos) {
    return true;
  }
  size_t at = text.find('S');
  while (at != std::string_view::npos && at + 1 < text.size()) {
    if (text[at + 1] != '\'' && text[at + 1] != '"') {
      at = text.find('S', at + 1);
      continue;
    }
    const size_t end = std::min(text.find('\n', at), text.size());
    for (size_t i = at + 2; i + 1 < end; ++i) {
      if (text[i] == '\\' && text[i + 1] >= '0' && text[i + 1] <= '7') return true;
    }
    at = text.find('S', end);  // (no octal escape before `end`: every byte is looked at once)
  }
  return false;
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
  // The end of the frame being read (kNoFrame: none).
  constexpr uint64_t kNoFrame = UINT64_MAX;
  uint64_t frame_end = kNoFrame;
  while (true) {
    if (frame_end <= pos) frame_end = kNoFrame;
    const uint64_t limit = frame_end != kNoFrame ? frame_end : data.size();
    if (pos >= limit) break;
    if (data[pos] == kFrameByte) {
      if (frame_end != kNoFrame) break;
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
    if (view.runs.empty() || view.runs.back().source + (view.bytes.size() - view.runs.back().view) != pos) {
      view.runs.push_back({view.bytes.size(), pos});
    }
    view.bytes.append(reinterpret_cast<const char*>(data.data() + pos), static_cast<size_t>(op->length));
    pos += op->length;
    if (op->code == Opcode::kStop) {
      view.complete = view.anomalies.empty();
      view.end = pos;
      break;
    }
    if (!domain.pending) continue;
    const Pending pending = *domain.pending;
    domain.pending.reset();
    // The array's bytes come from the file, after the unpickler's buffer:
    // joblib ends the frame right after the wrapper's BUILD.
    // Inside a frame, joblib would read the array after the frame and the
    // frame's rest after the array: no writer does that, and the view does
    // not follow it.
    if (frame_end != kNoFrame && pos != frame_end) {
      view.anomalies.push_back({std::string(kForeignReading), pos, std::string(where),
                                "a NumpyArrayWrapper BUILD inside a frame: joblib reads its array after the frame, "
                                "then the frame's rest; joblib.dump ends the frame at the BUILD. Where joblib reads "
                                "on is not followed"});
      break;
    }
    frame_end = kNoFrame;
    ++view.num_arrays;
    if (pending.foreign) {
      view.anomalies.push_back({std::string(kForeignReading), pos, std::string(where),
                                "a NumpyArrayWrapper joblib.dump does not write (" + pending.why +
                                    "): how many bytes joblib reads as its array is not known, and joblib.load runs "
                                    "what follows them; not followed"});
      break;
    }
    if (pending.object || pending.maybe_object) {
      view.arrays.push_back({pos, 0, true});
      // pickle.load(file): one pickle, run by the C unpickler.
      if (pos >= data.size()) break;
      std::optional<uint64_t> frame_after_stop;
      Result<uint64_t> end = FirstPickleEnd(data.subspan(static_cast<size_t>(pos)), limits, pos, &budget, where,
                                            /*lenient_operands=*/false, &frame_after_stop);
      (pending.object ? view.object_pickles : view.maybe_object_pickles).push_back(pos);
      if (end && frame_after_stop && *frame_after_stop > *end) {
        // The C unpickler that read that frame whole (any frame from
        // joblib's decompressors, a large one from a file) leaves the file
        // at the frame's end; one that peeked leaves it after the STOP.
        view.anomalies.push_back({std::string(kForeignReading), *end, std::string(where),
                                  "the object array's pickle stops inside a FRAME that runs on to byte " +
                                      Num(*frame_after_stop) +
                                      ": joblib.load goes on from the STOP or from the frame's end, depending on how "
                                      "its file reads; pickle.dump ends the frame at the STOP. Not followed"});
        break;
      }
      if (!end) {
        if (!end.error().limit.empty()) return std::unexpected(end.error());
        if (pending.maybe_object) {
          view.anomalies.push_back({"joblib.unknown_array", pos, std::string(where),
                                    "a NumpyArrayWrapper whose array cannot be worked out (" + pending.why +
                                        "): its data is read as a possible pickle; joblib's reading is not "
                                        "followed past it"});
        }
        break;  // scanned from `pos` as its own pickle source
      }
      if (pending.maybe_object) {
        view.anomalies.push_back({"joblib.unknown_array", pos, std::string(where),
                                  "a NumpyArrayWrapper whose array cannot be worked out (" + pending.why +
                                      "): its data is read as a pickle, and the reading goes on after it"});
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
    view.arrays.push_back({pos + skip, *pending.len, false});
    pos += skip + *pending.len;
  }
  if (view.num_arrays == 0 && view.anomalies.empty()) return std::nullopt;
  CKG_TRY(budget.Charge(BudgetKind::kReadBytes, view.bytes.size(), start, where, "joblib view"));
  return std::optional<JoblibView>(std::move(view));
}

}  // namespace ckptguard

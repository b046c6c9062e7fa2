#include "ckptguard/scanner/scan.h"

#include <algorithm>
#include <deque>
#include <map>
#include <new>
#include <set>
#include <unordered_map>

#include "ckptguard/mapped_file.h"
#include "ckptguard/pickle_decoder.h"

namespace ckptguard::scanner {
namespace {

std::string Num(uint64_t v) { return std::to_string(v); }

// Functions that unpickle the bytes they are given: a bytes literal passed to
// one of them is scanned as a nested pickle.
bool IsPickleLoader(std::string_view global) {
  static const std::set<std::string, std::less<>> kLoaders = {
      "pickle.loads",       "_pickle.loads",      "cPickle.loads",         "pickle._loads",
      "dill.loads",         "dill._dill.loads",   "cloudpickle.loads",     "joblib.load",
      "torch.load",         "torch.serialization.load", "torch.storage._load_from_bytes",
      "numpy.loads",        "numpy.core.numeric.loads",  "pickle.Unpickler",  "_pickle.Unpickler",
  };
  return kLoaders.contains(global);
}

// A symbolic value: what the scanner knows about a stack slot.
struct Sym {
  enum Kind : uint8_t {
    kUnknown,  // the result of a call, a persistent load, anything opaque
    kScalar,   // None, bool, int, float
    kStr,      // text: the string (bounded copy)
    kBytes,    // text: the bytes (bounded copy)
    kTuple,
    kList,
    kDict,
    kSet,
    kGlobal,   // text: "module.name"; allowed: on the allowlist (or --allow)
    kObject,   // an instance built by NEWOBJ/OBJ/INST of `text`
  } kind = kUnknown;
  bool allowed = false;
  bool truncated = false;  // text was cut at the copy bound
  // The string, bytes or global name: a view of the stream's data, or of a
  // copy kept in Scanner::texts_ (valid until the pickle ends).
  std::string_view text;
  std::vector<uint32_t> items;  // tuples (for call arguments)
  int64_t number = 0;           // kScalar ints that fit in int64
  uint64_t weight = 1;          // values reachable counting repeats (expansion check), saturating
};

constexpr uint64_t kMaxTextCopy = uint64_t{1} << 20;  // bytes kept of one str/bytes literal
constexpr uint64_t kWeightCap = uint64_t{1} << 62;
constexpr uint32_t kMaxNestedDepth = 4;
constexpr size_t kMaxFindings = 1000;

uint64_t AddWeight(uint64_t a, uint64_t b) { return a > kWeightCap - b ? kWeightCap : a + b; }

// Nested is a pickle found inside another: bytes handed to a loader.
struct Nested {
  std::string bytes;
  std::string entry;
  uint32_t depth = 0;
};

class Scanner {
 public:
  Scanner(const RuleSet& rules, const ScanOptions& options, FileReport& report)
      : rules_(rules), options_(options), report_(report) {}

  void ScanContainer(const Container& c, const std::string& nested_path) {
    auto entry_name = [&](const std::string& entry) {
      if (nested_path.empty()) return entry;
      return entry.empty() ? nested_path : nested_path + " > " + entry;
    };
    torchscript_ = c.format == ContainerFormat::kTorchScript;
    for (const Anomaly& a : c.anomalies) AddAnomaly(a, entry_name(a.entry));
    if (torchscript_) {
      size_t code_files = 0;
      for (const ContainerEntry& e : c.entries) {
        if (e.zip.name.starts_with(c.prefix + "/code/")) ++code_files;
      }
      Add("CKG-F030", Severity::kSuspicious,
          "TorchScript archive: torch.jit.load (and torch.load before 2.6 with weights_only) runs its code (" +
              Num(code_files) + " files under " + c.prefix + "/code/)",
          entry_name(""), 0, "");
    }
    const bool torch_archive = c.format == ContainerFormat::kTorchZip || c.format == ContainerFormat::kTorchScript;
    records_ = torch_archive ? &c : nullptr;
    records_entry_ = entry_name(c.prefix + "/data.pkl");
    checked_keys_.clear();
    for (const PickleSource& source : c.pickles) {
      const Bytes data = source.data.subspan(static_cast<size_t>(source.start));
      const uint64_t base = source.file_offset.value_or(0) + source.start;
      ScanStream(data, base, entry_name(source.entry.empty() ? "" : source.entry), source.max_pickles, 0,
                 source.sniffed);
    }
    // Pickles handed to loaders as bytes, breadth first, bounded in depth.
    while (!nested_.empty()) {
      Nested n = std::move(nested_.front());
      nested_.pop_front();
      ScanStream(AsBytes(n.bytes), 0, n.entry, 0, n.depth);
    }
  }

 private:
  // Add records a finding once per rule, global, entry and `kind` (anomaly
  // kinds share a rule): the first place says where.
  void Add(const std::string& rule, Severity severity, std::string message, const std::string& entry, uint64_t offset,
           const std::string& global, const std::string& kind = "") {
    if (!seen_.insert(rule + "\x1f" + global + "\x1f" + entry + "\x1f" + kind).second) return;
    if (report_.findings.size() >= kMaxFindings) {
      if (report_.findings.size() == kMaxFindings) {
        report_.findings.push_back({"CKG-F040", Severity::kSuspicious,
                                    "more than " + Num(kMaxFindings) + " findings; the rest are not listed", entry,
                                    offset, ""});
      }
      return;
    }
    report_.findings.push_back({rule, severity, std::move(message), entry, offset, global});
  }

  void AddAnomaly(const Anomaly& a, const std::string& entry) {
    if (a.kind == "pickle.decode_error") return;  // the scan reports its own parse errors
    if (a.kind == "npy.object_array") {
      Add("CKG-F070", rules_.FixedRule("CKG-F070").severity,
          "numpy object array: its data is a pickle, which numpy.load(allow_pickle=True) runs", entry, a.offset, "");
      return;
    }
    const bool polyglot = a.kind.starts_with("polyglot.");
    const std::string id = polyglot ? "CKG-F011" : "CKG-F010";
    Add(id, rules_.FixedRule(id).severity, a.kind + ": " + a.detail, entry, a.offset, "", a.kind);
  }

  void ClassifyAndReport(const std::string& module, const std::string& name, const std::string& entry,
                         uint64_t offset, Sym& out) {
    const std::string full = module + "." + name;
    out.kind = Sym::kGlobal;
    out.text = Keep(full);
    if (torchscript_ && (module == "__torch__" || module.starts_with("__torch__.") || module == "torch.jit._pickle")) {
      // TorchScript's own classes and the list/tensor builders of its
      // debug_pkl and constants pickles: covered by the CKG-F030 finding.
      out.allowed = true;
      return;
    }
    // A state dict names the same few globals thousands of times.
    auto cached = classes_.find(full);
    if (cached == classes_.end()) cached = classes_.emplace(full, rules_.ClassifyGlobal(module, name)).first;
    const GlobalClass& cls = cached->second;
    if (cls.kind == GlobalClass::kAllowed) {
      out.allowed = true;
      return;
    }
    const std::string id = cls.rule != nullptr ? cls.rule->id : "CKG-P001";
    std::string message = cls.kind == GlobalClass::kDenied
                              ? "global '" + full + "'" + (cls.matched != full ? " (reaches " + cls.matched + ")" : "") +
                                    ": " + (cls.rule != nullptr ? cls.rule->description : std::string())
                              : "global '" + full + "' is on neither the allowlist nor the denylist";
    Add(id, cls.severity, std::move(message), entry, offset, full);
  }

  // ScanStream runs the pickles of one stream symbolically, one after
  // another until the data ends (or max_pickles are done).
  // `sniffed`: found by its first bytes only (maybe tensor data): a parse
  // error is then not a finding, though globals decoded before it are.
  void ScanStream(Bytes data, uint64_t base, const std::string& entry, uint32_t max_pickles, uint32_t depth,
                  bool sniffed = false) {
    PickleDecoder decoder(data, options_.container.pickle, base);
    uint32_t done = 0;
    uint64_t ops_in_pickle = 0;
    Reset();
    // Sized from the stream's length (a value takes a few bytes), capped.
    values_.reserve(static_cast<size_t>(std::min<uint64_t>({data.size() / 4, uint64_t{1} << 18, options_.max_values})));
    while (!decoder.AtEnd() && (max_pickles == 0 || done < max_pickles)) {
      Result<PickleOp> op = decoder.Next();
      if (!op) {
        const Error& e = op.error();
        if (sniffed) return;
        Add("CKG-F020", rules_.FixedRule("CKG-F020").severity,
            "the pickle stops parsing (" + e.ToString() + ")" +
                (ops_in_pickle > 0 || done > 0 ? "; what it decoded before is scanned above" : ""),
            entry, e.offset, "");
        return;
      }
      ++ops_in_pickle;
      if (op->code == Opcode::kStop) {
        CheckExpansion(entry, op->offset, ops_in_pickle);
        ++done;
        ops_in_pickle = 0;
        Reset();
        continue;
      }
      Step(*op, entry, depth);
    }
    if (!decoder.BetweenPickles() && !sniffed) {
      // The data ended inside a pickle: CPython raises here, after running
      // everything before.
      Add("CKG-F020", rules_.FixedRule("CKG-F020").severity,
          "the pickle ends before its STOP at byte " + Num(decoder.Offset()) +
              "; what it decoded before is scanned above",
          entry, decoder.Offset(), "");
    }
  }

  void Reset() {
    values_.clear();
    texts_.clear();
    stack_.clear();
    marks_.clear();
    memo_.clear();
  }

  uint32_t New(Sym s) {
    if (values_.size() >= options_.max_values) {
      // Past the bound, reuse one opaque value: the scan stays bounded and
      // keeps classifying globals (which need no values).
      if (!overflow_reported_) {
        overflow_reported_ = true;
        Add("CKG-F040", Severity::kSuspicious, "more than " + Num(options_.max_values) + " values in one pickle", "",
            0, "");
      }
      if (values_.empty()) values_.push_back(Sym{});
      return 0;
    }
    values_.push_back(std::move(s));
    return static_cast<uint32_t>(values_.size() - 1);
  }
  void Push(uint32_t id) { stack_.push_back(id); }
  void PushNew(Sym s) { Push(New(std::move(s))); }
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  // Pop returns an opaque value on underflow: CPython would stop there, but a
  // scanner keeps reading (the stream's later bytes are reported anyway).
  uint32_t Pop() {
    if (stack_.size() <= Fence()) return New(Sym{});
    const uint32_t id = stack_.back();
    stack_.pop_back();
    return id;
  }
  std::vector<uint32_t> PopMark() {
    if (marks_.empty()) return {};
    const size_t mark = std::min(marks_.back(), stack_.size());
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  Sym& Val(uint32_t id) { return values_[id]; }

  // Keep copies `text` where it lives as long as the pickle's values.
  std::string_view Keep(std::string_view text) {
    texts_.emplace_back(text);
    return texts_.back();
  }

  Sym Text(Sym::Kind kind, const PickleArg& arg) {
    const std::string_view data = arg.Data();
    Sym s;
    s.kind = kind;
    s.truncated = data.size() > kMaxTextCopy;
    // Operands that view the stream stay views; converted ones are copied.
    s.text = arg.IsOwned() ? Keep(data.substr(0, kMaxTextCopy)) : data.substr(0, kMaxTextCopy);
    return s;
  }

  uint64_t WeightOf(const std::vector<uint32_t>& items) {
    uint64_t w = 1;
    for (uint32_t i : items) w = AddWeight(w, Val(i).weight);
    return w;
  }

  void CheckExpansion(const std::string& entry, uint64_t offset, uint64_t ops) {
    uint64_t heaviest = 0;
    for (const Sym& s : values_) heaviest = std::max(heaviest, s.weight);
    if (heaviest > (uint64_t{1} << 24) && heaviest / std::max<uint64_t>(ops, 1) > options_.expansion_ratio) {
      Add("CKG-F040", rules_.FixedRule("CKG-F040").severity,
          "memo/DUP references expand " + Num(ops) + " opcodes into more than " + Num(heaviest) +
              " values (a 'billion laughs' pattern)",
          entry, offset, "");
    }
  }

  // Call handles a call of `target` (a REDUCE, NEWOBJ...) with `args`.
  void Call(const PickleOp& op, uint32_t target, const std::vector<uint32_t>& args, const std::string& entry,
            uint32_t depth, bool builds_object) {
    const Sym& t = Val(target);
    if (t.kind != Sym::kGlobal) {
      Add("CKG-F002", rules_.FixedRule("CKG-F002").severity,
          std::string(op.Info().name) + " calls a value that is not a named global (the result of another call, a " +
              "persistent load or a container)",
          entry, op.offset, "");
      PushNew(Sym{});
      return;
    }
    const std::string_view global = t.text;
    if (!args.empty() && Val(args[0]).kind == Sym::kBytes && depth < kMaxNestedDepth && IsPickleLoader(global)) {
      const std::string name(global);
      Add("CKG-F060", rules_.FixedRule("CKG-F060").severity,
          "bytes handed to " + name + " are themselves a pickle; scanned as entry '" + entry + " > " + name + "@" +
              Num(op.offset) + "'",
          entry, op.offset, name);
      nested_.push_back({std::string(Val(args[0]).text), entry + " > " + name + "@" + Num(op.offset), depth + 1});
    }
    Sym result;
    if (builds_object && !t.allowed) {
      result.kind = Sym::kObject;
      result.text = t.text;
      const std::string name(global);
      Add("CKG-F050", rules_.FixedRule("CKG-F050").severity,
          "an instance of '" + name + "' is built: not weights-only (torch.load(weights_only=True) refuses it)",
          entry, op.offset, name);
    } else if (global == "_codecs.encode" && args.size() >= 1 && Val(args[0]).kind == Sym::kStr) {
      // How protocol 2 spells bytes: latin1 code points -> bytes.
      result.kind = Sym::kBytes;
      const std::string_view s = Val(args[0]).text;
      std::string bytes;
      for (size_t i = 0; i < s.size();) {
        const uint8_t c = static_cast<uint8_t>(s[i]);
        if (c < 0x80) {
          bytes.push_back(static_cast<char>(c));
          ++i;
        } else if ((c & 0xe0) == 0xc0 && i + 1 < s.size()) {
          bytes.push_back(static_cast<char>(((c & 0x1f) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3f)));
          i += 2;
        } else {
          result.kind = Sym::kUnknown;
          break;
        }
      }
      if (result.kind == Sym::kBytes) result.text = Keep(bytes);
    } else {
      result.kind = Sym::kUnknown;
      result.text = t.text;
    }
    result.weight = WeightOf(args);
    PushNew(std::move(result));
  }

  void Step(const PickleOp& op, const std::string& entry, uint32_t depth) {
    const PickleArg& arg = op.arg;
    switch (op.code) {
      case Opcode::kProto:
      case Opcode::kFrame:
      case Opcode::kStop:
        return;
      case Opcode::kMark:
        marks_.push_back(stack_.size());
        return;
      case Opcode::kPop:
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
        } else {
          Pop();
        }
        return;
      case Opcode::kPopMark:
        PopMark();
        return;
      case Opcode::kDup: {
        const uint32_t top = stack_.size() > Fence() ? stack_.back() : New(Sym{});
        Push(top);
        return;
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
      case Opcode::kBinFloat: {
        Sym s;
        s.kind = Sym::kScalar;
        if (arg.type == PickleArgType::kInt || arg.type == PickleArgType::kBool) s.number = arg.int_value;
        if (arg.type == PickleArgType::kUInt) s.number = static_cast<int64_t>(arg.uint_value);
        PushNew(std::move(s));
        return;
      }
      case Opcode::kString:
      case Opcode::kBinString:
      case Opcode::kShortBinString:
      case Opcode::kUnicode:
      case Opcode::kBinUnicode:
      case Opcode::kShortBinUnicode:
      case Opcode::kBinUnicode8:
        // Python 2 strings become str under torch.load's encoding='utf-8',
        // and STACK_GLOBAL takes either.
        PushNew(Text(Sym::kStr, arg));
        return;
      case Opcode::kBinBytes:
      case Opcode::kShortBinBytes:
      case Opcode::kBinBytes8:
      case Opcode::kByteArray8:
        PushNew(Text(Sym::kBytes, arg));
        return;
      case Opcode::kEmptyTuple:
      case Opcode::kEmptyList:
      case Opcode::kEmptyDict:
      case Opcode::kEmptySet: {
        Sym s;
        s.kind = op.code == Opcode::kEmptyTuple  ? Sym::kTuple
                 : op.code == Opcode::kEmptyList ? Sym::kList
                 : op.code == Opcode::kEmptyDict ? Sym::kDict
                                                 : Sym::kSet;
        PushNew(std::move(s));
        return;
      }
      case Opcode::kTuple:
      case Opcode::kList:
      case Opcode::kDict:
      case Opcode::kFrozenSet: {
        Sym s;
        s.kind = op.code == Opcode::kTuple ? Sym::kTuple
                 : op.code == Opcode::kList ? Sym::kList
                 : op.code == Opcode::kDict ? Sym::kDict
                                            : Sym::kSet;
        s.items = PopMark();
        s.weight = WeightOf(s.items);
        if (s.kind != Sym::kTuple) s.items.clear();
        PushNew(std::move(s));
        return;
      }
      case Opcode::kTuple1:
      case Opcode::kTuple2:
      case Opcode::kTuple3: {
        const size_t n = op.code == Opcode::kTuple1 ? 1 : op.code == Opcode::kTuple2 ? 2 : 3;
        Sym s;
        s.kind = Sym::kTuple;
        s.items.resize(n);
        for (size_t i = n; i-- > 0;) s.items[i] = Pop();
        s.weight = WeightOf(s.items);
        PushNew(std::move(s));
        return;
      }
      case Opcode::kAppend:
      case Opcode::kAppends:
      case Opcode::kSetItem:
      case Opcode::kSetItems:
      case Opcode::kAddItems: {
        std::vector<uint32_t> items;
        if (op.code == Opcode::kAppend) {
          items.push_back(Pop());
        } else if (op.code == Opcode::kSetItem) {
          const uint32_t v = Pop();
          items = {Pop(), v};
        } else {
          items = PopMark();
        }
        if (stack_.size() > Fence()) {
          Sym& target = Val(stack_.back());
          target.weight = AddWeight(target.weight, WeightOf(items) - 1);
          if (target.kind == Sym::kObject) {
            // On an object these call its append/extend/__setitem__: the
            // object's class is already reported (CKG-F050).
          }
        }
        return;
      }
      case Opcode::kGet:
      case Opcode::kBinGet:
      case Opcode::kLongBinGet: {
        const uint64_t key = arg.type == PickleArgType::kUInt ? arg.uint_value : static_cast<uint64_t>(arg.int_value);
        auto it = memo_.find(key);
        Push(it != memo_.end() ? it->second : New(Sym{}));  // a key never PUT: CPython fails here
        return;
      }
      case Opcode::kPut:
      case Opcode::kBinPut:
      case Opcode::kLongBinPut:
      case Opcode::kMemoize: {
        if (stack_.size() <= Fence()) return;
        const uint64_t key = op.code == Opcode::kMemoize
                                 ? memo_.size()
                                 : (arg.type == PickleArgType::kUInt ? arg.uint_value
                                                                     : static_cast<uint64_t>(arg.int_value));
        if (memo_.size() < options_.max_values || memo_.contains(key)) memo_[key] = stack_.back();
        return;
      }
      case Opcode::kGlobal: {
        Sym s;
        ClassifyAndReport(std::string(arg.Data()), std::string(arg.Name()), entry, op.offset, s);
        PushNew(std::move(s));
        return;
      }
      case Opcode::kStackGlobal: {
        const uint32_t name = Pop();
        const uint32_t module = Pop();
        Sym s;
        if (Val(name).kind == Sym::kStr && Val(module).kind == Sym::kStr && !Val(name).truncated &&
            !Val(module).truncated) {
          ClassifyAndReport(std::string(Val(module).text), std::string(Val(name).text), entry, op.offset, s);
        } else {
          Add("CKG-F001", rules_.FixedRule("CKG-F001").severity,
              "STACK_GLOBAL operands are not two literal strings (a " + KindName(Val(module).kind) + " and a " +
                  KindName(Val(name).kind) + "): the imported name cannot be known",
              entry, op.offset, "");
          s.kind = Sym::kGlobal;
          s.text = "<unresolved>";
        }
        PushNew(std::move(s));
        return;
      }
      case Opcode::kInst: {
        Sym cls;
        ClassifyAndReport(std::string(arg.Data()), std::string(arg.Name()), entry, op.offset, cls);
        const uint32_t target = New(std::move(cls));
        const std::vector<uint32_t> args = PopMark();
        Call(op, target, args, entry, depth, true);
        return;
      }
      case Opcode::kObj: {
        std::vector<uint32_t> items = PopMark();
        if (items.empty()) {
          PushNew(Sym{});
          return;
        }
        const uint32_t target = items.front();
        items.erase(items.begin());
        Call(op, target, items, entry, depth, true);
        return;
      }
      case Opcode::kReduce: {
        const uint32_t args = Pop();
        const uint32_t target = Pop();
        const std::vector<uint32_t> items = Val(args).kind == Sym::kTuple ? Val(args).items : std::vector<uint32_t>{};
        Call(op, target, items, entry, depth, false);
        return;
      }
      case Opcode::kNewObj:
      case Opcode::kNewObjEx: {
        if (op.code == Opcode::kNewObjEx) Pop();  // kwargs
        const uint32_t args = Pop();
        const uint32_t target = Pop();
        const std::vector<uint32_t> items = Val(args).kind == Sym::kTuple ? Val(args).items : std::vector<uint32_t>{};
        Call(op, target, items, entry, depth, true);
        return;
      }
      case Opcode::kBuild: {
        Pop();  // state
        if (stack_.size() > Fence()) {
          const Sym& obj = Val(stack_.back());
          if (obj.kind == Sym::kUnknown && obj.text.empty()) {
            // BUILD on something no call named: its __setstate__ is unknown.
            Add("CKG-F002", rules_.FixedRule("CKG-F002").severity,
                "BUILD calls __setstate__ of a value whose class is unknown", entry, op.offset, "");
          }
        }
        return;
      }
      case Opcode::kExt1:
      case Opcode::kExt2:
      case Opcode::kExt4:
        Add("CKG-F003", rules_.FixedRule("CKG-F003").severity,
            std::string(op.Info().name) + " fetches a global from the copyreg extension registry (code " +
                Num(arg.type == PickleArgType::kUInt ? arg.uint_value : static_cast<uint64_t>(arg.int_value)) +
                "): what it names depends on the loading process",
            entry, op.offset, "");
        PushNew(Sym{});
        return;
      case Opcode::kPersId:
        PushNew(Sym{});
        return;
      case Opcode::kBinPersId:
        CheckRecord(op, Pop(), entry);
        PushNew(Sym{});
        return;
      case Opcode::kNextBuffer:
      case Opcode::kReadonlyBuffer:
        PushNew(Sym{});
        return;
    }
  }

  // CheckRecord checks a torch storage persistent id of data.pkl against its
  // data/<key> record (the container layer's rule, applied as the scan meets
  // each id instead of decoding data.pkl a second time).
  void CheckRecord(const PickleOp& op, uint32_t pid, const std::string& entry) {
    if (records_ == nullptr || entry != records_entry_) return;
    const Sym& t = Val(pid);
    if (t.kind != Sym::kTuple || t.items.size() < 5) return;
    const Sym& tag = Val(t.items[0]);
    const Sym& type = Val(t.items[1]);
    const Sym& key = Val(t.items[2]);
    const Sym& numel = Val(t.items[4]);
    if (tag.kind != Sym::kStr || tag.text != "storage" || type.kind != Sym::kGlobal || key.kind != Sym::kStr ||
        numel.kind != Sym::kScalar || !type.text.starts_with("torch.")) {
      return;
    }
    StorageRef ref;
    ref.offset = op.offset;
    ref.module = "torch";
    ref.storage_type = std::string(type.text.substr(6));
    ref.key = std::string(key.text);
    ref.numel = numel.number;
    if (!checked_keys_.insert(ref.key).second) return;
    if (std::optional<Anomaly> a = CheckStorageRecord(*records_, ref, op.offset)) AddAnomaly(*a, a->entry);
  }

  static std::string KindName(Sym::Kind kind) {
    switch (kind) {
      case Sym::kUnknown: return "computed value";
      case Sym::kScalar: return "number";
      case Sym::kStr: return "str";
      case Sym::kBytes: return "bytes";
      case Sym::kTuple: return "tuple";
      case Sym::kList: return "list";
      case Sym::kDict: return "dict";
      case Sym::kSet: return "set";
      case Sym::kGlobal: return "global";
      case Sym::kObject: return "object";
    }
    return "value";
  }

  const RuleSet& rules_;
  const ScanOptions& options_;
  FileReport& report_;
  bool torchscript_ = false;
  bool overflow_reported_ = false;
  std::set<std::string> seen_;
  std::vector<Sym> values_;
  std::deque<std::string> texts_;  // copies that Sym::text views
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::deque<Nested> nested_;
  std::unordered_map<std::string, GlobalClass> classes_;
  const Container* records_ = nullptr;  // the torch archive whose data.pkl is being scanned
  std::string records_entry_;
  std::set<std::string> checked_keys_;
};

}  // namespace

ContainerLimits ScanContainerLimits() {
  ContainerLimits limits;
  limits.zip.max_crc_check_len = 0;  // records are not read; pickle entries are checked as they are read
  limits.check_torch_records = false;  // the scan checks records at each BINPERSID instead
  return limits;
}

FileReport ScanBytes(Bytes data, const std::string& path, const ScanOptions& options) {
  FileReport report;
  report.path = path;
  try {
    const RuleSet& rules = options.rules != nullptr ? *options.rules : RuleSet::Builtin();
    const Container root = OpenContainer(data, options.container);
    report.format = std::string(ContainerFormatName(root.format));
    Scanner scanner(rules, options, report);
    std::optional<Error> first_error;
    ForEachContainer(root, [&](const Container& c, const std::string& nested) {
      scanner.ScanContainer(c, nested);
      // A pickle stream that stops parsing was still scanned up to the break
      // (CKG-F020); other formats' errors mean part of the file was not read.
      const bool stream = c.format == ContainerFormat::kPickle || c.format == ContainerFormat::kTorchLegacy;
      if (c.error && !first_error && !stream) {
        first_error = *c.error;
        if (!nested.empty()) first_error->where = nested + (first_error->where.empty() ? "" : " > " + first_error->where);
      }
    });
    if (root.format == ContainerFormat::kUnknown) {
      first_error = Error{ErrorCode::kUnsupportedFormat, 0, "", "not a model file: " + root.reason};
    }
    report.error = first_error;
  } catch (const std::bad_alloc&) {
    report.error = Error{ErrorCode::kLimitExceeded, 0, "", "out of memory"};
  }
  report.verdict = VerdictOf(report.findings, report.error);
  return report;
}

FileReport ScanFile(const std::string& path, const ScanOptions& options) {
  Result<MappedFile> file = MappedFile::Open(path, options.file);
  if (!file) {
    FileReport report;
    report.path = path;
    report.format = "unknown";
    report.error = file.error();
    report.verdict = Verdict::kError;
    return report;
  }
  file->AdviseRandom();
  FileReport report = ScanBytes(file->data(), path, options);
  // Findings in torn bytes are about no file that ever existed: one error.
  if (Status unchanged = file->CheckUnchanged(); !unchanged) {
    report.findings.clear();
    report.error = unchanged.error();
    report.verdict = Verdict::kError;
  }
  return report;
}

}  // namespace ckptguard::scanner

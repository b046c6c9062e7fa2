#include "ckptguard/scanner/scan.h"

#include <algorithm>
#include <functional>
#include <array>
#include <deque>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <unordered_map>
#include <type_traits>
#include <unordered_set>

#include "ckptguard/allowlist.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/pickle_machine.h"
#include "ckptguard/pickle_semantics.h"
#include "decode.h"

namespace ckptguard::scanner {
namespace {

std::string Num(uint64_t v) { return std::to_string(v); }

// Message building with names kept as views (C++26 has these in <string>).
std::string operator+(std::string a, std::string_view b) { return a.append(b); }
std::string operator+(const char* a, std::string_view b) { return std::string(a).append(b); }
std::string operator+(std::string_view a, const char* b) { return std::string(a).append(b); }

// Interpreter internals named in a string argument: the way from any object
// to eval, os or every class of the process (getattr(x, '__globals__'),
// eval strings, attrgetter paths).
bool NamesInternals(std::string_view text) {
  static constexpr std::string_view kDunders[] = {
      "__globals__", "__builtins__", "__import__", "__subclasses__", "__class__", "__bases__", "__base__",
      "__mro__",     "__code__",     "__getattribute__", "__reduce__", "__reduce_ex__", "__closure__", "__loader__",
      // A builtin function's module (getattr(getattr, '__self__') is
      // builtins), a bound method's function, a module's namespace.
      "__self__",    "__func__",     "__dict__",         "__wrapped__", "__objclass__", "__spec__",
  };
  for (std::string_view d : kDunders) {
    if (text.find(d) != std::string_view::npos) return true;
  }
  return false;
}

// SymText is Sym::text: a string view kept as a pointer and a 32-bit length
// (every text is bounded far below 4 GiB: literals by kMaxTextCopy, names by
// the decoder's line limit, decoded payloads by kMaxDecodedLen), packed so
// that it shares Sym's first eight bytes with the kind and flags: a state
// dict holds hundreds of thousands of values, 40 bytes each instead of 56.
struct [[gnu::packed]] SymText {
  SymText() = default;
  SymText(std::string_view v)  // NOLINT: implicit, as a string_view member was
      : data_(v.data()), len_(static_cast<uint32_t>(std::min<size_t>(v.size(), UINT32_MAX))) {}
  operator std::string_view() const { return view(); }  // NOLINT
  std::string_view view() const { return std::string_view(data_, len_); }
  size_t size() const { return len_; }
  bool empty() const { return len_ == 0; }
  char operator[](size_t i) const { return data_[i]; }
  std::string_view substr(size_t pos, size_t n = std::string_view::npos) const { return view().substr(pos, n); }
  bool starts_with(std::string_view prefix) const { return view().starts_with(prefix); }
  friend bool operator==(const SymText& a, std::string_view b) { return a.view() == b; }

 private:
  const char* data_ = nullptr;
  uint32_t len_ = 0;
};

// A symbolic value: what the scanner knows about a stack slot.
struct Sym {
  enum Kind : uint8_t {
    kUnknown,  // the result of a call, a persistent load, anything opaque
    kScalar,   // None, bool, int, float, complex, device
    kStr,      // text: the string (bounded copy)
    kBytes,    // text: the bytes (bounded copy)
    kTuple,
    kList,
    kDict,
    kSet,
    kGlobal,   // text: "module.name"; allowed: on the allowlist (or --allow)
    kObject,   // an instance built by NEWOBJ/OBJ/INST of `text`
    kTensor,   // what torch._utils._rebuild_tensor*/_rebuild_parameter* return
  };
  Kind kind : 4 = kUnknown;
  // A result that stands for a file: kStream, io.BytesIO(b) with `text` the
  // bytes b; kPath, what a file opener returns, with `text` the path.
  enum Payload : uint8_t { kNoPayload, kStream, kPath };
  Payload payload : 2 = kNoPayload;
  // Flags as bits: a state dict holds hundreds of thousands of values.
  bool allowed : 1 = false;
  bool truncated : 1 = false;    // text was cut at the copy bound
  bool is_int : 1 = false;       // kScalar: a Python int that fits in int64 (number)
  bool frozen : 1 = false;       // kSet: a frozenset
  bool ordered : 1 = false;      // kDict: an OrderedDict (BUILD takes its attributes)
  bool dangerous : 1 = false;    // kGlobal: already reported dangerous by name (denylist)
  bool data_member : 1 = false;  // kGlobal: a capitalised member of a pure-data class (an Enum member)
  // kGlobal: a loader with an `input` (rules/callables.toml) whose denylist
  // finding waits: a call handing it one fully known literal is judged by
  // that literal (F062 + the nested scan); any other use reports the rule.
  bool deferred : 1 = false;
  // Neither this value nor anything a walk of call arguments reaches from it
  // (tuple items, recursively) can give a finding there (F081, F082): New
  // sets it, and calls whose arguments are all inert skip those walks (a
  // state dict calls a rebuild function per tensor on numbers and tuples of
  // numbers). Never true for a str (its text is looked at only when walked).
  bool inert : 1 = false;
  // BUILD gave this value a dict (or (dict, slots) pair) state: its instance
  // attributes are whatever the pickle put there. The unpicklers and torch
  // look some methods up on the instance itself (BUILD: __setstate__;
  // APPEND(S): append, extend; ADDITEMS: add; dict(x) and other mapping
  // constructors: keys; torch's persistent_load: location.startswith), so
  // any later use of that kind calls a value the pickle chose.
  bool attrs : 1 = false;
  // A callable that is not a named global: a functools.partial object, or an
  // attribute of a computed value (a bound method: getattr(PosixPath(p),
  // 'write_text')). Handed to a call, the callee may call it (F081).
  bool callable_value : 1 = false;
  // A callable value whose call only builds data: a functools.partial of a
  // data constructor with inert arguments (partial(defaultdict, list), the
  // nested defaultdict's factory). A BUILD on a partial sets its function
  // and arguments: it is pure after it only when that state makes it so.
  bool pure_call : 1 = false;
  // A callable (a global not known to be data, or a callable value) is an
  // item of this container (a dict's value, a list's or set's item), of a
  // container among its items, of what a data constructor built from such
  // arguments, or an attribute a BUILD gave this object: a class's own
  // __setstate__ given this state may call it.
  bool holds_callable : 1 = false;
  // The same for callable values alone (IsCallableValue: a partial object,
  // a bound method), not globals: the state an unknown class's __setstate__
  // may call (unknown globals in states are as often enum members).
  bool holds_callable_value : 1 = false;
  // kObject: an instance of a class the rules list (its __setstate__ is
  // known, and calls attributes only when setstate_calls says so).
  bool known_class : 1 = false;
  // An item of this list or set, or a key of this dict, is an instance of a
  // class not known to be data (or a value whose attributes the pickle
  // set): a callee that iterates, unpacks or hashes the container calls its
  // methods.
  bool holds_object : 1 = false;
  // kObject: an instance of a class whose own __setstate__ calls the
  // instance's attributes (CallableEntry::setstate_calls_attributes).
  bool setstate_calls : 1 = false;
  // An empty dict, list, set or record that a pure call holds (a
  // partial(dict, ns) judged pure, a partial's empty keywords dict): the
  // call was judged on it while empty, and the partial keeps a reference, so
  // what a later APPEND(S), SETITEM(S), ADDITEMS or BUILD puts into it must
  // keep the call pure (AdmitToPureCall), or the change is reported (F081).
  bool held_by_pure_call : 1 = false;
  // kDict: one of its values (not keys) is an instance of a class the
  // rules do not list, which may be callable (its class may define
  // __call__: joblib's BatchedCalls runs the calls it holds). Given as an
  // attribute by BUILD to an instance whose class's own methods call its
  // attributes (a pure-data record's repr, Optimizer.__setstate__, joblib's
  // read_array), it is called.
  bool object_attr : 1 = false;
  uint8_t action : 7 = kNoAction;  // kGlobal: the allowlist action it binds to in the loader
  // The string, bytes or global name: a view of the stream's data, or of a
  // copy kept in Scanner::texts_ (valid until the pickle ends).
  SymText text;
  // kGlobal: what calling it does (rules/callables.toml), or null. Results of
  // a call: the entry of the data callable that built it (BUILD on it is data).
  const CallableEntry* callable = nullptr;
  // kScalar ints that fit in int64; kGlobal: length of the module part of
  // `text`; kTuple: where its items are (items_begin, items_count).
  int64_t number = 0;
  uint64_t weight = 1;          // values reachable counting repeats (expansion check), saturating

  // kTuple: its items are items_[items_begin, items_begin + items_count) of
  // the Scanner (tuples are immutable; one pool per pickle, no allocation
  // per tuple), kept in `number` (low and high 32 bits).
  uint32_t items_begin() const { return static_cast<uint32_t>(static_cast<uint64_t>(number)); }
  uint32_t items_count() const { return static_cast<uint32_t>(static_cast<uint64_t>(number) >> 32); }
  void SetItems(uint32_t begin, uint32_t count) {
    number = static_cast<int64_t>(uint64_t{begin} | (uint64_t{count} << 32));
  }

  static constexpr uint8_t kNoAction = 0x7f;  // action is 7 bits
  static_assert(static_cast<uint8_t>(AllowAction::kUnsupported) < kNoAction, "AllowAction outgrew Sym::action");
};
static_assert(sizeof(Sym) == 40, "Sym: keep the kind, flags, action and text's length in the first 8 bytes");

constexpr uint64_t kMaxTextCopy = uint64_t{1} << 20;  // bytes kept of one str/bytes literal
constexpr uint64_t kWeightCap = uint64_t{1} << 62;
constexpr uint32_t kMaxNestedDepth = 4;
// AdmitToPureCall's bounds: ScanOptions::max_pure_call_values' ceiling, and
// how deep tuples in a pure call's arguments are read.
constexpr uint64_t kMaxPureCallValues = 4096;
constexpr uint32_t kMaxPureCallDepth = 4;
constexpr size_t kMaxFindings = 1000;
constexpr uint64_t kMaxDecodedLen = uint64_t{256} << 20;  // bytes one decoder call may produce (and the budget)

uint64_t AddWeight(uint64_t a, uint64_t b) { return a > kWeightCap - b ? kWeightCap : a + b; }

// SymStore holds one pickle's values in fixed chunks: growing never copies
// or moves a value (a state dict has hundreds of thousands), references stay
// valid, and the chunks are kept for the next pickle.
// A chunk's memory is left uninitialised until a value is stored in it, so a
// small file touches only the pages it uses.
class SymStore {
 public:
  static constexpr uint32_t kChunkBits = 12;
  static constexpr uint32_t kChunk = uint32_t{1} << kChunkBits;
  static_assert(std::is_trivially_destructible_v<Sym> && std::is_trivially_copyable_v<Sym>);

  SymStore() = default;
  SymStore(const SymStore&) = delete;
  SymStore& operator=(const SymStore&) = delete;
  ~SymStore() {
    for (Sym* chunk : chunks_) std::allocator<Sym>().deallocate(chunk, kChunk);
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }
  Sym& operator[](uint32_t id) { return chunks_[id >> kChunkBits][id & (kChunk - 1)]; }
  const Sym& operator[](uint32_t id) const { return chunks_[id >> kChunkBits][id & (kChunk - 1)]; }
  void push_back(Sym&& s) {
    if ((size_ >> kChunkBits) == chunks_.size()) {
      chunks_.reserve(chunks_.size() + 1);
      chunks_.push_back(std::allocator<Sym>().allocate(kChunk));
    }
    std::construct_at(&chunks_[size_ >> kChunkBits][size_ & (kChunk - 1)], std::move(s));
    ++size_;
  }
  void pop_back() { --size_; }
  template <typename Fn>
  void ForEach(Fn fn) const {
    for (size_t i = 0; i < size_; ++i) fn((*this)[static_cast<uint32_t>(i)]);
  }

 private:
  std::vector<Sym*> chunks_;
  size_t size_ = 0;
};

// Nested is a pickle found inside another: bytes handed to a loader.
struct Nested {
  std::string bytes;
  std::string entry;
  uint32_t depth = 0;
  // A loader judged by these bytes (CKG-F062): when their scan does not
  // complete (the budget runs out, a scanner limit), the loader is reported
  // by its rule after all, at `offset` of `caller_entry`.
  std::string loader;
  std::string caller_entry;
  uint64_t offset = 0;
};

// Scanner runs every pickle of a file through the PickleMachine
// (pickle_machine.h) as its lenient domain: symbolic values, findings for
// what loading would import or call, and the unpickler's own failures
// reported (CKG-F020) while the scan reads on.
class Scanner {
 public:
  using Id = MachineId;

  // `rules` null: the built-in rules, parsed when first needed (a pickle
  // that names no global and has no finding never needs them).
  Scanner(const RuleSet* rules, const ScanOptions& options, FileReport& report, Budget& budget)
      : rules_(rules), options_(options), report_(report), budget_(budget) {}

  void ScanContainer(const Container& c, const std::string& nested_path) {
    auto entry_name = [&](const std::string& entry) {
      if (nested_path.empty()) return entry;
      return entry.empty() ? nested_path : nested_path + " > " + entry;
    };
    torchscript_ = c.format == ContainerFormat::kTorchScript;
    for (const Anomaly& a : c.anomalies) AddAnomaly(a, entry_name(a.entry));
    if (torchscript_) {
      // (Code that calls a builtin opening files is the container's
      // anomaly torchscript.file_builtin, reported as F031 by AddAnomaly.)
      size_t code_files = 0;
      for (const ContainerEntry& e : c.entries) {
        if (e.zip.name.starts_with(c.prefix + "/code/")) ++code_files;
      }
      Add("CKG-F030", Severity::kSuspicious,
          "TorchScript archive: torch.jit.load, and torch.load before torch 2.6 whatever its arguments, runs its "
          "code (" + Num(code_files) + " files under " + c.prefix + "/code/)",
          entry_name(""), 0, "");
    }
    if (c.format == ContainerFormat::kTorchScriptFlatbuffer) {
      // (A file that is also another format: polyglot.torchscript_flatbuffer,
      // CKG-F011, by AddAnomaly.)
      Add("CKG-F030", Severity::kSuspicious,
          "TorchScript flatbuffer module ('PTMF' at bytes 4..7): torch.jit.load and _load_for_lite_interpreter run "
          "its code",
          entry_name(""), 4, "");
    }
    const bool torch_archive = c.format == ContainerFormat::kTorchZip || c.format == ContainerFormat::kTorchScript;
    records_ = torch_archive ? &c : nullptr;
    records_entry_ = entry_name(c.prefix + "/data.pkl");
    checked_records_.assign(records_ != nullptr ? c.entries.size() : 0, false);
    missing_keys_.clear();
    for (const PickleSource& source : c.pickles) {
      // A zip member named again by the directory: the same bytes were
      // scanned under the first name (the container reports zip.shared_data).
      if (source.same_as) continue;
      const Bytes data = source.data.subspan(static_cast<size_t>(source.start));
      const uint64_t base = source.file_offset.value_or(0) + source.start;
      const size_t findings_before = report_.findings.size();
      const size_t nested_before = nested_.size();
      legacy_stream_ = (c.format == ContainerFormat::kPickle || c.format == ContainerFormat::kTorchLegacy) &&
                       source.entry.empty() && nested_path.empty();
      ScanStream(data, base, entry_name(source.entry.empty() ? "" : source.entry), source.max_pickles, 0,
                 source.sniffed);
      legacy_stream_ = false;
      // Bytes rebuilt from pieces (joblib's reading): offsets into the file.
      if (!source.offset_map.empty()) {
        for (size_t i = findings_before; i < report_.findings.size(); ++i) {
          report_.findings[i].offset = SourceOffset(source.offset_map, report_.findings[i].offset);
        }
        for (size_t i = nested_before; i < nested_.size(); ++i) {
          nested_[i].offset = SourceOffset(source.offset_map, nested_[i].offset);
        }
      }
    }
    // Pickles handed to loaders as bytes, breadth first, bounded in depth.
    while (!nested_.empty()) {
      Nested n = std::move(nested_.front());
      nested_.pop_front();
      const size_t findings_before = report_.findings.size();
      ScanNested(n);
      if (!n.loader.empty()) {
        // Judged by bytes it could not read to the end, or that are no
        // pickle the loader would finish (it raises on them: a difference
        // between our decoding and Python's is the likelier story): no
        // longer judged.
        bool incomplete = budget_error_.has_value();
        for (size_t i = findings_before; i < report_.findings.size() && !incomplete; ++i) {
          const std::string& rule = report_.findings[i].rule;
          incomplete = rule == "CKG-F040" || rule == "CKG-F020" || rule == "CKG-F010";
        }
        if (incomplete) {
          entry_ = &n.caller_entry;
          ReportDeferred(n.loader, n.offset);
        }
      }
    }
  }

  // ScanNested scans bytes a loader was handed: as a container when a reader
  // recognises them, else as a pickle stream.
  void ScanNested(const Nested& n) {
    const Bytes bytes = AsBytes(n.bytes);
    // torch.load(io.BytesIO(zip)), legacy torch streams (_load_from_bytes)
    // and wrapped pickles: the same containers as a file's; bytes no reader
    // recognises are scanned as a pickle stream.
    const Container nested = OpenContainer(bytes, options_.container, &budget_);
    if (nested.error && !nested.error->limit.empty() && !budget_error_) {
      // The file's budget ran out reading the nested bytes: the scan is
      // incomplete (the report's error, never "safe").
      budget_error_ = *nested.error;
      if (budget_error_->where.empty()) budget_error_->where = n.entry;
    }
    if (nested.format == ContainerFormat::kUnknown) {
      ScanStream(bytes, 0, n.entry, 0, n.depth);
      return;
    }
    records_ = nullptr;
    ForEachContainer(nested, [&](const Container& inner, const std::string& path) {
      const std::string where = path.empty() ? n.entry : n.entry + " > " + path;
      for (const Anomaly& a : inner.anomalies) AddAnomaly(a, where);
      for (const PickleSource& source : inner.pickles) {
        if (source.same_as) continue;
        const std::string entry = source.entry.empty() ? where : where + " > " + source.entry;
        ScanStream(source.data.subspan(static_cast<size_t>(source.start)), source.start, entry, source.max_pickles,
                   n.depth, source.sniffed);
      }
    });
  }

  // budget_error is the file's budget running out during a pickle (the scan
  // stopped there; ScanBytes makes it the report's error).
  const std::optional<Error>& budget_error() const { return budget_error_; }

 private:
  friend class PickleMachine<Scanner>;

  // Add records a finding once per rule, global, entry and `kind` (anomaly
  // kinds share a rule): the first place says where.
  void Add(const std::string& rule, Severity severity, std::string message, const std::string& entry, uint64_t offset,
           std::string_view global, const std::string& kind = "") {
    if (!seen_.insert(rule + "\x1f" + global + "\x1f" + entry + "\x1f" + kind).second) return;
    if (report_.findings.size() >= kMaxFindings) {
      if (!capped_) {
        capped_ = true;
        report_.findings.push_back({"CKG-F040", Severity::kSuspicious,
                                    "more than " + Num(kMaxFindings) + " findings; the rest are not listed, but for " +
                                        "the first of each severity higher than any listed",
                                    entry, offset, "", "", "", ""});
        worst_listed_ = std::max(worst_listed_, Severity::kSuspicious);
      }
      // Past the bound, a finding more severe than every listed one is
      // still listed (at most one per severity): a file cannot bury its
      // dangerous call under a thousand harmless findings.
      if (severity <= worst_listed_) return;
    }
    worst_listed_ = std::max(worst_listed_, severity);
    report_.findings.push_back({rule, severity, std::move(message), entry, offset, std::string(global), "", "", ""});
  }
  void AddFixed(const std::string& rule, std::string message, uint64_t offset, std::string_view global = {}) {
    Add(rule, Rules().FixedRule(rule).severity, std::move(message), *entry_, offset, global);
  }

  void AddAnomaly(const Anomaly& a, const std::string& entry) {
    if (a.kind == "pickle.decode_error") return;  // the scan reports its own parse errors
    if (a.kind == "torchscript.file_builtin") {
      Add("CKG-F031", Rules().FixedRule("CKG-F031").severity, a.detail, entry, a.offset, "");
      return;
    }
    if (a.kind == "npy.object_array") {
      Add("CKG-F070", Rules().FixedRule("CKG-F070").severity,
          "numpy object array: its data is a pickle, which numpy.load(allow_pickle=True) runs", entry, a.offset, "");
      return;
    }
    const bool polyglot = a.kind.starts_with("polyglot.");
    const std::string id = polyglot ? "CKG-F011" : "CKG-F010";
    Add(id, Rules().FixedRule(id).severity, a.kind + ": " + a.detail, entry, a.offset, "", a.kind);
  }

  struct Classified {
    GlobalClass cls;
    uint8_t action = Sym::kNoAction;
    const CallableEntry* callable = nullptr;
    std::string resolved;  // after Python-2 renames and module aliases
    bool data = false;     // a data kind of rules/callables.toml
    bool via_compat = false;  // the dangerous verdict comes from the renamed name
    bool member = false;      // a capitalised member of a data class (c.callable is the class's entry)
  };

  static int SeverityRank(const GlobalClass& c) {
    if (c.kind == GlobalClass::kAllowed) return 0;
    return c.severity == Severity::kDangerous ? 3 : c.severity == Severity::kSuspicious ? 2 : 1;
  }

  Classified Classify(const std::string& module, const std::string& name) {
    Classified c;
    c.cls = Rules().ClassifyGlobal(module, name);
    if (c.cls.kind == GlobalClass::kAllowed) {
      // (Python-2 renames and aliases only matter past the allowlist: a file
      // of allowlisted globals never parses rules/pickle_names.toml.)
      if (const AllowEntry* entry = Rules().allowlist().Find(module, name)) c.action = static_cast<uint8_t>(entry->action);
      return c;
    }
    const auto [resolved_module, resolved_name] = Rules().ResolveName(module, name);
    c.resolved = resolved_module + "." + resolved_name;
    c.callable = Rules().FindCallable(c.resolved);
    if (c.callable == nullptr) {
      // A capitalised member of a pure-data class (an Enum member such as
      // _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT, a nested class) is
      // data too; lowercase members (methods: pathlib.Path.write_text) are
      // judged by their own name.
      const size_t dot = c.resolved.rfind('.');
      const char first = dot + 1 < c.resolved.size() ? c.resolved[dot + 1] : '\0';
      if (dot != std::string::npos && first >= 'A' && first <= 'Z') {
        const CallableEntry* parent = Rules().FindCallable(std::string_view(c.resolved).substr(0, dot));
        if (parent != nullptr && IsDataKind(parent->kind) && parent->kind != CallableKind::kGetattr) {
          c.data = true;
          c.member = true;
          c.callable = parent;
          return c;
        }
      }
    }
    if (c.callable != nullptr && IsDataKind(c.callable->kind)) {
      // A known pure-data callable wins over the denylist (functools.partial
      // and builtins.getattr are both): what it is handed decides.
      c.data = true;
      return c;
    }
    // CPython renames Python-2 names before importing them: judge the name
    // it imports too, and keep the worse.
    if (resolved_module != Rules().allowlist().CanonicalModule(module) || resolved_name != name) {
      GlobalClass renamed = Rules().ClassifyGlobal(resolved_module, resolved_name);
      if (renamed.kind == GlobalClass::kAllowed) {
        // The loader only knows the spelling of the allowlist.
        renamed.kind = GlobalClass::kUnknown;
        renamed.rule = &Rules().FixedRule("CKG-P001");
        renamed.severity = renamed.rule->severity;
      }
      if (SeverityRank(renamed) > SeverityRank(c.cls)) {
        c.cls = std::move(renamed);
        c.via_compat = true;
      }
    }
    return c;
  }

  void ClassifyAndReport(const std::string& module, const std::string& name, uint64_t offset, Sym& out) {
    const std::string full = module + "." + name;
    out.kind = Sym::kGlobal;
    out.text = Keep(full);
    out.number = static_cast<int64_t>(module.size());
    if (torchscript_ && (module == "__torch__" || module.starts_with("__torch__.") || module == "torch.jit._pickle")) {
      // TorchScript's own classes and the list/tensor builders of its
      // debug_pkl and constants pickles: covered by the CKG-F030 finding.
      out.allowed = true;
      return;
    }
    // A state dict names the same few globals thousands of times.
    auto cached = classes_.find(full);
    if (cached == classes_.end()) cached = classes_.emplace(full, Classify(module, name)).first;
    const Classified& c = cached->second;
    const GlobalClass& cls = c.cls;
    out.callable = c.callable;
    if (cls.kind == GlobalClass::kAllowed) {
      out.allowed = true;
      out.action = c.action & Sym::kNoAction;  // 7 bits: every AllowAction (static_assert above)
      return;
    }
    if (c.data) {
      if (c.member) out.callable = nullptr;  // a member value; calling it is a call (F080)
      out.data_member = c.member;
      Add("CKG-P002", Rules().FixedRule("CKG-P002").severity,
          "global '" + full + "'" + (c.resolved != full ? " (" + c.resolved + ")" : "") +
              " is pure data when loaded (" + c.callable->why + "), but not weights-only",
          *entry_, offset, full);
      return;
    }
    if (c.callable != nullptr && c.callable->kind == CallableKind::kLoader && !c.callable->input.empty()) {
      // A loader whose whole input is its argument: judged at its call by
      // what it is handed (Call), reported by its rule at any other use.
      // Named at all, it is not weights-only (torch's loader refuses it).
      out.deferred = true;
      Add("CKG-F062", Rules().FixedRule("CKG-F062").severity,
          "global '" + full + "' is a loader (" + c.callable->why +
              "): a call of it on one fully known literal is judged by that literal, any other use by " +
              (cls.rule != nullptr ? cls.rule->id : std::string("CKG-P001")) + "; not weights-only",
          *entry_, offset, full, "reference");
      return;
    }
    out.dangerous = cls.severity == Severity::kDangerous;
    ReportGlobal(full, c, offset);
  }

  // ReportGlobal reports the denylist rule (or the policy) of a global that is
  // neither allowed nor data.
  void ReportGlobal(const std::string& full, const Classified& c, uint64_t offset) {
    const GlobalClass& cls = c.cls;
    const std::string id = cls.rule != nullptr ? cls.rule->id : "CKG-P001";
    std::string message = cls.kind == GlobalClass::kDenied
                              ? "global '" + full + "'" +
                                    (c.via_compat ? " (the unpickler imports it as " + c.resolved + ")" : "") +
                                    (cls.matched != full && cls.matched != c.resolved ? " (reaches " + cls.matched + ")" : "") +
                                    ": " + (cls.rule != nullptr ? cls.rule->description : std::string())
                              : "global '" + full + "' is on neither the allowlist nor the denylist";
    Add(id, cls.severity, std::move(message), *entry_, offset, full);
  }

  // ClassOf: the classification of a global symbol (ClassifyAndReport
  // made it), or nullptr.
  const Classified* ClassOf(std::string_view full) const {
    auto cached = classes_.find(std::string(full));
    return cached != classes_.end() ? &cached->second : nullptr;
  }

  // DeferredIsDangerous: the rule a deferred loader reports is dangerous.
  bool DeferredIsDangerous(const Sym& g) const {
    const Classified* c = ClassOf(g.text);
    return c != nullptr && c->cls.severity == Severity::kDangerous;
  }

  // ReportDeferred reports a deferred loader (Sym::deferred, or a loader
  // whose literal could not be scanned to the end) by its rule: it is used
  // other than called with one fully known argument.
  void ReportDeferred(std::string_view loader, uint64_t offset) {
    const std::string full(loader);
    if (const Classified* c = ClassOf(full)) {
      ReportGlobal(full, *c, offset);
    } else {
      // Not reachable (a deferred global was classified); never silent.
      AddFixed("CKG-F080", "global '" + full + "' is a loader used as more than a call on literal data", offset, full);
    }
  }

  // ScanStream runs the pickles of one stream through the machine, one after
  // another until the data ends (or max_pickles are done).
  // `sniffed`: found by its first bytes only (maybe tensor data): a parse
  // error is then not a finding, though globals decoded before it are.
  void ScanStream(Bytes data, uint64_t base, const std::string& entry, uint32_t max_pickles, uint32_t depth,
                  bool sniffed = false) {
    if (budget_error_) return;
    PickleDecoder decoder(data, options_.container.pickle, base);
    RunStream(decoder, entry, max_pickles, depth, sniffed);
    // A frame split (PickleDecoder::FrameSplit): the unpicklers read this
    // stream differently from there; the scan read on as pickle.loads does.
    if (const std::optional<uint64_t> at = decoder.FrameSplit(); at && !sniffed) {
      entry_ = &entry;
      Add("CKG-F011", Rules().FixedRule("CKG-F011").severity,
          "polyglot.frame_split: an opcode at byte " + Num(*at) +
              " runs past the end of its FRAME, or begins a FRAME inside one; the C unpickler that reads a frame "
              "whole from a file (any frame through io.BytesIO, as torch reads data.pkl; 128 KiB or more from "
              "open()) reads on from the frame's end, pickle.loads reads straight on and pickle._Unpickler "
              "refuses: each runs a different pickle (only the straight reading is scanned); no pickler writes this",
          entry, *at, "", "polyglot.frame_split");
    }
  }
  void RunStream(PickleDecoder& decoder, const std::string& entry, uint32_t max_pickles, uint32_t depth,
                 bool sniffed) {
    // Read past what only the C unpickler refuses (pure-Python float() and
    // int() lines, huge memo keys) and past operands longer than a limit:
    // what another unpickler runs after them is scanned.
    decoder.SetLenientOperands(true);
    entry_ = &entry;
    depth_ = depth;
    sniffed_ = sniffed;
    // The scanner's own bounds are max_values (values and memo entries per
    // pickle) and the file's budget; stack and MARK depth only at their
    // ceilings.
    MachineLimits limits;
    limits.max_stack_depth = ~uint64_t{0};
    limits.max_mark_depth = ~uint64_t{0};
    limits.max_memo_entries = options_.max_values;
    PickleMachine<Scanner> machine(*this, limits, budget_, MachineMode::kLenient, entry);
    uint32_t done = 0;
    Reset();
    while (!decoder.AtEnd() && (max_pickles == 0 || done < max_pickles)) {
      machine.Reset();
      Result<Id> root = machine.Run(decoder);
      if (root) {
        CheckExpansion(entry, decoder.Offset() - 1, machine.ops());
        if (legacy_stream_) CheckLegacyRoot(done, *root, !decoder.AtEnd(), decoder.Offset() - 1);
        ++done;
        Reset();
        continue;
      }
      const Error& e = root.error();
      if (!e.limit.empty()) {
        // The file's budget ran out: the scan is incomplete, an error of
        // the report (never "safe").
        budget_error_ = e;
        if (budget_error_->where.empty()) budget_error_->where = entry;
        return;
      }
      if (sniffed) return;
      if (machine.ended_before_stop()) {
        // The data ended inside a pickle: CPython raises here, after running
        // everything before.
        AddFixed("CKG-F020",
                 "the pickle ends before its STOP at byte " + Num(decoder.Offset()) +
                     "; what it decoded before is scanned above",
                 decoder.Offset());
      } else if (e.code == ErrorCode::kLimitExceeded && !machine.decode_failed()) {
        AddFixed("CKG-F040", "the pickle exceeds the scanner's limits (" + e.ToString() + "); the rest is not scanned",
                 e.offset);
      } else {
        AddFixed("CKG-F020",
                 "the pickle stops parsing (" + e.ToString() + ")" +
                     (machine.ops() > 0 || done > 0 ? "; what it decoded before is scanned above" : ""),
                 e.offset);
      }
      return;
    }
  }

  void Reset() {
    values_.clear();
    items_.clear();
    texts_.clear();
  }
  // CheckLegacyRoot: torch.load reads a file that is not a zip as its
  // legacy format, a stream of pickles: it compares the first pickle's value
  // with the magic number (!=) and the second's with the protocol version,
  // which it formats into its error ("%s"), and iterates the fifth, the
  // storage keys, looking each up in a dict. An instance of a class not
  // known to be data there, or a value whose attributes the pickle set (or
  // a container holding one), has its methods run (F081). Only when more
  // pickles follow the first: a file of one pickle is not read past its
  // value's comparison, and a lone object is what a plain pickle holds.
  void CheckLegacyRoot(uint32_t index, uint32_t root, bool more_follow, uint64_t offset) {
    if (index != 1 && index != 4 && !(index == 0 && more_follow)) return;
    const Sym& v = Val(root);
    if (!HoldsForeign(v)) return;
    static constexpr const char* kWhat[] = {"compares the first pickle's value with its magic number (__ne__)",
                                            "compares the second pickle's value with its protocol version and "
                                            "formats it into its error (__ne__, __str__)",
                                            "", "",
                                            "iterates the fifth pickle's value, the storage keys, hashing each"};
    AddFixed("CKG-F081",
             std::string("torch.load's legacy reader ") + kWhat[index] + ": here " + ForeignWhat(v) +
                 ", whose methods run",
             offset, ForeignGlobal(v));
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
    if (s.kind != Sym::kTuple) s.inert = Inert(s);  // (Tuple sets its own, with its weight)
    if (s.callable_value) callable_values_seen_ = true;
    values_.push_back(std::move(s));
    return static_cast<uint32_t>(values_.size() - 1);
  }
  // Inert decides Sym::inert from what CheckStringArgs and CheckGlobalArgs
  // look at (keep the three in step).
  static bool Inert(const Sym& s) {
    if (s.attrs || s.callable_value || s.holds_callable || s.holds_object) return false;
    switch (s.kind) {
      case Sym::kStr: return false;
      case Sym::kObject: return s.callable != nullptr;
      case Sym::kGlobal: return !s.deferred && (IsDataGlobal(s) || s.dangerous);
      case Sym::kTuple: return false;  // Tuple decides
      default: return true;
    }
  }
  bool AllInert(std::span<const uint32_t> args) {
    for (uint32_t id : args) {
      if (!Val(id).inert) return false;
    }
    return true;
  }
  Sym& Val(uint32_t id) { return values_[id]; }
  std::span<const uint32_t> Items(const Sym& tuple) const {
    return std::span<const uint32_t>(items_).subspan(tuple.items_begin(), tuple.items_count());
  }

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

  uint64_t WeightOf(std::span<const uint32_t> items) {
    uint64_t w = 1;
    for (uint32_t i : items) w = AddWeight(w, Val(i).weight);
    return w;
  }

  void CheckExpansion(const std::string& entry, uint64_t offset, uint64_t ops) {
    uint64_t heaviest = 0;
    values_.ForEach([&](const Sym& s) { heaviest = std::max(heaviest, s.weight); });
    if (heaviest > (uint64_t{1} << 24) && heaviest / std::max<uint64_t>(ops, 1) > options_.expansion_ratio) {
      Add("CKG-F040", Rules().FixedRule("CKG-F040").severity,
          "memo/DUP references expand " + Num(ops) + " opcodes into more than " + Num(heaviest) +
              " values (a 'billion laughs' pattern)",
          entry, offset, "");
    }
  }

  // Call handles a call of `target` (a REDUCE, NEWOBJ...) with `args`.
  uint32_t Call(const PickleOp& op, uint32_t target, std::span<const uint32_t> args, bool builds_object) {
    const Sym& t = Val(target);
    if (t.kind != Sym::kGlobal) {
      AddFixed("CKG-F002",
               std::string(op.Info().name) + " calls a value that is not a named global (the result of another call, " +
                   "a persistent load or a container)",
               op.offset);
      return New(Sym{});
    }
    const std::string_view global = t.text;
    const bool allowed = t.allowed;
    const uint8_t action = t.action;
    const CallableEntry* const callable = t.callable;
    // Only messages copy the name: a state dict makes one call per tensor.
    const std::string_view name = global;
    CheckStringArgs(op, args, name);
    // A loader whose whole input is its argument (Sym::deferred), called
    // with exactly one fully known literal of that input, runs what the
    // literal holds: the nested scan below judges it (F062). Anything else
    // (more arguments, a path, partly known bytes, nesting past the depth
    // limit, NEWOBJ/OBJ/INST) reports the loader's rule.
    bool judged_by_data = false;
    if (t.deferred) {
      const Sym* only = args.size() == 1 ? &Val(args[0]) : nullptr;
      const std::string& input = callable->input;
      judged_by_data = op.code == Opcode::kReduce && only != nullptr && !only->truncated && depth_ < kMaxNestedDepth &&
                       ((input == "bytes" && only->kind == Sym::kBytes) ||
                        (input == "stream" && only->payload == Sym::kStream));
      if (!judged_by_data) ReportDeferred(t.text, op.offset);
    }
    // Reported dangerous by name already (no F080 on top), or judged by its
    // literal argument (not a call of unknown code).
    const bool named_dangerous = t.dangerous || judged_by_data || (t.deferred && DeferredIsDangerous(t));
    // Bytes, a byte stream or a path handed to a loader; bytes that are a
    // pickle handed to any callee not known to be data.
    const bool data_call = allowed || (callable != nullptr && IsDataKind(callable->kind));
    const bool loader = callable != nullptr && callable->kind == CallableKind::kLoader;
    if (!args.empty() && !data_call) {
      const Sym& a = Val(args[0]);
      const bool looks_pickled = a.kind == Sym::kBytes && a.text.size() >= 2 && a.text[0] == '\x80' &&
                                 static_cast<unsigned char>(a.text[1]) <= 5;
      if ((loader && a.kind == Sym::kBytes) || looks_pickled) {
        QueueNested(op, name, a.text, a.truncated, judged_by_data);
      } else if (loader && a.payload == Sym::kStream) {
        QueueNested(op, name, a.text, a.truncated, judged_by_data);
      } else if (loader && (a.kind == Sym::kStr || a.payload == Sym::kPath)) {
        const std::string path(a.text);
        AddFixed("CKG-F061",
                 name + " loads the side file '" + path +
                     "' when this pickle loads: that file was not scanned (scan it too, or refuse this one)",
                 op.offset, name);
      }
    }
    // An empty instance: NEWOBJ of a class with no arguments is
    // cls.__new__(cls). INST and OBJ with no arguments do the same for a
    // class, but call anything else (both unpicklers' instantiate): a
    // capitalised last name component is taken for a class.
    auto capitalised = [&] {
      const size_t last_dot = name.rfind('.');
      return last_dot != std::string::npos && last_dot + 1 < name.size() && name[last_dot + 1] >= 'A' &&
             name[last_dot + 1] <= 'Z';
    };
    const bool empty_instance = builds_object && args.empty() &&
                                (op.code == Opcode::kNewObj || op.code == Opcode::kNewObjEx || capitalised());
    if (!allowed && callable != nullptr && IsDataKind(callable->kind)) {
      return DataCall(op, *callable, name, args, empty_instance);
    }
    if (!allowed) {
      if (callable != nullptr && callable->kind == CallableKind::kCaller) {
        AddFixed("CKG-F084", std::string(op.Info().name) + " calls '" + name + "', which calls what it is handed: " +
                                 callable->why, op.offset, name);
      } else if (empty_instance) {
        // A pickled object: its class instantiated without arguments, then
        // given its state by BUILD (judged there).
      } else if (!named_dangerous) {
        AddFixed("CKG-F080",
                 std::string(op.Info().name) + " calls '" + name + "'" + (args.empty() ? "" : " with arguments") +
                     ", which is neither on the allowlist nor a known pure-data constructor",
                 op.offset, name);
      }
      Sym result;
      result.kind = empty_instance ? Sym::kObject : Sym::kUnknown;
      if (result.kind == Sym::kObject) {
        AddFixed("CKG-F050",
                 "an instance of '" + name + "' is built: not weights-only (torch.load(weights_only=True) refuses it)",
                 op.offset, name);
      }
      result.text = global;
      if (callable != nullptr && callable->kind == CallableKind::kFileOpener && !args.empty() &&
          Val(args[0]).kind == Sym::kStr) {
        result.payload = Sym::kPath;
        result.text = Val(args[0]).text;
      }
      result.weight = WeightOf(args);
      return New(std::move(result));
    }
    CheckGlobalArgs(op, args, name);
    Sym result;
    result.kind = Sym::kUnknown;
    result.text = global;
    if (builds_object && (!allowed || action != Sym::kNoAction)) {
      // Also for a class on the allowlist: the loader only calls what the
      // allowlist binds, and never instantiates (NEWOBJ, OBJ, INST).
      result.kind = Sym::kObject;
      AddFixed("CKG-F050",
               "an instance of '" + name + "' is built: not weights-only (torch.load(weights_only=True) refuses it)",
               op.offset, name);
    } else if (!builds_object && action != Sym::kNoAction) {
      // What the loader builds for this global (vm.cc's Reduce), so that
      // the operations applied to the result are judged as it judges them.
      switch (static_cast<AllowAction>(action)) {
        case AllowAction::kRebuildTensor:
        case AllowAction::kRebuildTensorV2:
        case AllowAction::kRebuildTensorV3:
        case AllowAction::kRebuildParameter:
        case AllowAction::kRebuildParameterWithState:
          result.kind = Sym::kTensor;
          break;
        case AllowAction::kOrderedDict:
        case AllowAction::kCounter:
          result.kind = Sym::kDict;
          result.ordered = true;
          // OrderedDict(pairs), Counter(mapping): what it is built from it
          // holds (a BUILD state spelled so is judged as the literal).
          NoteHeld(result, args);
          break;
        case AllowAction::kTorchSize:
          result.kind = Sym::kTuple;
          break;
        case AllowAction::kSet:
        case AllowAction::kFrozenSet:
          result.kind = Sym::kSet;
          result.frozen = static_cast<AllowAction>(action) == AllowAction::kFrozenSet;
          break;
        case AllowAction::kComplex:
        case AllowAction::kDevice:
        case AllowAction::kUninitializedTensor:
          result.kind = Sym::kScalar;
          break;
        case AllowAction::kByteArray:
        case AllowAction::kBytes:
          result.kind = Sym::kBytes;
          result.text = {};
          break;
        case AllowAction::kCodecsEncode: {
          // How protocol 2 spells bytes; the loader's own decoding
          // (pickle_semantics.h). Anything it refuses stays unknown.
          if (args.empty() || Val(args[0]).kind != Sym::kStr || Val(args[0]).truncated) break;
          std::optional<std::string_view> encoding;
          if (args.size() == 2 && Val(args[1]).kind == Sym::kStr) encoding = Val(args[1]).text;
          if (args.size() > 2) break;
          if (Result<std::string> bytes = CodecsEncodeLatin1(Val(args[0]).text, encoding)) {
            result.kind = Sym::kBytes;
            result.text = Keep(*bytes);
          }
          break;
        }
        case AllowAction::kStorageType:
        case AllowAction::kDtype:
        case AllowAction::kConstant: {
          AddFixed("CKG-F002",
                   std::string(op.Info().name) + " calls '" + name +
                       "', which the loader never calls (a storage type, dtype or constant)",
                   op.offset, name);
          result = Sym{};
          break;
        }
        case AllowAction::kRebuildQTensor:  // judged as before it was loaded (unknown result)
        case AllowAction::kRebuildSparse:   // likewise: a tensor of component tensors, no call
        case AllowAction::kRebuildMeta:
        case AllowAction::kRebuildNested:
        case AllowAction::kGetLayout:       // a layout constant by name
        case AllowAction::kRebuildFromNumpy:  // a tensor of a numpy array (the array judged as itself)
        case AllowAction::kRecord:          // a record the user vouched for: its result is not data the scan models
        case AllowAction::kUnsupported:
          break;
        case AllowAction::kIdentity:  // torch.jit._pickle's helpers: the argument itself
          if (!args.empty()) return args[0];
          break;
      }
    }
    if (global == "torch._tensor._rebuild_from_type_v2") {
      // It returns func(*args): that call is judged as the pickle's own
      // (a REDUCE of func), and its result is what the rebuild returns.
      if (std::optional<Sym> inner = RebuildFromTypeCall(op, args)) result = std::move(*inner);
      // func may return a value of the pickle's (torch.jit._pickle's
      // helpers return their argument), whose attributes the state sets.
      if (args.size() == 4) CheckPureCallHeld(op, result.held_by_pure_call, args.subspan(3, 1));
      CheckRebuildFromType(op, args, result);
    }
    result.weight = WeightOf(args);
    return New(std::move(result));
  }

  // RebuildFromTypeCall judges the call func(*args) that
  // torch._tensor._rebuild_from_type_v2(func, new_type, args, state) makes,
  // as a REDUCE of func with args's items (func may be getattr, a computed
  // callable, another rebuild...), and returns its result; nullopt when
  // there are not four arguments. Arguments that are not a tuple the scan
  // knows are a call with arguments it cannot see: judged as a call of func
  // with none (getattr without a literal name, a computed func: dangerous).
  // Nested rebuilds are followed kMaxInnerCalls deep; past that, the call is
  // reported (no recursion bound by the input).
  std::optional<Sym> RebuildFromTypeCall(const PickleOp& op, std::span<const uint32_t> args) {
    if (args.size() != 4) return std::nullopt;
    if (inner_calls_ >= kMaxInnerCalls) {
      AddFixed("CKG-F081",
               "_rebuild_from_type_v2 calls its first argument with its third; nested more than " +
                   Num(kMaxInnerCalls) + " levels deep, the call is not followed",
               op.offset);
      return std::nullopt;
    }
    const Sym& call_args = Val(args[2]);
    std::vector<uint32_t> items;  // a copy: the call adds values and items
    if (call_args.kind == Sym::kTuple) {
      const std::span<const uint32_t> known = Items(call_args);
      items.assign(known.begin(), known.end());
    }
    ++inner_calls_;
    const uint32_t id = Call(op, args[0], items, /*builds_object=*/false);
    --inner_calls_;
    // Then ret.__setstate__(state) when ret's class has its own, else
    // setattr(ret, k, v) for each of state's items: a BUILD of ret with
    // that state, judged as one (a callable planted as an attribute; a
    // class whose __setstate__ calls its attributes: Optimizer's calls
    // self._hook_for_profile()).
    CheckBuildState(op, id, args[3]);
    return Val(id);
  }

  // NoneLike: None as the scan tells it (a scalar 0 that is not an int:
  // None, False and 0.0 share it).
  static bool NoneLike(const Sym& v) { return v.kind == Sym::kScalar && !v.is_int && v.number == 0; }
  // StateParts: the parts of a BUILD state as the default __setstate__ (and
  // torch's _rebuild_from_type_v2) split it: a (state, slots) pair's two
  // items, or the state itself.
  struct StateSplit {
    std::array<uint32_t, 2> parts;
    size_t size;
  };
  StateSplit StateParts(uint32_t state) {
    const Sym& st = Val(state);
    if (st.kind == Sym::kTuple && st.items_count() == 2) return {{Items(st)[0], Items(st)[1]}, 2};
    return {{state, state}, 1};
  }

  // CheckRebuildFromType: torch._tensor._rebuild_from_type_v2(func, new_type,
  // args, state) makes ret = func(*args) (RebuildFromTypeCall judges that
  // call; `result` is its result), calls ret.as_subclass(new_type) when
  // type(ret) is not new_type (a method of what func returned: F002 when
  // that is a value the pickle gave attributes or an object of an unlisted
  // class), then ret.__setstate__(state) when ret's class has its own, else
  // torch._utils._set_obj_state, which splits a (state, slots) pair and
  // runs setattr(ret, k, v) for each of state.items(), for a Tensor type
  // too. `items` is looked up on the instance: a state that is not a plain
  // dict (a record or an OrderedDict a BUILD gave attributes) has it chosen
  // by the pickle (F002). For a type other than Tensor the result's
  // attributes are the state's, so later uses of it are judged as after a
  // BUILD (Sym::attrs).
  void CheckRebuildFromType(const PickleOp& op, std::span<const uint32_t> args, Sym& result) {
    if (args.size() != 4) return;
    const Sym& new_type = Val(args[1]);
    const bool tensor_type =
        new_type.kind == Sym::kGlobal && (new_type.text == "torch.Tensor" || new_type.text == "torch._tensor.Tensor");
    if (!tensor_type && (result.attrs || (result.kind == Sym::kObject && result.callable == nullptr))) {
      // ret.as_subclass(new_type), looked up on what func returned.
      AddFixed("CKG-F002",
               "_rebuild_from_type_v2 calls as_subclass() of what its function returned, here a " +
                   KindName(result.kind) + (result.attrs ? " whose attributes the pickle set" : " of an unlisted class") +
                   ": a method looked up on a value the pickle built",
               op.offset);
    }
    // torch._utils._set_obj_state(ret, state) for a Tensor type too: a
    // state's items() (and its truth value) come from the state itself.
    const StateSplit state = StateParts(args[3]);
    for (size_t i = 0; i < state.size; ++i) {
      const Sym& part = Val(state.parts[i]);
      if (NoneLike(part) || (part.kind == Sym::kDict && !part.attrs)) continue;
      AddFixed("CKG-F002",
               "_rebuild_from_type_v2 of a non-Tensor type calls items() of its state, here a " +
                   KindName(part.kind) + (part.attrs ? " whose attributes a BUILD set" : "") +
                   ": a method looked up on a value the pickle built",
               op.offset);
    }
    if (tensor_type) return;
    result.attrs = true;
    attrs_seen_ = true;
  }

  // ForEachArg calls fn on each argument and the items of tuple arguments,
  // a few levels deep (bounded: tuples are the only containers whose items
  // the scan keeps).
  template <typename Fn>
  void ForEachArg(std::span<const uint32_t> args, Fn fn) {
    // A fixed worklist (no allocation per call: a state dict makes one call
    // per tensor); what does not fit is not looked into.
    constexpr size_t kMaxWork = 256;
    struct Work {
      uint32_t id;
      uint32_t depth;
    };
    Work work[kMaxWork];  // left uninitialised: only [0, top) is read
    size_t top = 0;
    for (auto it = args.rbegin(); it != args.rend() && top < kMaxWork; ++it) work[top++] = {*it, 0};
    size_t visited = 0;
    while (top > 0 && visited < 4096) {
      const auto [id, depth] = work[--top];
      ++visited;
      fn(id);
      const Sym& v = Val(id);
      if (v.kind != Sym::kTuple || depth >= 4) continue;
      const std::span<const uint32_t> items = Items(v);
      for (auto it = items.rbegin(); it != items.rend() && top < kMaxWork; ++it) work[top++] = {*it, depth + 1};
    }
  }

  // CheckStringArgs: a string argument naming interpreter internals (F082).
  void CheckStringArgs(const PickleOp& op, std::span<const uint32_t> args, std::string_view callee) {
    if (AllInert(args)) return;
    ForEachArg(args, [&](uint32_t id) {
      const Sym& v = Val(id);
      if (v.kind == Sym::kStr && NamesInternals(v.text)) {
        AddFixed("CKG-F082",
                 "a string argument of '" + callee + "' names interpreter internals ('" +
                     std::string(v.text.substr(0, 80)) + (v.text.size() > 80 ? "...'" : "'") + ")",
                 op.offset, callee);
      }
    });
  }

  // IsDataGlobal: a global that is allowed or a known pure-data callable.
  static bool IsDataGlobal(const Sym& v) {
    return v.kind == Sym::kGlobal &&
           (v.allowed || v.data_member || (v.callable != nullptr && IsDataKind(v.callable->kind)));
  }

  // CheckAttributedArgs: a value whose attributes the pickle set
  // (Sym::attrs), handed to a call, also inside tuples (a rebuild function
  // calls func(*args)): a mapping constructor (dict(x), OrderedDict(x),
  // Counter(x)...) calls x.keys(), looked up on the instance, and other
  // callees may call methods looked up the same way. Run whether or not the
  // arguments are inert: a tuple made before a BUILD gave its item
  // attributes still says inert (only calls after such a BUILD pay).
  void CheckAttributedArgs(const PickleOp& op, std::span<const uint32_t> args, std::string_view callee) {
    ForEachArg(args, [&](uint32_t id) {
      const Sym& v = Val(id);
      if (!v.attrs || v.kind == Sym::kScalar) return;
      const std::string what = v.text.empty() ? KindName(v.kind) : std::string(v.text);
      AddFixed("CKG-F081",
               "a '" + what + "' whose attributes the pickle set is handed to '" + std::string(callee) +
                   "', which may call a method looked up on it (dict() and OrderedDict() call its keys attribute)",
               op.offset, what);
    });
  }

  // CheckCallableValueArgs: a callable value (Sym::callable_value: a
  // functools.partial object, a bound method) handed to a call, also inside
  // tuples: the callee may call it (torch's _rebuild_from_type_v2 calls
  // func(*args), numpy's __randomstate_ctor calls ctor(name)), and what it
  // calls was never judged as a call (F081).
  void CheckCallableValueArgs(const PickleOp& op, std::span<const uint32_t> args, std::string_view callee) {
    ForEachArg(args, [&](uint32_t id) {
      const Sym& v = Val(id);
      if (!v.callable_value || v.pure_call) return;
      const std::string what = v.callable != nullptr ? std::string(v.text) + " object" : "an attribute of a computed value";
      AddFixed("CKG-F081",
               "a callable value (" + what + ") is handed to '" + std::string(callee) + "', which may call it",
               op.offset, v.callable != nullptr ? std::string(v.text) : std::string());
    });
  }
  // CheckCallArgs: the argument checks of a call whose callee may call
  // methods of its arguments, when the pickle has made such values.
  // `calls_callable_values` false: the callee is known never to call a
  // callable it is handed during the load (a defaultdict's factory).
  void CheckCallArgs(const PickleOp& op, std::span<const uint32_t> args, std::string_view callee,
                     bool calls_callable_values = true) {
    if (attrs_seen_) CheckAttributedArgs(op, args, callee);
    if (calls_callable_values && callable_values_seen_) CheckCallableValueArgs(op, args, callee);
  }

  // CheckGlobalArgs: globals handed to a call of `callee`, which may call
  // them (a rebuild function, a default factory), must be data (F081).
  // Each argument is walked on its own (its own bound on items looked into).
  void CheckGlobalArgs(const PickleOp& op, std::span<const uint32_t> args, std::string_view callee,
                       bool calls_callable_values = true) {
    CheckCallArgs(op, args, callee, calls_callable_values);
    if (AllInert(args)) return;
    const bool formats = callee == "builtins.str" || callee == "builtins.repr" || callee == "builtins.format" ||
                         callee == "builtins.ascii" || callee == "builtins.print" || callee == "__builtin__.str" ||
                         callee == "__builtin__.repr" || callee == "__builtin__.format";
    for (size_t i = 0; i < args.size(); ++i) {
      ForEachArg(args.subspan(i, 1), [&](uint32_t id) {
        const Sym& v = Val(id);
        if (v.kind == Sym::kObject && v.callable == nullptr) {
          // An instance of a class not known to be data: the constructor
          // iterates, hashes or converts it, calling its methods.
          const std::string cls(v.text);
          AddFixed("CKG-F081", "an instance of '" + cls + "' is handed to '" + callee + "', which calls its methods",
                   op.offset, cls);
          return;
        }
        if (formats && HoldsForeign(v) && v.kind != Sym::kTuple) {
          // str(), repr() and format() of a container format every value
          // in it, a dict's values too.
          AddFixed("CKG-F081",
                   "a " + KindName(v.kind) + " holding an instance of a class not known to be data (or a value whose " +
                       "attributes the pickle set) is handed to '" + callee + "', which formats what it holds",
                   op.offset);
          return;
        }
        if (v.holds_object && v.kind != Sym::kTuple) {
          // The same inside a list or set, or as a dict key: iterating,
          // unpacking (OrderedDict([x])) or hashing it calls its methods.
          AddFixed("CKG-F081",
                   "a " + KindName(v.kind) + " holding an instance of a class not known to be data (or a value whose " +
                       "attributes the pickle set) is handed to '" + callee + "', which iterates or hashes it",
                   op.offset);
          return;
        }
        if (v.kind == Sym::kGlobal && v.deferred) {
          // A loader handed to a callee, which may call it on anything.
          ReportDeferred(v.text, op.offset);
          return;
        }
        if (v.kind != Sym::kGlobal || IsDataGlobal(v) || v.dangerous) return;
        const std::string g(v.text);
        AddFixed("CKG-F081", "global '" + g + "' is handed to '" + callee + "', which may call it", op.offset, g);
      });
    }
  }

  // QueueNested schedules bytes handed to a loader for a scan of their own,
  // reported as CKG-F060 (dangerous: an unknown or partial nested pickle
  // runs) or, when the loader is `judged` by this literal argument, as
  // CKG-F062.
  void QueueNested(const PickleOp& op, std::string_view callee, std::string_view bytes, bool truncated,
                   bool judged = false) {
    if (depth_ >= kMaxNestedDepth) {
      AddFixed("CKG-F060", "bytes handed to " + callee + " are nested more than " + Num(kMaxNestedDepth) +
                               " levels deep; not scanned", op.offset, callee);
      return;
    }
    const std::string entry = (entry_->empty() ? std::string() : *entry_ + " > ") + callee + "@" + Num(op.offset);
    if (judged) {
      AddFixed("CKG-F062",
               "the only argument of " + callee + " is literal data, scanned as entry '" + entry + "': " + callee +
                   " runs exactly what it holds (its findings are reported there); not weights-only",
               op.offset, callee);
    } else {
      AddFixed("CKG-F060",
               "bytes handed to " + callee + " are themselves a pickle; scanned as entry '" + entry + "'" +
                   (truncated ? " (only their first bytes are known)" : ""),
               op.offset, callee);
    }
    Nested n{std::string(bytes), entry, depth_ + 1, "", "", op.offset};
    if (judged) {
      n.loader = std::string(callee);
      n.caller_entry = *entry_;
    }
    nested_.push_back(std::move(n));
  }

  // NoteHeld: `result`, built from `args` by a data constructor (dict(d),
  // tuple(l), OrderedDict(pairs), Counter(mapping)), holds what they hold.
  void NoteHeld(Sym& result, std::span<const uint32_t> args) {
    if (AllInert(args)) return;
    ForEachArg(args, [&](uint32_t id) {
      const Sym& v = Val(id);
      result.holds_callable |= IsCallable(v) || v.holds_callable;
      result.holds_callable_value |= IsCallableValue(v) || v.holds_callable_value;
      result.holds_object |= v.holds_object;
      result.object_attr |= v.object_attr || IsUnlistedObject(v);
    });
    if (result.holds_callable || result.holds_object || result.object_attr) result.inert = false;
  }

  // DataCall is a call of a pure-data callable (rules/callables.toml): what
  // it is handed decides whether anything runs.
  uint32_t DataCall(const PickleOp& op, const CallableEntry& entry, std::string_view name,
                    std::span<const uint32_t> args, bool builds_object) {
    Sym result;
    result.kind = Sym::kUnknown;
    result.text = Keep(name);
    result.callable = &entry;
    result.weight = WeightOf(args);
    switch (entry.kind) {
      case CallableKind::kConstructor:
        CheckGlobalArgs(op, args, name);
        result.setstate_calls = entry.setstate_calls_attributes;
        // What it builds holds what its arguments hold (dict(d), tuple(l),
        // OrderedDict(pairs)...): a BUILD state made so is judged as the
        // literal would be.
        NoteHeld(result, args);
        break;
      case CallableKind::kClass:
        if (!args.empty()) {
          AddFixed("CKG-F080",
                   std::string(op.Info().name) + " calls the class '" + name +
                       "' with arguments: its constructor runs (it is only known as a referenced class)",
                   op.offset, name);
        } else if (builds_object) {
          result.kind = Sym::kObject;
          result.callable = nullptr;  // a BUILD on it is judged as on any object
          result.setstate_calls = entry.setstate_calls_attributes;
          result.known_class = true;
          AddFixed("CKG-F050",
                   "an instance of '" + name + "' is built: not weights-only (torch.load(weights_only=True) refuses it)",
                   op.offset, name);
        }
        break;
      case CallableKind::kGetattr: {
        const bool literal_name = args.size() >= 2 && Val(args[1]).kind == Sym::kStr && !Val(args[1]).truncated;
        if (args.size() < 2 || args.size() > 3 || !literal_name) {
          AddFixed("CKG-F083", std::string(op.Info().name) + " calls '" + name +
                                   "' with an attribute name that is not a literal string", op.offset, name);
          break;
        }
        const Sym& object = Val(args[0]);
        const std::string attr(Val(args[1]).text);
        if (object.kind == Sym::kGlobal && object.text != "<unresolved>") {
          // getattr(global, 'literal') is the global "global.literal" (how
          // Python 3.11 pickles Enum members): judged by that name.
          const size_t module_len = static_cast<size_t>(object.number);
          const std::string module(object.text.substr(0, module_len));
          const std::string base(object.text.substr(module_len + 1));
          Sym g;
          ClassifyAndReport(module, base + "." + attr, op.offset, g);
          return New(std::move(g));
        }
        // An attribute of a computed value: a call of it is a call of a
        // computed value (F002); a dunder reaches interpreter internals.
        if (NamesInternals(attr) || (attr.starts_with("__") && attr.ends_with("__"))) {
          AddFixed("CKG-F083", "getattr reaches '" + attr + "' of a computed value", op.offset, name);
        }
        result.callable = nullptr;
        result.text = {};
        result.callable_value = true;  // a bound method, as likely as not
        // torch 1.x's OneCycleLR keeps its annealing function as a bound
        // method of itself (anneal_func), in its __dict__ and its
        // state_dict(): arithmetic on three floats, data to call.
        result.pure_call = object.kind == Sym::kObject && object.text == "torch.optim.lr_scheduler.OneCycleLR" &&
                           (attr == "_annealing_cos" || attr == "_annealing_linear");
        break;
      }
      case CallableKind::kPartial:
        // partial(f, ...) references f; calling the partial object is a
        // call of a computed value (F002), and so is handing it to a callee
        // that calls it (F081). Its BUILD state repeats f. A loader bound in
        // a partial is no longer a call on literal data.
        for (uint32_t id : args) {
          if (Val(id).kind == Sym::kGlobal && Val(id).deferred) ReportDeferred(Val(id).text, op.offset);
        }
        result.callable_value = true;
        result.pure_call = !args.empty() && PureCall(args[0], args.subspan(1));
        break;
      case CallableKind::kReconstructor: {
        // copyreg._reconstructor(cls, base, state): base.__new__(cls, state)
        // and, unless base is object, base.__init__(obj, state), which may
        // call methods of the state (dict.__init__ calls state.keys()).
        CheckCallArgs(op, args, name);
        if (args.size() >= 2) {
          const Sym& base = Val(args[1]);
          const bool plain = base.kind == Sym::kGlobal && (IsDataGlobal(base) || base.text == "builtins.object" ||
                                                           base.text == "__builtin__.object");
          if (!plain) {
            const std::string b = base.kind == Sym::kGlobal ? std::string(base.text) : "a computed value";
            AddFixed("CKG-F080", "copyreg._reconstructor calls " + b + " to initialise the object", op.offset, b);
          }
        }
        result.kind = Sym::kObject;
        result.callable = nullptr;
        result.text = !args.empty() && Val(args[0]).kind == Sym::kGlobal ? Val(args[0]).text : result.text;
        result.setstate_calls = !args.empty() && Val(args[0]).callable != nullptr &&
                                Val(args[0]).callable->setstate_calls_attributes;
        AddFixed("CKG-F050", "an instance of '" + std::string(result.text) +
                                 "' is built: not weights-only (torch.load(weights_only=True) refuses it)",
                 op.offset, std::string(result.text));
        break;
      }
      case CallableKind::kNewObj: {
        // copyreg.__newobj__(cls, *args) is NEWOBJ: cls.__new__(cls, *args)
        // may call methods of the arguments (Parameter.__new__ calls
        // data.detach()).
        CheckCallArgs(op, args, name);
        if (args.empty()) break;
        const Sym& cls = Val(args[0]);
        if (args.size() > 1 && !IsDataGlobal(cls) && !cls.dangerous) {
          AddFixed("CKG-F080", "copyreg.__newobj__ calls __new__ of '" + std::string(cls.text) + "' with arguments",
                   op.offset, std::string(cls.text));
        }
        if (cls.callable != nullptr && cls.callable->kind == CallableKind::kPartial) {
          // partial.__new__(partial, f): a partial object as partial(f)
          // makes, and its BUILD state may set its function and __dict__.
          result.callable = cls.callable;
          result.text = cls.text;
          result.callable_value = true;
          break;
        }
        result.kind = Sym::kObject;
        result.callable = IsDataGlobal(cls) ? &entry : nullptr;
        result.text = cls.kind == Sym::kGlobal ? cls.text : result.text;
        result.setstate_calls = cls.callable != nullptr && cls.callable->setstate_calls_attributes;
        break;
      }
      case CallableKind::kDefaultDict:
        // The factory is called for any missing key: unpickling asks for
        // none, but what the loaded value is handed to may (UUID's and
        // Random's __setstate__, numpy.dtype(d) look keys up). A factory
        // that only builds data (list, partial(defaultdict, list)) is fine.
        CheckGlobalArgs(op, args, name);
        break;
      case CallableKind::kDecoder: {
        if (args.empty()) break;
        const Sym& in = Val(args[0]);
        if (in.kind != Sym::kStr && in.kind != Sym::kBytes) break;
        std::string_view encoding;
        if (args.size() >= 2 && Val(args[1]).kind == Sym::kStr) encoding = Val(args[1]).text;
        result.kind = Sym::kBytes;
        result.truncated = true;  // opaque unless decoded below
        result.text = {};
        // An argument the decoder is not modelled with (b64decode's
        // altchars, zlib.decompress's wbits, an errors handler) changes what
        // it makes: the result stays opaque, and a loader handed it reports
        // its own rule.
        const bool modelled = args.size() <= (entry.decode == "codecs" ? 2u : 1u);
        if (!in.truncated && modelled) {
          if (std::optional<std::string> out = DecodePayload(entry.decode, encoding, in.text, kMaxDecodedLen, budget_)) {
            result.truncated = false;
            result.text = Keep(*out);
          }
        }
        break;
      }
      case CallableKind::kBytesStream:
        if (!args.empty() && Val(args[0]).kind == Sym::kBytes) {
          result.payload = Sym::kStream;
          result.text = Val(args[0]).text;
          result.truncated = Val(args[0]).truncated;
        }
        break;
      case CallableKind::kFileOpener:
      case CallableKind::kLoader:
      case CallableKind::kCaller:
        break;  // not data kinds
    }
    (void)builds_object;
    return New(std::move(result));
  }

  // TargetOk says whether APPEND(S), SETITEM(S), ADDITEMS or BUILD applies
  // to `target` as the loader allows (lists, dicts, sets, an OrderedDict's
  // attributes); on anything else they call a method of the value. Objects
  // and results of named calls are judged by their call.
  bool TargetOk(Opcode code, const Sym& target) const {
    if (target.kind == Sym::kObject || (target.kind == Sym::kUnknown && !target.text.empty())) return true;
    switch (code) {
      case Opcode::kAppend:
      case Opcode::kAppends: return target.kind == Sym::kList;
      case Opcode::kSetItem:
      case Opcode::kSetItems: return target.kind == Sym::kDict;
      case Opcode::kAddItems: return target.kind == Sym::kSet && !target.frozen;
      case Opcode::kBuild: return target.kind == Sym::kDict && target.ordered;
      default: return true;
    }
  }
  void CheckTarget(const PickleOp& op, uint32_t target) {
    const Sym& t = Val(target);
    if (TargetOk(op.code, t)) return;
    if (op.code == Opcode::kBuild && t.kind == Sym::kUnknown) {
      // BUILD on something no call named: its __setstate__ is unknown.
      AddFixed("CKG-F002", "BUILD calls __setstate__ of a value whose class is unknown", op.offset);
      return;
    }
    AddFixed("CKG-F002",
             std::string(op.Info().name) + " on a " + KindName(t.kind) +
                 " calls a method of it (append, extend, __setitem__, add or __setstate__)",
             op.offset);
  }
  void AddWeightTo(uint32_t target, std::span<const uint32_t> items) {
    const uint64_t w = WeightOf(items);
    Sym& t = Val(target);
    if (t.kind == Sym::kScalar) return;  // the unpickler fails there; and scalars are shared (LiteralSlot)
    t.weight = AddWeight(t.weight, w - 1);
  }

  // --- the domain (pickle_machine.h) -------------------------------------
  Result<Id> Literal(const PickleOp& op) {
    const PickleArg& arg = op.arg;
    switch (op.code) {
      case Opcode::kString:
      case Opcode::kBinString:
      case Opcode::kShortBinString:
      case Opcode::kUnicode:
      case Opcode::kBinUnicode:
      case Opcode::kShortBinUnicode:
      case Opcode::kBinUnicode8:
        // Python 2 strings become str under torch.load's encoding='utf-8',
        // and STACK_GLOBAL takes either.
        return New(Text(Sym::kStr, arg));
      case Opcode::kBinBytes:
      case Opcode::kShortBinBytes:
      case Opcode::kBinBytes8:
      case Opcode::kByteArray8:
        return New(Text(Sym::kBytes, arg));
      default:
        return New(ScalarSym(arg));
    }
  }
  static Sym ScalarSym(const PickleArg& arg) {
    Sym s;
    s.kind = Sym::kScalar;
    if (arg.type == PickleArgType::kInt || arg.type == PickleArgType::kBool) s.number = arg.int_value;
    if (arg.type == PickleArgType::kUInt) s.number = static_cast<int64_t>(arg.uint_value);
    s.is_int = arg.type == PickleArgType::kInt ||
               (arg.type == PickleArgType::kUInt && arg.uint_value <= static_cast<uint64_t>(INT64_MAX));
    return s;
  }
  // LiteralSlot: scalars are never changed once made, and a state dict
  // repeats the same few (sizes, strides, offsets, False): the machine
  // shares one value per slot (pickle_machine.h). Ints 0..1023 have a slot
  // each; None, bools, floats and big ints, which the scanner does not tell
  // apart (number 0 or 1, not an int), share two.
  size_t LiteralSlot(const PickleOp& op) const {
    switch (op.code) {
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
      case Opcode::kByteArray8:
        return kMachineNoSlot;
      default: {
        const Sym s = ScalarSym(op.arg);
        if (s.is_int) return s.number >= 0 && s.number < 1024 ? static_cast<size_t>(s.number) : kMachineNoSlot;
        return s.number == 0 || s.number == 1 ? 1024 + static_cast<size_t>(s.number) : kMachineNoSlot;
      }
    }
  }
  // Shareable: not the one opaque value New returns past max_values (nor
  // the first value of a pickle, which is id 0 too).
  bool Shareable(Id id) const { return id != 0; }
  Result<Id> Tuple(const PickleOp&, std::span<const Id> items) {
    Sym s;
    s.kind = Sym::kTuple;
    s.SetItems(static_cast<uint32_t>(items_.size()), static_cast<uint32_t>(items.size()));
    items_.insert(items_.end(), items.begin(), items.end());
    uint64_t w = 1;
    bool inert = true;
    bool callable = false;
    bool callable_value = false;
    bool object = false;
    bool object_value = false;
    for (uint32_t i : items) {
      const Sym& item = Val(i);
      w = AddWeight(w, item.weight);
      inert = inert && item.inert;
      if (!item.inert) {
        callable |= IsCallable(item) || item.holds_callable;
        callable_value |= IsCallableValue(item) || item.holds_callable_value;
        object |= IsForeignObject(item) || item.holds_object;
        object_value |= IsUnlistedObject(item) || item.object_attr;
      }
    }
    s.weight = w;
    s.inert = inert;
    s.holds_callable = callable;  // (the walks see a tuple's items themselves)
    s.holds_callable_value = callable_value;
    s.holds_object = object;
    s.object_attr = object_value;
    return New(std::move(s));
  }
  Result<Id> MakeContainer(Sym::Kind kind, std::span<const Id> items) {
    Sym s;
    s.kind = kind;
    s.weight = WeightOf(items);
    const Id id = New(std::move(s));
    NoteItems(id, items, kind == Sym::kDict);
    return id;
  }
  Result<Id> List(const PickleOp&, std::span<const Id> items) { return MakeContainer(Sym::kList, items); }
  Result<Id> Dict(const PickleOp&, std::span<const Id> items) { return MakeContainer(Sym::kDict, items); }
  // IsCallable: a value a callee may call: a global not known to be data,
  // or a callable value.
  static bool IsCallable(const Sym& v) { return IsCallableValue(v) || (v.kind == Sym::kGlobal && !IsDataGlobal(v)); }
  // PureCall: calling `fn` with `args` (and the keywords dict `keywords`,
  // none or empty) only builds data, now and whenever it is called: fn is a
  // data constructor (or defaultdict), every argument is inert or a data
  // global (list, the factory of a nested defaultdict), and nothing the
  // pickle does later can change that (AdmitToPureCall: the partial keeps
  // references to its arguments, which a later BUILD or SETITEM may fill).
  // IsDataConstructor: a global whose call builds data from its arguments
  // (a constructor of rules/callables.toml, or defaultdict), not named
  // dangerous.
  static bool IsDataConstructor(const Sym& f) {
    return IsDataGlobal(f) && !f.dangerous && f.callable != nullptr &&
           (f.callable->kind == CallableKind::kConstructor || f.callable->kind == CallableKind::kDefaultDict);
  }
  bool PureCall(uint32_t fn, std::span<const uint32_t> args, std::span<const uint32_t> keywords = {}) {
    const Sym& f = Val(fn);
    if (!IsDataConstructor(f)) return false;
    const bool data = std::all_of(args.begin(), args.end(), [&](uint32_t id) {
      const Sym& v = Val(id);
      return v.inert || (IsDataGlobal(v) && !v.dangerous && !v.deferred);
    });
    return data && AdmitToPureCall(args, keywords);
  }
  // PurePartialState: a partial's BUILD state (func, args, kwds, __dict__)
  // that makes it a pure call (PureCall) with no keywords (None, or the
  // empty dict the C partial writes, which it then keeps: that dict is held)
  // and no attributes.
  // DataConstructorState: a partial's BUILD state whose function is still a
  // data constructor (or defaultdict) and whose arguments and keywords hold
  // no callable and no object whose methods a constructor would call
  // (PurePartialState also wants the keywords empty, to judge them once:
  // partial(dict, a=1) is written with its keywords filled).
  bool DataConstructorState(const Sym& st) {
    if (st.kind != Sym::kTuple || st.items_count() < 3) return false;
    const std::span<const uint32_t> parts = Items(st);
    const Sym& f = Val(parts[0]);
    if (!IsDataConstructor(f)) return false;
    return std::none_of(parts.begin() + 1, parts.end(), [&](uint32_t id) {
      const Sym& v = Val(id);
      return IsCallable(v) || v.holds_callable || v.holds_object || IsForeignObject(v);
    });
  }
  bool PurePartialState(const Sym& st) {
    if (st.kind != Sym::kTuple || st.items_count() < 3 || st.items_count() > 4) return false;
    const std::span<const uint32_t> parts = Items(st);
    const Sym& args = Val(parts[1]);
    auto empty = [&](uint32_t id) {
      const Sym& v = Val(id);
      return NoneLike(v) || (v.kind == Sym::kDict && v.weight <= 1);
    };
    if (args.kind != Sym::kTuple || !empty(parts[2]) || (parts.size() == 4 && !empty(parts[3]))) return false;
    const bool keywords = !NoneLike(Val(parts[2]));
    return PureCall(parts[0], Items(args), keywords ? parts.subspan(2, 1) : std::span<const uint32_t>());
  }
  // EmptyMutable: an empty dict, list or set, or a record a data constructor
  // made without arguments (SimpleNamespace(), defaultdict()), with no
  // attributes: what it will hold is all put there later, by opcodes the
  // scan sees. (Not id 0: past max_values every value is that one.)
  bool EmptyMutable(uint32_t id) {
    const Sym& v = Val(id);
    if (id == 0 || v.weight > 1 || !v.inert || v.attrs || v.callable_value || v.payload != Sym::kNoPayload) {
      return false;
    }
    return v.kind == Sym::kDict || v.kind == Sym::kList || v.kind == Sym::kSet ||
           (v.kind == Sym::kUnknown && v.callable != nullptr && IsDataKind(v.callable->kind));
  }
  // AdmitToPureCall: nothing the pickle does afterwards can make `ids` (and
  // `more`) run code when a pure call that holds them is made: each is
  // immutable data (a number, str or bytes, a data global, a tuple of such,
  // whose items the scan keeps and reads here), or an empty value
  // (EmptyMutable), which is then marked held_by_pure_call, so that what is
  // later put into it is judged by this same rule (CheckPureCallHeld). No
  // for anything else: a dict or list with items (the scan does not keep
  // them, and they may be changed later), a record with attributes, an
  // object, an opaque value, a partial, or more than
  // ScanOptions::max_pure_call_values values or tuples nested deeper than
  // kMaxPureCallDepth. A worklist, no recursion; marks only on yes.
  bool AdmitToPureCall(std::span<const uint32_t> ids, std::span<const uint32_t> more = {}) {
    const uint64_t max_values = std::min<uint64_t>(options_.max_pure_call_values, kMaxPureCallValues);
    pure_work_.clear();
    pure_held_.clear();
    if (ids.size() + more.size() > max_values) return false;
    for (uint32_t id : more) pure_work_.push_back({id, 0});
    for (uint32_t id : ids) pure_work_.push_back({id, 0});
    uint64_t visited = 0;
    while (!pure_work_.empty()) {
      if (++visited > max_values) return false;
      const PureWork w = pure_work_.back();
      pure_work_.pop_back();
      const Sym& v = Val(w.id);
      switch (v.kind) {
        case Sym::kScalar:
        case Sym::kStr:
        case Sym::kBytes:
          continue;
        case Sym::kGlobal:
          if (!IsDataGlobal(v) || v.dangerous || v.deferred) return false;
          continue;
        case Sym::kTuple: {
          const std::span<const uint32_t> items = Items(v);
          if (w.depth >= kMaxPureCallDepth || pure_work_.size() + items.size() > max_values) return false;
          for (uint32_t id : items) pure_work_.push_back({id, w.depth + 1});
          continue;
        }
        default:
          break;
      }
      if (!EmptyMutable(w.id)) return false;
      pure_held_.push_back(w.id);
    }
    for (uint32_t id : pure_held_) Val(id).held_by_pure_call = true;
    return true;
  }
  // CheckPureCallHeld: `op` puts `items` into (APPEND(S), SETITEM(S),
  // ADDITEMS) or sets them on (BUILD, _rebuild_from_type_v2's state) a value
  // that a pure call holds (`held`: Sym::held_by_pure_call). The call was
  // judged to build only data while the value was empty; if what it gets
  // now could run code (a callable attribute: dict(ns) calls ns.keys(); a
  // defaultdict's default_factory; anything AdmitToPureCall refuses), the
  // partial runs it whenever it is called, as a defaultdict's factory when
  // a key is looked up (UUID's and Random's __setstate__, numpy.dtype(d)).
  void CheckPureCallHeld(const PickleOp& op, bool held, std::span<const uint32_t> items) {
    if (!held || AdmitToPureCall(items)) return;
    AddFixed("CKG-F081",
             std::string(op.Info().name) +
                 " changes a value that a functools.partial of a data constructor holds, after the partial was judged "
                 "to build only data: calling it (a defaultdict's factory, a callee) meets what this puts there "
                 "(dict(ns) calls ns.keys(); a defaultdict calls its default_factory)",
             op.offset);
  }
  // IsCallableValue: a callable value whose call may run code (not a pure
  // partial).
  static bool IsCallableValue(const Sym& v) { return v.callable_value && !v.pure_call; }
  // HoldsForeign: `v` is, or holds somewhere inside (a list's or set's item,
  // a dict's key or value, a tuple's item, an attribute), an instance of a
  // class not known to be data or a value whose attributes the pickle set:
  // converting or formatting it (str(), repr(), numpy's assignment, torch's
  // f-strings) reaches that value's methods.
  // (A record of a listed class counts only when its attributes hold a
  // callable value or an unlisted instance: its own methods are known.)
  // ForeignWhat names a value HoldsForeign accepts in an F081 message, and
  // ForeignGlobal the global the finding names (the class of an instance).
  static std::string ForeignWhat(const Sym& v) {
    if (!IsForeignObject(v)) {
      return "a " + KindName(v.kind) +
             " holding an instance of a class not known to be data (or a value whose attributes the pickle set)";
    }
    if (v.attrs) return "a " + KindName(v.kind) + " whose attributes the pickle set";
    return "an instance of '" + std::string(v.text) + "'";
  }
  static std::string_view ForeignGlobal(const Sym& v) {
    return IsForeignObject(v) && !v.attrs ? std::string_view(v.text) : std::string_view{};
  }
  static bool HoldsForeign(const Sym& v) {
    const bool listed_record = v.kind != Sym::kObject || v.callable != nullptr || v.known_class;
    if (listed_record && v.attrs && !v.holds_callable_value && !v.object_attr && !v.holds_object) return false;
    return IsForeignObject(v) || v.holds_object || v.object_attr;
  }
  // IsNumpyValue: what a numpy constructor made (an array _reconstruct
  // made, a masked array, a scalar), or an instance of a numpy class
  // (copyreg.__newobj__(numpy.ndarray, shape, 'U1') is a real array).
  static bool IsNumpyValue(const Sym& v) {
    return (v.callable != nullptr && v.callable->global.starts_with("numpy")) ||
           (v.kind == Sym::kObject && v.text.starts_with("numpy"));
  }
  // IsUnlistedObject: an instance of a class the rules do not list (NEWOBJ,
  // OBJ or INST of it): its methods, __call__ among them, are not known.
  static bool IsUnlistedObject(const Sym& v) { return v.kind == Sym::kObject && v.callable == nullptr && !v.known_class; }
  // IsForeignObject: an instance of a class not known to be data, or a value
  // whose attributes the pickle set: iterating, unpacking or hashing it
  // calls methods the pickle chose.
  static bool IsForeignObject(const Sym& v) {
    return (v.kind == Sym::kObject && v.callable == nullptr) || (v.attrs && v.kind != Sym::kScalar);
  }
  // NoteItems: what `items`, put into container `target` (a list's or set's
  // items; with `pairs`, a dict's keys and values in turn), make it hold
  // (Sym::holds_callable, Sym::holds_object). A dict's values are not
  // touched by building it, only its keys (hashed). Any target counts: a
  // dict made by a call (dict(), copyreg.__newobj__(OrderedDict)) and
  // filled by SETITEM is a BUILD state as much as a literal one.
  void NoteItems(uint32_t target, std::span<const uint32_t> items, bool pairs) {
    Sym& t = Val(target);
    if (t.kind == Sym::kScalar || t.kind == Sym::kStr || t.kind == Sym::kBytes) return;
    const bool dict = pairs;
    bool callable = false;
    bool callable_value = false;
    bool object = false;
    bool object_value = false;
    for (size_t i = 0; i < items.size(); ++i) {
      const Sym& v = Val(items[i]);
      callable |= IsCallable(v) || v.holds_callable;
      callable_value |= IsCallableValue(v) || v.holds_callable_value;
      if (!dict || i % 2 == 0) object |= IsForeignObject(v);
      if (dict && i % 2 == 1) object_value |= IsUnlistedObject(v);
    }
    Sym& after = Val(target);
    after.holds_callable |= callable;
    after.holds_callable_value |= callable_value;
    after.object_attr |= object_value;
    after.holds_object |= object;
    if (callable || object) after.inert = false;
  }
  Result<Id> Set(const PickleOp&, std::span<const Id> items, bool frozen) {
    CKG_ASSIGN_OR_RETURN(Id id, MakeContainer(Sym::kSet, items));
    Val(id).frozen = frozen;
    return id;
  }
  Status Append(const PickleOp& op, Id target, std::span<const Id> items) {
    CheckTarget(op, target);
    CheckAttributeCall(op, target);
    CheckPureCallHeld(op, Val(target).held_by_pure_call, items);
    CheckItemsHanded(op, target, items);
    AddWeightTo(target, items);
    NoteItems(target, items, op.code == Opcode::kSetItem || op.code == Opcode::kSetItems);
    return OkStatus();
  }
  // CheckItemsHanded: APPEND(S), SETITEM(S) and ADDITEMS on a numpy value
  // (IsNumpyValue) or on the result of a call the scan does not model hand
  // each item to its __setitem__, and
  // numpy's assignment converts the value (str(), int(), float(): a unicode
  // array's SETITEM runs the value's __str__). An item that is an instance
  // of a class not known to be data, or a value whose attributes the
  // pickle set, then has its methods called (F081). (Instances of dict
  // subclasses the rules do not list, lightning's AttributeDict, take
  // items with dict's own __setitem__: their class is reported already.)
  void CheckItemsHanded(const PickleOp& op, uint32_t target, std::span<const uint32_t> items) {
    const Sym& t = Val(target);
    // (A data constructor's result, dict() or defaultdict(list), takes
    // items with dict's own __setitem__.)
    if (!IsNumpyValue(t) && !(t.kind == Sym::kUnknown && !t.text.empty() && t.callable == nullptr)) return;
    for (uint32_t item : items) {
      const Sym& v = Val(item);
      if (!HoldsForeign(v)) continue;
      AddFixed("CKG-F081",
               std::string(op.Info().name) + " hands " + ForeignWhat(v) + " to a method of " +
                   (t.text.empty() ? KindName(t.kind) : "'" + std::string(t.text) + "'") +
                   ", which may convert or format it (numpy's array assignment calls str() of the value): its "
                   "methods run",
               op.offset, ForeignGlobal(v));
      return;
    }
  }
  Status SetItems(const PickleOp& op, Id target, std::span<const Id> items) { return Append(op, target, items); }
  Status AddItems(const PickleOp& op, Id target, std::span<const Id> items) { return Append(op, target, items); }
  // CheckAttributeCall: APPEND/APPENDS on anything but a list, ADDITEMS on
  // anything but a set and BUILD call a method the unpickler looks up on
  // the instance (append, extend, add, __setstate__); when an earlier BUILD
  // set the target's attributes (Sym::attrs), that method may be any value
  // the pickle put there: a call of it (F002). Benign picklers write a
  // list's or set's items before its BUILD, and one BUILD per object.
  void CheckAttributeCall(const PickleOp& op, uint32_t target) {
    const Sym& t = Val(target);
    if (!t.attrs) return;
    const char* method = nullptr;
    switch (op.code) {
      case Opcode::kAppend:
        if (t.kind != Sym::kList) method = "append";
        break;
      case Opcode::kAppends:
        if (t.kind != Sym::kList) method = "extend (or append)";
        break;
      case Opcode::kAddItems:
        if (t.kind != Sym::kSet) method = "add";
        break;
      case Opcode::kSetItem:
      case Opcode::kSetItems:
        // Looked up on the class, whose own __setitem__ may call the
        // instance's attributes (torch's ModuleDict.__setitem__ calls
        // self.add_module(k, v)); picklers write an object's items before
        // its BUILD.
        if (t.kind != Sym::kDict) method = "__setitem__ (its class's, which may call attributes the state set)";
        break;
      case Opcode::kBuild:
        method = "__setstate__";
        break;
      default:
        break;
    }
    if (method == nullptr) return;
    const std::string what = t.text.empty() ? KindName(t.kind) : "'" + std::string(t.text) + "'";
    AddFixed("CKG-F002",
             std::string(op.Info().name) + " on " + what + " after a BUILD set its attributes: the unpickler calls its " +
                 method + " attribute, which that state may have set to any callable",
             op.offset);
  }

  Result<Id> Global(const PickleOp& op, std::string_view module, std::string_view name) {
    Sym s;
    ClassifyAndReport(std::string(module), std::string(name), op.offset, s);
    return New(std::move(s));
  }
  Result<Id> StackGlobal(const PickleOp& op, Id module, Id name) {
    const Sym& m = Val(module);
    const Sym& n = Val(name);
    // The loader's rule (pickle_semantics.h): both exactly str.
    Result<GlobalName> g = StackGlobalName(StrOperand{m.kind == Sym::kStr, !m.truncated, m.text},
                                           StrOperand{n.kind == Sym::kStr, !n.truncated, n.text});
    Sym s;
    if (g) {
      ClassifyAndReport(std::string(g->module), std::string(g->name), op.offset, s);
    } else {
      AddFixed("CKG-F001",
               "STACK_GLOBAL operands are not two literal strings (a " + KindName(m.kind) + " and a " +
                   KindName(n.kind) + "): the imported name cannot be known",
               op.offset);
      s.kind = Sym::kGlobal;
      s.text = std::string_view("<unresolved>");
    }
    return New(std::move(s));
  }
  // TupleItems: the items of a tuple argument (none for anything else). A
  // view of items_, which no call handler grows.
  std::span<const uint32_t> TupleItems(Id args) {
    const Sym& a = Val(args);
    return a.kind == Sym::kTuple ? Items(a) : std::span<const uint32_t>();
  }
  Result<Id> Reduce(const PickleOp& op, Id callable, Id args) { return Call(op, callable, TupleItems(args), false); }
  Result<Id> NewObj(const PickleOp& op, Id cls, Id args, const Id* kwargs) {
    // NEWOBJ_EX's keyword arguments are arguments too (an empty dict is not).
    if (kwargs != nullptr && (Val(*kwargs).kind != Sym::kDict || Val(*kwargs).weight > 1)) {
      const std::span<const uint32_t> items = TupleItems(args);
      call_args_.assign(items.begin(), items.end());
      call_args_.push_back(*kwargs);
      return Call(op, cls, call_args_, true);
    }
    return Call(op, cls, TupleItems(args), true);
  }
  Result<Id> Obj(const PickleOp& op, Id cls, std::span<const Id> args) { return Call(op, cls, args, true); }
  Result<Id> Inst(const PickleOp& op, std::string_view module, std::string_view name, std::span<const Id> args) {
    Sym cls;
    ClassifyAndReport(std::string(module), std::string(name), op.offset, cls);
    const uint32_t target = New(std::move(cls));
    return Call(op, target, args, true);
  }
  Status Build(const PickleOp& op, Id obj, Id state) {
    CheckTarget(op, obj);
    CheckAttributeCall(op, obj);
    // An object of a class not known to be data, given a state that is not
    // a plain dict (or the (dict, slots) pair the default __setstate__
    // takes): only a __setstate__ of that class accepts it, and it runs.
    const Sym& target = Val(obj);
    if (target.kind == Sym::kObject && target.callable == nullptr) {
      const Sym& st = Val(state);
      auto plain = [&](uint32_t id) {
        const Sym& v = Val(id);
        return v.kind == Sym::kDict || NoneLike(v);
      };
      const bool ok = st.kind == Sym::kDict ||
                      (st.kind == Sym::kTuple && st.items_count() == 2 && plain(Items(st)[0]) && plain(Items(st)[1]));
      if (!ok) {
        const std::string cls(target.text);
        AddFixed("CKG-F080",
                 "BUILD gives an instance of '" + cls + "' a " + KindName(st.kind) +
                     " state, which only its own __setstate__ accepts: that method runs",
                 op.offset, cls);
      }
    }
    CheckBuildState(op, obj, state);
    CheckNumpyState(op, obj, state);
    CheckPureCallHeld(op, Val(obj).held_by_pure_call, std::span<const uint32_t>(&state, 1));
    // A dict state (or a (dict or None, dict or None) slots pair) sets the
    // instance's attributes (Sym::attrs), and so does the fourth item of a
    // functools.partial's state (its __dict__). Scalars are shared and
    // never take attributes (the unpickler fails there).
    Sym& t = Val(obj);
    // A partial's state sets its function, arguments and keywords (as
    // pickle writes every partial).
    const bool was_pure = t.pure_call;
    t.pure_call = t.callable_value && t.callable != nullptr && t.callable->kind == CallableKind::kPartial &&
                  PurePartialState(Val(state));
    if (was_pure && !t.pure_call && !DataConstructorState(Val(state))) {
      // pickle writes a partial's own function again in its state: a state
      // that makes a partial of a data constructor call something else
      // rewrites, in place, a callable already judged as data, and whatever
      // holds it (a record's attribute, an object's state, a container) was
      // judged on what it was.
      AddFixed("CKG-F002",
               "BUILD rewrites a functools.partial of a data constructor into a call of something else: what "
               "already holds it (an attribute, a state, a container) now holds that call",
               op.offset);
    }
    const Sym& st = Val(state);
    const bool partial_dict = t.callable != nullptr && t.callable->kind == CallableKind::kPartial &&
                              st.kind == Sym::kTuple && st.items_count() >= 4 &&
                              Val(Items(st)[3]).kind != Sym::kScalar;
    // A state computed by a call (dict(...), tuple(...)) is taken for one
    // of those: what it holds is not known item by item.
    // So is an object a call made and SETITEM filled (copyreg.__newobj__(
    // OrderedDict)): BUILD takes any mapping as a dict state.
    if (t.kind != Sym::kScalar && t.kind != Sym::kStr && t.kind != Sym::kBytes &&
        (st.kind == Sym::kDict || (st.kind == Sym::kTuple && st.items_count() == 2) || partial_dict ||
         st.kind == Sym::kUnknown || st.kind == Sym::kObject)) {
      t.attrs = true;
      t.inert = false;
      attrs_seen_ = true;
      // What its attributes hold, the object holds (Armed): a holder that
      // is itself put somewhere (a numpy array, a persistent id, a state)
      // carries it there.
      const StateSplit split = StateParts(state);
      for (size_t i = 0; i < split.size; ++i) {
        const Sym& part = Val(split.parts[i]);
        Sym& o = Val(obj);
        o.holds_callable |= part.holds_callable;
        o.holds_callable_value |= part.holds_callable_value;
        o.object_attr |= part.object_attr;
      }
    }
    return OkStatus();
  }
  // CheckNumpyState: numpy's __setstate__ of an array, a masked array or a
  // scalar converts the items of its state tuple (a MaskedArray's fill
  // value with str(), a dtype's fields): an item that is an instance of a
  // class not known to be data, or a value whose attributes the pickle
  // set, has its methods called (F081).
  void CheckNumpyState(const PickleOp& op, uint32_t obj, uint32_t state) {
    const Sym& t = Val(obj);
    if (!IsNumpyValue(t)) return;
    const Sym& st = Val(state);
    if (st.kind != Sym::kTuple) return;
    for (uint32_t item : Items(st)) {
      const Sym& v = Val(item);
      if (!HoldsForeign(v)) continue;
      AddFixed("CKG-F081",
               "BUILD gives a numpy value (" + std::string(t.callable != nullptr ? t.callable->global : std::string(t.text)) +
                   ") a state holding " + ForeignWhat(v) +
                   ": numpy's __setstate__ converts its state's items (a masked array's fill value with str()), "
                   "calling its methods",
               op.offset, ForeignGlobal(v));
      return;
    }
  }
  // CheckBuildState: what a BUILD does with its state beyond setting
  // attributes. pickle's pure-Python unpickler runs state.items() (looked up
  // on the instance) when the state is not a plain dict, and a state that
  // is an instance of a class not known to be data has its methods called
  // by any reader (F081); and an instance of a class whose own __setstate__
  // calls the instance's attributes (rules/callables.toml's setstate =
  // "calls_attributes": torch.optim.Optimizer's calls
  // self._hook_for_profile() right after it set the state's) given a state
  // that holds a callable (a literal's item, or what dict(...) or
  // tuple(...) built from one) calls it (F002); and any instance given a
  // partial object or bound method as an attribute may call it (F002,
  // below).
  void CheckBuildState(const PickleOp& op, uint32_t obj, uint32_t state) {
    const StateSplit split = StateParts(state);
    const Sym& t = Val(obj);
    for (size_t i = 0; i < split.size; ++i) {
      const Sym& part = Val(split.parts[i]);
      if (part.attrs && part.kind != Sym::kScalar) {
        AddFixed("CKG-F002",
                 "BUILD's state is a " + KindName(part.kind) +
                     " whose attributes the pickle set: pickle's unpickler calls its items attribute",
                 op.offset);
      } else if (part.kind == Sym::kObject && part.callable == nullptr) {
        const std::string cls(part.text);
        AddFixed("CKG-F081",
                 "BUILD's state is an instance of '" + cls +
                     "': the unpickler (or a __setstate__) calls its methods (items, keys, iteration)",
                 op.offset, cls);
      }
      // A callable value (a partial object, a bound method) among the
      // attributes BUILD gives an instance, under any name (or in a state
      // computed by a call): it may shadow a method the class's own methods
      // call on the instance (a pure-data record's: Namespace's repr calls
      // self._get_args(), Counter's self.most_common(); a listed class's:
      // Optimizer.__setstate__ calls self.defaults.setdefault(...); numpy
      // calls __array__ to convert any object), so printing, formatting or
      // converting the value, as torch's errors and numpy's SETITEM do,
      // calls it. A name the rules match by a wildcard may be another class
      // again (torch.optim.lr_scheduler.Counter is collections.Counter). A
      // partial's own state is judged in Build (PurePartialState,
      // DataConstructorState).
      // (OrderedDict and Counter are on the allowlist: their results are
      // ordered dicts.)
      const bool data_record = (t.callable != nullptr && t.callable->kind == CallableKind::kConstructor) ||
                               (t.kind == Sym::kDict && t.ordered);
      const bool instance = !t.callable_value && t.kind != Sym::kScalar && t.kind != Sym::kStr && t.kind != Sym::kBytes;
      // An instance of a class the rules list (a record, or a class whose
      // own methods are known to call attributes) given, as an attribute,
      // an instance of a class they do not list: that may be a callable
      // object (its class's __call__: joblib's BatchedCalls, loky's
      // _CallItem run the calls they hold). Instances of unlisted classes
      // holding each other (a model's submodules) are not counted: their
      // own methods are not known either way.
      const bool listed = data_record || t.known_class || t.setstate_calls;
      if (instance && (part.holds_callable_value || (listed && part.object_attr))) {
        const std::string cls = t.text.empty() ? std::string(KindName(t.kind)) : std::string(t.text);
        const std::string what = part.holds_callable_value
                                     ? "a callable value (a functools.partial, a bound method)"
                                     : "an instance of a class the rules do not list (it may define __call__)";
        AddFixed("CKG-F002",
                 "BUILD gives " + (data_record ? "a pure-data record of '" + cls + "'" : "an instance of '" + cls + "'") +
                     " an attribute holding " + what +
                     ": it may shadow a method that the class's own methods call on the instance "
                     "(argparse.Namespace's repr calls self._get_args(), Counter's self.most_common(), "
                     "Optimizer.__setstate__ self._hook_for_profile(), numpy calls __array__ to convert it), so "
                     "printing, formatting or converting the value, as torch and numpy do, calls it",
                 op.offset, cls);
        continue;
      }
      // (A callable value in the state of an instance of a class the rules
      // do not list, whose __setstate__ is not known, is the case above.)
      if (t.setstate_calls && part.holds_callable) {
        const std::string cls(t.text);
        AddFixed("CKG-F002",
                 "BUILD gives an instance of '" + cls + "' a state that holds a callable: its class's __setstate__ "
                 "calls what the state sets",
                 op.offset, cls);
      }
    }
  }
  Result<Id> Ext(const PickleOp& op, uint64_t code) {
    AddFixed("CKG-F003",
             std::string(op.Info().name) + " fetches a global from the copyreg extension registry (code " + Num(code) +
                 "): what it names depends on the loading process",
             op.offset);
    return New(Sym{});
  }
  Result<Id> PersistentLoad(const PickleOp& op, const Id* pid) {
    if (pid != nullptr) {
      CheckRecord(op, *pid);
      CheckStorageLocation(op, *pid);
      CheckPidItems(op, *pid);
    }
    return New(Sym{});
  }
  // CheckPidItems: torch's persistent_load indexes the persistent id
  // (saved_id[0]), compares its typename with 'storage' and formats it in
  // its assert message, looks its key up in a dict (hash, ==), multiplies
  // its count and reads its storage type's dtype. An id, or an item of it,
  // that is an instance of a class not known to be data or a value whose
  // attributes the pickle set has those methods chosen by the pickle (F081).
  void CheckPidItems(const PickleOp& op, uint32_t pid) {
    const Sym& t = Val(pid);
    const Sym* bad = IsForeignObject(t) ? &t : nullptr;
    if (bad == nullptr && t.kind == Sym::kTuple) {
      for (uint32_t item : Items(t)) {
        if (HoldsForeign(Val(item))) {
          bad = &Val(item);
          break;
        }
      }
    }
    if (bad == nullptr) return;
    AddFixed("CKG-F081",
             std::string(op.Info().name) + ": the persistent id " + (bad == &t ? "is " : "holds ") + ForeignWhat(*bad) +
                 ": torch's persistent_load indexes, compares, formats and hashes it (its methods run)",
             op.offset, ForeignGlobal(*bad));
  }
  // CheckStorageLocation: torch's persistent_load (zip and legacy formats)
  // hands a storage id's location to restore_location, whose CUDA
  // deserializer calls location.startswith('cuda'): a method looked up on
  // the instance. A location that is neither str nor bytes, but a value a
  // call or a BUILD made, has that method chosen by the pickle (F002).
  void CheckStorageLocation(const PickleOp& op, uint32_t pid) {
    const Sym& t = Val(pid);
    if (t.kind != Sym::kTuple || t.items_count() < 5 || t.items_count() > 6) return;
    const std::span<const uint32_t> items = Items(t);
    const Sym& first = Val(items[0]);
    if ((first.kind != Sym::kStr && first.kind != Sym::kBytes) || first.text != "storage") return;
    const Sym& location = Val(items[3]);
    if (location.kind != Sym::kUnknown && location.kind != Sym::kObject && !location.attrs) return;
    AddFixed("CKG-F002",
             "a storage's persistent id has a " + KindName(location.kind) +
                 " as its location: torch's persistent_load calls location.startswith('cuda'), a method of a value "
                 "the pickle built",
             op.offset);
  }
  Result<Id> Buffer(const PickleOp&, const Id* target) { return target != nullptr ? *target : New(Sym{}); }
  Id Opaque() { return New(Sym{}); }
  // Discard reclaims a literal the pickle dropped right after building it
  // (NONE POP...): nothing can refer to it any more.
  void Discard(Id id) {
    if (id == 0 || id + 1 != values_.size()) return;
    const Sym& s = values_[id];
    // (The machine never passes a shared scalar, LiteralSlot.)
    if (s.kind == Sym::kScalar || s.kind == Sym::kStr || s.kind == Sym::kBytes) values_.pop_back();
  }
  // The C unpickler fails here (a stack underflow, a missing MARK, a memo
  // key never stored): what torch ran before stays reported, and the scan
  // reads on in case another unpickler would not have stopped.
  void Malformed(const Error& e) {
    if (sniffed_) return;
    AddFixed("CKG-F020", "the unpickler fails here (" + e.ToString() + "); the scan reads on", e.offset);
  }

  // CheckRecord checks a torch storage persistent id of data.pkl against its
  // data/<key> record (the container layer's rule, applied as the scan meets
  // each id instead of decoding data.pkl a second time).
  void CheckRecord(const PickleOp& op, uint32_t pid) {
    if (records_ == nullptr || *entry_ != records_entry_) return;
    const Sym& t = Val(pid);
    if (t.kind != Sym::kTuple || t.items_count() < 5 || t.items_count() > 6) return;
    const std::span<const uint32_t> pid_items = Items(t);
    PidItem items[6];
    for (size_t i = 0; i < pid_items.size(); ++i) {
      const Sym& x = Val(pid_items[i]);
      PidItem& item = items[i];
      if (x.kind == Sym::kStr && !x.truncated) {
        item.kind = PidItem::kStr;
        item.text = x.text;
      } else if (x.kind == Sym::kScalar && x.is_int) {
        item.kind = PidItem::kInt;
        item.number = x.number;
      } else if (x.kind == Sym::kGlobal && x.text.starts_with("torch.")) {
        item.kind = PidItem::kGlobal;
        item.module = "torch";
        item.name = x.text.substr(6);
        item.storage_type = x.action == static_cast<uint8_t>(AllowAction::kStorageType);
      }
    }
    Result<StoragePid> parsed = ParseStoragePid(std::span<const PidItem>(items, pid_items.size()));
    if (!parsed) return;  // the loader refuses it; nothing to check against a record
    // Each key is checked once: a record found is marked by its index (one
    // bit per entry, no string kept per tensor); a key with no record is
    // remembered by name.
    record_name_.assign(records_->prefix).append("/data/").append(parsed->key);
    auto it = records_->entry_index.find(record_name_);
    std::optional<size_t> index;
    if (it != records_->entry_index.end()) {
      index = it->second;
      if (checked_records_[*index]) return;
      checked_records_[*index] = true;
    } else if (!missing_keys_.insert(std::string(parsed->key)).second) {
      return;
    }
    if (std::optional<Anomaly> a = CheckStorageRecord(*records_, index, record_name_, parsed->module, parsed->type,
                                                      parsed->key, parsed->numel, op.offset)) {
      AddAnomaly(*a, a->entry);
    }
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
      case Sym::kTensor: return "tensor";
    }
    return "value";
  }

  const RuleSet& Rules() {
    if (rules_ == nullptr) rules_ = &RuleSet::Builtin();
    return *rules_;
  }

  const RuleSet* rules_;
  const ScanOptions& options_;
  FileReport& report_;
  Budget& budget_;
  std::optional<Error> budget_error_;
  bool torchscript_ = false;
  bool overflow_reported_ = false;
  // A BUILD (or _rebuild_from_type_v2) gave some value attributes
  // (Sym::attrs): calls then look for such values among their arguments.
  bool attrs_seen_ = false;
  bool legacy_stream_ = false;  // the stream torch.load reads as its legacy format (CheckLegacyRoot)
  // Calls that _rebuild_from_type_v2 makes, being judged (RebuildFromTypeCall).
  static constexpr uint32_t kMaxInnerCalls = 8;
  uint32_t inner_calls_ = 0;
  // A callable value (Sym::callable_value) was made: calls then look for
  // one among their arguments.
  bool callable_values_seen_ = false;
  // The stream being scanned.
  const std::string* entry_ = nullptr;
  uint32_t depth_ = 0;
  bool sniffed_ = false;
  std::set<std::string> seen_;
  bool capped_ = false;                           // more than kMaxFindings: the F040 note is listed
  Severity worst_listed_ = Severity::kInfo;        // the highest severity among the listed findings
  SymStore values_;
  std::vector<uint32_t> items_;      // the items of every tuple (Sym::items_begin())
  std::vector<uint32_t> call_args_;  // NEWOBJ_EX's arguments with its keywords
  // AdmitToPureCall's worklist and the empty values it found (reused).
  struct PureWork {
    uint32_t id;
    uint32_t depth;
  };
  std::vector<PureWork> pure_work_;
  std::vector<uint32_t> pure_held_;
  std::deque<std::string> texts_;  // copies that Sym::text views
  std::deque<Nested> nested_;
  std::unordered_map<std::string, Classified> classes_;
  const Container* records_ = nullptr;  // the torch archive whose data.pkl is being scanned
  std::string records_entry_;
  std::vector<bool> checked_records_;             // by index in records_->entries
  std::unordered_set<std::string> missing_keys_;  // keys with no record, reported once
  std::string record_name_;                       // <prefix>/data/<key>, reused
};

}  // namespace

ContainerLimits ScanContainerLimits() {
  ContainerLimits limits;
  limits.zip.max_crc_check_len = 0;  // records are not read; pickle entries are checked as they are read
  limits.check_torch_records = false;  // the scan checks records at each BINPERSID instead
  return limits;
}

namespace {

// ScanOpened is ScanBytes; `opened`, when set, runs once the container is
// open (before any pickle is scanned).
FileReport ScanOpened(Bytes data, const std::string& path, const ScanOptions& options,
                      const std::function<void()>& opened) {
  FileReport report;
  report.path = path;
  try {
    // One budget for the whole file: the container layer, every pickle and
    // every nested pickle charge it.
    Budget budget(options.budget);
    const Container root = OpenContainer(data, options.container, &budget);
    if (opened) opened();
    report.format = std::string(ContainerFormatName(root.format));
    Scanner scanner(options.rules, options, report, budget);
    std::optional<Error> first_error;
    ForEachContainer(root, [&](const Container& c, const std::string& nested) {
      scanner.ScanContainer(c, nested);
      // A pickle stream that stops parsing was still scanned up to the break
      // (CKG-F020); other formats' errors mean part of the file was not read.
      const bool stream = c.format == ContainerFormat::kPickle || c.format == ContainerFormat::kTorchLegacy;
      // A budget error is always the scan's error: part of the file was
      // not read.
      if (c.error && !first_error && (!stream || !c.error->limit.empty())) {
        first_error = *c.error;
        if (!nested.empty()) first_error->where = nested + (first_error->where.empty() ? "" : " > " + first_error->where);
      }
    });
    if (scanner.budget_error() && !first_error) first_error = *scanner.budget_error();
    // A tar or 7z archive is judged by its members: read to its end with at
    // least one model file inside, it is not an error (its members' findings
    // decide); one holding no model file is not a model file either.
    const bool archive_of_models =
        root.archive && std::any_of(root.nested.begin(), root.nested.end(), [](const NestedContainer& n) {
          return n.container->format != ContainerFormat::kUnknown;
        });
    if (root.format == ContainerFormat::kUnknown && !archive_of_models) {
      first_error = Error{ErrorCode::kUnsupportedFormat, 0, "", "not a model file: " + root.reason};
    }
    report.error = first_error;
  } catch (const std::bad_alloc&) {
    report.error = Error{ErrorCode::kLimitExceeded, 0, "", "out of memory"};
  }
  report.verdict = VerdictOf(report.findings, report.error);
  return report;
}

}  // namespace

FileReport ScanBytes(Bytes data, const std::string& path, const ScanOptions& options) {
  return ScanOpened(data, path, options, nullptr);
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
  // The directory, local headers and records read to open the container
  // need not stay resident while the pickles are scanned (the pages are
  // read again, from the page cache, where a pickle is).
  FileReport report = ScanOpened(file->data(), path, options, [&] { file->DropResident(); });
  // Findings in torn bytes are about no file that ever existed: one error.
  if (Status unchanged = file->CheckUnchanged(); !unchanged) {
    report.findings.clear();
    report.error = unchanged.error();
    report.verdict = Verdict::kError;
  }
  return report;
}

}  // namespace ckptguard::scanner

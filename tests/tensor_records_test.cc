// Tensor records (pickle_machine.h MachineTensorRecord): a state dict's
// tensor, pickled as torch.save pickles it, read whole instead of opcode by
// opcode. Read either way, a pickle must leave the same run: the same values,
// tensors and storages, the same bytes accounted, the same budget charged,
// the same error at the same opcode and the same limit reached first. These
// tests build state dicts as torch's pickler writes them (every variation of
// a record the reader takes, and the ones it must leave to the opcodes),
// run each both ways under a sweep of every limit, and check that real
// files made by torch load the same both ways and take the whole-record path.
#define BOOST_TEST_MODULE tensor_records_test
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/vm.h"
#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard {
namespace {

using namespace std::string_literals;

Bytes AsBytes(const std::string& s) { return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

// One tensor of a state dict, as torch.save would pickle it.
struct Record {
  std::string key;
  std::string storage;                // the storage's key; an earlier record's: a view of its storage
  std::string type = "FloatStorage";  // torch.<type>
  int64_t numel = 1;                  // of the storage
  int64_t offset = 0;
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
  bool grad = false;
};

// TorchPickler writes a state dict as pickle.Pickler(protocol=2) writes
// torch.save's: every new object memoized with BINPUT (LONG_BINPUT from key
// 256), a repeated one (the rebuild function, 'storage', the storage types,
// 'cpu', OrderedDict, a storage key used again) fetched with BINGET or
// LONG_BINGET, ints as BININT1, BININT2 or BININT, tuples of up to three
// items as TUPLE1-3 and longer ones as MARK ... TUPLE, items in SETITEMS
// batches of 1000.
class TorchPickler {
 public:
  std::string Write(const std::vector<Record>& records) {
    out_ = "\x80\x02}"s;
    Put();
    for (size_t i = 0; i < records.size(); ++i) {
      if (i % 1000 == 0) out_ += i == 0 ? "(" : "u(";
      const Record& r = records[i];
      Text(r.key, "");
      Global("torch._utils", "_rebuild_tensor_v2");
      out_ += "((";
      Text("storage", "storage");
      Global("torch", r.type);
      Text(r.storage, "key:" + r.storage);
      Text("cpu", "cpu");
      Int(r.numel);
      out_ += "t";
      Put();
      out_ += "Q";
      Int(r.offset);
      Ints(r.size);
      Ints(r.stride);
      out_ += r.grad ? "\x88" : "\x89";
      Global("collections", "OrderedDict");
      out_ += ")R";
      Put();
      out_ += "t";
      Put();
      out_ += "R";
      Put();
    }
    if (!records.empty()) out_ += "u";
    return out_ + ".";
  }

 private:
  static std::string U32(uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  }
  void Put() {
    const uint32_t key = next_++;
    out_ += key < 256 ? "q"s + static_cast<char>(key) : "r" + U32(key);
  }
  void Get(uint32_t key) { out_ += key < 256 ? "h"s + static_cast<char>(key) : "j" + U32(key); }
  // A str; `identity` non-empty: the same object wherever it is used again.
  void Text(const std::string& text, const std::string& identity) {
    if (!identity.empty()) {
      if (auto it = memo_.find(identity); it != memo_.end()) return Get(it->second);
      memo_[identity] = next_;
    }
    out_ += "X" + U32(static_cast<uint32_t>(text.size())) + text;
    Put();
  }
  void Global(const std::string& module, const std::string& name) {
    const std::string identity = "global:" + module + "." + name;
    if (auto it = memo_.find(identity); it != memo_.end()) return Get(it->second);
    memo_[identity] = next_;
    out_ += "c" + module + "\n" + name + "\n";
    Put();
  }
  void Int(int64_t v) {
    if (v >= 0 && v <= 0xff) {
      out_ += "K"s + static_cast<char>(v);
    } else if (v >= 0 && v <= 0xffff) {
      out_ += "M"s + static_cast<char>(v & 0xff) + static_cast<char>(v >> 8);
    } else {
      out_ += "J" + U32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    }
  }
  void Ints(const std::vector<int64_t>& v) {
    if (v.empty()) {
      out_ += ")";
      return;
    }
    if (v.size() > 3) out_ += "(";
    for (int64_t x : v) Int(x);
    out_ += v.size() == 1 ? "\x85" : v.size() == 2 ? "\x86" : v.size() == 3 ? "\x87" : "t";
    Put();
  }

  std::string out_;
  uint32_t next_ = 0;
  std::map<std::string, uint32_t> memo_;
};

std::vector<int64_t> Contiguous(const std::vector<int64_t>& size) {
  std::vector<int64_t> stride(size.size());
  int64_t s = 1;
  for (size_t i = size.size(); i-- > 0;) {
    stride[i] = s;
    s *= std::max<int64_t>(size[i], 1);
  }
  return stride;
}

int64_t Numel(const std::vector<int64_t>& size) {
  int64_t n = 1;
  for (int64_t d : size) n *= d;
  return n;
}

// Variety: records of every shape a reader takes whole (scalars, 1 to 5
// dimensions, ints of one, two and four bytes, offsets, broadcast and empty
// views, requires_grad, a second storage type) and the ones it leaves to
// the opcodes (the first of each kind, a storage used again), past memo key
// 256 so that the long memo opcodes appear.
std::vector<Record> Variety(size_t n) {
  const std::vector<std::vector<int64_t>> shapes = {
      {}, {5}, {3, 4}, {2, 3, 4}, {2, 3, 2, 2}, {300}, {70000}, {1100, 2}, {1, 2, 1, 2, 1}, {0, 3}};
  std::vector<Record> out;
  for (size_t i = 0; i < n; ++i) {
    Record r;
    r.key = "layer." + std::to_string(i) + ".weight";
    r.storage = std::to_string(i);
    r.size = shapes[i % shapes.size()];
    r.stride = Contiguous(r.size);
    r.numel = std::max<int64_t>(Numel(r.size), 1);
    if (i % 7 == 3) {  // a view at an offset into a larger storage
      r.offset = 2000;
      r.numel += 2000;
    }
    if (i % 11 == 5 && !r.size.empty()) r.stride[0] = 0;  // broadcast along the first dimension
    if (i % 13 == 6) r.grad = true;
    if (i % 9 == 4) r.type = "HalfStorage";
    if (i % 17 == 8 && i > 0) {  // the previous record's storage again (tied weights)
      r = out.back();
      r.key = "layer." + std::to_string(i) + ".tied";
    }
    out.push_back(r);
  }
  return out;
}

uint64_t ElementBytes(const std::string& type) { return type == "HalfStorage" ? 2 : 4; }

// The zip torch.save would write for `records` (record bytes: a pattern).
std::string TorchZip(const std::vector<Record>& records) {
  std::vector<testing::ZipItem> items;
  items.push_back(testing::ZipItem{"archive/data.pkl", TorchPickler().Write(records)});
  std::map<std::string, bool> seen;
  for (const Record& r : records) {
    if (seen[r.storage]) continue;
    seen[r.storage] = true;
    std::string data(static_cast<size_t>(r.numel) * ElementBytes(r.type), '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 31 + r.storage.size()) & 0xff);
    items.push_back(testing::ZipItem{"archive/data/" + r.storage, data});
  }
  items.push_back(testing::ZipItem{"archive/version", "3\n"});
  return testing::BuildZip(items);
}

// --- one run of the VM, described whole ----------------------------------

// A resolver as the loader's: one storage per key, records of
// numel x element bytes; an unknown key, a record of another length or a key
// declared again differently fail.
struct Records {
  std::map<std::string, int64_t> numel;  // what each key's record holds, in elements
  std::map<std::string, uint32_t> made;
  std::string bytes = std::string(1 << 20, '\0');
  StorageResolver Resolver(VmState& state) {
    return [&state, this](const StorageRequest& r) -> Result<uint32_t> {
      const std::string key(r.key);
      if (auto it = made.find(key); it != made.end()) {
        const Storage& s = state.storages[it->second];
        if (s.dtype != r.dtype || s.num_elements != static_cast<uint64_t>(r.num_elements)) {
          return MakeError(ErrorCode::kMalformed, r.offset, "storage '" + key + "' declared twice differently");
        }
        return it->second;
      }
      auto found = numel.find(key);
      if (found == numel.end()) return MakeError(ErrorCode::kMalformed, r.offset, "no record " + key);
      if (found->second != r.num_elements) return MakeError(ErrorCode::kMalformed, r.offset, "record " + key + " size");
      Storage s;
      s.key = r.key;
      s.location = r.location;
      s.dtype = r.dtype;
      s.num_elements = static_cast<uint64_t>(r.num_elements);
      s.bytes = AsBytes(bytes).first(static_cast<size_t>(r.num_elements) * DTypeSize(r.dtype));
      state.storages.push_back(s);
      made[key] = static_cast<uint32_t>(state.storages.size() - 1);
      return made[key];
    };
  }
};

std::string DimsText(const Dims& d) {
  std::string out = "(";
  for (int64_t x : d) out += std::to_string(x) + ",";
  return out + ")";
}

// RunBothWays' description of a run: the root or the error, then every
// value, tensor and storage, the bytes accounted and each budget total.
struct Run {
  std::string text;
  uint64_t records = 0;  // tensor records read whole
};

Run RunOnce(const std::string& pickle, const Records& records_in, VmOptions options, const BudgetLimits& budget_limits) {
  VmState state;
  Records records = records_in;
  const StorageResolver resolver = records.Resolver(state);
  Budget budget(budget_limits);
  options.budget = &budget;
  const Result<ValueId> root = RunPickle(AsBytes(pickle), 100, "data.pkl", state, resolver, options);
  std::string out;
  for (BudgetKind kind : {BudgetKind::kOpcodes, BudgetKind::kValues, BudgetKind::kMemoSlots, BudgetKind::kNesting}) {
    out += "budget " + std::to_string(static_cast<int>(kind)) + " " + std::to_string(budget.used(kind)) + "\n";
  }
  // A failed run's values are dropped by every caller; its error and the
  // file's budget (which later pickles of the file charge on) are what is left.
  if (!root) return Run{out + "error " + root.error().ToString(), state.tensor_records};
  out += "root " + std::to_string(*root);
  out += "\nvalues " + std::to_string(state.values.size());
  for (size_t i = 0; i < state.values.size(); ++i) {
    const Value& v = state.values.Get(static_cast<ValueId>(i));
    out += "\n " + std::to_string(i) + ": " + std::string(ValueKindName(v.kind)) + " " + std::to_string(v.index) + " " +
           std::to_string(v.int_value) + " " + std::to_string(v.float_value) + " " + std::to_string(v.ordered_dict) +
           std::to_string(v.frozen) + std::to_string(v.byte_array) + " " + std::string(DTypeName(v.dtype)) + " '" +
           std::string(v.text.view()) + "' [";
    for (ValueId item : v.items) out += std::to_string(item) + ",";
    out += "] attrs [";
    for (ValueId item : state.values.Attrs(static_cast<ValueId>(i))) out += std::to_string(item) + ",";
    out += "]";
  }
  for (size_t i = 0; i < state.tensors.size(); ++i) {
    const Tensor& t = state.tensors[i];
    out += "\ntensor " + std::to_string(i) + ": storage " + std::to_string(t.storage) + " " +
           std::string(DTypeName(t.dtype)) + " " + DimsText(t.shape) + " " + DimsText(t.stride) + " +" +
           std::to_string(t.storage_offset) + " n" + std::to_string(t.num_elements) + " grad " +
           std::to_string(t.requires_grad);
  }
  for (size_t i = 0; i < state.storages.size(); ++i) {
    const Storage& s = state.storages[i];
    out += "\nstorage " + std::to_string(i) + ": '" + std::string(s.key.view()) + "' " +
           std::string(DTypeName(s.dtype)) + " x" + std::to_string(s.num_elements) + " @" + std::string(s.location.view());
  }
  out += "\nalloc " + std::to_string(state.alloc_bytes);
  return Run{out, state.tensor_records};
}

// RunBothWays runs `pickle` with tensor records and without, checks that
// both leave the same run, and returns how many records were read whole.
uint64_t RunBothWays(const std::string& pickle, const Records& records, const VmOptions& options,
                     const BudgetLimits& budget = {}, const std::string& what = "") {
  VmOptions whole = options;
  whole.tensor_records = true;
  VmOptions each = options;
  each.tensor_records = false;
  const Run a = RunOnce(pickle, records, whole, budget);
  const Run b = RunOnce(pickle, records, each, budget);
  BOOST_TEST(b.records == 0u);
  if (a.text != b.text) {
    size_t at = 0;
    while (at < a.text.size() && at < b.text.size() && a.text[at] == b.text[at]) ++at;
    const size_t from = a.text.rfind('\n', at) == std::string::npos ? 0 : a.text.rfind('\n', at);
    BOOST_ERROR(what << ": whole records and opcodes differ at\n  whole:   " << a.text.substr(from, 200)
                     << "\n  opcodes: " << b.text.substr(from, 200));
  }
  return a.records;
}

Records RecordsOf(const std::vector<Record>& records) {
  Records out;
  for (const Record& r : records) out.numel[r.storage] = r.numel;
  return out;
}

BOOST_AUTO_TEST_CASE(a_state_dict_reads_whole_records_and_leaves_what_its_opcodes_leave) {
  const std::vector<Record> records = Variety(120);
  const uint64_t whole = RunBothWays(TorchPickler().Write(records), RecordsOf(records), VmOptions{}, {}, "variety");
  // All but the first of each kind (a new storage type's GLOBAL) and the
  // tied storages (a storage key fetched from the memo) are read whole.
  BOOST_TEST(whole > 90u);
  BOOST_TEST(whole < 120u);
}

BOOST_AUTO_TEST_CASE(records_that_fail_fail_as_their_opcodes_do) {
  // Each file breaks one record in the middle of the state dict.
  const std::vector<Record> good = Variety(30);
  struct Case {
    const char* what;
    std::function<void(std::vector<Record>&, Records&)> change;
  };
  const std::vector<Case> cases = {
      {"view past its storage", [](auto& r, auto&) { r[21].offset = r[21].numel; }},
      {"no record for the storage", [](auto&, auto& recs) { recs.numel.erase("21"); }},
      {"record of another size", [](auto&, auto& recs) { recs.numel["21"] += 1; }},
      {"size and stride disagree", [](auto& r, auto&) { r[21].stride.push_back(1); }},
      {"storage declared again differently", [](auto& r, auto&) { r[22].storage = r[21].storage; }},
      {"negative size", [](auto& r, auto&) { r[21].size = {-1}; r[21].stride = {1}; }},
      {"storage key too long",
       [](auto& r, auto& recs) {
         r[21].storage = std::string(300, 'k');
         recs.numel[r[21].storage] = r[21].numel;
       }},
      {"unknown storage type", [](auto& r, auto&) { r[21].type = "NotAStorage"; }},
  };
  for (const Case& c : cases) {
    std::vector<Record> records = good;
    Records recs = RecordsOf(records);
    c.change(records, recs);
    RunBothWays(TorchPickler().Write(records), recs, VmOptions{}, {}, c.what);
  }
}

BOOST_AUTO_TEST_CASE(every_limit_is_reached_where_the_opcodes_reach_it) {
  // Each limit swept from 0 through what the whole file needs: wherever
  // it ends the run (an opcode, a value, a memo key, a MARK, a byte of the
  // accounting), a run with whole records must end there too, with the
  // same error and everything before it the same.
  const std::vector<Record> records = Variety(24);
  const std::string pickle = TorchPickler().Write(records);
  const Records recs = RecordsOf(records);
  uint64_t taken = 0;
  auto sweep = [&](const char* what, uint64_t top, uint64_t step, auto set) {
    for (uint64_t v = 0; v <= top; v += step) {
      VmOptions options;
      BudgetLimits budget;
      set(options, budget, v);
      taken += RunBothWays(pickle, recs, options, budget, std::string(what) + " = " + std::to_string(v));
    }
  };
  sweep("max_values", 120, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_values = v; });
  sweep("max_alloc_bytes", 40'000, 8, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_alloc_bytes = v; });
  sweep("max_tensors", 26, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_tensors = v; });
  sweep("max_tensor_dims", 6, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_tensor_dims = v; });
  sweep("max_container_len", 8, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_container_len = v; });
  sweep("max_memo_entries", 220, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_memo_entries = v; });
  sweep("max_stack_depth", 16, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_stack_depth = v; });
  sweep("max_mark_depth", 5, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.max_mark_depth = v; });
  sweep("pickle max_ops", 800, 1, [](VmOptions& o, BudgetLimits&, uint64_t v) { o.limits.pickle.max_ops = v; });
  sweep("budget max_opcodes", 800, 1, [](VmOptions&, BudgetLimits& b, uint64_t v) { b.max_opcodes = v; });
  sweep("budget max_values", 500, 1, [](VmOptions&, BudgetLimits& b, uint64_t v) { b.max_values = v; });
  sweep("budget max_nesting", 5, 1, [](VmOptions&, BudgetLimits& b, uint64_t v) { b.max_nesting = v; });
  sweep("budget max_memo_slots", 600, 1, [](VmOptions&, BudgetLimits& b, uint64_t v) { b.max_memo_slots = v; });
  BOOST_TEST(taken > 1000u);  // the sweeps ran whole records, not only opcodes
}

BOOST_AUTO_TEST_CASE(records_with_reclaiming_off_or_values_still_held_run_opcode_by_opcode) {
  const std::vector<Record> records = Variety(40);
  const std::string pickle = TorchPickler().Write(records);
  VmOptions keep;
  keep.reclaim = false;  // every value kept: nothing to read whole
  BOOST_TEST(RunBothWays(pickle, RecordsOf(records), keep, {}, "reclaim off") == 0u);
  // A pickle that reads a record's memo keys later (here: every key, as a
  // pickle whose reads cannot be decided is taken) is run by opcodes too.
  std::string reads_all = pickle;
  reads_all.insert(3, "\x94"s);  // MEMOIZE among PUTs (the dict again): the memo scan gives up
  BOOST_TEST(RunBothWays(reads_all, RecordsOf(records), VmOptions{}, {}, "reads all") == 0u);
}

// --- whole files -----------------------------------------------------------

std::string Outcome(const Result<Checkpoint>& ckpt) {
  if (!ckpt) return "error: " + ckpt.error().ToString();
  Result<std::string> json = ckpt->DescribeJson("", true);
  return json ? *json : "describe error: " + json.error().ToString();
}

BOOST_AUTO_TEST_CASE(real_files_load_the_same_with_whole_records) {
  std::vector<std::filesystem::path> files = testing::CorpusModelFiles();
  for (const char* sub : {"tensors", "realworld", "reader_views"}) {
    if (!std::filesystem::is_directory(testing::DataDir() / sub)) continue;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(testing::DataDir() / sub)) {
      files.push_back(entry.path());
    }
  }
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(CKPTGUARD_SOURCE_DIR) / "examples")) {
    files.push_back(entry.path());
  }
  LoadOptions each;
  each.tensor_records = false;
  size_t compared = 0;
  uint64_t whole = 0;
  for (const auto& file : files) {
    if (!std::filesystem::is_regular_file(file)) continue;
    Result<Checkpoint> a = LoadCheckpoint(file.string());
    Result<Checkpoint> b = LoadCheckpoint(file.string(), each);
    BOOST_TEST(Outcome(a) == Outcome(b), file.string());
    if (a) whole += a->tensor_records();
    if (b) BOOST_TEST(b->tensor_records() == 0u);
    ++compared;
  }
  BOOST_TEST(compared > 20u);
  BOOST_TEST(whole > 20u);  // torch's own files take the whole-record path
  // A many-tensor file made as torch makes it loads the same both ways.
  const std::string zip = TorchZip(Variety(300));
  Result<Checkpoint> a = LoadCheckpointBytes(AsBytes(zip));
  BOOST_TEST(Outcome(a) == Outcome(LoadCheckpointBytes(AsBytes(zip), each)));
  BOOST_REQUIRE(a.has_value());
  BOOST_TEST(a->tensors().size() == 300u);
  BOOST_TEST(a->tensor_records() > 250u);
}

}  // namespace
}  // namespace ckptguard

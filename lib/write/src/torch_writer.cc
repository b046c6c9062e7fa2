// The torch zip writer: a protocol-2 pickler over a SaveTree (an explicit
// action stack, no recursion), a stored-only zip writer with torch's 64-byte
// alignment, and the read-back check.
#include "ckptguard/torch_writer.h"

#include "ckptguard/sha256.h"


#include <algorithm>
#include <bit>
#include <map>
#include <memory>
#include <new>
#include <string_view>
#include <unordered_map>

#include "ckptguard/atomic_file.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/value.h"
#include "ckptguard/zip_reader.h"

namespace ckptguard {

namespace {

constexpr uint64_t kAlignment = 64;       // torch's kFieldAlignment
constexpr size_t kBatchSize = 1000;       // CPython's pickle._BATCHSIZE
constexpr uint32_t kNoId = UINT32_MAX;

std::string Num(uint64_t n) { return std::to_string(n); }

std::unexpected<Error> Invalid(std::string detail) {
  return MakeError(ErrorCode::kInvalidArgument, 0, std::move(detail));
}

// LegacyStorageName: the torch 1.x typed storage class of a dtype, or "".
std::string_view LegacyStorageName(DType dtype) {
  switch (dtype) {
    case DType::kFloat64: return "DoubleStorage";
    case DType::kFloat32: return "FloatStorage";
    case DType::kFloat16: return "HalfStorage";
    case DType::kBFloat16: return "BFloat16Storage";
    case DType::kInt64: return "LongStorage";
    case DType::kInt32: return "IntStorage";
    case DType::kInt16: return "ShortStorage";
    case DType::kInt8: return "CharStorage";
    case DType::kUInt8: return "ByteStorage";
    case DType::kBool: return "BoolStorage";
    case DType::kComplex64: return "ComplexFloatStorage";
    case DType::kComplex128: return "ComplexDoubleStorage";
    default: return "";
  }
}

// ---------------------------------------------------------------------------
// Paths, for errors that name a tensor or value.

std::string KeyText(const SaveTree& tree, SaveId key) {
  if (key >= tree.values.size()) return "?";
  const SaveValue& k = tree.values[key];
  switch (k.kind) {
    case SaveKind::kStr: return k.text;
    case SaveKind::kInt: return std::to_string(k.int_value);
    case SaveKind::kBigInt: return k.text;
    case SaveKind::kBool: return k.bool_value ? "True" : "False";
    case SaveKind::kNone: return "None";
    default: return "<key>";
  }
}

// PathTo finds a dotted path from the root to `target` breadth first (an
// iterative walk with a visited set), "" for the root, "?" if unreachable.
std::string PathTo(const SaveTree& tree, SaveId target) {
  if (tree.root == target) return "";
  std::vector<std::pair<SaveId, std::string>> parent(tree.values.size(), {kNoId, std::string()});
  std::vector<bool> seen(tree.values.size(), false);
  std::vector<SaveId> queue;
  if (tree.root >= tree.values.size()) return "?";
  queue.push_back(tree.root);
  seen[tree.root] = true;
  for (size_t head = 0; head < queue.size(); ++head) {
    const SaveId id = queue[head];
    const SaveValue& v = tree.values[id];
    auto visit = [&](SaveId child, std::string key) {
      if (child >= tree.values.size() || seen[child]) return;
      seen[child] = true;
      parent[child] = {id, std::move(key)};
      queue.push_back(child);
    };
    if (v.kind == SaveKind::kList || v.kind == SaveKind::kTuple) {
      for (size_t i = 0; i < v.items.size(); ++i) visit(v.items[i], std::to_string(i));
    } else if (v.kind == SaveKind::kDict || v.kind == SaveKind::kOrderedDict) {
      for (size_t i = 0; i + 1 < v.items.size(); i += 2) visit(v.items[i + 1], KeyText(tree, v.items[i]));
    }
    if (seen[target]) break;
  }
  if (!seen[target]) return "?";
  std::vector<std::string> parts;
  for (SaveId at = target; at != tree.root; at = parent[at].first) parts.push_back(parent[at].second);
  std::string out;
  for (size_t i = parts.size(); i-- > 0;) out += (out.empty() ? "" : ".") + parts[i];
  return out;
}

// ---------------------------------------------------------------------------
// Tensor checks and element walks.

// CheckTensor validates a tensor against its storage; errors name `path`.
Status CheckTensor(const SaveTree& tree, uint32_t index, const std::string& path) {
  const std::string what = "tensor '" + path + "'";
  if (index >= tree.tensors.size()) return Invalid(what + " refers to tensor " + Num(index) + ", which does not exist");
  const SaveTensor& t = tree.tensors[index];
  if (LegacyStorageName(t.dtype).empty()) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     what + " has dtype " + std::string(DTypeName(t.dtype)) +
                         ", which has no torch 1.x storage class (torch.save writes it only as torch 2.x "
                         "_rebuild_tensor_v3)");
  }
  if (t.storage >= tree.storages.size()) return Invalid(what + " refers to storage " + Num(t.storage) + ", which does not exist");
  const SaveStorage& st = tree.storages[t.storage];
  if (st.dtype != t.dtype) {
    return Invalid(what + " has dtype " + std::string(DTypeName(t.dtype)) + " but its storage holds " +
                   std::string(DTypeName(st.dtype)));
  }
  const uint64_t item = DTypeSize(t.dtype);
  if (st.data.size() % item != 0) {
    return Invalid(what + ": storage of " + Num(st.data.size()) + " bytes is not a whole number of elements");
  }
  const uint64_t storage_numel = st.data.size() / item;
  if (t.shape.size() != t.stride.size()) return Invalid(what + " has " + Num(t.shape.size()) + " sizes but " + Num(t.stride.size()) + " strides");
  if (t.storage_offset < 0) return Invalid(what + " has a negative storage offset");
  bool empty = false;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] < 0 || t.stride[i] < 0) return Invalid(what + " has a negative size or stride");
    empty = empty || t.shape[i] == 0;
  }
  if (empty) return OkStatus();
  // last = offset + sum((size-1)*stride), with overflow checks.
  uint64_t last = static_cast<uint64_t>(t.storage_offset);
  for (size_t i = 0; i < t.shape.size(); ++i) {
    const uint64_t span = static_cast<uint64_t>(t.shape[i] - 1);
    const uint64_t stride = static_cast<uint64_t>(t.stride[i]);
    if (stride != 0 && span > (UINT64_MAX - last) / stride) return Invalid(what + ": view extent overflows");
    last += span * stride;
  }
  if (last >= storage_numel) {
    return Invalid(what + " reaches storage element " + Num(last) + " but its storage has " + Num(storage_numel));
  }
  return OkStatus();
}

// ForEachRun calls fn(bytes) with the tensor's elements in C order, in runs
// (one call for a contiguous tensor). Iterative odometer over the dims.
template <typename Fn>
void ForEachRun(const SaveTensor& t, const SaveStorage& st, Fn&& fn) {
  const uint64_t item = DTypeSize(t.dtype);
  for (int64_t s : t.shape) {
    if (s == 0) return;
  }
  const uint8_t* base = st.data.data();
  const size_t n = t.shape.size();
  // Trailing dims that are contiguous in the storage form one run.
  uint64_t run = 1;
  size_t outer = n;
  int64_t expect = 1;
  while (outer > 0 && (t.stride[outer - 1] == expect || t.shape[outer - 1] == 1)) {
    run *= static_cast<uint64_t>(t.shape[outer - 1]);
    expect *= t.shape[outer - 1];
    --outer;
  }
  std::vector<int64_t> index(outer, 0);
  for (;;) {
    uint64_t at = static_cast<uint64_t>(t.storage_offset);
    for (size_t i = 0; i < outer; ++i) at += static_cast<uint64_t>(index[i] * t.stride[i]);
    fn(base + at * item, run * item);
    size_t d = outer;
    for (; d > 0; --d) {
      if (++index[d - 1] < t.shape[d - 1]) break;
      index[d - 1] = 0;
    }
    if (d == 0) return;
  }
}

Result<std::string> TensorSha256(const SaveTensor& t, const SaveStorage& st) {
  // Small runs are gathered so that a transposed view is not hashed one
  // element per call.
  Sha256 hash;
  std::string scratch;
  ForEachRun(t, st, [&](const uint8_t* p, uint64_t len) {
    if (len >= 4096) {
      if (!scratch.empty()) {
        hash.Update(scratch);
        scratch.clear();
      }
      hash.Update(p, static_cast<size_t>(len));
      return;
    }
    scratch.append(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
    if (scratch.size() >= 65536) {
      hash.Update(scratch);
      scratch.clear();
    }
  });
  if (!scratch.empty()) hash.Update(scratch);
  return hash.FinishHex();
}

// ---------------------------------------------------------------------------
// The pickler.

namespace op {
constexpr uint8_t kMark = '(', kStop = '.', kNone = 'N', kNewTrue = 0x88, kNewFalse = 0x89, kBinInt = 'J',
                  kBinInt1 = 'K', kBinInt2 = 'M', kLong1 = 0x8a, kLong4 = 0x8b, kBinFloat = 'G', kBinUnicode = 'X',
                  kEmptyList = ']', kAppend = 'a', kAppends = 'e', kEmptyTuple = ')', kTuple = 't', kTuple1 = 0x85,
                  kTuple2 = 0x86, kTuple3 = 0x87, kEmptyDict = '}', kSetItem = 's', kSetItems = 'u', kGlobal = 'c',
                  kReduce = 'R', kBuild = 'b', kBinPersId = 'Q', kBinPut = 'q', kLongBinPut = 'r', kBinGet = 'h',
                  kLongBinGet = 'j', kProto = 0x80;
}  // namespace op

// One tensor rebuild as the loader will see it: the plain tensor, and for a
// Parameter the wrapping one (the loader makes a tensor entry for each).
struct Emitted {
  uint32_t tensor;
  bool inner;  // the data tensor inside a Parameter
};

struct PickleOut {
  std::string pickle;
  std::vector<uint32_t> storage_by_key;  // key "i" -> storage index
  std::vector<Emitted> emitted;
};

class Pickler {
 public:
  Pickler(const SaveTree& tree, const SaveLimits& limits)
      : tree_(tree), limits_(limits), memo_(tree.values.size(), kNoId), building_(tree.values.size(), false),
        storage_key_(tree.storages.size(), kNoId), tensor_memo_(tree.tensors.size(), kNoId) {}

  Result<PickleOut> Run() {
    if (tree_.root >= tree_.values.size()) return Invalid("root " + Num(tree_.root) + " is not a value of the tree");
    Op(op::kProto);
    Op(2);
    stack_.push_back({Action::kVisit, tree_.root, 0, 0});
    while (!stack_.empty()) {
      const Action a = stack_.back();
      stack_.pop_back();
      switch (a.type) {
        case Action::kOp: Op(a.op); break;
        case Action::kVisit: CKG_TRY(Visit(a.id, a.depth)); break;
        case Action::kEndTuple: {
          const size_t n = tree_.values[a.id].items.size();
          Op(n == 1 ? op::kTuple1 : n == 2 ? op::kTuple2 : n == 3 ? op::kTuple3 : op::kTuple);
          building_[a.id] = false;
          Put(a.id);
          break;
        }
      }
    }
    Op(op::kStop);
    out_.emitted = std::move(emitted_);
    out_.pickle = std::move(p_);
    return std::move(out_);
  }

 private:
  struct Action {
    enum Type : uint8_t { kVisit, kOp, kEndTuple } type;
    SaveId id;
    uint32_t depth;
    uint8_t op;
  };

  void Op(uint8_t b) { p_.push_back(static_cast<char>(b)); }
  void U16(uint16_t v) {
    Op(static_cast<uint8_t>(v));
    Op(static_cast<uint8_t>(v >> 8));
  }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) Op(static_cast<uint8_t>(v >> (8 * i)));
  }

  void Put(SaveId id) {
    const uint32_t index = next_memo_++;
    memo_[id] = index;
    if (index < 256) {
      Op(op::kBinPut);
      Op(static_cast<uint8_t>(index));
    } else {
      Op(op::kLongBinPut);
      U32(index);
    }
  }
  void Get(uint32_t index) {
    if (index < 256) {
      Op(op::kBinGet);
      Op(static_cast<uint8_t>(index));
    } else {
      Op(op::kLongBinGet);
      U32(index);
    }
  }

  // LongBytes writes LONG1/LONG4 for a minimal two's complement little-endian encoding.
  void LongBytes(const std::vector<uint8_t>& bytes) {
    if (bytes.size() < 256) {
      Op(op::kLong1);
      Op(static_cast<uint8_t>(bytes.size()));
    } else {
      Op(op::kLong4);
      U32(static_cast<uint32_t>(bytes.size()));
    }
    p_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  static void TrimTwosComplement(std::vector<uint8_t>& b) {
    while (b.size() > 1) {
      const uint8_t last = b.back(), prev = b[b.size() - 2];
      if ((last == 0x00 && (prev & 0x80) == 0) || (last == 0xff && (prev & 0x80) != 0)) {
        b.pop_back();
      } else {
        break;
      }
    }
  }

  // Int writes an int as CPython's save_long does for protocol 2.
  void Int(int64_t v) {
    if (v >= 0 && v <= 0xff) {
      Op(op::kBinInt1);
      Op(static_cast<uint8_t>(v));
    } else if (v >= 0 && v <= 0xffff) {
      Op(op::kBinInt2);
      U16(static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      Op(op::kBinInt);
      U32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      std::vector<uint8_t> b(8);
      const uint64_t u = static_cast<uint64_t>(v);
      for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<uint8_t>(u >> (8 * i));
      TrimTwosComplement(b);
      LongBytes(b);
    }
  }

  Status BigInt(std::string_view text, SaveId id) {
    bool negative = false;
    std::string_view digits = text;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
      negative = digits[0] == '-';
      digits.remove_prefix(1);
    }
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return Invalid("big int '" + std::string(text.substr(0, 64)) + "' at '" + PathTo(tree_, id) +
                     "' is not decimal digits with an optional sign");
    }
    std::vector<uint8_t> mag;  // little-endian magnitude
    for (char c : digits) {
      uint32_t carry = static_cast<uint32_t>(c - '0');
      for (uint8_t& byte : mag) {
        const uint32_t x = byte * 10u + carry;
        byte = static_cast<uint8_t>(x);
        carry = x >> 8;
      }
      while (carry != 0) {
        mag.push_back(static_cast<uint8_t>(carry));
        carry >>= 8;
      }
    }
    mag.push_back(0);  // room for the sign bit
    if (negative) {
      uint32_t carry = 1;
      for (uint8_t& byte : mag) {
        const uint32_t x = static_cast<uint8_t>(~byte) + carry;
        byte = static_cast<uint8_t>(x);
        carry = x >> 8;
      }
    }
    TrimTwosComplement(mag);
    if (mag.size() <= 8) {
      // Fits in int64: write it the way a small int is written.
      uint64_t u = (mag.back() & 0x80) != 0 ? UINT64_MAX : 0;
      for (size_t i = 0; i < mag.size(); ++i) {
        u &= ~(uint64_t{0xff} << (8 * i));
        u |= uint64_t{mag[i]} << (8 * i);
      }
      Int(static_cast<int64_t>(u));
      return OkStatus();
    }
    if (mag.size() > UINT32_MAX) return MakeError(ErrorCode::kLimitExceeded, 0, "big int too long for LONG4");
    LongBytes(mag);
    return OkStatus();
  }

  void Float(double v) {
    Op(op::kBinFloat);
    const uint64_t bits = std::bit_cast<uint64_t>(v);
    for (int i = 7; i >= 0; --i) Op(static_cast<uint8_t>(bits >> (8 * i)));
  }

  Status Unicode(std::string_view text) {
    if (text.size() > UINT32_MAX) {
      return MakeError(ErrorCode::kLimitExceeded, 0, "a str of " + Num(text.size()) + " bytes does not fit protocol 2's BINUNICODE");
    }
    Op(op::kBinUnicode);
    U32(static_cast<uint32_t>(text.size()));
    p_.append(text);
    return OkStatus();
  }

  void Global(std::string_view module, std::string_view name) {
    Op(op::kGlobal);
    p_.append(module);
    p_.push_back('\n');
    p_.append(name);
    p_.push_back('\n');
  }

  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    Op(op::kEmptyTuple);
    Op(op::kReduce);
  }

  void SizeTuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      Op(op::kEmptyTuple);
      return;
    }
    if (v.size() > 3) Op(op::kMark);
    for (int64_t x : v) Int(x);
    Op(v.size() == 1 ? op::kTuple1 : v.size() == 2 ? op::kTuple2 : v.size() == 3 ? op::kTuple3 : op::kTuple);
  }

  // Bytes writes bytes as CPython's protocol 2 does: bytes() when empty,
  // else _codecs.encode(<the bytes as latin-1 text>, 'latin1').
  Status ByteString(std::string_view raw) {
    if (raw.empty()) {
      Global("__builtin__", "bytes");
      Op(op::kEmptyTuple);
      Op(op::kReduce);
      return OkStatus();
    }
    Global("_codecs", "encode");
    std::string latin1;
    latin1.reserve(raw.size() * 2);
    for (unsigned char c : raw) {
      if (c < 0x80) {
        latin1.push_back(static_cast<char>(c));
      } else {
        latin1.push_back(static_cast<char>(0xc0 | (c >> 6)));
        latin1.push_back(static_cast<char>(0x80 | (c & 0x3f)));
      }
    }
    CKG_TRY(Unicode(latin1));
    CKG_TRY(Unicode("latin1"));
    Op(op::kTuple2);
    Op(op::kReduce);
    return OkStatus();
  }

  Status Tensor(SaveId id, uint32_t index) {
    if (index >= tree_.tensors.size()) return CheckTensor(tree_, index, PathTo(tree_, id));
    if (tensor_memo_[index] != kNoId) {
      // Another value for a tensor already written: the same tensor object.
      memo_[id] = tensor_memo_[index];
      Get(tensor_memo_[index]);
      return OkStatus();
    }
    // Checked without the path first: finding the path costs a walk.
    if (!CheckTensor(tree_, index, "")) return CheckTensor(tree_, index, PathTo(tree_, id));
    const SaveTensor& t = tree_.tensors[index];
    if (storage_key_[t.storage] == kNoId) {
      storage_key_[t.storage] = static_cast<uint32_t>(out_.storage_by_key.size());
      out_.storage_by_key.push_back(t.storage);
    }
    const uint32_t key = storage_key_[t.storage];
    const uint64_t numel = tree_.storages[t.storage].data.size() / DTypeSize(t.dtype);
    if (t.parameter) Global("torch._utils", "_rebuild_parameter");
    Global("torch._utils", "_rebuild_tensor_v2");
    Op(op::kMark);
    Op(op::kMark);
    CKG_TRY(Unicode("storage"));
    Global("torch", LegacyStorageName(t.dtype));
    CKG_TRY(Unicode(std::to_string(key)));
    CKG_TRY(Unicode("cpu"));
    Int(static_cast<int64_t>(numel));
    Op(op::kTuple);
    Op(op::kBinPersId);
    Int(t.storage_offset);
    SizeTuple(t.shape);
    SizeTuple(t.stride);
    Op(!t.parameter && t.requires_grad ? op::kNewTrue : op::kNewFalse);
    EmptyOrderedDict();
    Op(op::kTuple);
    Op(op::kReduce);
    if (t.parameter) {
      emitted_.push_back({index, true});
      Op(t.requires_grad ? op::kNewTrue : op::kNewFalse);
      EmptyOrderedDict();
      Op(op::kTuple3);
      Op(op::kReduce);
    }
    emitted_.push_back({index, false});
    Put(id);
    tensor_memo_[index] = memo_[id];
    return OkStatus();
  }

  // PushBatches queues `items` (values, or key/value pairs when `pairs`) in
  // CPython's batches: MARK items APPENDS/SETITEMS, or one APPEND/SETITEM.
  void PushBatches(const std::vector<SaveId>& items, bool pairs, uint32_t depth) {
    const size_t per = pairs ? 2 : 1;
    const size_t n = items.size() / per;
    std::vector<Action> seq;
    seq.reserve(items.size() + 2 * (n / kBatchSize + 1));
    for (size_t start = 0; start < n; start += kBatchSize) {
      const size_t count = std::min(kBatchSize, n - start);
      if (count > 1) seq.push_back({Action::kOp, 0, 0, op::kMark});
      for (size_t i = start * per; i < (start + count) * per; ++i) seq.push_back({Action::kVisit, items[i], depth, 0});
      const uint8_t end = pairs ? (count > 1 ? op::kSetItems : op::kSetItem) : (count > 1 ? op::kAppends : op::kAppend);
      seq.push_back({Action::kOp, 0, 0, end});
    }
    stack_.insert(stack_.end(), seq.rbegin(), seq.rend());
  }

  Status CheckKeys(SaveId id, const SaveValue& v) {
    if (v.items.size() % 2 != 0) return Invalid("dict at '" + PathTo(tree_, id) + "' has an odd number of items");
    for (size_t i = 0; i < v.items.size(); i += 2) {
      const SaveId k = v.items[i];
      if (k >= tree_.values.size()) break;  // reported by Visit
      const SaveKind kind = tree_.values[k].kind;
      if (kind == SaveKind::kList || kind == SaveKind::kDict || kind == SaveKind::kOrderedDict) {
        return Invalid("dict at '" + PathTo(tree_, id) + "' has an unhashable key (a list or dict)");
      }
    }
    return OkStatus();
  }

  Status Visit(SaveId id, uint32_t depth) {
    if (id >= tree_.values.size()) return Invalid("value " + Num(id) + " does not exist (tree has " + Num(tree_.values.size()) + ")");
    if (memo_[id] != kNoId) {
      Get(memo_[id]);
      return OkStatus();
    }
    if (building_[id]) return Invalid("cycle through the tuple at '" + PathTo(tree_, id) + "' (pickle cannot express it)");
    if (depth > limits_.max_depth) {
      return MakeError(ErrorCode::kLimitExceeded, 0,
                       "max_depth (" + Num(limits_.max_depth) + ") exceeded at '" + PathTo(tree_, id).substr(0, 200) + "'");
    }
    const SaveValue& v = tree_.values[id];
    switch (v.kind) {
      case SaveKind::kNone: Op(op::kNone); break;
      case SaveKind::kBool: Op(v.bool_value ? op::kNewTrue : op::kNewFalse); break;
      case SaveKind::kInt: Int(v.int_value); break;
      case SaveKind::kBigInt: CKG_TRY(BigInt(v.text, id)); break;
      case SaveKind::kFloat: Float(v.float_value); break;
      case SaveKind::kStr: CKG_TRY(Unicode(v.text)); break;
      case SaveKind::kBytes: CKG_TRY(ByteString(v.text)); break;
      case SaveKind::kTensor: CKG_TRY(Tensor(id, v.index)); break;
      case SaveKind::kList:
        Op(op::kEmptyList);
        Put(id);
        PushBatches(v.items, false, depth + 1);
        break;
      case SaveKind::kTuple:
        if (v.items.empty()) {
          Op(op::kEmptyTuple);
          Put(id);
          break;
        }
        building_[id] = true;
        stack_.push_back({Action::kEndTuple, id, 0, 0});
        for (size_t i = v.items.size(); i-- > 0;) stack_.push_back({Action::kVisit, v.items[i], depth + 1, 0});
        if (v.items.size() > 3) stack_.push_back({Action::kOp, 0, 0, op::kMark});
        break;
      case SaveKind::kDict:
      case SaveKind::kOrderedDict: {
        CKG_TRY(CheckKeys(id, v));
        if (v.kind == SaveKind::kDict) {
          Op(op::kEmptyDict);
        } else {
          EmptyOrderedDict();
        }
        Put(id);
        // Queued in reverse: the state dict and BUILD run after the items.
        if (v.kind == SaveKind::kOrderedDict && !v.attrs.empty()) {
          if (v.attrs.size() % 2 != 0) return Invalid("OrderedDict at '" + PathTo(tree_, id) + "' has odd attrs");
          stack_.push_back({Action::kOp, 0, 0, op::kBuild});
          PushBatches(v.attrs, true, depth + 1);
          stack_.push_back({Action::kOp, 0, 0, op::kEmptyDict});
        } else if (v.kind == SaveKind::kDict && !v.attrs.empty()) {
          return Invalid("dict at '" + PathTo(tree_, id) + "' has attrs (only an OrderedDict may)");
        }
        PushBatches(v.items, true, depth + 1);
        break;
      }
    }
    return OkStatus();
  }

  const SaveTree& tree_;
  const SaveLimits limits_;
  std::vector<uint32_t> memo_;     // SaveId -> memo index
  std::vector<bool> building_;     // tuples whose items are being written
  std::vector<uint32_t> storage_key_;
  std::vector<uint32_t> tensor_memo_;  // tensor index -> memo index
  uint32_t next_memo_ = 0;
  std::vector<Action> stack_;
  std::vector<Emitted> emitted_;
  std::string p_;
  PickleOut out_;
};

// ---------------------------------------------------------------------------
// The zip writer: stored entries, data aligned to 64 bytes with an 'FB'
// extra field of 'Z' padding (torch's getPadding), zip64 fields only when
// needed.

class ZipWriter {
 public:
  void Add(const std::string& name, Bytes data) {
    Entry e;
    e.name = name;
    e.offset = out_.size();
    e.size = data.size();
    e.crc = ZipCrc32(data);
    const bool big_size = e.size >= 0xffffffffu;
    std::string local_extra;
    if (big_size) {
      Le(local_extra, 0x0001, 2);
      Le(local_extra, 16, 2);
      Le(local_extra, e.size, 8);
      Le(local_extra, e.size, 8);
    }
    const uint64_t start = e.offset + 30 + name.size() + local_extra.size() + 4;
    const uint64_t pad = (kAlignment - start % kAlignment) % kAlignment;
    e.fb.append("FB");
    Le(e.fb, pad, 2);
    e.fb.append(static_cast<size_t>(pad), 'Z');
    local_extra += e.fb;
    e.utf8 = std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
    e.zip64 = big_size || e.offset >= 0xffffffffu;
    std::string& o = out_;
    Le(o, 0x04034b50, 4);
    Le(o, e.zip64 ? 45 : 20, 2);         // version needed
    Le(o, e.utf8 ? 0x0800 : 0, 2);       // flags: UTF-8 names
    Le(o, 0, 2);                         // method: stored
    Le(o, 0, 2);                         // time
    Le(o, 0x21, 2);                      // date: 1980-01-01
    Le(o, e.crc, 4);
    Le(o, big_size ? 0xffffffffu : e.size, 4);
    Le(o, big_size ? 0xffffffffu : e.size, 4);
    Le(o, name.size(), 2);
    Le(o, local_extra.size(), 2);
    o += name;
    o += local_extra;
    o.append(reinterpret_cast<const char*>(data.data()), data.size());
    entries_.push_back(std::move(e));
  }

  std::string Finish() {
    const uint64_t dir_offset = out_.size();
    std::string& o = out_;
    for (const Entry& e : entries_) {
      const bool big_size = e.size >= 0xffffffffu, big_offset = e.offset >= 0xffffffffu;
      std::string extra;
      if (big_size || big_offset) {
        Le(extra, 0x0001, 2);
        Le(extra, (big_size ? 16 : 0) + (big_offset ? 8 : 0), 2);
        if (big_size) {
          Le(extra, e.size, 8);
          Le(extra, e.size, 8);
        }
        if (big_offset) Le(extra, e.offset, 8);
      }
      extra += e.fb;
      Le(o, 0x02014b50, 4);
      Le(o, e.zip64 ? 45 : 20, 2);  // made by (MS-DOS / FAT attributes)
      Le(o, e.zip64 ? 45 : 20, 2);  // needed
      Le(o, e.utf8 ? 0x0800 : 0, 2);
      Le(o, 0, 2);
      Le(o, 0, 2);
      Le(o, 0x21, 2);
      Le(o, e.crc, 4);
      Le(o, big_size ? 0xffffffffu : e.size, 4);
      Le(o, big_size ? 0xffffffffu : e.size, 4);
      Le(o, e.name.size(), 2);
      Le(o, extra.size(), 2);
      Le(o, 0, 2);  // comment
      Le(o, 0, 2);  // disk
      Le(o, 0, 2);  // internal attributes
      Le(o, 0, 4);  // external attributes
      Le(o, big_offset ? 0xffffffffu : e.offset, 4);
      o += e.name;
      o += extra;
    }
    const uint64_t dir_len = out_.size() - dir_offset;
    const uint64_t count = entries_.size();
    if (count >= 0xffff || dir_offset >= 0xffffffffu || dir_len >= 0xffffffffu) {
      const uint64_t z64 = out_.size();
      Le(o, 0x06064b50, 4);
      Le(o, 44, 8);
      Le(o, 45, 2);
      Le(o, 45, 2);
      Le(o, 0, 4);
      Le(o, 0, 4);
      Le(o, count, 8);
      Le(o, count, 8);
      Le(o, dir_len, 8);
      Le(o, dir_offset, 8);
      Le(o, 0x07064b50, 4);
      Le(o, 0, 4);
      Le(o, z64, 8);
      Le(o, 1, 4);
    }
    Le(o, 0x06054b50, 4);
    Le(o, 0, 2);
    Le(o, 0, 2);
    Le(o, std::min<uint64_t>(count, 0xffff), 2);
    Le(o, std::min<uint64_t>(count, 0xffff), 2);
    Le(o, std::min<uint64_t>(dir_len, 0xffffffffu), 4);
    Le(o, std::min<uint64_t>(dir_offset, 0xffffffffu), 4);
    Le(o, 0, 2);
    return std::move(out_);
  }

  void Reserve(uint64_t n) { out_.reserve(static_cast<size_t>(n)); }

 private:
  struct Entry {
    std::string name;
    uint64_t offset = 0;
    uint64_t size = 0;
    uint32_t crc = 0;
    std::string fb;  // the FB extra field, copied into the central directory as torch does
    bool utf8 = false;
    bool zip64 = false;
  };
  static void Le(std::string& o, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) o.push_back(static_cast<char>(static_cast<uint8_t>(v >> (8 * i))));
  }
  std::string out_;
  std::vector<Entry> entries_;
};

Status CheckArchiveName(const std::string& name) {
  if (name.empty() || name.size() > 1024 || name.find('/') != std::string::npos || name.find('\0') != std::string::npos ||
      name.find('\\') != std::string::npos || name == "." || name == "..") {
    return Invalid("archive name '" + name.substr(0, 64) + "' must be 1-1024 bytes without '/', '\\' or NUL, not '.' or '..'");
  }
  return OkStatus();
}

Result<std::string> TorchZipBytesImpl(const SaveTree& tree, const std::string& archive_name, const SaveLimits& limits) {
  CKG_TRY(CheckArchiveName(archive_name));
  Pickler pickler(tree, limits);
  CKG_ASSIGN_OR_RETURN(PickleOut pickled, pickler.Run());
  // torch writes the records in sorted key order (as strings: 0, 1, 10, 2).
  std::vector<std::pair<std::string, uint32_t>> records;
  uint64_t total = pickled.pickle.size() + 4096;
  for (size_t k = 0; k < pickled.storage_by_key.size(); ++k) {
    records.emplace_back(std::to_string(k), pickled.storage_by_key[k]);
    total += tree.storages[pickled.storage_by_key[k]].data.size() + 200;
  }
  std::sort(records.begin(), records.end());
  const std::string prefix = archive_name + "/";
  ZipWriter zip;
  zip.Reserve(total);
  zip.Add(prefix + "data.pkl", AsBytes(pickled.pickle));
  zip.Add(prefix + "byteorder", AsBytes("little"));
  for (const auto& [key, storage] : records) zip.Add(prefix + "data/" + key, tree.storages[storage].data);
  zip.Add(prefix + "version", AsBytes("3\n"));
  return zip.Finish();
}

}  // namespace

Result<std::string> TorchZipBytes(const SaveTree& tree, const std::string& archive_name, const SaveLimits& limits) {
  try {
    return TorchZipBytesImpl(tree, archive_name, limits);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory writing a torch zip");
  } catch (const std::length_error&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "torch zip too large for memory");
  }
}

namespace {

// VerifyLoaded checks a loaded file against the tree (see VerifyTorchZip).
Status VerifyLoaded(Result<Checkpoint> loaded, const SaveTree& tree, const SaveLimits& limits) {
  try {
    Pickler pickler(tree, limits);
    CKG_ASSIGN_OR_RETURN(PickleOut pickled, pickler.Run());
    CKG_ASSIGN_OR_RETURN(Checkpoint ckpt, std::move(loaded));
    const std::span<const ckptguard::Tensor> got = ckpt.tensors();
    if (got.size() != pickled.emitted.size()) {
      return MakeError(ErrorCode::kInternal, 0,
                       "read back " + Num(got.size()) + " tensors, wrote " + Num(pickled.emitted.size()));
    }
    std::unordered_map<uint32_t, std::string> digests;
    for (size_t i = 0; i < got.size(); ++i) {
      const Emitted& e = pickled.emitted[i];
      const SaveTensor& want = tree.tensors[e.tensor];
      const ckptguard::Tensor& have = got[i];
      const bool parameter = want.parameter && !e.inner;
      const bool requires_grad = want.parameter ? (!e.inner && want.requires_grad) : want.requires_grad;
      auto differs = [&](const char* field) {
        return MakeError(ErrorCode::kInternal, 0,
                         "tree tensor " + Num(e.tensor) + " (loaded tensor " + Num(i) + ") reads back with another " +
                             field);
      };
      if (have.dtype != want.dtype) return differs("dtype");
      if (have.shape != want.shape) return differs("shape");
      if (have.stride != want.stride) return differs("stride");
      if (have.storage_offset != want.storage_offset) return differs("storage_offset");
      if (have.parameter != parameter) return differs("parameter");
      if (have.requires_grad != requires_grad) return differs("requires_grad");
      auto it = digests.find(e.tensor);
      if (it == digests.end()) {
        CKG_ASSIGN_OR_RETURN(std::string d, TensorSha256(want, tree.storages[want.storage]));
        it = digests.emplace(e.tensor, std::move(d)).first;
      }
      CKG_ASSIGN_OR_RETURN(std::string read_back, ckpt.Sha256Hex(static_cast<uint32_t>(i)));
      if (read_back != it->second) return differs("sha256");
    }
    return OkStatus();
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory verifying a torch zip");
  }
}

}  // namespace

Status VerifyTorchZip(Bytes file, const SaveTree& tree, const SaveLimits& limits) {
  return VerifyLoaded(LoadCheckpointBytes(file), tree, limits);
}

Status WriteTorchZip(const std::string& path, const SaveTree& tree, const std::string& archive_name,
                     const SaveLimits& limits, const std::function<Status()>& sources_unchanged) {
  if (path.empty()) return Invalid("empty output path");
  CKG_ASSIGN_OR_RETURN(std::string bytes, TorchZipBytes(tree, archive_name, limits));
  if (sources_unchanged) CKG_TRY(sources_unchanged());
  try {
    CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
    CKG_TRY(file.Write(AsBytes(bytes)));
    bytes = std::string();  // the check below reads the temporary file, not this buffer
    // Read back what is on disk before it replaces `path`.
    Status verified = VerifyLoaded(LoadCheckpoint(file.temp_path()), tree, limits);
    if (!verified) {
      Error e = std::move(verified).error();
      e.detail = "written file does not read back: " + e.detail;
      e.where = path;
      return std::unexpected(std::move(e));
    }
    return file.Commit();
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory writing a torch zip", path);
  }
}

// ---------------------------------------------------------------------------

Result<SaveTree> SaveTreeFromCheckpoint(const Checkpoint& ckpt, const SaveLimits& limits) {
  try {
    SaveTree tree;
    const ValueArena& values = ckpt.values();
    std::vector<SaveId> map(values.size(), kNoId);
    std::unordered_map<uint32_t, SaveId> tensor_value;                 // checkpoint tensor -> value
    std::map<std::pair<uint32_t, DType>, uint32_t> storage_for;        // (storage, dtype) -> SaveStorage
    struct Work {
      ValueId id;
      std::string path;
      uint64_t depth;
    };
    std::vector<Work> work;
    // Claim returns the SaveId of `id`, queueing it the first time.
    auto claim = [&](ValueId id, std::string path, uint64_t depth) -> Result<SaveId> {
      if (id >= values.size()) return MakeError(ErrorCode::kInternal, 0, "value id out of range");
      if (map[id] != kNoId) return map[id];
      if (depth > limits.max_depth) {
        return MakeError(ErrorCode::kLimitExceeded, 0,
                         "max_depth (" + Num(limits.max_depth) + ") exceeded at '" + path.substr(0, 200) + "'");
      }
      map[id] = tree.Add({});
      work.push_back({id, std::move(path), depth});
      return map[id];
    };
    auto key_text = [&](ValueId k) -> std::string {
      const Value& kv = values.Get(k);
      if (kv.kind == ValueKind::kStr) return kv.text;
      if (kv.kind == ValueKind::kInt) return std::to_string(kv.int_value);
      return "<" + std::string(ValueKindName(kv.kind)) + ">";
    };
    auto join = [](const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; };
    CKG_ASSIGN_OR_RETURN(tree.root, claim(ckpt.root(), "", 0));
    while (!work.empty()) {
      Work w = std::move(work.back());
      work.pop_back();
      const Value& v = values.Get(w.id);
      SaveValue out;
      switch (v.kind) {
        case ValueKind::kNone: break;
        case ValueKind::kBool:
          out.kind = SaveKind::kBool;
          out.bool_value = v.int_value != 0;
          break;
        case ValueKind::kInt:
          out.kind = SaveKind::kInt;
          out.int_value = v.int_value;
          break;
        case ValueKind::kFloat:
          out.kind = SaveKind::kFloat;
          out.float_value = v.float_value;
          break;
        case ValueKind::kBigInt:
        case ValueKind::kStr:
        case ValueKind::kBytes:  // a bytearray becomes bytes
          out.kind = v.kind == ValueKind::kBigInt ? SaveKind::kBigInt
                     : v.kind == ValueKind::kStr  ? SaveKind::kStr
                                                  : SaveKind::kBytes;
          out.text = v.text;
          break;
        case ValueKind::kList:
        case ValueKind::kTuple:  // torch.Size -> tuple
          out.kind = v.kind == ValueKind::kList ? SaveKind::kList : SaveKind::kTuple;
          for (size_t i = 0; i < v.items.size(); ++i) {
            CKG_ASSIGN_OR_RETURN(SaveId c, claim(v.items[i], join(w.path, std::to_string(i)), w.depth + 1));
            out.items.push_back(c);
          }
          break;
        case ValueKind::kDict:  // an OrderedDict or Counter stays an OrderedDict
          out.kind = v.ordered_dict ? SaveKind::kOrderedDict : SaveKind::kDict;
          for (size_t i = 0; i + 1 < v.items.size(); i += 2) {
            const std::string p = join(w.path, key_text(v.items[i]));
            CKG_ASSIGN_OR_RETURN(SaveId k, claim(v.items[i], p + "<key>", w.depth + 1));
            CKG_ASSIGN_OR_RETURN(SaveId c, claim(v.items[i + 1], p, w.depth + 1));
            out.items.push_back(k);
            out.items.push_back(c);
          }
          if (v.ordered_dict) {
            const std::span<const ValueId> attrs = values.Attrs(v);
            for (size_t i = 0; i + 1 < attrs.size(); i += 2) {
              const std::string p = join(w.path, "<attr " + key_text(attrs[i]) + ">");
              CKG_ASSIGN_OR_RETURN(SaveId k, claim(attrs[i], p, w.depth + 1));
              CKG_ASSIGN_OR_RETURN(SaveId c, claim(attrs[i + 1], p, w.depth + 1));
              out.attrs.push_back(k);
              out.attrs.push_back(c);
            }
          }
          break;
        case ValueKind::kTensor: {
          auto known = tensor_value.find(v.index);
          if (known != tensor_value.end()) {
            // Another value for the same tensor: the writer memoizes by
            // tensor index, so it stays one tensor object.
            out = tree.values[known->second];
            break;
          }
          const ckptguard::Tensor& t = ckpt.tensors()[v.index];
          if (const std::optional<std::string> why = NotAPlainArray(t)) {
            // Written as _rebuild_tensor_v2 it would lose its quantizer or
            // numpy dtype, or need bytes it does not have.
            return MakeError(ErrorCode::kUnsupportedFormat, 0,
                             "tensor " + std::to_string(v.index) + " is " + *why +
                                 ", which the torch writer does not write");
          }
          if (t.conj || t.neg) {
            return MakeError(ErrorCode::kUnsupportedFormat, 0,
                             "tensor " + std::to_string(v.index) + " has the " + (t.conj ? "conjugate" : "negative") +
                                 " bit: the torch writer does not write tensor metadata");
          }
          const Storage& st = ckpt.storages()[t.storage];
          auto slot = storage_for.find({t.storage, t.dtype});
          if (slot == storage_for.end()) {
            const uint64_t item = DTypeSize(t.dtype);
            const size_t len = static_cast<size_t>(st.bytes.size() / item * item);
            const Bytes data = st.bytes.subspan(0, len);
            const uint32_t unit = DTypeSwapUnit(t.dtype);
            uint32_t index;
            if (st.big_endian && unit > 1) {
              std::string swapped(reinterpret_cast<const char*>(data.data()), data.size());
              for (size_t at = 0; at + unit <= swapped.size(); at += unit) std::reverse(&swapped[at], &swapped[at] + unit);
              index = tree.AddOwnedStorage(t.dtype, std::move(swapped));
            } else {
              index = tree.AddStorage({t.dtype, data});
            }
            slot = storage_for.emplace(std::make_pair(t.storage, t.dtype), index).first;
          }
          out.kind = SaveKind::kTensor;
          out.index = static_cast<uint32_t>(tree.tensors.size());
          SaveTensor st_out;
          st_out.dtype = t.dtype;
          st_out.shape = t.shape;
          st_out.stride = t.stride;
          st_out.storage_offset = t.storage_offset;
          st_out.storage = slot->second;
          st_out.parameter = t.parameter;
          st_out.requires_grad = t.requires_grad;
          tree.tensors.push_back(std::move(st_out));
          tensor_value.emplace(v.index, map[w.id]);
          break;
        }
        default:
          return MakeError(ErrorCode::kUnsupportedFormat, 0,
                           "the " + std::string(ValueKindName(v.kind)) + " at '" + w.path.substr(0, 200) +
                               "' cannot be written to a torch zip by ckptguard");
      }
      tree.values[map[w.id]] = std::move(out);
    }
    return tree;
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory converting a checkpoint");
  }
}

}  // namespace ckptguard

#include "ckptguard/torch_legacy.h"

#include <set>
#include <optional>
#include <unordered_map>

#include "ckptguard/storage_types.h"

namespace ckptguard {
namespace {

constexpr int kNumPickles = 5;

std::string Num(uint64_t v) { return std::to_string(v); }

constexpr int64_t kLegacyProtocolVersion = 1001;
// 0x1950a86a20f9469cfc6c, little-endian, as LONG1 writes it.
constexpr std::string_view kLegacyMagicLE = "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

}  // namespace

bool IsLegacyHeaderPickle(std::span<const PickleOp> ops, int index) {
  // PROTO and FRAME (torch.save's pickle_protocol >= 4 frames every pickle)
  // do nothing to the stack: the body is one int and STOP.
  std::vector<const PickleOp*> body;
  for (const PickleOp& op : ops) {
    if (op.code != Opcode::kProto && op.code != Opcode::kFrame) body.push_back(&op);
  }
  if (body.size() != 2 || body[1]->code != Opcode::kStop) return false;
  const PickleArg& arg = body[0]->arg;
  if (index == 1) {
    return (arg.type == PickleArgType::kInt && arg.int_value == kLegacyProtocolVersion) ||
           (arg.type == PickleArgType::kUInt && arg.uint_value == kLegacyProtocolVersion);
  }
  if (arg.type != PickleArgType::kBigInt) return false;
  // Compare values, not encodings: drop redundant sign-extension bytes.
  std::string_view data = arg.Data();
  while (data.size() > 1 && data.back() == '\0' && static_cast<uint8_t>(data[data.size() - 2]) < 0x80) {
    data.remove_suffix(1);
  }
  return data == kLegacyMagicLE;
}

namespace {

// HeaderOps keeps the ops of one pickle only while it could be a header
// pickle (PROTO, one int, STOP): a longer pickle (a hostile one in the magic
// number's place) is decoded to its STOP without keeping its ops.
class HeaderOps {
 public:
  void Add(PickleOp op) {
    if (op.code != Opcode::kProto && op.code != Opcode::kFrame) ++body_;
    if (body_ > 2 || ops_.size() >= kMaxOps) shaped_ = false;
    if (shaped_) ops_.push_back(std::move(op));
  }
  // Is says whether the pickle was header pickle number `index` (0, 1).
  bool Is(int index) const { return shaped_ && IsLegacyHeaderPickle(ops_, index); }

 private:
  static constexpr size_t kMaxOps = 8;
  std::vector<PickleOp> ops_;
  size_t body_ = 0;
  bool shaped_ = true;
};

}  // namespace

bool LooksLikeTorchLegacy(Bytes file, const PickleLimits& limits, Budget* budget) {
  PickleDecoder decoder(file, limits);
  for (int pickle = 0; pickle < 2; ++pickle) {
    HeaderOps header;
    while (true) {
      Result<PickleOp> op = decoder.Next();
      if (!op) return false;
      if (budget != nullptr && !budget->Charge(BudgetKind::kOpcodes, 1, op->offset, "", "legacy format check")) {
        return false;
      }
      const bool stop = op->code == Opcode::kStop;
      header.Add(std::move(*op));
      if (stop) break;
    }
    if (header.Is(pickle)) return true;
    if (decoder.AtEnd()) return false;
  }
  return false;
}

Result<LegacyCheckpoint> ParseTorchLegacy(Bytes file, const PickleLimits& limits, Budget* budget) {
  // The five pickles are decoded as a stream, never kept whole: the header
  // pickles keep their few ops (to check them), the object pickle is walked
  // for its storages afterwards, the key pickle is read as it decodes.
  LegacyCheckpoint out;
  PickleDecoder decoder(file, limits);
  HeaderOps header[2];
  std::vector<std::string> keys;
  for (int pickle = 0; pickle < kNumPickles; ++pickle) {
    out.pickle_offsets[pickle] = decoder.Offset();
    while (true) {
      if (decoder.AtEnd() && decoder.BetweenPickles()) {
        return MakeError(ErrorCode::kTruncated, decoder.Offset(),
                         "legacy torch file ends after " + Num(static_cast<uint64_t>(pickle)) + " of its 5 pickles");
      }
      CKG_ASSIGN_OR_RETURN(PickleOp op, decoder.Next());
      if (budget != nullptr) CKG_TRY(budget->Charge(BudgetKind::kOpcodes, 1, op.offset, "", "legacy format"));
      const bool stop = op.code == Opcode::kStop;
      if (pickle < 2) {
        header[pickle].Add(std::move(op));
      } else if (pickle == 4) {
        // Pickle 5: a list of key strings and nothing else.
        switch (op.code) {
          case Opcode::kProto: case Opcode::kFrame: case Opcode::kEmptyList: case Opcode::kMark:
          case Opcode::kAppend: case Opcode::kAppends: case Opcode::kBinPut: case Opcode::kLongBinPut:
          case Opcode::kPut: case Opcode::kMemoize: case Opcode::kStop:
            break;
          case Opcode::kBinUnicode: case Opcode::kShortBinUnicode: case Opcode::kBinUnicode8:
          case Opcode::kUnicode:
          // Python 2 wrote its str keys as byte strings; torch.load decodes
          // them as UTF-8 (a key that is not UTF-8 matches no storage the
          // loader accepts, so the load fails as torch's does).
          case Opcode::kShortBinString: case Opcode::kBinString:
            keys.emplace_back(op.arg.Data());
            break;
          default:
            out.anomalies.push_back({"legacy.keys_pickle_unexpected", op.offset, "",
                                     "the storage-key pickle holds " + std::string(op.Info().name) +
                                         ", not just a list of strings"});
            break;
        }
      }
      if (stop) break;
    }
  }
  if (!header[0].Is(0)) {
    out.anomalies.push_back({"legacy.bad_magic", out.pickle_offsets[0], "",
                             "the first pickle is not the magic number; torch runs it before checking"});
  }
  if (!header[1].Is(1)) {
    out.anomalies.push_back({"legacy.bad_protocol", out.pickle_offsets[1], "",
                             "the second pickle is not the protocol version 1001"});
  }
  // The object pickle (the fourth), walked for its storage persistent ids.
  {
    const uint64_t begin = out.pickle_offsets[3];
    std::optional<Error> walk_error;
    out.storages = CollectStorageRefs(file.subspan(static_cast<size_t>(begin),
                                                   static_cast<size_t>(out.pickle_offsets[4] - begin)),
                                      limits, &walk_error, budget);
    if (walk_error && !walk_error->limit.empty()) {
      walk_error->offset += begin;
      return std::unexpected(std::move(*walk_error));
    }
    for (StorageRef& ref : out.storages) ref.offset += begin;
  }
  std::unordered_map<std::string, const StorageRef*> by_key;
  for (const StorageRef& ref : out.storages) by_key.emplace(ref.key, &ref);

  std::set<std::string> seen;
  ByteCursor records(file.subspan(static_cast<size_t>(decoder.Offset())), decoder.Offset());
  out.records_offset = decoder.Offset();
  for (const std::string& key : keys) {
    if (!seen.insert(key).second) {
      out.anomalies.push_back({"legacy.duplicate_key", records.Offset(), key,
                               "storage key listed twice; torch reads a record for each"});
    }
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      return MakeError(ErrorCode::kMalformed, records.Offset(),
                       "storage key '" + key + "' has no storage in the object pickle", key);
    }
    const StorageRef& ref = *it->second;
    std::optional<StorageType> type = ref.module == "torch" ? FindStorageType(ref.storage_type) : std::nullopt;
    if (!type) {
      return MakeError(ErrorCode::kMalformed, ref.offset,
                       "unknown storage type " + ref.module + "." + ref.storage_type, key);
    }
    LegacyRecord record;
    record.key = key;
    record.storage_type = ref.storage_type;
    record.elem_size = type->elem_size;
    record.declared_numel = ref.numel;
    record.count_offset = records.Offset();
    Result<uint64_t> count = records.ReadU64LE();
    if (!count) {
      return MakeError(ErrorCode::kTruncated, record.count_offset,
                       "file ends before the element count of storage '" + key + "'", key);
    }
    record.num_elements = *count;
    record.data_offset = records.Offset();
    if (record.num_elements > records.Remaining() / record.elem_size) {
      return MakeError(ErrorCode::kTruncated, record.count_offset,
                       "storage '" + key + "' declares " + Num(record.num_elements) + " elements of " +
                           Num(record.elem_size) + " bytes, only " + Num(records.Remaining()) + " bytes remain",
                       key);
    }
    record.data_len = record.num_elements * record.elem_size;
    CKG_TRY(records.Skip(record.data_len));
    if (ref.numel < 0 || static_cast<uint64_t>(ref.numel) != record.num_elements) {
      out.anomalies.push_back({"legacy.numel_mismatch", record.count_offset, key,
                               "record holds " + Num(record.num_elements) + " elements, its persistent id says " +
                                   std::to_string(ref.numel) + " (torch refuses: storage has wrong size)"});
    }
    out.records.push_back(std::move(record));
  }
  for (const auto& [key, ref] : by_key) {
    if (!seen.contains(key)) {
      out.anomalies.push_back({"legacy.unlisted_storage", ref->offset, key,
                               "storage in the object pickle has no record in the key list"});
    }
  }
  if (!records.Empty()) {
    out.anomalies.push_back({"legacy.trailing_data", records.Offset(), "",
                             Num(records.Remaining()) + " bytes after the last storage record"});
  }
  return out;
}

}  // namespace ckptguard

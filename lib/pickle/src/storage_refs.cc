#include "ckptguard/storage_refs.h"

#include <optional>

#include "ckptguard/pickle_machine.h"
#include "literal_domain.h"

namespace ckptguard {
namespace {

// Walker runs one pickle through the machine in the literal domain and keeps
// every persistent id shaped like a torch storage (ParseStoragePid).
class Walker {
 public:
  explicit Walker(Budget* budget) : budget_(budget != nullptr ? *budget : own_budget_) {
    domain_.on_storage = [this](const PickleOp& op, const StoragePid& pid) {
      refs_.push_back(StorageRef{op.offset, std::string(pid.module), std::string(pid.type), std::string(pid.key),
                                 std::string(pid.location), pid.numel});
    };
  }

  std::vector<StorageRef> Run(std::span<const PickleOp> ops) {
    for (const PickleOp& op : ops) {
      if (!machine_.Step(op) || op.code == Opcode::kStop) break;
    }
    return std::move(refs_);
  }

  std::vector<StorageRef> RunDecoder(PickleDecoder& decoder, std::optional<Error>* error) {
    Result<MachineId> root = machine_.Run(decoder);
    if (!root && error != nullptr) {
      *error = root.error();
      if (machine_.ended_before_stop()) {
        *error = Error{ErrorCode::kTruncated, decoder.Offset(), "", "pickle exhausted before STOP"};
      }
    }
    return std::move(refs_);
  }

 private:
  Budget own_budget_;
  Budget& budget_;
  LiteralDomain domain_;
  PickleMachine<LiteralDomain> machine_{domain_, MachineLimits{}, budget_, MachineMode::kLenient};
  std::vector<StorageRef> refs_;
};

}  // namespace

std::vector<StorageRef> CollectStorageRefs(std::span<const PickleOp> ops, Budget* budget) {
  return Walker(budget).Run(ops);
}

std::vector<StorageRef> CollectStorageRefs(Bytes data, const PickleLimits& limits, std::optional<Error>* error,
                                           Budget* budget) {
  PickleDecoder decoder(data, limits);
  return Walker(budget).RunDecoder(decoder, error);
}

}  // namespace ckptguard

// Allowlist: the globals a weights-only checkpoint may name, as data.
//
// The hardened VM never imports or calls anything. A global in a pickle is
// looked up here and bound to one Action from a closed set that lib/src/vm.cc
// implements (build a tensor, an OrderedDict, a dtype value...); a global that
// is not listed stops the load. The list itself is data: rules/allowlist.toml
// is built into the binary (BuiltinAllowlist), and a user's TOML file in the
// same format can extend or replace it at run time (LoadAllowlistFile).
#ifndef CKPTGUARD_ALLOWLIST_H_
#define CKPTGUARD_ALLOWLIST_H_

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// AllowAction is what the VM does with an allowed global.
enum class AllowAction : uint8_t {
  kRebuildTensor,             // _rebuild_tensor(storage, storage_offset, size, stride): torch <= 0.3 files
  kRebuildTensorV2,           // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])
  kRebuildTensorV3,           // _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, meta])
  kRebuildParameter,          // _rebuild_parameter(data, requires_grad, hooks)
  kRebuildParameterWithState, // _rebuild_parameter_with_state(data, requires_grad, hooks, state)
  kRebuildQTensor,            // _rebuild_qtensor(storage, offset, size, stride, quantizer_params, requires_grad, hooks)
  kRebuildSparse,             // _rebuild_sparse_tensor(layout, data) (COO; CSR/CSC/BSR/BSC in torch 2.x) and
                              // torch 1.13's _rebuild_sparse_csr_tensor(layout, data): components, no dense data
  kRebuildMeta,               // _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad): no data
  kRebuildNested,             // _rebuild_nested_tensor(buffer, sizes, strides, storage_offsets) (torch 2.x):
                              // components, no dense data
  kGetLayout,                 // torch.serialization._get_layout("torch.sparse_coo"): a layout constant by name
  kRebuildFromNumpy,          // _rebuild_device_tensor_from_numpy(ndarray, dtype, device, requires_grad): the
                              // array (a tensor once numpy arrays load) when dtype is the array's own
  kStorageType,               // a storage class named in persistent ids (dtype set)
  kDtype,                     // a dtype object such as torch.float16 (dtype set)
  kTorchSize,                 // torch.Size(tuple)
  kDevice,                    // torch.device(str[, index])
  kOrderedDict,               // collections.OrderedDict([items])
  kCounter,                   // collections.Counter([dict])
  kCodecsEncode,              // _codecs.encode(text, 'latin1') -> bytes
  kSet,                       // builtins.set([items])
  kFrozenSet,                 // builtins.frozenset([items])
  kComplex,                   // builtins.complex(real, imag)
  kByteArray,                 // builtins.bytearray([bytes])
  kBytes,                     // builtins.bytes() (protocol 2 writes b'' this way)
  kUninitializedTensor,       // nn.parameter.UninitializedParameter/Buffer(requires_grad[, device, dtype]):
                              // a lazy module's placeholder, no data (an object, vm.cc)
  kIdentity,                  // returns its first argument: TorchScript's torch.jit._pickle.build_intlist
                              // (and the other build_*list) and restore_type_tag(value, type_str)
  kConstant,                  // a named constant (qscheme, layout); not callable
  kRecord,                    // a class the user vouches for as a record: a call or NEWOBJ of it (and
                              // the BUILD after) makes a kRecord value; nothing is called
  kUnsupported,               // known, deliberately not loaded: the load fails naming it
};

// AllowActionName returns the TOML spelling ("rebuild_tensor_v2", ...).
std::string_view AllowActionName(AllowAction action);

struct AllowEntry {
  AllowAction action = AllowAction::kUnsupported;
  std::optional<DType> dtype;  // kStorageType, kDtype
  std::string why;
};

// AllowlistLimits bounds a rules file: its size and entry count.
struct AllowlistLimits {
  // Largest rules file in bytes. Default 4 MiB (the built-in list is ~12 KiB).
  uint64_t max_file_len = uint64_t{4} << 20;
  // Most [[allow]] entries. Default 100,000.
  uint64_t max_entries = 100'000;
};

class Allowlist;
Result<Allowlist> ParseAllowlist(std::string_view text, std::string_view source_name,
                                 const AllowlistLimits& limits = {});

class Allowlist {
 public:
  // Find returns the entry for "module.name" after module aliasing
  // ("__builtin__" -> "builtins"), or nullptr.
  const AllowEntry* Find(std::string_view module, std::string_view name) const;
  // CanonicalModule applies the module aliases.
  std::string_view CanonicalModule(std::string_view module) const;

  // Merge adds (or with replace, first clears and then adds) `other`'s entries.
  void Merge(const Allowlist& other, bool replace);

  const std::map<std::string, AllowEntry, std::less<>>& entries() const { return entries_; }
  const std::map<std::string, std::string, std::less<>>& module_aliases() const { return aliases_; }
  // ReplaceMode is true when the file this list came from says mode = "replace".
  bool replace_mode() const { return replace_mode_; }

 private:
  friend Result<Allowlist> ParseAllowlist(std::string_view, std::string_view, const AllowlistLimits&);
  std::map<std::string, AllowEntry, std::less<>> entries_;    // "module.name" -> entry
  std::map<std::string, std::string, std::less<>> aliases_;   // module -> canonical module
  bool replace_mode_ = false;
};

// ParseAllowlist parses the TOML text of a rules file (see rules/allowlist.toml
// for the format). `source_name` names the file in errors. Failure: kMalformed
// with the line in the detail, or kLimitExceeded.
// (ParseAllowlist is declared above the class.)

// CheckTomlText is run on a rules file before toml++ parses it (here and by
// the scanner's RuleSet). TOML 1.0 allows non-ASCII characters only inside
// strings and comments; toml++ 3.3 (Debian 12's) asks whether such a
// character is whitespace where it may not be (between tokens, and after a
// backslash in a basic string), and for most code points from U+00A1 to
// U+0499 that question reaches __builtin_unreachable (undefined behaviour;
// found by fuzz/rules_fuzzer.cc, see fuzz/regressions/rules/). Failure:
// kMalformed at the byte offset, the line in the detail.
Status CheckTomlText(std::string_view text, std::string_view source_name);

// BuiltinAllowlist is rules/allowlist.toml as built into the binary, parsed
// once. Never fails (a bad built-in file fails the build's tests).
const Allowlist& BuiltinAllowlist();

// LoadAllowlistFile reads a user's rules file and returns the built-in list
// extended by it, or only its entries when it says mode = "replace".
Result<Allowlist> LoadAllowlistFile(const std::filesystem::path& path, const AllowlistLimits& limits = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_ALLOWLIST_H_

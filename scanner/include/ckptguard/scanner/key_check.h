// Key checks with torch 1.13's Module.load_state_dict semantics: what would
// `model.load_state_dict(state_dict, strict=...)` do with a checkpoint's
// state dict, for a model described by a reference state dict or a schema?
//
// The checkpoint's state dict is taken exactly as torch sees it: the items of
// one dict (the root, or the value at a dotted --prefix), keys as they are,
// nested dicts and other non-tensors as values (never flattened into dotted
// keys). The model is described by its state_dict() keys (dtype and shape),
// its modules (the reference's `_metadata`, which torch's state_dict() always
// writes) and which of them are None. Module._load_from_state_dict is then
// replayed module by module, in the order torch visits them, with the hooks
// of torch's own modules that change keys:
//   - _NormBase._load_from_state_dict (BatchNorm*, InstanceNorm* with
//     track_running_stats, SyncBatchNorm, the lazy variants): a missing
//     `num_batches_tracked` is filled with 0 when the checkpoint's
//     `_metadata` gives the module no version or a version below 2;
//   - LazyModuleMixin._lazy_load_hook: an uninitialised parameter takes the
//     checkpoint's shape (a lazy parameter never mismatches);
//   - the 0-d rule of _load_from_state_dict: a 1-d tensor loads into a 0-d
//     parameter as its first element (an empty one raises IndexError);
//   - `_extra_state`: a module that defines set_extra_state (its reference
//     state dict has `_extra_state`) takes any value; for any other module
//     the key is unexpected.
// Custom load hooks, overridden _load_from_state_dict and set_extra_state are
// user code: the result says where the answer depends on them.
#ifndef CKPTGUARD_SCANNER_KEY_CHECK_H_
#define CKPTGUARD_SCANNER_KEY_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"
#include "ckptguard/dcp.h"
#include "ckptguard/error.h"
#include "ckptguard/sharded.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::scanner {

// ExpectedTensor is one key of a model's state_dict(): a tensor with a dtype
// (optional) and shape, an uninitialised lazy parameter or buffer (shape
// unknown until loaded), or a non-tensor value (`_extra_state`).
struct ExpectedTensor {
  std::string key;
  std::optional<std::string> dtype;  // "float32"; unset: any dtype
  std::vector<int64_t> shape;
  bool lazy = false;                 // UninitializedParameter/Buffer: shape is taken from the checkpoint
  bool tensor = true;                // false: a non-tensor value (only `_extra_state` may be)
};

// ExpectedModule is one module of the model, as `_metadata` names it.
struct ExpectedModule {
  std::string path;                // "" for the model itself, "encoder.0"
  std::optional<int64_t> version;  // its class's _version (BatchNorm: 2)
  bool none = false;               // registered as None: keys under it are ignored
  bool spectral_norm = false;      // its metadata has "spectral_norm": torch.nn.utils.spectral_norm's load hook
};

// ModelSchema is what check needs to know about a model.
struct ModelSchema {
  std::vector<ExpectedTensor> keys;     // in state_dict() order
  std::vector<ExpectedModule> modules;  // in state_dict() order ("" first); empty without metadata
  // True when `modules` comes from the reference's `_metadata` (so modules
  // without parameters are known, and versions tell BatchNorm apart); false
  // when only the keys are known and modules are inferred from their prefixes.
  bool has_metadata = false;
  std::string source;  // "reference checkpoint" or "JSON schema"
};

// LoadSchema reads what a model expects. `path` is decided by content:
//   - a JSON object mapping each key to {"dtype": "float32", "shape": [..]}
//     ("shape": null for an uninitialised lazy parameter, {"tensor": false}
//     for a non-tensor `_extra_state`), with an optional "_metadata": {module
//     path: {"version": n}, or null for a module registered as None}, as
//     torch's state_dict()._metadata gives it;
//   - a sharded checkpoint's index (*.index.json): the tensors of its shards;
//   - any checkpoint ckptguard loads whose root (or the dict at dotted
//     `prefix`) is a model's state_dict(): its tensors, its `_extra_state`
//     values, its uninitialised lazy parameters and its `_metadata`. A nested
//     dict or another non-tensor at a key other than `_extra_state` is not
//     something state_dict() writes, and fails naming the key.
Result<ModelSchema> LoadSchema(const std::string& path, const std::string& prefix = "");

struct KeyCheckOptions {
  bool strict = true;         // load_state_dict(strict=True): missing/unexpected keys raise
  std::string prefix;         // dotted path of the state dict inside the checkpoint ("model", "state_dict")
  // strip_prefix models torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(sd, P)
  // as torch 1.13 runs it: keys starting with P lose it (in sorted order, so
  // renamed keys move to the end); `_metadata` is left as it is.
  std::optional<std::string> strip_prefix;
  // model_class names the model in torch's message ("Error(s) in loading
  // state_dict for Net:"); the state dict does not say.
  std::string model_class = "<model class>";
  bool hints = true;          // try known wrapper prefixes and sub-dicts when strict would fail
  // max_hint_sub_dicts bounds how many of the state dict's dict values are
  // tried as --prefix for a hint (each try replays the load, up to five
  // times). Default 16: a training checkpoint has a handful of them.
  size_t max_hint_sub_dicts = 16;
};

// PyException is an exception torch would raise: its type and str().
struct PyException {
  std::string type;     // "RuntimeError", "TypeError", "AttributeError", "IndexError"
  std::string message;
};

// ModeResult is what one call of load_state_dict does.
struct ModeResult {
  std::optional<PyException> exception;  // nullopt: it returns _IncompatibleKeys(missing, unexpected)
  bool ok() const { return !exception.has_value(); }
};

struct KeyCheckResult {
  // What the checkpoint's state dict is to torch.
  std::string state_dict_type;  // "<class 'collections.OrderedDict'>"
  bool is_mapping = false;      // a dict or OrderedDict: torch takes it
  size_t num_keys = 0;          // its keys (after strip_prefix)
  // Its `_metadata` (module path -> version), nullopt when it has none (a
  // plain dict, or an OrderedDict saved without it).
  std::optional<std::vector<std::pair<std::string, std::optional<int64_t>>>> metadata;
  size_t num_expected = 0;      // tensor keys of the model (load targets)

  // As torch 1.13 computes them (in both modes: strict only decides whether
  // they raise), in torch's order.
  std::vector<std::string> missing;      // expected, absent
  std::vector<std::string> unexpected;   // present, matching no parameter, buffer or child
  struct Mismatch {
    std::string key;
    std::string kind;    // "size" (size mismatch), "not_a_tensor", "running_stats"
    std::string detail;  // torch's message for it
  };
  std::vector<Mismatch> mismatched;      // each is an error message: raises in both modes
  struct Note {
    std::string key;
    std::string detail;
  };
  std::vector<Note> converted;   // dtype differences: torch copies with conversion
  std::vector<Note> ignored;     // keys torch reads nothing from and does not report
  std::vector<Note> filled;      // keys a hook of torch's modules adds (BatchNorm's num_batches_tracked)
  std::vector<std::string> loaded;  // keys whose tensors strict=False copies into the model
  std::vector<std::string> caveats; // where the answer depends on user code or what the reference lacks
  std::vector<std::string> hints;   // --prefix / --strip-prefix that would make it fit

  ModeResult strict;      // load_state_dict(strict=True)
  ModeResult non_strict;  // load_state_dict(strict=False)
  bool ok = true;         // the requested mode's ok()
};

// CheckKeys replays load_state_dict for the checkpoint's state dict (at
// options.prefix) against `model`. Fails only when the prefix names nothing
// or the walk exceeds the checkpoint's limits; everything torch would raise
// is a result.
Result<KeyCheckResult> CheckKeys(const Checkpoint& checkpoint, const ModelSchema& model,
                                 const KeyCheckOptions& options = {});
// CheckKeys of a sharded checkpoint: its shards' dicts as one state dict (in
// the index's shard order, no _metadata), as transformers'
// load_sharded_checkpoint loads them into the model. options.prefix must be
// empty (a shard is a plain dict of tensors).
Result<KeyCheckResult> CheckKeys(const ShardedCheckpoint& sharded, const ModelSchema& model,
                                 const KeyCheckOptions& options = {});
// CheckKeys of a torch.distributed.checkpoint folder: its dotted keys under
// options.prefix (without it) as one state dict, a tensor saved in chunks
// with its whole shape.
Result<KeyCheckResult> CheckKeys(const DcpCheckpoint& dcp, const ModelSchema& model,
                                 const KeyCheckOptions& options = {});

// CheckKeysOfPath loads `path` with `load` as `ckptguard check` does (a
// checkpoint file, a sharded checkpoint's *.index.json, or a DCP folder),
// runs the CheckKeys above that fits it, and then checks the file did not
// change while it was read. Fails with the load's error or CheckKeys'.
Result<KeyCheckResult> CheckKeysOfPath(const std::string& path, const ModelSchema& model,
                                       const KeyCheckOptions& options = {}, const LoadOptions& load = {});

}  // namespace ckptguard::scanner

CKPTGUARD_API_END

#endif  // CKPTGUARD_SCANNER_KEY_CHECK_H_

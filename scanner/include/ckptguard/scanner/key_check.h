// Key checks with load_state_dict semantics: does a checkpoint's state dict
// fit what a model expects?
#ifndef CKPTGUARD_SCANNER_KEY_CHECK_H_
#define CKPTGUARD_SCANNER_KEY_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"
#include "ckptguard/error.h"

namespace ckptguard::scanner {

// ExpectedTensor is one key of a schema: dtype (optional) and shape.
struct ExpectedTensor {
  std::string key;
  std::optional<std::string> dtype;  // "float32"; unset: any dtype
  std::vector<int64_t> shape;
};

// LoadSchema reads an expectation: either a JSON schema file mapping key ->
// {"dtype": "...", "shape": [...]} (like tests/data/corpus/benign/mlp.schema.json)
// or, when the file is a checkpoint, its state dict (under `prefix`).
Result<std::vector<ExpectedTensor>> LoadSchema(const std::string& path, const std::string& prefix = "");

struct KeyCheckOptions {
  bool strict = true;         // load_state_dict(strict=True): missing/unexpected keys fail
  std::string prefix;         // sub-dict of the checkpoint to check ("model")
};

struct KeyCheckResult {
  std::vector<std::string> missing;      // expected, not in the checkpoint
  std::vector<std::string> unexpected;   // in the checkpoint, not expected
  struct Mismatch {
    std::string key;
    std::string detail;  // "shape [256, 20] in the checkpoint, [20, 256] expected" / dtype
  };
  std::vector<Mismatch> mismatched;      // shape (fails in both modes) or dtype (reported)
  // A prefix every checkpoint key has and no expected key has (or the
  // reverse), e.g. "module." from DataParallel: named here, and the keys are
  // compared without it.
  std::optional<std::string> stripped_prefix;
  bool ok = true;  // what load_state_dict would do: false on a shape mismatch, or (strict) on missing/unexpected keys
};

// CheckKeys compares the checkpoint's state dict (under options.prefix)
// against `expected`.
Result<KeyCheckResult> CheckKeys(const Checkpoint& checkpoint, const std::vector<ExpectedTensor>& expected,
                                 const KeyCheckOptions& options = {});

}  // namespace ckptguard::scanner

#endif  // CKPTGUARD_SCANNER_KEY_CHECK_H_

// `ckptguard check`: load_state_dict's key and shape checks, without torch.
#include "check_command.h"

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "ckptguard/printable.h"
#include "ckptguard/scanner/key_check.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

// ordered_json: fields print in the documented order.
using json = nlohmann::ordered_json;
using scanner::ExpectedTensor;
using scanner::KeyCheckResult;

std::string Dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

std::string Plural(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

json ErrorJson(const std::string& file, const Error& e) {
  return json{{"file", file},
              {"code", std::string(ErrorCodeName(e.code))},
              {"offset", e.offset},
              {"where", e.where},
              {"detail", e.detail},
              {"message", e.ToString()}};
}

int Fail(const CheckFlags& flags, const std::string& file, const Error& error) {
  ReportError(file, error);
  if (flags.json) {
    std::cout << json{{"path", flags.file}, {"expect", flags.expect}, {"error", ErrorJson(file, error)}}.dump(
                     -1, ' ', false, json::error_handler_t::replace)
              << "\n";
  }
  return kExitError;
}

// A shape mismatch (or an ambiguous key) fails the load; a dtype difference
// alone is converted by load_state_dict.
bool IsFatal(const KeyCheckResult::Mismatch& m) { return !m.detail.starts_with("dtype "); }

// PrefixHint: "P" when every key of `keys` is in `others` as "P.key" (the
// checkpoint's weights under "model." of a training checkpoint), else "".
std::string PrefixHint(const std::vector<std::string>& keys, const std::vector<std::string>& others) {
  if (keys.empty() || others.empty()) return "";
  const std::unordered_set<std::string> other_set(others.begin(), others.end());
  const std::string& first = keys.front();
  for (const std::string& o : others) {
    if (o.size() <= first.size() + 1 || !o.ends_with("." + first)) continue;
    const std::string prefix = o.substr(0, o.size() - first.size());  // "model."
    bool all = true;
    for (const std::string& k : keys) all = all && other_set.contains(prefix + k);
    if (all) return prefix.substr(0, prefix.size() - 1);
  }
  return "";
}

std::string Verdict(const CheckFlags& flags, const KeyCheckResult& r, bool prefix_on_expected_side) {
  const std::string call = flags.non_strict ? "load_state_dict(strict=False)" : "load_state_dict(strict=True)";
  size_t fatal = 0;
  for (const auto& m : r.mismatched) fatal += IsFatal(m) ? 1 : 0;
  const size_t converted = r.mismatched.size() - fatal;
  if (!r.ok) {
    std::vector<std::string> why;
    if (!flags.non_strict && !r.missing.empty()) why.push_back(Plural(r.missing.size(), "missing key", "missing keys"));
    if (!flags.non_strict && !r.unexpected.empty()) {
      why.push_back(Plural(r.unexpected.size(), "unexpected key", "unexpected keys"));
    }
    if (fatal) why.push_back(Plural(fatal, "shape mismatch", "shape mismatches"));
    std::string out = "does not fit: " + call + " would fail";
    for (size_t i = 0; i < why.size(); ++i) out += (i ? ", " : ": ") + why[i];
    return out;
  }
  std::string out = "fits: " + call + " would succeed";
  if (r.stripped_prefix) {
    out += prefix_on_expected_side
               ? " once the model is unwrapped (the expected keys carry '" + *r.stripped_prefix +
                     "': load into model.module)"
               : " once '" + *r.stripped_prefix + "' is removed from the checkpoint's keys";
  }
  if (!r.missing.empty()) out += ", leaving " + Plural(r.missing.size(), "missing key", "missing keys") + " as initialised";
  if (!r.unexpected.empty()) out += ", ignoring " + Plural(r.unexpected.size(), "unexpected key", "unexpected keys");
  if (converted) out += ", converting the dtype of " + Plural(converted, "tensor", "tensors");
  return out;
}

void PrintText(const CheckFlags& flags, const KeyCheckResult& r, const std::vector<ExpectedTensor>& expected,
               size_t num_checkpoint_keys, bool prefix_on_expected_side) {
  std::map<std::string, const ExpectedTensor*, std::less<>> by_key;
  const size_t strip = r.stripped_prefix && prefix_on_expected_side ? r.stripped_prefix->size() : 0;
  for (const ExpectedTensor& e : expected) by_key.emplace(e.key.substr(std::min(strip, e.key.size())), &e);

  std::cout << "== " << Printable(flags.file) << "\n";
  std::cout << "checkpoint: " << Plural(num_checkpoint_keys, "tensor", "tensors")
            << (flags.prefix.empty() ? "" : " under '" + flags.prefix + "'") << "; expected: "
            << Plural(expected.size(), "key", "keys") << " from " << flags.expect << "\n";
  if (r.stripped_prefix) {
    std::cout << "stripped prefix: '" << Printable(*r.stripped_prefix) << "' (every "
              << (prefix_on_expected_side ? "expected" : "checkpoint")
              << " key starts with it, as DataParallel writes them; keys below are shown without it)\n";
  }
  if (!r.missing.empty()) {
    std::cout << "missing (" << r.missing.size() << "): expected, not in the checkpoint\n";
    for (const std::string& key : r.missing) {
      std::cout << "  " << Printable(key);
      if (auto it = by_key.find(key); it != by_key.end()) {
        std::cout << "  " << Printable(it->second->dtype.value_or("any dtype")) << " " << Dims(it->second->shape);
      }
      std::cout << "\n";
    }
  }
  if (!r.unexpected.empty()) {
    std::cout << "unexpected (" << r.unexpected.size() << "): in the checkpoint, not expected\n";
    for (const std::string& key : r.unexpected) std::cout << "  " << Printable(key) << "\n";
  }
  if (!r.mismatched.empty()) {
    std::cout << "mismatched (" << r.mismatched.size() << "):\n";
    for (const auto& m : r.mismatched) std::cout << "  " << Printable(m.key) << ": " << Printable(m.detail) << "\n";
  }
  if (const std::string hint = PrefixHint(r.missing, r.unexpected); !hint.empty()) {
    std::cout << "hint: every missing key is in the checkpoint under '" << Printable(hint) << ".'; try --prefix "
              << Printable(hint) << "\n";
  } else if (const std::string reverse = PrefixHint(r.unexpected, r.missing); !reverse.empty()) {
    std::cout << "hint: every unexpected key is expected under '" << Printable(reverse)
              << ".'; with a reference checkpoint, try --expect-prefix " << Printable(reverse) << "\n";
  }
  std::cout << Printable(Verdict(flags, r, prefix_on_expected_side)) << "\n";
}

}  // namespace

void AddCheckCommand(CLI::App& app, CheckFlags& flags) {
  CLI::App* cmd = app.add_subcommand("check", "Check a checkpoint's keys and shapes against what a model expects");
  cmd->footer(R"(What it does:
  Answers "would model.load_state_dict(torch.load(FILE)) work?" without torch
  and without running the file: the checkpoint is loaded by the hardened VM (a
  file that asks for any global outside the allowlist is refused, exit 2), and
  its state dict is compared with SCHEMA the way torch's Module.load_state_dict
  compares it:
    missing keys     expected by the model, absent from the checkpoint
    unexpected keys  in the checkpoint, not expected
    shape mismatch   fails in both modes (torch cannot copy it)
    dtype difference reported only: torch copies with conversion
  --strict (the default, like torch) fails on missing or unexpected keys;
  --non-strict (strict=False) lists them and passes.

  SCHEMA is decided by content: a JSON object mapping each key to
  {"dtype": "float32", "shape": [256, 20]} ("dtype" optional; at most 64 MiB),
  or any checkpoint ckptguard loads (torch zip or legacy, safetensors, npz),
  whose state dict is then the expectation. A JSON schema comes from torch with
    json.dump({k: {"dtype": str(v.dtype)[6:], "shape": list(v.shape)}
               for k, v in model.state_dict().items()}, f)

  A full training checkpoint keeps the weights in a sub-dict: --prefix model
  (or model.) compares only the keys under it. When every key on one side
  starts with the same first component and stripping it makes keys match
  (DataParallel's "module."), it is stripped, named in the output
  ("stripped prefix", "stripped_prefix") and the keys are compared without it.
  Nothing subtler is guessed.

  --json prints one object: {"path", "expect", "strict", "prefix",
  "stripped_prefix", "missing", "unexpected", "mismatched": [{"key",
  "detail"}], "ok"}; on an error {"path", "expect", "error": {...}}.

Exit status: 0 when it fits, 1 when it does not, 2 when FILE or SCHEMA cannot
be read or is refused (the error names the file, the global or limit, and the
byte offset).

Examples:
  ckptguard check model.safetensors --expect model.schema.json
  ckptguard check checkpoint.pt --prefix model --expect model.schema.json
  ckptguard check finetuned.pt --expect base_model.pt --non-strict
  ckptguard check model.pt --expect schema.json --json | jq .missing
)");
  cmd->add_option("file", flags.file, "The checkpoint to check")->required()->type_name("FILE");
  cmd->add_option("--expect", flags.expect, "What the model expects: a JSON schema or a reference checkpoint")
      ->required()
      ->type_name("SCHEMA");
  CLI::Option* strict = cmd->add_flag("--strict")->description(
      "Fail on missing or unexpected keys (the default, like torch)");
  CLI::Option* non_strict =
      cmd->add_flag("--non-strict", flags.non_strict, "Report missing and unexpected keys but pass (strict=False)");
  strict->excludes(non_strict);
  cmd->add_option("--prefix", flags.prefix, "Check only the state dict under this dotted path (e.g. model)");
  cmd->add_option("--expect-prefix", flags.expect_prefix,
                  "When SCHEMA is a checkpoint: take its state dict from under this dotted path");
  cmd->add_flag("--json", flags.json, "One JSON object: missing, unexpected, mismatched, ok");
  cmd->add_flag("--allow-anomalies", flags.load.allow_anomalies,
                "Load even when the container has anomalies (reads what torch would read)");
  AddPickleLimitOptions(*cmd, flags.load.limits.pickle);
  AddBudgetOptions(*cmd, flags.load.budget);
}

int RunCheck(CheckFlags& flags) {
  flags.load.container.pickle = flags.load.limits.pickle;
  Result<Checkpoint> ckpt = LoadCheckpoint(flags.file, flags.load);
  if (!ckpt) return Fail(flags, flags.file, ckpt.error());
  Result<std::vector<NamedTensor>> state_dict = ckpt->StateDict(flags.prefix);
  if (!state_dict) return Fail(flags, flags.file, state_dict.error());
  Result<std::vector<ExpectedTensor>> expected = scanner::LoadSchema(flags.expect, flags.expect_prefix);
  if (!expected) return Fail(flags, flags.expect, expected.error());
  Result<KeyCheckResult> result =
      scanner::CheckKeys(*ckpt, *expected, scanner::KeyCheckOptions{.strict = !flags.non_strict, .prefix = flags.prefix});
  if (!result) return Fail(flags, flags.file, result.error());
  if (Status unchanged = ckpt->CheckUnchanged(); !unchanged) return Fail(flags, flags.file, unchanged.error());

  // Which side carried the stripped prefix: the checkpoint (saved from a
  // wrapped model) or the expectation (a wrapped model).
  bool prefix_on_expected_side = false;
  if (result->stripped_prefix) {
    bool all_checkpoint = true;
    for (const NamedTensor& nt : *state_dict) all_checkpoint = all_checkpoint && nt.path.starts_with(*result->stripped_prefix);
    prefix_on_expected_side = !all_checkpoint;
  }

  if (flags.json) {
    json mismatched = json::array();
    for (const auto& m : result->mismatched) mismatched.push_back(json{{"key", m.key}, {"detail", m.detail}});
    json out{{"path", flags.file},
             {"expect", flags.expect},
             {"strict", !flags.non_strict},
             {"prefix", flags.prefix},
             {"stripped_prefix", result->stripped_prefix ? json(*result->stripped_prefix) : json(nullptr)},
             {"missing", result->missing},
             {"unexpected", result->unexpected},
             {"mismatched", std::move(mismatched)},
             {"ok", result->ok}};
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    PrintText(flags, *result, *expected, state_dict->size(), prefix_on_expected_side);
  }
  std::cout.flush();
  return result->ok ? kExitOk : kExitFindings;
}

}  // namespace ckptguard::cli

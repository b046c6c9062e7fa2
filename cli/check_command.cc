// `ckptguard check`: load_state_dict's key and shape checks, without torch.
#include "check_command.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

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

// Fail reports an error about `file` (the checkpoint `path` or the reference),
// with --json as `path`'s object in `doc`, and gives the exit status.
int Fail(const CheckFlags& flags, JsonFilesDocument& doc, const std::string& path, const std::string& file,
         const Error& error) {
  ReportError(file, error);
  if (flags.json) {
    doc.Add(DumpJson(json{{"path", path}, {"expect", flags.expect}, {"error", ErrorJson(file, error)}}, -1));
  }
  return kExitError;
}

json ExceptionJson(const std::optional<scanner::PyException>& e) {
  if (!e) return json(nullptr);
  return json{{"type", e->type}, {"message", e->message}};
}

json NotesJson(const std::vector<KeyCheckResult::Note>& notes, const char* detail_name) {
  json out = json::array();
  for (const auto& n : notes) out.push_back(json{{"key", n.key}, {detail_name, n.detail}});
  return out;
}

// PrintException prints torch's message line by line ("\n\t" joins its parts).
void PrintException(const scanner::PyException& e, const std::string& indent) {
  std::cout << Printable(e.type) << ":";
  size_t start = 0;
  bool first = true;
  while (start <= e.message.size()) {
    size_t end = e.message.find('\n', start);
    if (end == std::string::npos) end = e.message.size();
    std::string_view line(e.message.data() + start, end - start);
    if (line.starts_with('\t')) line.remove_prefix(1);
    std::cout << (first ? " " : "\n" + indent + "    ") << Printable(line);
    first = false;
    start = end + 1;
  }
  std::cout << "\n";
}

std::string Verdict(const CheckFlags& flags, const KeyCheckResult& r) {
  const std::string call = flags.non_strict ? "load_state_dict(strict=False)" : "load_state_dict(strict=True)";
  const scanner::ModeResult& mode = flags.non_strict ? r.non_strict : r.strict;
  if (!mode.ok()) {
    std::string out = "does not fit: " + call + " would raise " + mode.exception->type;
    if (mode.exception->type == "RuntimeError") {
      std::vector<std::string> why;
      if (!flags.non_strict && !r.missing.empty()) why.push_back(Plural(r.missing.size(), "missing key", "missing keys"));
      if (!flags.non_strict && !r.unexpected.empty()) {
        why.push_back(Plural(r.unexpected.size(), "unexpected key", "unexpected keys"));
      }
      size_t size = 0;
      for (const auto& m : r.mismatched) size += m.kind == "size" ? 1 : 0;
      if (size) why.push_back(Plural(size, "size mismatch", "size mismatches"));
      if (r.mismatched.size() > size) {
        why.push_back(Plural(r.mismatched.size() - size, "value that is not a tensor", "values that are not tensors"));
      }
      for (size_t i = 0; i < why.size(); ++i) out += (i ? ", " : ": ") + why[i];
    }
    return out;
  }
  std::string out = "fits: " + call + " would succeed";
  if (!r.missing.empty()) out += ", leaving " + Plural(r.missing.size(), "missing key", "missing keys") + " as initialised";
  if (!r.unexpected.empty()) out += ", ignoring " + Plural(r.unexpected.size(), "unexpected key", "unexpected keys");
  if (!r.converted.empty()) out += ", converting the dtype of " + Plural(r.converted.size(), "tensor", "tensors");
  return out;
}

void PrintText(const CheckFlags& flags, const std::string& path, const KeyCheckResult& r,
               const scanner::ModelSchema& expected) {
  std::map<std::string, const ExpectedTensor*, std::less<>> by_key;
  for (const ExpectedTensor& e : expected.keys) by_key.emplace(e.key, &e);

  std::cout << "== " << Printable(path) << "\n";
  std::cout << "state dict: " << Printable(r.state_dict_type);
  if (r.is_mapping) std::cout << " with " << Plural(r.num_keys, "key", "keys");
  if (!flags.prefix.empty()) std::cout << " under '" << Printable(flags.prefix) << "'";
  if (flags.strip_prefix) std::cout << " after --strip-prefix '" << Printable(*flags.strip_prefix) << "'";
  if (r.metadata) {
    std::cout << "; _metadata for " << Plural(r.metadata->size(), "module", "modules");
  } else if (r.is_mapping) {
    std::cout << "; no _metadata";
  }
  std::cout << "\n";
  std::cout << "expected: " << Plural(r.num_expected, "tensor", "tensors") << " from " << Printable(flags.expect) << " ("
            << expected.source << ", "
            << (expected.has_metadata ? "with _metadata for " + Plural(expected.modules.size(), "module", "modules")
                                      : std::string("no _metadata"))
            << ")\n";
  if (!r.missing.empty()) {
    std::cout << "missing (" << r.missing.size() << "): expected, not in the state dict\n";
    for (const std::string& key : r.missing) {
      std::cout << "  " << Printable(key);
      if (auto it = by_key.find(key); it != by_key.end() && it->second->tensor) {
        std::cout << "  " << Printable(it->second->dtype.value_or("any dtype")) << " "
                  << (it->second->lazy ? std::string("[uninitialised]") : Dims(it->second->shape));
      }
      std::cout << "\n";
    }
  }
  if (!r.unexpected.empty()) {
    std::cout << "unexpected (" << r.unexpected.size()
              << "): in the state dict, matching no parameter, buffer or child module\n";
    for (const std::string& key : r.unexpected) std::cout << "  " << Printable(key) << "\n";
  }
  if (!r.mismatched.empty()) {
    std::cout << "mismatched (" << r.mismatched.size() << "): torch raises on these in both modes\n";
    for (const auto& m : r.mismatched) std::cout << "  " << Printable(m.detail) << "\n";  // torch's message names the key
  }
  if (!r.filled.empty()) {
    std::cout << "filled (" << r.filled.size() << "): added by a load hook of torch's own modules\n";
    for (const auto& n : r.filled) std::cout << "  " << Printable(n.key) << ": " << Printable(n.detail) << "\n";
  }
  if (!r.ignored.empty()) {
    std::cout << "ignored (" << r.ignored.size() << "): torch reads nothing from these and does not report them\n";
    for (const auto& n : r.ignored) std::cout << "  " << Printable(n.key) << ": " << Printable(n.detail) << "\n";
  }
  if (!r.converted.empty()) {
    std::cout << "converted (" << r.converted.size() << "): torch copies across dtypes\n";
    for (const auto& n : r.converted) std::cout << "  " << Printable(n.key) << ": " << Printable(n.detail) << "\n";
  }
  if (r.metadata) {
    constexpr size_t kShown = 12;
    std::cout << "_metadata:";
    for (size_t i = 0; i < r.metadata->size() && i < kShown; ++i) {
      const auto& [module, version] = (*r.metadata)[i];
      std::cout << (i ? ", '" : " '") << Printable(module) << "' "
                << (version ? "v" + std::to_string(*version) : std::string("(no version)"));
    }
    if (r.metadata->size() > kShown) std::cout << ", ... (" << r.metadata->size() - kShown << " more)";
    std::cout << "\n";
  }
  std::cout << "strict=True:  ";
  if (r.strict.ok()) {
    std::cout << "returns; loads " << r.loaded.size() << " of " << r.num_expected << " tensors\n";
  } else {
    std::cout << "raises ";
    PrintException(*r.strict.exception, "  ");
  }
  std::cout << "strict=False: ";
  if (r.non_strict.ok()) {
    std::cout << "returns _IncompatibleKeys(missing_keys=" << r.missing.size()
              << ", unexpected_keys=" << r.unexpected.size() << "); loads " << r.loaded.size() << " of "
              << r.num_expected << " tensors\n";
    if (r.num_expected > 0 && r.loaded.empty()) {
      std::cout << "WARNING: strict=False would load NOTHING: none of the model's " << r.num_expected
                << " tensors comes from the checkpoint; the model keeps its initial weights\n";
    } else if (r.loaded.size() < r.num_expected) {
      std::cout << "WARNING: strict=False would load only " << r.loaded.size() << " of the model's " << r.num_expected
                << " tensors (" << (100 * r.loaded.size() / r.num_expected) << "%); the rest keep their initial values\n";
    }
  } else {
    std::cout << "raises ";
    PrintException(*r.non_strict.exception, "  ");
  }
  for (const std::string& hint : r.hints) std::cout << "hint: " << Printable(hint) << "\n";
  for (const std::string& caveat : r.caveats) std::cout << "note: " << Printable(caveat) << "\n";
  std::cout << Printable(Verdict(flags, r)) << "\n";
}

}  // namespace

void AddCheckCommand(CLI::App& app, CheckFlags& flags) {
  CLI::App* cmd = app.add_subcommand("check", "Check a checkpoint's keys and shapes against what a model expects");
  cmd->footer(R"(What it does:
  Answers "what would model.load_state_dict(torch.load(FILE)) do?" without
  torch and without running the file: the checkpoint is loaded by the
  hardened VM (a file that asks for any global outside the allowlist is
  refused, exit 2), and torch 1.13's Module.load_state_dict is replayed on
  its state dict for the model SCHEMA describes, module by module:
    missing keys     expected by the model, absent from the state dict
    unexpected keys  in the state dict, matching no parameter, buffer or child
    mismatched       a size mismatch or a value that is not a tensor: torch
                     raises in both modes
    ignored          keys torch reads nothing from and does not report: a key
                     naming a child module, a key under a None child or
                     under a parameter
    filled           BatchNorm's num_batches_tracked, when the checkpoint's
                     _metadata gives no version 2 (_NormBase's load step)
    converted        dtype differences: torch copies with conversion
  and it prints the exact exception load_state_dict(strict=True) would raise
  (RuntimeError "Error(s) in loading state_dict for ..."; a TypeError for a
  list or a bare tensor, which are not state dicts), and what strict=False
  would do: raise, or return the missing and unexpected keys having loaded
  N of the model's tensors (WARNING when that is nothing or only part).
  The exit status follows --strict (the default, like torch) or --non-strict.

  Keys are taken exactly as torch sees them: the items of the dict (the root,
  or --prefix model for checkpoint["model"]); nested dicts are values, not
  dotted keys. Nothing is stripped unless asked: --strip-prefix module. does
  what torch.nn.modules.utils.consume_prefix_in_state_dict_if_present does
  (in torch 1.13 it leaves _metadata as it is). When a known wrapper prefix
  (module. from DataParallel, model. from Lightning, _orig_mod. from
  torch.compile, or a prefix every key shares) or a sub-dict such as
  "state_dict" would make it fit, a hint says so, and the check still fails.
  A sharded checkpoint (FILE is its *.index.json, as Hugging Face writes
  pytorch_model.bin.index.json and model.safetensors.index.json) is loaded
  whole (every shard, checked against the index) and its shards' tensors
  are checked as one state dict, as transformers' load_sharded_checkpoint
  loads them (no --prefix; shards carry no _metadata).
  A torch.distributed.checkpoint folder (FILE is the folder holding
  .metadata) is loaded whole and its keys under --prefix (model, for the
  default planner's dotted keys model.fc.weight) are checked as one state
  dict, a tensor saved in chunks with its whole shape (no _metadata).
  Modelled from torch's own modules: _NormBase._load_from_state_dict
  (num_batches_tracked by _metadata version), LazyModuleMixin._lazy_load_hook
  (an uninitialised lazy parameter takes the checkpoint's shape), the 0-d
  parameter rule (a 1-d tensor loads as its first element), _extra_state
  (set_extra_state). Not modelled, and named in a note when they may act:
  spectral_norm's load hook for checkpoints without its metadata,
  InstanceNorm's refusal of pre-0.4 running stats (a reference cannot tell it
  from a BatchNorm without running stats), classes with a version above 2.
  Custom hooks, an overridden _load_from_state_dict and set_extra_state are
  user code: a note says where the answer depends on them.

  SCHEMA is decided by content:
  - a reference checkpoint: torch.save(model.state_dict(), "ref.pt") (any
    format ckptguard loads; --expect-prefix picks a sub-dict). It carries
    the keys, shapes, dtypes, _extra_state, uninitialised lazy parameters
    and _metadata (which modules exist, which are BatchNorm: version 2).
  - a sharded checkpoint's *.index.json: the tensors of its shards, in the
    index's order (no _metadata).
  - a torch.distributed.checkpoint folder: its tensors under --expect-prefix
    (model), each with its whole shape (no _metadata).
  - a JSON object mapping each key to {"dtype": "float32", "shape": [256, 20]}
    ("dtype" optional; "shape": null for an uninitialised lazy parameter;
    {"tensor": false} for a non-tensor _extra_state), plus "_metadata":
    {module path: {"version": n}, or null for a child registered as None}.
    At most 64 MiB. From torch:
      sd = model.state_dict()
      schema = {k: {"tensor": False} if not torch.is_tensor(v) else
                   {"dtype": str(v.dtype)[6:], "shape": None
                    if isinstance(v, torch.nn.parameter.UninitializedTensorMixin)
                    else list(v.shape)} for k, v in sd.items()}
      schema["_metadata"] = dict(sd._metadata)   # plus {"name": None} for None children
      json.dump(schema, f)
  Without _metadata, modules without parameters and None children are
  unknown and BatchNorm is recognised by its buffers alone (a note says so).

  --json prints one document: {"schema_version", "tool", "files": [...]},
  one object per FILE: {"path", "expect", "strict", "prefix",
  "strip_prefix", "model_class", "state_dict": {"type", "keys", "metadata"},
  "expected": {"source", "tensors", "has_metadata"}, "missing",
  "unexpected", "mismatched": [{"key", "kind", "detail"}], "ignored",
  "filled", "converted", "loaded", "results": {"strict": {"ok",
  "exception": {"type", "message"} | null}, "non_strict": {...}}, "hints",
  "caveats", "ok"}; on an error {"path", "expect", "error": {...}}.

  Several FILEs are each checked against SCHEMA (read once); --json lists
  their objects in "files", in the order given.

Exit status: 0 when it fits, 1 when it does not, 2 when FILE or SCHEMA cannot
be read or is refused (with several FILEs, the highest) (the error names the file, the global or limit, and the
byte offset).

Examples:
  ckptguard check model.safetensors --expect model.schema.json
  ckptguard check checkpoint.pt --prefix model --expect model.schema.json
  ckptguard check ddp.pt --expect reference.pt --strip-prefix module.
  ckptguard check finetuned.pt --expect base_model.pt --non-strict --model-class Net
  ckptguard check model.pt --expect schema.json --json | jq '.files[0].results.strict.exception'
  ckptguard check llama/model.safetensors.index.json --expect llama.schema.json
)");
  cmd->add_option("file", flags.files, "The checkpoints to check, each against SCHEMA")->required()->type_name("FILE");
  cmd->add_option("--expect", flags.expect, "What the model expects: a JSON schema or a reference checkpoint")
      ->required()
      ->type_name("SCHEMA");
  CLI::Option* strict = cmd->add_flag("--strict")->description(
      "Exit status follows strict=True (the default, like torch)");
  CLI::Option* non_strict =
      cmd->add_flag("--non-strict", flags.non_strict, "Exit status follows strict=False");
  strict->excludes(non_strict);
  cmd->add_option("--prefix", flags.prefix, "The state dict is the dict at this dotted path (e.g. model, state_dict)");
  cmd->add_option("--strip-prefix", flags.strip_prefix,
                  "Remove this prefix from the keys first, as consume_prefix_in_state_dict_if_present does (e.g. module.)")
      ->type_name("P");
  cmd->add_option("--expect-prefix", flags.expect_prefix,
                  "When SCHEMA is a checkpoint: take its state dict from under this dotted path");
  cmd->add_option("--model-class", flags.model_class,
                  "The model's class name, for torch's message (\"Error(s) in loading state_dict for NAME\")")
      ->type_name("NAME");
  cmd->add_flag("--json", flags.json,
                "Print one JSON document: files[] with missing, unexpected, mismatched, results, ok");
  AddFormatOption(*cmd, flags.json);
  cmd->add_flag("--allow-anomalies", flags.load.allow_anomalies,
                "Load even when the container has anomalies (reads what torch would read)");
  AddPickleLimitOptions(*cmd, flags.load.limits.pickle);
  AddBudgetOptions(*cmd, flags.load.budget);
}

namespace {

int CheckOne(const CheckFlags& flags, JsonFilesDocument& doc, const std::string& path,
             const scanner::ModelSchema& expected) {
  scanner::KeyCheckOptions options{.strict = !flags.non_strict, .prefix = flags.prefix,
                                   .strip_prefix = flags.strip_prefix};
  if (!flags.model_class.empty()) options.model_class = flags.model_class;
  Result<KeyCheckResult> result = scanner::CheckKeysOfPath(path, expected, options, flags.load);
  if (!result) return Fail(flags, doc, path, path, result.error());
  const KeyCheckResult& r = *result;

  if (flags.json) {
    json mismatched = json::array();
    for (const auto& m : r.mismatched) {
      mismatched.push_back(json{{"key", m.key}, {"kind", m.kind}, {"detail", m.detail}});
    }
    json metadata(nullptr);
    if (r.metadata) {
      metadata = json::object();
      for (const auto& [module, version] : *r.metadata) metadata[module] = version ? json(*version) : json(nullptr);
    }
    json out{{"path", path},
             {"expect", flags.expect},
             {"strict", !flags.non_strict},
             {"prefix", flags.prefix},
             {"strip_prefix", flags.strip_prefix ? json(*flags.strip_prefix) : json(nullptr)},
             {"model_class", options.model_class},
             {"state_dict", json{{"type", r.state_dict_type}, {"keys", r.num_keys}, {"metadata", std::move(metadata)}}},
             {"expected", json{{"source", expected.source},
                               {"tensors", r.num_expected},
                               {"has_metadata", expected.has_metadata}}},
             {"missing", r.missing},
             {"unexpected", r.unexpected},
             {"mismatched", std::move(mismatched)},
             {"ignored", NotesJson(r.ignored, "why")},
             {"filled", NotesJson(r.filled, "why")},
             {"converted", NotesJson(r.converted, "detail")},
             {"loaded", r.loaded},
             {"results", json{{"strict", json{{"ok", r.strict.ok()}, {"exception", ExceptionJson(r.strict.exception)}}},
                              {"non_strict", json{{"ok", r.non_strict.ok()},
                                                  {"exception", ExceptionJson(r.non_strict.exception)},
                                                  {"loaded", r.loaded.size()},
                                                  {"of", r.num_expected}}}}},
             {"hints", r.hints},
             {"caveats", r.caveats},
             {"ok", r.ok}};
    doc.Add(DumpJson(out, -1));
  } else {
    PrintText(flags, path, r, expected);
  }
  std::cout.flush();
  return r.ok ? kExitOk : kExitFindings;
}

}  // namespace

int RunCheck(CheckFlags& flags) {
  flags.load.container.pickle = flags.load.limits.pickle;
  // The model's description is read once for every FILE.
  Result<scanner::ModelSchema> expected = scanner::LoadSchema(flags.expect, flags.expect_prefix);
  int status = kExitOk;
  JsonFilesDocument doc(std::cout, "check", flags.json);
  for (const std::string& path : flags.files) {
    const int one =
        expected ? CheckOne(flags, doc, path, *expected) : Fail(flags, doc, path, flags.expect, expected.error());
    status = std::max(status, one);
  }
  doc.Close();
  std::cout.flush();
  return status;
}

}  // namespace ckptguard::cli

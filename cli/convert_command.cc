// `ckptguard convert IN OUT`: .pt/.bin/.ckpt/legacy/npz/safetensors to
// safetensors or a torch zip, through the hardened loader only.
#include "convert_command.h"

#include <iostream>

#include "ckptguard/convert.h"
#include "ckptguard/printable.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

int Fail(const std::string& path, const std::string& detail) {
  std::cerr << "ckptguard convert: " << Printable(path) << ": " << Printable(detail) << "\n";
  return kExitError;
}

// Done prints what was written, or the error (its `where` is the path it is
// about: the input, or the output when writing failed).
int Done(const Result<ConvertSummary>& r, const ConvertFlags& flags, bool safetensors) {
  if (!r) return Fail(r.error().where, r.error().detail);
  if (!safetensors) {
    std::cout << flags.output << ": " << r->tensors << " tensors written as a torch zip checkpoint\n";
    return kExitOk;
  }
  std::cout << flags.output << ": " << r->tensors << " tensors written as safetensors"
            << (r->aliases == 0 ? "" : ", " + std::to_string(r->aliases) + " shared tensor(s) noted in __metadata__")
            << (r->values == 0 ? "" : ", " + std::to_string(r->values) + " plain values in __metadata__") << "\n";
  return kExitOk;
}

}  // namespace

void AddConvertCommand(CLI::App& app, ConvertFlags& flags) {
  CLI::App* cmd = app.add_subcommand("convert", "Convert checkpoints to safetensors or a torch zip, executing nothing");
  cmd->footer(R"(What it does:
  Reads IN with the hardened loader (torch zip, legacy torch, safetensors,
  numpy .npz/.npy, TorchScript weights; nothing is ever executed, and a file
  that names any global outside the allowlist is refused) and writes OUT as
  safetensors (OUT ends in .safetensors, or --to safetensors) or as a torch zip
  checkpoint that torch.load reads (.pt/.pth/.bin/.ckpt, or --to pt).

  safetensors holds only tensors: a tensor reachable under two keys (tied
  weights) is written once and the other key noted in __metadata__
  ("ckptguard.aliases"); plain values (epoch, lr, ...) are refused unless
  --keep-metadata stores them in __metadata__ as JSON ("ckptguard.values");
  --prefix picks a sub-dict (e.g. the model of a training checkpoint).

  A sharded checkpoint (IN ending in .index.json, as Hugging Face writes
  model.safetensors.index.json and pytorch_model.bin.index.json) is merged
  into one safetensors file, after the index and the shards are checked to
  agree (see 'ckptguard inspect --help').

  A torch.distributed.checkpoint folder (IN holding .metadata and .distcp
  files) converts to one safetensors file: every tensor, chunks saved by
  several ranks assembled; --prefix model keeps the keys under model. (the
  default planner flattens nested dicts to dotted keys) without the prefix.

  OUT is written atomically (a temporary file in the same folder, fsync,
  rename) after the written bytes were read back and checked: a failure at any
  point leaves no OUT, or the previous OUT untouched.

Exit status: 0 written, 2 not written (the error says why).

Examples:
  ckptguard convert pytorch_model.bin model.safetensors
  ckptguard convert --prefix model checkpoint.pt model.safetensors
  ckptguard convert --keep-metadata checkpoint.pt checkpoint.safetensors
  ckptguard convert model.safetensors model.pt
  ckptguard convert pytorch_model.bin.index.json model.safetensors
  ckptguard convert --prefix model checkpoints/step_1200/ model.safetensors
)");
  cmd->add_option("input", flags.input, "Checkpoint to read")->required()->type_name("IN");
  cmd->add_option("output", flags.output, "File to write")->required()->type_name("OUT");
  cmd->add_option("--to", flags.to, "Output format, when OUT's extension does not say")
      ->check(CLI::IsMember({"safetensors", "pt"}));
  cmd->add_option("--prefix", flags.prefix, "Convert only the sub-dict at this dotted path (e.g. model)");
  cmd->add_flag("--keep-metadata", flags.keep_metadata,
                "safetensors: store plain values as JSON in __metadata__ instead of refusing");
  AddBudgetOptions(*cmd, flags.budget);
}

int RunConvert(const ConvertFlags& flags) {
  std::optional<ConvertTo> to = flags.to.empty() ? ConvertFormatOf(flags.output)
                                : std::optional<ConvertTo>(flags.to == "safetensors" ? ConvertTo::kSafetensors
                                                                                      : ConvertTo::kTorch);
  if (!to) {
    return Fail(flags.output, "cannot tell the output format from the name: use --to safetensors or --to pt");
  }
  LoadOptions load;
  load.budget = flags.budget;
  const ConvertOptions options{flags.prefix, flags.keep_metadata};
  return Done(ConvertFile(flags.input, flags.output, *to, options, load), flags, *to == ConvertTo::kSafetensors);
}

}  // namespace ckptguard::cli

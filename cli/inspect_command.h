// `ckptguard inspect FILE...`: load checkpoints with the hardened VM and show
// their tensors and structure.
#ifndef CKPTGUARD_CLI_INSPECT_COMMAND_H_
#define CKPTGUARD_CLI_INSPECT_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"

namespace ckptguard::cli {

struct InspectFlags {
  std::vector<std::string> files;
  bool json = false;
  bool no_digest = false;
  bool weights_only = false;  // --weights-only: no declared records
  std::string prefix;
  std::string rules_file;
  LoadOptions load;
  uint64_t max_tree_lines = 200;
};

void AddInspectCommand(CLI::App& app, InspectFlags& flags);
int RunInspect(InspectFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_INSPECT_COMMAND_H_

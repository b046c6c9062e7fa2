// `ckptguard disasm FILE...`
#ifndef CKPTGUARD_CLI_DISASM_COMMAND_H_
#define CKPTGUARD_CLI_DISASM_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "ckptguard/pickle_decoder.h"

namespace ckptguard::cli {

struct DisasmFlags {
  std::vector<std::string> files;
  bool json = false;
  bool full_args = false;
  int indent = 4;
  size_t max_arg_chars = 2048;
  PickleLimits limits;
};

// AddDisasmCommand registers the subcommand; its options write into `flags`,
// which must outlive the parse.
void AddDisasmCommand(CLI::App& app, DisasmFlags& flags);
// RunDisasm runs it and returns the process exit code.
int RunDisasm(const DisasmFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_DISASM_COMMAND_H_

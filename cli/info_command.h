// `ckptguard info FILE...`
#ifndef CKPTGUARD_CLI_INFO_COMMAND_H_
#define CKPTGUARD_CLI_INFO_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "ckptguard/container.h"

namespace ckptguard::cli {

struct InfoFlags {
  std::vector<std::string> files;
  bool json = false;
  ContainerLimits limits;
  BudgetLimits budget;
};

// AddInfoCommand registers the subcommand; its options write into `flags`.
void AddInfoCommand(CLI::App& app, InfoFlags& flags);
// RunInfo runs it and returns the process exit code.
int RunInfo(const InfoFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_INFO_COMMAND_H_

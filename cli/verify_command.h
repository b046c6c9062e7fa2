// `ckptguard verify FILE...` and `ckptguard latest DIR`: integrity checks and
// picking the checkpoint to resume from.
#ifndef CKPTGUARD_CLI_VERIFY_COMMAND_H_
#define CKPTGUARD_CLI_VERIFY_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "ckptguard/budget.h"

namespace ckptguard::cli {

struct VerifyFlags {
  std::vector<std::string> files;
  bool json = false;
  BudgetLimits budget;
};

struct LatestFlags {
  std::string dir;
  bool json = false;
  bool null = false;  // -0: the chosen path ends in NUL, not a newline
  BudgetLimits budget;
};

void AddVerifyCommand(CLI::App& app, VerifyFlags& flags);
int RunVerify(const VerifyFlags& flags);
void AddLatestCommand(CLI::App& app, LatestFlags& flags);
int RunLatest(const LatestFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_VERIFY_COMMAND_H_

// `ckptguard convert IN OUT`: safe conversion between checkpoint formats.
#ifndef CKPTGUARD_CLI_CONVERT_COMMAND_H_
#define CKPTGUARD_CLI_CONVERT_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>

#include "ckptguard/budget.h"

namespace ckptguard::cli {

struct ConvertFlags {
  std::string input;
  std::string output;
  std::string to;  // "safetensors" | "pt" | "" (by OUT's extension)
  std::string prefix;
  bool keep_metadata = false;
  BudgetLimits budget;
};

void AddConvertCommand(CLI::App& app, ConvertFlags& flags);
int RunConvert(const ConvertFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_CONVERT_COMMAND_H_

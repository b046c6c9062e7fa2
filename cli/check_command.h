// `ckptguard check FILE --expect SCHEMA`: would load_state_dict accept this
// checkpoint's keys and shapes?
#ifndef CKPTGUARD_CLI_CHECK_COMMAND_H_
#define CKPTGUARD_CLI_CHECK_COMMAND_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/checkpoint.h"

namespace ckptguard::cli {

struct CheckFlags {
  std::vector<std::string> files;  // checkpoints, each checked against `expect`
  std::string expect;         // JSON schema or reference checkpoint
  bool non_strict = false;    // load_state_dict(strict=False)
  std::string prefix;         // sub-dict of FILE ("model")
  std::string expect_prefix;  // sub-dict of a reference checkpoint
  std::optional<std::string> strip_prefix;  // consume_prefix_in_state_dict_if_present(sd, P) first
  std::string model_class;    // the class name torch's message names
  bool json = false;
  LoadOptions load;
};

void AddCheckCommand(CLI::App& app, CheckFlags& flags);
int RunCheck(CheckFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_CHECK_COMMAND_H_

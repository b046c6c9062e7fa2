// `ckptguard sign`, `ckptguard keygen` and `ckptguard verify-signature`:
// OpenSSF model signing v1.0 (key mode) signatures of a model file or folder.
#ifndef CKPTGUARD_CLI_SIGN_COMMAND_H_
#define CKPTGUARD_CLI_SIGN_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace ckptguard::cli {

struct SignFlags {
  std::string model_path;
  std::string key_path;
  std::string signature_path;  // empty: PATH/model.sig (folder) or PATH.sig (file)
  std::vector<std::string> ignore_paths;
};

struct KeygenFlags {
  std::string out_path;
  std::string curve = "P-256";
};

struct VerifySignatureFlags {
  std::string model_path;
  std::string signature_path;  // empty: as for sign
  std::vector<std::string> key_paths;
  std::vector<std::string> ignore_paths;
  bool json = false;
};

void AddSignCommand(CLI::App& app, SignFlags& flags);
int RunSign(const SignFlags& flags);
void AddKeygenCommand(CLI::App& app, KeygenFlags& flags);
int RunKeygen(const KeygenFlags& flags);
void AddVerifySignatureCommand(CLI::App& app, VerifySignatureFlags& flags);
int RunVerifySignature(const VerifySignatureFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_SIGN_COMMAND_H_

// `ckptguard registry push|pull|verify|list|revoke`: the client of ckptguardd.
#ifndef CKPTGUARD_CLI_REGISTRY_COMMAND_H_
#define CKPTGUARD_CLI_REGISTRY_COMMAND_H_

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace ckptguard::cli {

struct RegistryFlags {
  std::string url;
  std::string token;
  std::string ca_file;      // https: trust this CA bundle instead of the system store
  bool insecure = false;    // allow plain http:// to a non-loopback address
  int timeout_seconds = 120;
  bool json = false;
  // push
  std::vector<std::string> files;
  std::string name;
  std::string tag;
  // pull
  std::string ref;
  std::string out;
  std::string signature_out;
  std::vector<std::string> keys;
  bool allow_revoked = false;
  std::string known_keys;        // the known-registries file (default: under $XDG_CONFIG_HOME or ~/.config)
  bool accept_new_key = false;   // pin a key the registry presents that is not pinned yet
  bool allow_unbound = false;    // accept a bundle that names no name, tag or registry (NAME[:TAG] pulls)
  std::string registry_id;       // with --key: the registry id the signature must name
  // push
  bool force = false;            // move an existing tag (the server must run with --allow-retag)
  // list
  std::string status;
  unsigned limit = 100;
  // revoke
  std::string reason;

  CLI::App* push = nullptr;
  CLI::App* pull = nullptr;
  CLI::App* verify = nullptr;
  CLI::App* list = nullptr;
  CLI::App* revoke = nullptr;
};

void AddRegistryCommand(CLI::App& app, RegistryFlags& flags);
int RunRegistry(RegistryFlags& flags);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_REGISTRY_COMMAND_H_

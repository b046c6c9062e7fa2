// ckptguard: the command-line front end. Each subcommand lives in its own
// *_command.cc; this file only wires them up and catches what must not escape.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <new>

#include "check_command.h"
#include "cli_util.h"
#include "disasm_command.h"
#include "info_command.h"
#include "inspect_command.h"
#include "registry_command.h"
#include "scan_command.h"
#include "sign_command.h"
#include "convert_command.h"
#include "verify_command.h"

int main(int argc, char** argv) {
  using namespace ckptguard::cli;
  CLI::App app{"ckptguard: scan, inspect and load untrusted PyTorch checkpoints without executing them"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ckptguard ") + CKPTGUARD_VERSION);
  app.footer("Run 'ckptguard COMMAND --help' for what a command reads, prints and returns.");
  InfoFlags info_flags;
  AddInfoCommand(app, info_flags);
  InspectFlags inspect_flags;
  AddInspectCommand(app, inspect_flags);
  DisasmFlags disasm_flags;
  AddDisasmCommand(app, disasm_flags);
  ConvertFlags convert_flags;
  AddConvertCommand(app, convert_flags);
  VerifyFlags verify_flags;
  AddVerifyCommand(app, verify_flags);
  LatestFlags latest_flags;
  AddLatestCommand(app, latest_flags);
  ScanFlags scan_flags;
  AddScanCommand(app, scan_flags);
  CheckFlags check_flags;
  AddCheckCommand(app, check_flags);
  SignFlags sign_flags;
  AddSignCommand(app, sign_flags);
  KeygenFlags keygen_flags;
  AddKeygenCommand(app, keygen_flags);
  VerifySignatureFlags verify_signature_flags;
  AddVerifySignatureCommand(app, verify_signature_flags);
  RegistryFlags registry_flags;
  AddRegistryCommand(app, registry_flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitError;
  }
  try {
    if (app.got_subcommand("info")) return RunInfo(info_flags);
    if (app.got_subcommand("disasm")) return RunDisasm(disasm_flags);
    if (app.got_subcommand("inspect")) return RunInspect(inspect_flags);
    if (app.got_subcommand("check")) return RunCheck(check_flags);
    if (app.got_subcommand("scan")) return RunScan(scan_flags);
    if (app.got_subcommand("registry")) return RunRegistry(registry_flags);
    if (app.got_subcommand("verify")) return RunVerify(verify_flags);
    if (app.got_subcommand("convert")) return RunConvert(convert_flags);
    if (app.got_subcommand("latest")) return RunLatest(latest_flags);
    if (app.got_subcommand("sign")) return RunSign(sign_flags);
    if (app.got_subcommand("keygen")) return RunKeygen(keygen_flags);
    if (app.got_subcommand("verify-signature")) return RunVerifySignature(verify_signature_flags);
  } catch (const std::bad_alloc&) {
    std::cerr << "ckptguard: out of memory\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "ckptguard: internal error: " << e.what() << "\n";
    return kExitError;
  }
  return kExitError;
}

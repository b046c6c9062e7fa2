// ckptguard: the command-line front end. Each subcommand lives in its own
// *_command.cc; this file only wires them up and catches what must not escape.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <exception>
#include <functional>
#include <iostream>
#include <new>
#include <sstream>
#include <string_view>

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
#include "ckptguard/atomic_file.h"
#include "ckptguard/version.h"

namespace {

using namespace ckptguard::cli;

// Command is one subcommand: how to add it to the parser and how to run it.
struct Command {
  const char* name;
  std::function<void(CLI::App&)> add;
  std::function<int()> run;
};

}  // namespace

int main(int argc, char** argv) {
  // Past `ulimit -f`, write() then fails with EFBIG and the output's
  // temporary file is removed (AtomicFile), instead of SIGXFSZ killing the
  // process and leaving it behind.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"ckptguard: scan, inspect and load untrusted PyTorch checkpoints without executing them"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ckptguard ") + CKPTGUARD_VERSION);
  app.footer("Run 'ckptguard COMMAND --help' for what a command reads, prints and returns.");
  InfoFlags info_flags;
  InspectFlags inspect_flags;
  DisasmFlags disasm_flags;
  ConvertFlags convert_flags;
  VerifyFlags verify_flags;
  LatestFlags latest_flags;
  ScanFlags scan_flags;
  CheckFlags check_flags;
  SignFlags sign_flags;
  KeygenFlags keygen_flags;
  VerifySignatureFlags verify_signature_flags;
  RegistryFlags registry_flags;
  // In the order `ckptguard --help` lists them.
  const Command commands[] = {
      {"info", [&](CLI::App& a) { AddInfoCommand(a, info_flags); }, [&] { return RunInfo(info_flags); }},
      {"inspect", [&](CLI::App& a) { AddInspectCommand(a, inspect_flags); }, [&] { return RunInspect(inspect_flags); }},
      {"disasm", [&](CLI::App& a) { AddDisasmCommand(a, disasm_flags); }, [&] { return RunDisasm(disasm_flags); }},
      {"convert", [&](CLI::App& a) { AddConvertCommand(a, convert_flags); }, [&] { return RunConvert(convert_flags); }},
      {"verify", [&](CLI::App& a) { AddVerifyCommand(a, verify_flags); }, [&] { return RunVerify(verify_flags); }},
      {"latest", [&](CLI::App& a) { AddLatestCommand(a, latest_flags); }, [&] { return RunLatest(latest_flags); }},
      {"scan", [&](CLI::App& a) { AddScanCommand(a, scan_flags); }, [&] { return RunScan(scan_flags); }},
      {"check", [&](CLI::App& a) { AddCheckCommand(a, check_flags); }, [&] { return RunCheck(check_flags); }},
      {"sign", [&](CLI::App& a) { AddSignCommand(a, sign_flags); }, [&] { return RunSign(sign_flags); }},
      {"keygen", [&](CLI::App& a) { AddKeygenCommand(a, keygen_flags); }, [&] { return RunKeygen(keygen_flags); }},
      {"verify-signature", [&](CLI::App& a) { AddVerifySignatureCommand(a, verify_signature_flags); },
       [&] { return RunVerifySignature(verify_signature_flags); }},
      {"registry", [&](CLI::App& a) { AddRegistryCommand(a, registry_flags); }, [&] { return RunRegistry(registry_flags); }},
  };
  // Users run the CLI once per file: when the first argument names a
  // subcommand, only that one is built (each defines dozens of options, the
  // largest part of start-up); otherwise (--help, --version, a typo) all are,
  // so that the help lists them and errors name them.
  const Command* only = nullptr;
  if (argc >= 2) {
    for (const Command& c : commands) {
      if (std::string_view(argv[1]) == c.name) only = &c;
    }
  }
  // --output for the commands that report on standard output (scan has its
  // own): what they print is written whole through the one atomic writer.
  static constexpr std::string_view kReporting[] = {"info", "inspect", "disasm", "verify", "latest", "check",
                                                    "verify-signature"};
  std::string output;
  for (const Command& c : commands) {
    if (only != nullptr && only != &c) continue;
    c.add(app);
    if (std::find(std::begin(kReporting), std::end(kReporting), std::string_view(c.name)) != std::end(kReporting)) {
      app.get_subcommand(c.name)
          ->add_option("--output,-o", output,
                       "Write what would go to standard output to FILE instead, whole or not at all")
          ->type_name("FILE");
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with 0; a wrong command line with 3,
    // apart from 2 (a file could not be read), so a CI gate tells them apart.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    for (const Command& c : commands) {
      if ((only == nullptr || only == &c) && app.got_subcommand(c.name)) {
        if (output.empty() || output == "-") return c.run();
        std::ostringstream captured;
        std::streambuf* const terminal = std::cout.rdbuf(captured.rdbuf());
        int status = kExitError;
        try {
          status = c.run();
        } catch (...) {
          std::cout.rdbuf(terminal);
          throw;
        }
        std::cout.rdbuf(terminal);
        const std::string text = std::move(captured).str();
        if (ckptguard::Status written = ckptguard::WriteFileAtomically(
                output, ckptguard::Bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
            !written) {
          ReportError(output, written.error());
          return kExitError;
        }
        return status;
      }
    }
  } catch (const std::bad_alloc&) {
    std::cerr << "ckptguard: out of memory\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "ckptguard: internal error: " << e.what() << "\n";
    return kExitError;
  }
  return kExitError;
}

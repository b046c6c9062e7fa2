// Shared pieces of the ckptguard command line: exit codes, error reporting
// and the options that set parser limits.
#ifndef CKPTGUARD_CLI_CLI_UTIL_H_
#define CKPTGUARD_CLI_CLI_UTIL_H_

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptguard/budget.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"

namespace ckptguard::cli {

// Exit codes shared by every command (the scanner's contract).
inline constexpr int kExitOk = 0;        // everything read, nothing found
inline constexpr int kExitFindings = 1;  // something suspicious or dangerous
inline constexpr int kExitError = 2;     // a file could not be read or decoded

// ReportError prints "ckptguard: PATH: <error>" to stderr.
void ReportError(const std::string& path, const Error& error);

// AddPickleLimitOptions adds --max-operand-len, --max-line-len, --max-ops...
// to `cmd`, writing into `limits` (whose current values are the defaults).
void AddPickleLimitOptions(CLI::App& cmd, PickleLimits& limits);

// AddBudgetOptions adds the per-file budget (--max-inflated-bytes,
// --max-opcodes, --max-view-bytes, ... and the ratios that scale them with the
// file's size) to `cmd`, writing into `budget` (whose values are the defaults).
void AddBudgetOptions(CLI::App& cmd, BudgetLimits& budget);

// DumpJson writes `doc` as nlohmann's dump(indent) does (-1: compact; N:
// N spaces per level), except strings: they are written by
// AppendJsonString, so a key or str with lone surrogates (which the loader
// keeps, as Python does) comes out as \udXXX escapes, not U+FFFD, and two
// keys differing only there stay two keys. Iterative: no recursion on the
// nesting of what a file put in `doc`.
std::string DumpJson(const nlohmann::json& doc, int indent = -1);

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_CLI_UTIL_H_

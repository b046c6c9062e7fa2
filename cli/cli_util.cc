#include "cli_util.h"

#include <iostream>

namespace ckptguard::cli {

void ReportError(const std::string& path, const Error& error) {
  std::cerr << "ckptguard: " << path << ": " << error.ToString() << "\n";
}

void AddPickleLimitOptions(CLI::App& cmd, PickleLimits& limits) {
  const std::string group = "Limits (fail closed with limit_exceeded when hit)";
  cmd.add_option("--max-operand-len", limits.max_operand_len, "Longest counted pickle operand, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-line-len", limits.max_line_len, "Longest text-opcode line, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-long-len", limits.max_long_len, "Longest LONG1/LONG4 integer, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-frame-len", limits.max_frame_len, "Largest FRAME, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-ops", limits.max_ops, "Most opcodes in one stream")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-pickles", limits.max_pickles, "Most pickles in one stream")
      ->capture_default_str()->group(group);
}

}  // namespace ckptguard::cli

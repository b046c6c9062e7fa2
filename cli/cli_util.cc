#include "cli_util.h"

#include <iostream>
#include <vector>

#include "ckptguard/printable.h"

namespace ckptguard::cli {

void ReportError(const std::string& path, const Error& error) {
  // Both may come from a file (a name in a scanned folder, an entry name):
  // escaped for the terminal.
  std::cerr << "ckptguard: " << Printable(path) << ": " << Printable(error.ToString()) << "\n";
}

void AddPickleLimitOptions(CLI::App& cmd, PickleLimits& limits) {
  const std::string group = "Limits (fail closed with limit_exceeded when hit)";
  cmd.add_option("--max-operand-len", limits.max_operand_len, "Longest counted pickle operand, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-line-len", limits.max_line_len,
                 "Longest text-opcode line, bytes (scan reads a longer one as an opaque operand)")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-long-len", limits.max_long_len,
                 "Longest LONG1/LONG4 integer, bytes (scan reads a longer one as an opaque operand)")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-frame-len", limits.max_frame_len, "Largest FRAME, bytes")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-ops", limits.max_ops, "Most opcodes in one stream")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-pickles", limits.max_pickles, "Most pickles in one stream")
      ->capture_default_str()->group(group);
}

void AddBudgetOptions(CLI::App& cmd, BudgetLimits& budget) {
  const std::string group =
      "Per-file budget (every stage of reading one file charges it; the first limit passed stops the file "
      "with limit_exceeded naming it. Limits scale with the file's size: see --inflate-ratio, --work-ratio, "
      "--view-ratio)";
  cmd.add_option("--max-read-bytes", budget.max_read_bytes, "Bytes handed to parsers: the file and inflated data")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-inflated-bytes", budget.max_inflated_bytes,
                 "Bytes made by inflate/gzip/bzip2/xz, every entry at every depth together")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-opcodes", budget.max_opcodes, "Pickle opcodes decoded, every pickle together")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-memo-slots", budget.max_memo_slots, "Pickle memo slots allocated, every pickle together")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-values", budget.max_values, "Values built, every pickle together")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-nesting", budget.max_nesting, "Deepest nesting of MARKs, containers and archives")
      ->capture_default_str()->group(group);
  cmd.add_option("--max-view-bytes", budget.max_view_bytes,
                 "Logical bytes of tensor views hashed, copied or written (stride-0 views count every element)")
      ->capture_default_str()->group(group);
  cmd.add_option("--inflate-ratio", budget.inflate_per_file_byte,
                 "Inflated bytes per byte of the file (0: no scaling)")
      ->capture_default_str()->group(group);
  cmd.add_option("--work-ratio", budget.work_per_input_byte,
                 "Opcodes, values, memo slots and bytes read per byte of input (0: no scaling)")
      ->capture_default_str()->group(group);
  cmd.add_option("--view-ratio", budget.views_per_file_byte,
                 "View bytes hashed or copied per byte of the file (0: no scaling)")
      ->capture_default_str()->group(group);
}

scanner::FileReport InputReport(std::string path, std::string format, const char* rule, std::string message,
                                std::optional<Error> error) {
  scanner::FileReport r;
  r.path = std::move(path);
  r.format = std::move(format);
  const scanner::Rule* input_rule = scanner::FindInputRule(rule);
  r.findings.push_back(scanner::Finding{rule, input_rule != nullptr ? input_rule->severity : scanner::Severity::kSuspicious,
                                        std::move(message), "", 0, "", "", "", ""});
  r.error = std::move(error);
  r.verdict = scanner::VerdictOf(r.findings, r.error);
  return r;
}

bool IsNotAModel(const scanner::FileReport& report) {
  return report.format == "unknown" && report.findings.empty() && report.error &&
         report.error->code == ErrorCode::kUnsupportedFormat;
}

JsonFilesDocument::JsonFilesDocument(std::ostream& out, std::string_view command, bool enabled)
    : out_(out), open_(enabled) {
  if (!open_) return;
  std::string head = DumpJson(Stamp(nlohmann::ordered_json::object(), command), -1);
  head.pop_back();  // the envelope's '}': "files" follows
  out_ << head << ",\"files\":[";
}

void JsonFilesDocument::Add(std::string_view object) {
  if (!open_) return;
  out_ << (first_ ? "\n" : ",\n") << object;
  first_ = false;
}

void JsonFilesDocument::Close(const nlohmann::ordered_json& more) {
  if (!open_) return;
  open_ = false;
  out_ << "\n]";
  for (const auto& [key, value] : more.items()) {
    std::string member = DumpJson(nlohmann::ordered_json{{key, value}}, -1);  // {"key":value}
    out_ << "," << std::string_view(member).substr(1, member.size() - 2);
  }
  out_ << "}\n";
}

void AddFormatOption(CLI::App& cmd, bool& json) {
  cmd.add_option_function<std::string>(
         "--format", [&json](const std::string& format) { json = format == "json"; },
         "Output format: text, or json (the same as --json)")
      ->check(CLI::IsMember({"text", "json"}))
      ->type_name("FORMAT");
}

}  // namespace ckptguard::cli

// Shared pieces of the ckptguard command line: exit codes, error reporting
// and the options that set parser limits.
#ifndef CKPTGUARD_CLI_CLI_UTIL_H_
#define CKPTGUARD_CLI_CLI_UTIL_H_

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/error.h"
#include "ckptguard/pickle_decoder.h"
#include "ckptguard/printable.h"
#include "ckptguard/scanner/report.h"
#include "ckptguard/version.h"

namespace ckptguard::cli {

// Exit codes shared by every command (the scanner's contract).
inline constexpr int kExitOk = 0;        // everything read, nothing found
inline constexpr int kExitFindings = 1;  // something suspicious or dangerous
inline constexpr int kExitError = 2;     // a file could not be read or decoded
inline constexpr int kExitUsage = 3;     // the command line is wrong (unknown option, bad value)

// Stamp adds "schema_version" (scanner::kJsonSchemaVersion) and "tool"
// {name, version, command} to the JSON document a command prints: every
// --json output says what made it and which contract it keeps.
// (An ordered document gets them first.)
template <typename Json>
Json Stamp(Json doc, std::string_view command) {
  Json out{{"schema_version", scanner::kJsonSchemaVersion},
           {"tool", Json{{"name", "ckptguard"}, {"version", CKPTGUARD_VERSION}, {"command", std::string(command)}}}};
  for (auto& [key, value] : doc.items()) out[key] = std::move(value);
  return out;
}

// InputReport is the report of a path the scan could not read as asked:
// one finding of the input rule `rule` (CKG-W..., its severity from the
// input rules), and `error` when something was not scanned there.
scanner::FileReport InputReport(std::string path, std::string format, const char* rule, std::string message,
                                std::optional<Error> error);

// IsNotAModel: the scan found no model format at all (no pickle, zip, numpy
// or safetensors content: no loader runs anything from it). Such a file met
// in a folder or a repository is left out and listed as skipped, with
// kNotAModelReason.
bool IsNotAModel(const scanner::FileReport& report);
inline constexpr char kNotAModelReason[] = "not a model file (no pickle, zip, numpy or safetensors content)";

// AddFormatOption adds --format text|json to `cmd`, the same as its --json
// flag (`json`), so that every command that reports takes --format as
// `scan` does (scan also has sarif).
void AddFormatOption(CLI::App& cmd, bool& json);

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
// Works for nlohmann::json and nlohmann::ordered_json alike (the order of
// an ordered_json's keys is kept).
template <typename Json>
std::string DumpJson(const Json& doc, int indent = -1) {
  using json = Json;
  struct Frame {
    const json* node;
    typename json::const_iterator next;
    size_t depth;  // of the items inside
    bool first;
  };
  std::string out;
  std::vector<Frame> stack;
  auto newline = [&](size_t depth) {
    if (indent < 0) return;
    out.push_back('\n');
    out.append(depth * static_cast<size_t>(indent), ' ');
  };
  // value writes a scalar or an empty container, or opens a container.
  auto value = [&](const json& v, size_t depth) {
    if (v.is_string()) {
      AppendJsonString(out, v.template get_ref<const typename Json::string_t&>());
    } else if (v.is_object() || v.is_array()) {
      if (v.empty()) {
        out += v.is_object() ? "{}" : "[]";
        return;
      }
      out.push_back(v.is_object() ? '{' : '[');
      stack.push_back({&v, v.cbegin(), depth + 1, true});
    } else {
      out += v.dump();  // numbers, booleans, null as nlohmann writes them
    }
  };
  value(doc, 0);
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.next == f.node->cend()) {
      const bool object = f.node->is_object();
      const size_t depth = f.depth;
      stack.pop_back();
      newline(depth - 1);
      out.push_back(object ? '}' : ']');
      continue;
    }
    if (!f.first) out.push_back(',');
    f.first = false;
    newline(f.depth);
    const typename json::const_iterator item = f.next++;
    const size_t depth = f.depth;
    if (f.node->is_object()) {
      AppendJsonString(out, item.key());
      out += indent < 0 ? ":" : ": ";
    }
    value(*item, depth);  // may push: `f` is not used after this
  }
  return out;
}

// JsonFilesDocument prints the one JSON document of a command that reports
// file by file (inspect, verify, check) while the files are done, so that
// no file's object waits for the others (inspect's can be large):
//   {"schema_version":1,"tool":{...},"files":[
//   {...the first file...},
//   {...the next...}
//   ]}
// The head (Stamp's envelope) is printed by the constructor, each file's
// object on a line of its own by Add, and the end by Close, with the
// members that follow "files" (verify's "summary"), or at the latest by the
// destructor: the document stays valid JSON whichever file fails, and even
// when the run stops on an exception. With `enabled` false (text output)
// it prints nothing.
class JsonFilesDocument {
 public:
  JsonFilesDocument(std::ostream& out, std::string_view command, bool enabled);
  ~JsonFilesDocument() {
    if (open_) out_ << "\n]}\n";  // no `more`: nothing that may throw
  }
  JsonFilesDocument(const JsonFilesDocument&) = delete;
  JsonFilesDocument& operator=(const JsonFilesDocument&) = delete;

  // Add prints one element of "files": `object` is one JSON object as
  // compact text (DumpJson(..., -1), or text spliced as inspect makes it).
  void Add(std::string_view object);
  // Close ends "files" and the document; `more`'s members come after
  // "files", in its order. Later calls print nothing.
  void Close(const nlohmann::ordered_json& more = nlohmann::ordered_json::object());

 private:
  std::ostream& out_;
  bool open_;
  bool first_ = true;
};

}  // namespace ckptguard::cli

#endif  // CKPTGUARD_CLI_CLI_UTIL_H_

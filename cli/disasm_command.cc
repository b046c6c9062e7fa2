// `ckptguard disasm`: print the opcodes of every pickle in model files.
#include "disasm_command.h"

#include <cmath>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptguard/mapped_file.h"
#include "ckptguard/pickle_disasm.h"
#include "ckptguard/printable.h"
#include "ckptguard/source_pickles.h"
#include "ckptguard/container.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

// AppendPrintableLines writes `text` line by line, each escaped for the
// terminal (Printable), keeping its line breaks.
void AppendPrintableLines(std::ostream& out, std::string_view text) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    out << Printable(text.substr(0, nl));
    if (nl == std::string_view::npos) return;
    out << '\n';
    text.remove_prefix(nl + 1);
  }
}

using nlohmann::json;

json ErrorJson(const Error& error) {
  return json{{"code", std::string(ErrorCodeName(error.code))},
              {"offset", error.offset},
              {"where", error.where},
              {"detail", error.detail},
              {"message", error.ToString()}};
}

json ArgJson(const PickleOp& op, size_t max_chars) {
  const PickleArg& arg = op.arg;
  switch (arg.type) {
    case PickleArgType::kNone: return nullptr;
    case PickleArgType::kUInt: return arg.uint_value;
    case PickleArgType::kInt: return arg.int_value;
    case PickleArgType::kBool: return arg.int_value != 0;
    case PickleArgType::kBigInt: return json{{"int", ArgRepr(op)}};
    case PickleArgType::kFloat:
      if (std::isfinite(arg.float_value)) return arg.float_value;
      return json{{"float", ArgRepr(op)}};
    case PickleArgType::kString: {
      std::string_view s = arg.Data();
      json out = std::string(max_chars != 0 && s.size() > max_chars ? s.substr(0, max_chars) : s);
      return out;
    }
    case PickleArgType::kGlobal: return json{{"module", std::string(arg.Data())}, {"name", std::string(arg.Name())}};
    case PickleArgType::kBytes: {
      static constexpr char kHex[] = "0123456789abcdef";
      std::string_view d = arg.Data();
      if (max_chars != 0 && d.size() * 2 > max_chars) d = d.substr(0, max_chars / 2);
      std::string hex;
      hex.reserve(d.size() * 2);
      for (char c : d) {
        hex.push_back(kHex[static_cast<uint8_t>(c) >> 4]);
        hex.push_back(kHex[static_cast<uint8_t>(c) & 0xf]);
      }
      return json{{"hex", hex}, {"len", arg.Data().size()}};
    }
  }
  return nullptr;
}

std::string SourceTitle(const std::string& path, const std::string& nested_path, const Container& container,
                        const PickleSource& source) {
  std::string title = "== " + path;
  if (!nested_path.empty()) title += " > " + nested_path;
  title += ": " + std::string(ContainerFormatName(container.format));
  for (Wrapper w : container.wrappers) title += " in " + std::string(WrapperName(w));
  if (!source.entry.empty()) {
    title += ", entry '" + source.entry + "' (" + (source.deflated ? "deflated" : "stored") + ", " +
             std::to_string(source.data.size()) + " bytes";
    if (source.file_offset) title += " at offset " + std::to_string(*source.file_offset);
    title += ")";
  }
  if (source.start != 0) title += ", pickle at offset " + std::to_string(source.start);
  return title;
}

struct FileOutcome {
  bool ok = true;
  json doc;
};

void DisasmSource(const std::string& path, const std::string& nested_path, const Container& container,
                  const PickleSource& source, const DisasmFlags& flags, const DisasmOptions& options,
                  std::ostream& out, FileOutcome& outcome, json& sources) {
  SourcePickles decoded = DecodeSource(source, flags.limits);
  const auto pickles = SplitPickles(decoded.stream);
  json src{{"container", nested_path},
           {"format", std::string(ContainerFormatName(container.format))},
           {"entry", source.entry},
           {"deflated", source.deflated},
           {"file_offset", source.file_offset ? json(*source.file_offset) : json(nullptr)},
           {"start", source.start},
           {"legacy_torch", decoded.legacy_torch},
           {"pickles", decoded.stream.num_pickles},
           {"trailing_len", decoded.trailing_len},
           {"error", decoded.stream.error ? ErrorJson(*decoded.stream.error) : json(nullptr)}};
  if (flags.json) {
    json ops = json::array();
    for (const PickleOp& op : decoded.stream.ops) {
      json o{{"pickle", op.pickle_index},
             {"offset", op.offset},
             {"length", op.length},
             {"opcode", std::string(op.Info().name)},
             {"byte", static_cast<int>(op.code)},
             {"proto", op.Info().proto},
             {"arg", ArgJson(op, options.max_arg_chars)},
             {"repr", ArgRepr(op, options.max_arg_chars)}};
      if (source.file_offset) o["file_offset"] = *source.file_offset + op.offset;
      ops.push_back(std::move(o));
    }
    src["ops"] = std::move(ops);
  } else {
    out << Printable(SourceTitle(path, nested_path, container, source)) << "\n";
    for (size_t i = 0; i < pickles.size(); ++i) {
      if (pickles.size() > 1 || decoded.stream.error) {
        out << "-- pickle " << i + 1 << " at offset " << pickles[i].front().offset << "\n";
      }
      const bool complete = pickles[i].back().code == Opcode::kStop;
      // Operands are shown as Python reprs; each line is escaped all the same.
      AppendPrintableLines(out, DisassemblePickle(pickles[i], complete, options));
    }
    if (decoded.legacy_torch) {
      out << "-- legacy torch format: " << decoded.trailing_len
          << " bytes of raw storage records follow the five pickles\n";
    }
    if (decoded.stream.error) out << "!! " << Printable(decoded.stream.error->ToString()) << "\n";
  }
  if (decoded.stream.error) {
    Error error = *decoded.stream.error;
    if (!source.entry.empty()) error.where = source.entry + (error.where.empty() ? "" : ", " + error.where);
    ReportError(path, error);
    outcome.ok = false;
  }
  sources.push_back(std::move(src));
}

// DisasmMapped disassembles the bytes of `file` into `out` and `outcome`.
void DisasmMapped(const MappedFile& file, const std::string& path, const DisasmFlags& flags, std::ostream& out,
                  FileOutcome& outcome) {
  ContainerLimits limits;
  limits.pickle = flags.limits;
  const Container root = OpenContainer(file.data(), limits);
  outcome.doc["format"] = std::string(ContainerFormatName(root.format));
  DisasmOptions options;
  options.indent = flags.indent;
  options.max_arg_chars = flags.full_args ? 0 : flags.max_arg_chars;
  json sources = json::array();
  json notes = json::array();
  json errors = json::array();
  ForEachContainer(root, [&](const Container& container, const std::string& nested_path) {
    const std::string where = nested_path.empty() ? path : path + " > " + nested_path;
    if (container.error) {
      ReportError(where, *container.error);
      errors.push_back(ErrorJson(*container.error));
      outcome.ok = false;
    }
    for (const Anomaly& a : container.anomalies) {
      if (a.kind != "zip.bad_entry") continue;
      std::cerr << "ckptguard: " << Printable(where) << ": unreadable entry at byte " << a.offset << " ("
                << Printable(a.entry) << "): " << Printable(a.detail) << "\n";
      errors.push_back(json{{"code", "unreadable_entry"}, {"offset", a.offset}, {"where", a.entry},
                            {"detail", a.detail}});
      outcome.ok = false;
    }
    if (container.format == ContainerFormat::kUnknown) {
      const std::string note = "not a model file ckptguard knows: " + container.reason;
      if (!flags.json) out << "== " << Printable(where) << ": " << Printable(note) << "\n";
      notes.push_back(note);
      outcome.ok = false;
    } else if (container.pickles.empty()) {
      const std::string note = std::string(ContainerFormatName(container.format)) + ": holds no pickle";
      if (!flags.json) out << "== " << Printable(where) << ": " << Printable(note) << "\n";
      notes.push_back(note);
    }
    for (const PickleSource& source : container.pickles) {
      DisasmSource(path, nested_path, container, source, flags, options, out, outcome, sources);
    }
  });
  outcome.doc["notes"] = std::move(notes);
  outcome.doc["errors"] = std::move(errors);
  outcome.doc["sources"] = std::move(sources);
}

// CaptureStderr sends std::cerr to a buffer while it lives.
class CaptureStderr {
 public:
  explicit CaptureStderr(std::ostringstream& to) : old_(std::cerr.rdbuf(to.rdbuf())) {}
  ~CaptureStderr() { std::cerr.rdbuf(old_); }
  CaptureStderr(const CaptureStderr&) = delete;
  CaptureStderr& operator=(const CaptureStderr&) = delete;

 private:
  std::streambuf* old_;
};

FileOutcome DisasmOne(const std::string& path, const DisasmFlags& flags, std::ostream& out) {
  FileOutcome outcome;
  outcome.doc = json{{"path", path}};
  Result<MappedFile> file = MappedFile::Open(path);
  if (!file) {
    ReportError(path, file.error());
    outcome.ok = false;
    outcome.doc["error"] = ErrorJson(file.error());
    return outcome;
  }
  // Output and errors are held back until the file is known not to have
  // changed while it was read: then only that error is printed, nothing torn.
  std::ostringstream text, errors;
  {
    CaptureStderr capture(errors);
    DisasmMapped(*file, path, flags, text, outcome);
  }
  if (Status unchanged = file->CheckUnchanged(); !unchanged) {
    ReportError(path, unchanged.error());
    outcome.ok = false;
    outcome.doc = json{{"path", path}, {"error", ErrorJson(unchanged.error())}};
    return outcome;
  }
  std::cerr << errors.str();
  out << text.str();
  return outcome;
}

}  // namespace

void AddDisasmCommand(CLI::App& app, DisasmFlags& flags) {
  CLI::App* cmd = app.add_subcommand("disasm", "Print the opcodes of every pickle in model files, like pickletools.dis");
  cmd->footer(R"(What it reads:
  The container is decided by content, never by the file name (see 'ckptguard
  info'). A zip (torch.save since 1.6, TorchScript, .npz) is read through its
  central directory, as torch reads it, and every entry holding a pickle is
  shown under its entry name; a .npy with an object dtype shows the pickle after
  its header; gzip, bzip2 and xz wrappers are opened; safetensors holds no
  pickle (unless it is also a pickle, which torch.load would run); anything else
  is a stream of pickles from byte 0 (legacy torch files are five pickles
  followed by raw storage records). Archives inside archives and zips appended
  to pickles are shown too, under "file > entry".

Output:
  Each line is "offset: opcode-byte [MARK indentation] NAME argument", the layout
  of Python's pickletools.dis, offsets relative to the entry. Lines starting with
  "!!" mark what pickletools would refuse (a memo key read before it is stored,
  a missing MARK) and decoding errors, with their byte offset. Nothing is ever
  executed: this only decodes.

Exit status: 0 when every pickle decoded, 2 when a file or entry could not be read
or decoded (what was decoded before the error is still printed).

Examples:
  ckptguard disasm model.pt
  ckptguard disasm --json model.pt | jq '.files[0].sources[0].ops[] | select(.opcode=="GLOBAL")')");
  cmd->add_option("files", flags.files, "Model files to disassemble")->required()->type_name("FILE");
  cmd->add_flag("--json", flags.json,
                "Print one JSON document: files[].sources[].ops[], one object per opcode with "
                "pickle, offset, length, opcode, byte, proto, arg (typed) and repr");
  AddFormatOption(*cmd, flags.json);
  cmd->add_option("--indent", flags.indent, "Blanks per MARK level")->default_val(4)->check(CLI::Range(0, 16));
  cmd->add_option("--max-arg", flags.max_arg_chars,
                  "Cut operand reprs longer than this many characters")
      ->default_val(2048);
  cmd->add_flag("--full-args", flags.full_args, "Never cut operands (as pickletools prints them)");
  AddPickleLimitOptions(*cmd, flags.limits);
}

int RunDisasm(const DisasmFlags& flags) {
  bool all_ok = true;
  json files = json::array();
  for (const std::string& path : flags.files) {
    FileOutcome outcome = DisasmOne(path, flags, std::cout);
    all_ok = all_ok && outcome.ok;
    if (flags.json) files.push_back(std::move(outcome.doc));
  }
  if (flags.json) {
    std::cout << DumpJson(Stamp(json{{"files", std::move(files)}}, "disasm"), 1) << "\n";
  }
  std::cout.flush();
  return all_ok ? kExitOk : kExitError;
}

}  // namespace ckptguard::cli

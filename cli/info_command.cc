// `ckptguard info`: what a model file is and everything odd about it.
#include "info_command.h"

#include <cstdio>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptguard/container.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/printable.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

json AnomalyJson(const Anomaly& a) {
  return json{{"kind", a.kind}, {"offset", a.offset}, {"entry", a.entry}, {"detail", a.detail}};
}

json ContainerJson(const Container& c, uint32_t depth) {
  json out{{"format", std::string(ContainerFormatName(c.format))}, {"size", c.bytes.size()}};
  json wrappers = json::array();
  for (Wrapper w : c.wrappers) wrappers.push_back(std::string(WrapperName(w)));
  out["wrappers"] = std::move(wrappers);
  if (!c.reason.empty()) out["reason"] = c.reason;
  if (!c.prefix.empty()) out["prefix"] = c.prefix;
  if (!c.entries.empty()) {
    json entries = json::array();
    for (const ContainerEntry& e : c.entries) {
      entries.push_back(json{{"name", e.zip.name},
                             {"method", e.zip.method == kZipMethodStored     ? "stored"
                                        : e.zip.method == kZipMethodDeflated ? "deflated"
                                                                             : std::to_string(e.zip.method)},
                             {"flags", e.zip.flags},
                             {"compressed_size", e.zip.compressed_len},
                             {"size", e.zip.uncompressed_len},
                             {"header_offset", e.zip.local_header_offset},
                             {"data_offset", e.data_offset ? json(*e.data_offset) : json(nullptr)},
                             {"crc32", Hex32(e.zip.crc32)},
                             {"crc_ok", e.crc_ok ? json(*e.crc_ok) : json(nullptr)},
                             {"pickle", e.holds_pickle}});
    }
    out["entries"] = std::move(entries);
  }
  json pickles = json::array();
  for (const PickleSource& p : c.pickles) {
    pickles.push_back(json{{"entry", p.entry},
                           {"offset", p.file_offset ? json(*p.file_offset + p.start) : json(nullptr)},
                           {"start", p.start},
                           {"deflated", p.deflated},
                           {"size", p.data.size() - p.start}});
  }
  out["pickles"] = std::move(pickles);
  if (c.legacy) {
    json records = json::array();
    for (const LegacyRecord& r : c.legacy->records) {
      records.push_back(json{{"key", r.key},
                             {"storage_type", r.storage_type},
                             {"elements", r.num_elements},
                             {"declared_elements", r.declared_numel},
                             {"count_offset", r.count_offset},
                             {"data_offset", r.data_offset},
                             {"data_len", r.data_len}});
    }
    json offsets = json::array();
    for (uint64_t o : c.legacy->pickle_offsets) offsets.push_back(o);
    out["legacy"] = json{{"pickle_offsets", offsets}, {"records_offset", c.legacy->records_offset}, {"records", records}};
  }
  if (c.safetensors) {
    json tensors = json::array();
    for (const SafetensorsTensor& t : c.safetensors->tensors) {
      tensors.push_back(json{{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"offset", t.file_offset},
                             {"size", t.end - t.begin}});
    }
    json metadata = json::object();
    for (const auto& [k, v] : c.safetensors->metadata) metadata[k] = v;
    out["safetensors"] = json{{"header_len", c.safetensors->header_len},
                              {"data_offset", c.safetensors->data_offset},
                              {"tensors", tensors},
                              {"metadata", metadata}};
  }
  auto npy_json = [](const NpyArray& a) {
    return json{{"version", std::to_string(a.major) + "." + std::to_string(a.minor)},
                {"descr", a.descr},
                {"shape", a.shape},
                {"fortran_order", a.fortran_order},
                {"object", a.is_object},
                {"object_unsure", a.object_unsure},
                {"item_size", a.item_size},
                {"data_offset", a.data_offset},
                {"data_len", a.data_len}};
  };
  if (c.npy) out["numpy"] = npy_json(*c.npy);
  if (!c.npz_members.empty()) {
    json members = json::array();
    for (const auto& [name, array] : c.npz_members) {
      json m = npy_json(array);
      m["entry"] = name;
      members.push_back(std::move(m));
    }
    out["members"] = std::move(members);
  }
  json anomalies = json::array();
  for (const Anomaly& a : c.anomalies) anomalies.push_back(AnomalyJson(a));
  out["anomalies"] = std::move(anomalies);
  if (c.error) out["error"] = json{{"code", std::string(ErrorCodeName(c.error->code))},
                                   {"offset", c.error->offset},
                                   {"message", c.error->ToString()}};
  json nested = json::array();
  // Nesting is bounded by ContainerLimits::max_depth (at most 16).
  for (const NestedContainer& n : c.nested) {
    nested.push_back(json{{"entry", n.entry}, {"container", ContainerJson(*n.container, depth + 1)}});
  }
  out["nested"] = std::move(nested);
  return out;
}

// Every name, key, type and detail read from the file is escaped for the
// terminal (Printable): a file cannot drive it.
void PrintContainer(const Container& c, const std::string& indent, std::ostream& out) {
  out << indent << "format: " << ContainerFormatName(c.format);
  for (Wrapper w : c.wrappers) out << " (inside " << WrapperName(w) << ")";
  out << ", " << c.bytes.size() << " bytes\n";
  if (!c.reason.empty()) out << indent << "reason: " << Printable(c.reason) << "\n";
  if (!c.prefix.empty()) out << indent << "archive prefix: " << Printable(c.prefix) << "/\n";
  if (!c.entries.empty()) {
    out << indent << "entries (" << c.entries.size() << "):\n";
    char line[512];
    std::snprintf(line, sizeof(line), "%s  %-9s %12s %12s %10s  %-8s %s\n", indent.c_str(), "method", "compressed",
                  "size", "offset", "crc", "name");
    out << line;
    for (const ContainerEntry& e : c.entries) {
      const std::string method = e.zip.method == kZipMethodStored     ? "stored"
                                 : e.zip.method == kZipMethodDeflated ? "deflated"
                                                                      : "method" + std::to_string(e.zip.method);
      const char* crc = !e.crc_ok ? "?" : *e.crc_ok ? "ok" : "MISMATCH";
      std::snprintf(line, sizeof(line), "%s  %-9s %12llu %12llu %10llu  %-8s ", indent.c_str(), method.c_str(),
                    static_cast<unsigned long long>(e.zip.compressed_len),
                    static_cast<unsigned long long>(e.zip.uncompressed_len),
                    static_cast<unsigned long long>(e.zip.local_header_offset), crc);
      out << line << Printable(e.zip.name) << (e.holds_pickle ? "  [pickle]" : "") << "\n";
    }
  }
  if (!c.pickles.empty()) {
    out << indent << "pickles:\n";
    for (const PickleSource& p : c.pickles) {
      out << indent << "  " << (p.entry.empty() ? std::string("stream") : "'" + Printable(p.entry) + "'");
      if (p.file_offset) {
        out << " at offset " << *p.file_offset + p.start;
      } else {
        out << " (deflated), at " << p.start << " in the inflated data";
      }
      out << ", " << p.data.size() - p.start << " bytes\n";
    }
  }
  if (c.legacy) {
    out << indent << "legacy pickles at offsets";
    for (uint64_t o : c.legacy->pickle_offsets) out << " " << o;
    out << "; storage records from " << c.legacy->records_offset << ":\n";
    for (const LegacyRecord& r : c.legacy->records) {
      out << indent << "  key " << Printable(r.key) << ": " << Printable(r.storage_type) << " x " << r.num_elements << " at "
          << r.data_offset << " (" << r.data_len << " bytes)\n";
    }
  }
  if (c.safetensors) {
    out << indent << "safetensors: header " << c.safetensors->header_len << " bytes, "
        << c.safetensors->tensors.size() << " tensors, data from " << c.safetensors->data_offset << "\n";
    for (const SafetensorsTensor& t : c.safetensors->tensors) {
      out << indent << "  " << Printable(t.name) << ": " << Printable(t.dtype) << " [";
      for (size_t i = 0; i < t.shape.size(); ++i) out << (i ? ", " : "") << t.shape[i];
      out << "] at " << t.file_offset << "\n";
    }
  }
  auto print_npy = [&](const NpyArray& a, const std::string& name) {
    out << indent << (name.empty() ? "numpy" : "  " + Printable(name)) << ": descr " << Printable(a.descr) << ", shape (";
    for (size_t i = 0; i < a.shape.size(); ++i) out << (i ? ", " : "") << a.shape[i];
    out << (a.shape.size() == 1 ? ",)" : ")") << (a.fortran_order ? ", fortran order" : "")
        << (a.is_object ? ", OBJECT ARRAY (a pickle)" : "") << ", data at " << a.data_offset << "\n";
  };
  if (c.npy) print_npy(*c.npy, "");
  if (!c.npz_members.empty()) {
    out << indent << "members:\n";
    for (const auto& [name, array] : c.npz_members) print_npy(array, name);
  }
  if (c.anomalies.empty()) {
    out << indent << "anomalies: none\n";
  } else {
    out << indent << "anomalies (" << c.anomalies.size() << "):\n";
    for (const Anomaly& a : c.anomalies) {
      out << indent << "  [" << a.kind << "] at byte " << a.offset;
      if (!a.entry.empty()) out << " (" << Printable(a.entry) << ")";
      out << ": " << Printable(a.detail) << "\n";
    }
  }
  if (c.error) out << indent << "error: " << Printable(c.error->ToString()) << "\n";
  for (const NestedContainer& n : c.nested) {
    out << indent << "nested in " << Printable(n.entry) << ":\n";
    PrintContainer(*n.container, indent + "    ", out);
  }
}

}  // namespace

void AddInfoCommand(CLI::App& app, InfoFlags& flags) {
  CLI::App* cmd = app.add_subcommand("info", "Say what model files are, where their pickles are, and every anomaly");
  cmd->footer(R"(What it checks:
  The format is decided by content, never by the file name, as torch decides it:
  torch-zip, torch-legacy, torchscript, safetensors, numpy, numpy-zip, pickle, zip
  or unknown (with the reason); gzip, bzip2 and xz wrappers are opened, archives
  inside archives are shown nested. Every anomaly a strict reader sees and torch
  does not is listed with its byte offset, for example:
    zip.local_name_mismatch   the local header names an entry differently from
                              the central directory (torch reads the directory)
    zip.crc_mismatch          bytes changed after writing (torch never checks CRCs)
    zip.duplicate_name        two entries with one name (torch reads the later)
    zip.case_duplicate_name   two names that differ only in case (one name to
                              torch's reader, which ignores case)
    zip.gap / zip.trailing_data / zip.overlapping_entries
    zip.zipfile_view          Python's zipfile (numpy.load) reads the directory
                              otherwise (count, offsets, names): read as '[zipfile]'
    zip.stored_size_mismatch  a stored entry torch reads to its uncompressed size
    polyglot.zip_after_pickle a pickle with a zip appended: torch runs the pickle
    legacy.numel_mismatch     a legacy storage record of the wrong size
    torch.record_size_mismatch a data/<key> record that disagrees with data.pkl
  Nothing is executed: pickles are only located here (see 'ckptguard disasm').

Exit status: 0 when every file was read, 2 when one could not be read completely
(anomalies alone do not change it; 'ckptguard scan' judges them).

Examples:
  ckptguard info model.pt
  ckptguard info --json model.pt | jq '.files[0].anomalies'
)");
  cmd->add_option("files", flags.files, "Model files to describe")->required()->type_name("FILE");
  cmd->add_flag("--json", flags.json,
                "Print one JSON document: files[] with path, format, wrappers, prefix, entries, pickles, "
                "legacy/safetensors/numpy details, anomalies, error and nested containers");
  AddFormatOption(*cmd, flags.json);
  AddPickleLimitOptions(*cmd, flags.limits.pickle);
  AddBudgetOptions(*cmd, flags.budget);
}

int RunInfo(const InfoFlags& flags) {
  bool all_ok = true;
  json files = json::array();
  for (const std::string& path : flags.files) {
    Result<MappedFile> file = MappedFile::Open(path);
    if (!file) {
      ReportError(path, file.error());
      all_ok = false;
      if (flags.json) files.push_back(json{{"path", path}, {"error", json{{"message", file.error().ToString()}}}});
      continue;
    }
    Budget budget(flags.budget);
    const Container container = OpenContainer(file->data(), flags.limits, &budget);
    // Everything said about the file is computed before it is printed, so a
    // file that changed while it was read prints that error and nothing torn.
    json doc;
    std::ostringstream text;
    if (flags.json) {
      doc = ContainerJson(container, 0);
      doc["path"] = path;
    } else {
      text << "== " << Printable(path) << "\n";
      PrintContainer(container, "", text);
    }
    if (Status unchanged = file->CheckUnchanged(); !unchanged) {
      ReportError(path, unchanged.error());
      all_ok = false;
      if (flags.json) files.push_back(json{{"path", path}, {"error", json{{"message", unchanged.error().ToString()}}}});
      continue;
    }
    bool ok = true;
    ForEachContainer(container, [&](const Container& c, const std::string& nested) {
      if (c.error) {
        ReportError(nested.empty() ? path : path + " > " + nested, *c.error);
        ok = false;
      }
    });
    all_ok = all_ok && ok;
    if (flags.json) {
      files.push_back(std::move(doc));
    } else {
      std::cout << text.str();
    }
  }
  if (flags.json) {
    std::cout << DumpJson(Stamp(json{{"files", std::move(files)}}, "info"), 1) << "\n";
  }
  std::cout.flush();
  return all_ok ? kExitOk : kExitError;
}

}  // namespace ckptguard::cli

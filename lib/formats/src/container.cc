#include "ckptguard/container.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "ckptguard/storage_refs.h"
#include "ckptguard/storage_types.h"
#include "archive_reader.h"
#include "joblib_view.h"
#include "pickle_views.h"
#include "torchscript_code.h"
#include "unwrap.h"

namespace ckptguard {
namespace {

constexpr std::string_view kNpyMagic = "\x93NUMPY";
constexpr std::string_view kEmptyZipMagic("PK\x05\x06", 4);  // an end record at offset 0
constexpr std::string_view kZipMagic = "PK\x03\x04";
// Most .npy arrays read one after another from one file.
constexpr uint32_t kMaxNpyArrays = 4096;
// The most pickles read only when frames are read whole (FrameEndPickles)
// scanned per source.
constexpr size_t kMaxFrameEndPickles = 64;
// How far into a safetensors header whitespace may go before the '{'.
constexpr size_t kMaxLeadingSpace = 64;

std::string Num(uint64_t v) { return std::to_string(v); }

bool StartsWith(Bytes data, std::string_view magic) { return AsStringView(data).starts_with(magic); }

bool EndsWith(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

// EqualsIgnoringCase: `a` and `b` are equal when ASCII capitals are read as
// small letters (as torch's zip reader compares names), without copies.
bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  auto lower = [](char ch) { return ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch; };
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// EndsWithLower: `s` ends with `suffix` (lower case) when its ASCII capitals
// are read as small letters, without copying `s`.
bool EndsWithLower(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && EqualsIgnoringCase(s.substr(s.size() - suffix.size()), suffix);
}

// LooksLikeSafetensors: a u64 header length that fits in the file, then JSON
// (possibly after whitespace, which the strict parser then refuses).
bool LooksLikeSafetensors(Bytes data) {
  if (data.size() < 9) return false;
  ByteCursor c(data);
  const uint64_t header_len = *c.ReadU64LE();
  if (header_len == 0 || header_len > data.size() - 8) return false;
  for (size_t i = 8; i < data.size() && i < 8 + std::min<uint64_t>(header_len, kMaxLeadingSpace); ++i) {
    if (data[i] == '{') return true;
    if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') return false;
  }
  return false;
}

bool InRange(Bytes outer, std::string_view inner) {
  const auto* b = reinterpret_cast<const uint8_t*>(inner.data());
  return b >= outer.data() && b + inner.size() <= outer.data() + outer.size();
}

// SameZipEntry: `a` and `b` (named `b_name`) are the same entry, `a`'s
// offsets counted from `shift` bytes before `b`'s: what one zip reader
// reads, the other does.
bool SameZipEntry(const ZipEntry& a, const ZipEntry& b, std::string_view b_name, uint64_t shift) {
  return a.name == b_name && a.local_header_offset == b.local_header_offset + shift &&
         a.compressed_len == b.compressed_len && a.uncompressed_len == b.uncompressed_len && a.method == b.method &&
         a.flags == b.flags;
}

class Opener {
 public:
  Opener(const ContainerLimits& limits, Budget& budget, const ContainerAhead* ahead = nullptr)
      : limits_(limits), budget_(budget), ahead_(ahead) {}

  Container Open(Bytes bytes, uint32_t depth) {
    Container c;
    c.bytes = bytes;
    if (Status read = budget_.Charge(BudgetKind::kReadBytes, bytes.size(), 0, "", "container"); !read) {
      c.reason = "not read: the file's budget ran out";
      c.error = read.error();
      return c;
    }
    // torch.load reads a file that does not start with a zip local header
    // as a tar first, when Python's tarfile takes its first header.
    const bool python_tar = !LooksLikeZip(bytes) && PythonReadsAsTar(bytes);
    // An archive of no entries is its end record alone: numpy.load reads
    // one (np.savez() of no arrays) as an empty .npz.
    if (LooksLikeZip(bytes) || StartsWith(bytes, kEmptyZipMagic)) {
      OpenZip(c, depth);
      AddEmbeddedZips(c, depth);
      if (python_tar) AddPythonTar(c, depth, "a zip archive");
    } else if (StartsWith(bytes, kNpyMagic)) {
      OpenNpy(c, depth);
      if (python_tar) AddPythonTar(c, depth, "an .npy file");
    } else if (std::optional<Container> wrapped = OpenWrapped(bytes, DetectWrapper(bytes), depth)) {
      const size_t sources_before = wrapped->pickles.size();
      AddRawPickleView(*wrapped, bytes, "compressed");
      AddReaderViews(*wrapped, depth, /*zipfile_view=*/false, sources_before);
      if (depth == 0) AddTorchScriptFlatbuffer(*wrapped, bytes);
      if (python_tar) AddPythonTar(*wrapped, depth, "a compressed stream");
      return std::move(*wrapped);
    } else if (LooksLikeSafetensors(bytes)) {
      OpenSafetensors(c);
      if (python_tar) AddPythonTar(c, depth, "a safetensors file");
    } else if (std::optional<ArchiveKind> archive = DetectArchive(bytes)) {
      OpenArchive(c, *archive, depth);
      AddRawPickleView(c, bytes, "archive");
      if (python_tar && *archive != ArchiveKind::kTar) AddPythonTar(c, depth, "a 7z archive");
    } else {
      OpenPickleStream(c, depth);
      if (python_tar) AddPythonTar(c, depth, "a pickle");
    }
    AddReaderViews(c, depth);
    if (depth == 0) AddTorchScriptFlatbuffer(c, bytes);
    return c;
  }

 private:
  // MayNest counts one more container nested in `c` at depth + 1 and says
  // whether it may be opened (else the anomaly saying why is added).
  bool MayNest(Container& c, const std::string& entry, uint32_t depth) {
    if (depth + 1 > limits_.max_depth) {
      c.anomalies.push_back({"container.too_deep", 0, entry,
                             "nested container not opened: max_depth (" + Num(limits_.max_depth) + ") reached"});
      return false;
    }
    if (++num_nested_ > limits_.max_nested) {
      c.anomalies.push_back({"container.too_many", 0, entry,
                             "nested container not opened: max_nested (" + Num(limits_.max_nested) +
                                 ") containers already opened in this file"});
      return false;
    }
    if (Status nest = budget_.Nest(depth + 1, 0, entry, "nested container"); !nest) {
      c.anomalies.push_back({"container.too_deep", 0, entry, "nested container not opened: " + nest.error().detail});
      return false;
    }
    return true;
  }

  void AddNested(Container& c, std::string entry, Bytes bytes, uint32_t depth) {
    if (!MayNest(c, entry, depth)) return;
    c.nested.push_back({std::move(entry), std::make_unique<Container>(Open(bytes, depth + 1))});
  }

  // AddRawPickleView: pickle.load reads any file as a pickle from byte 0;
  // numpy.load does for a file that is neither a zip nor an .npy; joblib.load
  // for one that does not start with a compressor magic joblib knows (an
  // LZMA-alone header other than ']\0\0', a tar); torch.load for one that is
  // not a zip and that Python's tarfile refuses. So when a file detected as
  // an archive or a compressed stream (`what`) also decodes as a complete
  // pickle from byte 0, that pickle is read too, as a source found by content
  // (its parse errors are no findings: the file may just be what it looks
  // like). A file that does not decode so is not touched.
  // A lone STOP (a tar whose first name starts with '.') is no pickle to
  // CPython (its stack is empty): at least one op must come before it.
  void AddRawPickleView(Container& c, Bytes raw, std::string_view what) {
    if (raw.empty()) return;
    PickleDecoder decoder(raw, limits_.pickle);
    uint64_t num_ops = 0;
    std::optional<uint64_t> end;
    while (!end) {
      Result<PickleOp> op = decoder.Next();
      if (!op) return;
      if (Status charged = budget_.Charge(BudgetKind::kOpcodes, 1, op->offset, "", "pickle polyglot check"); !charged) {
        if (!c.error) c.error = charged.error();
        return;
      }
      ++num_ops;
      if (op->code == Opcode::kStop) end = decoder.Offset();
    }
    if (num_ops < 2) return;
    c.anomalies.push_back({"polyglot.pickle_and_" + std::string(what), 0, "[pickle.load]",
                           "the first " + Num(*end) + " bytes also decode as a pickle, which pickle.load, "
                           "numpy.load, joblib.load and torch.load's legacy reader run; scanned as '[pickle.load]'"});
    c.pickles.push_back(PickleSource{"[pickle.load]", raw, 0, 0, false, 0, true, std::nullopt, {}});
  }

  // AddEmbeddedZips opens the other archives a zip file holds, found by
  // their end records (FindEmbeddedZips), each as a file of its own: a
  // reader of a byte range reads them, as torch.distributed.checkpoint reads
  // each torch archive of a .distcp file with torch.load of its range. A
  // well-formed archive has one end record and accounts for all its bytes,
  // so the file is searched only when it did not open as one archive, or
  // has bytes no entry accounts for, overlapping or misplaced entries. When
  // the archives tile the file back to back and each opens, the file is a
  // kZipSequence (what the whole-file reading gave is dropped: no reader
  // loads the file whole).
  void AddEmbeddedZips(Container& c, uint32_t depth) {
    const bool whole = !c.error && std::none_of(c.anomalies.begin(), c.anomalies.end(), [](const Anomaly& a) {
      return a.kind == "zip.gap" || a.kind == "zip.trailing_data" || a.kind == "zip.overlapping_entries" ||
             a.kind == "zip.local_header_mismatch" || a.kind == "zip.bad_entry";
    });
    if (whole) return;
    bool more = false;
    const std::vector<EmbeddedZip> found = FindEmbeddedZips(c.bytes, limits_.max_nested, &more);
    // The archive the whole-file reading read (through the last end record,
    // from the file's start) is not read again.
    // An archive spanning the whole file is these very bytes: opening them
    // again reads the same (or fails the same way, nested to max_depth).
    auto read_whole = [&](const EmbeddedZip& z) {
      return z.begin == 0 && ((!c.error && &z == &found.back()) || z.end == c.bytes.size());
    };
    bool tiled = found.size() >= 2 && !more && found.front().begin == 0 && found.back().end == c.bytes.size();
    for (size_t i = 1; tiled && i < found.size(); ++i) tiled = found[i].begin == found[i - 1].end;
    const size_t nested_before = c.nested.size();
    std::vector<uint64_t> opened_at;  // where each archive added to c.nested begins
    for (const EmbeddedZip& z : found) {
      if (read_whole(z)) continue;
      const size_t before = c.nested.size();
      AddNested(c, "@" + Num(z.begin), c.bytes.subspan(static_cast<size_t>(z.begin), static_cast<size_t>(z.end - z.begin)),
                depth);
      if (c.nested.size() > before) opened_at.push_back(z.begin);
    }
    if (more) {
      c.anomalies.push_back({"container.too_many", 0, "",
                             "more zip archives in the file than max_nested (" + Num(limits_.max_nested) +
                                 "): the others were not opened"});
    }
    if (opened_at.empty()) return;
    const bool all_open = opened_at.size() == found.size() &&
                          std::all_of(c.nested.begin() + static_cast<std::ptrdiff_t>(nested_before), c.nested.end(),
                                      [](const NestedContainer& n) { return !n.container->error; });
    if (tiled && all_open) {
      c.format = ContainerFormat::kZipSequence;
      c.error.reset();
      c.anomalies.clear();
      c.entries.clear();
      c.entry_index = EntryIndex();
      c.pickles.clear();
      c.npz_members.clear();
      c.prefix.clear();
      c.nested.erase(c.nested.begin(), c.nested.begin() + static_cast<std::ptrdiff_t>(nested_before));
      return;
    }
    for (uint64_t at : opened_at) {
      c.anomalies.push_back({"zip.embedded_archive", at, "@" + Num(at),
                             "a zip archive inside the file, found by its end record: a reader of that byte range "
                             "(torch.load of a file slice) reads it"});
    }
  }

  // AddReaderViews adds what other real readers see in c's bytes, beside
  // what torch sees: the pure-Python unpickler's reading of each pickle
  // source where its FRAME handling parts from the C unpickler's
  // (pickle_views.h), and Python's zipfile's reading of a zip it finds
  // through the file's last end record (AddZipfileView).
  // Sources before `first_source` already have their views.
  void AddReaderViews(Container& c, uint32_t depth, bool zipfile_view = true, size_t first_source = 0) {
    const size_t num_sources = c.pickles.size();
    for (size_t i = first_source; i < num_sources; ++i) {
      if (c.pickles[i].same_as) continue;
      const PickleSource source = c.pickles[i];  // a copy: push_back below moves the vector
      Result<std::optional<UnframedView>> view = std::optional<UnframedView>();
      if (MayReadFramesDifferently(c, source)) {
        view = PythonUnpicklerView(source.data, source.start, source.max_pickles, limits_.pickle, budget_, source.entry);
      }
      if (!view) {
        if (!c.error) c.error = view.error();
        return;
      }
      // The C unpickler's pickles when it reads frames whole (the file
      // position after a STOP inside one is the frame's end).
      Result<FrameEndStarts> whole = FrameEndStarts{};
      if (MayReadFramesDifferently(c, source) && source.max_pickles != 1) {
        whole = FrameEndPickles(source.data, source.start, source.max_pickles, kMaxFrameEndPickles, limits_.pickle,
                                budget_, source.entry);
      }
      if (!whole) {
        if (!c.error) c.error = whole.error();
        return;
      }
      AddJoblibView(c, source);
      if (!whole->starts.empty()) {
        size_t scanned = 0;
        for (uint64_t at : whole->starts) {
          // An array there is the .npy reading's (OpenNpy follows it).
          if (StartsWith(source.data.subspan(static_cast<size_t>(at)), kNpyMagic)) continue;
          c.pickles.push_back(PickleSource{source.entry + " [frame end @" + Num(at) + "]", source.data, at,
                                           source.file_offset, source.deflated, 1, source.sniffed, std::nullopt, {}});
          ++scanned;
        }
        c.anomalies.push_back(
            {"pickle.frame_mismatch", source.file_offset.value_or(0) + whole->first_stop, source.entry,
             Num(whole->first_left) + " frame bytes after a STOP: the C unpickler leaves a file at the frame's end "
                 "when it read the frame whole (a frame of 128 KiB or more, a file without peek()), and the next "
                 "load starts there; " + Num(scanned) + " pickle(s) read only so are scanned" +
                 (whole->more ? " (more were not: too many readings)" : "")});
      }
      if (!*view) continue;
      const std::string entry = source.entry.empty() ? "[pickle._Unpickler]" : source.entry + " [pickle._Unpickler]";
      c.anomalies.push_back({"pickle.frame_mismatch", source.file_offset.value_or(0) + (*view)->frame_offset,
                             source.entry, (*view)->detail + "; that reading is scanned as '" + entry + "'"});
      c.buffers.push_back(std::make_unique<std::string>(std::move((*view)->bytes)));
      c.pickles.push_back(PickleSource{entry, AsBytes(*c.buffers.back()), 0, std::nullopt, source.deflated,
                                       source.max_pickles, source.sniffed, std::nullopt, {}});
    }
    if (zipfile_view) AddZipfileView(c, depth);
  }

  // MayReadFramesDifferently: the readings can only part at a FRAME opcode,
  // so a source without the byte 0x95 needs no second decode. The records
  // of a torch archive that declare protocol 2 or 3 (torch's writer) are
  // read by torch's C unpickler: a FRAME there is a decode error or
  // trailing data the scan reports, and their second decode is skipped
  // (it would double the cost of scanning large checkpoints).
  static bool MayReadFramesDifferently(const Container& c, const PickleSource& source) {
    const Bytes data = source.data.subspan(static_cast<size_t>(std::min<uint64_t>(source.start, source.data.size())));
    if (std::memchr(data.data(), 0x95, data.size()) == nullptr) return false;
    const bool torch_archive = c.format == ContainerFormat::kTorchZip || c.format == ContainerFormat::kTorchScript;
    const bool old_protocol = data.size() >= 2 && data[0] == 0x80 && data[1] < 4;
    return !(torch_archive && old_protocol);
  }

  // AddJoblibView adds joblib.load's reading of `source` when it holds
  // NumpyArrayWrapper arrays inline (joblib_view.h): the pickle without the
  // array bytes, and each object array's own pickle.
  void AddJoblibView(Container& c, const PickleSource& source) {
    // joblib reads array bytes inline only after a BUILD of a
    // NumpyArrayWrapper, a class the view knows by its literal name
    // (IsWrapperName): without those bytes in the stream the view finds
    // nothing, and running it would double the cost of every pickle (a
    // 20,000-tensor data.pkl spent half its scan here). The name is in the
    // stream as written, or spelled with escapes (a STRING's \x41, a
    // UNICODE's \u0041): in a file joblib.load reads (a whole file, not a
    // member of an archive, which joblib never reads), any backslash runs
    // the view too.
    static constexpr std::string_view kWrapper = "NumpyArrayWrapper";
    const std::string_view text = AsStringView(source.data.subspan(static_cast<size_t>(std::min<uint64_t>(source.start, source.data.size()))));
    const bool whole_file = source.entry.empty();
    if (text.find(kWrapper) == std::string_view::npos && !(whole_file && text.find('\\') != std::string_view::npos)) {
      return;
    }
    Result<std::optional<JoblibView>> joblib =
        ReadJoblibView(source.data, source.start, limits_.pickle, budget_, source.entry);
    if (!joblib) {
      if (!c.error) c.error = joblib.error();
      return;
    }
    if (!*joblib) return;
    const std::string entry = source.entry.empty() ? "[joblib]" : source.entry + " [joblib]";
    for (Anomaly a : (*joblib)->anomalies) {
      a.offset += source.file_offset.value_or(0);
      a.entry = source.entry;
      c.anomalies.push_back(std::move(a));
    }
    c.buffers.push_back(std::make_unique<std::string>(std::move((*joblib)->bytes)));
    std::vector<OffsetRun> runs = std::move((*joblib)->runs);
    for (OffsetRun& run : runs) run.source += source.file_offset.value_or(0);
    c.pickles.push_back(PickleSource{entry, AsBytes(*c.buffers.back()), 0, std::nullopt, source.deflated, 1,
                                     source.sniffed, std::nullopt, std::move(runs)});
    if (whole_file && !c.joblib) {
      // What a loader reads as joblib.load does (joblib reads whole files).
      JoblibReading reading{.pickle = c.pickles.size() - 1, .arrays = {}, .complete = (*joblib)->complete, .end = (*joblib)->end};
      // A stream pickle.load cannot read past its first array is joblib's
      // format, not a broken pickle, when joblib reads it to its STOP.
      const bool broken = broken_stream_ && c.error && c.error->offset == broken_stream_->offset &&
                          c.error->detail == broken_stream_->detail;
      if (reading.complete && broken) {
        c.error.reset();
      } else if (broken && !(*joblib)->anomalies.empty()) {
        // Neither reading goes through: pickle.load stops at the first
        // array's bytes, and joblib's reading takes a turn the view does not
        // follow. That turn, not the array's bytes, is why the file cannot
        // be read as joblib.load reads it.
        const Anomaly& a = (*joblib)->anomalies.front();
        c.error = MakeError(ErrorCode::kMalformed, a.offset + source.file_offset.value_or(0),
                            "joblib.load's reading of this file is not followed: " + a.detail, source.entry)
                      .error();
      }
      for (const JoblibView::Array& a : (*joblib)->arrays) {
        const Bytes bytes = a.object ? Bytes() : source.data.subspan(static_cast<size_t>(a.offset), static_cast<size_t>(a.len));
        reading.arrays.push_back({bytes, source.file_offset ? std::optional<uint64_t>(*source.file_offset + a.offset) : std::nullopt,
                                  a.object});
      }
      c.joblib = std::move(reading);
    }
    for (uint64_t at : (*joblib)->object_pickles) {
      c.pickles.push_back(PickleSource{entry + " @" + Num(at), source.data, at, source.file_offset, source.deflated, 1,
                                       source.sniffed, std::nullopt, {}});
    }
    // Arrays whose dtype the view could not work out: read as possible
    // pickles (found by content, so a parse error is not a finding).
    for (uint64_t at : (*joblib)->maybe_object_pickles) {
      c.pickles.push_back(PickleSource{entry + " @" + Num(at), source.data, at, source.file_offset, source.deflated, 1,
                                       true, std::nullopt, {}});
    }
  }

  // SameReading: `c` holds the entries of `zip`, with the same names,
  // offsets (c's counted from `shift` bytes before zip's), sizes, methods
  // and flags, in the same order: what one reader reads, the other does.
  static bool SameReading(const Container& c, const ZipArchive& zip, uint64_t shift) {
    if (c.error || c.entries.size() != zip.entries().size()) return false;
    for (size_t i = 0; i < c.entries.size(); ++i) {
      if (!SameEntry(c.entries[i].zip, zip.entries()[i], zip.entries()[i].name, shift)) return false;
    }
    return true;
  }
  // SameEntry: SameReading's test of one entry (SameZipEntry).
  static bool SameEntry(const ZipEntry& a, const ZipEntry& b, std::string_view b_name, uint64_t shift) {
    return SameZipEntry(a, b, b_name, shift);
  }

  // ZipfileSameAhead: the caller's ContainerAhead found, for the file's own
  // zip (depth 0, these bytes, as many entries as c read), that zipfile
  // reads it as torch's reader does. c.entries are then that reading's:
  // OpenZip read them with ZipArchive::Open of the same bytes and limits.
  bool ZipfileSameAhead(const Container& c, uint32_t depth) const {
    if (ahead_ == nullptr || depth != 0 || c.bytes.data() != ahead_->file.data() ||
        c.bytes.size() != ahead_->file.size() || !ahead_->zipfile_same.valid()) {
      return false;
    }
    // get() first: num_entries is set before the value is.
    return ahead_->zipfile_same.get() && ahead_->num_entries == c.entries.size();
  }

  // AddZipfileView adds Python's zipfile's reading of c's bytes
  // (ZipArchive::OpenAsZipfile), which numpy.load and any zipfile user
  // read, where it differs from every reading already made: zipfile finds
  // the end record by searching back from the file's end, takes the
  // directory that ends there (shifting every offset by the bytes before
  // it), reads records until the directory's size is used up (whatever the
  // count), ignores disk numbers and cuts names at NUL; torch's reader
  // (miniz) does none of these and wants PK\x03\x04 at 0. A file that does
  // not start with a zip gets zip.data_before_archive, a zip that zipfile
  // reads otherwise zip.zipfile_view; either way the reading is a nested
  // container ('@<offset>' or '[zipfile]') whose entries, under the names
  // zipfile gives them, are examined and scanned as any zip's.
  void AddZipfileView(Container& c, uint32_t depth) {
    const Bytes bytes = c.bytes;
    if (bytes.size() < 22) return;
    // Cheap first: zipfile needs an end record in the last 64 KiB + 22 bytes.
    const std::string_view text = AsStringView(bytes);
    const size_t from = bytes.size() > 65'558 ? bytes.size() - 65'558 : 0;
    if (text.substr(from).rfind(std::string_view("PK\x05\x06", 4)) == std::string_view::npos) return;
    const bool zip_start = LooksLikeZip(bytes) || StartsWith(bytes, kEmptyZipMagic);
    // The common case, a zip that zipfile reads as torch's reader does
    // (SameReading below), is learnt without keeping zipfile's entries.
    if (zip_start && !c.error &&
        (ZipfileSameAhead(c, depth) ||
         ZipArchive::ZipfileReadsAs(bytes, limits_.zip, c.entries.size(),
                                    [&](size_t i, const ZipEntry& b, std::string_view name) {
                                      return SameEntry(c.entries[i].zip, b, name, 0);
                                    }))) {
      return;
    }
    Result<ZipArchive> view = ZipArchive::OpenAsZipfile(bytes, limits_.zip);
    if (!view) {
      // zipfile refuses what it cannot read (it runs nothing); our own
      // limits refusing it are a different matter.
      if (view.error().code == ErrorCode::kLimitExceeded) {
        c.anomalies.push_back({"zip.zipfile_view", view.error().offset, "[zipfile]",
                               "Python's zipfile's reading of the archive was not made: " + view.error().ToString()});
      }
      return;
    }
    if (view->entries().empty()) return;
    const uint64_t base = view->base();
    // The same reading made already: this file's own (torch's reader), or
    // a nested one of the same bytes (the archive found at that offset: a
    // zip appended to a pickle, an archive of a .distcp file; the last
    // member of a tar, which zipfile finds through the tar's end).
    if (zip_start && base == 0 && SameReading(c, *view, 0)) return;
    const std::string at_base = "@" + Num(base);
    const Bytes from_base = view->file();
    for (const NestedContainer& n : c.nested) {
      const Bytes nested = n.container->bytes;
      if (!SameReading(*n.container, *view, 0) || nested.size() > from_base.size()) continue;
      if (n.entry == at_base || std::memcmp(nested.data(), from_base.data(), nested.size()) == 0) return;
    }
    std::string entry;
    if (!zip_start) {
      entry = at_base;
      c.anomalies.push_back({"zip.data_before_archive", base, entry,
                             "Python's zipfile reads a zip archive that ends the file (its end record at " +
                                 Num(base + view->layout().end_record_offset) +
                                 "); torch does not, since the file does not start with PK\\x03\\x04"});
    } else {
      entry = "[zipfile]";
      c.anomalies.push_back({"zip.zipfile_view", base + view->layout().directory_offset, entry,
                             "Python's zipfile (numpy.load) reads this archive differently from torch's reader: " +
                                 DescribeDifference(c, *view) + "; its reading is scanned as '[zipfile]'"});
    }
    if (depth + 1 > limits_.max_depth || ++num_nested_ > limits_.max_nested) {
      c.anomalies.push_back({"container.too_deep", base, entry, "the zip archive was not opened: nesting limits"});
      return;
    }
    if (Status nest = budget_.Nest(depth + 1, base, entry, "nested container"); !nest) {
      c.anomalies.push_back({"container.too_deep", base, entry, "the zip archive was not opened: " + nest.error().detail});
      return;
    }
    auto inner = std::make_unique<Container>();
    inner->bytes = view->file();
    if (Status read = budget_.Charge(BudgetKind::kReadBytes, inner->bytes.size(), base, entry, "container"); !read) {
      inner->error = read.error();
    } else {
      OpenZip(*inner, depth + 1, std::move(*view));
      AddReaderViews(*inner, depth + 1, false);
    }
    c.nested.push_back({entry, std::move(inner)});
  }

  // DescribeDifference says how zipfile's reading `view` of c's bytes
  // differs from the one c holds (torch's reader's).
  static std::string DescribeDifference(const Container& c, const ZipArchive& view) {
    std::string out;
    if (c.error) {
      out = "torch's reader refuses it (" + c.error->ToString() + ")";
    } else if (c.entries.size() != view.entries().size()) {
      out = "torch's reader reads " + Num(c.entries.size()) + " entries (the end record's count)";
    } else {
      out = "torch's reader reads its " + Num(c.entries.size()) + " entries";
    }
    out += ", zipfile " + Num(view.entries().size());
    if (view.concat() != 0) {
      out += " from the directory that ends at the end record, every offset shifted by " + std::to_string(view.concat());
    }
    // The first few entries zipfile reads that torch's reader does not.
    std::set<std::tuple<std::string_view, uint64_t, uint64_t, uint64_t>> own;
    for (const ContainerEntry& e : c.entries) {
      own.emplace(e.zip.name, e.zip.local_header_offset, e.zip.compressed_len, e.zip.uncompressed_len);
    }
    size_t listed = 0, other = 0;
    std::string names;
    for (const ZipEntry& e : view.entries()) {
      if (own.contains({e.name, e.local_header_offset + view.base(), e.compressed_len, e.uncompressed_len})) continue;
      ++other;
      if (listed < 4) {
        names += (listed++ == 0 ? "" : ", ") + std::string("'") + e.name + "' at " + Num(e.local_header_offset + view.base());
      }
    }
    if (other > 0) {
      out += "; " + Num(other) + " of them only zipfile reads (" + names + (other > listed ? ", ..." : "") + ")";
    }
    return out;
  }

  // AddPythonTar: a file that is `what` to its other readers and a tar to
  // Python's tarfile, which torch.load tries first (torch < 0.4's format:
  // it unpickles the 'storages', 'tensors' and 'pickle' members). No writer
  // makes both: CKG-F011, and the tar's members are read as
  // '[tarfile]' (with libarchive; polyglot.tar_reading where Python's
  // reading of the headers differs from it).
  void AddPythonTar(Container& c, uint32_t depth, const std::string& what) {
    c.anomalies.push_back({"polyglot.tar", 0, "",
                           "the file is " + what + ", and Python's tarfile reads it as a tar too: torch.load tries "
                           "that first and unpickles its 'storages', 'tensors' and 'pickle' members; read as "
                           "'[tarfile]'"});
    // Counted as a nested container; the same bytes are read again as a
    // tar, not opened again (that would find `what` again).
    if (!MayNest(c, "[tarfile]", depth)) return;
    auto tar = std::make_unique<Container>();
    tar->bytes = c.bytes;
    OpenArchive(*tar, ArchiveKind::kTar, depth + 1);
    c.nested.push_back({"[tarfile]", std::move(tar)});
  }

  // OpenArchive reads a tar or 7z archive (archive_reader.h): every member
  // is opened as a file of its own. A tar is what torch.load tries first
  // (its torch < 0.4 format, whose 'storages', 'tensors' and 'pickle'
  // members it unpickles); the archive itself stays kUnknown (no loader
  // reads it), with the reason.
  void OpenArchive(Container& c, ArchiveKind kind, uint32_t depth) {
    const std::string name = kind == ArchiveKind::kTar ? "tar" : "7z";
    if (kind == ArchiveKind::kTar) {
      // Where Python's tarfile and libarchive may read different members:
      // numbers always; pax, GNU and unknown headers in a tar that may hold
      // a member torch.load unpickles ('storages' is in its bytes: a name
      // field, a pax path or a GNU long name spells it).
      if (std::optional<TarReadingDifference> d = TarReadingDiffers(c.bytes, limits_.zip.max_entries);
          d && (!d->extension || AsStringView(c.bytes).find("storages") != std::string_view::npos)) {
        c.anomalies.push_back({"polyglot.tar_reading", d->offset, "",
                               d->detail + ": the members torch.load unpickles (it reads the tar with Python's "
                                           "tarfile) may not be the ones read here"});
      }
    }
    Result<ArchiveContents> contents = ReadArchive(c.bytes, kind, limits_.zip.max_entries, limits_.max_unwrapped_len,
                                                   limits_.zip.max_ratio, budget_);
    if (kind == ArchiveKind::kTar && PythonReadsAsTar(c.bytes) &&
        (!contents || (contents->members.empty() && contents->error))) {
      // libarchive refuses what Python's tarfile reads (a header only
      // tarfile's int(s, 8) takes): torch.load's members are not read here.
      c.anomalies.push_back({"polyglot.tar", 0, "",
                             "Python's tarfile reads this file as a tar (torch.load tries that first and unpickles "
                             "its 'storages', 'tensors' and 'pickle' members), and C tar readers do not: " +
                                 (contents ? contents->error->detail : contents.error().detail)});
    }
    if (!contents) {
      c.reason = "a " + name + " archive that could not be read";
      c.error = contents.error();
      return;
    }
    c.archive = true;
    bool legacy = false;
    for (const ArchiveMember& m : contents->members) {
      legacy = legacy || m.name == "storages" || m.name == "tensors" || m.name == "pickle";
    }
    for (ArchiveMember& m : contents->members) {
      c.buffers.push_back(std::make_unique<std::string>(std::move(m.data)));
      const Bytes bytes = AsBytes(*c.buffers.back());
      if (kind == ArchiveKind::kTar && legacy && (m.name == "storages" || m.name == "tensors")) {
        WalkLegacyTarMember(c, m.name, bytes);
      } else {
        AddNested(c, m.name, bytes, depth);
      }
    }
    if (kind == ArchiveKind::kTar && legacy) {
      c.reason = "a tar archive: torch.load reads it as a torch < 0.4 checkpoint, which ckptguard does not load";
      c.anomalies.push_back({"torch.legacy_tar", 0, "",
                             "torch.load reads this tar as a torch < 0.4 checkpoint and unpickles its 'storages', "
                             "'tensors' and 'pickle' members (each scanned as a file of its own)"});
    } else {
      c.reason = "a " + name + " archive of " + Num(contents->members.size()) +
                 " files (each scanned as a file of its own)";
    }
    if (contents->error) {
      const Error& e = *contents->error;
      c.anomalies.push_back({"archive.corrupt", e.offset, "", e.detail + "; the members read before it are read"});
    }
  }

  // WalkLegacyTarMember follows torch's legacy_load through the 'storages'
  // or 'tensors' member of a legacy tar: a pickle of the count, then per
  // record a pickle of its arguments and raw bytes (storages: an int64
  // element count and the elements, whose size the storage type in the
  // arguments gives; tensors: ndim, 4 bytes, sizes, strides, offset), then
  // for storages a pickle of the views. Each pickle is a source of its own
  // ('storages @<offset>'); where the layout is not understood the walk stops
  // with torch.legacy_tar_layout (what follows is not read by torch either
  // without an error, but its pickles before that have run).
  void WalkLegacyTarMember(Container& c, const std::string& name, Bytes data) {
    const bool storages = name == "storages";
    auto stop = [&](uint64_t at, const std::string& why) {
      c.anomalies.push_back({"torch.legacy_tar_layout", at, name, why + "; not read past offset " + Num(at)});
    };
    // One pickle at `at`: added as a source; returns its end and its ops.
    auto pickle_at = [&](uint64_t at) -> std::optional<std::pair<uint64_t, std::vector<PickleOp>>> {
      c.pickles.push_back(PickleSource{name + " @" + Num(at), data, at, std::nullopt, true, 1, false, std::nullopt, {}});
      if (at >= data.size()) return std::nullopt;
      Result<uint64_t> end = FirstPickleEnd(data.subspan(static_cast<size_t>(at)), limits_.pickle, at, &budget_, name);
      if (!end) return std::nullopt;  // the scan reports the break
      DecodedStream ops = DecodeStream(data.subspan(static_cast<size_t>(at), static_cast<size_t>(*end - at)),
                                       limits_.pickle, at, 1);
      if (!budget_.Charge(BudgetKind::kOpcodes, ops.ops.size(), at, name, "legacy tar walk")) return std::nullopt;
      return std::pair<uint64_t, std::vector<PickleOp>>{*end, std::move(ops.ops)};
    };
    auto count = pickle_at(0);
    if (!count) return;
    std::optional<int64_t> num;
    for (const PickleOp& op : count->second) {
      if (op.arg.type == PickleArgType::kInt) num = op.arg.int_value;
      if (op.arg.type == PickleArgType::kUInt && op.code != Opcode::kProto) num = static_cast<int64_t>(op.arg.uint_value);
    }
    if (!num || *num < 0) {
      stop(count->first, "the first pickle of '" + name + "' is not a count");
      return;
    }
    uint64_t pos = count->first;
    for (int64_t i = 0; i < *num; ++i) {
      if (c.pickles.size() > limits_.zip.max_entries) {
        stop(pos, "more records than max_entries");
        return;
      }
      auto args = pickle_at(pos);
      if (!args) return;
      ByteCursor raw(data.subspan(static_cast<size_t>(args->first)), args->first);
      if (storages) {
        std::optional<StorageType> type;
        for (const PickleOp& op : args->second) {
          if (op.arg.type == PickleArgType::kGlobal && op.arg.Data() == "torch") type = FindStorageType(op.arg.Name());
        }
        Result<uint64_t> numel = raw.ReadU64LE();
        if (!type || !numel || *numel > raw.Remaining() / type->elem_size || !raw.Skip(*numel * type->elem_size)) {
          stop(args->first, "a storage record whose type or size is not understood");
          return;
        }
      } else {
        Result<int32_t> ndim = raw.ReadI32LE();
        if (!ndim || *ndim < 0 || *ndim > 1024 || !raw.Skip(4 + 16 * static_cast<uint64_t>(*ndim) + 8)) {
          stop(args->first, "a tensor record whose shape is not understood");
          return;
        }
      }
      pos = raw.Offset();
    }
    if (storages) pickle_at(pos);  // storage_views
  }

  // OpenWrapped unwraps `bytes` and opens what they hold; nullopt when
  // there is no wrapper, or when a raw zlib or LZMA-alone header (whose
  // magic is weak) yields nothing: the bytes are then detected as usual.
  std::optional<Container> OpenWrapped(Bytes bytes, std::optional<Wrapper> detected, uint32_t depth) {
    if (!detected) return std::nullopt;
    const Wrapper wrapper = *detected;
    const std::string name(WrapperName(wrapper));
    if (depth + 1 > limits_.max_depth) {
      Container c;
      c.bytes = bytes;
      c.wrappers.push_back(wrapper);
      c.reason = name + " wrapper nested deeper than max_depth (" + Num(limits_.max_depth) + ")";
      return c;
    }
    if (++num_nested_ > limits_.max_nested) {
      Container c;
      c.bytes = bytes;
      c.wrappers.push_back(wrapper);
      c.reason = name + " wrapper not opened: max_nested (" + Num(limits_.max_nested) + ") containers already opened";
      return c;
    }
    if (Status nest = budget_.Nest(depth + 1, 0, name, "wrapper"); !nest) {
      Container c;
      c.bytes = bytes;
      c.wrappers.push_back(wrapper);
      c.reason = name + " wrapper not opened";
      c.error = nest.error();
      return c;
    }
    Result<Unwrapped> unwrapped = Unwrap(wrapper, bytes, limits_.max_unwrapped_len, limits_.zip.max_ratio, &budget_);
    const bool weak_magic = wrapper == Wrapper::kZlib || wrapper == Wrapper::kLzmaAlone;
    if (unwrapped && unwrapped->data.empty() && unwrapped->error && weak_magic) return std::nullopt;
    if (!unwrapped || (unwrapped->data.empty() && unwrapped->error)) {
      Container c;
      c.bytes = bytes;
      c.wrappers.push_back(wrapper);
      c.reason = name + " content could not be decompressed";
      c.error = unwrapped ? *unwrapped->error : unwrapped.error();
      c.error->where = name;
      return c;
    }
    auto buffer = std::make_unique<std::string>(std::move(unwrapped->data));
    Container inner = Open(AsBytes(*buffer), depth + 1);
    inner.wrappers.insert(inner.wrappers.begin(), wrapper);
    inner.buffers.push_back(std::move(buffer));
    if (unwrapped->error) {
      // Python's readers hand out what they decoded before they raise: a
      // pickle in that prefix has run, so the prefix is read (above) and
      // the break is an anomaly, not a reason to read nothing.
      const Error& e = *unwrapped->error;
      inner.anomalies.push_back({"wrapper.corrupt", e.offset, name,
                                 e.detail + " at offset " + Num(e.offset) + " of the wrapped file; the " +
                                     Num(inner.bytes.size()) + " bytes decoded before it are read"});
      if (!inner.error) inner.error = e;
    }
    if (unwrapped->trailing_len > 0) {
      inner.anomalies.push_back({"wrapper.trailing_data", unwrapped->trailing_offset, name,
                                 Num(unwrapped->trailing_len) + " bytes after the " + name +
                                     " stream (offset in the wrapped file)"});
    }
    return inner;
  }

  void OpenNpy(Container& c, uint32_t depth) {
    (void)depth;
    c.format = ContainerFormat::kNumpy;
    Result<NpyArray> array = ParseNpy(c.bytes, limits_.npy, 0);
    if (!array) {
      c.error = array.error();
      AddNpyFallback(c);
      return;
    }
    c.anomalies.insert(c.anomalies.end(), array->anomalies.begin(), array->anomalies.end());
    std::optional<uint64_t> frame_end;
    std::optional<uint64_t> end = NpyEnd(c, *array, &frame_end);
    if (array->is_object && array->data_offset < c.bytes.size()) {
      if (!array->object_unsure) {
        c.anomalies.push_back({"npy.object_array", array->data_offset, "",
                               "object dtype: the data is a pickle (numpy.load needs allow_pickle=True)"});
      }
      c.pickles.push_back(PickleSource{"", c.bytes, array->data_offset, 0, false, NextIsNpy(c.bytes, end) ? 1u : 0u,
                                       array->object_unsure, std::nullopt, {}});
    }
    c.npy = std::move(*array);
    // numpy.load on an open file reads one array and leaves the file right
    // after it (after the pickle's STOP for an object array; at the end of
    // the frame the STOP is in when the unpickler read that frame whole:
    // pickle_views.h): a caller that loads again reads the next array.
    // Every array either way reaches is read, each once.
    std::vector<uint64_t> next_at;
    std::set<uint64_t> seen;
    auto follow = [&](std::optional<uint64_t> at) {
      if (NextIsNpy(c.bytes, at) && seen.insert(*at).second) next_at.push_back(*at);
    };
    follow(frame_end);
    follow(end);
    uint32_t num_arrays = 1;
    while (!next_at.empty()) {
      const uint64_t at = next_at.back();
      next_at.pop_back();
      if (++num_arrays > kMaxNpyArrays) {
        c.anomalies.push_back({"npy.too_many_arrays", at, "@" + Num(at),
                               "more arrays follow; not read past " + Num(num_arrays - 1)});
        break;
      }
      const uint64_t header_bound = std::min<uint64_t>(c.bytes.size() - at, limits_.npy.max_header_len + 12);
      if (Status charged = budget_.Charge(BudgetKind::kReadBytes, header_bound, at, "@" + Num(at), "npy array");
          !charged) {
        c.error = charged.error();
        break;
      }
      const std::string entry = "@" + Num(at);
      c.anomalies.push_back({"npy.appended_array", at, entry,
                             "another .npy array follows the first; numpy.load on an open file reads it next"});
      Result<NpyArray> next = ParseNpy(c.bytes.subspan(static_cast<size_t>(at)), limits_.npy, at);
      if (!next) {
        c.anomalies.push_back({"npy.unreadable_member", next.error().offset, entry, next.error().ToString()});
        AddUnparsedNpyData(c, entry, c.bytes, at, 0, false);
        continue;
      }
      for (Anomaly a : next->anomalies) {
        a.entry = entry;
        c.anomalies.push_back(std::move(a));
      }
      std::optional<uint64_t> next_frame_end;
      const std::optional<uint64_t> next_end = NpyEnd(c, *next, &next_frame_end);
      if (next->is_object && next->data_offset < c.bytes.size()) {
        if (!next->object_unsure) {
          c.anomalies.push_back({"npy.object_array", next->data_offset, entry,
                                 "object dtype: the data is a pickle (numpy.load needs allow_pickle=True)"});
        }
        c.pickles.push_back(PickleSource{entry, c.bytes, next->data_offset, 0, false,
                                         NextIsNpy(c.bytes, next_end) ? 1u : 0u, next->object_unsure, std::nullopt, {}});
      }
      follow(next_frame_end);
      follow(next_end);
    }
  }

  static bool NextIsNpy(Bytes bytes, std::optional<uint64_t> end) {
    return end && *end < bytes.size() && StartsWith(bytes.subspan(static_cast<size_t>(*end)), kNpyMagic);
  }

  // NpyEnd is where numpy.load leaves the file after `array`: after its data,
  // or after the STOP of an object array's pickle; nullopt when unknown.
  // `frame_end`: where it leaves the file instead when the unpickler read
  // the frame holding the STOP whole (nullopt: no such frame).
  std::optional<uint64_t> NpyEnd(const Container& c, const NpyArray& array, std::optional<uint64_t>* frame_end) {
    *frame_end = std::nullopt;
    if (array.object_unsure) return std::nullopt;
    if (array.is_object) {
      if (array.data_offset >= c.bytes.size()) return std::nullopt;
      Result<uint64_t> end = FirstPickleEnd(c.bytes.subspan(static_cast<size_t>(array.data_offset)), limits_.pickle,
                                            array.data_offset, &budget_, {}, false, frame_end);
      return end ? std::optional<uint64_t>(*end) : std::nullopt;
    }
    if (array.structured) return std::nullopt;
    if (array.data_len > c.bytes.size() - array.data_offset) return std::nullopt;
    return array.data_offset + array.data_len;
  }

  // AddNpyFallback: our header parser refused the header of the file.
  void AddNpyFallback(Container& c) { AddUnparsedNpyData(c, "", c.bytes, 0, 0, false); }

  // AddUnparsedNpyData: the header of the .npy at `npy_at` in `data` was
  // refused by our parser (it refuses some literals Python's parser takes,
  // and some dtypes). numpy finds the data right after the declared header
  // length whatever the header says, and unpickles it when its dtype holds
  // objects: that data is always read as a pickle found by content (a parse
  // error there is no finding; it may be plain data). `file_offset` is where
  // data[0] sits in the container's bytes (unset for inflated members).
  void AddUnparsedNpyData(Container& c, const std::string& entry, Bytes data, uint64_t npy_at,
                          std::optional<uint64_t> file_offset, bool deflated) {
    if (npy_at >= data.size()) return;
    ByteCursor cur(data.subspan(static_cast<size_t>(npy_at)), npy_at);
    if (!cur.Skip(6)) return;
    Result<uint8_t> major = cur.ReadU8();
    if (!major || !cur.Skip(1)) return;
    uint64_t header_len = 0;
    if (*major == 1) {
      Result<uint16_t> len = cur.ReadU16LE();
      if (!len) return;
      header_len = *len;
    } else {
      Result<uint32_t> len = cur.ReadU32LE();
      if (!len) return;
      header_len = *len;
    }
    if (header_len >= data.size() - cur.Offset()) return;
    const uint64_t data_offset = cur.Offset() + header_len;
    c.anomalies.push_back({"npy.unparsed_header_pickle", file_offset.value_or(0) + data_offset, entry,
                           "the header could not be parsed; the data after it is read as a possible pickle"});
    c.pickles.push_back(PickleSource{entry, data, data_offset, file_offset, deflated, 0, true, std::nullopt, {}});
  }

  void OpenSafetensors(Container& c) {
    c.format = ContainerFormat::kSafetensors;
    Result<SafetensorsFile> file = ParseSafetensors(c.bytes, limits_.safetensors);
    if (!file) {
      c.error = file.error();
    } else {
      c.anomalies.insert(c.anomalies.end(), file->anomalies.begin(), file->anomalies.end());
      c.safetensors = std::move(*file);
    }
    // torch.load would read these bytes as a legacy pickle stream: if they
    // also decode as a complete pickle, torch.load runs it.
    if (Result<uint64_t> end = FirstPickleEnd(c.bytes, limits_.pickle, 0, &budget_)) {
      c.anomalies.push_back({"polyglot.pickle_and_safetensors", 0, "",
                             "the first " + Num(*end) + " bytes also decode as a pickle, which torch.load would run"});
      c.pickles.push_back(PickleSource{"", c.bytes, 0, 0, false, 0, false, std::nullopt, {}});
    }
  }

  void OpenPickleStream(Container& c, uint32_t depth) {
    const Bytes bytes = c.bytes;
    if (bytes.empty()) {
      c.reason = "empty file";
      return;
    }
    if (LooksLikeTorchLegacy(bytes, limits_.pickle, &budget_)) {
      c.format = ContainerFormat::kTorchLegacy;
      c.pickles.push_back(PickleSource{"", bytes, 0, 0, false, 5, false, std::nullopt, {}});
      Result<LegacyCheckpoint> legacy = ParseTorchLegacy(bytes, limits_.pickle, &budget_);
      if (!legacy) {
        c.error = legacy.error();
        return;
      }
      c.anomalies.insert(c.anomalies.end(), legacy->anomalies.begin(), legacy->anomalies.end());
      c.legacy = std::move(*legacy);
      return;
    }
    // Read as some unpickler would (the pure-Python one's float() and int()
    // lines, operands past a decoding limit): a stream only that one runs is
    // still a pickle.
    Result<uint64_t> first_end = FirstPickleEnd(bytes, limits_.pickle, 0, &budget_, {}, /*lenient_operands=*/true);
    if (!first_end && first_end.error().code == ErrorCode::kLimitExceeded && !first_end.error().limit.empty()) {
      c.format = ContainerFormat::kPickle;
      c.error = first_end.error();
      return;
    }
    const bool proto_start = bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] <= kHighestProtocol;
    // A pickle of protocol 0 or 1 (no PROTO opcode) that pickle.load cannot
    // read past its first inline array is still joblib.dump's format when
    // joblib's reading meets a NumpyArrayWrapper BUILD.
    bool joblib_stream = false;
    if (!first_end && !proto_start) {
      Result<std::optional<JoblibView>> joblib = ReadJoblibView(bytes, 0, limits_.pickle, budget_, "");
      if (!joblib && !joblib.error().limit.empty()) {
        c.format = ContainerFormat::kPickle;
        c.error = joblib.error();
        return;
      }
      joblib_stream = joblib && joblib->has_value();
    }
    if (!first_end && !proto_start && !joblib_stream) {
      char magic[48];
      std::snprintf(magic, sizeof(magic), "%02x %02x %02x %02x", bytes[0], bytes.size() > 1 ? bytes[1] : 0,
                    bytes.size() > 2 ? bytes[2] : 0, bytes.size() > 3 ? bytes[3] : 0);
      c.reason = std::string("no known magic (first bytes ") + magic + ") and not a pickle: " +
                 first_end.error().ToString();
      return;
    }
    c.format = ContainerFormat::kPickle;
    c.pickles.push_back(PickleSource{"", bytes, 0, 0, false, 0, false, std::nullopt, {}});
    // Find where the complete pickles end; what follows is trailing data
    // (or another container appended to the pickle).
    PickleDecoder decoder(bytes, limits_.pickle);
    decoder.SetLenientOperands(true);
    uint64_t complete_end = 0;
    std::optional<Error> error;
    std::vector<std::pair<uint64_t, std::string_view>> zips_in_bytes;
    while (!(decoder.AtEnd() && decoder.BetweenPickles())) {
      Result<PickleOp> op = decoder.Next();
      if (!op) {
        error = op.error();
        break;
      }
      if (Status charged = budget_.Charge(BudgetKind::kOpcodes, 1, op->offset, "", "pickle stream check"); !charged) {
        c.error = charged.error();
        return;
      }
      if ((op->arg.type == PickleArgType::kBytes || op->arg.type == PickleArgType::kString) &&
          op->arg.Data().starts_with(kZipMagic) && InRange(bytes, op->arg.Data())) {
        zips_in_bytes.emplace_back(op->offset, op->arg.Data());
      }
      if (op->code == Opcode::kStop) complete_end = decoder.Offset();
    }
    if (error && complete_end == 0) {
      // Not even one complete pickle: the stream itself is broken (unless
      // joblib reads it whole: AddJoblibView).
      c.error = error;
      broken_stream_ = error;
    } else if (complete_end < bytes.size()) {
      const Bytes rest = bytes.subspan(static_cast<size_t>(complete_end));
      const size_t zip_at = AsStringView(rest).find(kZipMagic);
      if (zip_at != std::string_view::npos) {
        const uint64_t at = complete_end + zip_at;
        c.anomalies.push_back({"polyglot.zip_after_pickle", at, "",
                               "a zip archive follows the pickle; torch.load reads the pickle (the file does not "
                               "start with PK\\x03\\x04)"});
        AddNested(c, "@" + Num(at), rest.subspan(zip_at), depth);
      } else {
        c.anomalies.push_back({"pickle.trailing_data", complete_end, "",
                               Num(rest.size()) + " bytes after the last complete pickle" +
                                   (error ? " (" + error->ToString() + ")" : std::string())});
      }
    }
    for (const auto& [op_offset, data] : zips_in_bytes) {
      const uint64_t at = static_cast<uint64_t>(reinterpret_cast<const uint8_t*>(data.data()) - bytes.data());
      c.anomalies.push_back({"polyglot.zip_in_pickle_bytes", at, "",
                             "a pickle operand (op at " + Num(op_offset) + ") holds a zip archive"});
      AddNested(c, "@" + Num(at), AsBytes(data), depth);
    }
  }

  // EntryBytes is an entry's data as its readers read it.
  struct EntryBytes {
    Bytes bytes;
    bool deflated = false;  // decoded into an owned buffer (not a view of the file)
    bool partial = false;   // the data broke: `bytes` is what was decoded before
  };

  // EntryData returns an entry's bytes: a view when stored (as many bytes
  // as its readers read: ZipStoredReadLen), an owned decoded copy (kept in
  // c.buffers) otherwise. `at` is where its data starts, as CheckZip read
  // it from the local header (and checked against the file's end): the
  // header is not parsed again. Data that breaks while it decodes is kept
  // up to the break, as Python's zipfile hands it out before it raises (a
  // pickle streamed from it has run by then), with a zip.bad_entry anomaly.
  Result<EntryBytes> EntryData(Container& c, const ZipArchive& zip, const ZipEntry& entry, uint64_t at) {
    if (entry.method == kZipMethodStored) {
      return EntryBytes{zip.file().subspan(static_cast<size_t>(at),
                                           static_cast<size_t>(ZipStoredReadLen(zip.file(), entry, at))),
                        false, false};
    }
    std::optional<Error> damage;
    std::string decoded;
    if (entry.method == kZipMethodBzip2 || entry.method == kZipMethodLzma) {
      // Python's zipfile reads these; torch's reader does not (CheckZip
      // reports zip.unsupported_method): what zipfile would hand out is read.
      const Bytes raw = zip.file().subspan(static_cast<size_t>(at), static_cast<size_t>(entry.compressed_len));
      CKG_ASSIGN_OR_RETURN(Unwrapped out, DecompressZipMember(entry.method, raw, limits_.zip.max_inflated_len,
                                                              limits_.zip.max_ratio, &budget_));
      if (out.error) damage = Error{out.error->code, at + out.error->offset, entry.name, out.error->detail};
      decoded = std::move(out.data);
    } else {
      CKG_ASSIGN_OR_RETURN(ZipEntryPrefix out, zip.ReadEntryPrefix(entry, &budget_));
      damage = std::move(out.damage);
      decoded = std::move(out.data);
    }
    if (damage) {
      if (decoded.empty()) return std::unexpected(std::move(*damage));
      c.anomalies.push_back({"zip.bad_entry", damage->offset, entry.name,
                             damage->detail + "; the " + Num(decoded.size()) +
                                 " bytes decoded before are read (Python's zipfile hands them out before it fails)"});
    }
    c.buffers.push_back(std::make_unique<std::string>(std::move(decoded)));
    return EntryBytes{AsBytes(*c.buffers.back()), true, damage.has_value()};
  }

  // CheckCrc checks entry i's CRC-32 over its (inflated) bytes, recording
  // the result and a zip.crc_mismatch anomaly at `data_offset`.
  static void CheckCrc(Container& c, size_t i, Bytes bytes, uint64_t data_offset) {
    const ZipEntry& e = c.entries[i].zip;
    const uint32_t crc = ZipCrc32(bytes);
    c.entries[i].crc_ok = crc == e.crc32;
    if (crc != e.crc32) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "CRC-32 is %08x, the directory says %08x", crc, e.crc32);
      c.anomalies.push_back({"zip.crc_mismatch", data_offset, e.name, std::string(buf) + " (torch does not check CRCs)"});
    }
  }

  // NoteHiddenTorchPickle: a deflated entry of a torch archive that torch
  // unpickles (<prefix>/*.pkl: data.pkl, a TorchScript archive's
  // constants.pkl) broke while zlib inflated it. torch's reader (miniz)
  // inflates streams zlib refuses (Huffman codes that do not fill their
  // code space), so torch may run a pickle nobody else can read: a
  // polyglot of the decoders (polyglot.undecodable_pickle).
  static void NoteHiddenTorchPickle(Container& c, const ZipEntry& e, uint64_t offset) {
    if (e.method != kZipMethodDeflated || c.prefix.empty() ||
        (c.format != ContainerFormat::kTorchZip && c.format != ContainerFormat::kTorchScript) ||
        !e.name.starts_with(c.prefix + "/") || !e.name.ends_with(".pkl")) {
      return;
    }
    c.anomalies.push_back({"polyglot.undecodable_pickle", offset, e.name,
                           "a deflated pickle torch unpickles that zlib cannot inflate whole: torch's reader (miniz) "
                           "inflates streams zlib refuses (Huffman codes short of their code space), so torch may run "
                           "what no other reader shows"});
  }

  // OpenZip reads c.bytes as torch's reader reads a zip, or, when `given`,
  // as that archive (another reader's reading of c.bytes) says.
  void OpenZip(Container& c, uint32_t depth, std::optional<ZipArchive> given = std::nullopt) {
    c.format = ContainerFormat::kZip;
    Result<ZipArchive> opened = given ? Result<ZipArchive>(std::move(*given)) : ZipArchive::Open(c.bytes, limits_.zip);
    if (!opened) {
      c.error = opened.error();
      return;
    }
    const ZipArchive& zip = *opened;
    BulkVector<ZipEntryStatus> statuses;
    // Deflated entries are inflated once, below, and checked there.
    c.anomalies = CheckZip(zip, &statuses, false);
    c.entries.reserve(zip.entries().size());
    size_t name_bytes = 0;
    for (const ZipEntry& e : zip.entries()) name_bytes += e.name.size();
    c.entry_index.Reserve(zip.entries().size(), name_bytes);
    for (size_t i = 0; i < zip.entries().size(); ++i) {
      const ZipEntry& e = zip.entries()[i];
      c.entries.push_back(ContainerEntry{e, statuses[i].data_offset, statuses[i].crc_ok, false, std::nullopt});
      c.entry_index.Set(e.name, i);
    }
    if (zip.entries().empty()) {
      // numpy.load takes a file that starts with an end record for an .npz
      // (np.savez of no arrays writes one); torch.load does not read it.
      if (StartsWith(c.bytes, kEmptyZipMagic)) c.format = ContainerFormat::kNumpyZip;
      return;
    }

    const std::string& first = zip.entries().front().name;
    const size_t slash = first.find('/');
    c.prefix = slash == std::string::npos ? std::string() : first.substr(0, slash);
    const std::string root = c.prefix + "/";
    // c.entry_index keeps the later of duplicate names, as zipfile does
    // (torch archives: see NamesRepeat below).
    auto has = [&](const std::string& name) { return c.entry_index.contains(name); };
    if (c.prefix.empty() && has("data.pkl")) {
      // Shaped like a checkpoint, but torch takes the prefix from the first
      // entry's folder and refuses an archive whose first entry has none.
      c.anomalies.push_back({"torch.no_prefix", zip.entries().front().central_offset, first,
                             "data.pkl without a folder prefix: torch refuses the archive (first entry '" + first +
                                 "' is not in a subdirectory)"});
    }
    const std::string code_folder = root + "code/";
    const bool has_code = std::any_of(zip.entries().begin(), zip.entries().end(),
                                      [&](const ZipEntry& e) { return e.name.starts_with(code_folder); });
    // A mobile module (_save_for_lite_interpreter) needs neither code/ nor
    // constants.pkl: _load_for_lite_interpreter runs bytecode.pkl's methods.
    if (!c.prefix.empty() &&
        (has(root + "constants.pkl") || (has_code && has(root + "data.pkl")) || has(root + "bytecode.pkl"))) {
      c.format = ContainerFormat::kTorchScript;
    } else if (!c.prefix.empty() && has(root + "data.pkl")) {
      c.format = ContainerFormat::kTorchZip;
    } else if (std::all_of(zip.entries().begin(), zip.entries().end(),
                           [](const ZipEntry& e) { return EndsWith(e.name, ".npy"); })) {
      c.format = ContainerFormat::kNumpyZip;
    }
    // Names one only to torch's reader (miniz ignores case; Python's zipfile
    // and so numpy.load do not): an anomaly of torch archives only, where
    // which entry torch reads depends on the directory's order.
    if (c.format != ContainerFormat::kTorchZip && c.format != ContainerFormat::kTorchScript) {
      std::erase_if(c.anomalies, [](const Anomaly& a) { return a.kind == "zip.case_duplicate_name"; });
    }
    // A name torch's reader finds more than one entry for (repeated, or
    // repeated but for case) maps to the entry its lookup meets
    // (MinizLocate), not to the later one as for zipfile (numpy.load).
    if ((c.format == ContainerFormat::kTorchZip || c.format == ContainerFormat::kTorchScript) && NamesRepeat(c)) {
      const std::vector<uint32_t> order = MinizNameOrder(zip.entries());
      for (const ZipEntry& e : zip.entries()) {
        if (const std::optional<size_t> found = MinizLocate(zip.entries(), order, e.name)) c.entry_index.Set(e.name, *found);
      }
    }

    // Entries: pickles, npz members, nested archives. A central directory
    // may name the same bytes (local header offset and size) many times: they
    // are inflated, checked and opened once, and the other names say so.
    struct SeenData {
      size_t entry;                   // the first entry with these bytes
      std::optional<Bytes> bytes;     // its (inflated) bytes, once read
      std::optional<size_t> pickle;   // its index in c.pickles
    };
    // Keys that arrive in increasing order (writers put entries in file
    // order) are kept in a sorted vector, the others in a map: every key
    // in the map is below the vector's last, so a key above it is new
    // without a lookup, and a checkpoint allocates no node per entry.
    using DataKey = std::tuple<uint64_t, uint64_t, uint16_t>;
    std::vector<std::pair<DataKey, SeenData>> seen_in_order;
    seen_in_order.reserve(zip.entries().size());
    std::map<DataKey, SeenData> seen_out_of_order;
    auto find_or_add = [&](const DataKey& key, size_t i) -> std::pair<SeenData*, bool> {
      if (seen_in_order.empty() || seen_in_order.back().first < key) {
        seen_in_order.push_back({key, SeenData{i, std::nullopt, std::nullopt}});
        return {&seen_in_order.back().second, true};
      }
      auto it = std::lower_bound(seen_in_order.begin(), seen_in_order.end(), key,
                                 [](const auto& a, const DataKey& k) { return a.first < k; });
      if (it != seen_in_order.end() && it->first == key) return {&it->second, false};
      auto [m, fresh] = seen_out_of_order.try_emplace(key, SeenData{i, std::nullopt, std::nullopt});
      return {&m->second, fresh};
    };
    for (size_t i = 0; i < zip.entries().size(); ++i) {
      const ZipEntry& e = zip.entries()[i];
      if (!statuses[i].data_offset) continue;  // CheckZip reported it
      if (e.method != kZipMethodStored && e.method != kZipMethodDeflated && e.method != kZipMethodBzip2 &&
          e.method != kZipMethodLzma) {
        continue;
      }
      // An entry flagged encrypted is read as it is all the same (below, as
      // found by content): zipfile refuses it without a password, but the
      // flag says nothing about the bytes, and other readers ignore it.
      const auto key = std::make_tuple(e.local_header_offset, e.compressed_len, e.method);
      auto [seen_ptr, first_time] = find_or_add(key, i);
      SeenData& seen = *seen_ptr;
      const size_t pickles_before = c.pickles.size();
      if (first_time) {
        seen.bytes = OpenZipEntry(c, zip, statuses, i, depth, std::nullopt);
        if (c.pickles.size() > pickles_before) seen.pickle = pickles_before;
        continue;
      }
      const ContainerEntry& first_entry = c.entries[seen.entry];
      c.anomalies.push_back({"zip.shared_data", e.central_offset, e.name,
                             "the entry names the same bytes as '" + first_entry.zip.name + "' (read once)"});
      if (!seen.bytes) continue;  // unreadable: reported for the first entry
      c.entries[i].inflated = first_entry.inflated;
      c.entries[i].crc_ok = first_entry.crc_ok;
      // The same bytes under this name: classified by this name too, but
      // never inflated, checked or opened as a nested archive again.
      OpenZipEntry(c, zip, statuses, i, depth, seen.bytes);
      if (c.pickles.size() > pickles_before) {
        // Read once, unless this name makes the bytes a named pickle where
        // the first name only sniffed one (then parse errors matter here).
        if (seen.pickle && (c.pickles.back().sniffed || !c.pickles[*seen.pickle].sniffed)) {
          c.pickles.back().same_as = *seen.pickle;
        } else if (!seen.pickle) {
          seen.pickle = pickles_before;
        }
      }
    }
    if (c.format == ContainerFormat::kTorchZip || c.format == ContainerFormat::kTorchScript) {
      CheckTorchArchive(c, zip);
    }
    if (c.format == ContainerFormat::kTorchScript) CheckTorchScriptCode(c, zip);
    // In file order, whichever check found them.
    std::stable_sort(c.anomalies.begin(), c.anomalies.end(),
                     [](const Anomaly& a, const Anomaly& b) { return a.offset < b.offset; });
  }

  // CheckTorchScriptCode: torch.load of a TorchScript archive (torch < 2.6,
  // whatever its arguments) hands it to torch.jit.load, which compiles the
  // archive's code (code/**/*.py; the folder and the suffix in any ASCII
  // case, as torch's reader finds names) and runs a module's __setstate__;
  // _load_for_lite_interpreter runs the methods of bytecode.pkl instead
  // (CheckMobileBytecode). Code that calls a builtin opening files touches
  // the file system on load (torchscript.file_builtin): torch.from_file
  // creates or grows the file it names, torch.save (aten::save) writes any
  // path. A model's weights never need them. The code is tokenized as
  // torch's lexer reads it (torchscript_code.h: `torch . save`, a name
  // assigned `torch`, getattr), within the file's budget.
  void CheckTorchScriptCode(Container& c, const ZipArchive& zip) {
    const std::string code_dir = c.prefix + "/code/";
    for (const ContainerEntry& e : c.entries) {
      const std::string_view name = e.zip.name;
      if (name.size() < code_dir.size() + 3 || !EqualsIgnoringCase(name.substr(0, code_dir.size()), code_dir) ||
          !EndsWithLower(name, ".py") || !e.data_offset) {
        continue;
      }
      Bytes code;
      std::string inflated;
      if (e.inflated) {
        code = *e.inflated;
      } else if (e.zip.method == kZipMethodStored) {
        if (*e.data_offset > c.bytes.size() || e.zip.compressed_len > c.bytes.size() - *e.data_offset) continue;
        code = c.bytes.subspan(static_cast<size_t>(*e.data_offset), static_cast<size_t>(e.zip.compressed_len));
      } else {
        Result<std::string> data = zip.ReadEntry(e.zip, &budget_);
        if (!data) continue;  // reported where the entry was read
        inflated = std::move(*data);
        code = AsBytes(inflated);
      }
      const bool in_file = !e.inflated && e.zip.method == kZipMethodStored;
      Result<std::vector<FileBuiltinUse>> uses =
          FindFileBuiltins(AsStringView(code), limits_.max_torchscript_code_len, &budget_);
      if (!uses) {
        if (uses.error().limit == "max_torchscript_code_len") {
          c.anomalies.push_back({"torchscript.unchecked_code", e.zip.local_header_offset, e.zip.name,
                                 uses.error().detail + ": not checked for builtins that open files"});
        } else if (!c.error) {
          c.error = uses.error();
        }
        continue;
      }
      for (const FileBuiltinUse& use : *uses) {
        const std::string qualified = use.builtin == "from_file" ? "torch.from_file" : "torch.save (aten::save)";
        c.anomalies.push_back({"torchscript.file_builtin", in_file ? *e.data_offset + use.offset : e.zip.local_header_offset,
                               e.zip.name,
                               "TorchScript code calls " + qualified + " (spelled " + use.how +
                                   "), which opens (and may create, grow or write) the file it names when the code "
                                   "runs; torch.jit.load runs a module's __setstate__ as it loads"});
      }
    }
    CheckMobileBytecode(c);
  }

  // CheckMobileBytecode: a mobile module's methods are bytecode in
  // <prefix>/bytecode.pkl (found in any ASCII case, as torch's reader finds
  // names), each with its operator table of names such as ('aten::save', '').
  // _load_for_lite_interpreter runs a class's __setstate__ from there (with
  // code/ removed, nothing else shows it), so an operator name that is a file
  // builtin is torchscript.file_builtin. The pickle is decoded, not searched
  // (a name split across opcodes or escaped is the decoder's to join), up to
  // its STOP, charging the budget per opcode.
  void CheckMobileBytecode(Container& c) {
    const std::string bytecode = c.prefix + "/bytecode.pkl";
    for (const PickleSource& source : c.pickles) {
      if (source.same_as || !EqualsIgnoringCase(source.entry, bytecode) || source.start > source.data.size()) continue;
      PickleDecoder decoder(source.data.subspan(static_cast<size_t>(source.start)), limits_.pickle, source.start);
      size_t found = 0;
      while (!decoder.AtEnd() && found < kMaxFileBuiltinUses) {
        Result<PickleOp> op = decoder.Next();
        if (!op) break;  // the scan reports the pickle's own errors
        if (Status charged = budget_.Charge(BudgetKind::kOpcodes, 1, op->offset, source.entry, "mobile bytecode check");
            !charged) {
          if (!c.error) c.error = charged.error();
          return;
        }
        if (op->code == Opcode::kStop) break;
        if ((op->arg.type != PickleArgType::kString && op->arg.type != PickleArgType::kBytes) ||
            !IsFileBuiltinOperator(op->arg.Data())) {
          continue;
        }
        ++found;
        c.anomalies.push_back({"torchscript.file_builtin",
                               source.file_offset ? *source.file_offset + op->offset : op->offset, source.entry,
                               "mobile bytecode names the operator " + std::string(op->arg.Data()) +
                                   ", which opens (and may create, grow or write) the file it names; "
                                   "_load_for_lite_interpreter runs a class's __setstate__ from bytecode.pkl as it "
                                   "loads"});
      }
    }
  }

  // AddTorchScriptFlatbuffer: torch.jit.load and _load_for_lite_interpreter
  // read any file with "PTMF" at bytes 4..7 as a TorchScript flatbuffer
  // module (getFileFormat tests that before the zip magic), whatever else the
  // file is, and run its objects' __setstate__ as they load. Called for the
  // file itself (depth 0), which is what those loaders open. A file that is
  // nothing else is kTorchScriptFlatbuffer; one that is also another format
  // (a pickle, a zip, a legacy checkpoint, ...) has the anomaly
  // polyglot.torchscript_flatbuffer: its readers disagree on what it is.
  // Its operator table names builtins as flatbuffer strings (a u32 length,
  // then the bytes): the file is searched for the names of file builtins
  // (kFileBuiltinOperators) rather than parsed, which also finds them in
  // tables a parser of ours might read differently from torch's; the search
  // is linear in the file and charged to the budget.
  void AddTorchScriptFlatbuffer(Container& c, Bytes file) {
    if (file.size() < 8 || AsStringView(file).substr(4, 4) != "PTMF") return;
    if (c.format == ContainerFormat::kUnknown && !c.archive && c.wrappers.empty()) {
      c.format = ContainerFormat::kTorchScriptFlatbuffer;
      c.reason.clear();
    } else {
      c.anomalies.insert(c.anomalies.begin(),
                         Anomaly{"polyglot.torchscript_flatbuffer", 4, "",
                                 "'PTMF' at bytes 4..7: torch.jit.load and _load_for_lite_interpreter read the file "
                                 "as a TorchScript flatbuffer module and run its code, while other readers read it as " +
                                     std::string(c.format == ContainerFormat::kUnknown ? "something else"
                                                                                       : ContainerFormatName(c.format))});
    }
    if (Status read = budget_.Charge(BudgetKind::kReadBytes, file.size(), 0, "", "flatbuffer operator names"); !read) {
      if (!c.error) c.error = read.error();
      return;
    }
    const std::string_view text = AsStringView(file);
    for (std::string_view name : kFileBuiltinOperators) {
      const size_t at = text.find(name);
      if (at == std::string_view::npos) continue;
      c.anomalies.push_back({"torchscript.file_builtin", at, "",
                             "the TorchScript flatbuffer module names the operator " + std::string(name) +
                                 ", which opens (and may create, grow or write) the file it names; torch.jit.load "
                                 "runs a class's __setstate__ as it loads"});
    }
    std::stable_sort(c.anomalies.begin(), c.anomalies.end(),
                     [](const Anomaly& a, const Anomaly& b) { return a.offset < b.offset; });
  }

  // OpenZipEntry reads entry i: its pickle, npz member or nested archive.
  // `shared` is set when an earlier entry named the same bytes: they are used
  // as they are (not inflated or CRC-checked again) and a nested archive in
  // them is not opened again. Returns the entry's bytes, or nullopt when they
  // could not be read.
  std::optional<Bytes> OpenZipEntry(Container& c, const ZipArchive& zip, const BulkVector<ZipEntryStatus>& statuses,
                                    size_t i, uint32_t depth, std::optional<Bytes> shared) {
    {
      const ZipEntry& e = zip.entries()[i];
      Result<EntryBytes> data =
          shared ? Result<EntryBytes>(EntryBytes{*shared, e.method != kZipMethodStored, false})
                 : EntryData(c, zip, e, *statuses[i].data_offset);
      if (!data) {
        if (e.method != kZipMethodStored) {
          c.anomalies.push_back({"zip.bad_entry", data.error().offset, e.name, data.error().detail});
          NoteHiddenTorchPickle(c, e, data.error().offset);
        }
        return std::nullopt;  // (stored entries: CheckZip reported it)
      }
      const auto [bytes, deflated, partial] = *data;
      if (partial) NoteHiddenTorchPickle(c, e, *statuses[i].data_offset);
      // A broken entry's prefix is scanned, never handed to the loader as
      // the entry (`inflated`) nor CRC-checked (its anomaly says enough).
      if (deflated && !shared && !partial) {
        c.entries[i].inflated = bytes;
        if (e.uncompressed_len <= limits_.zip.max_crc_check_len) {
          CheckCrc(c, i, bytes, *statuses[i].data_offset);
        }
      }
      const std::optional<uint64_t> file_offset =
          deflated ? std::nullopt : std::optional<uint64_t>(*statuses[i].data_offset);
      if (StartsWith(bytes, kNpyMagic)) {
        Result<NpyArray> array = ParseNpy(bytes, limits_.npy, file_offset.value_or(0));
        if (!array) {
          // ParseNpy already added file_offset (the member's place in the
          // archive); a deflated member's offsets are inside its inflated bytes.
          Error error = array.error();
          c.anomalies.push_back({"npy.unreadable_member", error.offset, e.name, error.ToString()});
          AddUnparsedNpyData(c, e.name, bytes, 0, file_offset, deflated);
          if (c.pickles.size() > 0 && c.pickles.back().entry == e.name) c.entries[i].holds_pickle = true;
          return bytes;
        }
        for (Anomaly a : array->anomalies) {
          a.entry = e.name;
          c.anomalies.push_back(std::move(a));
        }
        if (array->is_object && array->data_offset - file_offset.value_or(0) < bytes.size()) {
          const uint64_t base = file_offset.value_or(0);
          if (!array->object_unsure) {
            c.anomalies.push_back({"npy.object_array", file_offset ? array->data_offset : e.local_header_offset,
                                   e.name, "object dtype: the member's data is a pickle"});
          }
          c.pickles.push_back(PickleSource{e.name, bytes, array->data_offset - base, file_offset, deflated, 0,
                                           array->object_unsure, std::nullopt, {}});
          c.entries[i].holds_pickle = true;
        }
        c.npz_members.emplace_back(e.name, std::move(*array));
        return bytes;
      }
      // Only wrappers with a strong magic: raw zlib and LZMA-alone headers
      // are a few bytes that tensor records start with by chance.
      const std::optional<Wrapper> wrapper = DetectWrapper(bytes);
      const bool strong_wrapper = wrapper && *wrapper != Wrapper::kZlib && *wrapper != Wrapper::kLzmaAlone;
      if (LooksLikeZip(bytes) || strong_wrapper) {
        c.anomalies.push_back({"zip.nested_archive", e.local_header_offset, e.name,
                               "the entry is itself an archive; torch does not read it, a scanner must"});
        if (!shared) AddNested(c, e.name, bytes, depth);
        return bytes;
      }
      const bool proto_start = bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= kHighestProtocol;
      // torch's reader (miniz) finds names case-insensitively: DATA.PKL is data.pkl.
      const bool named = EndsWithLower(e.name, ".pkl") || EndsWithLower(e.name, ".debug_pkl");
      const bool encrypted = (e.flags & 0x1) != 0;
      // A protocol 0 or 1 pickle has no PROTO: a reader that picks the
      // entry by name (zipfile + pickle.load) runs it all the same. Found by
      // content when it decodes as one complete pickle that fills the entry
      // (tensor bytes that happen to start with an opcode do not).
      bool old_protocol = false;
      if (!named && !proto_start && bytes.size() >= 2 &&
          std::string_view("(c]})NIVXSKJFGld").find(static_cast<char>(bytes[0])) != std::string_view::npos) {
        Result<uint64_t> end = FirstPickleEnd(bytes, limits_.pickle, 0, &budget_, e.name);
        old_protocol = end && *end == bytes.size();
      }
      if (named || proto_start || old_protocol) {
        c.pickles.push_back(
            PickleSource{e.name, bytes, 0, file_offset, deflated, 0, !named || encrypted, std::nullopt, {}});
        c.entries[i].holds_pickle = true;
        // A pickle is read whole anyway: check its CRC whatever the limit
        // for records says (a changed pickle is the tampering that matters).
        if (!c.entries[i].crc_ok && !shared && !partial && (e.flags & 0x1) == 0) {
          CheckCrc(c, i, bytes, *statuses[i].data_offset);
        }
      }
      return bytes;
    }
  }

  // CheckTorchArchive applies the rules of torch's PyTorchStreamReader and
  // checks each storage record against the persistent ids of data.pkl.
  void CheckTorchArchive(Container& c, const ZipArchive& zip) {
    const auto& entries = zip.entries();
    const std::string root = c.prefix + "/";
    for (const ZipEntry& e : entries) {
      if (!e.name.starts_with(root)) {
        c.anomalies.push_back({"zip.outside_prefix", e.central_offset, e.name,
                               "entry outside the archive prefix '" + c.prefix + "'; torch refuses the archive"});
      }
    }
    auto find = [&](const std::string& name) -> const ZipEntry* {
      auto it = c.entry_index.find(name);
      return it == c.entry_index.end() ? nullptr : &entries[it->second];
    };
    auto small_text = [&](const ZipEntry& e) -> std::optional<std::string> {
      if (e.uncompressed_len > 64) return std::nullopt;
      Result<std::string> text = zip.ReadEntry(e);
      return text ? std::optional<std::string>(*text) : std::nullopt;
    };
    const ZipEntry* version = find(root + ".data/version");
    if (version == nullptr) version = find(root + "version");
    if (version == nullptr) {
      c.anomalies.push_back({"torch.missing_version", 0, root + "version", "no version record; torch refuses the archive"});
    } else {
      std::optional<std::string> text = small_text(*version);
      std::string digits = text.value_or("");
      while (!digits.empty() && (digits.back() == '\n' || digits.back() == '\r' || digits.back() == ' ')) digits.pop_back();
      const bool ok = !digits.empty() && digits.size() <= 2 &&
                      std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
                      std::stoi(digits) >= 1 && std::stoi(digits) <= 10;
      if (!ok) {
        c.anomalies.push_back({"torch.bad_version", version->local_header_offset, version->name,
                               "version record is not a number from 1 to 10"});
      }
    }
    if (const ZipEntry* byteorder = find(root + "byteorder")) {
      std::optional<std::string> text = small_text(*byteorder);
      if (text != std::optional<std::string>("little") && text != std::optional<std::string>("big")) {
        c.anomalies.push_back({"torch.bad_byteorder", byteorder->local_header_offset, byteorder->name,
                               "byteorder record is neither 'little' nor 'big'"});
      }
    }
    // Records against data.pkl's storages (the loader skips this: its VM
    // checks each record it resolves, and decoding data.pkl twice is its
    // largest cost on big checkpoints).
    if (!limits_.check_torch_records) return;
    const PickleSource* data_pkl = nullptr;
    for (const PickleSource& s : c.pickles) {
      if (s.entry == root + "data.pkl") data_pkl = &s;
    }
    if (data_pkl == nullptr) return;
    std::optional<Error> decode_error;
    const std::vector<StorageRef> refs = CollectStorageRefs(data_pkl->data, limits_.pickle, &decode_error, &budget_);
    if (decode_error) {
      c.anomalies.push_back({"pickle.decode_error", data_pkl->file_offset.value_or(0) + decode_error->offset,
                             data_pkl->entry, decode_error->ToString()});
    }
    std::set<std::string> checked;
    for (const StorageRef& ref : refs) {
      if (!checked.insert(ref.key).second) continue;
      if (std::optional<Anomaly> a = CheckStorageRecord(c, ref, data_pkl->file_offset.value_or(0) + ref.offset)) {
        c.anomalies.push_back(std::move(*a));
      }
    }  }

  const ContainerLimits& limits_;
  Budget& budget_;
  const ContainerAhead* ahead_;  // nullptr: nothing done ahead
  uint64_t num_nested_ = 0;  // containers opened inside the file, all depths
  // The error of a pickle stream with no complete pickle (OpenPickleStream),
  // which AddJoblibView clears when joblib reads that stream to its STOP.
  std::optional<Error> broken_stream_;
};

}  // namespace

std::string_view ContainerFormatName(ContainerFormat format) {
  switch (format) {
    case ContainerFormat::kTorchZip: return "torch-zip";
    case ContainerFormat::kTorchLegacy: return "torch-legacy";
    case ContainerFormat::kTorchScript: return "torchscript";
    case ContainerFormat::kSafetensors: return "safetensors";
    case ContainerFormat::kNumpy: return "numpy";
    case ContainerFormat::kNumpyZip: return "numpy-zip";
    case ContainerFormat::kPickle: return "pickle";
    case ContainerFormat::kZip: return "zip";
    case ContainerFormat::kZipSequence: return "zip-sequence";
    case ContainerFormat::kTorchScriptFlatbuffer: return "torchscript-flatbuffer";
    case ContainerFormat::kUnknown: return "unknown";
  }
  return "unknown";
}

std::string_view WrapperName(Wrapper wrapper) {
  switch (wrapper) {
    case Wrapper::kGzip: return "gzip";
    case Wrapper::kBzip2: return "bzip2";
    case Wrapper::kXz: return "xz";
    case Wrapper::kZlib: return "zlib";
    case Wrapper::kLzmaAlone: return "lzma";
    case Wrapper::kJoblibZf: return "joblib-zf";
  }
  return "?";
}

ContainerLimits ContainerLimits::Clamped() const {
  ContainerLimits out = *this;
  out.zip = zip.Clamped();
  out.pickle = pickle.Clamped();
  out.safetensors = safetensors.Clamped();
  out.npy = npy.Clamped();
  out.max_unwrapped_len = std::min<uint64_t>(max_unwrapped_len, uint64_t{1} << 40);
  out.max_depth = std::min<uint32_t>(max_depth, 16);
  out.max_nested = std::min<uint64_t>(max_nested, 65'536);
  out.max_torchscript_code_len = std::min<uint64_t>(max_torchscript_code_len, uint64_t{1} << 30);
  return out;
}

void EntryIndex::Reserve(size_t n, size_t name_bytes) {
  items_.reserve(n);
  names_.reserve(name_bytes);
  size_t len = 16;
  while (len < 2 * n) len *= 2;
  if (len > table_.size()) Rehash(len);
}

void EntryIndex::Rehash(size_t table_len) {
  table_.assign(table_len, kEmpty);
  const size_t mask = table_len - 1;
  const std::hash<std::string_view> hash;
  for (size_t i = 0; i < items_.size(); ++i) {
    size_t slot = hash(NameOf(items_[i])) & mask;
    while (table_[slot] != kEmpty) slot = (slot + 1) & mask;
    table_[slot] = static_cast<uint32_t>(i);
  }
}

void EntryIndex::Set(std::string_view name, size_t index) {
  if (2 * (items_.size() + 1) > table_.size()) Rehash(std::max<size_t>(16, 2 * table_.size()));
  const size_t mask = table_.size() - 1;
  for (size_t slot = std::hash<std::string_view>()(name) & mask;; slot = (slot + 1) & mask) {
    if (table_[slot] == kEmpty) {
      table_[slot] = static_cast<uint32_t>(items_.size());
      items_.push_back(Item{names_.size(), static_cast<uint32_t>(name.size()), static_cast<uint32_t>(index)});
      names_.append(name);
      return;
    }
    Item& item = items_[table_[slot]];
    if (NameOf(item) == name) {
      item.second = static_cast<uint32_t>(index);
      return;
    }
  }
}

EntryIndex::const_iterator EntryIndex::find(std::string_view name) const {
  if (table_.empty()) return end();
  const size_t mask = table_.size() - 1;
  for (size_t slot = std::hash<std::string_view>()(name) & mask;; slot = (slot + 1) & mask) {
    if (table_[slot] == kEmpty) return end();
    const Item& item = items_[table_[slot]];
    if (NameOf(item) == name) return &item;
  }
}

std::optional<Anomaly> CheckStorageRecord(const Container& c, const StorageRef& ref, uint64_t pid_offset) {
  const std::string name = c.prefix + "/data/" + ref.key;
  auto it = c.entry_index.find(name);
  return CheckStorageRecord(c, it == c.entry_index.end() ? std::nullopt : std::optional<size_t>(it->second), name,
                            ref.module, ref.storage_type, ref.key, ref.numel, pid_offset);
}

std::optional<Anomaly> CheckStorageRecord(const Container& c, std::optional<size_t> record_index, std::string_view name,
                                          std::string_view module, std::string_view storage_type, std::string_view key,
                                          int64_t numel_declared, uint64_t pid_offset) {
  if (!record_index) {
    return Anomaly{"torch.missing_record", pid_offset, std::string(name),
                   "data.pkl refers to storage '" + std::string(key) + "' but the archive has no record for it"};
  }
  const ZipEntry& record = c.entries[*record_index].zip;
  std::optional<StorageType> type = module == "torch" ? FindStorageType(storage_type) : std::nullopt;
  if (!type || numel_declared < 0) return std::nullopt;
  const uint64_t numel = static_cast<uint64_t>(numel_declared);
  if (numel > UINT64_MAX / type->elem_size || numel * type->elem_size != record.uncompressed_len) {
    return Anomaly{"torch.record_size_mismatch", record.local_header_offset, std::string(name),
                   "record holds " + Num(record.uncompressed_len) + " bytes; data.pkl declares " +
                       std::to_string(numel_declared) + " x " + Num(type->elem_size) + " bytes"};
  }
  return std::nullopt;
}

bool NamesRepeat(const Container& c) {
  return std::any_of(c.anomalies.begin(), c.anomalies.end(), [](const Anomaly& a) {
    return a.kind == "zip.duplicate_name" || a.kind == "zip.case_duplicate_name";
  });
}

void ForEachContainer(const Container& root,
                      const std::function<void(const Container&, const std::string& path)>& fn) {
  std::vector<std::pair<const Container*, std::string>> stack{{&root, ""}};
  while (!stack.empty()) {
    auto [container, path] = std::move(stack.back());
    stack.pop_back();
    fn(*container, path);
    for (auto it = container->nested.rbegin(); it != container->nested.rend(); ++it) {
      stack.emplace_back(it->container.get(), path.empty() ? it->entry : path + " > " + it->entry);
    }
  }
}

uint64_t SourceOffset(std::span<const OffsetRun> runs, uint64_t offset) {
  if (runs.empty()) return offset;
  auto after = std::upper_bound(runs.begin(), runs.end(), offset,
                                [](uint64_t o, const OffsetRun& run) { return o < run.view; });
  if (after == runs.begin()) return offset;
  const OffsetRun& run = *std::prev(after);
  return run.source + (offset - run.view);
}

Container OpenContainer(Bytes file, const ContainerLimits& limits, Budget* budget) {
  return OpenContainer(file, limits, budget, nullptr);
}

Container OpenContainer(Bytes file, const ContainerLimits& limits, Budget* budget, const ContainerAhead* ahead) {
  const ContainerLimits clamped = limits.Clamped();
  Budget own;
  Budget& charged = budget != nullptr ? *budget : own;
  charged.SetFileSize(file.size());
  return Opener(clamped, charged, ahead).Open(file, 0);
}

bool ZipfileReadsAsTorch(Bytes file, const ZipLimits& limits, const ZipArchive& zip) {
  const std::span<const ZipEntry> entries = zip.entries();
  return ZipArchive::ZipfileReadsAs(file, limits, entries.size(), [&](size_t i, const ZipEntry& b, std::string_view name) {
    return SameZipEntry(entries[i], b, name, 0);
  });
}

}  // namespace ckptguard

// Containers: every corpus file is detected as what it is, real torch files
// show no anomaly, and hostile containers built byte by byte show exactly
// the anomaly they carry.
#define BOOST_TEST_MODULE container_test
#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>

#include <algorithm>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "ckptguard/container.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/zip_reader.h"
#include "print_types.h"
#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard {

namespace {

namespace bdata = boost::unit_test::data;

using testing::CorpusDir;
using testing::ZipBuilder;
using testing::ZipItem;
using testing::BuildZip;
using testing::MinimalTorchZip;
using testing::Gzip;

Container OpenBytes(const std::string& bytes, const ContainerLimits& limits = {}) {
  return OpenContainer(AsBytes(bytes), limits);
}

std::vector<std::string> Kinds(const Container& c) {
  std::vector<std::string> kinds;
  for (const Anomaly& a : c.anomalies) kinds.push_back(a.kind);
  return kinds;
}

bool Has(const Container& c, const std::string& kind) {
  return std::any_of(c.anomalies.begin(), c.anomalies.end(), [&](const Anomaly& a) { return a.kind == kind; });
}

const Anomaly& Find(const Container& c, const std::string& kind) {
  auto it = std::find_if(c.anomalies.begin(), c.anomalies.end(), [&](const Anomaly& a) { return a.kind == kind; });
  BOOST_REQUIRE_MESSAGE(it != c.anomalies.end(), "no anomaly " << kind);
  return *it;
}

std::string Describe(const Container& c) {
  std::string out = std::string(ContainerFormatName(c.format)) + " [";
  for (const Anomaly& a : c.anomalies) out += a.kind + "@" + std::to_string(a.offset) + " " + a.detail + "; ";
  if (c.error) out += "error: " + c.error->ToString();
  return out + "]";
}

// ---------------------------------------------------------------------------
// The corpus.

struct CorpusCase {
  const char* file;
  ContainerFormat format;
};

std::ostream& operator<<(std::ostream& os, const CorpusCase& c) { return os << c.file; }

// Benign kinds come from the .expect.json files (checked below); the others
// are what each file is by content.
const CorpusCase kCorpus[] = {
    {"benign/array_bigendian_i4.npy", ContainerFormat::kNumpy},
    {"benign/array_f32.npy", ContainerFormat::kNumpy},
    {"benign/arrays.npz", ContainerFormat::kNumpyZip},
    {"benign/arrays_compressed.npz", ContainerFormat::kNumpyZip},
    {"benign/containers.pt", ContainerFormat::kTorchZip},
    {"benign/convnet_sgd.ckpt", ContainerFormat::kTorchZip},
    {"benign/dtypes.pt", ContainerFormat::kTorchZip},
    {"benign/exotic_quantized_sparse.pt", ContainerFormat::kTorchZip},
    {"benign/mlp.params", ContainerFormat::kTorchZip},
    {"benign/mlp.safetensors", ContainerFormat::kSafetensors},
    {"benign/mlp_full_checkpoint.pt", ContainerFormat::kTorchZip},
    {"benign/mlp_full_legacy.pth", ContainerFormat::kTorchLegacy},
    {"benign/mlp_input.pt", ContainerFormat::kTorchZip},
    {"benign/mlp_legacy.pt", ContainerFormat::kTorchLegacy},
    {"benign/mlp_output.pt", ContainerFormat::kTorchZip},
    {"benign/mlp_torchscript.pt", ContainerFormat::kTorchScript},
    {"benign/parameters.pt", ContainerFormat::kTorchZip},
    {"benign/torch2_bigendian_dtypes.pt", ContainerFormat::kTorchZip},
    {"benign/torch2_layout_checkpoint.pt", ContainerFormat::kTorchZip},
    {"benign/views_and_sharing.pt", ContainerFormat::kTorchZip},
    {"benign/whole_module.pt", ContainerFormat::kTorchZip},
    {"malicious/argparse_namespace.pkl", ContainerFormat::kPickle},
    {"malicious/builtin_exec_p0.pkl", ContainerFormat::kPickle},
    {"malicious/builtins_eval.pkl", ContainerFormat::kPickle},
    {"malicious/getattr_import_chain.pkl", ContainerFormat::kPickle},
    {"malicious/importlib_import.pkl", ContainerFormat::kPickle},
    {"malicious/inst_os_system.pkl", ContainerFormat::kPickle},
    {"malicious/nested_pickle_loads.pkl", ContainerFormat::kPickle},
    {"malicious/numpy_object_array.npy", ContainerFormat::kNumpy},
    {"malicious/obj_os_system.pkl", ContainerFormat::kPickle},
    {"malicious/os_system_p0.pkl", ContainerFormat::kPickle},
    {"malicious/os_system_p2.pkl", ContainerFormat::kPickle},
    {"malicious/os_system_p4.pkl", ContainerFormat::kPickle},
    {"malicious/os_system_p5.pkl", ContainerFormat::kPickle},
    {"malicious/posix_system.pkl", ContainerFormat::kPickle},
    {"malicious/runpy_run_code.pkl", ContainerFormat::kPickle},
    {"malicious/second_pickle_after_stop.pkl", ContainerFormat::kPickle},
    {"malicious/stack_global_memo.pkl", ContainerFormat::kPickle},
    {"malicious/subprocess_popen.pkl", ContainerFormat::kPickle},
    {"malicious/torch_legacy_magic_payload.pt", ContainerFormat::kTorchLegacy},
    {"malicious/torch_zip_deflated.pt", ContainerFormat::kTorchZip},
    {"malicious/torch_zip_injected.bin", ContainerFormat::kTorchZip},
    {"malicious/torch_zip_injected.pt", ContainerFormat::kTorchZip},
    {"malicious/torch_zip_odd_extension.jpg", ContainerFormat::kTorchZip},
    {"malicious/webbrowser_open.pkl", ContainerFormat::kPickle},
    {"malicious/zip_name_mismatch.pt", ContainerFormat::kTorchZip},
};

BOOST_AUTO_TEST_CASE(corpus_table_covers_every_model_file) {
  std::set<std::string> listed;
  for (const CorpusCase& c : kCorpus) listed.insert(c.file);
  for (const auto& path : testing::CorpusModelFiles()) {
    const std::string rel = path.parent_path().filename().string() + "/" + path.filename().string();
    BOOST_TEST(listed.contains(rel), rel << " is not in kCorpus");
  }
}

BOOST_DATA_TEST_CASE(corpus_file_is_detected_by_content, bdata::make(kCorpus), c) {
  Result<MappedFile> file = MappedFile::Open((CorpusDir() / c.file).string());
  BOOST_REQUIRE(file.has_value());
  const Container container = OpenContainer(file->data());
  BOOST_TEST(ContainerFormatName(container.format) == ContainerFormatName(c.format), Describe(container));
  BOOST_TEST(!container.error.has_value(), Describe(container));
  // The expectation file, when there is one, names the same kind (a whole
  // pickled module is a torch zip as a container; the loader tells it apart).
  const auto expect = CorpusDir() / (std::string(c.file) + ".expect.json");
  if (std::filesystem::exists(expect)) {
    std::string kind = nlohmann::json::parse(testing::ReadFile(expect)).at("kind").get<std::string>();
    if (kind == "torch-zip-module") kind = "torch-zip";
    BOOST_TEST(kind == std::string(ContainerFormatName(container.format)));
  }
}

BOOST_AUTO_TEST_CASE(real_torch_files_have_no_anomaly) {
  for (const CorpusCase& c : kCorpus) {
    if (!std::string(c.file).starts_with("benign/")) continue;
    BOOST_TEST_CONTEXT(c.file) {
      Result<MappedFile> file = MappedFile::Open((CorpusDir() / c.file).string());
      BOOST_REQUIRE(file.has_value());
      const Container container = OpenContainer(file->data());
      BOOST_TEST(container.anomalies.empty(), Describe(container));
      for (const ContainerEntry& e : container.entries) BOOST_TEST((e.crc_ok == std::optional<bool>(true)), e.zip.name);
    }
  }
}

BOOST_AUTO_TEST_CASE(hostile_corpus_containers_show_their_trick) {
  auto open = [](const char* name) {
    Result<MappedFile> file = MappedFile::Open((CorpusDir() / "malicious" / name).string());
    BOOST_REQUIRE(file.has_value());
    auto bytes = std::make_shared<std::string>(AsStringView(file->data()));
    return std::pair(OpenContainer(AsBytes(*bytes)), bytes);
  };
  {
    auto [c, keep] = open("zip_name_mismatch.pt");
    BOOST_TEST(Find(c, "zip.local_name_mismatch").entry == "archive/data.pkl");
    BOOST_TEST(c.pickles.size() == 1u);
  }
  {
    auto [c, keep] = open("torch_legacy_magic_payload.pt");
    BOOST_TEST(Has(c, "legacy.bad_magic"));
    BOOST_REQUIRE(c.legacy.has_value());
    BOOST_TEST(c.legacy->records.size() == 4u);
  }
  {
    auto [c, keep] = open("numpy_object_array.npy");
    BOOST_TEST(Has(c, "npy.object_array"));
    BOOST_REQUIRE(c.pickles.size() == 1u);
    BOOST_TEST(c.pickles[0].start == c.npy->data_offset);
  }
  {
    auto [c, keep] = open("torch_zip_deflated.pt");
    BOOST_REQUIRE(!c.pickles.empty());
    BOOST_TEST(c.pickles[0].deflated);
    BOOST_TEST(!c.pickles[0].file_offset.has_value());
  }
}

// ---------------------------------------------------------------------------
// Zip anomalies, one hostile archive each.

BOOST_AUTO_TEST_CASE(clean_built_archive_has_no_anomaly) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  const Container c = OpenBytes(zip.Build());
  BOOST_TEST(c.format == ContainerFormat::kTorchZip);
  BOOST_TEST(c.prefix == "archive");
  BOOST_TEST(c.anomalies.empty(), Describe(c));
  BOOST_TEST(c.pickles.size() == 1u);
}

// Python's zipfile's reading (ZipArchive::OpenAsZipfile) against torch's
// reader's (ZipArchive::Open), and the cheap check that they agree
// (ZipfileReadsAs), which the container uses to skip the full reading.
struct ZipfileCase {
  const char* name;
  // Changes a clean three-entry torch zip, then its bytes.
  void (*edit)(ZipBuilder&);
  void (*patch)(std::string&);
  bool same;             // zipfile reads exactly torch's entries, from offset 0
  size_t zipfile_count;  // entries zipfile reads
  uint64_t base;         // where zipfile's archive starts
};
std::ostream& operator<<(std::ostream& os, const ZipfileCase& c) { return os << c.name; }

const ZipfileCase kZipfileCases[] = {
    {"clean", nullptr, nullptr, true, 3, 0},
    // Offsets that count the bytes before the archive (a self-extracting
    // zip): both readers read the same (the container notes the bytes).
    {"offsets_count_leading_bytes", [](ZipBuilder& z) { z.leading = "JUNKJUNK"; }, nullptr, true, 3, 0},
    // Bytes prepended to an archive: zipfile shifts every offset by them.
    {"bytes_prepended", nullptr, [](std::string& bytes) { bytes.insert(0, "JUNKJUNK"); }, false, 3, 8},
    {"name_cut_at_nul", [](ZipBuilder& z) { z.items[2].name = std::string("archive/version\0x", 17); }, nullptr,
     false, 3, 0},
    {"count_short_of_size", nullptr,
     [](std::string& bytes) {
       // The end record says 2 entries; the directory's size holds 3.
       bytes[bytes.size() - 22 + 8] = 2;
       bytes[bytes.size() - 22 + 10] = 2;
     },
     false, 3, 0},
    {"comment", [](ZipBuilder& z) { z.comment = "a comment"; }, nullptr, true, 3, 0},
};

BOOST_DATA_TEST_CASE(zipfile_reading_and_its_cheap_check, bdata::make(kZipfileCases), c) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  if (c.edit != nullptr) c.edit(zip);
  std::string bytes = zip.Build();
  if (c.patch != nullptr) c.patch(bytes);
  const Bytes file = AsBytes(bytes);
  Result<ZipArchive> view = ZipArchive::OpenAsZipfile(file);
  BOOST_REQUIRE_MESSAGE(view.has_value(), (view ? std::string() : view.error().ToString()));
  BOOST_TEST(view->entries().size() == c.zipfile_count);
  BOOST_TEST(view->base() == c.base);
  // torch's reading, which a leading prefix makes it refuse.
  Result<ZipArchive> torch = ZipArchive::Open(file);
  std::vector<ZipEntry> own;
  if (torch) own.assign(torch->entries().begin(), torch->entries().end());
  auto same_entry = [&](size_t i, const ZipEntry& e, std::string_view name) {
    const ZipEntry& a = own[i];
    return a.name == name && a.local_header_offset == e.local_header_offset && a.compressed_len == e.compressed_len &&
           a.uncompressed_len == e.uncompressed_len && a.method == e.method && a.flags == e.flags;
  };
  BOOST_TEST(ZipArchive::ZipfileReadsAs(file, {}, own.size(), same_entry) == c.same);
  if (c.same) {
    // The full reading agrees entry by entry, and a check that expects
    // anything else (one entry fewer, one differing) says so.
    for (size_t i = 0; i < own.size(); ++i) BOOST_TEST(same_entry(i, view->entries()[i], view->entries()[i].name));
    BOOST_TEST(!ZipArchive::ZipfileReadsAs(file, {}, own.size() - 1, same_entry));
    BOOST_TEST(!ZipArchive::ZipfileReadsAs(file, {}, own.size(), [&](size_t i, const ZipEntry& e, std::string_view n) {
      return i != 1 && same_entry(i, e, n);
    }));
  }
  // A limit zipfile's reading exceeds is no agreement either.
  ZipLimits few;
  few.max_entries = 2;
  BOOST_TEST(!ZipArchive::ZipfileReadsAs(file, few, own.size(), same_entry));

  // The same check made ahead, from torch's reading (LoadCheckpoint's
  // second thread), and a container opened with it reads as one without.
  if (torch) {
    BOOST_TEST(ZipfileReadsAsTorch(file, {}, *torch) == c.same);
    std::promise<bool> same;
    const ContainerAhead ahead{.file = file, .num_entries = torch->entries().size(), .zipfile_same = same.get_future().share()};
    same.set_value(ZipfileReadsAsTorch(file, {}, *torch));
    BOOST_TEST(Describe(OpenContainer(file, {}, nullptr, &ahead)) == Describe(OpenContainer(file)));
  }
}

BOOST_AUTO_TEST_CASE(zipfile_reading_made_ahead_counts_only_for_its_own_file) {
  // zipfile cuts this name at its NUL: a reading of its own ([zipfile]).
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[2].name = std::string("archive/version\0x", 17);
  const std::string bytes = zip.Build();
  const Bytes file = AsBytes(bytes);
  BOOST_TEST(Describe(OpenContainer(file)).find("zip.zipfile_view") != std::string::npos);
  const std::string copy = bytes;
  auto opened_with = [&](Bytes ahead_file, size_t num_entries, bool verdict) {
    std::promise<bool> same;
    const ContainerAhead ahead{.file = ahead_file, .num_entries = num_entries, .zipfile_same = same.get_future().share()};
    same.set_value(verdict);
    return Describe(OpenContainer(file, {}, nullptr, &ahead));
  };
  // "Not known": the container reads zipfile's view itself.
  BOOST_TEST(opened_with(file, 3, false).find("zip.zipfile_view") != std::string::npos);
  // A verdict made of other bytes (a copy), or of a reading with another
  // number of entries, is not this file's and is not used.
  BOOST_TEST(opened_with(AsBytes(copy), 3, true).find("zip.zipfile_view") != std::string::npos);
  BOOST_TEST(opened_with(file, 2, true).find("zip.zipfile_view") != std::string::npos);
  // This file's verdict is taken as given (the caller vouches for it: here,
  // wrongly, which is how this test sees that it is used at all).
  BOOST_TEST(opened_with(file, 3, true).find("zip.zipfile_view") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(local_name_mismatch) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[0].local_name = "archive/harmless";
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "zip.local_name_mismatch");
  BOOST_TEST(a.offset == 0u);
  BOOST_TEST(a.entry == "archive/data.pkl");
  BOOST_TEST(a.detail.find("'archive/harmless'") != std::string::npos);
  BOOST_TEST(c.format == ContainerFormat::kTorchZip);  // torch reads the directory's name
}

BOOST_AUTO_TEST_CASE(local_method_mismatch) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].local_method = 8;
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "zip.local_header_mismatch");
  BOOST_TEST(a.entry == "archive/data/0");
  BOOST_TEST(a.detail.find("method") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(local_size_mismatch) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].local_size = 4;
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "zip.local_header_mismatch");
  BOOST_TEST(a.entry == "archive/data/0");
  BOOST_TEST(a.offset == c.entries[1].zip.local_header_offset);
  BOOST_TEST(a.detail.find("uncompressed_size") != std::string::npos, a.detail);
  BOOST_TEST(a.detail.find("compressed_size uncompressed") == std::string::npos, a.detail);
}

BOOST_AUTO_TEST_CASE(zip64_end_record_is_followed) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.zip64 = true;
  const Container c = OpenBytes(zip.Build());
  BOOST_TEST(c.format == ContainerFormat::kTorchZip, Describe(c));
  BOOST_TEST(c.entries.size() == 3u);
  BOOST_TEST(c.anomalies.empty(), Describe(c));
  // A locator pointing outside the file is an error with its offset.
  std::string broken = zip.Build();
  const size_t locator = broken.size() - 22 - 20;
  broken[locator + 15] = '\x7f';
  const Container bad = OpenBytes(broken);
  BOOST_REQUIRE(bad.error.has_value());
  BOOST_TEST(bad.error->offset == locator);
}

BOOST_AUTO_TEST_CASE(deflated_entry_caps_size_and_ratio) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].data = std::string(4 << 20, '\0');  // 4 MiB of zeros: ratio ~1000
  zip.items[1].deflate = true;
  ContainerLimits limits;
  limits.zip.max_inflated_len = 1 << 20;
  const Container big = OpenBytes(zip.Build(), limits);
  const Anomaly& a = Find(big, "zip.bad_entry");
  BOOST_TEST(a.entry == "archive/data/0");
  BOOST_TEST(a.detail.find("max_inflated_len") != std::string::npos, a.detail);

  limits = {};
  limits.zip.max_ratio = 100;
  const Container bomb = OpenBytes(zip.Build(), limits);
  BOOST_TEST(Find(bomb, "zip.bad_entry").detail.find("max_ratio") != std::string::npos, Describe(bomb));
  // Within the limits the same archive is clean.
  BOOST_TEST(!Has(OpenBytes(zip.Build()), "zip.bad_entry"));
}

BOOST_AUTO_TEST_CASE(torch_archive_without_prefix) {
  const Container c = OpenBytes(BuildZip({ZipItem{"data.pkl", testing::kMinimalDataPkl},
                                          ZipItem{"data/0", std::string(8, '\x01')}, ZipItem{"version", "3\n"}}));
  BOOST_TEST(c.format == ContainerFormat::kZip);  // torch refuses it
  BOOST_TEST(Find(c, "torch.no_prefix").entry == "data.pkl", Describe(c));
}

BOOST_AUTO_TEST_CASE(unreadable_npz_member_offset_is_in_the_archive) {
  // A stored .npy member whose header length runs past its data.
  const std::string npy = std::string("\x93NUMPY\x01\x00\xff\x00", 10) + "{'descr'";
  ZipBuilder zip;
  zip.items = {ZipItem{"a.npy", npy}};
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "npy.unreadable_member");
  const uint64_t member_begin = 30 + 5;  // local header + name
  BOOST_TEST(a.entry == "a.npy");
  BOOST_TEST(a.offset >= member_begin, Describe(c));
  BOOST_TEST(a.offset <= member_begin + npy.size(), Describe(c));
}

BOOST_AUTO_TEST_CASE(safetensors_that_is_also_a_pickle) {
  // Header length 0x2e4e: its bytes "N." are a complete pickle (None), which
  // torch.load would run as a legacy file.
  std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  header.resize(0x2e4e, ' ');
  std::string file("N.\0\0\0\0\0\0", 8);
  file += header + "x";
  const Container c = OpenBytes(file);
  BOOST_TEST(c.format == ContainerFormat::kSafetensors, Describe(c));
  BOOST_TEST(Find(c, "polyglot.pickle_and_safetensors").offset == 0u);
}

BOOST_AUTO_TEST_CASE(crc_mismatch_stored_and_deflated) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].crc = 0x12345678;
  zip.items[0].deflate = true;
  zip.items[0].crc = 0xdeadbeef;
  const Container c = OpenBytes(zip.Build());
  std::vector<std::string> entries;
  for (const Anomaly& a : c.anomalies) {
    if (a.kind == "zip.crc_mismatch") entries.push_back(a.entry);
  }
  BOOST_TEST((entries == std::vector<std::string>{"archive/data.pkl", "archive/data/0"}), Describe(c));
  BOOST_TEST((c.entries[1].crc_ok == std::optional<bool>(false)));
  BOOST_TEST((c.entries[2].crc_ok == std::optional<bool>(true)));
  BOOST_TEST(c.pickles.size() == 1u);  // still read: torch does not check CRCs
}

// ZipCrc32 (libdeflate's folding CRC) is zlib's crc32 for every length
// around its block sizes and at every alignment, and for a large buffer.
BOOST_AUTO_TEST_CASE(zip_crc32_is_zlibs) {
  std::vector<uint8_t> buf(size_t{1} << 20);
  uint32_t x = 0x12345678;
  for (uint8_t& b : buf) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len < 600; ++len) {
      const Bytes data(buf.data() + align, len);
      const auto zlib = static_cast<uint32_t>(crc32(crc32(0, nullptr, 0), data.data(), static_cast<uInt>(len)));
      BOOST_TEST_REQUIRE(ZipCrc32(data) == zlib, "length " << len << " at alignment " << align);
    }
  }
  const auto whole = static_cast<uint32_t>(crc32(crc32(0, nullptr, 0), buf.data(), static_cast<uInt>(buf.size())));
  BOOST_TEST(ZipCrc32(Bytes(buf.data(), buf.size())) == whole);
  BOOST_TEST(ZipCrc32(Bytes()) == 0u);
}

BOOST_AUTO_TEST_CASE(flags_torch_refuses) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].flags = 0x0001;
  zip.items[2].flags = 0x0020;
  const Container c = OpenBytes(zip.Build());
  BOOST_TEST(Find(c, "zip.encrypted").entry == "archive/data/0");
  BOOST_TEST(Find(c, "zip.refused_flags").entry == "archive/version");
}

BOOST_AUTO_TEST_CASE(unsupported_method) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].method_override = 12;  // bzip2
  const Container c = OpenBytes(zip.Build());
  BOOST_TEST(Find(c, "zip.unsupported_method").entry == "archive/data/0");
}

BOOST_AUTO_TEST_CASE(duplicate_names_say_which_torch_reads) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items.push_back(ZipItem{"archive/data.pkl", "\x80\x02N."});
  const std::string bytes = zip.Build();
  const Container c = OpenBytes(bytes);
  const Anomaly& a = Find(c, "zip.duplicate_name");
  BOOST_TEST(a.entry == "archive/data.pkl");
  // miniz's heap sort of [data.pkl, data/0, version, data.pkl] puts the
  // first data.pkl where its binary search meets it (torch 1.13 reads the
  // first copy of such an archive: test_zip_views.py proves orders like it
  // against torch.load).
  BOOST_TEST(a.detail.find("torch's reader reads the copy at offset 0 ") != std::string::npos, a.detail);
  BOOST_TEST(c.entry_index.find("archive/data.pkl")->second == 0u);
  BOOST_TEST(NamesRepeat(c));
  BOOST_TEST(c.pickles.size() == 2u);  // both are scanned
  // Without the repeat, nothing changes: the one entry of each name.
  ZipBuilder plain{testing::MinimalTorchZip()};
  const Container p = OpenBytes(plain.Build());
  BOOST_TEST(!NamesRepeat(p));
}

BOOST_AUTO_TEST_CASE(miniz_name_order_is_its_heap_sort) {
  // Names equal but for case, and repeated: a stable sort would keep the
  // directory's order; miniz's heap sort does not.
  std::vector<ZipEntry> entries(5);
  const char* names[] = {"a/x", "a/X", "a/b", "a/x", "a/c"};
  for (size_t i = 0; i < 5; ++i) entries[i].name = names[i];
  const std::vector<uint32_t> order = MinizNameOrder(entries);
  // Sorted by name with case ignored: a/b, a/c, then the three a/x.
  BOOST_TEST(entries[order[0]].name == "a/b");
  BOOST_TEST(entries[order[1]].name == "a/c");
  std::set<uint32_t> xs(order.begin() + 2, order.end());
  BOOST_TEST((xs == std::set<uint32_t>{0, 1, 3}));
  // The search of five meets index 2 first: one of the three, whatever the
  // case asked for.
  BOOST_TEST(*MinizLocate(entries, order, "a/x") == order[2]);
  BOOST_TEST(*MinizLocate(entries, order, "A/X") == order[2]);
  BOOST_TEST(!MinizLocate(entries, order, "a/y").has_value());
  BOOST_TEST(MinizNameOrder(std::span<const ZipEntry>()).empty());
}

BOOST_AUTO_TEST_CASE(entry_outside_prefix) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items.push_back(ZipItem{"elsewhere/payload.pkl", "\x80\x02N."});
  const Container c = OpenBytes(zip.Build());
  BOOST_TEST(Find(c, "zip.outside_prefix").entry == "elsewhere/payload.pkl");
  BOOST_TEST(c.pickles.size() == 2u);
}

BOOST_AUTO_TEST_CASE(overlapping_entries) {
  // The version record's directory entry points at data/0's local header:
  // two names read the same bytes.
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.overlap_index = 2;
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "zip.overlapping_entries");
  BOOST_TEST(a.offset == c.entries[1].zip.local_header_offset);
  BOOST_TEST(Has(c, "zip.local_name_mismatch"));
}

BOOST_AUTO_TEST_CASE(hidden_local_entry_is_a_gap) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  ZipItem hidden{"archive/hidden.pkl", "\x80\x02N."};
  hidden.in_directory = false;
  zip.items.insert(zip.items.begin() + 1, hidden);
  const Container c = OpenBytes(zip.Build());
  const Anomaly& a = Find(c, "zip.gap");
  BOOST_TEST(a.offset > 0u);
  BOOST_TEST(a.detail.find("bytes that no entry or record accounts for") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bytes_between_entries_and_before_directory) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.between = "JUNK";
  zip.before_directory = "MORE";
  const Container c = OpenBytes(zip.Build());
  const auto kinds = Kinds(c);
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "zip.gap") == 3, Describe(c));
}

BOOST_AUTO_TEST_CASE(trailing_data_after_end_record) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.trailing = "appended payload";
  const std::string bytes = zip.Build();
  const Container c = OpenBytes(bytes);
  // The end record is found by scanning back over the "comment" window; the
  // bytes after it are reported either way.
  BOOST_TEST(Find(c, "zip.trailing_data").offset == bytes.size() - 16);
}

BOOST_AUTO_TEST_CASE(torch_records_against_data_pkl) {
  {
    ZipBuilder zip{testing::MinimalTorchZip()};
    zip.items.erase(zip.items.begin() + 1);  // no data/0
    const Container c = OpenBytes(zip.Build());
    BOOST_TEST(Find(c, "torch.missing_record").entry == "archive/data/0");
  }
  {
    ZipBuilder zip{testing::MinimalTorchZip()};
    zip.items[1].data = std::string(4, '\x01');  // 1 float, data.pkl says 2
    const Container c = OpenBytes(zip.Build());
    BOOST_TEST(Find(c, "torch.record_size_mismatch").detail.find("holds 4 bytes; data.pkl declares 2 x 4") !=
               std::string::npos);
  }
  {
    ZipBuilder zip{testing::MinimalTorchZip()};
    zip.items.pop_back();  // no version
    BOOST_TEST(Has(OpenBytes(zip.Build()), "torch.missing_version"));
    zip.items.push_back(ZipItem{"archive/version", "99\n"});
    BOOST_TEST(Has(OpenBytes(zip.Build()), "torch.bad_version"));
  }
  {
    ZipBuilder zip{testing::MinimalTorchZip()};
    zip.items.push_back(ZipItem{"archive/byteorder", "middle"});
    BOOST_TEST(Has(OpenBytes(zip.Build()), "torch.bad_byteorder"));
  }
}

BOOST_AUTO_TEST_CASE(classification_by_entries) {
  ZipBuilder torchscript{testing::MinimalTorchZip()};
  torchscript.items.push_back(ZipItem{"archive/constants.pkl", "\x80\x02)."});
  torchscript.items.push_back(ZipItem{"archive/code/__torch__.py", "def forward(self): ...\n"});
  BOOST_TEST(OpenBytes(torchscript.Build()).format == ContainerFormat::kTorchScript);
  ZipBuilder plain{{ZipItem{"readme.txt", "hello"}}};
  const Container c = OpenBytes(plain.Build());
  BOOST_TEST(c.format == ContainerFormat::kZip);
  BOOST_TEST(c.pickles.empty());
}

// TorchScript code that reaches a builtin opening files (torchscript.file_builtin),
// tokenized as torch's lexer reads it: {code statement, flagged}. Each statement
// sits in a method of a class in archive/code/__torch__.py.
struct ScriptCase {
  const char* code;
  bool flagged;
};

const ScriptCase kScriptCases[] = {
    // Spellings torch reads as aten::save / aten::from_file.
    {"torch.save(x, \"/tmp/p\")", true},
    {"torch . save(x, \"/tmp/p\")", true},
    {"torch. save(x, \"/tmp/p\")", true},
    {"torch\t.\x0csave(x, \"/tmp/p\")", true},
    {"torch.\\\n      save(x, \"/tmp/p\")", true},
    {"ops.aten . save(x, \"/tmp/p\")", true},
    {"ops.aten.from_file(\"/tmp/p\", True, 1)", true},
    {"_0 = torch . from_file(\"/tmp/p\", True, 1)", true},
    {"(torch).save(x, \"/tmp/p\")", true},
    {"(torch\n      ).save(x, \"/tmp/p\")", true},
    {"(torch # a comment\n     .save)(x, \"/tmp/p\")", true},
    {"torch.autograd.save(x, \"/tmp/p\")", true},
    {"t = torch\n    t.save(x, \"/tmp/p\")", true},
    {"t = ops.aten\n    (t).save(x, \"/tmp/p\")", true},
    {"u = (torch)\n    t = u\n    t.save(x, \"/tmp/p\")", true},
    {"f = torch.save\n    f(x, \"/tmp/p\")", true},
    {"getattr(torch, \"save\")(x, \"/tmp/p\")", true},
    {"getattr(torch, \"sa\" \"ve\")(x, \"/tmp/p\")", true},
    {"getattr(torch, \"\\163ave\")(x, \"/tmp/p\")", true},
    {"getattr(ops, \"aten\").save(x, \"/tmp/p\")", true},
    {"t = getattr(ops, \"aten\")\n    t.from_file(\"/tmp/p\", True, 1)", true},
    // Not file builtins: a class's own method named save (as torch.jit.save
    // prints its calls), names in strings and comments, other builtins.
    {"_0 = (self).save(x, )", false},
    {"sub = self.sub\n    _1 = (sub).save(x, )", false},
    {"_00 = getattr(self, \"0\")\n    _2 = (_00).save(x, )", false},
    {"h = __torch__.Holder.__new__(__torch__.Holder)\n    _3 = (h).save(1, )", false},
    {"y = torch.add(x, 1)\n    _4 = (y).save(1, )", false},
    {"_5 = self.save", false},
    {"_6 = getattr(self, \"save\")", false},
    {"_7 = \"torch.save(x, p)\"", false},
    {"_8 = 1  # torch.save(x, p)", false},
    {"_9 = torch.saved(x)", false},
    {"_10 = torch.add(x, torch.ones([1])).save_as(1)", false},
    {"_11 = __torch__.torch.save(x)", false},
};

std::string ScriptArchive(const std::string& statement) {
  ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items.push_back(ZipItem{"archive/constants.pkl", "\x80\x02)."});
  zip.items.push_back(ZipItem{"archive/code/__torch__.py",
                              "class M(Module):\n  __parameters__ = []\n  def __setstate__(self: __torch__.M,\n"
                              "    s: Tuple[int, bool]) -> NoneType:\n    x = torch.zeros([1])\n    " +
                                  statement + "\n    return None\n"});
  return zip.Build();
}

BOOST_AUTO_TEST_CASE(torchscript_code_is_tokenized_for_file_builtins) {
  for (const ScriptCase& c : kScriptCases) {
    BOOST_TEST_CONTEXT(c.code) {
      const std::string bytes = ScriptArchive(c.code);
      const Container opened = OpenBytes(bytes);
      BOOST_TEST(opened.format == ContainerFormat::kTorchScript);
      BOOST_TEST(Has(opened, "torchscript.file_builtin") == c.flagged, Describe(opened));
      if (!c.flagged || !Has(opened, "torchscript.file_builtin")) continue;
      // Stored entry: the offset is the name's (or getattr's string's) byte in the file.
      const Anomaly& a = Find(opened, "torchscript.file_builtin");
      BOOST_REQUIRE(a.offset < bytes.size());
      const std::string_view at = std::string_view(bytes).substr(static_cast<size_t>(a.offset));
      BOOST_TEST((at.starts_with("save") || at.starts_with("from_file") || at.starts_with("\"")), at.substr(0, 12));
    }
  }
}

BOOST_AUTO_TEST_CASE(mobile_bytecode_naming_a_file_builtin) {
  // _save_for_lite_interpreter's layout without code/ or constants.pkl: the
  // lite interpreter runs bytecode.pkl's __setstate__ all the same.
  auto pickled_names = [](std::string_view op) {
    std::string pkl = "\x80\x02(X";
    const uint32_t len = static_cast<uint32_t>(op.size());
    pkl.append(reinterpret_cast<const char*>(&len), 4);
    pkl += op;
    pkl += "X\x00\x00\x00\x00\x86t.";
    return pkl;
  };
  for (const auto& [op, flagged] : {std::pair{"aten::save", true}, {"aten::from_file", true}, {"aten::add", false}}) {
    BOOST_TEST_CONTEXT(op) {
      ZipBuilder zip{{ZipItem{"archive/data.pkl", "\x80\x02}q\x00."}, ZipItem{"archive/bytecode.pkl", pickled_names(op)},
                      ZipItem{"archive/version", "8\n"}}};
      const Container c = OpenBytes(zip.Build());
      BOOST_TEST(c.format == ContainerFormat::kTorchScript);
      BOOST_TEST(Has(c, "torchscript.file_builtin") == flagged, Describe(c));
    }
  }
}

BOOST_AUTO_TEST_CASE(torchscript_flatbuffer_at_the_top_level) {
  // A flatbuffer module: a root offset, "PTMF", then tables.
  std::string flatbuffer("\x18\x00\x00\x00PTMF\x00\x00\x00\x00", 12);
  flatbuffer += std::string(32, '\0');
  {
    const Container c = OpenBytes(flatbuffer);
    BOOST_TEST(c.format == ContainerFormat::kTorchScriptFlatbuffer, Describe(c));
    BOOST_TEST(!Has(c, "torchscript.file_builtin"));
    BOOST_TEST(!c.error.has_value());
  }
  {
    std::string with_save = flatbuffer + std::string("\x0a\x00\x00\x00" "aten::save\0", 15);
    const Container c = OpenBytes(with_save);
    BOOST_TEST(c.format == ContainerFormat::kTorchScriptFlatbuffer);
    BOOST_TEST(Find(c, "torchscript.file_builtin").offset == flatbuffer.size() + 4);
  }
  {
    // Also a pickle: MARK, SHORT_BINBYTES of 5 bytes "\0PTMF", LIST, STOP.
    const std::string polyglot("(C\x05\x00PTMF" "l.", 10);
    const Container c = OpenBytes(polyglot);
    BOOST_TEST(c.format == ContainerFormat::kPickle);
    BOOST_TEST(Find(c, "polyglot.torchscript_flatbuffer").offset == 4u);
  }
  {
    // Nested bytes are not files torch.jit.load opens.
    ZipBuilder zip{{ZipItem{"bundle/inner.bin", flatbuffer}}};
    const Container c = OpenBytes(zip.Build());
    BOOST_TEST(!Has(c, "polyglot.torchscript_flatbuffer"));
  }
}

BOOST_AUTO_TEST_CASE(zip_inside_zip_is_opened) {
  ZipBuilder inner{testing::MinimalTorchZip()};
  ZipBuilder outer{{ZipItem{"bundle/model.pt", inner.Build()}}};
  const Container c = OpenBytes(outer.Build());
  BOOST_TEST(Find(c, "zip.nested_archive").entry == "bundle/model.pt");
  BOOST_REQUIRE(c.nested.size() == 1u);
  BOOST_TEST(c.nested[0].entry == "bundle/model.pt");
  BOOST_TEST(c.nested[0].container->format == ContainerFormat::kTorchZip);
  BOOST_TEST(c.nested[0].container->pickles.size() == 1u);
}

BOOST_AUTO_TEST_CASE(nesting_is_bounded) {
  std::string bytes = BuildZip(testing::MinimalTorchZip());
  for (int i = 0; i < 6; ++i) bytes = ZipBuilder{{ZipItem{"n" + std::to_string(i) + ".zip", bytes}}}.Build();
  ContainerLimits limits;
  limits.max_depth = 3;
  const Container c = OpenBytes(bytes, limits);
  int depth = 0;
  bool too_deep = false;
  ForEachContainer(c, [&](const Container& inner, const std::string& path) {
    depth = std::max<int>(depth, static_cast<int>(std::count(path.begin(), path.end(), '>')) + (path.empty() ? 0 : 1));
    too_deep = too_deep || Has(inner, "container.too_deep");
  });
  BOOST_TEST(depth == 3);
  BOOST_TEST(too_deep);
}

BOOST_AUTO_TEST_CASE(broken_directory_is_an_error_not_a_crash) {
  std::string bytes = BuildZip(testing::MinimalTorchZip());
  bytes.resize(bytes.size() - 10);  // cut into the end record
  const Container c = OpenBytes(bytes);
  BOOST_TEST(c.format == ContainerFormat::kZip);
  BOOST_REQUIRE(c.error.has_value());
  BOOST_TEST(c.error->detail == "no end-of-central-directory record");
}

// ---------------------------------------------------------------------------
// Polyglots.

BOOST_AUTO_TEST_CASE(pickle_with_zip_appended_is_a_pickle) {
  const std::string pickle = testing::ReadFile(CorpusDir() / "malicious" / "os_system_p2.pkl");
  const std::string zip = BuildZip(testing::MinimalTorchZip());
  const Container c = OpenBytes(pickle + zip);
  BOOST_TEST(c.format == ContainerFormat::kPickle);
  BOOST_TEST(Find(c, "polyglot.zip_after_pickle").offset == pickle.size());
  BOOST_REQUIRE(c.nested.size() == 1u);
  BOOST_TEST(c.nested[0].container->format == ContainerFormat::kTorchZip);
}

BOOST_AUTO_TEST_CASE(zip_inside_pickle_bytes) {
  const std::string zip = BuildZip(testing::MinimalTorchZip());
  std::string pickle = "\x80\x03" "B";
  testing::PutU32(pickle, static_cast<uint32_t>(zip.size()));
  pickle += zip + ".";
  const Container c = OpenBytes(pickle);
  BOOST_TEST(c.format == ContainerFormat::kPickle);
  BOOST_TEST(Find(c, "polyglot.zip_in_pickle_bytes").offset == 7u);
  BOOST_REQUIRE(c.nested.size() == 1u);
  BOOST_TEST(c.nested[0].container->format == ContainerFormat::kTorchZip);
}

BOOST_AUTO_TEST_CASE(garbage_after_pickle) {
  const Container c = OpenBytes(std::string("\x80\x02N.", 4) + "\xff\xfe");
  BOOST_TEST(c.format == ContainerFormat::kPickle);
  BOOST_TEST(Find(c, "pickle.trailing_data").offset == 4u);
}

// ---------------------------------------------------------------------------
// Wrappers.

std::string Bzip2(const std::string& data) {
  std::string out(data.size() + data.size() / 100 + 1024, '\0');
  unsigned len = static_cast<unsigned>(out.size());
  BZ2_bzBuffToBuffCompress(out.data(), &len, const_cast<char*>(data.data()), static_cast<unsigned>(data.size()), 9, 0,
                           0);
  out.resize(len);
  return out;
}

std::string Xz(const std::string& data) {
  std::string out(lzma_stream_buffer_bound(data.size()), '\0');
  size_t pos = 0;
  lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                          reinterpret_cast<uint8_t*>(out.data()), &pos, out.size());
  out.resize(pos);
  return out;
}

BOOST_AUTO_TEST_CASE(wrapped_pickles_are_unwrapped) {
  const std::string pickle = testing::ReadFile(CorpusDir() / "malicious" / "os_system_p2.pkl");
  const std::pair<Wrapper, std::string> cases[] = {
      {Wrapper::kGzip, Gzip(pickle)}, {Wrapper::kBzip2, Bzip2(pickle)}, {Wrapper::kXz, Xz(pickle)}};
  for (const auto& [wrapper, bytes] : cases) {
    BOOST_TEST_CONTEXT(WrapperName(wrapper)) {
      const Container c = OpenBytes(bytes);
      BOOST_TEST(c.format == ContainerFormat::kPickle, Describe(c));
      BOOST_TEST((c.wrappers == std::vector<Wrapper>{wrapper}));
      BOOST_REQUIRE(c.pickles.size() == 1u);
      BOOST_TEST(AsStringView(c.pickles[0].data) == pickle);
    }
  }
  // gzip of a torch zip of...: wrappers and archives compose.
  const Container c = OpenBytes(Gzip(BuildZip(testing::MinimalTorchZip())));
  BOOST_TEST(c.format == ContainerFormat::kTorchZip);
}

BOOST_AUTO_TEST_CASE(wrapper_bombs_and_corruption_fail_closed) {
  ContainerLimits limits;
  limits.max_unwrapped_len = 1 << 20;
  const Container bomb = OpenBytes(Gzip(std::string(4 << 20, '\0')), limits);
  BOOST_TEST(bomb.format == ContainerFormat::kUnknown);
  BOOST_REQUIRE(bomb.error.has_value());
  BOOST_TEST(bomb.error->code == ErrorCode::kLimitExceeded);
  BOOST_TEST(bomb.error->detail.find("max_unwrapped_len") != std::string::npos);

  std::string cut = Gzip(std::string(1000, 'x'));
  cut.resize(cut.size() / 2);
  const Container truncated = OpenBytes(cut);
  BOOST_REQUIRE(truncated.error.has_value());
  BOOST_TEST(truncated.error->code == ErrorCode::kTruncated);
}

// ---------------------------------------------------------------------------
// Legacy records.

BOOST_AUTO_TEST_CASE(legacy_records_are_walked_and_checked) {
  const std::string bytes = testing::ReadFile(CorpusDir() / "benign" / "mlp_legacy.pt");
  const Container c = OpenBytes(bytes);
  BOOST_REQUIRE(c.legacy.has_value());
  BOOST_TEST(c.legacy->records.size() == 4u);
  uint64_t end = 0;
  for (const LegacyRecord& r : c.legacy->records) {
    BOOST_TEST(r.storage_type == "FloatStorage");
    BOOST_TEST(static_cast<int64_t>(r.num_elements) == r.declared_numel);
    BOOST_TEST(r.data_offset == r.count_offset + 8);
    end = r.data_offset + r.data_len;
  }
  BOOST_TEST(end == bytes.size());

  // Truncated inside the last record: an error naming its key.
  const Container cut = OpenBytes(bytes.substr(0, bytes.size() - 3));
  BOOST_REQUIRE(cut.error.has_value());
  BOOST_TEST(cut.error->code == ErrorCode::kTruncated);
  BOOST_TEST(cut.error->where == c.legacy->records.back().key);

  // Extra bytes after the records.
  BOOST_TEST(Has(OpenBytes(bytes + "tail"), "legacy.trailing_data"));

  // A count that disagrees with the persistent id (the last record, so the
  // walk stays aligned: the element it loses becomes trailing data).
  std::string changed = bytes;
  const LegacyRecord& last = c.legacy->records.back();
  const uint64_t fewer = last.num_elements - 1;
  for (size_t i = 0; i < 8; ++i) changed[last.count_offset + i] = static_cast<char>((fewer >> (8 * i)) & 0xff);
  const Container mismatch = OpenBytes(changed);
  BOOST_TEST(Find(mismatch, "legacy.numel_mismatch").entry == last.key);
  BOOST_TEST(Find(mismatch, "legacy.numel_mismatch").offset == last.count_offset);
  BOOST_TEST(Has(mismatch, "legacy.trailing_data"));
}

// ---------------------------------------------------------------------------
// Unknown.

BOOST_AUTO_TEST_CASE(unknown_says_why) {
  const Container c = OpenBytes("\x01\x02\x03\x04 this is not a model");
  BOOST_TEST(c.format == ContainerFormat::kUnknown);
  BOOST_TEST(c.reason.find("no known magic (first bytes 01 02 03 04)") != std::string::npos, c.reason);
  const Container empty = OpenBytes("");
  BOOST_TEST(empty.format == ContainerFormat::kUnknown);
  BOOST_TEST(empty.reason == "empty file");
}

// A .distcp file as torch.distributed.checkpoint writes it: torch archives
// back to back, each read by torch.load of its byte range. Each is a nested
// container at its offset; the file is a kZipSequence.
BOOST_DATA_TEST_CASE(archives_back_to_back_are_each_read, boost::unit_test::data::make({false, true}), zip64) {
  ZipBuilder a{MinimalTorchZip("first")};
  ZipBuilder b{MinimalTorchZip("second")};
  ZipBuilder c{MinimalTorchZip("third")};
  a.zip64 = b.zip64 = c.zip64 = zip64;
  const std::string first = a.Build();
  const std::string second = b.Build();
  const std::string file = first + second + c.Build();
  const Container out = OpenContainer(AsBytes(file));
  BOOST_TEST(out.format == ContainerFormat::kZipSequence);
  BOOST_TEST(!out.error);
  BOOST_TEST(out.anomalies.empty());
  BOOST_TEST(out.pickles.empty());  // no reader loads the file whole
  BOOST_REQUIRE_EQUAL(out.nested.size(), 3u);
  BOOST_TEST(out.nested[0].entry == "@0");
  BOOST_TEST(out.nested[1].entry == "@" + std::to_string(first.size()));
  BOOST_TEST(out.nested[2].entry == "@" + std::to_string(first.size() + second.size()));
  const char* prefixes[] = {"first", "second", "third"};
  for (size_t i = 0; i < 3; ++i) {
    const Container& inner = *out.nested[i].container;
    BOOST_TEST(inner.format == ContainerFormat::kTorchZip);
    BOOST_TEST(inner.prefix == prefixes[i]);
    BOOST_TEST(inner.anomalies.empty());
    BOOST_TEST(inner.pickles.size() == 1u);
  }
  BOOST_TEST(ContainerFormatName(out.format) == "zip-sequence");
}

// An archive hidden in bytes the outer archive does not account for (a gap
// before its directory) is found by its end record and read, with the gap
// and the embedded archive reported: a reader of that range loads it.
BOOST_AUTO_TEST_CASE(an_archive_in_a_gap_is_found) {
  ZipBuilder hidden{MinimalTorchZip("hidden")};
  ZipBuilder outer{MinimalTorchZip("outer")};
  const std::string inner = hidden.Build();
  outer.before_directory = inner;
  const std::string file = outer.Build();
  const Container out = OpenContainer(AsBytes(file));
  BOOST_TEST(out.format == ContainerFormat::kTorchZip);
  const size_t at = file.find(inner);
  BOOST_REQUIRE(at != std::string::npos);
  BOOST_REQUIRE_EQUAL(out.nested.size(), 1u);
  BOOST_TEST(out.nested[0].entry == "@" + std::to_string(at));
  BOOST_TEST(out.nested[0].container->prefix == "hidden");
  std::set<std::string> kinds;
  for (const Anomaly& x : out.anomalies) kinds.insert(x.kind);
  BOOST_TEST(kinds.count("zip.gap") == 1u);
  BOOST_TEST(kinds.count("zip.embedded_archive") == 1u);
}

// A well-formed archive is never searched: one end record, no nesting.
BOOST_AUTO_TEST_CASE(a_whole_archive_is_not_searched) {
  ZipBuilder one{MinimalTorchZip()};
  const std::string file = one.Build();
  const Container out = OpenContainer(AsBytes(file));
  BOOST_TEST(out.format == ContainerFormat::kTorchZip);
  BOOST_TEST(out.nested.empty());
  BOOST_TEST(FindEmbeddedZips(AsBytes(file), 16).size() == 1u);
  bool more = false;
  const std::string three = file + file + file;
  BOOST_TEST(FindEmbeddedZips(AsBytes(three), 2, &more).size() == 2u);
  BOOST_TEST(more);
}

}  // namespace
}  // namespace ckptguard

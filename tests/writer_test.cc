// AtomicFile and the safetensors writer: every injected failure leaves the old
// file byte-identical and no temporary file behind; written safetensors files
// match the reference serializer's own test vectors byte for byte, read back
// bit-exactly through LoadCheckpoint and independently through Python/numpy.
#define BOOST_TEST_MODULE writer_test
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "ckptguard/atomic_file.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/safetensors_reader.h"
#include "ckptguard/safetensors_writer.h"
#include "print_types.h"
#include "test_util.h"

namespace ckptguard {

// Boost prints AtomicFileStep in failed data-driven cases.
inline std::ostream& boost_test_print_type(std::ostream& os, AtomicFileStep s) { return os << static_cast<int>(s); }
inline std::ostream& boost_test_print_type(std::ostream& os, DType d) { return os << DTypeName(d); }

namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;
using testing::TempDir;

template <typename T>
std::string Why(const Result<T>& r) {
  return r ? std::string() : r.error().ToString();
}

// Entries lists the names in `dir`, sorted.
std::vector<std::string> Entries(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Injection turns failure injection off again when a test ends, pass or fail.
struct Injection {
  Injection(AtomicFileStep step, int err, uint32_t nth = 1) { SetAtomicFileFailureForTesting(step, err, nth); }
  ~Injection() { SetAtomicFileFailureForTesting(AtomicFileStep::kNone, 0); }
};

const std::string kOld = "old contents that must survive\n";

// WriteInThree writes `text` to `path` with an AtomicFile in three Write calls.
Status WriteInThree(const std::string& path, const std::string& text) {
  CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  const size_t third = text.size() / 3;
  CKG_TRY(file.Write(AsBytes(std::string_view(text).substr(0, third))));
  CKG_TRY(file.Write(AsBytes(std::string_view(text).substr(third, third))));
  CKG_TRY(file.Write(AsBytes(std::string_view(text).substr(2 * third))));
  return file.Commit();
}

BOOST_AUTO_TEST_SUITE(atomic_file)

BOOST_AUTO_TEST_CASE(commit_replaces_an_existing_file) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  const std::string text(100000, 'x');
  Status s = WriteInThree(path, text);
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  BOOST_TEST(testing::ReadFile(path) == text);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

BOOST_AUTO_TEST_CASE(creates_a_new_file_with_the_umask_mode) {
  TempDir dir;
  const std::string path = (dir.path / "new.bin").string();
  Status s = WriteFileAtomically(path, AsBytes("abc"));
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  BOOST_TEST(testing::ReadFile(path) == "abc");
  const mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == (0666 & ~mask));
}

BOOST_AUTO_TEST_CASE(size_counts_written_bytes_and_temp_is_hidden_beside_the_target) {
  TempDir dir;
  const std::string path = (dir.path / "m.safetensors").string();
  Result<AtomicFile> file = AtomicFile::Create(path);
  BOOST_REQUIRE_MESSAGE(file.has_value(), Why(file));
  BOOST_TEST(file->size() == 0u);
  BOOST_REQUIRE(file->Write(AsBytes("hello")).has_value());
  BOOST_REQUIRE(file->Write(AsBytes("")).has_value());
  BOOST_TEST(file->size() == 5u);
  const std::filesystem::path temp(file->temp_path());
  BOOST_TEST(temp.parent_path() == dir.path);
  BOOST_TEST(temp.filename().string().starts_with(".m.safetensors.tmp-"));
  BOOST_TEST(temp.filename().string().size() == std::string(".m.safetensors.tmp-XXXXXX").size());
  BOOST_TEST(std::filesystem::exists(temp));
  BOOST_TEST(!std::filesystem::exists(path));
}

BOOST_AUTO_TEST_CASE(destructor_removes_an_uncommitted_temp_file) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  std::string temp;
  {
    Result<AtomicFile> file = AtomicFile::Create(path);
    BOOST_REQUIRE_MESSAGE(file.has_value(), Why(file));
    BOOST_REQUIRE(file->Write(AsBytes("partial")).has_value());
    temp = file->temp_path();
    BOOST_TEST(std::filesystem::exists(temp));
  }
  BOOST_TEST(!std::filesystem::exists(temp));
  BOOST_TEST(testing::ReadFile(path) == kOld);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

BOOST_AUTO_TEST_CASE(moves_transfer_ownership_of_the_temp_file) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  Result<AtomicFile> a = AtomicFile::Create(path);
  Result<AtomicFile> b = AtomicFile::Create(path);
  BOOST_REQUIRE(a.has_value());
  BOOST_REQUIRE(b.has_value());
  const std::string b_temp = b->temp_path();
  BOOST_REQUIRE(a->Write(AsBytes("from a")).has_value());
  *b = std::move(*a);  // b's own temp file is abandoned
  BOOST_TEST(!std::filesystem::exists(b_temp));
  AtomicFile c(std::move(*b));
  BOOST_REQUIRE(c.Commit().has_value());
  BOOST_TEST(testing::ReadFile(path) == "from a");
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

BOOST_AUTO_TEST_CASE(commit_works_once) {
  TempDir dir;
  const std::string path = (dir.path / "x").string();
  Result<AtomicFile> file = AtomicFile::Create(path);
  BOOST_REQUIRE(file.has_value());
  BOOST_REQUIRE(file->Commit().has_value());
  Status again = file->Commit();
  BOOST_REQUIRE(!again.has_value());
  BOOST_TEST(again.error().code == ErrorCode::kInvalidArgument);
  BOOST_TEST(!file->Write(AsBytes("late")).has_value());
  BOOST_TEST(testing::ReadFile(path).empty());
}

BOOST_AUTO_TEST_CASE(missing_folder_and_empty_path) {
  Status s = WriteFileAtomically("/nonexistent-ckptguard-dir/x.bin", AsBytes("a"));
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().code == ErrorCode::kIo);
  BOOST_TEST(s.error().ToString().find("No such file or directory") != std::string::npos, s.error().ToString());
  Status e = WriteFileAtomically("", AsBytes("a"));
  BOOST_REQUIRE(!e.has_value());
  BOOST_TEST(e.error().code == ErrorCode::kInvalidArgument);
}

BOOST_AUTO_TEST_CASE(an_existing_file_keeps_its_mode) {
  TempDir dir;
  const std::string path = dir.Write("report.txt", kOld);
  for (const mode_t mode : {mode_t{0600}, mode_t{0640}, mode_t{0755}}) {
    BOOST_REQUIRE(::chmod(path.c_str(), mode) == 0);
    Status s = WriteFileAtomically(path, AsBytes("new"));
    BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
    struct stat st {};
    BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == mode);
    BOOST_TEST(testing::ReadFile(path) == "new");
  }
  // SetMode narrows it before anything is written (private keys).
  Result<AtomicFile> file = AtomicFile::Create(path);
  BOOST_REQUIRE(file.has_value());
  BOOST_REQUIRE(file->SetMode(0600).has_value());
  BOOST_REQUIRE(file->Commit().has_value());
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"report.txt"});
  if (::geteuid() == 0) {
    // Root (as in CI) may keep another user's file that user's.
    BOOST_REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
    BOOST_REQUIRE(WriteFileAtomically(path, AsBytes("again")).has_value());
    BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
    BOOST_TEST(st.st_uid == 65534u);
    BOOST_TEST(st.st_gid == 65534u);
  }
}

// A link, a folder or a FIFO where the output goes: refused before anything
// is written, the link and whatever it points at unchanged.
BOOST_AUTO_TEST_CASE(a_destination_that_is_not_a_regular_file_is_refused) {
  TempDir dir;
  const std::string victim = dir.Write("victim.txt", kOld);
  const std::filesystem::path link = dir.path / "report.txt";
  std::filesystem::create_symlink(victim, link);
  const std::filesystem::path dangling = dir.path / "dangling.txt";
  std::filesystem::create_symlink(dir.path / "nowhere", dangling);
  const std::filesystem::path folder = dir.path / "folder";
  std::filesystem::create_directory(folder);
  const std::filesystem::path fifo = dir.path / "fifo";
  BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  for (const auto& [path, what] : std::vector<std::pair<std::filesystem::path, std::string>>{
           {link, "a symbolic link"}, {dangling, "a symbolic link"}, {folder, "a folder"}, {fifo, "a FIFO"}}) {
    Status s = WriteFileAtomically(path.string(), AsBytes("attacker's choice"));
    BOOST_REQUIRE(!s.has_value());
    BOOST_TEST(s.error().code == ErrorCode::kInvalidArgument);
    BOOST_TEST(s.error().ToString().find(what) != std::string::npos, s.error().ToString());
    BOOST_TEST(s.error().ToString().find(path.string()) != std::string::npos, s.error().ToString());
  }
  BOOST_TEST(testing::ReadFile(victim) == kOld);
  BOOST_TEST(std::filesystem::is_symlink(link));
  BOOST_TEST(!std::filesystem::exists(dir.path / "nowhere"));
  BOOST_TEST(Entries(dir.path) == (std::vector<std::string>{"dangling.txt", "fifo", "folder", "report.txt", "victim.txt"}));
}

// NAME_MAX-long names work: the temporary name is shortened to fit.
BOOST_AUTO_TEST_CASE(a_name_of_name_max_bytes_works) {
  TempDir dir;
  const std::string name(NAME_MAX, 'n');
  const std::string path = (dir.path / name).string();
  Result<AtomicFile> file = AtomicFile::Create(path);
  BOOST_REQUIRE_MESSAGE(file.has_value(), Why(file));
  BOOST_TEST(std::filesystem::path(file->temp_path()).filename().string().size() == size_t{NAME_MAX});
  BOOST_REQUIRE(file->Write(AsBytes("abc")).has_value());
  BOOST_REQUIRE(file->Commit().has_value());
  BOOST_TEST(testing::ReadFile(path) == "abc");
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{name});
}

// Each step before the rename: the old file stays byte-identical, nothing
// else is left in the folder, and the error is kIo naming the path and errno.
struct FailureCase {
  AtomicFileStep step;
  uint32_t nth;
  int err;
};
std::ostream& operator<<(std::ostream& os, const FailureCase& c) {
  return os << "step " << static_cast<int>(c.step) << " nth " << c.nth << " errno " << c.err;
}
const FailureCase kFailures[] = {
    {AtomicFileStep::kCreate, 1, EACCES}, {AtomicFileStep::kWrite, 1, ENOSPC}, {AtomicFileStep::kWrite, 3, ENOSPC},
    {AtomicFileStep::kFsync, 1, EIO},     {AtomicFileStep::kRename, 1, EXDEV},
};

BOOST_DATA_TEST_CASE(failure_before_rename_keeps_the_old_file, bdata::make(kFailures), c) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  Status s;
  {
    Injection inject(c.step, c.err, c.nth);
    s = WriteInThree(path, std::string(3000, 'n'));
  }
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().code == ErrorCode::kIo);
  const std::string text = s.error().ToString();
  BOOST_TEST(text.find(path) != std::string::npos, text);
  BOOST_TEST(text.find(std::strerror(c.err)) != std::string::npos, text);
  BOOST_TEST(testing::ReadFile(path) == kOld);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

BOOST_AUTO_TEST_CASE(enospc_message) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  Injection inject(AtomicFileStep::kWrite, ENOSPC);
  Status s = WriteFileAtomically(path, AsBytes("new"));
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().code == ErrorCode::kIo);
  BOOST_TEST(s.error().ToString() == "io at byte 0 (" + path + "): cannot write: No space left on device");
}

BOOST_AUTO_TEST_CASE(a_failed_write_cannot_be_committed) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  Result<AtomicFile> file = AtomicFile::Create(path);
  BOOST_REQUIRE(file.has_value());
  {
    Injection inject(AtomicFileStep::kWrite, ENOSPC, 2);
    BOOST_REQUIRE(file->Write(AsBytes("first")).has_value());
    BOOST_REQUIRE(!file->Write(AsBytes("second")).has_value());
  }
  BOOST_TEST(!file->Commit().has_value());
  BOOST_TEST(testing::ReadFile(path) == kOld);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

// The folder fsync comes after the rename: the new, complete file is in place
// (the old one is gone; it cannot be un-renamed), no temp file remains, and
// the error says the write happened.
BOOST_AUTO_TEST_CASE(failure_of_the_folder_fsync_reports_a_complete_new_file) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  const std::string text(3000, 'n');
  Status s;
  {
    Injection inject(AtomicFileStep::kFsyncDir, EIO);
    s = WriteInThree(path, text);
  }
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().code == ErrorCode::kIo);
  BOOST_TEST(s.error().ToString().find("written, but the folder could not be flushed") != std::string::npos);
  BOOST_TEST(testing::ReadFile(path) == text);
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"model.bin"});
}

BOOST_AUTO_TEST_CASE(injection_off_again_succeeds) {
  TempDir dir;
  const std::string path = dir.Write("model.bin", kOld);
  { Injection inject(AtomicFileStep::kRename, EIO); }
  Status s = WriteInThree(path, "abcdef");
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  BOOST_TEST(testing::ReadFile(path) == "abcdef");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// Safetensors.

std::string U64LE(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

std::string F32LE(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return out;
}

BOOST_AUTO_TEST_SUITE(safetensors)

// The reference's own serializer tests (safetensors/src/tensor.rs:
// test_serialization, test_empty, test_serialization_forced_alignement).
BOOST_AUTO_TEST_CASE(byte_identical_to_the_reference_test_vectors) {
  const std::string data = F32LE({0, 1, 2, 3, 4, 5});
  {
    Result<std::string> out = SafetensorsBytes({{"attn.0", DType::kFloat32, {1, 2, 3}, AsBytes(data)}}, {});
    BOOST_REQUIRE_MESSAGE(out.has_value(), Why(out));
    const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
    BOOST_TEST(header.size() == 64u);
    BOOST_TEST(*out == U64LE(64) + header + data);
  }
  {
    Result<std::string> out = SafetensorsBytes({}, {});
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(*out == U64LE(8) + "{}      ");
  }
  {
    Result<std::string> out = SafetensorsBytes({}, {{"framework", "pt"}});
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(*out == U64LE(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  }
  {
    Result<std::string> out = SafetensorsBytes({{"attn0", DType::kFloat32, {1, 1, 2, 3}, AsBytes(data)}}, {});
    BOOST_REQUIRE(out.has_value());
    BOOST_TEST(*out == U64LE(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
                           "       " + data);
  }
}

// The reference sorts by dtype descending in its enum order (BOOL < U8 < I8 <
// F8_E5M2 < F8_E4M3 < I16 < U16 < F16 < BF16 < I32 < U32 < F32 < C64 < F64 <
// I64 < U64), then by name.
BOOST_AUTO_TEST_CASE(tensor_order_follows_the_reference) {
  const std::string one(1, '\1'), two(2, '\0'), four(4, '\0'), eight(8, '\0');
  std::vector<SafetensorsTensorData> in = {
      {"b", DType::kFloat32, {1}, AsBytes(four)},       {"a", DType::kFloat32, {1}, AsBytes(four)},
      {"z", DType::kBool, {1}, AsBytes(one)},           {"c64", DType::kComplex64, {1}, AsBytes(eight)},
      {"f64", DType::kFloat64, {1}, AsBytes(eight)},    {"u64", DType::kUInt64, {1}, AsBytes(eight)},
      {"i64", DType::kInt64, {1}, AsBytes(eight)},      {"bf16", DType::kBFloat16, {1}, AsBytes(two)},
      {"f16", DType::kFloat16, {1}, AsBytes(two)},      {"u16", DType::kUInt16, {1}, AsBytes(two)},
      {"i16", DType::kInt16, {1}, AsBytes(two)},        {"e4m3", DType::kFloat8E4M3FN, {1}, AsBytes(one)},
      {"e5m2", DType::kFloat8E5M2, {1}, AsBytes(one)},  {"i8", DType::kInt8, {1}, AsBytes(one)},
      {"u8", DType::kUInt8, {1}, AsBytes(one)},         {"i32", DType::kInt32, {1}, AsBytes(four)},
      {"u32", DType::kUInt32, {1}, AsBytes(four)},      {"A", DType::kFloat32, {1}, AsBytes(four)},
  };
  Result<std::string> out = SafetensorsBytes(in, {});
  BOOST_REQUIRE_MESSAGE(out.has_value(), Why(out));
  Result<SafetensorsFile> parsed = ParseSafetensors(AsBytes(*out));
  BOOST_REQUIRE_MESSAGE(parsed.has_value(), Why(parsed));
  std::vector<std::string> names;
  for (const SafetensorsTensor& t : parsed->tensors) names.push_back(t.name);
  const std::vector<std::string> want = {"u64", "i64", "f64", "c64", "A",  "a",    "b",    "u32", "i32",
                                         "bf16", "f16", "u16", "i16", "e4m3", "e5m2", "i8", "u8", "z"};
  BOOST_TEST(names == want, boost::test_tools::per_element());
  BOOST_TEST(parsed->anomalies.empty());
}

// Fill makes deterministic, valid element bytes for `dtype` (bool 0/1).
std::string Fill(DType dtype, uint64_t numel, std::mt19937_64& rng) {
  std::string out(numel * DTypeSize(dtype), '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  if (dtype == DType::kBool) {
    for (char& c : out) c = static_cast<char>(c & 1);
  }
  return out;
}

const DType kSupported[] = {DType::kFloat64,   DType::kFloat32,    DType::kFloat16,      DType::kBFloat16,
                            DType::kInt64,     DType::kInt32,      DType::kInt16,        DType::kInt8,
                            DType::kUInt64,    DType::kUInt32,     DType::kUInt16,       DType::kUInt8,
                            DType::kBool,      DType::kComplex64,  DType::kFloat8E5M2,   DType::kFloat8E4M3FN};

BOOST_AUTO_TEST_CASE(every_dtype_and_shape_reads_back_bit_exactly) {
  TempDir dir;
  std::mt19937_64 rng(20261129);
  struct Want {
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Want> want;
  for (DType dtype : kSupported) {
    const std::vector<std::vector<int64_t>> shapes = {
        {}, {0}, {3, 0, 2}, {static_cast<int64_t>(rng() % 7 + 1)},
        {static_cast<int64_t>(rng() % 5 + 1), static_cast<int64_t>(rng() % 5 + 1), static_cast<int64_t>(rng() % 3 + 1)}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      uint64_t numel = 1;
      for (int64_t d : shapes[i]) numel *= static_cast<uint64_t>(d);
      const std::string name = std::string(*SafetensorsDTypeName(dtype)) + ".t" + std::to_string(i);
      want[name] = {dtype, shapes[i], Fill(dtype, numel, rng)};
    }
  }
  std::vector<SafetensorsTensorData> in;
  for (const auto& [name, w] : want) in.push_back({name, w.dtype, w.shape, AsBytes(w.bytes)});
  const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"}, {"note", "ünïcode \"q\"\n"}};
  const std::string path = dir.Write("all.safetensors", kOld);
  Status s = WriteSafetensors(path, in, metadata);
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"all.safetensors"});

  const std::string file = testing::ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[static_cast<size_t>(i)]);
  BOOST_TEST(n % 8 == 0u);
  BOOST_TEST(file[8] == '{');
  Result<SafetensorsFile> parsed = ParseSafetensors(AsBytes(file));
  BOOST_REQUIRE_MESSAGE(parsed.has_value(), Why(parsed));
  BOOST_TEST(parsed->metadata == metadata);
  BOOST_TEST(parsed->anomalies.empty());
  BOOST_TEST(parsed->tensors.size() == want.size());

  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  BOOST_TEST(ckpt->format() == ContainerFormat::kSafetensors);
  Result<std::vector<NamedTensor>> named = ckpt->NamedTensors();
  BOOST_REQUIRE_MESSAGE(named.has_value(), Why(named));
  BOOST_TEST(named->size() == want.size());
  Result<std::string> describe = ckpt->DescribeJson();
  BOOST_REQUIRE_MESSAGE(describe.has_value(), Why(describe));
  const json described = json::parse(*describe);
  for (const NamedTensor& nt : *named) {
    BOOST_TEST_CONTEXT("tensor " << nt.path) {
      BOOST_REQUIRE(want.contains(nt.path));
      const Want& w = want.at(nt.path);
      const Tensor& t = ckpt->tensors()[nt.tensor];
      BOOST_TEST(t.dtype == w.dtype);
      BOOST_TEST(t.shape == w.shape, boost::test_tools::per_element());
      Result<std::vector<uint8_t>> bytes = ckpt->ContiguousBytes(nt.tensor);
      BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
      BOOST_TEST((std::string(bytes->begin(), bytes->end()) == w.bytes));
      Result<std::string> digest = ckpt->Sha256Hex(nt.tensor);
      BOOST_REQUIRE(digest.has_value());
      BOOST_TEST(described.at("tensors").at(nt.path).at("sha256") == *digest);
      BOOST_TEST(described.at("tensors").at(nt.path).at("dtype") == std::string(DTypeName(w.dtype)));
    }
  }
}

BOOST_AUTO_TEST_CASE(refusals_name_the_tensor) {
  const std::string eight(8, '\0'), sixteen(16, '\0');
  struct Bad {
    std::vector<SafetensorsTensorData> tensors;
    std::vector<std::pair<std::string, std::string>> metadata;
    ErrorCode code;
    std::string text;
  };
  const std::vector<Bad> cases = {
      {{{"c128", DType::kComplex128, {1}, AsBytes(sixteen)}}, {}, ErrorCode::kUnsupportedFormat, "'c128'"},
      {{{"q", DType::kQInt8, {1}, AsBytes(std::string_view(eight).substr(0, 1))}}, {}, ErrorCode::kUnsupportedFormat,
       "'q'"},
      {{{"w", DType::kFloat32, {2}, AsBytes(eight)}, {"w", DType::kFloat32, {2}, AsBytes(eight)}},
       {},
       ErrorCode::kInvalidArgument,
       "two tensors named 'w'"},
      {{{"short", DType::kFloat32, {3}, AsBytes(eight)}}, {}, ErrorCode::kInvalidArgument, "'short'"},
      {{{"neg", DType::kUInt8, {-1}, AsBytes("")}}, {}, ErrorCode::kInvalidArgument, "'neg'"},
      {{{"huge", DType::kFloat64, {int64_t{1} << 62, 8}, AsBytes(eight)}}, {}, ErrorCode::kInvalidArgument, "'huge'"},
      {{{"__metadata__", DType::kUInt8, {1}, AsBytes(std::string_view(eight).substr(0, 1))}},
       {},
       ErrorCode::kInvalidArgument,
       "'__metadata__'"},
      {{{"", DType::kUInt8, {0}, AsBytes("")}}, {}, ErrorCode::kInvalidArgument, "''"},
      {{{"bad\xff", DType::kUInt8, {0}, AsBytes("")}}, {}, ErrorCode::kInvalidArgument, "cannot be a safetensors key"},
      {{}, {{"k", "bad\xc3"}}, ErrorCode::kInvalidArgument, "metadata entry 'k'"},
      {{}, {{"k", "a"}, {"k", "b"}}, ErrorCode::kInvalidArgument, "two metadata entries named 'k'"},
  };
  TempDir dir;
  for (const Bad& c : cases) {
    BOOST_TEST_CONTEXT("expecting " << c.text) {
      Result<std::string> out = SafetensorsBytes(c.tensors, c.metadata);
      BOOST_REQUIRE(!out.has_value());
      BOOST_TEST(out.error().code == c.code);
      BOOST_TEST(out.error().ToString().find(c.text) != std::string::npos, out.error().ToString());
      const std::string path = dir.Write("keep.safetensors", kOld);
      Status s = WriteSafetensors(path, c.tensors, c.metadata);
      BOOST_REQUIRE(!s.has_value());
      BOOST_TEST(s.error().code == c.code);
      BOOST_TEST(testing::ReadFile(path) == kOld);
      BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"keep.safetensors"});
    }
  }
}

BOOST_AUTO_TEST_CASE(a_failed_write_keeps_the_old_safetensors_file) {
  TempDir dir;
  const std::string path = dir.Write("m.safetensors", kOld);
  const std::string data = F32LE({1, 2});
  for (uint32_t nth : {1u, 2u, 3u}) {
    Injection inject(AtomicFileStep::kWrite, ENOSPC, nth);
    Status s = WriteSafetensors(path, {{"a", DType::kFloat32, {2}, AsBytes(data)}, {"b", DType::kFloat32, {2}, AsBytes(data)}});
    BOOST_REQUIRE(!s.has_value());
    BOOST_TEST(s.error().ToString().find("No space left on device") != std::string::npos);
    BOOST_TEST(testing::ReadFile(path) == kOld);
    BOOST_TEST(Entries(dir.path) == std::vector<std::string>{"m.safetensors"});
  }
}

// Interop: Python's json + numpy read the file on their own and see the same
// values (numpy has no bfloat16/float8, so those are left out here).
BOOST_AUTO_TEST_CASE(python_numpy_reads_the_written_file) {
  TempDir dir;
  struct Col {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
    json values;
  };
  std::vector<Col> cols;
  auto add = [&](std::string name, DType dtype, std::vector<int64_t> shape, auto make) {
    Col c{std::move(name), dtype, std::move(shape), {}, json::array()};
    uint64_t numel = 1;
    for (int64_t d : c.shape) numel *= static_cast<uint64_t>(d);
    for (uint64_t i = 0; i < numel; ++i) make(i, c);
    cols.push_back(std::move(c));
  };
  auto put = [](Col& c, const void* p, size_t n) { c.bytes.append(static_cast<const char*>(p), n); };
  add("f64", DType::kFloat64, {2, 3}, [&](uint64_t i, Col& c) { double v = (static_cast<double>(i) - 2.5) / 3; put(c, &v, 8); c.values.push_back(v); });
  add("f32", DType::kFloat32, {5}, [&](uint64_t i, Col& c) { float v = static_cast<float>(i) * 0.25f - 1; put(c, &v, 4); c.values.push_back(static_cast<double>(v)); });
  add("f16", DType::kFloat16, {4}, [&](uint64_t i, Col& c) {
    const uint16_t bits[] = {0x3c00, 0xc000, 0x3800, 0x0000};  // 1, -2, 0.5, 0
    const double vals[] = {1, -2, 0.5, 0};
    put(c, &bits[i], 2); c.values.push_back(vals[i]); });
  add("i64", DType::kInt64, {3}, [&](uint64_t i, Col& c) { int64_t v = i == 0 ? INT64_MIN : static_cast<int64_t>(i) * -1000000007; put(c, &v, 8); c.values.push_back(v); });
  add("i32", DType::kInt32, {2, 2}, [&](uint64_t i, Col& c) { int32_t v = static_cast<int32_t>(i) - 2; put(c, &v, 4); c.values.push_back(v); });
  add("i16", DType::kInt16, {3}, [&](uint64_t i, Col& c) { int16_t v = static_cast<int16_t>(-300 * static_cast<int>(i)); put(c, &v, 2); c.values.push_back(v); });
  add("i8", DType::kInt8, {4}, [&](uint64_t i, Col& c) { int8_t v = static_cast<int8_t>(-128 + 85 * static_cast<int>(i)); put(c, &v, 1); c.values.push_back(v); });
  add("u64", DType::kUInt64, {2}, [&](uint64_t i, Col& c) { uint64_t v = i == 0 ? UINT64_MAX : 42; put(c, &v, 8); c.values.push_back(v); });
  add("u32", DType::kUInt32, {2}, [&](uint64_t i, Col& c) { uint32_t v = 4000000000u + static_cast<uint32_t>(i); put(c, &v, 4); c.values.push_back(v); });
  add("u16", DType::kUInt16, {2}, [&](uint64_t i, Col& c) { uint16_t v = static_cast<uint16_t>(65535 - i); put(c, &v, 2); c.values.push_back(v); });
  add("u8", DType::kUInt8, {3, 1}, [&](uint64_t i, Col& c) { uint8_t v = static_cast<uint8_t>(i * 100); put(c, &v, 1); c.values.push_back(v); });
  add("bool", DType::kBool, {3}, [&](uint64_t i, Col& c) { uint8_t v = i % 2; put(c, &v, 1); c.values.push_back(v == 1); });
  add("c64", DType::kComplex64, {2}, [&](uint64_t i, Col& c) {
    float re = static_cast<float>(i) + 0.5f, im = -static_cast<float>(i);
    put(c, &re, 4); put(c, &im, 4); c.values.push_back(json::array({re, im})); });
  add("scalar", DType::kFloat32, {}, [&](uint64_t, Col& c) { float v = 7; put(c, &v, 4); c.values.push_back(7.0); });
  add("empty", DType::kInt32, {2, 0}, [&](uint64_t, Col&) {});

  std::vector<SafetensorsTensorData> in;
  for (const Col& c : cols) in.push_back({c.name, c.dtype, c.shape, AsBytes(c.bytes)});
  const std::string path = (dir.path / "interop.safetensors").string();
  Status s = WriteSafetensors(path, in, {{"format", "pt"}});
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));

  const std::string script = R"PY(
import json, struct, sys
import numpy as np
data = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', data[:8])[0]
assert n % 8 == 0
header = json.loads(data[8:8 + n].decode('utf-8'))
meta = header.pop('__metadata__')
types = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1',
         'U64': '<u8', 'U32': '<u4', 'U16': '<u2', 'U8': 'u1', 'BOOL': '?', 'C64': '<c8'}
out = {'__metadata__': meta, 'order': list(header), 'tensors': {}}
end = 0
for name, info in sorted(header.items(), key=lambda kv: kv[1]['data_offsets']):
    b, e = info['data_offsets']
    assert b == end, name
    end = e
    a = np.frombuffer(data[8 + n + b:8 + n + e], dtype=types[info['dtype']]).reshape(info['shape'])
    flat = a.reshape(-1).tolist()
    if info['dtype'] == 'C64':
        flat = [[z.real, z.imag] for z in flat]
    out['tensors'][name] = {'dtype': info['dtype'], 'shape': list(a.shape), 'values': flat}
assert 8 + n + end == len(data)
print(json.dumps(out))
)PY";
  const std::string script_path = dir.Write("read.py", script);
  testing::CommandResult r = testing::Run(std::string(CKPTGUARD_PYTHON) + " " + testing::ShellQuote(script_path) +
                                          " " + testing::ShellQuote(path));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "python failed: " << r.out);
  const json got = json::parse(r.out);
  BOOST_TEST(got.at("__metadata__") == json({{"format", "pt"}}));
  for (const Col& c : cols) {
    BOOST_TEST_CONTEXT("tensor " << c.name) {
      const json& t = got.at("tensors").at(c.name);
      BOOST_TEST(t.at("dtype") == std::string(*SafetensorsDTypeName(c.dtype)));
      BOOST_TEST(t.at("shape") == json(c.shape));
      BOOST_TEST(t.at("values") == c.values, t.at("values").dump() << " != " << c.values.dump());
    }
  }
}

// A real file (Debian's torch 1.13 + safetensors) rewritten by us: same
// tensors, same digests, same metadata; order now the modern reference's.
BOOST_AUTO_TEST_CASE(corpus_mlp_round_trips_with_identical_digests) {
  const std::string src = (testing::CorpusDir() / "benign" / "mlp.safetensors").string();
  Result<Checkpoint> original = LoadCheckpoint(src);
  BOOST_REQUIRE_MESSAGE(original.has_value(), Why(original));
  Result<SafetensorsFile> original_header = ParseSafetensors(AsBytes(testing::ReadFile(src)));
  BOOST_REQUIRE(original_header.has_value());
  Result<std::vector<NamedTensor>> named = original->NamedTensors();
  BOOST_REQUIRE(named.has_value());
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(named->size());
  std::vector<SafetensorsTensorData> in;
  for (const NamedTensor& nt : *named) {
    Result<std::vector<uint8_t>> bytes = original->ContiguousBytes(nt.tensor);
    BOOST_REQUIRE(bytes.has_value());
    buffers.push_back(std::move(*bytes));
    const Tensor& t = original->tensors()[nt.tensor];
    in.push_back({nt.path, t.dtype, t.shape, Bytes(buffers.back())});
  }
  TempDir dir;
  const std::string path = (dir.path / "mlp.safetensors").string();
  Status s = WriteSafetensors(path, in, original_header->metadata);
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  Result<Checkpoint> rewritten = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(rewritten.has_value(), Why(rewritten));
  const json a = json::parse(*original->DescribeJson());
  const json b = json::parse(*rewritten->DescribeJson());
  BOOST_TEST(a.at("tensors").size() == 4u);
  BOOST_TEST(a.at("tensors") == b.at("tensors"), a.at("tensors").dump() << "\n" << b.at("tensors").dump());
  const json expect = json::parse(testing::ReadFile(src + ".expect.json"));
  for (const auto& [name, fields] : expect.at("tensors").items()) {
    BOOST_TEST(b.at("tensors").at(name).at("sha256") == fields.at("sha256"), name);
  }
  Result<SafetensorsFile> header = ParseSafetensors(AsBytes(testing::ReadFile(path)));
  BOOST_REQUIRE(header.has_value());
  BOOST_TEST(header->metadata == original_header->metadata);
  std::vector<std::string> order;
  for (const SafetensorsTensor& t : header->tensors) order.push_back(t.name);
  BOOST_TEST(order == (std::vector<std::string>{"hidden.bias", "hidden.weight", "output.bias", "output.weight"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace ckptguard

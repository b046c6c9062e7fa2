// Files that change under us (issue 13, part 4): a mapped file truncated or
// rewritten while it is read never raises SIGBUS out of the library; every
// entry point that reads a file whole reports kIo "changed while being read"
// instead of a result computed from torn bytes; the read mode is immune; and
// FIFOs, devices, sockets and folders are refused before they are opened.
#define BOOST_TEST_MODULE changing_files_test
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "ckptguard/checkpoint.h"
#include "ckptguard/input_file.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/scanner/scan.h"
#include "ckptguard/sha256.h"
#include "ckptguard/latest.h"
#include "ckptguard/verify.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using testing::CorpusDir;
using testing::TempDir;
namespace fs = std::filesystem;

std::string Text(const Error& e) { return e.ToString(); }

// A rewrite must land in a later tick of the file system's clock than the
// write that made the file (timestamps are as fine as the kernel's coarse
// clock, a few ms), or no fstat can tell them apart.
void NextTick() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }

void Truncate(const std::string& path, off_t len) { BOOST_REQUIRE(::truncate(path.c_str(), len) == 0); }

// RewriteSameSize overwrites the first bytes in place: same size, new content.
void RewriteSameSize(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  BOOST_REQUIRE(fd >= 0);
  const char junk[64] = "rewritten in place by another process, same size";
  BOOST_REQUIRE(::pwrite(fd, junk, sizeof(junk), 0) == static_cast<ssize_t>(sizeof(junk)));
  ::close(fd);
}

uint64_t SumAll(Bytes b) {
  uint64_t sum = 0;
  for (uint8_t c : b) sum += c;
  return sum;
}

void ExpectChanged(const Error& e, const std::string& path) {
  BOOST_TEST(IsChangedWhileReading(e), Text(e));
  BOOST_TEST((e.code == ErrorCode::kIo));
  BOOST_TEST(e.detail.find("changed while being read") != std::string::npos, Text(e));
  BOOST_TEST(e.where == path);
}

std::string CopyCorpus(const TempDir& dir, const char* name, const std::string& as) {
  const fs::path to = dir.path / as;
  fs::copy_file(CorpusDir() / "benign" / name, to, fs::copy_options::overwrite_existing);
  return to.string();
}

// --- signal chaining (first: before any MappedFile installs its handler) ---

sigjmp_buf g_jump;
volatile sig_atomic_t g_caught = 0;
void TestHandler(int, siginfo_t*, void*) {
  g_caught = g_caught + 1;
  siglongjmp(g_jump, 1);
}

BOOST_AUTO_TEST_CASE(faults_outside_our_maps_go_to_the_previous_handler) {
  struct sigaction sa {}, old {};
  sa.sa_sigaction = TestHandler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  BOOST_REQUIRE(::sigaction(SIGBUS, &sa, &old) == 0);
  TempDir dir;
  const std::string guarded = dir.Write("guarded", std::string(8192, 'g'));
  {
    Result<MappedFile> file = MappedFile::Open(guarded);  // installs ours, chaining to TestHandler
    BOOST_REQUIRE(file.has_value());
    // A raised SIGBUS is nobody's fault: it reaches TestHandler.
    g_caught = 0;
    if (sigsetjmp(g_jump, 1) == 0) ::raise(SIGBUS);
    BOOST_TEST(g_caught == 1);
    // A real fault in a map that is not ours reaches it too.
    const std::string other = dir.Write("other", std::string(16384, 'o'));
    const int fd = ::open(other.c_str(), O_RDONLY);
    BOOST_REQUIRE(fd >= 0);
    void* raw = ::mmap(nullptr, 16384, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    BOOST_REQUIRE(raw != MAP_FAILED);
    Truncate(other, 0);
    g_caught = 0;
    volatile uint8_t sink = 0;
    if (sigsetjmp(g_jump, 1) == 0) sink = static_cast<const volatile uint8_t*>(raw)[8192];
    (void)sink;
    BOOST_TEST(g_caught == 1);
    ::munmap(raw, 16384);
    // And a fault in ours does not: it becomes zero pages and an error.
    Truncate(guarded, 0);
    g_caught = 0;
    BOOST_TEST(SumAll(file->data()) == 0u);
    BOOST_TEST(g_caught == 0);
    BOOST_TEST(file->faulted());
    BOOST_REQUIRE(!file->CheckUnchanged());
  }
  ::sigaction(SIGBUS, &old, nullptr);
}

// --- MappedFile ---

BOOST_AUTO_TEST_CASE(truncated_to_zero_reads_zeros_and_reports_the_change) {
  TempDir dir;
  const std::string path = dir.Write("f.bin", std::string(size_t{1} << 20, 'x'));
  Result<MappedFile> file = MappedFile::Open(path);
  BOOST_REQUIRE(file.has_value());
  BOOST_TEST(file->CheckUnchanged().has_value());
  Truncate(path, 0);
  BOOST_TEST(SumAll(file->data()) == 0u);  // no SIGBUS: zero pages
  BOOST_TEST(file->faulted());
  Status s = file->CheckUnchanged();
  BOOST_REQUIRE(!s);
  ExpectChanged(s.error(), path);
}

BOOST_AUTO_TEST_CASE(copy_on_write_maps_take_writes_that_never_reach_the_file) {
  TempDir dir;
  const std::string path = dir.Write("f.bin", std::string(size_t{1} << 16, 'x'));
  MappedFileOptions options;
  options.copy_on_write = true;
  Result<MappedFile> file = MappedFile::Open(path, options);
  BOOST_REQUIRE(file.has_value());
  uint8_t* bytes = const_cast<uint8_t*>(file->data().data());
  bytes[0] = 'y';
  bytes[40000] = 'z';
  BOOST_TEST(file->data()[0] == 'y');
  BOOST_TEST(testing::ReadFile(path) == std::string(size_t{1} << 16, 'x'));
  Result<MappedFile> again = MappedFile::Open(path);
  BOOST_REQUIRE(again.has_value());
  BOOST_TEST(again->data()[0] == 'x');
  BOOST_TEST(file->CheckUnchanged().has_value());  // the file itself did not change
  // After the file shrinks, reads past its end get zero pages (no SIGBUS),
  // which keep the mapping's protection: still writable.
  Truncate(path, 0);
  BOOST_TEST(SumAll(file->data()) <= uint64_t{255} * (size_t{1} << 16));  // (read, not optimised away)
  BOOST_TEST(file->faulted());
  bytes[60000] = 'w';
  BOOST_TEST(file->data()[60000] == 'w');
}

// MappedRssKib is the resident size of the mapping that starts at `addr`,
// as /proc/self/smaps reports it (KiB); -1 when the mapping is not found.
long MappedRssKib(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  char start[32];
  std::snprintf(start, sizeof(start), "%lx-", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(addr)));
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    if (line.rfind(start, 0) == 0) {
      in = true;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      return std::stol(line.substr(4));
    }
  }
  return -1;
}

BOOST_AUTO_TEST_CASE(drop_resident_leaves_the_resident_set_and_keeps_the_bytes) {
  TempDir dir;
  std::string content(size_t{4} << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>((i * 131) >> 7);
  const std::string path = dir.Write("f.bin", content);
  Result<MappedFile> file = MappedFile::Open(path);
  BOOST_REQUIRE(file.has_value());
  const uint64_t sum = SumAll(file->data());  // every page read
  BOOST_TEST(MappedRssKib(file->data().data()) >= 4000);
  file->DropResident();
  BOOST_TEST(MappedRssKib(file->data().data()) < 64);  // back in the page cache, not in this process
  BOOST_TEST(SumAll(file->data()) == sum);             // read again from the file, the same bytes
  BOOST_TEST(std::memcmp(file->data().data(), content.data(), content.size()) == 0);
  BOOST_TEST(file->CheckUnchanged().has_value());
  // After a truncation the torn pages stay zero pages when dropped and read
  // again, and the change is still reported.
  Truncate(path, 0);
  BOOST_TEST(SumAll(file->data()) == 0u);
  file->DropResident();
  BOOST_TEST(SumAll(file->data()) == 0u);
  BOOST_TEST(!file->CheckUnchanged());
  // Owned memory (kRead) is never dropped.
  const std::string path2 = dir.Write("g.bin", content);
  Result<MappedFile> read = MappedFile::Open(path2, MappedFileOptions{.mode = MapMode::kRead});
  BOOST_REQUIRE(read.has_value());
  read->DropResident();
  BOOST_TEST(std::memcmp(read->data().data(), content.data(), content.size()) == 0);
}

BOOST_AUTO_TEST_CASE(truncated_to_half_keeps_the_first_half_and_reports_the_change) {
  TempDir dir;
  const size_t len = size_t{1} << 20;
  const std::string path = dir.Write("f.bin", std::string(len, '\x01'));
  Result<MappedFile> file = MappedFile::Open(path);
  BOOST_REQUIRE(file.has_value());
  Truncate(path, static_cast<off_t>(len / 2));
  BOOST_TEST(SumAll(file->data()) == len / 2);
  BOOST_TEST(file->faulted());
  BOOST_REQUIRE(!file->CheckUnchanged());
  ExpectChanged(file->CheckUnchanged().error(), path);
  // A second map of the same (now shorter) file is a new, consistent file.
  Result<MappedFile> again = MappedFile::Open(path);
  BOOST_REQUIRE(again.has_value());
  BOOST_TEST(again->data().size() == len / 2);
  BOOST_TEST(again->CheckUnchanged().has_value());
}

BOOST_AUTO_TEST_CASE(a_rewrite_of_the_same_size_is_seen_by_fstat) {
  TempDir dir;
  const std::string path = dir.Write("f.bin", std::string(100000, 'x'));
  NextTick();
  Result<MappedFile> file = MappedFile::Open(path);
  BOOST_REQUIRE(file.has_value());
  RewriteSameSize(path);
  BOOST_TEST(!file->faulted());
  Status s = file->CheckUnchanged();
  BOOST_REQUIRE(!s);
  ExpectChanged(s.error(), path);
}

BOOST_AUTO_TEST_CASE(growth_is_a_change_too) {
  TempDir dir;
  const std::string path = dir.Write("f.bin", std::string(5000, 'x'));
  Result<MappedFile> file = MappedFile::Open(path);
  BOOST_REQUIRE(file.has_value());
  Truncate(path, 10000);
  BOOST_REQUIRE(!file->CheckUnchanged());
}

BOOST_AUTO_TEST_CASE(read_mode_is_immune_and_bounded) {
  TempDir dir;
  const std::string path = dir.Write("f.bin", std::string(300000, 'r'));
  MappedFileOptions read;
  read.mode = MapMode::kRead;
  Result<MappedFile> file = MappedFile::Open(path, read);
  BOOST_REQUIRE(file.has_value());
  BOOST_TEST((file->mode() == MapMode::kRead));
  Truncate(path, 0);
  BOOST_TEST(SumAll(file->data()) == 300000u * 'r');
  BOOST_TEST(file->CheckUnchanged().has_value());
  BOOST_TEST(!file->faulted());

  const std::string big = dir.Write("big.bin", std::string(5000, 'b'));
  read.max_read_len = 4999;
  Result<MappedFile> refused = MappedFile::Open(big, read);
  BOOST_REQUIRE(!refused);
  BOOST_TEST((refused.error().code == ErrorCode::kLimitExceeded));
  BOOST_TEST(refused.error().limit == "max_read_len");
  read.max_read_len = 5000;
  BOOST_TEST(MappedFile::Open(big, read).has_value());
}

BOOST_AUTO_TEST_CASE(the_guard_table_frees_its_slots) {
  // Far more maps over the test than the table holds at once.
  TempDir dir;
  const std::string path = dir.Write("f.bin", "some bytes");
  for (int i = 0; i < 10000; ++i) {
    Result<MappedFile> file = MappedFile::Open(path);
    BOOST_REQUIRE(file.has_value());
    MappedFile moved = std::move(*file);
    BOOST_REQUIRE(moved.data().size() == 10u);
  }
}

BOOST_AUTO_TEST_CASE(faults_from_several_threads) {
  TempDir dir;
  std::vector<std::string> paths;
  std::vector<MappedFile> files;
  for (int i = 0; i < 8; ++i) {
    paths.push_back(dir.Write("f" + std::to_string(i), std::string(size_t{1} << 20, 'z')));
    Result<MappedFile> f = MappedFile::Open(paths.back());
    BOOST_REQUIRE(f.has_value());
    files.push_back(std::move(*f));
  }
  for (const std::string& p : paths) Truncate(p, 4096);
  std::vector<std::thread> threads;
  std::vector<uint64_t> sums(files.size());
  for (size_t i = 0; i < files.size(); ++i) threads.emplace_back([&, i] { sums[i] = SumAll(files[i].data()); });
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < files.size(); ++i) {
    BOOST_TEST(sums[i] == 4096u * 'z');
    BOOST_TEST(!files[i].CheckUnchanged());
  }
}

// --- entry points that read files whole ---

BOOST_AUTO_TEST_CASE(load_checkpoint_reports_a_truncation_between_map_and_read) {
  TempDir dir;
  for (const char* name : {"mlp_full_checkpoint.pt", "mlp_legacy.pt", "mlp.safetensors", "arrays.npz"}) {
    for (off_t cut : {off_t{0}, off_t{1000}}) {
      const std::string path = CopyCorpus(dir, name, "victim");
      LoadOptions options;
      options.file.after_open = [cut](const std::string& p) { Truncate(p, cut); };
      Result<Checkpoint> ckpt = LoadCheckpoint(path, options);
      BOOST_REQUIRE_MESSAGE(!ckpt, name << " cut at " << cut << " loaded");
      ExpectChanged(ckpt.error(), path);
    }
  }
}

BOOST_AUTO_TEST_CASE(load_checkpoint_reports_a_rewrite_between_map_and_read) {
  TempDir dir;
  const std::string path = CopyCorpus(dir, "mlp_full_checkpoint.pt", "victim.pt");
  NextTick();
  LoadOptions options;
  options.file.after_open = [](const std::string& p) { RewriteSameSize(p); };
  Result<Checkpoint> ckpt = LoadCheckpoint(path, options);
  BOOST_REQUIRE(!ckpt);
  ExpectChanged(ckpt.error(), path);
}

BOOST_AUTO_TEST_CASE(zero_copy_views_after_the_load_are_checked_by_the_caller) {
  TempDir dir;
  const std::string path = CopyCorpus(dir, "mlp.params", "victim.pt");
  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE(ckpt.has_value());
  BOOST_TEST(ckpt->CheckUnchanged().has_value());
  Truncate(path, 0);
  // Reading every tensor through the (now torn) views: no signal.
  for (uint32_t t = 0; t < ckpt->tensors().size(); ++t) BOOST_TEST(ckpt->Sha256Hex(t).has_value());
  Status s = ckpt->CheckUnchanged();
  BOOST_REQUIRE(!s);
  ExpectChanged(s.error(), path);
}

BOOST_AUTO_TEST_CASE(load_checkpoint_in_read_mode_is_immune) {
  TempDir dir;
  const std::string path = CopyCorpus(dir, "mlp.params", "victim.pt");
  const Result<Checkpoint> reference = LoadCheckpoint((CorpusDir() / "benign" / "mlp.params").string());
  BOOST_REQUIRE(reference.has_value());
  LoadOptions options;
  options.file.mode = MapMode::kRead;
  options.file.after_open = [](const std::string& p) { Truncate(p, 0); };
  Result<Checkpoint> ckpt = LoadCheckpoint(path, options);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), (ckpt ? std::string() : Text(ckpt.error())));
  BOOST_TEST(ckpt->CheckUnchanged().has_value());
  BOOST_REQUIRE(ckpt->tensors().size() == reference->tensors().size());
  for (uint32_t t = 0; t < ckpt->tensors().size(); ++t) BOOST_TEST(*ckpt->Sha256Hex(t) == *reference->Sha256Hex(t));
}

BOOST_AUTO_TEST_CASE(scan_file_reports_the_change_not_findings) {
  TempDir dir;
  const std::string path = dir.path / "victim.pkl";
  fs::copy_file(CorpusDir() / "malicious" / "os_system_p2.pkl", path);
  scanner::ScanOptions options;
  options.file.after_open = [](const std::string& p) { Truncate(p, 3); };
  const scanner::FileReport r = scanner::ScanFile(path, options);
  BOOST_TEST((r.verdict == scanner::Verdict::kError));
  BOOST_REQUIRE(r.error.has_value());
  ExpectChanged(*r.error, path);
  BOOST_TEST(r.findings.empty());
}

BOOST_AUTO_TEST_CASE(verify_checkpoint_reports_one_io_problem) {
  TempDir dir;
  const std::string path = CopyCorpus(dir, "mlp_full_checkpoint.pt", "victim.pt");
  LoadOptions options;
  options.file.after_open = [](const std::string& p) { Truncate(p, 50000); };
  const VerifyReport r = VerifyCheckpoint(path, options);
  BOOST_REQUIRE(r.problems.size() == 1u);
  BOOST_TEST(r.problems[0].kind == "io");
  BOOST_TEST(r.problems[0].detail.find("changed while being read") != std::string::npos, r.problems[0].detail);
}

BOOST_AUTO_TEST_CASE(find_latest_skips_a_candidate_that_changes) {
  TempDir dir;
  fs::create_directories(dir.path / "ckpts");
  const std::string older = (dir.path / "ckpts" / "a.pt").string();
  fs::copy_file(CorpusDir() / "benign" / "mlp_full_checkpoint.pt", older);
  const std::string newer = (dir.path / "ckpts" / "b.pt").string();
  fs::copy_file(CorpusDir() / "benign" / "mlp_full_checkpoint.pt", newer);
  fs::last_write_time(newer, fs::last_write_time(older) + std::chrono::seconds(10));
  // b.pt is rewritten while it is verified (its third open: a look, the
  // ranking load, the verification).
  LoadOptions options;
  int opens = 0;
  options.file.after_open = [&](const std::string& p) {
    if (p == newer && ++opens == 3) Truncate(p, 20000);
  };
  Result<LatestResult> latest = FindLatest(dir.path / "ckpts", options);
  BOOST_REQUIRE(latest.has_value());
  BOOST_REQUIRE(latest->chosen.has_value());
  BOOST_TEST(latest->chosen->path.string() == older);
  BOOST_REQUIRE(latest->skipped.size() == 1u);
  BOOST_TEST(latest->skipped[0].path.string() == newer);
  BOOST_REQUIRE(latest->skipped[0].report.problems.size() == 1u);
  BOOST_TEST(latest->skipped[0].report.problems[0].detail.find("changed while being read") != std::string::npos);
}

// --- what is not a regular file is refused before it is opened ---

struct Specials {
  TempDir dir;
  std::string fifo, socket, folder;
  int socket_fd = -1;
  Specials() {
    fifo = (dir.path / "fifo").string();
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    socket = (dir.path / "sock").string();
    socket_fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof(addr.sun_path) - 1);
    BOOST_REQUIRE(::bind(socket_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    folder = (dir.path / "folder").string();
    fs::create_directories(folder);
  }
  ~Specials() { ::close(socket_fd); }
};

BOOST_AUTO_TEST_CASE(non_regular_files_are_refused_unopened) {
  Specials s;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {s.fifo, "FIFO"}, {"/dev/null", "character device"}, {"/dev/zero", "character device"},
      {s.socket, "socket"}, {s.folder, "folder"}};
  for (const auto& [path, kind] : cases) {
    Result<InputFile> in = OpenInputFile(path);
    BOOST_REQUIRE_MESSAGE(!in, path);
    BOOST_TEST((in.error().code == ErrorCode::kIo));
    BOOST_TEST(in.error().detail.find(kind) != std::string::npos, Text(in.error()));
    BOOST_TEST(in.error().detail.find("not a regular file") != std::string::npos, Text(in.error()));
    BOOST_TEST(!MappedFile::Open(path).has_value());
    MappedFileOptions read;
    read.mode = MapMode::kRead;
    BOOST_TEST(!MappedFile::Open(path, read).has_value());
    BOOST_TEST(!Sha256FileHex(path).has_value());
    BOOST_TEST(!ReadInputFile(path, 1000).has_value());
    BOOST_TEST(!LoadCheckpoint(path).has_value());
    BOOST_TEST((scanner::ScanFile(path).verdict == scanner::Verdict::kError));
    BOOST_TEST(!VerifyCheckpoint(path).ok());
    BOOST_TEST(!LoadAllowlistFile(path).has_value());
  }
  // A symbolic link is followed unless asked otherwise.
  TempDir dir;
  const std::string target = dir.Write("target", "abc");
  const std::string link = (dir.path / "link").string();
  fs::create_symlink(target, link);
  BOOST_TEST(OpenInputFile(link).has_value());
  Result<InputFile> nofollow = OpenInputFile(link, OpenInputOptions{.follow_symlinks = false});
  BOOST_REQUIRE(!nofollow);
  BOOST_TEST(nofollow.error().detail.find("symbolic link") != std::string::npos, Text(nofollow.error()));
}

BOOST_AUTO_TEST_CASE(read_input_file_is_bounded_and_checked) {
  TempDir dir;
  const std::string path = dir.Write("small", "0123456789");
  BOOST_TEST(*ReadInputFile(path, 10) == "0123456789");
  Result<std::string> big = ReadInputFile(path, 9);
  BOOST_REQUIRE(!big);
  BOOST_TEST((big.error().code == ErrorCode::kLimitExceeded));
  Result<InputFile> in = OpenInputFile(path);
  BOOST_REQUIRE(in.has_value());
  BOOST_TEST(in->CheckUnchanged().has_value());
  Truncate(path, 2);
  BOOST_REQUIRE(!in->CheckUnchanged());
  ExpectChanged(in->CheckUnchanged().error(), path);
}

BOOST_AUTO_TEST_CASE(sha256_of_a_stable_file_still_works) {
  TempDir dir;
  const std::string path = dir.Write("abc", "abc");
  BOOST_TEST(*Sha256FileHex(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const int fd = ::open(path.c_str(), O_RDONLY);
  BOOST_REQUIRE(fd >= 0);
  BOOST_TEST(*Sha256FdHex(fd, "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ::close(fd);
}

}  // namespace
}  // namespace ckptguard

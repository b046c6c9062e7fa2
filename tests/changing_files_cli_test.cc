// Files that change under the CLI (issue 13, part 4): `ckptguard` commands
// whose input is truncated or rewritten while they read it end by exit (never
// by a signal), printing either the right answer (they finished first) or
// "changed while being read"; FIFOs, devices and sockets are refused at once.
//
// How the change is made to land during the read, without FUSE: the test
// starts the command, watches /proc/<pid>/maps (and /proc/<pid>/fd, for
// readers that do not map) until one mapping (or descriptor) of the file has
// lived for a while -- past the quick looks some commands take first -- and
// then changes the file. Files are large and sparse (hundreds of MB of
// zeros, written in an instant), so the read it interrupts lasts long; each
// deterministic case retries with a larger file until the change is observed
// mid-read, bounded in size and time.
#define BOOST_TEST_MODULE changing_files_cli_test
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kChanged = "changed while being read";

// --- big files, sparse -----------------------------------------------------

void PutLE(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// WriteSparse writes `head`, then `len` zero bytes (a hole), then `tail`.
void WriteSparse(const std::string& path, const std::string& head, uint64_t len, const std::string& tail = {}) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  BOOST_REQUIRE(fd >= 0);
  BOOST_REQUIRE(::pwrite(fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()));
  const off_t end = static_cast<off_t>(head.size() + len);
  BOOST_REQUIRE(::ftruncate(fd, end) == 0);
  if (!tail.empty()) BOOST_REQUIRE(::pwrite(fd, tail.data(), tail.size(), end) == static_cast<ssize_t>(tail.size()));
  ::close(fd);
}

// BigSafetensors: one float32 tensor "w" of `len` bytes of zeros.
void BigSafetensors(const std::string& path, uint64_t len) {
  std::string header = R"({"w":{"dtype":"F32","shape":[)" + std::to_string(len / 4) + R"(],"data_offsets":[0,)" +
                       std::to_string(len) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string head;
  PutLE(head, header.size(), 8);
  WriteSparse(path, head + header, len);
}

// BigNpz: a stored zip holding w.npy, a uint8 array of `len` zeros (readers
// that check CRCs read all of it).
void BigNpz(const std::string& path, uint64_t len) {
  std::string dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + std::to_string(len) + ",), }";
  dict.append(64 - (10 + dict.size() + 1) % 64, ' ');
  dict.push_back('\n');
  std::string npy = "\x93NUMPY\x01";
  npy.push_back('\0');
  PutLE(npy, dict.size(), 2);
  npy += dict;
  // CRC-32 of npy + len zeros: zeros by doubling with crc32_combine.
  uLong zeros = crc32(0L, Z_NULL, 0);
  {
    const unsigned char zero = 0;
    uLong block = crc32(0L, &zero, 1);
    uint64_t block_len = 1;
    for (uint64_t n = len; n != 0; n >>= 1) {
      if (n & 1) zeros = crc32_combine(zeros, block, static_cast<z_off_t>(block_len));
      block = crc32_combine(block, block, static_cast<z_off_t>(block_len));
      block_len *= 2;
    }
  }
  const uLong crc = crc32_combine(crc32(0L, reinterpret_cast<const Bytef*>(npy.data()), static_cast<uInt>(npy.size())),
                                  zeros, static_cast<z_off_t>(len));
  const uint64_t data_len = npy.size() + len;
  const std::string name = "w.npy";
  std::string local;
  PutLE(local, 0x04034b50, 4);
  PutLE(local, 20, 2);
  PutLE(local, 0, 2);
  PutLE(local, 0, 2);  // stored
  PutLE(local, 0, 4);  // time, date
  PutLE(local, crc, 4);
  PutLE(local, data_len, 4);
  PutLE(local, data_len, 4);
  PutLE(local, name.size(), 2);
  PutLE(local, 0, 2);
  local += name;
  std::string central;
  PutLE(central, 0x02014b50, 4);
  PutLE(central, 20, 2);
  PutLE(central, 20, 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 4);
  PutLE(central, crc, 4);
  PutLE(central, data_len, 4);
  PutLE(central, data_len, 4);
  PutLE(central, name.size(), 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 2);
  PutLE(central, 0, 4);
  PutLE(central, 0, 4);  // local header at 0
  central += name;
  std::string eocd;
  PutLE(eocd, 0x06054b50, 4);
  PutLE(eocd, 0, 2);
  PutLE(eocd, 0, 2);
  PutLE(eocd, 1, 2);
  PutLE(eocd, 1, 2);
  PutLE(eocd, central.size(), 4);
  PutLE(eocd, local.size() + data_len, 4);
  PutLE(eocd, 0, 2);
  WriteSparse(path, local + npy, len, central + eocd);
}

// BigPickle: a protocol-2 pickle of {"w": <str of `len` NUL characters>}:
// every reader of pickles decodes (and checks the UTF-8 of) all of it.
void BigPickle(const std::string& path, uint64_t len) {
  std::string head = "\x80\x02}X";
  PutLE(head, 1, 4);
  head += "wX";
  PutLE(head, len, 4);
  WriteSparse(path, head, len, "s.");
}

// --- running a command while the file changes ------------------------------

enum class Change { kTruncateToZero, kTruncateToHalf, kRewriteInPlace };

struct Outcome {
  bool exited = false;     // ended by exit(), not by a signal
  int exit_code = -1;
  int signal = 0;
  bool changed = false;    // the file was changed while the command had it open or mapped
  std::string out, err;
};

bool Holds(pid_t pid, const std::string& path, std::string& key) {
  // A mapping (its address range names this instance of it)...
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.size() > path.size() && line.ends_with(path)) {
      key = "map " + line.substr(0, line.find(' '));
      return true;
    }
  }
  // ...or a descriptor (sign reads with read(), not a map).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    if (fs::read_symlink(e.path(), lec).string() == path) {
      key = "fd " + e.path().filename().string();
      return true;
    }
  }
  return false;
}

void ApplyChange(const std::string& path, Change change) {
  switch (change) {
    case Change::kTruncateToZero: BOOST_REQUIRE(::truncate(path.c_str(), 0) == 0); break;
    case Change::kTruncateToHalf: BOOST_REQUIRE(::truncate(path.c_str(), static_cast<off_t>(fs::file_size(path) / 2)) == 0); break;
    case Change::kRewriteInPlace: {
      const int fd = ::open(path.c_str(), O_WRONLY);
      BOOST_REQUIRE(fd >= 0);
      const std::string junk(4096, '\x7f');
      BOOST_REQUIRE(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(fs::file_size(path) / 2)) == 4096);
      ::close(fd);
      break;
    }
  }
}

// RunChanging runs the CLI with `args`; once one mapping or descriptor of
// `watched` has lived `settle`, it applies `change` (with no `watched`, it
// just runs). Bounded: a command still running after 120 s is killed.
Outcome RunChanging(const std::vector<std::string>& args, const std::string& watched = {},
                    Change change = Change::kTruncateToZero,
                    std::chrono::milliseconds settle = std::chrono::milliseconds(15)) {
  TempDir io;
  const std::string out_path = (io.path / "out").string(), err_path = (io.path / "err").string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> argv_text{CKPTGUARD_CLI};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, CKPTGUARD_CLI, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  BOOST_REQUIRE(rc == 0);
  Outcome o;
  const auto start = Clock::now();
  std::string seen_key;
  Clock::time_point seen_at;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (Clock::now() - start > std::chrono::seconds(120)) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      BOOST_ERROR("command did not finish in 120 s");
      break;
    }
    if (!watched.empty() && !o.changed) {
      std::string key;
      if (Holds(pid, watched, key)) {
        if (key != seen_key) {
          seen_key = key;
          seen_at = Clock::now();
        } else if (Clock::now() - seen_at >= settle) {
          ApplyChange(watched, change);
          o.changed = true;
        }
      } else {
        seen_key.clear();
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  o.exited = WIFEXITED(status);
  o.exit_code = o.exited ? WEXITSTATUS(status) : -1;
  o.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  o.out = testing::ReadFile(out_path);
  o.err = testing::ReadFile(err_path);
  return o;
}

bool SaysChanged(const Outcome& o) {
  return o.out.find(kChanged) != std::string::npos || o.err.find(kChanged) != std::string::npos;
}

std::string Describe(const Outcome& o) {
  return "exited " + std::to_string(o.exited) + " code " + std::to_string(o.exit_code) + " signal " +
         std::to_string(o.signal) + " changed " + std::to_string(o.changed) + "\nstdout: " + o.out.substr(0, 2000) +
         "\nstderr: " + o.err.substr(0, 2000);
}

// ChangeDuringRead is the deterministic case: it makes a file with `make`
// (size from 64 MiB, growing 4x up to 1 GiB), runs `args` while `change`
// hits it, and retries with a larger file until the command was seen to
// report the change. Every run must end by exit, printing the right answer
// (`correct`) or the change. `after` checks each run further.
void ChangeDuringRead(const std::string& path, const std::function<void(const std::string&, uint64_t)>& make,
                      const std::vector<std::string>& args, Change change,
                      const std::function<bool(const Outcome&)>& correct,
                      const std::function<void(const Outcome&)>& after = {}, bool change_fails = true,
                      std::chrono::milliseconds settle = std::chrono::milliseconds(15)) {
  bool observed = false;
  for (uint64_t len = uint64_t{64} << 20; len <= (uint64_t{1} << 30) && !observed; len *= 4) {
    make(path, len);
    const Outcome o = RunChanging(args, path, change, settle);
    BOOST_TEST_REQUIRE(o.exited, Describe(o));  // never "Bus error"
    BOOST_TEST(o.err.find("AddressSanitizer") == std::string::npos, Describe(o));
    if (SaysChanged(o)) {
      observed = true;
      if (change_fails) BOOST_TEST(o.exit_code != 0, Describe(o));
    } else {
      BOOST_TEST(correct(o), "neither the right answer nor the change: " << Describe(o));
    }
    if (after) after(o);
  }
  BOOST_TEST(observed, "the change was never seen mid-read (up to 1 GiB): " << args.front());
}

bool ExitOk(const Outcome& o) { return o.exit_code == 0; }

// --- the deterministic cases, one or more per command ---------------------

BOOST_AUTO_TEST_CASE(verify_truncated_while_reading) {
  TempDir dir;
  const std::string path = (dir.path / "big.safetensors").string();
  ChangeDuringRead(path, BigSafetensors, {"verify", path}, Change::kTruncateToZero, ExitOk, [](const Outcome& o) {
    if (SaysChanged(o)) BOOST_TEST(o.exit_code == 2, Describe(o));
  });
}

BOOST_AUTO_TEST_CASE(verify_rewritten_in_place_while_reading) {
  TempDir dir;
  const std::string path = (dir.path / "big.safetensors").string();
  ChangeDuringRead(path, BigSafetensors, {"verify", path}, Change::kRewriteInPlace, ExitOk);
}

BOOST_AUTO_TEST_CASE(latest_skips_the_candidate_that_changes) {
  TempDir dir;
  fs::create_directories(dir.path / "ckpts");
  const std::string good = (dir.path / "ckpts" / "good.safetensors").string();
  fs::copy_file(CorpusDir() / "benign" / "mlp.safetensors", good);
  fs::last_write_time(good, fs::file_time_type::clock::now() - std::chrono::hours(1));
  const std::string big = (dir.path / "ckpts" / "newest.safetensors").string();
  ChangeDuringRead(
      big, BigSafetensors, {"latest", (dir.path / "ckpts").string()}, Change::kTruncateToHalf,
      // Verified before the change (chosen), or changed before its
      // verification began (then it is a torn file: skipped as broken).
      [&](const Outcome& o) {
        return o.exit_code == 0 && (o.out == big + "\n" ||
                                    (o.err.find("skipped " + big) != std::string::npos && o.out == good + "\n"));
      },
      [&](const Outcome& o) {
        if (!SaysChanged(o)) return;
        // The changed file is skipped with the reason; the other one is chosen.
        BOOST_TEST(o.exit_code == 0, Describe(o));
        BOOST_TEST(o.err.find("skipped " + big) != std::string::npos, Describe(o));
        BOOST_TEST(o.out == good + "\n", Describe(o));
      },
      /*change_fails=*/false,
      // Past the quick look and the ranking load, which map the file briefly.
      std::chrono::milliseconds(60));
}

BOOST_AUTO_TEST_CASE(inspect_truncated_while_hashing) {
  TempDir dir;
  const std::string path = (dir.path / "big.safetensors").string();
  ChangeDuringRead(path, BigSafetensors, {"inspect", path}, Change::kTruncateToZero, ExitOk);
}

BOOST_AUTO_TEST_CASE(convert_never_writes_from_a_changed_file) {
  TempDir dir;
  const std::string path = (dir.path / "big.safetensors").string();
  const std::string out = (dir.path / "out.pt").string();
  ChangeDuringRead(path, BigSafetensors, {"convert", path, out}, Change::kTruncateToHalf, ExitOk,
                   [&](const Outcome& o) {
                     if (SaysChanged(o)) BOOST_TEST(!fs::exists(out), Describe(o));
                     fs::remove(out);
                   });
}

BOOST_AUTO_TEST_CASE(sign_refuses_a_file_that_changed_while_hashed) {
  TempDir dir;
  const std::string key = (dir.path / "key.pem").string();
  const auto keygen = testing::Run(ShellQuote(CKPTGUARD_CLI) + " keygen --out " + ShellQuote(key) + " >/dev/null 2>&1");
  BOOST_REQUIRE(keygen.exit_code == 0);
  const std::string path = (dir.path / "model.bin").string();
  const std::string sig = path + ".sig";
  ChangeDuringRead(path, BigSafetensors, {"sign", path, "--key", key}, Change::kRewriteInPlace, ExitOk,
                   [&](const Outcome& o) {
                     if (SaysChanged(o)) BOOST_TEST(!fs::exists(sig), "a bundle was written: " << Describe(o));
                     fs::remove(sig);
                   });
}

BOOST_AUTO_TEST_CASE(info_and_disasm_truncated_while_checking_crcs) {
  TempDir dir;
  const std::string path = (dir.path / "big.npz").string();
  ChangeDuringRead(path, BigNpz, {"info", path}, Change::kTruncateToZero, ExitOk);
  ChangeDuringRead(path, BigNpz, {"disasm", path}, Change::kTruncateToHalf, ExitOk);
}

BOOST_AUTO_TEST_CASE(check_truncated_while_loading) {
  TempDir dir;
  const std::string schema = dir.Write("schema.json", "{}");
  const std::string path = (dir.path / "big.pkl").string();
  ChangeDuringRead(path, BigPickle, {"check", path, "--expect", schema}, Change::kTruncateToZero, ExitOk);
}

BOOST_AUTO_TEST_CASE(scan_of_a_folder_still_reports_the_other_files) {
  TempDir dir;
  fs::create_directories(dir.path / "models");
  fs::copy_file(CorpusDir() / "benign" / "mlp.params", dir.path / "models" / "a_mlp.params");
  fs::copy_file(CorpusDir() / "malicious" / "os_system_p2.pkl", dir.path / "models" / "b_evil.pkl");
  const std::string path = (dir.path / "models" / "c_big.pkl").string();
  ChangeDuringRead(
      path, BigPickle, {"scan", "--format", "json", (dir.path / "models").string()}, Change::kTruncateToZero,
      [](const Outcome& o) { return o.exit_code == 1 && o.out.find("\"dangerous\"") != std::string::npos; },
      [&](const Outcome& o) {
        const json doc = json::parse(o.out, nullptr, false);
        BOOST_REQUIRE_MESSAGE(doc.is_object(), "no report: " << Describe(o));
        std::map<std::string, json> files;
        for (const json& f : doc.at("files")) files[fs::path(f.at("path").get<std::string>()).filename()] = f;
        BOOST_TEST(files.at("a_mlp.params").at("verdict") == "safe");
        BOOST_TEST(files.at("b_evil.pkl").at("verdict") == "dangerous");
        BOOST_REQUIRE(files.contains("c_big.pkl"));
        if (SaysChanged(o)) {
          BOOST_TEST(files.at("c_big.pkl").at("verdict") == "error", Describe(o));
          BOOST_TEST(o.exit_code == 2, Describe(o));
        }
      });
}

// --- races as they come: whatever the timing, exit and a sane answer -------

BOOST_AUTO_TEST_CASE(truncation_at_any_moment_never_kills_a_command) {
  TempDir dir;
  const std::string path = (dir.path / "big.safetensors").string();
  int changed = 0;
  for (int delay_ms : {0, 20, 60, 120, 250}) {
    for (const char* command : {"verify", "inspect", "scan", "info"}) {
      BigSafetensors(path, uint64_t{64} << 20);
      std::thread truncate([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        ::truncate(path.c_str(), 1000);
      });
      const Outcome o = RunChanging({command, path});
      truncate.join();
      BOOST_TEST_REQUIRE(o.exited, command << " after " << delay_ms << " ms: " << Describe(o));
      changed += SaysChanged(o) ? 1 : 0;
    }
  }
  BOOST_TEST_MESSAGE(changed << " of 20 runs saw the change mid-read");
}

// --- not regular files ---------------------------------------------------

BOOST_AUTO_TEST_CASE(fifos_devices_and_sockets_are_refused_at_once) {
  TempDir dir;
  const std::string fifo = (dir.path / "fifo.pt").string();
  BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string sock = (dir.path / "sock.pt").string();
  const int sfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  BOOST_REQUIRE(::bind(sfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  const std::string schema = dir.Write("schema.json", "{}");
  const std::string model = (CorpusDir() / "benign" / "mlp.params").string();
  const std::string key = (dir.path / "key.pem").string();
  BOOST_REQUIRE(testing::Run(ShellQuote(CKPTGUARD_CLI) + " keygen --out " + ShellQuote(key) + " >/dev/null 2>&1")
                    .exit_code == 0);
  for (const std::string& special : {fifo, std::string("/dev/zero"), sock}) {
    const std::vector<std::vector<std::string>> commands = {
        {"scan", special},
        {"inspect", special},
        {"verify", special},
        {"info", special},
        {"disasm", special},
        {"convert", special, (dir.path / "out.safetensors").string()},
        {"check", special, "--expect", schema},
        {"check", model, "--expect", special},
        {"sign", special, "--key", key, "--signature", (dir.path / "x.sig").string()},
        {"sign", model, "--key", special, "--signature", (dir.path / "x.sig").string()},
        {"scan", "--rules", special, model},
        {"inspect", "--rules", special, model},
    };
    for (const auto& args : commands) {
      const auto start = Clock::now();
      const Outcome o = RunChanging(args);  // bounded: killed after 120 s
      const auto took = Clock::now() - start;
      std::string line;
      for (const std::string& a : args) line += a + " ";
      BOOST_TEST(o.exited, line << Describe(o));
      BOOST_TEST(o.exit_code != 0, line << Describe(o));
      BOOST_TEST(took < std::chrono::seconds(30), line << "took too long");
      BOOST_TEST((o.err + o.out).find("not a regular file") != std::string::npos, line << Describe(o));
    }
  }
  // A folder scan never opens them: each is a finding (CKG-W007) that makes
  // the scan incomplete (exit 2), and the rest is still reported.
  fs::copy_file(model, dir.path / "mlp.params");
  const Outcome folder = RunChanging({"scan", dir.path.string()});
  BOOST_TEST(folder.exited);
  BOOST_TEST(folder.exit_code == 2, Describe(folder));
  BOOST_TEST(folder.out.find(fifo + " (special): error\n  [suspicious] CKG-W007") != std::string::npos, Describe(folder));
  BOOST_TEST(folder.out.find(sock + " (special): error\n  [suspicious] CKG-W007") != std::string::npos, Describe(folder));
  BOOST_TEST(folder.out.find("mlp.params") != std::string::npos, Describe(folder));
  ::close(sfd);
}

}  // namespace
}  // namespace ckptguard

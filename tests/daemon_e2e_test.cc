// End-to-end tests of the registry as users run it: the real ckptguardd
// process on a free loopback port with a temp data folder, driven by the real
// `ckptguard registry` client processes, concurrently; then kill -9 at
// arbitrary moments (crash consistency) and SIGTERM mid-upload (drain).
#define BOOST_TEST_MODULE daemon_e2e_test
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ckptguard/daemon/catalog.h"
#include "daemon_process.h"
#include "postgres_server.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using ckptguard::testing::BlobDigests;
using ckptguard::testing::ConnectFrom;
using ckptguard::testing::CorpusDir;
using ckptguard::testing::LastLine;
using ckptguard::testing::MakeToken;
using ckptguard::testing::ReadUntilClosed;
using ckptguard::testing::SendBytes;
using ckptguard::testing::ReadFile;
using ckptguard::testing::Run;
using ckptguard::testing::ShellQuote;
using ckptguard::testing::TempDir;

namespace {

const std::string kCli = CKPTGUARD_CLI;
const std::string& kDaemon = ckptguard::testing::kDaemonPath;

using Daemon = ckptguard::testing::DaemonProcess;

// Env: the registry and token for a client run; pulls without --key pin the
// registry's keys in a known-registries file beside the data folder, never
// under the user's own ~/.config.
// PushRecords: the records of `registry push --json` (one document: the
// envelope and files[]), or null when the output is not that document.
json PushRecords(const std::string& out) {
  json doc = json::parse(out, nullptr, false);
  if (!doc.is_object() || doc.value("schema_version", 0) != 1 || !doc["tool"].is_object() ||
      doc["tool"].value("command", "") != "registry push") {
    return nullptr;
  }
  return doc["files"];
}

std::string Env(const Daemon& d, const std::string& token) {
  return "CKPTGUARD_REGISTRY=" + d.Url() + " CKPTGUARD_TOKEN=" + token + " XDG_CONFIG_HOME=" +
         ShellQuote((d.dir.parent_path() / "config").string()) + " ";
}

std::vector<fs::path> Files(const char* sub) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(CorpusDir() / sub)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".json" || ext == ".jsonl" || ext == ".md") continue;
    out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The scanner's verdict for a file, from `ckptguard scan --format json`.
std::string ScanVerdict(const fs::path& file) {
  auto r = Run(ShellQuote(kCli) + " scan --format json " + ShellQuote(file.string()) + " 2>/dev/null");
  json j = json::parse(r.out, nullptr, false);
  BOOST_REQUIRE_MESSAGE(!j.is_discarded(), "scan output of " << file << ": " << r.out);
  if (j.is_object() && j.contains("files")) return j["files"][0].value("verdict", "");
  if (j.is_array()) return j[0].value("verdict", "");
  return j.value("verdict", "");
}

// CheckConsistent: no stored/revoked row without its blob; with `strict`,
// also no blob without a row (what a restart's reconciliation guarantees).
void CheckConsistent(const fs::path& data_dir, const std::string& catalog_spec, bool strict) {
  ckptguard::testing::CheckBlobsMatchRows(data_dir, catalog_spec, strict);
}

void CheckConsistent(const fs::path& data_dir, bool strict) {
  CheckConsistent(data_dir, (data_dir / "catalog.db").string(), strict);
}

size_t CountRows(const fs::path& data_dir) {
  auto catalog = ckptguard::daemon::Catalog::Open((data_dir / "catalog.db").string());
  if (!catalog) return 0;
  auto rows = (*catalog)->ListCheckpoints({"", "", "", 1000, 0});
  return rows ? rows->size() : 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(ConcurrentPushesOfTheCorporaAreCataloguedSignedAndAudited) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "e2e", "admin");
  Daemon daemon(data, work.path);
  const auto benign = Files("benign");
  const auto hostile = Files("malicious");
  BOOST_REQUIRE_GE(benign.size(), 15u);
  BOOST_REQUIRE_GE(hostile.size(), 20u);

  // Expected: a benign file is stored when the scanner calls it safe (the
  // default policy also rejects suspicious ones); every hostile file is rejected.
  std::map<std::string, bool> expect_stored;  // by file name
  for (const auto& f : benign) expect_stored[f.filename().string()] = ScanVerdict(f) == "safe";
  for (const auto& f : hostile) expect_stored[f.filename().string()] = false;

  // Four clients, each pushing every file (interleaved benign/hostile), at once.
  constexpr int kClients = 4;
  std::vector<std::string> all;
  for (size_t i = 0; i < std::max(benign.size(), hostile.size()); ++i) {
    if (i < benign.size()) all.push_back(benign[i].string());
    if (i < hostile.size()) all.push_back(hostile[i].string());
  }
  std::vector<ckptguard::testing::CommandResult> results(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::string cmd = Env(daemon, token) + ShellQuote(kCli) + " registry push --json --tag client" + std::to_string(c);
      for (const auto& f : all) cmd += " " + ShellQuote(f);
      results[c] = Run(cmd + " 2>&1");
    });
  }
  for (auto& t : clients) t.join();

  size_t pushes = 0, stored = 0;
  std::set<std::string> stored_digests;
  for (int c = 0; c < kClients; ++c) {
    BOOST_TEST_CONTEXT("client " << c) {
      BOOST_CHECK_EQUAL(results[c].exit_code, 1);  // some were rejected
      json records = PushRecords(results[c].out);
      BOOST_REQUIRE_MESSAGE(records.is_array(), results[c].out.substr(0, 2000));
      BOOST_CHECK_EQUAL(records.size(), all.size());  // an answer for every push
      for (const auto& r : records) {
        const std::string file = fs::path(r.value("path", "")).filename().string();
        BOOST_TEST_CONTEXT(file) {
          ++pushes;
          BOOST_CHECK_EQUAL(r.value("tag", ""), "client" + std::to_string(c));
          BOOST_CHECK_EQUAL(r.value("status", ""), expect_stored[file] ? "stored" : "rejected");
          if (r.value("status", "") == "stored") {
            ++stored;
            stored_digests.insert(r.value("sha256", ""));
            BOOST_CHECK(r["signature"].is_object());
            BOOST_CHECK_EQUAL(r.value("key_id", "").size(), 64u);
          } else {
            BOOST_CHECK(!r["findings"].empty());
            BOOST_CHECK(r.value("verdict", "") == "dangerous" || r.value("verdict", "") == "suspicious");
          }
        }
      }
    }
  }
  BOOST_CHECK_EQUAL(pushes, kClients * all.size());

  // The catalog has every push, the store every accepted file, nothing else.
  auto list = Run(Env(daemon, token) + ShellQuote(kCli) + " registry list --json --limit 1000");
  json rows = json::parse(list.out, nullptr, false);
  BOOST_REQUIRE(rows.is_object());
  BOOST_CHECK_EQUAL(rows.value("schema_version", 0), 1);
  BOOST_CHECK_EQUAL(rows["tool"].value("command", ""), "registry list");
  BOOST_CHECK_EQUAL(rows["checkpoints"].size(), pushes);
  BOOST_CHECK(BlobDigests(data) == stored_digests);

  // Each stored file pulls back byte for byte and its bundle verifies with
  // the registry's published key, independently of the daemon.
  const std::string keys = (work.path / "registry-keys.pem").string();
  BOOST_REQUIRE_EQUAL(Run("curl -sf " + daemon.Url() + "/v1/keys -o " + ShellQuote(keys)).exit_code, 0);
  for (const auto& f : benign) {
    if (!expect_stored[f.filename().string()]) continue;
    BOOST_TEST_CONTEXT(f.filename()) {
      const std::string out = (work.path / f.filename()).string();
      auto pull = Run(Env(daemon, token) + ShellQuote(kCli) + " registry pull " + f.filename().string() +
                      ":client0 --key " + ShellQuote(keys) + " --out " + ShellQuote(out) + " 2>&1");
      BOOST_CHECK_MESSAGE(pull.exit_code == 0, pull.out);
      BOOST_CHECK(ReadFile(out) == ReadFile(f));
      auto check = Run(ShellQuote(kCli) + " verify-signature " + ShellQuote(out) + " --signature " +
                       ShellQuote(out + ".sig") + " --key " + ShellQuote(keys) + " 2>&1");
      BOOST_CHECK_MESSAGE(check.exit_code == 0, check.out);
      auto verify = Run(Env(daemon, token) + ShellQuote(kCli) + " registry verify " + ShellQuote(out) + " 2>&1");
      BOOST_CHECK_MESSAGE(verify.exit_code == 0, verify.out);
    }
  }

  // The audit log has one push row per push, with the outcome.
  auto audit = Run(ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string()) + " audit");
  BOOST_REQUIRE_EQUAL(audit.exit_code, 0);
  size_t audit_stored = 0, audit_rejected = 0;
  std::istringstream lines(audit.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\tpush\t") == std::string::npos) continue;
    BOOST_CHECK(line.find("\te2e\t") != std::string::npos);
    if (line.find("\tstored\t") != std::string::npos) ++audit_stored;
    if (line.find("\trejected\t") != std::string::npos) ++audit_rejected;
  }
  BOOST_CHECK_EQUAL(audit_stored, stored);
  BOOST_CHECK_EQUAL(audit_stored + audit_rejected, pushes);

  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  CheckConsistent(data, /*strict=*/true);
}

BOOST_AUTO_TEST_CASE(KillNineAtAnyMomentLeavesNoRowWithoutBlobNorBlobWithoutRow) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "crash", "write");
  const auto benign = Files("benign");
  // Several rounds, killed after different delays, while 3 clients push.
  size_t rows_before = 0;
  for (int round = 0; round < 4; ++round) {
    BOOST_TEST_CONTEXT("round " << round) {
      auto daemon = std::make_unique<Daemon>(data, work.path);
      CheckConsistent(data, /*strict=*/true);  // the restart reconciled the last crash
      std::vector<std::thread> clients;
      for (int c = 0; c < 3; ++c) {
        clients.emplace_back([&, c] {
          std::string cmd = Env(*daemon, token) + ShellQuote(kCli) + " registry push --tag r" + std::to_string(round) +
                            "c" + std::to_string(c);
          for (int rep = 0; rep < 3; ++rep) {
            for (const auto& f : benign) cmd += " " + ShellQuote(f.string());
          }
          Run(cmd + " >/dev/null 2>&1");
        });
      }
      // Kill once a few more pushes landed (a different number each round).
      const size_t wanted = rows_before + 1 + 6 * static_cast<size_t>(round);
      for (int i = 0; i < 600 && CountRows(data) < wanted; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      daemon->Stop(SIGKILL);
      for (auto& t : clients) t.join();
      CheckConsistent(data, /*strict=*/false);  // never a row without its blob, even before recovery
      // The kill came while pushes were landing (else this round tested nothing).
      auto catalog = ckptguard::daemon::Catalog::Open((data / "catalog.db").string());
      BOOST_REQUIRE(catalog.has_value());
      auto rows = (*catalog)->ListCheckpoints({"", "", "", 1000, 0});
      BOOST_REQUIRE(rows.has_value());
      BOOST_CHECK_GT(rows->size(), rows_before);
      BOOST_CHECK_LT(rows->size(), rows_before + 3 * 3 * benign.size());
      rows_before = rows->size();
    }
  }
  Daemon last(data, work.path);
  CheckConsistent(data, /*strict=*/true);
  // The registry still works after the crashes.
  auto push = Run(Env(last, token) + ShellQuote(kCli) + " registry push " +
                  ShellQuote((CorpusDir() / "benign" / "mlp.params").string()) + " --tag after 2>&1");
  BOOST_CHECK_MESSAGE(push.exit_code == 0, push.out);
}

BOOST_AUTO_TEST_CASE(SigtermLetsAnUploadInFlightFinish) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "drain", "write");
  Daemon daemon(data, work.path);
  const std::string file = ReadFile(CorpusDir() / "benign" / "mlp.params");
  const int fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(fd >= 0);
  SendBytes(fd, "POST /v1/checkpoints?name=drained&tag=t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                  "\r\nContent-Length: " + std::to_string(file.size()) + "\r\n\r\n" + file.substr(0, file.size() / 2));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(daemon.pid, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // New connections are refused while the upload finishes.
  const int probe = ConnectFrom(daemon.port);
  BOOST_CHECK(probe < 0);
  if (probe >= 0) ::close(probe);
  BOOST_CHECK(SendBytes(fd, file.substr(file.size() / 2)));
  const std::string answer = ReadUntilClosed(fd);
  ::close(fd);
  BOOST_CHECK_MESSAGE(answer.rfind("HTTP/1.1 201", 0) == 0, answer.substr(0, 500));
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  CheckConsistent(data, /*strict=*/true);
  auto catalog = ckptguard::daemon::Catalog::Open((data / "catalog.db").string());
  BOOST_REQUIRE(catalog.has_value());
  auto rows = (*catalog)->ListCheckpoints({"drained", "t", "stored", 10, 0});
  BOOST_REQUIRE(rows.has_value());
  BOOST_CHECK_EQUAL(rows->size(), 1u);
}

BOOST_AUTO_TEST_CASE(ClientErrorsAreClearAndPullWritesNothingUnverified) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "w", "write");
  Daemon daemon(data, work.path);
  const std::string mlp = (CorpusDir() / "benign" / "mlp.params").string();

  // A wrong token: refused with the server's reason, exit 2.
  auto bad = Run("CKPTGUARD_REGISTRY=" + daemon.Url() + " CKPTGUARD_TOKEN=ckg_nope " + ShellQuote(kCli) +
                 " registry push " + ShellQuote(mlp) + " 2>&1");
  BOOST_CHECK_EQUAL(bad.exit_code, 2);
  BOOST_CHECK_MESSAGE(bad.out.find("401") != std::string::npos, bad.out);
  // Nobody listening: exit 2 naming the URL.
  auto down = Run("CKPTGUARD_REGISTRY=http://127.0.0.1:1 " + ShellQuote(kCli) + " registry list 2>&1");
  BOOST_CHECK_EQUAL(down.exit_code, 2);
  BOOST_CHECK_MESSAGE(down.out.find("http://127.0.0.1:1") != std::string::npos, down.out);

  auto push = Run(Env(daemon, token) + ShellQuote(kCli) + " registry push " + ShellQuote(mlp) + " --name mlp --tag v1 2>&1");
  BOOST_REQUIRE_MESSAGE(push.exit_code == 0, push.out);
  // Pull with a pinned key that did not sign it: exit 1, nothing written.
  const std::string other_key = (work.path / "other.pem").string();
  auto keygen = Run(ShellQuote(kCli) + " keygen --out " + ShellQuote(other_key) + " 2>&1");
  BOOST_REQUIRE_MESSAGE(keygen.exit_code == 0, keygen.out);
  auto pub = Run("openssl pkey -in " + ShellQuote(other_key) + " -pubout -out " + ShellQuote(other_key + ".pub"));
  BOOST_REQUIRE_EQUAL(pub.exit_code, 0);
  const std::string out = (work.path / "pulled.pt").string();
  auto pull = Run(Env(daemon, token) + ShellQuote(kCli) + " registry pull mlp:v1 --out " + ShellQuote(out) +
                  " --key " + ShellQuote(other_key + ".pub") + " 2>&1");
  BOOST_CHECK_EQUAL(pull.exit_code, 1);
  BOOST_CHECK_MESSAGE(pull.out.find("does not verify") != std::string::npos, pull.out);
  BOOST_CHECK(!fs::exists(out));
  // A write token cannot revoke.
  auto sha = Run("sha256sum " + ShellQuote(mlp) + " | cut -d' ' -f1");
  auto revoke = Run(Env(daemon, token) + ShellQuote(kCli) + " registry revoke " + LastLine(sha.out) +
                    " --reason test 2>&1");
  BOOST_CHECK_EQUAL(revoke.exit_code, 2);
  BOOST_CHECK_MESSAGE(revoke.out.find("403") != std::string::npos, revoke.out);
  // An admin can; then verify says so and pull refuses.
  const std::string admin = MakeToken(data, "admin", "admin");
  revoke = Run(Env(daemon, admin) + ShellQuote(kCli) + " registry revoke " + LastLine(sha.out) + " --reason leaked 2>&1");
  BOOST_CHECK_MESSAGE(revoke.exit_code == 0, revoke.out);
  auto verify = Run(Env(daemon, token) + ShellQuote(kCli) + " registry verify " + ShellQuote(mlp) + " 2>&1");
  BOOST_CHECK_EQUAL(verify.exit_code, 1);
  BOOST_CHECK_MESSAGE(verify.out.find("leaked") != std::string::npos, verify.out);
  // The same answer as one JSON document, with the contract's envelope.
  auto verify_json = Run(Env(daemon, token) + ShellQuote(kCli) + " registry verify --json " + ShellQuote(mlp) + " " +
                         ShellQuote(mlp) + " 2>/dev/null");
  BOOST_CHECK_EQUAL(verify_json.exit_code, 1);
  const json verified = json::parse(verify_json.out, nullptr, false);
  BOOST_REQUIRE_MESSAGE(verified.is_object(), verify_json.out);
  BOOST_CHECK_EQUAL(verified.value("schema_version", 0), 1);
  BOOST_CHECK_EQUAL(verified["tool"].value("command", ""), "registry verify");
  BOOST_REQUIRE_EQUAL(verified["files"].size(), 2u);
  for (const json& f : verified["files"]) {
    BOOST_CHECK_EQUAL(f.value("path", ""), mlp);
    BOOST_CHECK(!f.value("verified", true));
    BOOST_CHECK_MESSAGE(f.dump().find("leaked") != std::string::npos, f.dump());
  }
  pull = Run(Env(daemon, token) + ShellQuote(kCli) + " registry pull " + LastLine(sha.out) + " --out " +
             ShellQuote(out) + " 2>&1");
  BOOST_CHECK_EQUAL(pull.exit_code, 1);
  BOOST_CHECK(!fs::exists(out));
}

// Issue 15's data loss, as an operator meets it: clients push while
// `ckptguardd token list` and `audit` run in a loop on the same folder.
// Every push is answered by the scanner's verdict (none wrongly rejected,
// no 500), every stored row keeps its blob, and a second server refuses
// to start on the folder.
BOOST_AUTO_TEST_CASE(AdminCommandsBesideARunningServerLoseNothing) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "stress", "write");
  Daemon daemon(data, work.path);
  const std::string daemon_cmd = ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string());

  // A second server on the same folder refuses, naming the first.
  auto second = Run(daemon_cmd + " --listen 127.0.0.1:0 2>&1");
  BOOST_CHECK_EQUAL(second.exit_code, 2);
  BOOST_CHECK_MESSAGE(second.out.find("another ckptguardd serves this data folder (pid " +
                                      std::to_string(daemon.pid) + ")") != std::string::npos,
                      second.out);

  const auto benign = Files("benign");
  std::map<std::string, std::string> expect;  // file name -> status
  for (const auto& f : benign) expect[f.filename().string()] = ScanVerdict(f) == "safe" ? "stored" : "rejected";
  std::atomic<bool> pushing{true};
  std::atomic<int> admin_runs{0}, admin_failures{0};
  std::thread admin([&] {
    while (pushing) {
      for (const char* sub : {" token list", " audit --after 0", " key list"}) {
        auto r = Run(daemon_cmd + sub + " >/dev/null 2>&1");
        ++admin_runs;
        if (r.exit_code != 0) ++admin_failures;
      }
    }
  });
  constexpr int kClients = 3;
  std::vector<ckptguard::testing::CommandResult> results(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::string cmd = Env(daemon, token) + ShellQuote(kCli) + " registry push --json --tag s" + std::to_string(c);
      for (int rep = 0; rep < 2; ++rep) {
        for (const auto& f : benign) cmd += " " + ShellQuote(f.string());
      }
      results[c] = Run(cmd + " 2>&1");
    });
  }
  for (auto& t : clients) t.join();
  pushing = false;
  admin.join();
  BOOST_CHECK_GT(admin_runs.load(), 0);
  BOOST_CHECK_EQUAL(admin_failures.load(), 0);
  for (int c = 0; c < kClients; ++c) {
    json records = PushRecords(results[c].out);
    BOOST_REQUIRE_MESSAGE(records.is_array(), results[c].out.substr(0, 2000));
    BOOST_CHECK_EQUAL(records.size(), 2 * benign.size());
    for (const auto& r : records) {
      const std::string file = fs::path(r.value("path", "")).filename().string();
      BOOST_CHECK_MESSAGE(r.value("status", "") == expect[file], file << ": " << r.dump().substr(0, 500));
    }
  }
  CheckConsistent(data, /*strict=*/false);  // while serving: every row has its blob
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  CheckConsistent(data, /*strict=*/true);
}

// `ckptguardd key revoke` from the command line reaches the running server:
// its next signature uses the new active key, never the revoked one.
BOOST_AUTO_TEST_CASE(KeyRevokedFromTheCommandLineStopsSigningAtOnce) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "k", "write");
  Daemon daemon(data, work.path);
  const std::string daemon_cmd = ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string());
  auto push = [&](const std::string& file, const std::string& tag) {
    auto r = Run(Env(daemon, token) + ShellQuote(kCli) + " registry push --json --tag " + tag + " " +
                 ShellQuote((CorpusDir() / "benign" / file).string()) + " 2>&1");
    json j = PushRecords(r.out);
    BOOST_REQUIRE_MESSAGE(j.is_array() && j.size() == 1, r.out);
    BOOST_REQUIRE_EQUAL(j[0].value("status", ""), "stored");
    return j[0].value("key_id", "");
  };
  const std::string k1 = push("mlp.params", "a");
  auto revoke = Run(daemon_cmd + " key revoke " + k1 + " --reason leaked 2>&1");
  BOOST_REQUIRE_MESSAGE(revoke.exit_code == 0, revoke.out);
  const std::string k2 = push("mlp_input.pt", "b");
  BOOST_CHECK_NE(k2, k1);
  auto keys = Run(daemon_cmd + " key list 2>&1");
  BOOST_CHECK_MESSAGE(keys.out.find(k1 + "\t") != std::string::npos && keys.out.find("revoked") != std::string::npos,
                      keys.out);
  BOOST_CHECK_MESSAGE(keys.out.find(k2 + "\tP-256\tactive") != std::string::npos, keys.out);
}

// What clients sent reaches the audit log; printing it must not let a
// newline forge an entry, a tab forge a column, or an escape drive the
// operator's terminal.
BOOST_AUTO_TEST_CASE(AuditOutputEscapesControlCharacters) {
  TempDir work;
  const fs::path data = work.path / "registry";
  MakeToken(data, "t", "write");
  {
    auto catalog = ckptguard::daemon::Catalog::Open((data / "catalog.db").string());
    BOOST_REQUIRE(catalog.has_value());
    BOOST_REQUIRE((*catalog)
                      ->Audit({0, 0, "anonymous", "push", "evil\n9999\t0\tadmin\tkey-create\tforged\tok\tx",
                               "denied", "path /v1/\x1b]0;owned\x07\x1b[2J and a \\ backslash"})
                      .has_value());
  }
  auto audit = Run(ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string()) + " audit");
  BOOST_REQUIRE_EQUAL(audit.exit_code, 0);
  size_t lines = 0;
  for (const char c : audit.out) lines += c == '\n' ? 1 : 0;
  BOOST_CHECK_EQUAL(lines, 3u);  // the key and token creations and the hostile row, one line each
  BOOST_CHECK(audit.out.find('\x1b') == std::string::npos);
  BOOST_CHECK(audit.out.find('\x07') == std::string::npos);
  BOOST_CHECK_MESSAGE(audit.out.find("evil\\x0a9999\\t0\\tadmin") != std::string::npos, audit.out);
  BOOST_CHECK_MESSAGE(audit.out.find("\\x1b]0;owned\\x07\\x1b[2J and a \\\\ backslash") != std::string::npos, audit.out);
  // Each line still has exactly seven tab-separated fields.
  std::istringstream in(audit.out);
  for (std::string line; std::getline(in, line);) {
    BOOST_CHECK_EQUAL(std::count(line.begin(), line.end(), '\t'), 6);
  }
}

// Issue 15 from the command line: a write token limited to a prefix (shown by
// `token list`) is refused outside it; a taken tag is a 409 naming its
// digest; `push --force` moves it on a server started with --allow-retag,
// and the audit log says so.
BOOST_AUTO_TEST_CASE(PrefixTokensAndRetagFromTheCommandLine) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string daemon_cmd = ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string());
  auto created = Run(daemon_cmd + " token create team --prefix team-a/ 2>&1");
  BOOST_REQUIRE_MESSAGE(created.exit_code == 0, created.out);
  const std::string token = LastLine(created.out);
  auto list = Run(daemon_cmd + " token list 2>&1");
  BOOST_CHECK_MESSAGE(list.out.find("team\twrite\tactive\t") != std::string::npos, list.out);
  BOOST_CHECK_MESSAGE(list.out.find("\tteam-a/\n") != std::string::npos, list.out);
  Daemon daemon(data, work.path, {"--allow-retag"});
  const std::string mlp = (CorpusDir() / "benign" / "mlp.params").string();
  const std::string input = (CorpusDir() / "benign" / "mlp_input.pt").string();
  const std::string push = Env(daemon, token) + ShellQuote(kCli) + " registry push ";
  auto outside = Run(push + ShellQuote(mlp) + " --name team-b/m --tag v1 2>&1");
  BOOST_CHECK_EQUAL(outside.exit_code, 2);
  BOOST_CHECK_MESSAGE(outside.out.find("403") != std::string::npos && outside.out.find("prefix rule") != std::string::npos,
                      outside.out);
  auto first = Run(push + ShellQuote(mlp) + " --name team-a/m --tag v1 2>&1");
  BOOST_REQUIRE_MESSAGE(first.exit_code == 0, first.out);
  const std::string mlp_sha = LastLine(Run("sha256sum " + ShellQuote(mlp) + " | cut -d' ' -f1").out);
  auto again = Run(push + ShellQuote(mlp) + " --name team-a/m --tag v1 2>&1");
  BOOST_CHECK_EQUAL(again.exit_code, 0);
  BOOST_CHECK_MESSAGE(again.out.find("already stored") != std::string::npos, again.out);
  auto taken = Run(push + ShellQuote(input) + " --name team-a/m --tag v1 2>&1");
  BOOST_CHECK_EQUAL(taken.exit_code, 2);
  BOOST_CHECK_MESSAGE(taken.out.find("409") != std::string::npos && taken.out.find(mlp_sha) != std::string::npos,
                      taken.out);
  auto forced = Run(push + ShellQuote(input) + " --name team-a/m --tag v1 --force 2>&1");
  BOOST_CHECK_EQUAL(forced.exit_code, 0);
  BOOST_CHECK_MESSAGE(forced.out.find("moved tag team-a/m:v1 from sha256 " + mlp_sha) != std::string::npos, forced.out);
  auto audit = Run(daemon_cmd + " audit 2>&1");
  BOOST_CHECK_MESSAGE(audit.out.find("\tretag\tteam-a/m:v1\t") != std::string::npos, audit.out);
}

// The server with --catalog on PostgreSQL (a throwaway server, as root through
// `nobody`): pushes land in that database and nothing in DATA/catalog.db;
// the admin commands given the same --catalog see them; a revocation made
// there is what the server answers next.
BOOST_AUTO_TEST_CASE(CatalogOnPostgresql) {
  auto& server = ckptguard::testing::PostgresServer::Shared();
  BOOST_REQUIRE_MESSAGE(server.ok(), server.error());
  std::string err;
  const std::string uri = server.CreateDatabase(&err);
  BOOST_REQUIRE_MESSAGE(!uri.empty(), err);
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string admin_cmd = ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string()) + " --catalog " +
                                ShellQuote(uri) + " ";
  auto created = Run(admin_cmd + "token create ci --scope admin 2>&1");
  BOOST_REQUIRE_MESSAGE(created.exit_code == 0, created.out);
  const std::string token = LastLine(created.out);
  Daemon daemon(data, work.path, {"--catalog", uri});
  const auto benign = Files("benign");
  const auto hostile = Files("malicious");
  BOOST_REQUIRE(!benign.empty() && !hostile.empty());
  fs::path safe_file;
  for (const auto& f : benign) {
    if (ScanVerdict(f) == "safe") {
      safe_file = f;
      break;
    }
  }
  BOOST_REQUIRE(!safe_file.empty());
  auto push = Run(Env(daemon, token) + ShellQuote(kCli) + " registry push --tag v1 " + ShellQuote(safe_file.string()) +
                  " " + ShellQuote(hostile[0].string()) + " 2>&1");
  BOOST_CHECK_EQUAL(push.exit_code, 1);  // the hostile one is rejected
  BOOST_TEST(!fs::exists(data / "catalog.db"));
  auto catalog = ckptguard::daemon::Catalog::Open(uri);
  BOOST_REQUIRE_MESSAGE(catalog.has_value(), (catalog ? std::string() : catalog.error().ToString()));
  auto rows = (*catalog)->ListCheckpoints({});
  BOOST_REQUIRE(rows.has_value());
  BOOST_REQUIRE_EQUAL(rows->size(), 2u);
  std::set<std::string> statuses;
  for (const auto& r : *rows) statuses.insert(r.status);
  BOOST_TEST((statuses == std::set<std::string>{"rejected", "stored"}));
  CheckConsistent(data, uri, true);
  auto audit = Run(admin_cmd + "audit 2>&1");
  BOOST_CHECK_MESSAGE(audit.exit_code == 0 && audit.out.find("push") != std::string::npos, audit.out);
  // Revoked through the catalog (as another server would): the server answers so.
  std::string stored_sha;
  for (const auto& r : *rows) {
    if (r.status == "stored") stored_sha = r.sha256;
  }
  BOOST_REQUIRE(*(*catalog)->RevokeCheckpoint(stored_sha, "leaked", "other-server"));
  auto verify = Run(Env(daemon, token) + ShellQuote(kCli) + " registry verify " + ShellQuote(safe_file.string()) + " 2>&1");
  BOOST_CHECK_EQUAL(verify.exit_code, 1);
  BOOST_CHECK_MESSAGE(verify.out.find("leaked") != std::string::npos, verify.out);
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
}

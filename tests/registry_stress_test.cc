// Issue 15's "done when": several clients push while admin commands run
// beside the server (token list, audit, key rotate, key revoke from the
// command line), content is revoked while pushes of it are in flight, and
// the server is killed with -9 and restarted a few times. Afterwards: every
// push was answered (or failed to connect only at kill time), every stored
// row has its blob and every blob its row, revoked content and revoked keys
// never come back (never downloadable, never verify as good), no 500s.
// Bounded: three rounds ended by row counts, each capped in time.
// Runs on the catalog $CKPTGUARD_TEST_CATALOG names (CTest runs it for
// each): SQLite in DATA/catalog.db, or a fresh database on a throwaway
// PostgreSQL server (postgres_server.h).
#define BOOST_TEST_MODULE registry_stress_test
#include <boost/test/unit_test.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
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
using namespace ckptguard::testing;
using ckptguard::daemon::Catalog;
using ckptguard::daemon::CheckpointRecord;
using namespace std::chrono_literals;

namespace {

const std::string kCli = kCliPath;
const std::string kDaemon = kDaemonPath;

// The catalog spec the daemons of this run get ("" for DATA/catalog.db),
// set once at the start of the test.
std::string catalog_spec;

std::string CatalogOf(const fs::path& data) {
  return catalog_spec.empty() ? (data / "catalog.db").string() : catalog_spec;
}

std::vector<std::string> CatalogArgs() {
  return catalog_spec.empty() ? std::vector<std::string>{} : std::vector<std::string>{"--catalog", catalog_spec};
}

std::vector<CheckpointRecord> AllRows(const fs::path& data) {
  std::vector<CheckpointRecord> out;
  auto catalog = Catalog::Open(CatalogOf(data));
  if (!catalog) return out;
  int64_t before = 0;
  while (true) {
    auto rows = (*catalog)->ListCheckpoints({"", "", "", 1000, before});
    if (!rows || rows->empty()) break;
    out.insert(out.end(), rows->begin(), rows->end());
    before = rows->back().id;
  }
  return out;
}

// CheckConsistent: no stored/revoked row without its blob; with `strict`
// (after a restart's reconciliation) no blob without a row either.
void CheckConsistent(const fs::path& data, bool strict) { CheckBlobsMatchRows(data, CatalogOf(data), strict); }

std::string Admin(const fs::path& data, const std::string& args) {
  return ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string()) +
         (catalog_spec.empty() ? std::string() : " --catalog " + ShellQuote(catalog_spec)) + " " + args;
}

std::string Client(const DaemonProcess& d, const std::string& token, const std::string& args) {
  return "CKPTGUARD_REGISTRY=" + d.Url() + " CKPTGUARD_TOKEN=" + token + " " + ShellQuote(kCli) + " registry " + args;
}

// One `registry push` run of a client: its output and whether the server
// was killed while it ran.
struct PushRun {
  int exit_code = 0;
  std::string out;
  std::string err;
  bool spans_kill = false;
};

}  // namespace

BOOST_AUTO_TEST_CASE(PushesAdminCommandsRevocationsAndKillNine) {
  TempDir work;
  const fs::path data = work.path / "registry";
  std::string err;
  catalog_spec = TestCatalogFor(data.string(), &err);
  BOOST_REQUIRE_MESSAGE(err.empty(), err);
  const std::string writer = MakeToken(data, "writer", "write", catalog_spec);
  const std::string admin = MakeToken(data, "admin", "admin", catalog_spec);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(CorpusDir() / "benign")) {
    const std::string ext = e.path().extension().string();
    if (ext != ".json" && ext != ".jsonl" && ext != ".md") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  BOOST_REQUIRE_GE(files.size(), 10u);

  std::mutex mutex;  // guards the three sets and runs below
  std::set<std::string> revoked_shas;
  std::set<std::string> revoked_keys;
  std::vector<PushRun> runs;
  std::vector<fs::path> logs;
  int admin_failures = 0, admin_runs = 0;
  std::string admin_errors;

  constexpr int kRounds = 3;
  constexpr int kClients = 3;
  constexpr size_t kFilesPerRun = 3;
  for (int round = 0; round < kRounds; ++round) {
    BOOST_TEST_CONTEXT("round " << round) {
      auto daemon = std::make_unique<DaemonProcess>(data, work.path, CatalogArgs());
      logs.push_back(daemon->log);
      CheckConsistent(data, /*strict=*/true);  // the restart reconciled the last crash
      const size_t rows_at_start = AllRows(data).size();
      std::atomic<bool> killing{false}, stop{false};

      // Clients: each run pushes three files (the next ones in turn) under its own tag.
      std::vector<std::thread> threads;
      for (int c = 0; c < kClients; ++c) {
        threads.emplace_back([&, c] {
          for (int n = 0; !killing; ++n) {
            const std::string err_file = (work.path / ("err-" + std::to_string(round) + "-" + std::to_string(c))).string();
            std::string cmd = Client(*daemon, writer, "push --json --timeout 60 --tag r" + std::to_string(round) + "c" +
                                                          std::to_string(c) + "n" + std::to_string(n));
            for (size_t k = 0; k < kFilesPerRun; ++k) {
              cmd += " " + ShellQuote(files[(static_cast<size_t>(n) * kFilesPerRun + static_cast<size_t>(c) + k) % files.size()].string());
            }
            PushRun run;
            auto r = Run(cmd + " 2>" + ShellQuote(err_file));
            run.exit_code = r.exit_code;
            run.out = r.out;
            run.err = ReadFile(err_file);
            run.spans_kill = killing.load();
            std::lock_guard lock(mutex);
            runs.push_back(std::move(run));
          }
        });
      }
      // Admin commands from the command line beside the server: read-only
      // ones, and key rotation with revocation of the key it retired.
      threads.emplace_back([&] {
        while (!stop) {
          for (const char* sub : {"token list", "audit --after 0", "key list"}) {
            auto r = Run(Admin(data, sub) + " 2>&1 >/dev/null");
            std::lock_guard lock(mutex);
            ++admin_runs;
            if (r.exit_code != 0) {
              ++admin_failures;
              admin_errors += std::string(sub) + ": " + r.out + "\n";
            }
          }
          auto keys = Run(Admin(data, "key list") + " 2>/dev/null");
          std::string active;
          std::istringstream in(keys.out);
          for (std::string line; std::getline(in, line);) {
            if (line.find("\tactive\t") != std::string::npos) active = line.substr(0, line.find('\t'));
          }
          auto rotated = Run(Admin(data, "key rotate") + " 2>&1");
          if (rotated.exit_code != 0 || active.empty()) {
            std::lock_guard lock(mutex);
            ++admin_failures;
            admin_errors += "key rotate: " + rotated.out + "\n";
            continue;
          }
          auto revoked = Run(Admin(data, "key revoke " + active + " --reason stress-round-" + std::to_string(round)) + " 2>&1");
          std::lock_guard lock(mutex);
          if (revoked.exit_code == 0) {
            revoked_keys.insert(active);
          } else {
            ++admin_failures;
            admin_errors += "key revoke: " + revoked.out + "\n";
          }
          std::this_thread::sleep_for(300ms);
        }
      });
      // A content revocation while pushes of the same bytes are in flight
      // (every client pushes every file, again and again).
      threads.emplace_back([&] {
        for (int i = 0; i < 400 && !stop; ++i) {
          std::this_thread::sleep_for(50ms);
          if (AllRows(data).size() < rows_at_start + 6) continue;
          for (const auto& row : AllRows(data)) {
            if (row.status != "stored") continue;
            {
              std::lock_guard lock(mutex);
              if (revoked_shas.contains(row.sha256)) continue;
            }
            auto r = Run(Client(*daemon, admin, "revoke " + row.sha256 + " --reason stress") + " 2>&1");
            if (r.exit_code == 0) {
              std::lock_guard lock(mutex);
              revoked_shas.insert(row.sha256);
            }
            return;
          }
        }
      });

      // Kill once enough pushes landed (more each round), or after 25 s.
      // (Each client runs `registry push` again and again, so the kill lands
      // in the middle of some pushes.)
      const size_t wanted = rows_at_start + 12 + 6 * static_cast<size_t>(round);
      for (int i = 0; i < 500 && AllRows(data).size() < wanted; ++i) std::this_thread::sleep_for(50ms);
      killing = true;
      daemon->Stop(SIGKILL);
      stop = true;
      for (auto& t : threads) t.join();
      CheckConsistent(data, /*strict=*/false);  // never a row without its blob, even before recovery
    }
  }

  // Restart; check what came back.
  DaemonProcess daemon(data, work.path, CatalogArgs());
  logs.push_back(daemon.log);
  CheckConsistent(data, /*strict=*/true);
  BOOST_CHECK_EQUAL(admin_failures, 0);
  BOOST_CHECK_MESSAGE(admin_errors.empty(), admin_errors);
  BOOST_CHECK_GT(admin_runs, 0);
  BOOST_CHECK_GE(revoked_shas.size(), 1u);
  BOOST_CHECK_GE(revoked_keys.size(), 1u);

  // Every push was answered: a run the kill did not interrupt has a record
  // per file, each stored or rejected; none anywhere saw a 500.
  size_t complete_runs = 0;
  for (const auto& run : runs) {
    BOOST_CHECK_MESSAGE(run.err.find("HTTP 500") == std::string::npos && run.out.find("\"status\": 500") == std::string::npos,
                        run.err.substr(0, 2000));
    if (run.spans_kill) continue;
    ++complete_runs;
    // `registry push --json` prints one document: its records under files[].
    json doc = json::parse(run.out, nullptr, false);
    json records = doc.is_object() && doc.contains("files") ? doc["files"] : json();
    BOOST_CHECK_MESSAGE(records.is_array() && records.size() == kFilesPerRun,
                        "exit " << run.exit_code << ": " << run.err.substr(0, 2000) << run.out.substr(0, 500));
    if (!records.is_array()) continue;
    for (const auto& r : records) {
      const std::string status = r.value("status", "");
      BOOST_CHECK_MESSAGE(status == "stored" || status == "rejected", r.dump().substr(0, 500));
    }
  }
  BOOST_CHECK_GT(complete_runs, 0u);
  for (const auto& log : logs) {
    const std::string text = ReadFile(log);
    BOOST_CHECK_MESSAGE(!std::regex_search(text, std::regex(" 5[0-9][0-9] [0-9]+B ")), log << ":\n" << text.substr(0, 3000));
  }

  // Revoked content never comes back: no stored row, not downloadable, not
  // verified, not pulled.
  const auto rows = AllRows(data);
  for (const auto& sha : revoked_shas) {
    BOOST_TEST_CONTEXT("revoked content " << sha) {
      size_t revoked_rows = 0;
      for (const auto& row : rows) {
        if (row.sha256 != sha) continue;
        BOOST_CHECK_NE(row.status, "stored");
        revoked_rows += row.status == "revoked" ? 1 : 0;
      }
      BOOST_CHECK_GE(revoked_rows, 1u);
      auto blob = Run("curl -s -o /dev/null -w '%{http_code}' " + daemon.Url() + "/v1/checkpoints/" + sha + "/blob");
      BOOST_CHECK_EQUAL(blob.out, "410");
      auto verified = Run("curl -s -X POST '" + daemon.Url() + "/v1/verify?sha256=" + sha + "'");
      json v = json::parse(verified.out, nullptr, false);
      BOOST_CHECK_MESSAGE(v.is_object() && v.value("verified", true) == false, verified.out);
      const std::string out = (work.path / ("pulled-" + sha)).string();
      auto pull = Run(Client(daemon, writer, "pull " + sha + " --out " + ShellQuote(out)) + " 2>&1");
      BOOST_CHECK_NE(pull.exit_code, 0);
      BOOST_CHECK(!fs::exists(out));
    }
  }

  // Revoked keys never come back: revoked in the catalog, their private key
  // gone, not among the trusted keys, and nothing they signed verifies.
  auto keys_json = json::parse(Run("curl -s '" + daemon.Url() + "/v1/keys?format=json'").out, nullptr, false);
  BOOST_REQUIRE(keys_json.is_object());
  std::set<std::string> active;
  for (const auto& k : keys_json["keys"]) {
    const std::string id = k.value("key_id", "");
    if (k.value("state", "") == "active") active.insert(id);
    if (revoked_keys.contains(id)) BOOST_CHECK_EQUAL(k.value("state", ""), "revoked");
  }
  BOOST_CHECK_EQUAL(active.size(), 1u);
  const std::string trusted = Run("curl -s " + daemon.Url() + "/v1/keys").out;
  for (const auto& k : keys_json["keys"]) {
    if (!revoked_keys.contains(k.value("key_id", ""))) continue;
    BOOST_CHECK(!fs::exists(data / "keys" / (k.value("key_id", "") + ".pem")));
    const std::string pem = k.value("public_pem", "");
    BOOST_CHECK(!pem.empty() && trusted.find(pem.substr(27, 60)) == std::string::npos);
  }
  // A digest verifies by its newest row: when that row was signed by a
  // revoked key it must not verify; when it verifies, its key is not revoked.
  size_t checked = 0;
  std::set<std::string> seen;
  for (const auto& row : rows) {
    if (row.status != "stored" || !revoked_keys.contains(row.key_id) || checked >= 8 || !seen.insert(row.sha256).second) {
      continue;
    }
    ++checked;
    auto verified = Run("curl -s -X POST '" + daemon.Url() + "/v1/verify?sha256=" + row.sha256 + "'");
    json v = json::parse(verified.out, nullptr, false);
    BOOST_REQUIRE_MESSAGE(v.is_object(), verified.out);
    const std::string by = v.value("key_id", "");
    if (revoked_keys.contains(by)) {
      BOOST_CHECK_MESSAGE(v.value("verified", true) == false && v.value("key_state", "") == "revoked", verified.out);
    } else {
      BOOST_CHECK_MESSAGE(v.value("key_state", "") != "revoked", verified.out);
    }
  }

  // And the registry still works.
  auto push = Run(Client(daemon, writer, "push --tag after " + ShellQuote((CorpusDir() / "benign" / "mlp.params").string())) +
                  " 2>&1");
  BOOST_CHECK_MESSAGE(push.exit_code == 0 || push.out.find("REJECTED") != std::string::npos, push.out);
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  CheckConsistent(data, /*strict=*/true);
}

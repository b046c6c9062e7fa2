// Issue 20's "done when": two ckptguardd processes on one PostgreSQL catalog
// (a throwaway server, postgres_server.h) and one data folder. Clients push
// through both at once and pull each push through the other server; a
// checkpoint revoked and a key revoked through one are in force on the other
// at its next request; one server is killed with -9 while pushes to it are
// in flight and the other keeps serving, while admin commands (each one a
// cleanup on PostgreSQL) and a replacement server's start race its commits.
// Afterwards: nothing lost (every
// push answered by a live server is catalogued and its blob downloads
// through either), no row without its blob, and once a server starts and
// cleans up, no blob without its row and no upload left; no 500 anywhere.
#define BOOST_TEST_MODULE registry_multi_server_test
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ckptguard/daemon/catalog.h"
#include "ckptguard/sha256.h"
#include "daemon_process.h"
#include "postgres_server.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ckptguard::testing;
using namespace std::chrono_literals;

namespace {

// MakeSafetensors writes a one-tensor safetensors file of `n` random bytes
// (distinct content per seed: no two pushes share a blob unless meant to).
fs::path MakeSafetensors(const fs::path& dir, int seed, size_t n) {
  std::string header = R"({"w":{"dtype":"U8","shape":[)" + std::to_string(n) + R"(],"data_offsets":[0,)" +
                       std::to_string(n) + "]}}";
  while (header.size() % 8 != 0) header.push_back(' ');
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(rng() & 0xff));
  const fs::path path = dir / ("f" + std::to_string(seed) + ".safetensors");
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Http runs curl and returns "STATUS BODY" parts.
struct HttpAnswer {
  int status = 0;
  std::string body;
};
HttpAnswer Http(const std::string& args) {
  auto r = Run("curl -s -m 60 -w '\\n%{http_code}' " + args);
  HttpAnswer out;
  const size_t nl = r.out.rfind('\n');
  if (nl == std::string::npos) return out;
  out.body = r.out.substr(0, nl);
  out.status = std::atoi(r.out.c_str() + nl + 1);
  return out;
}

// Push sends `file` as NAME:TAG through `server`; status 0 when no answer came.
HttpAnswer Push(const DaemonProcess& server, const std::string& token, const fs::path& file, const std::string& name,
                const std::string& tag) {
  return Http("-X POST -H 'Authorization: Bearer " + token + "' --data-binary @" + ShellQuote(file.string()) + " '" +
              server.Url() + "/v1/checkpoints?name=" + name + "&tag=" + tag + "'");
}

// PullDigest downloads a blob through `server` and returns its SHA-256 ("" on failure).
std::string PullDigest(const DaemonProcess& server, const std::string& sha, const fs::path& out) {
  auto r = Http("-o " + ShellQuote(out.string()) + " '" + server.Url() + "/v1/checkpoints/" + sha + "/blob'");
  if (r.status != 200) return "";
  auto digest = ckptguard::Sha256FileHex(out.string());
  return digest ? *digest : "";
}

void CheckNo5xx(const fs::path& log) {
  const std::string text = ReadFile(log);
  BOOST_CHECK_MESSAGE(!std::regex_search(text, std::regex(" 5[0-9][0-9] [0-9]+B ")), log << ":\n" << text.substr(0, 3000));
}

}  // namespace

BOOST_AUTO_TEST_CASE(TwoServersOnOneCatalogAndOneBlobFolder) {
  auto& pg = PostgresServer::Shared();
  BOOST_REQUIRE_MESSAGE(pg.ok(), pg.error());
  std::string err;
  const std::string uri = pg.CreateDatabase(&err);
  BOOST_REQUIRE_MESSAGE(!uri.empty(), err);
  TempDir work;
  const fs::path data = work.path / "registry";
  const fs::path files_dir = work.path / "files";
  fs::create_directories(files_dir);
  const std::string writer = MakeToken(data, "writer", "write", uri);
  const std::string admin = MakeToken(data, "admin", "admin", uri);
  const std::vector<std::string> catalog_args = {"--catalog", uri};
  auto a = std::make_unique<DaemonProcess>(data, work.path, catalog_args);
  auto b = std::make_unique<DaemonProcess>(data, work.path, catalog_args);
  std::vector<fs::path> logs = {a->log, b->log};
  BOOST_TEST(!fs::exists(data / "lock"));
  BOOST_TEST(!fs::exists(data / "catalog.db"));

  // 1. Four clients push through both servers at once; each push is pulled
  // through the other server and must be the same bytes.
  constexpr int kClients = 4;
  constexpr int kPushesPerClient = 6;
  std::mutex mutex;
  std::vector<std::string> failures;
  std::set<std::string> stored;  // digests answered 201
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      const DaemonProcess& through = c % 2 == 0 ? *a : *b;
      const DaemonProcess& other = c % 2 == 0 ? *b : *a;
      for (int n = 0; n < kPushesPerClient; ++n) {
        const int seed = c * 100 + n;
        const fs::path file = MakeSafetensors(files_dir, seed, 64 * 1024);
        const HttpAnswer pushed = Push(through, writer, file, "multi/c" + std::to_string(c), "n" + std::to_string(n));
        json record = json::parse(pushed.body, nullptr, false);
        const std::string sha = record.is_object() ? record.value("sha256", "") : "";
        const std::string pulled = PullDigest(other, sha, work.path / ("pulled-" + std::to_string(seed)));
        std::lock_guard lock(mutex);
        if (pushed.status != 201) failures.push_back("push " + std::to_string(seed) + ": " + std::to_string(pushed.status) + " " + pushed.body);
        if (sha.empty() || pulled != sha) failures.push_back("pull of " + std::to_string(seed) + " through the other server: '" + pulled + "'");
        stored.insert(sha);
      }
    });
  }
  for (auto& t : threads) t.join();
  threads.clear();
  BOOST_CHECK_MESSAGE(failures.empty(), failures.size() << " failures, first: " << (failures.empty() ? "" : failures[0]));
  BOOST_CHECK_EQUAL(stored.size(), static_cast<size_t>(kClients * kPushesPerClient));
  CheckBlobsMatchRows(data, uri, /*strict=*/true);

  // A pull with every client check (signature, claim, pinned keys), through B
  // of what was pushed through A.
  {
    const fs::path out = work.path / "pulled.safetensors";
    auto pull = Run("CKPTGUARD_REGISTRY=" + b->Url() + " " + ShellQuote(kCliPath) + " registry pull multi/c0:n0 --out " +
                    ShellQuote(out.string()) + " --known-keys " + ShellQuote((work.path / "known").string()) + " 2>&1");
    BOOST_CHECK_MESSAGE(pull.exit_code == 0, pull.out);
    BOOST_CHECK(fs::exists(out));
  }

  // 2. A checkpoint revoked through A is revoked on B at its next request.
  const std::string revoked_sha = *stored.begin();
  auto revoke = Http("-X POST -H 'Authorization: Bearer " + admin + "' -d '{\"reason\":\"multi-server test\"}' '" +
                     a->Url() + "/v1/checkpoints/" + revoked_sha + "/revoke'");
  BOOST_CHECK_MESSAGE(revoke.status == 200, revoke.status << " " << revoke.body);
  BOOST_CHECK_EQUAL(Http("-o /dev/null '" + b->Url() + "/v1/checkpoints/" + revoked_sha + "/blob'").status, 410);
  {
    json v = json::parse(Http("-X POST '" + b->Url() + "/v1/verify?sha256=" + revoked_sha + "'").body, nullptr, false);
    BOOST_CHECK_MESSAGE(v.is_object() && v.value("verified", true) == false && v.value("status", "") == "revoked", v.dump());
  }
  // A token revoked through B is refused by A at once.
  {
    const std::string doomed = MakeToken(data, "doomed", "write", uri);
    const fs::path file = MakeSafetensors(files_dir, 9001, 1024);
    BOOST_CHECK_EQUAL(Push(*a, doomed, file, "multi/doomed", "v1").status, 201);
    auto revoked = Run(ShellQuote(kDaemonPath) + " --data-dir " + ShellQuote(data.string()) + " --catalog " +
                       ShellQuote(uri) + " token revoke doomed 2>&1");
    BOOST_CHECK_MESSAGE(revoked.exit_code == 0, revoked.out);
    BOOST_CHECK_EQUAL(Push(*a, doomed, file, "multi/doomed", "v2").status, 401);
  }
  // The active key revoked through B: A signs its next push with the key B
  // rotated to, and lists the old one as revoked.
  std::string old_key;
  {
    json keys = json::parse(Http("'" + a->Url() + "/v1/keys?format=json'").body, nullptr, false);
    BOOST_REQUIRE(keys.is_object());
    for (const auto& k : keys["keys"]) {
      if (k.value("state", "") == "active") old_key = k.value("key_id", "");
    }
    BOOST_REQUIRE(!old_key.empty());
    auto revoked = Http("-X POST -H 'Authorization: Bearer " + admin + "' -d '{\"reason\":\"rotated in test\"}' '" +
                        b->Url() + "/v1/keys/" + old_key + "/revoke'");
    BOOST_CHECK_MESSAGE(revoked.status == 200, revoked.status << " " << revoked.body);
    const fs::path file = MakeSafetensors(files_dir, 9002, 1024);
    json record = json::parse(Push(*a, writer, file, "multi/after-rotation", "v1").body, nullptr, false);
    BOOST_CHECK_MESSAGE(record.is_object() && !record.value("key_id", "").empty() && record.value("key_id", "") != old_key,
                        record.dump());
    json listed = json::parse(Http("'" + a->Url() + "/v1/keys?format=json'").body, nullptr, false);
    for (const auto& k : listed["keys"]) {
      if (k.value("key_id", "") == old_key) BOOST_CHECK_EQUAL(k.value("state", ""), "revoked");
    }
    json v = json::parse(Http("-X POST '" + a->Url() + "/v1/verify?sha256=" + *std::next(stored.begin()) + "'").body,
                         nullptr, false);
    BOOST_CHECK_MESSAGE(v.is_object() && v.value("verified", true) == false && v.value("key_state", "") == "revoked",
                        v.dump());
  }

  // 3. kill -9 of B while pushes of large files to it are in flight; pushes
  // through A go on beside it and must all be answered.
  std::atomic<bool> stop{false};
  std::atomic<int> b_pushes_started{0};
  std::vector<std::string> a_answers_failed;
  std::set<std::string> a_stored;
  for (int c = 0; c < 2; ++c) {
    threads.emplace_back([&, c] {  // to B: big files; failures once B is gone are expected
      for (int n = 0; !stop; ++n) {
        const fs::path file = MakeSafetensors(files_dir, 10000 + c * 1000 + n, 8 << 20);
        ++b_pushes_started;
        Push(*b, writer, file, "multi/to-b" + std::to_string(c), "n" + std::to_string(n));
      }
    });
  }
  threads.emplace_back([&] {  // to A, throughout
    for (int n = 0; !stop; ++n) {
      const fs::path file = MakeSafetensors(files_dir, 20000 + n, 256 * 1024);
      const HttpAnswer pushed = Push(*a, writer, file, "multi/to-a", "n" + std::to_string(n));
      json record = json::parse(pushed.body, nullptr, false);
      std::lock_guard lock(mutex);
      if (pushed.status != 201) a_answers_failed.push_back(std::to_string(pushed.status) + " " + pushed.body);
      if (record.is_object()) a_stored.insert(record.value("sha256", ""));
    }
  });
  // Cleanups beside the pushes: on PostgreSQL every admin command sweeps
  // (unreferenced blobs, servers that are gone), racing A's commits.
  std::atomic<int> cleanups{0};
  threads.emplace_back([&] {
    while (!stop) {
      auto r = Run(ShellQuote(kDaemonPath) + " --data-dir " + ShellQuote(data.string()) + " --catalog " +
                   ShellQuote(uri) + " key list 2>&1");
      std::lock_guard lock(mutex);
      if (r.exit_code != 0) a_answers_failed.push_back("cleanup: " + r.out);
      ++cleanups;
    }
  });
  // Kill while an upload to B is streaming (its upload folder holds a file).
  bool in_flight = false;
  for (int i = 0; i < 600 && !in_flight; ++i) {
    std::this_thread::sleep_for(20ms);
    if (b_pushes_started < 3) continue;
    for (const auto& e : fs::recursive_directory_iterator(data / "tmp")) in_flight |= e.is_regular_file();
  }
  BOOST_CHECK(in_flight);
  b->Stop(SIGKILL);
  std::this_thread::sleep_for(1000ms);  // A goes on alone
  // 4. A new server starts beside A, while A pushes (as a replacement for B
  // would), and cleans up what B left: its upload folder, its reservations
  // and the blobs no row references.
  auto c = std::make_unique<DaemonProcess>(data, work.path, catalog_args);
  logs.push_back(c->log);
  std::this_thread::sleep_for(1000ms);
  stop = true;
  for (auto& t : threads) t.join();
  BOOST_CHECK_MESSAGE(a_answers_failed.empty(), a_answers_failed.size() << " pushes through A failed, first: "
                                                                      << (a_answers_failed.empty() ? "" : a_answers_failed[0]));
  BOOST_CHECK_GT(a_stored.size(), 0u);
  BOOST_CHECK_GT(cleanups.load(), 0);
  CheckBlobsMatchRows(data, uri, /*strict=*/false);  // never a row without its blob, even before cleanup
  {
    auto cleanup = Run(ShellQuote(kDaemonPath) + " --data-dir " + ShellQuote(data.string()) + " --catalog " +
                       ShellQuote(uri) + " key list 2>&1");
    BOOST_CHECK_MESSAGE(cleanup.exit_code == 0, cleanup.out);
  }
  CheckBlobsMatchRows(data, uri, /*strict=*/true);
  // Nothing lost: every push answered 201 downloads through both live servers.
  size_t checked = 0;
  for (const std::string& sha : a_stored) {
    if (checked++ >= 5) break;
    BOOST_CHECK_EQUAL(PullDigest(*c, sha, work.path / "check-c"), sha);
    BOOST_CHECK_EQUAL(PullDigest(*a, sha, work.path / "check-a"), sha);
  }
  auto catalog = ckptguard::daemon::Catalog::Open(uri);
  BOOST_REQUIRE(catalog.has_value());
  auto rows = (*catalog)->ListCheckpoints({"multi/to-a", "", "", 1000, 0});
  BOOST_REQUIRE(rows.has_value());
  std::set<std::string> catalogued;
  for (const auto& r : *rows) catalogued.insert(r.sha256);
  for (const std::string& sha : a_stored) BOOST_CHECK_MESSAGE(catalogued.contains(sha), "lost: " << sha);
  BOOST_CHECK_EQUAL(PostgresServer::Count(uri, "SELECT COUNT(*) FROM servers"), 2);
  BOOST_CHECK_EQUAL(PostgresServer::Count(uri, "SELECT COUNT(*) FROM blob_reservations"), 0);

  BOOST_CHECK_EQUAL(a->Stop(SIGTERM), 0);
  BOOST_CHECK_EQUAL(c->Stop(SIGTERM), 0);
  for (const auto& log : logs) CheckNo5xx(log);
}

// Tests of the registry's storage layer: the Catalog (schema versioning,
// checkpoints with manifest and findings, keys, hashed tokens, the append-only
// audit log, concurrent writers, two catalogs on one database as two servers
// would have) and the content-addressed BlobStore (streaming uploads, limits,
// commit, digest validation).
//
// Every Catalog case runs against the backend $CKPTGUARD_TEST_CATALOG names:
// "sqlite" (the default) or "postgres" (a throwaway server, postgres_server.h;
// CTest runs the program once for each). Where the backends differ (pragmas,
// files, SQL dialect), a case checks each backend's equivalent.
#define BOOST_TEST_MODULE catalog_test
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/daemon/blob_store.h"
#include "ckptguard/daemon/catalog.h"
#include "ckptguard/error.h"
#include "ckptguard/sha256.h"
#include "postgres_server.h"
#include "test_util.h"

namespace ckptguard::daemon {
namespace {

namespace fs = std::filesystem;
using ckptguard::testing::ReadFile;
using ckptguard::testing::TempDir;

constexpr char kAbcSha[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kEmptySha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

template <typename T>
T Ok(Result<T> r) {
  BOOST_REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? std::string() : r.error().ToString()));
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

void OkStatus(const Status& s) { BOOST_REQUIRE_MESSAGE(s.has_value(), (s ? std::string() : s.error().ToString())); }

// Sha returns a valid, distinct digest for `n`.
std::string Sha(int n) {
  std::string hex = std::to_string(n);
  return std::string(64 - hex.size(), 'a') + hex;
}

CheckpointRecord MakeRecord(const std::string& name, const std::string& tag, const std::string& sha,
                            const std::string& status = "stored") {
  CheckpointRecord r;
  r.name = name;
  r.tag = tag;
  r.sha256 = sha;
  r.size = 1234;
  r.format = "torch-zip";
  r.verdict = status == "rejected" ? "dangerous" : "safe";
  r.status = status;
  r.signature = status == "rejected" ? "" : "{\"bundle\":1}";
  r.key_id = status == "rejected" ? "" : Sha(999);
  r.uploader = "ci";
  return r;
}

bool UsePostgres() { return ckptguard::testing::TestCatalogIsPostgres(); }

// Store is one fresh, empty catalog location on the backend under test: a
// database file in a temporary folder, or a new database on the shared
// PostgreSQL server. Exec and Count go through their own raw connection.
struct Store {
  TempDir dir;
  std::string spec;  // what Catalog::Open takes

  Store() {
    if (UsePostgres()) {
      auto& server = ckptguard::testing::PostgresServer::Shared();
      BOOST_REQUIRE_MESSAGE(server.ok(), server.error());
      std::string err;
      spec = server.CreateDatabase(&err);
      BOOST_REQUIRE_MESSAGE(!spec.empty(), err);
    } else {
      spec = (dir.path / "c.db").string();
    }
  }
  bool postgres() const { return UsePostgres(); }

  // Exec runs SQL (several statements allowed); true when it succeeded.
  bool Exec(const std::string& sql, std::string* err_out = nullptr) const {
    if (postgres()) return ckptguard::testing::PostgresServer::Exec(spec, sql, err_out);
    sqlite3* db = nullptr;
    BOOST_REQUIRE_EQUAL(sqlite3_open(spec.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    if (err_out != nullptr && err != nullptr) *err_out = err;
    sqlite3_free(err);
    sqlite3_close(db);
    return rc == SQLITE_OK;
  }

  // Count runs a one-number query (-1 on failure).
  int64_t Count(const std::string& sql) const {
    if (postgres()) return ckptguard::testing::PostgresServer::Count(spec, sql);
    sqlite3* db = nullptr;
    BOOST_REQUIRE_EQUAL(sqlite3_open(spec.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    int64_t out = -1;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
      out = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }
};

// --- Catalog: schema -------------------------------------------------------

BOOST_AUTO_TEST_CASE(open_fresh_creates_the_current_version) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  if (!store.postgres()) BOOST_TEST(fs::exists(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == kCatalogSchemaVersion);
  BOOST_TEST(Ok(catalog->SchemaVersion()) == 3);
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
  BOOST_TEST(!Ok(catalog->ActiveKey()).has_value());
}

BOOST_AUTO_TEST_CASE(open_refuses_empty_path_and_folder) {
  TempDir dir;
  BOOST_TEST(!Catalog::Open("").has_value());
  BOOST_TEST(!Catalog::Open(dir.path.string()).has_value());
  BOOST_TEST(!Catalog::Open("sqlite:" + dir.path.string()).has_value());
  // libpq key=value strings are not taken for a path: a catalog on
  // PostgreSQL is named by a URI.
  BOOST_TEST(!Catalog::Open("postgresql:host=x dbname=y").has_value());
  if (UsePostgres()) {
    // A database that does not exist: the error names the URI with its
    // password masked.
    const std::string uri = "postgresql://ckptguard:s3cr3t-pw@/no_such_db?host=" +
                            ckptguard::testing::PostgresServer::Shared().socket_dir();
    auto opened = Catalog::Open(uri);
    BOOST_REQUIRE(!opened.has_value());
    BOOST_TEST(opened.error().ToString().find("s3cr3t-pw") == std::string::npos, opened.error().ToString());
    BOOST_TEST(opened.error().ToString().find("ckptguard:***@") != std::string::npos, opened.error().ToString());
    BOOST_TEST(opened.error().ToString().find("no_such_db") != std::string::npos, opened.error().ToString());
  }
}

BOOST_AUTO_TEST_CASE(redact_catalog_spec_masks_passwords) {
  BOOST_TEST(RedactCatalogSpec("postgresql://user:secret@db.example:5432/reg") == "postgresql://user:***@db.example:5432/reg");
  BOOST_TEST(RedactCatalogSpec("postgres://u:p%40ss@h/d?sslmode=require") == "postgres://u:***@h/d?sslmode=require");
  BOOST_TEST(RedactCatalogSpec("postgresql://user@h/d") == "postgresql://user@h/d");
  BOOST_TEST(RedactCatalogSpec("postgresql:///d?host=/tmp/x&password=secret&user=u") ==
             "postgresql:///d?host=/tmp/x&password=***&user=u");
  BOOST_TEST(RedactCatalogSpec("sqlite:/var/lib/ckptguard/catalog.db") == "sqlite:/var/lib/ckptguard/catalog.db");
  BOOST_TEST(RedactCatalogSpec("/data/catalog.db") == "/data/catalog.db");
}

BOOST_AUTO_TEST_CASE(reopen_keeps_data) {
  Store store;
  const std::string& path = store.spec;
  int64_t id = 0;
  {
    auto catalog = Ok(Catalog::Open(path));
    id = Ok(catalog->InsertCheckpoint(MakeRecord("resnet", "v1", Sha(1))));
    OkStatus(catalog->AddToken("ci", Sha(50), "write"));
  }
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == kCatalogSchemaVersion);
  auto found = Ok(catalog->FindById(id));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->name == "resnet");
  BOOST_TEST(Ok(catalog->FindToken(Sha(50))).has_value());
}

BOOST_AUTO_TEST_CASE(newer_schema_version_is_refused) {
  Store store;
  const std::string& path = store.spec;
  { auto catalog = Ok(Catalog::Open(path)); }
  BOOST_REQUIRE(store.Exec("INSERT INTO schema_version (version, applied_at) VALUES (" +
                           std::to_string(kCatalogSchemaVersion + 1) + ", 0)"));
  auto reopened = Catalog::Open(path);
  BOOST_REQUIRE(!reopened.has_value());
  BOOST_TEST(static_cast<int>(reopened.error().code) == static_cast<int>(ErrorCode::kUnsupportedFormat));
  BOOST_TEST(reopened.error().detail.find("newer") != std::string::npos, reopened.error().ToString());
}

BOOST_AUTO_TEST_CASE(pragmas_are_set) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(catalog->Backend() == (store.postgres() ? "postgresql" : "sqlite"));
  if (store.postgres()) {
    // PostgreSQL has no pragmas: the schema is what Open must have set up,
    // one recorded step per version and the audit triggers.
    BOOST_TEST(store.Count("SELECT COUNT(*) FROM schema_version") == kCatalogSchemaVersion);
    BOOST_TEST(store.Count("SELECT COUNT(*) FROM pg_trigger WHERE tgname LIKE 'audit_no_%'") == 3);
    return;
  }
  // journal_mode=WAL is persistent: a fresh raw connection sees it.
  sqlite3* db = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  BOOST_REQUIRE_EQUAL(sqlite3_step(stmt), SQLITE_ROW);
  BOOST_TEST(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// --- Catalog: checkpoints --------------------------------------------------

BOOST_AUTO_TEST_CASE(insert_and_find_round_trip) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  CheckpointRecord r = MakeRecord("bert", "main", Sha(7));
  r.size = (uint64_t{1} << 40) + 3;
  r.created_at = 1700000000;
  r.manifest = {{"layer.0.weight", "float32", {768, 3072}},
                {"layer.0.bias", "float16", {3072}},
                {"step", "int64", {}},
                {"odd", "bfloat16", {0, -1, 9223372036854775807}}};
  r.findings = {{"CKG-D001", "dangerous", "calls os.system", "archive/data.pkl", 42, "os.system"},
                {"CKG-I002", "info", "big tensor", "", 0, ""}};
  const int64_t id = Ok(catalog->InsertCheckpoint(r));
  BOOST_TEST(id > 0);

  for (auto found : {Ok(catalog->FindBySha256(Sha(7))), Ok(catalog->FindById(id))}) {
    BOOST_REQUIRE(found.has_value());
    BOOST_TEST(found->id == id);
    BOOST_TEST(found->name == "bert");
    BOOST_TEST(found->tag == "main");
    BOOST_TEST(found->sha256 == Sha(7));
    BOOST_TEST(found->size == r.size);
    BOOST_TEST(found->format == "torch-zip");
    BOOST_TEST(found->verdict == "safe");
    BOOST_TEST(found->status == "stored");
    BOOST_TEST(found->signature == r.signature);
    BOOST_TEST(found->key_id == r.key_id);
    BOOST_TEST(found->uploader == "ci");
    BOOST_TEST(found->created_at == 1700000000);
    BOOST_REQUIRE_EQUAL(found->manifest.size(), r.manifest.size());
    for (size_t i = 0; i < r.manifest.size(); ++i) {
      BOOST_TEST(found->manifest[i].key == r.manifest[i].key);
      BOOST_TEST(found->manifest[i].dtype == r.manifest[i].dtype);
      BOOST_TEST(found->manifest[i].shape == r.manifest[i].shape, boost::test_tools::per_element());
    }
    BOOST_REQUIRE_EQUAL(found->findings.size(), 2u);
    BOOST_TEST(found->findings[0].rule == "CKG-D001");
    BOOST_TEST(found->findings[0].severity == "dangerous");
    BOOST_TEST(found->findings[0].message == "calls os.system");
    BOOST_TEST(found->findings[0].entry == "archive/data.pkl");
    BOOST_TEST(found->findings[0].offset == 42u);
    BOOST_TEST(found->findings[0].global == "os.system");
    BOOST_TEST(found->findings[1].rule == "CKG-I002");
  }
  BOOST_TEST(!Ok(catalog->FindById(id + 100)).has_value());
  BOOST_TEST(!Ok(catalog->FindBySha256(Sha(8))).has_value());
  // created_at 0 is filled in with now.
  const int64_t id2 = Ok(catalog->InsertCheckpoint(MakeRecord("bert", "v2", Sha(9))));
  BOOST_TEST(Ok(catalog->FindById(id2))->created_at > 1700000000);
}

BOOST_AUTO_TEST_CASE(insert_validates) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", "ABC")).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", std::string(64, 'A'))).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", Sha(1), "bogus")).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("", "y", Sha(1))).has_value());
  BOOST_TEST(!catalog->FindBySha256("../../etc/passwd").has_value());
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
}

BOOST_AUTO_TEST_CASE(rejected_rows_are_listed_but_not_found_by_digest) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  CheckpointRecord bad = MakeRecord("evil", "v1", Sha(3), "rejected");
  bad.findings = {{"CKG-D001", "dangerous", "os.system", "data.pkl", 10, "os.system"}};
  const int64_t id = Ok(catalog->InsertCheckpoint(bad));
  BOOST_TEST(!Ok(catalog->FindBySha256(Sha(3))).has_value());
  auto by_id = Ok(catalog->FindById(id));
  BOOST_REQUIRE(by_id.has_value());
  BOOST_TEST(by_id->findings.size() == 1u);
  BOOST_TEST(Ok(catalog->ReferencedBlobs()).empty());
}

BOOST_AUTO_TEST_CASE(list_filters_and_paging) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  std::vector<int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    const std::string name = i % 2 == 0 ? "alpha" : "beta";
    const std::string tag = i < 5 ? "v1" : "v2";
    const std::string status = i == 9 ? "rejected" : "stored";
    ids.push_back(Ok(catalog->InsertCheckpoint(MakeRecord(name, tag, Sha(i), status))));
  }
  auto all = Ok(catalog->ListCheckpoints({}));
  BOOST_REQUIRE_EQUAL(all.size(), 10u);
  BOOST_TEST(all.front().id == ids.back());  // newest first
  BOOST_TEST(all.front().manifest.empty());

  CheckpointQuery q;
  q.name = "alpha";
  BOOST_TEST(Ok(catalog->ListCheckpoints(q)).size() == 5u);
  q.tag = "v2";
  auto alpha_v2 = Ok(catalog->ListCheckpoints(q));
  BOOST_REQUIRE_EQUAL(alpha_v2.size(), 2u);  // i = 6, 8
  BOOST_TEST(alpha_v2[0].sha256 == Sha(8));
  BOOST_TEST(alpha_v2[1].sha256 == Sha(6));

  CheckpointQuery rejected;
  rejected.status = "rejected";
  auto rej = Ok(catalog->ListCheckpoints(rejected));
  BOOST_REQUIRE_EQUAL(rej.size(), 1u);
  BOOST_TEST(rej[0].sha256 == Sha(9));
  CheckpointQuery bogus;
  bogus.status = "x' OR 1=1 --";
  BOOST_TEST(!catalog->ListCheckpoints(bogus).has_value());
  CheckpointQuery injection;
  injection.name = "alpha' OR '1'='1";
  BOOST_TEST(Ok(catalog->ListCheckpoints(injection)).empty());

  // Paging: 3 at a time, following before_id.
  CheckpointQuery page;
  page.limit = 3;
  std::vector<int64_t> seen;
  for (int guard = 0; guard < 10; ++guard) {
    auto rows = Ok(catalog->ListCheckpoints(page));
    if (rows.empty()) break;
    BOOST_TEST(rows.size() <= 3u);
    for (const auto& row : rows) seen.push_back(row.id);
    page.before_id = rows.back().id;
  }
  std::vector<int64_t> expected(ids.rbegin(), ids.rend());
  BOOST_TEST(seen == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(revoke_checkpoint) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(1))));
  const int64_t second = Ok(catalog->InsertCheckpoint(MakeRecord("m-copy", "v1", Sha(1))));
  Ok(catalog->InsertCheckpoint(MakeRecord("other", "v1", Sha(2))));
  BOOST_TEST(Ok(catalog->ReferencedBlobs()) == (std::vector<std::string>{Sha(1), Sha(2)}),
             boost::test_tools::per_element());

  BOOST_TEST(Ok(catalog->RevokeCheckpoint(Sha(1), "leaked weights", "admin")));
  BOOST_TEST(!Ok(catalog->RevokeCheckpoint(Sha(1), "again", "admin")));
  BOOST_TEST(!Ok(catalog->RevokeCheckpoint(Sha(5), "unknown", "admin")));
  BOOST_TEST(!catalog->RevokeCheckpoint("zz", "bad", "admin").has_value());

  auto found = Ok(catalog->FindBySha256(Sha(1)));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->id == second);
  BOOST_TEST(found->status == "revoked");
  BOOST_TEST(found->revoked_reason == "leaked weights");
  BOOST_TEST(found->revoked_by == "admin");
  BOOST_TEST(found->revoked_at > 0);
  CheckpointQuery revoked;
  revoked.status = "revoked";
  BOOST_TEST(Ok(catalog->ListCheckpoints(revoked)).size() == 2u);
  BOOST_TEST(Ok(catalog->ReferencedBlobs()).size() == 2u);  // revoked blobs are still referenced
  BOOST_TEST(Ok(catalog->FindBySha256(Sha(2)))->status == "stored");
}

// --- Catalog: keys, tokens, audit -------------------------------------------

KeyRecord MakeKey(int n, const std::string& state, int64_t created_at) {
  KeyRecord k;
  k.key_id = Sha(n);
  k.public_pem = "-----BEGIN PUBLIC KEY-----\nkey" + std::to_string(n) + "\n-----END PUBLIC KEY-----\n";
  k.curve = "P-256";
  k.state = state;
  k.created_at = created_at;
  return k;
}

BOOST_AUTO_TEST_CASE(keys_rotate_and_revoke) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  OkStatus(catalog->AddKey(MakeKey(1, "active", 100)));
  BOOST_TEST(Ok(catalog->ActiveKey())->key_id == Sha(1));
  OkStatus(catalog->AddKey(MakeKey(2, "active", 200)));
  OkStatus(catalog->AddKey(MakeKey(3, "active", 300)));

  auto keys = Ok(catalog->ListKeys());
  BOOST_REQUIRE_EQUAL(keys.size(), 3u);
  BOOST_TEST(keys[0].key_id == Sha(3));  // newest first
  BOOST_TEST(keys[0].state == "active");
  BOOST_TEST(keys[1].key_id == Sha(2));
  BOOST_TEST(keys[1].state == "retired");
  BOOST_TEST(keys[2].key_id == Sha(1));
  BOOST_TEST(keys[2].state == "retired");
  BOOST_TEST(keys[2].public_pem == MakeKey(1, "", 0).public_pem);
  BOOST_TEST(keys[2].curve == "P-256");
  int active = 0;
  for (const auto& k : keys) active += k.state == "active";
  BOOST_TEST(active == 1);

  // A duplicate key id fails and rolls back: key 3 stays active.
  BOOST_TEST(!catalog->AddKey(MakeKey(2, "active", 400)).has_value());
  BOOST_TEST(Ok(catalog->ActiveKey())->key_id == Sha(3));
  BOOST_TEST(!catalog->AddKey(MakeKey(4, "bogus", 400)).has_value());
  KeyRecord bad_curve = MakeKey(4, "active", 400);
  bad_curve.curve = "secp256k1";
  BOOST_TEST(!catalog->AddKey(bad_curve).has_value());

  BOOST_TEST(Ok(catalog->RevokeKey(Sha(3), "compromised")));
  BOOST_TEST(!Ok(catalog->RevokeKey(Sha(3), "again")));
  BOOST_TEST(!Ok(catalog->RevokeKey(Sha(77), "unknown")));
  BOOST_TEST(!Ok(catalog->ActiveKey()).has_value());
  keys = Ok(catalog->ListKeys());
  BOOST_TEST(keys[0].state == "revoked");
  BOOST_TEST(keys[0].revoked_reason == "compromised");
  BOOST_TEST(keys[0].revoked_at > 0);
  // A retired key added as such does not disturb the active one.
  OkStatus(catalog->AddKey(MakeKey(5, "active", 500)));
  OkStatus(catalog->AddKey(MakeKey(6, "retired", 600)));
  BOOST_TEST(Ok(catalog->ActiveKey())->key_id == Sha(5));
}

BOOST_AUTO_TEST_CASE(tokens_are_stored_hashed) {
  Store store;
  const std::string& path = store.spec;
  const std::string raw_token = "ckg_RAW_SECRET_TOKEN_0123456789";
  const std::string token_file = store.dir.Write("token", raw_token);
  const std::string token_sha = Ok(Sha256FileHex(token_file));
  fs::remove(token_file);
  {
    auto catalog = Ok(Catalog::Open(path));
    OkStatus(catalog->AddToken("ci", token_sha, "write"));
    OkStatus(catalog->AddToken("root", Sha(2), "admin"));
    BOOST_TEST(!catalog->AddToken("ci", Sha(3), "write").has_value());        // duplicate name
    BOOST_TEST(!catalog->AddToken("other", token_sha, "write").has_value());  // duplicate digest
    BOOST_TEST(!catalog->AddToken("raw", raw_token, "write").has_value());    // not a digest
    BOOST_TEST(!catalog->AddToken("x", Sha(4), "superuser").has_value());

    auto found = Ok(catalog->FindToken(token_sha));
    BOOST_REQUIRE(found.has_value());
    BOOST_TEST(found->name == "ci");
    BOOST_TEST(found->scope == "write");
    BOOST_TEST(!found->revoked);
    BOOST_TEST(!Ok(catalog->FindToken(raw_token)).has_value());
    BOOST_TEST(!Ok(catalog->FindToken(Sha(9))).has_value());

    // The digest is in the database; the raw token is not.
    if (store.postgres()) {
      BOOST_TEST(store.Count("SELECT COUNT(*) FROM tokens WHERE token_sha256 = '" + token_sha + "'") == 1);
      BOOST_TEST(store.Count("SELECT COUNT(*) FROM tokens t WHERE strpos(t::text, '" + raw_token + "') > 0") == 0);
    } else {
      std::string bytes = ReadFile(path);
      if (fs::exists(path + "-wal")) bytes += ReadFile(path + "-wal");
      BOOST_TEST(bytes.find(token_sha) != std::string::npos);
      BOOST_TEST(bytes.find(raw_token) == std::string::npos);
    }

    BOOST_TEST(Ok(catalog->RevokeToken("ci")));
    BOOST_TEST(!Ok(catalog->RevokeToken("ci")));
    BOOST_TEST(!Ok(catalog->RevokeToken("nobody")));
    BOOST_TEST(!Ok(catalog->FindToken(token_sha)).has_value());
    auto tokens = Ok(catalog->ListTokens());
    BOOST_REQUIRE_EQUAL(tokens.size(), 2u);
    BOOST_TEST(tokens[0].name == "ci");
    BOOST_TEST(tokens[0].revoked);
    BOOST_TEST(tokens[1].name == "root");
    BOOST_TEST(tokens[1].scope == "admin");
    BOOST_TEST(!tokens[1].revoked);
  }
  if (!store.postgres()) {
    std::string bytes = ReadFile(path);
    if (fs::exists(path + "-wal")) bytes += ReadFile(path + "-wal");
    BOOST_TEST(bytes.find(raw_token) == std::string::npos);
  }
}

// Migration 1 -> 2 on a catalog as version 1 left it: tokens keep their
// names, hashes, scopes and revocations; read tokens and prefixes appear;
// the registry id is created once and kept.
BOOST_AUTO_TEST_CASE(migration_2_keeps_tokens_and_adds_scopes_prefixes_and_registry_id) {
  Store store;
  const std::string& path = store.spec;
  // The version-1 tokens table and schema_version row, as version 1 created them.
  const std::string rows =
      "INSERT INTO tokens (name, token_sha256, scope, created_at) VALUES ('ci', '" + Sha(1) + "', 'write', 5);"
      "INSERT INTO tokens (name, token_sha256, scope, created_at, revoked) VALUES ('old', '" + Sha(2) + "', 'admin', 6, 1);";
  if (store.postgres()) {
    BOOST_REQUIRE(store.Exec("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);"
                             "INSERT INTO schema_version VALUES (1, 0);"
                             "CREATE TABLE tokens (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                             " name TEXT NOT NULL UNIQUE,"
                             " token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),"
                             " scope TEXT NOT NULL CONSTRAINT tokens_scope CHECK (scope IN ('write', 'admin')),"
                             " created_at BIGINT NOT NULL, revoked BIGINT NOT NULL DEFAULT 0,"
                             " revoked_at BIGINT NOT NULL DEFAULT 0);" +
                             rows));
  } else {
    BOOST_REQUIRE(store.Exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL);"
                             "INSERT INTO schema_version VALUES (1, 0);"
                             "CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                             " token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),"
                             " scope TEXT NOT NULL CHECK (scope IN ('write', 'admin')), created_at INTEGER NOT NULL,"
                             " revoked INTEGER NOT NULL DEFAULT 0, revoked_at INTEGER NOT NULL DEFAULT 0);" +
                             rows));
  }
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == kCatalogSchemaVersion);
  auto ci = Ok(catalog->FindToken(Sha(1)));
  BOOST_REQUIRE(ci.has_value());
  BOOST_TEST(ci->scope == "write");
  BOOST_TEST(ci->created_at == 5);
  BOOST_TEST(ci->prefixes.empty());
  BOOST_TEST(!Ok(catalog->FindToken(Sha(2))).has_value());  // still revoked
  OkStatus(catalog->AddToken("reader", Sha(3), "read"));
  OkStatus(catalog->AddToken("team", Sha(4), "write", {"team-a/", "shared/"}));
  BOOST_TEST(!catalog->AddToken("bad", Sha(5), "read", {"x/"}).has_value());  // prefixes limit write tokens only
  BOOST_TEST(!catalog->AddToken("bad", Sha(6), "write", {""}).has_value());
  auto team = Ok(catalog->FindToken(Sha(4)));
  BOOST_REQUIRE(team.has_value());
  BOOST_TEST((team->prefixes == std::vector<std::string>{"team-a/", "shared/"}));
  BOOST_TEST(Ok(catalog->FindToken(Sha(3)))->scope == "read");
  const std::string id = Ok(catalog->EnsureRegistryId("first"));
  BOOST_TEST(id == "first");
  BOOST_TEST(Ok(catalog->EnsureRegistryId("second")) == "first");
}

// Tags are immutable under a TagGuard: a repeated push writes nothing, other
// content is refused naming the holder, a move (when allowed) is audited.
BOOST_AUTO_TEST_CASE(tag_guard_keeps_tags_immutable) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  const int64_t first = Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(1))));
  TagGuard same;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(1)), nullptr, nullptr, &same)) == first);
  BOOST_TEST(same.same_content);
  TagGuard other;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(2)), nullptr, nullptr, &other)) == 0);
  BOOST_REQUIRE(other.holder.has_value());
  BOOST_TEST(other.holder->sha256 == Sha(1));
  BOOST_TEST(Ok(catalog->ListCheckpoints({.name = "m"})).size() == 1u);
  // A rejected push never takes a tag; another tag is free.
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v2", Sha(3), "rejected"))) > 0);
  TagGuard free_tag;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v2", Sha(2)), nullptr, nullptr, &free_tag)) > 0);
  BOOST_TEST(!free_tag.holder.has_value());
  // A revoked holder still holds the tag.
  BOOST_TEST(Ok(catalog->RevokeCheckpoint(Sha(1), "bad", "admin")));
  TagGuard after_revoke;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(4)), nullptr, nullptr, &after_revoke)) == 0);
  BOOST_REQUIRE(after_revoke.holder.has_value());
  BOOST_TEST(after_revoke.holder->status == "revoked");
  // Allowed to move: written, audited as a retag in the same transaction.
  TagGuard move;
  move.allow_move = true;
  const AuditRecord audit{0, 0, "ci", "push", "", "stored", "moved"};
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(4)), &audit, nullptr, &move)) > 0);
  BOOST_TEST(move.moved_from == Sha(1));
  auto holder = Ok(catalog->FindTagHolder("m", "v1"));
  BOOST_REQUIRE(holder.has_value());
  BOOST_TEST(holder->sha256 == Sha(4));
  bool retag_audited = false;
  for (const AuditRecord& a : Ok(catalog->ListAudit())) {
    if (a.action == "retag" && a.target == "m:v1" && a.who == "ci" && a.detail.find(Sha(1)) != std::string::npos) {
      retag_audited = true;
    }
  }
  BOOST_TEST(retag_audited);
  // FindByNameTag picks the row of that name and tag.
  BOOST_TEST(Ok(catalog->FindByNameTag(Sha(2), "m", "v2")).has_value());
  BOOST_TEST(!Ok(catalog->FindByNameTag(Sha(2), "m", "v1")).has_value());
}

BOOST_AUTO_TEST_CASE(audit_is_append_only) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  OkStatus(catalog->Audit({0, 0, "ci", "push", Sha(1), "stored", "pushed resnet:v1"}));
  OkStatus(catalog->Audit({0, 1234, "admin", "revoke-key", Sha(2), "ok", "rotated"}));
  OkStatus(catalog->Audit({0, 0, "anonymous", "push", "", "denied", "no token"}));
  auto all = Ok(catalog->ListAudit());
  BOOST_REQUIRE_EQUAL(all.size(), 3u);
  BOOST_TEST(all[0].id < all[1].id);
  BOOST_TEST(all[0].who == "ci");
  BOOST_TEST(all[0].action == "push");
  BOOST_TEST(all[0].target == Sha(1));
  BOOST_TEST(all[0].result == "stored");
  BOOST_TEST(all[0].detail == "pushed resnet:v1");
  BOOST_TEST(all[0].at > 0);
  BOOST_TEST(all[1].at == 1234);
  auto after = Ok(catalog->ListAudit(all[0].id, 1));
  BOOST_REQUIRE_EQUAL(after.size(), 1u);
  BOOST_TEST(after[0].id == all[1].id);

  std::string err;
  BOOST_TEST(!store.Exec("UPDATE audit SET result = 'ok'", &err));
  BOOST_TEST(err.find("append-only") != std::string::npos, err);
  err.clear();
  BOOST_TEST(!store.Exec("DELETE FROM audit", &err));
  BOOST_TEST(err.find("append-only") != std::string::npos, err);
  err.clear();
  BOOST_TEST(!store.Exec("DELETE FROM audit WHERE id = " + std::to_string(all[2].id), &err));
  BOOST_TEST(err.find("append-only") != std::string::npos, err);
  if (store.postgres()) {
    // TRUNCATE skips row triggers: a statement trigger refuses it too.
    err.clear();
    BOOST_TEST(!store.Exec("TRUNCATE audit", &err));
    BOOST_TEST(err.find("append-only") != std::string::npos, err);
  }
  BOOST_TEST(Ok(catalog->ListAudit()).size() == 3u);
  BOOST_TEST(Ok(catalog->ListAudit())[0].result == "stored");
}

BOOST_AUTO_TEST_CASE(foreign_keys_cascade) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  CheckpointRecord r = MakeRecord("m", "v", Sha(1));
  r.manifest = {{"w", "float32", {2}}};
  r.findings = {{"CKG-I001", "info", "m", "", 0, ""}};
  Ok(catalog->InsertCheckpoint(r));
  const std::string pragma = store.postgres() ? "" : "PRAGMA foreign_keys = ON; ";
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM manifest") == 1);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM findings") == 1);
  BOOST_REQUIRE(store.Exec(pragma + "DELETE FROM checkpoints;"));
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM manifest") == 0);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM findings") == 0);
  // A manifest row must name an existing checkpoint.
  BOOST_TEST(!store.Exec(pragma + "INSERT INTO manifest (checkpoint_id, position, key, dtype, shape) "
                                  "VALUES (999, 0, 'k', 'f', '')"));
}

BOOST_AUTO_TEST_CASE(failed_insert_rolls_back_whole_transaction) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  // A trigger that aborts on one manifest key makes the third statement of
  // the insert fail after the checkpoint row and other entries were written.
  if (store.postgres()) {
    BOOST_REQUIRE(store.Exec("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'boom'; END $$;"
                             "CREATE TRIGGER boom BEFORE INSERT ON manifest FOR EACH ROW "
                             "WHEN (NEW.key = 'boom') EXECUTE FUNCTION boom();"));
  } else {
    BOOST_REQUIRE(store.Exec("CREATE TRIGGER boom BEFORE INSERT ON manifest WHEN NEW.key = 'boom' "
                             "BEGIN SELECT RAISE(ABORT, 'boom'); END;"));
  }
  CheckpointRecord r = MakeRecord("m", "v", Sha(1));
  r.manifest = {{"ok", "float32", {1}}, {"boom", "float32", {1}}};
  auto failed = catalog->InsertCheckpoint(r);
  BOOST_REQUIRE(!failed.has_value());
  BOOST_TEST(failed.error().detail.find("insert manifest") != std::string::npos, failed.error().ToString());
  BOOST_TEST(failed.error().detail.find("boom") != std::string::npos, failed.error().ToString());
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM checkpoints") == 0);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM manifest") == 0);
  // The connection is usable afterwards (no transaction left open).
  r.manifest = {{"ok", "float32", {1}}};
  Ok(catalog->InsertCheckpoint(r));
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM checkpoints") == 1);
}

BOOST_AUTO_TEST_CASE(open_refuses_a_file_that_is_not_a_database) {
  if (UsePostgres()) {
    // A database that holds other tables of the same names, not a catalog:
    // the first migration fails and says why; nothing is half-made.
    Store store;
    BOOST_REQUIRE(store.Exec("CREATE TABLE checkpoints (x INTEGER)"));
    auto opened = Catalog::Open(store.spec);
    BOOST_REQUIRE(!opened.has_value());
    BOOST_TEST(opened.error().detail.find("already exists") != std::string::npos, opened.error().ToString());
    BOOST_TEST(store.Count("SELECT COUNT(*) FROM schema_version") == 0);
    return;
  }
  TempDir dir;
  const std::string path = dir.Write("junk.db", std::string(4096, 'x'));
  auto opened = Catalog::Open(path);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST(opened.error().detail.find("not a database") != std::string::npos, opened.error().ToString());
}

BOOST_AUTO_TEST_CASE(waits_for_another_writer) {
  Store store;
  const std::string& path = store.spec;
  auto catalog = Ok(Catalog::Open(path));
  if (store.postgres()) {
    // Another session holds the checkpoints table for 300 ms.
    PGconn* other = PQconnectdb(path.c_str());
    BOOST_REQUIRE(PQstatus(other) == CONNECTION_OK);
    PQclear(PQexec(other, "BEGIN; LOCK TABLE checkpoints IN EXCLUSIVE MODE"));
    const auto start = std::chrono::steady_clock::now();
    std::thread release([other] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      PQclear(PQexec(other, "COMMIT"));
    });
    auto id = catalog->InsertCheckpoint(MakeRecord("m", "v", Sha(1)));  // waits for the lock
    release.join();
    PQfinish(other);
    BOOST_TEST(id.has_value(), (id ? std::string() : id.error().ToString()));
    BOOST_TEST((std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(250)));
    return;
  }
  sqlite3* other = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  BOOST_REQUIRE_EQUAL(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::thread release([other] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
  });
  auto id = catalog->InsertCheckpoint(MakeRecord("m", "v", Sha(1)));  // waits on busy_timeout
  release.join();
  sqlite3_close(other);
  BOOST_TEST(id.has_value(), (id ? std::string() : id.error().ToString()));
}

BOOST_AUTO_TEST_CASE(concurrent_inserts_all_land) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  constexpr int kThreads = 4;
  constexpr int kRows = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRows; ++i) {
        CheckpointRecord r = MakeRecord("t" + std::to_string(t), std::to_string(i), Sha(t * 1000 + i));
        r.manifest = {{"w", "float32", {i, t}}};
        if (!catalog->InsertCheckpoint(r)) ++failures;
        if (!catalog->Audit({0, 0, "t", "push", r.sha256, "stored", ""})) ++failures;
        if (!catalog->FindBySha256(r.sha256)) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  BOOST_TEST(failures.load() == 0);
  CheckpointQuery q;
  q.limit = 1000;
  BOOST_TEST(Ok(catalog->ListCheckpoints(q)).size() == size_t{kThreads * kRows});
  BOOST_TEST(Ok(catalog->ListAudit()).size() == size_t{kThreads * kRows});
  BOOST_TEST(Ok(catalog->ReferencedBlobs()).size() == size_t{kThreads * kRows});
  auto one = Ok(catalog->FindBySha256(Sha(3 * 1000 + 49)));
  BOOST_REQUIRE(one.has_value());
  BOOST_TEST(one->manifest.at(0).shape == (std::vector<int64_t>{49, 3}), boost::test_tools::per_element());
}

// --- Catalog: two catalogs on one database (two servers) ---------------------
// Each Catalog has its own connection, as two ckptguardd processes would;
// the invariants the catalog promises must hold across them.

BOOST_AUTO_TEST_CASE(two_catalogs_racing_add_key_keep_one_active) {
  Store store;
  std::unique_ptr<Catalog> catalogs[2] = {Ok(Catalog::Open(store.spec)), Ok(Catalog::Open(store.spec))};
  constexpr int kThreadsPerCatalog = 2;
  constexpr int kKeysPerThread = 15;
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < 2; ++c) {
    for (int t = 0; t < kThreadsPerCatalog; ++t) {
      threads.emplace_back([&, c, t] {
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < kKeysPerThread; ++i) {
          const int n = (c * kThreadsPerCatalog + t) * 1000 + i;
          if (!catalogs[c]->AddKey(MakeKey(n, "active", 100))) ++failures;
          auto active = catalogs[1 - c]->ActiveKey();
          if (!active || !active->has_value()) ++failures;  // never a moment without one
        }
      });
    }
  }
  go = true;
  for (auto& th : threads) th.join();
  BOOST_TEST(failures.load() == 0);
  auto keys = Ok(catalogs[0]->ListKeys());
  BOOST_TEST(keys.size() == size_t{2 * kThreadsPerCatalog * kKeysPerThread});
  int active = 0;
  for (const auto& k : keys) active += k.state == "active";
  BOOST_TEST(active == 1);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM keys WHERE state = 'active'") == 1);
  BOOST_TEST(Ok(catalogs[0]->ActiveKey())->key_id == Ok(catalogs[1]->ActiveKey())->key_id);
}

BOOST_AUTO_TEST_CASE(two_catalogs_racing_for_one_tag_one_wins) {
  Store store;
  std::unique_ptr<Catalog> catalogs[2] = {Ok(Catalog::Open(store.spec)), Ok(Catalog::Open(store.spec))};
  constexpr int kRounds = 25;
  for (int round = 0; round < kRounds; ++round) {
    const std::string tag = "v" + std::to_string(round);
    int64_t ids[2] = {-1, -1};
    TagGuard guards[2];
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < 2; ++c) {
      threads.emplace_back([&, c] {
        ++ready;
        while (ready.load() < 2) std::this_thread::yield();
        const AuditRecord audit{0, 0, "ci", "push", "", "stored", tag};
        auto id = catalogs[c]->InsertCheckpoint(MakeRecord("m", tag, Sha(round * 10 + c)), &audit, nullptr, &guards[c]);
        ids[c] = id ? *id : -1;
      });
    }
    for (auto& th : threads) th.join();
    BOOST_REQUIRE(ids[0] >= 0);
    BOOST_REQUIRE(ids[1] >= 0);
    const int winner = ids[0] > 0 ? 0 : 1;
    BOOST_TEST((ids[0] > 0) != (ids[1] > 0), "round " << round << ": exactly one insert wins");
    BOOST_REQUIRE(guards[1 - winner].holder.has_value());
    BOOST_TEST(guards[1 - winner].holder->sha256 == Sha(round * 10 + winner));
    BOOST_TEST(!guards[winner].holder.has_value());
    auto holder = Ok(catalogs[1 - winner]->FindTagHolder("m", tag));
    BOOST_REQUIRE(holder.has_value());
    BOOST_TEST(holder->id == ids[winner]);
  }
  BOOST_TEST(Ok(catalogs[0]->ListCheckpoints({.name = "m", .limit = 1000})).size() == size_t{kRounds});
  BOOST_TEST(Ok(catalogs[1]->ListAudit()).size() == size_t{kRounds});  // the losers wrote nothing
}

BOOST_AUTO_TEST_CASE(revocation_on_one_catalog_is_seen_by_the_other) {
  Store store;
  auto a = Ok(Catalog::Open(store.spec));
  auto b = Ok(Catalog::Open(store.spec));
  Ok(a->InsertCheckpoint(MakeRecord("m", "v1", Sha(1))));
  OkStatus(a->AddToken("ci", Sha(50), "write"));
  OkStatus(a->AddKey(MakeKey(7, "active", 100)));
  BOOST_TEST(Ok(b->FindBySha256(Sha(1)))->status == "stored");
  BOOST_TEST(Ok(b->FindToken(Sha(50))).has_value());

  BOOST_TEST(Ok(b->RevokeCheckpoint(Sha(1), "leaked", "admin")));
  BOOST_TEST(Ok(b->RevokeToken("ci")));
  BOOST_TEST(Ok(b->RevokeKey(Sha(7), "compromised")));
  // a's very next calls see it.
  auto found = Ok(a->FindBySha256(Sha(1)));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->status == "revoked");
  BOOST_TEST(found->revoked_reason == "leaked");
  BOOST_TEST(!Ok(a->FindToken(Sha(50))).has_value());
  BOOST_TEST(!Ok(a->ActiveKey()).has_value());
  // And a push of the revoked content through a is refused inside its insert.
  std::optional<CheckpointRecord> revoked;
  BOOST_TEST(Ok(a->InsertCheckpoint(MakeRecord("m2", "v1", Sha(1)), nullptr, &revoked)) == 0);
  BOOST_REQUIRE(revoked.has_value());
  BOOST_TEST(revoked->revoked_by == "admin");
  BOOST_TEST(!Ok(b->FindTagHolder("m2", "v1")).has_value());
}

// A connection the server dropped (a restart, an idle timeout, an admin's
// pg_terminate_backend) is reopened by the next call.
BOOST_AUTO_TEST_CASE(postgres_reconnects_after_the_server_drops_the_connection) {
  if (!UsePostgres()) return;  // SQLite has no server connection to lose
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  OkStatus(catalog->AddKey(MakeKey(1, "active", 100)));
  BOOST_REQUIRE(store.Count("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'ckptguardd' AND datname = current_database()") == 1);
  BOOST_TEST(Ok(catalog->ActiveKey())->key_id == Sha(1));
  OkStatus(catalog->AddKey(MakeKey(2, "active", 200)));
  BOOST_REQUIRE(store.Count("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'ckptguardd' AND datname = current_database()") == 1);
  OkStatus(catalog->AddKey(MakeKey(3, "active", 300)));
  BOOST_TEST(Ok(catalog->ActiveKey())->key_id == Sha(3));
}

// --- CatalogOptions ----------------------------------------------------------

BOOST_AUTO_TEST_CASE(catalog_options_are_clamped) {
  const CatalogOptions low = CatalogOptions{.max_attempts = 0, .connect_timeout_seconds = -5}.Clamped();
  BOOST_TEST(low.max_attempts == 1);
  BOOST_TEST(low.connect_timeout_seconds == 1);
  const CatalogOptions high = CatalogOptions{.max_attempts = 1 << 30, .connect_timeout_seconds = 1 << 30}.Clamped();
  BOOST_TEST(high.max_attempts == CatalogOptions::kMaxAttempts);
  BOOST_TEST(high.connect_timeout_seconds == CatalogOptions::kMaxConnectTimeoutSeconds);
  BOOST_TEST(CatalogOptions{}.Clamped().max_attempts == 5);
  BOOST_TEST(CatalogOptions{}.Clamped().connect_timeout_seconds == 10);
}

// A "server" that accepts on a Unix socket and never answers: Open gives up
// after connect_timeout_seconds, not libpq's default or ours.
BOOST_AUTO_TEST_CASE(postgres_connect_timeout_is_configurable) {
  TempDir dir;
  const std::string socket_path = (dir.path / ".s.PGSQL.5432").string();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  BOOST_REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  BOOST_REQUIRE(socket_path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  BOOST_REQUIRE_EQUAL(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  BOOST_REQUIRE_EQUAL(::listen(fd, 8), 0);  // connections queue; nothing ever answers
  const auto start = std::chrono::steady_clock::now();
  auto opened = Catalog::Open("postgresql://u@/db?host=" + dir.path.string(), CatalogOptions{.connect_timeout_seconds = 2});
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST(opened.error().detail.find("connect") != std::string::npos, opened.error().ToString());
  BOOST_TEST((took >= std::chrono::milliseconds(1500)), "gave up after " << took.count() << " ns");
  BOOST_TEST((took < std::chrono::seconds(8)), "gave up after " << took.count() << " ns (the default is 10 s)");
}

// A transaction failing with a serialization failure is run again, up to
// max_attempts times in all. The failures are injected by a trigger that
// raises SQLSTATE 40001 on the first inserts (a sequence counts them: it is
// not rolled back with the failed transaction).
BOOST_AUTO_TEST_CASE(postgres_retries_as_configured) {
  if (!UsePostgres()) return;  // SQLite has no serialization failures to retry
  Store store;
  { auto migrate = Ok(Catalog::Open(store.spec)); }
  BOOST_REQUIRE(store.Exec(
      "CREATE SEQUENCE injected_failures;"
      "CREATE FUNCTION fail_first_two() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
      "  IF nextval('injected_failures') <= 2 THEN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF;"
      "  RETURN NEW; END $$;"
      "CREATE TRIGGER fail_first_two BEFORE INSERT ON tokens FOR EACH ROW EXECUTE FUNCTION fail_first_two();"));
  {
    auto two = Ok(Catalog::Open(store.spec, CatalogOptions{.max_attempts = 2}));
    auto failed = two->AddToken("a", Sha(1), "write");
    BOOST_REQUIRE(!failed.has_value());
    BOOST_TEST(failed.error().detail.find("injected") != std::string::npos, failed.error().ToString());
    BOOST_TEST(store.Count("SELECT last_value FROM injected_failures") == 2);
  }
  BOOST_REQUIRE(store.Exec("ALTER SEQUENCE injected_failures RESTART WITH 1"));
  auto three = Ok(Catalog::Open(store.spec, CatalogOptions{.max_attempts = 3}));
  OkStatus(three->AddToken("a", Sha(1), "write"));
  BOOST_TEST(store.Count("SELECT last_value FROM injected_failures") == 3);
  BOOST_TEST(Ok(three->FindToken(Sha(1))).has_value());
}

// --- Servers sharing a blob store --------------------------------------------

// A reserved blob is never swept; a released one that no row references is,
// inside the transaction that decided so; a referenced one never.
BOOST_AUTO_TEST_CASE(sweep_spares_reserved_and_referenced_blobs) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  const int64_t server = Ok(catalog->RegisterServer("host-a", 42));
  BOOST_TEST(server > 0);
  int removed = 0;
  auto remove = [&]() -> Status {
    ++removed;
    return ckptguard::OkStatus();
  };
  const int64_t reservation = Ok(catalog->ReserveBlob(Sha(1), server));
  BOOST_TEST(!Ok(catalog->SweepBlob(Sha(1), remove)));
  BOOST_TEST(removed == 0);
  OkStatus(catalog->ReleaseBlob(reservation));
  BOOST_TEST(Ok(catalog->SweepBlob(Sha(1), remove)));
  BOOST_TEST(removed == 1);
  // Referenced by a stored row, then by the revoked row: kept.
  const int64_t held = Ok(catalog->ReserveBlob(Sha(2), server));
  TagGuard guard;
  guard.reservation = held;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(2)), nullptr, nullptr, &guard)) > 0);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM blob_reservations") == 0, "the insert released the reservation");
  BOOST_TEST(!Ok(catalog->SweepBlob(Sha(2), remove)));
  BOOST_TEST(Ok(catalog->RevokeCheckpoint(Sha(2), "bad", "admin")));
  BOOST_TEST(!Ok(catalog->SweepBlob(Sha(2), remove)));
  BOOST_TEST(removed == 1);
  // A failing removal fails the sweep.
  auto failing = []() -> Status { return MakeError(ErrorCode::kIo, 0, "disk on fire"); };
  BOOST_TEST(!catalog->SweepBlob(Sha(3), failing).has_value());
  BOOST_TEST(!catalog->ReserveBlob("not a digest", server).has_value());
}

// An insert whose reservation a sweep removed writes nothing; one whose
// signer was revoked meanwhile writes nothing and keeps the reservation.
BOOST_AUTO_TEST_CASE(insert_checks_its_reservation_and_signer) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  const int64_t server = Ok(catalog->RegisterServer("host-a", 42));
  OkStatus(catalog->AddKey(MakeKey(999, "active", 100)));  // MakeRecord's signer
  const int64_t lost = Ok(catalog->ReserveBlob(Sha(1), server));
  BOOST_REQUIRE(store.Exec("DELETE FROM blob_reservations WHERE id = " + std::to_string(lost)));
  TagGuard guard;
  guard.reservation = lost;
  auto refused = catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(1)), nullptr, nullptr, &guard);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().detail.find("reservation") != std::string::npos, refused.error().ToString());
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
  // A reservation of another digest does not stand in for this one.
  const int64_t other = Ok(catalog->ReserveBlob(Sha(2), server));
  guard = TagGuard{};
  guard.reservation = other;
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("m", "v1", Sha(1)), nullptr, nullptr, &guard).has_value());
  // The signer revoked: nothing written, the reservation kept.
  const int64_t kept = Ok(catalog->ReserveBlob(Sha(3), server));
  BOOST_REQUIRE(Ok(catalog->RevokeKey(Sha(999), "leaked")));
  guard = TagGuard{};
  guard.reservation = kept;
  BOOST_TEST(Ok(catalog->InsertCheckpoint(MakeRecord("m", "v3", Sha(3)), nullptr, nullptr, &guard)) == 0);
  BOOST_TEST(guard.signer_revoked);
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM blob_reservations WHERE id = " + std::to_string(kept)) == 1);
  BOOST_TEST(!Ok(catalog->SweepBlob(Sha(3), []() -> Status { return ckptguard::OkStatus(); })));
}

// Servers that are gone lose their entries and reservations; live ones keep
// them. PostgreSQL: alive while the catalog's session holds its lock (a
// closed catalog, as after kill -9, is gone; a dropped connection retakes
// it). SQLite: only this catalog's own servers are alive.
BOOST_AUTO_TEST_CASE(prune_servers_keeps_the_live_ones) {
  Store store;
  auto catalog = Ok(Catalog::Open(store.spec));
  const int64_t mine = Ok(catalog->RegisterServer("host-a", 1));
  Ok(catalog->ReserveBlob(Sha(1), mine));
  int64_t gone = 0;
  {
    auto other = Ok(Catalog::Open(store.spec));
    gone = Ok(other->RegisterServer("host-b", 2));
    Ok(other->ReserveBlob(Sha(2), gone));
    if (store.postgres()) {
      // Alive while its session lives.
      BOOST_TEST((Ok(catalog->PruneServers()) == std::vector<int64_t>{mine, gone}));
    }
  }
  BOOST_TEST(gone > mine);
  if (store.postgres()) {
    // The closed session's lock is released by the server shortly after.
    for (int i = 0; i < 100 && store.Count("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = "
                                           "'ckptguardd' AND datname = current_database()") > 1;
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  BOOST_TEST((Ok(catalog->PruneServers()) == std::vector<int64_t>{mine}));
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM blob_reservations") == 1);
  BOOST_TEST(store.Count("SELECT COUNT(*) FROM servers") == 1);
  BOOST_TEST(!Ok(catalog->SweepBlob(Sha(1), []() -> Status { return ckptguard::OkStatus(); })));
  BOOST_TEST(Ok(catalog->SweepBlob(Sha(2), []() -> Status { return ckptguard::OkStatus(); })));
  if (store.postgres()) {
    // A dropped connection is reopened with the server's lock taken again.
    BOOST_REQUIRE(store.Count("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE application_name = 'ckptguardd' AND datname = current_database()") == 1);
    BOOST_TEST(Ok(catalog->ListKeys()).empty());  // reconnects
    BOOST_TEST((Ok(catalog->PruneServers()) == std::vector<int64_t>{mine}));
  }
}

// --- BlobStore ---------------------------------------------------------------

size_t CountFiles(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

BOOST_AUTO_TEST_CASE(sha256_file_hex_known_digests) {
  TempDir dir;
  BOOST_TEST(Ok(Sha256FileHex(dir.Write("abc", "abc"))) == kAbcSha);
  BOOST_TEST(Ok(Sha256FileHex(dir.Write("empty", ""))) == kEmptySha);
  // Larger than one 1 MiB chunk: compare with streaming the same bytes through an Upload.
  std::string big((size_t{3} << 20) + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
  const std::string big_path = dir.Write("big", big);
  auto store = Ok(BlobStore::Open((dir.path / "data").string()));
  auto upload = Ok(store.BeginUpload(big.size()));
  OkStatus(upload.Append(AsBytes(big)));
  OkStatus(upload.Finish());
  BOOST_TEST(Ok(Sha256FileHex(big_path)) == upload.sha256());
  BOOST_TEST(!Sha256FileHex((dir.path / "missing").string()).has_value());
}

BOOST_AUTO_TEST_CASE(blob_upload_commit_has_path_list) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  BOOST_TEST(fs::is_directory(root + "/blobs"));
  BOOST_TEST(fs::is_directory(root + "/tmp"));
  BOOST_TEST(Ok(store.List()).empty());

  auto upload = Ok(store.BeginUpload(1024));
  const std::string temp = upload.temp_path();
  BOOST_TEST(fs::exists(temp));
  BOOST_TEST(fs::path(temp).parent_path() == fs::path(root) / "tmp");
  BOOST_TEST(static_cast<unsigned>(fs::status(temp).permissions() & fs::perms::all) == 0600u);
  OkStatus(upload.Append(AsBytes("a")));
  OkStatus(upload.Append(AsBytes("")));
  OkStatus(upload.Append(AsBytes("bc")));
  BOOST_TEST(upload.size() == 3u);
  OkStatus(upload.Finish());
  BOOST_TEST(upload.sha256() == kAbcSha);
  BOOST_TEST(!upload.Append(AsBytes("x")).has_value());  // no Append after Finish
  BOOST_TEST(ReadFile(temp) == "abc");                     // scannable before Commit
  BOOST_TEST(!store.Has(kAbcSha));
  OkStatus(store.Commit(upload));
  BOOST_TEST(!fs::exists(temp));
  BOOST_TEST(!store.Commit(upload).has_value());  // once

  BOOST_TEST(store.Has(kAbcSha));
  BOOST_TEST(store.PathOf(kAbcSha) == root + "/blobs/ba/" + kAbcSha);
  BOOST_TEST(ReadFile(store.PathOf(kAbcSha)) == "abc");
  BOOST_TEST(Ok(Sha256FileHex(store.PathOf(kAbcSha))) == kAbcSha);
  BOOST_TEST(Ok(store.List()) == std::vector<std::string>{kAbcSha}, boost::test_tools::per_element());

  // Stray files in the blob folders are not listed.
  std::ofstream(root + "/blobs/ba/not-a-digest") << "x";
  std::ofstream(root + "/blobs/stray") << "x";
  BOOST_TEST(Ok(store.List()).size() == 1u);

  // Reopening an existing store works.
  auto again = Ok(BlobStore::Open(root));
  BOOST_TEST(again.Has(kAbcSha));

  OkStatus(store.Remove(kAbcSha));
  BOOST_TEST(!store.Has(kAbcSha));
  OkStatus(store.Remove(kAbcSha));  // idempotent
  BOOST_TEST(Ok(store.List()).empty());
}

// A large upload is hashed on a background thread while it is written (and
// writeback starts early): the digest must still be that of every byte, in
// order, for chunk sizes that straddle the inline threshold and the queue.
BOOST_AUTO_TEST_CASE(blob_large_upload_hashed_in_background_is_exact) {
  TempDir dir;
  auto store = Ok(BlobStore::Open((dir.path / "data").string()));
  std::string big(size_t{40} << 20, '\0');
  uint32_t x = 12345;
  for (char& c : big) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  auto upload = Ok(store.BeginUpload(big.size()));
  size_t at = 0;
  const size_t sizes[] = {1, 4095, 65536, 1 << 20, 3 << 20, 7, 262144, 5 << 20};
  for (size_t i = 0; at < big.size(); ++i) {
    const size_t n = std::min(sizes[i % std::size(sizes)], big.size() - at);
    OkStatus(upload.Append(Bytes(reinterpret_cast<const uint8_t*>(big.data()) + at, n)));
    at += n;
  }
  OkStatus(upload.Finish());
  const std::string from_file = Ok(Sha256FileHex(upload.temp_path()));
  BOOST_TEST(upload.sha256() == from_file);
  BOOST_TEST(ReadFile(upload.temp_path()) == big);
  // And an upload dropped half-way (a client that vanished) joins its hasher
  // and leaves no temp file.
  std::string temp;
  {
    auto dropped = Ok(store.BeginUpload(big.size()));
    temp = dropped.temp_path();
    OkStatus(dropped.Append(Bytes(reinterpret_cast<const uint8_t*>(big.data()), size_t{9} << 20)));
  }
  BOOST_TEST(!fs::exists(temp));
}

BOOST_AUTO_TEST_CASE(blob_duplicate_commit_drops_temp) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  for (int i = 0; i < 2; ++i) {
    auto upload = Ok(store.BeginUpload(10));
    OkStatus(upload.Append(AsBytes("abc")));
    OkStatus(upload.Finish());
    const std::string temp = upload.temp_path();
    OkStatus(store.Commit(upload));
    BOOST_TEST(!fs::exists(temp));
  }
  BOOST_TEST(Ok(store.List()).size() == 1u);
  BOOST_TEST(CountFiles(root + "/tmp") == 0u);
  BOOST_TEST(ReadFile(store.PathOf(kAbcSha)) == "abc");
}

BOOST_AUTO_TEST_CASE(blob_limit_exceeded) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  {
    auto upload = Ok(store.BeginUpload(5));
    OkStatus(upload.Append(AsBytes("abc")));
    OkStatus(upload.Append(AsBytes("de")));  // exactly at the limit
    auto over = upload.Append(AsBytes("f"));
    BOOST_REQUIRE(!over.has_value());
    BOOST_TEST(static_cast<int>(over.error().code) == static_cast<int>(ErrorCode::kLimitExceeded));
    BOOST_TEST(upload.size() == 5u);
    BOOST_TEST(!upload.Finish().has_value());
    BOOST_TEST(!store.Commit(upload).has_value());
  }
  {
    auto upload = Ok(store.BeginUpload(0));
    auto over = upload.Append(AsBytes("x"));
    BOOST_REQUIRE(!over.has_value());
    BOOST_TEST(static_cast<int>(over.error().code) == static_cast<int>(ErrorCode::kLimitExceeded));
  }
  BOOST_TEST(CountFiles(root + "/tmp") == 0u);
  BOOST_TEST(Ok(store.List()).empty());
}

BOOST_AUTO_TEST_CASE(blob_destructor_and_move_clean_temp) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  std::string temp;
  {
    auto upload = Ok(store.BeginUpload(100));
    OkStatus(upload.Append(AsBytes("partial")));
    temp = upload.temp_path();
    BOOST_TEST(fs::exists(temp));
  }
  BOOST_TEST(!fs::exists(temp));
  {
    auto upload = Ok(store.BeginUpload(100));
    OkStatus(upload.Append(AsBytes("abc")));
    OkStatus(upload.Finish());
    temp = upload.temp_path();
    Upload moved = std::move(upload);
    BOOST_TEST(fs::exists(temp));
    BOOST_TEST(moved.temp_path() == temp);
  }
  BOOST_TEST(!fs::exists(temp));
  BOOST_TEST(CountFiles(root + "/tmp") == 0u);
}

BOOST_AUTO_TEST_CASE(blob_remove_stale_uploads) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root, "s7"));
  BOOST_TEST(fs::is_directory(root + "/tmp/s7"));
  std::ofstream(root + "/tmp/upload-crashed") << "left over";
  fs::create_directory(root + "/tmp/sub");
  std::ofstream(root + "/tmp/sub/file") << "x";
  auto upload = Ok(store.BeginUpload(10));
  BOOST_TEST(upload.temp_path().starts_with(root + "/tmp/s7/upload-"));
  OkStatus(upload.Append(AsBytes("abc")));
  OkStatus(upload.Finish());
  auto in_flight = Ok(store.BeginUpload(10));  // another upload, still streaming
  OkStatus(in_flight.Append(AsBytes("ab")));
  OkStatus(store.Commit(upload));
  BOOST_TEST((Ok(store.UploadEntries()) == std::vector<std::string>{"s7", "sub", "upload-crashed"}));
  OkStatus(store.RemoveUploads("upload-crashed"));
  OkStatus(store.RemoveUploads("sub"));
  BOOST_TEST(!fs::exists(root + "/tmp/upload-crashed"));
  BOOST_TEST(!fs::exists(root + "/tmp/sub"));
  BOOST_TEST(fs::exists(in_flight.temp_path()), "another folder is kept");
  for (const char* bad : {"", ".", "..", "../data", "s7/.."}) BOOST_TEST(!store.RemoveUploads(bad).has_value());
  OkStatus(store.RemoveUploads("s7"));
  BOOST_TEST(CountFiles(root + "/tmp") == 0u);
  // Removed under a live store (its server was judged dead while its
  // catalog connection was down): the next upload makes the folder again.
  auto after = Ok(store.BeginUpload(10));
  BOOST_TEST(after.temp_path().starts_with(root + "/tmp/s7/upload-"));
  BOOST_TEST(store.Has(kAbcSha));  // blobs untouched
  BOOST_TEST(!BlobStore::Open(root, "../x").has_value());
}

// Two stores on one folder (two servers on a shared filesystem) publish the
// same content: the first blob stays, the second copy is dropped, never
// replacing the file a reader may have open.
BOOST_AUTO_TEST_CASE(blob_publish_never_replaces_a_blob) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto a = Ok(BlobStore::Open(root, "s1"));
  auto b = Ok(BlobStore::Open(root, "s2"));
  auto first = Ok(a.BeginUpload(10));
  auto second = Ok(b.BeginUpload(10));
  for (Upload* u : {&first, &second}) {
    OkStatus(u->Append(AsBytes("abc")));
    OkStatus(u->Finish());
  }
  OkStatus(a.Commit(first));
  struct stat before{};
  BOOST_REQUIRE_EQUAL(::stat(a.PathOf(kAbcSha).c_str(), &before), 0);
  OkStatus(b.Commit(second));
  struct stat after{};
  BOOST_REQUIRE_EQUAL(::stat(b.PathOf(kAbcSha).c_str(), &after), 0);
  BOOST_TEST(before.st_ino == after.st_ino);
  BOOST_TEST(after.st_nlink == 1u, "the upload's own name is gone");
  BOOST_TEST(CountFiles(root + "/tmp/s1") == 0u);
  BOOST_TEST(CountFiles(root + "/tmp/s2") == 0u);
}

BOOST_AUTO_TEST_CASE(blob_bad_digests_are_refused) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  std::ofstream(dir.path / "victim") << "do not delete";
  const std::vector<std::string> bad = {
      "",
      "abc",
      "../../victim",
      std::string(64, 'A'),                         // upper case
      std::string(63, 'a'),                         // short
      std::string(65, 'a'),                         // long
      "../" + std::string(61, 'a'),                 // traversal, right length
      std::string(62, 'a') + "/.",                  // slash
      std::string(63, 'a') + std::string(1, '\0'),  // NUL
      std::string(63, 'a') + "g",
  };
  for (const std::string& digest : bad) {
    BOOST_TEST(store.PathOf(digest).empty());
    BOOST_TEST(!store.Has(digest));
    BOOST_TEST(!store.Remove(digest).has_value());
  }
  BOOST_TEST(fs::exists(dir.path / "victim"));
  BOOST_TEST(!BlobStore::Open("").has_value());
}

}  // namespace
}  // namespace ckptguard::daemon

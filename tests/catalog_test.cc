// Tests of the registry's storage layer: the SQLite Catalog (schema
// versioning, checkpoints with manifest and findings, keys, hashed tokens, the
// append-only audit log, concurrent writers) and the content-addressed
// BlobStore (streaming uploads, limits, commit, digest validation).
#define BOOST_TEST_MODULE catalog_test
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdint>
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

// Exec runs SQL through a separate raw connection; returns the sqlite code.
int RawExec(const std::string& db_path, const std::string& sql, std::string* err_out = nullptr) {
  sqlite3* db = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  if (err_out != nullptr && err != nullptr) *err_out = err;
  sqlite3_free(err);
  sqlite3_close(db);
  return rc;
}

// RawCount runs a one-number query through a separate raw connection.
int64_t RawCount(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  int64_t out = -1;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
    out = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

// --- Catalog: schema -------------------------------------------------------

BOOST_AUTO_TEST_CASE(open_fresh_creates_version_2) {
  TempDir dir;
  const std::string path = (dir.path / "catalog.db").string();
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(fs::exists(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == kCatalogSchemaVersion);
  BOOST_TEST(Ok(catalog->SchemaVersion()) == 2);
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
  BOOST_TEST(!Ok(catalog->ActiveKey()).has_value());
}

BOOST_AUTO_TEST_CASE(open_refuses_empty_path_and_folder) {
  TempDir dir;
  BOOST_TEST(!Catalog::Open("").has_value());
  BOOST_TEST(!Catalog::Open(dir.path.string()).has_value());
}

BOOST_AUTO_TEST_CASE(reopen_keeps_data) {
  TempDir dir;
  const std::string path = (dir.path / "catalog.db").string();
  int64_t id = 0;
  {
    auto catalog = Ok(Catalog::Open(path));
    id = Ok(catalog->InsertCheckpoint(MakeRecord("resnet", "v1", Sha(1))));
    OkStatus(catalog->AddToken("ci", Sha(50), "write"));
  }
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == 2);
  auto found = Ok(catalog->FindById(id));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->name == "resnet");
  BOOST_TEST(Ok(catalog->FindToken(Sha(50))).has_value());
}

BOOST_AUTO_TEST_CASE(newer_schema_version_is_refused) {
  TempDir dir;
  const std::string path = (dir.path / "catalog.db").string();
  { auto catalog = Ok(Catalog::Open(path)); }
  BOOST_REQUIRE_EQUAL(RawExec(path, "INSERT INTO schema_version (version, applied_at) VALUES (" +
                                        std::to_string(kCatalogSchemaVersion + 1) + ", 0)"),
                      SQLITE_OK);
  auto reopened = Catalog::Open(path);
  BOOST_REQUIRE(!reopened.has_value());
  BOOST_TEST(static_cast<int>(reopened.error().code) == static_cast<int>(ErrorCode::kUnsupportedFormat));
  BOOST_TEST(reopened.error().detail.find("newer") != std::string::npos, reopened.error().ToString());
}

BOOST_AUTO_TEST_CASE(pragmas_are_set) {
  TempDir dir;
  const std::string path = (dir.path / "catalog.db").string();
  auto catalog = Ok(Catalog::Open(path));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", "ABC")).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", std::string(64, 'A'))).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("x", "y", Sha(1), "bogus")).has_value());
  BOOST_TEST(!catalog->InsertCheckpoint(MakeRecord("", "y", Sha(1))).has_value());
  BOOST_TEST(!catalog->FindBySha256("../../etc/passwd").has_value());
  BOOST_TEST(Ok(catalog->ListCheckpoints({})).empty());
}

BOOST_AUTO_TEST_CASE(rejected_rows_are_listed_but_not_found_by_digest) {
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  const std::string raw_token = "ckg_RAW_SECRET_TOKEN_0123456789";
  const std::string token_file = dir.Write("token", raw_token);
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

    // The digest is in the database files; the raw token is not.
    std::string bytes = ReadFile(path);
    if (fs::exists(path + "-wal")) bytes += ReadFile(path + "-wal");
    BOOST_TEST(bytes.find(token_sha) != std::string::npos);
    BOOST_TEST(bytes.find(raw_token) == std::string::npos);

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
  std::string bytes = ReadFile(path);
  if (fs::exists(path + "-wal")) bytes += ReadFile(path + "-wal");
  BOOST_TEST(bytes.find(raw_token) == std::string::npos);
}

// Migration 1 -> 2 on a catalog as version 1 left it: tokens keep their
// names, hashes, scopes and revocations; read tokens and prefixes appear;
// the registry id is created once and kept.
BOOST_AUTO_TEST_CASE(migration_2_keeps_tokens_and_adds_scopes_prefixes_and_registry_id) {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  // The version-1 tokens table and schema_version row, as version 1 created them.
  BOOST_REQUIRE_EQUAL(RawExec(path,
                              "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL);"
                              "INSERT INTO schema_version VALUES (1, 0);"
                              "CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                              " token_sha256 TEXT NOT NULL UNIQUE CHECK (length(token_sha256) = 64),"
                              " scope TEXT NOT NULL CHECK (scope IN ('write', 'admin')), created_at INTEGER NOT NULL,"
                              " revoked INTEGER NOT NULL DEFAULT 0, revoked_at INTEGER NOT NULL DEFAULT 0);"
                              "INSERT INTO tokens (name, token_sha256, scope, created_at) VALUES ('ci', '" + Sha(1) + "', 'write', 5);"
                              "INSERT INTO tokens (name, token_sha256, scope, created_at, revoked) VALUES ('old', '" + Sha(2) + "', 'admin', 6, 1);"),
                      SQLITE_OK);
  auto catalog = Ok(Catalog::Open(path));
  BOOST_TEST(Ok(catalog->SchemaVersion()) == 2);
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
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
  BOOST_TEST(RawExec(path, "UPDATE audit SET result = 'ok'", &err) != SQLITE_OK);
  BOOST_TEST(err.find("append-only") != std::string::npos, err);
  BOOST_TEST(RawExec(path, "DELETE FROM audit", &err) != SQLITE_OK);
  BOOST_TEST(err.find("append-only") != std::string::npos, err);
  BOOST_TEST(Ok(catalog->ListAudit()).size() == 3u);
  BOOST_TEST(Ok(catalog->ListAudit())[0].result == "stored");
}

BOOST_AUTO_TEST_CASE(foreign_keys_cascade) {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  auto catalog = Ok(Catalog::Open(path));
  CheckpointRecord r = MakeRecord("m", "v", Sha(1));
  r.manifest = {{"w", "float32", {2}}};
  r.findings = {{"CKG-I001", "info", "m", "", 0, ""}};
  Ok(catalog->InsertCheckpoint(r));
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM manifest") == 1);
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM findings") == 1);
  BOOST_REQUIRE_EQUAL(RawExec(path, "PRAGMA foreign_keys = ON; DELETE FROM checkpoints;"), SQLITE_OK);
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM manifest") == 0);
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM findings") == 0);
  // A manifest row must name an existing checkpoint.
  BOOST_TEST(RawExec(path, "PRAGMA foreign_keys = ON; INSERT INTO manifest (checkpoint_id, position, key, dtype, shape) "
                           "VALUES (999, 0, 'k', 'f', '')") != SQLITE_OK);
}

BOOST_AUTO_TEST_CASE(failed_insert_rolls_back_whole_transaction) {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  auto catalog = Ok(Catalog::Open(path));
  // A trigger that aborts on one manifest key makes the third statement of
  // the insert fail after the checkpoint row and other entries were written.
  BOOST_REQUIRE_EQUAL(RawExec(path, "CREATE TRIGGER boom BEFORE INSERT ON manifest WHEN NEW.key = 'boom' "
                                    "BEGIN SELECT RAISE(ABORT, 'boom'); END;"),
                      SQLITE_OK);
  CheckpointRecord r = MakeRecord("m", "v", Sha(1));
  r.manifest = {{"ok", "float32", {1}}, {"boom", "float32", {1}}};
  auto failed = catalog->InsertCheckpoint(r);
  BOOST_REQUIRE(!failed.has_value());
  BOOST_TEST(failed.error().detail.find("insert manifest") != std::string::npos, failed.error().ToString());
  BOOST_TEST(failed.error().detail.find("boom") != std::string::npos, failed.error().ToString());
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM checkpoints") == 0);
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM manifest") == 0);
  // The connection is usable afterwards (no transaction left open).
  r.manifest = {{"ok", "float32", {1}}};
  Ok(catalog->InsertCheckpoint(r));
  BOOST_TEST(RawCount(path, "SELECT COUNT(*) FROM checkpoints") == 1);
}

BOOST_AUTO_TEST_CASE(open_refuses_a_file_that_is_not_a_database) {
  TempDir dir;
  const std::string path = dir.Write("junk.db", std::string(4096, 'x'));
  auto opened = Catalog::Open(path);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST(opened.error().detail.find("not a database") != std::string::npos, opened.error().ToString());
}

BOOST_AUTO_TEST_CASE(waits_for_another_writer) {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  auto catalog = Ok(Catalog::Open(path));
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
  TempDir dir;
  auto catalog = Ok(Catalog::Open((dir.path / "c.db").string()));
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

BOOST_AUTO_TEST_CASE(blob_remove_temp) {
  TempDir dir;
  const std::string root = (dir.path / "data").string();
  auto store = Ok(BlobStore::Open(root));
  std::ofstream(root + "/tmp/upload-crashed") << "left over";
  fs::create_directory(root + "/tmp/sub");
  std::ofstream(root + "/tmp/sub/file") << "x";
  auto upload = Ok(store.BeginUpload(10));
  OkStatus(upload.Append(AsBytes("abc")));
  OkStatus(upload.Finish());
  OkStatus(store.Commit(upload));
  OkStatus(store.RemoveTemp());
  BOOST_TEST(CountFiles(root + "/tmp") == 0u);
  BOOST_TEST(store.Has(kAbcSha));  // blobs untouched
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

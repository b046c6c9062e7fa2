// SqliteCatalog: the Catalog on SQLite (the default backend).
#include "ckptguard/daemon/catalog.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "catalog_internal.h"

namespace ckptguard::daemon {
namespace {

using catalog_internal::CheckpointFromRow;
using catalog_internal::DecideTag;
using catalog_internal::KeyFromRow;
using catalog_internal::TokenFromRow;
using catalog_internal::InvalidArgument;
using catalog_internal::TagDecision;
using catalog_internal::IsSha256Hex;
using catalog_internal::kWhere;
using catalog_internal::Now;
using catalog_internal::ShapeFromText;
using catalog_internal::ShapeToText;

constexpr int kBusyTimeoutMs = 5000;

// kMigrations[i] takes the schema from version i to version i + 1. Each runs
// in one transaction together with the schema_version row that records it.
// Append new steps; never edit a released one.
constexpr std::string_view kMigrations[] = {
    // 0 -> 1: the first schema.
    R"sql(
CREATE TABLE checkpoints (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  name           TEXT    NOT NULL,
  tag            TEXT    NOT NULL,
  sha256         TEXT    NOT NULL CHECK (length(sha256) = 64),
  size           INTEGER NOT NULL CHECK (size >= 0),
  format         TEXT    NOT NULL,
  verdict        TEXT    NOT NULL,
  status         TEXT    NOT NULL CHECK (status IN ('stored', 'rejected', 'revoked')),
  signature      TEXT    NOT NULL DEFAULT '',
  key_id         TEXT    NOT NULL DEFAULT '',
  uploader       TEXT    NOT NULL,
  created_at     INTEGER NOT NULL,
  revoked_reason TEXT    NOT NULL DEFAULT '',
  revoked_by     TEXT    NOT NULL DEFAULT '',
  revoked_at     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX checkpoints_sha256 ON checkpoints (sha256);
CREATE INDEX checkpoints_name_tag ON checkpoints (name, tag);
CREATE INDEX checkpoints_status ON checkpoints (status);

CREATE TABLE manifest (
  id            INTEGER PRIMARY KEY,
  checkpoint_id INTEGER NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
  position      INTEGER NOT NULL,
  key           TEXT    NOT NULL,
  dtype         TEXT    NOT NULL,
  shape         TEXT    NOT NULL  -- comma list of sizes, "" for a scalar
);
CREATE INDEX manifest_checkpoint ON manifest (checkpoint_id, position);

CREATE TABLE findings (
  id            INTEGER PRIMARY KEY,
  checkpoint_id INTEGER NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
  position      INTEGER NOT NULL,
  rule          TEXT    NOT NULL,
  severity      TEXT    NOT NULL,
  message       TEXT    NOT NULL,
  entry         TEXT    NOT NULL,
  byte_offset   INTEGER NOT NULL,
  global_name   TEXT    NOT NULL
);
CREATE INDEX findings_checkpoint ON findings (checkpoint_id, position);

CREATE TABLE keys (
  key_id         TEXT    PRIMARY KEY NOT NULL,
  public_pem     TEXT    NOT NULL,
  curve          TEXT    NOT NULL,
  state          TEXT    NOT NULL CHECK (state IN ('active', 'retired', 'revoked')),
  created_at     INTEGER NOT NULL,
  revoked_reason TEXT    NOT NULL DEFAULT '',
  revoked_at     INTEGER NOT NULL DEFAULT 0
);
-- At most one active key, whatever the code does.
CREATE UNIQUE INDEX keys_one_active ON keys (state) WHERE state = 'active';

CREATE TABLE tokens (
  id           INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL UNIQUE,
  token_sha256 TEXT    NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
  scope        TEXT    NOT NULL CHECK (scope IN ('write', 'admin')),
  created_at   INTEGER NOT NULL,
  revoked      INTEGER NOT NULL DEFAULT 0,
  revoked_at   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit (
  id     INTEGER PRIMARY KEY AUTOINCREMENT,
  at     INTEGER NOT NULL,
  who    TEXT    NOT NULL,
  action TEXT    NOT NULL,
  target TEXT    NOT NULL,
  result TEXT    NOT NULL,
  detail TEXT    NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
)sql",
    // 1 -> 2: the registry's identity (registry_meta: a stable registry id
    // the signatures name), and token scopes read/write/admin with the name
    // prefixes a write token may push under (SQLite cannot alter a CHECK,
    // so the table is rebuilt; ids and hashes are kept).
    R"sql(
CREATE TABLE registry_meta (
  key   TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
);
CREATE TABLE tokens_v2 (
  id           INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL UNIQUE,
  token_sha256 TEXT    NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
  scope        TEXT    NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
  prefixes     TEXT    NOT NULL DEFAULT '',  -- one name prefix per line; '' = any name
  created_at   INTEGER NOT NULL,
  revoked      INTEGER NOT NULL DEFAULT 0,
  revoked_at   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tokens_v2 (id, name, token_sha256, scope, prefixes, created_at, revoked, revoked_at)
  SELECT id, name, token_sha256, scope, '', created_at, revoked, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;
)sql",
    // 2 -> 3: servers sharing the blob store and their blob reservations
    // (a blob is reserved from before it is published until its row
    // commits; sweeps leave reserved blobs alone). AUTOINCREMENT: ids are
    // never reused (a server's upload folder is named by its id).
    R"sql(
CREATE TABLE servers (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  host       TEXT    NOT NULL,
  pid        INTEGER NOT NULL,
  started_at INTEGER NOT NULL
);
CREATE TABLE blob_reservations (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  sha256     TEXT    NOT NULL CHECK (length(sha256) = 64),
  server_id  INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX blob_reservations_sha256 ON blob_reservations (sha256);
)sql",
};
static_assert(std::size(kMigrations) == kCatalogSchemaVersion,
              "one migration step per schema version");

// SqliteError turns the connection's last error into an Error naming the
// operation. Constraint violations (duplicate token name, bad state...) are the
// caller's: kInvalidArgument; a database still busy or locked by another
// writer once busy_timeout has passed is kUnavailable (the request may be
// made again); the rest is kIo.
std::unexpected<Error> SqliteError(sqlite3* db, std::string_view op) {
  const int code = db != nullptr ? sqlite3_errcode(db) : SQLITE_NOMEM;
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
  const int primary = code & 0xff;
  const ErrorCode ec = primary == SQLITE_CONSTRAINT                         ? ErrorCode::kInvalidArgument
                       : primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? ErrorCode::kUnavailable
                                                                            : ErrorCode::kIo;
  return MakeError(ec, 0, std::string(op) + ": " + msg, std::string(kWhere));
}

// StmtCache keeps a catalog connection's prepared statements for reuse,
// by SQL text: compiling a statement costs far more than running it (a push
// runs a dozen, and compiling them was most of a small push's CPU time).
// Statements are compiled once with SQLITE_PREPARE_PERSISTENT; SQLite
// recompiles one itself if the schema changes under it.
class StmtCache {
 public:
  StmtCache() = default;
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;
  ~StmtCache() {
    for (auto& [sql, stmts] : free_) {
      for (sqlite3_stmt* stmt : stmts) sqlite3_finalize(stmt);
    }
  }
  // Take returns a reset statement for `sql`, or nullptr when none is free.
  sqlite3_stmt* Take(std::string_view sql) {
    std::lock_guard lock(mu_);
    auto it = free_.find(std::string(sql));
    if (it == free_.end() || it->second.empty()) return nullptr;
    sqlite3_stmt* stmt = it->second.back();
    it->second.pop_back();
    return stmt;
  }
  // Give takes back a statement that Take gave or Prepare made for `sql`,
  // reset and unbound. (Every statement's SQL is a literal: a fixed set.)
  void Give(std::string_view sql, sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    std::lock_guard lock(mu_);
    free_[std::string(sql)].push_back(stmt);
  }

  // For and Register map a connection to its cache (OpenSqlite registers
  // its connection, SqliteCatalog::Impl's destructor unregisters it).
  static StmtCache* For(sqlite3* db) {
    std::lock_guard lock(registry_mu_);
    auto it = registry_.find(db);
    return it == registry_.end() ? nullptr : it->second;
  }
  static void Register(sqlite3* db, StmtCache* cache) {
    std::lock_guard lock(registry_mu_);
    if (cache != nullptr) {
      registry_[db] = cache;
    } else {
      registry_.erase(db);
    }
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::vector<sqlite3_stmt*>> free_;
  static inline std::mutex registry_mu_;
  static inline std::unordered_map<sqlite3*, StmtCache*> registry_;
};

// Stmt owns one prepared statement (given back to its connection's
// StmtCache when it has one). Bind* take 1-based indexes; Step returns true
// for a row, false when done.
class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, std::string_view sql, std::string_view op) {
    StmtCache* cache = StmtCache::For(db);
    if (cache != nullptr) {
      if (sqlite3_stmt* cached = cache->Take(sql)) return Stmt(db, cached, op, cache, sql);
    }
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), cache != nullptr ? SQLITE_PREPARE_PERSISTENT : 0,
                           &stmt, nullptr) != SQLITE_OK) {
      return SqliteError(db, op);
    }
    return Stmt(db, stmt, op, cache, sql);
  }
  Stmt(Stmt&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), op_(other.op_), cache_(other.cache_),
        sql_(other.sql_) {}
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (cache_ != nullptr) {
      cache_->Give(sql_, stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }

  Status Bind(int i, std::string_view text) {
    if (sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK) {
      return SqliteError(db_, op_);
    }
    return OkStatus();
  }
  Status Bind(int i, int64_t v) {
    if (sqlite3_bind_int64(stmt_, i, v) != SQLITE_OK) return SqliteError(db_, op_);
    return OkStatus();
  }
  Result<bool> Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, op_);
  }
  // Run steps a statement that returns no rows.
  Status Run() {
    CKG_ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return OkStatus();
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  // Reset readies the statement for another Step with new bindings.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, std::string_view op, StmtCache* cache, std::string_view sql)
      : db_(db), stmt_(stmt), op_(op), cache_(cache), sql_(sql) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string_view op_;  // always a literal
  StmtCache* cache_;     // null: finalized when done
  std::string_view sql_;  // the cache's key: always a literal
};

// Exec runs fixed SQL text (no parameters: pragmas, schema steps, BEGIN/COMMIT).
Status Exec(sqlite3* db, std::string_view sql, std::string_view op) {
  const std::string text(sql);
  if (sqlite3_exec(db, text.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) return SqliteError(db, op);
  return OkStatus();
}

// InTransaction runs `body` between BEGIN (IMMEDIATE for writes) and COMMIT,
// rolling back when the body or the commit fails.
template <typename Fn>
auto InTransaction(sqlite3* db, bool write, std::string_view op, Fn&& body) -> decltype(body()) {
  CKG_TRY(Exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", op));
  auto result = body();
  if (!result) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return result;
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    auto err = SqliteError(db, op);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return err;
  }
  return result;
}

Result<int> ReadSchemaVersion(sqlite3* db) {
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                                             "read schema version"));
  CKG_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return 0;
  const int64_t v = s.Int(0);
  if (v < 0 || v > std::numeric_limits<int>::max()) {
    return MakeError(ErrorCode::kMalformed, 0, "schema_version holds an impossible version", std::string(kWhere));
  }
  return static_cast<int>(v);
}

Status Migrate(sqlite3* db) {
  CKG_TRY(Exec(db,
               "CREATE TABLE IF NOT EXISTS schema_version ("
               "version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
               "create schema_version"));
  CKG_ASSIGN_OR_RETURN(int version, ReadSchemaVersion(db));
  if (version > kCatalogSchemaVersion) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     "catalog schema version " + std::to_string(version) + " is newer than this build's " +
                         std::to_string(kCatalogSchemaVersion) + "; upgrade ckptguardd",
                     std::string(kWhere));
  }
  while (version < kCatalogSchemaVersion) {
    const int next = version + 1;
    Status step = InTransaction(db, true, "migrate schema", [&]() -> Status {
      // Re-read inside the write lock: another process may have migrated.
      CKG_ASSIGN_OR_RETURN(int now_version, ReadSchemaVersion(db));
      if (now_version >= next) return OkStatus();
      CKG_TRY(Exec(db, kMigrations[version], "migrate schema"));
      CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                                                 "record schema version"));
      CKG_TRY(s.Bind(1, int64_t{next}));
      CKG_TRY(s.Bind(2, Now()));
      return s.Run();
    });
    if (!step) return step;
    CKG_ASSIGN_OR_RETURN(version, ReadSchemaVersion(db));
    if (version < next) return MakeError(ErrorCode::kInternal, 0, "migration did not record its version", std::string(kWhere));
  }
  return OkStatus();
}

}  // namespace

// SqliteCatalog: one connection, serialized by a mutex; writes are BEGIN
// IMMEDIATE transactions (SQLite's single writer, across processes too).
class SqliteCatalog final : public Catalog {
 public:
  struct Impl;
  explicit SqliteCatalog(std::unique_ptr<Impl> impl);
  ~SqliteCatalog() override;

  std::string_view Backend() const override { return "sqlite"; }
  Result<int> SchemaVersion() override;
  Result<int64_t> InsertCheckpoint(const CheckpointRecord& record, const AuditRecord* audit,
                                   std::optional<CheckpointRecord>* revoked, TagGuard* tag_guard) override;
  Result<std::optional<CheckpointRecord>> FindTagHolder(const std::string& name, const std::string& tag) override;
  Result<std::optional<CheckpointRecord>> FindByNameTag(const std::string& sha256, const std::string& name,
                                                        const std::string& tag) override;
  Result<std::vector<CheckpointRecord>> ListCheckpoints(const CheckpointQuery& query) override;
  Result<std::optional<CheckpointRecord>> FindBySha256(const std::string& sha256) override;
  Result<std::optional<CheckpointRecord>> FindById(int64_t id) override;
  Result<bool> RevokeCheckpoint(const std::string& sha256, const std::string& reason, const std::string& by) override;
  Result<std::vector<std::string>> ReferencedBlobs() override;
  Status AddKey(const KeyRecord& key) override;
  Result<std::vector<KeyRecord>> ListKeys() override;
  Result<std::optional<KeyRecord>> ActiveKey() override;
  Result<bool> RevokeKey(const std::string& key_id, const std::string& reason) override;
  Status AddToken(const std::string& name, const std::string& token_sha256, const std::string& scope,
                  const std::vector<std::string>& prefixes) override;
  Result<std::optional<TokenRecord>> FindToken(const std::string& token_sha256) override;
  Result<bool> RevokeToken(const std::string& name) override;
  Result<std::vector<TokenRecord>> ListTokens() override;
  Result<std::string> EnsureRegistryId(const std::string& candidate) override;
  Status Audit(const AuditRecord& record) override;
  Result<std::vector<AuditRecord>> ListAudit(int64_t after_id, uint32_t limit) override;
  Result<int64_t> RegisterServer(const std::string& host, int64_t pid) override;
  Status RetireServer(int64_t server) override;
  Result<int64_t> ReserveBlob(const std::string& sha256, int64_t server) override;
  Status ReleaseBlob(int64_t reservation) override;
  Result<std::vector<int64_t>> PruneServers() override;
  Result<bool> SweepBlob(const std::string& sha256, const std::function<Status()>& remove) override;

 private:
  std::unique_ptr<Impl> impl_;
};

struct SqliteCatalog::Impl {
  sqlite3* db = nullptr;
  std::mutex mu;
  // The servers this object registered: the only live ones (SQLite sweeps
  // only under DATA/lock, when no other process serves the folder).
  std::vector<int64_t> servers;
  std::unique_ptr<StmtCache> statements;
  ~Impl() {
    if (db != nullptr) StmtCache::Register(db, nullptr);
    statements.reset();  // finalizes the cached statements before the close
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

SqliteCatalog::SqliteCatalog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteCatalog::~SqliteCatalog() = default;

Result<std::unique_ptr<Catalog>> catalog_internal::OpenSqlite(const std::string& db_path) {
  using Impl = SqliteCatalog::Impl;
  if (db_path.empty()) return InvalidArgument("empty catalog path");
  try {
    auto impl = std::make_unique<Impl>();
    // The catalog holds token hashes and the audit log: owner-only. SQLite
    // gives the -wal and -shm files the database file's mode, so the file is
    // created 0600 here, and files an older version made wider are narrowed.
    {
      // O_EXCL: an existing database is never opened (and closed) here, as
      // closing any descriptor of a file drops the fcntl locks this process's
      // SQLite connections hold on it.
      const int fd = ::open(db_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd >= 0) {
        ::close(fd);
      } else if (errno != EEXIST) {
        return MakeError(ErrorCode::kIo, 0, std::string("cannot create: ") + std::strerror(errno), db_path);
      }
      for (const char* suffix : {"", "-wal", "-shm"}) {
        const std::string path = db_path + suffix;
        struct stat st{};
        if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
          ::chmod(path.c_str(), 0600);
        }
      }
    }
    const int rc = sqlite3_open_v2(db_path.c_str(), &impl->db,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                       SQLITE_OPEN_NOFOLLOW,
                                   nullptr);
    if (rc != SQLITE_OK) {
      auto err = SqliteError(impl->db, "open " + db_path);
      return err;
    }
    sqlite3 *db = impl->db;
    impl->statements = std::make_unique<StmtCache>();
    StmtCache::Register(db, impl->statements.get());
    sqlite3_extended_result_codes(db, 1);
    if (sqlite3_busy_timeout(db, kBusyTimeoutMs) != SQLITE_OK) return SqliteError(db, "set busy_timeout");
    CKG_TRY(Exec(db, "PRAGMA foreign_keys = ON", "enable foreign keys"));
    CKG_TRY(Exec(db, "PRAGMA synchronous = FULL", "set synchronous"));
    {
      CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "PRAGMA journal_mode = WAL", "set WAL journal mode"));
      CKG_ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row || s.Text(0) != "wal") {
        return MakeError(ErrorCode::kIo, 0, "set WAL journal mode: the database refused WAL", db_path);
      }
    }
    CKG_TRY(Migrate(db));
    return std::unique_ptr<Catalog>(new SqliteCatalog(std::move(impl)));
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kIo, 0, "open catalog: out of memory", std::string(kWhere));
  }
}

Result<int> SqliteCatalog::SchemaVersion() {
  std::lock_guard lock(impl_->mu);
  return ReadSchemaVersion(impl_->db);
}

namespace {

// AppendAudit inserts one audit row; the caller holds the mutex and a transaction.
Status AppendAudit(sqlite3* db, const AuditRecord& record) {
  if (record.action.empty()) return InvalidArgument("audit: empty action");
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                             "INSERT INTO audit (at, who, action, target, result, detail) "
                                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                             "append audit record"));
  CKG_TRY(s.Bind(1, record.at != 0 ? record.at : Now()));
  CKG_TRY(s.Bind(2, record.who));
  CKG_TRY(s.Bind(3, record.action));
  CKG_TRY(s.Bind(4, record.target));
  CKG_TRY(s.Bind(5, record.result));
  CKG_TRY(s.Bind(6, record.detail));
  return s.Run();
}

}  // namespace

namespace {

// TagHolderLocked: the newest stored or revoked row of NAME:TAG (a rejected
// push never takes a tag). The caller holds the mutex.
Result<std::optional<CheckpointRecord>> TagHolderLocked(sqlite3* db, const std::string& name, const std::string& tag) {
  constexpr std::string_view sql = "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS
                                   " FROM checkpoints WHERE name = ?1 AND tag = ?2 AND status IN ('stored', 'revoked')"
                                   " ORDER BY id DESC LIMIT 1";
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, sql, "find tag holder"));
  CKG_TRY(s.Bind(1, name));
  CKG_TRY(s.Bind(2, tag));
  CKG_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<CheckpointRecord>();
  return std::optional<CheckpointRecord>(CheckpointFromRow(s));
}

// ReleaseLocked deletes one blob reservation. The caller holds the mutex.
Status ReleaseLocked(sqlite3* db, int64_t reservation) {
  CKG_ASSIGN_OR_RETURN(Stmt d, Stmt::Prepare(db, "DELETE FROM blob_reservations WHERE id = ?1", "release blob"));
  CKG_TRY(d.Bind(1, reservation));
  return d.Run();
}

}  // namespace

Result<std::optional<CheckpointRecord>> SqliteCatalog::FindTagHolder(const std::string& name, const std::string& tag) {
  std::lock_guard lock(impl_->mu);
  return TagHolderLocked(impl_->db, name, tag);
}

Result<int64_t> SqliteCatalog::InsertCheckpoint(const CheckpointRecord& r, const AuditRecord* audit,
                                          std::optional<CheckpointRecord>* revoked, TagGuard* tag_guard) {
  CKG_TRY(catalog_internal::CheckCheckpoint(r));
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  const bool guarded = r.status == "stored" && tag_guard != nullptr;
  const int64_t reservation = guarded ? tag_guard->reservation : 0;
  auto write = [&]() -> Result<int64_t> {
    if (r.status == "stored") {
      // Revocation is final: checked under the same write lock as the insert.
      CKG_ASSIGN_OR_RETURN(Stmt q, Stmt::Prepare(db,
                                                 "SELECT revoked_reason, revoked_by, revoked_at FROM checkpoints "
                                                 "WHERE sha256 = ?1 AND status = 'revoked' ORDER BY id DESC LIMIT 1",
                                                 "check revocation"));
      CKG_TRY(q.Bind(1, r.sha256));
      CKG_ASSIGN_OR_RETURN(bool found, q.Step());
      if (found) {
        if (revoked != nullptr) {
          CheckpointRecord row;
          row.sha256 = r.sha256;
          row.status = "revoked";
          row.revoked_reason = q.Text(0);
          row.revoked_by = q.Text(1);
          row.revoked_at = q.Int(2);
          *revoked = std::move(row);
        }
        return int64_t{0};
      }
    }
    std::string moved_from;
    if (r.status == "stored" && tag_guard != nullptr) {
      // Tags are immutable unless the guard allows a move: checked under
      // the same write lock as the insert, so two pushes racing for one
      // tag cannot both take it.
      CKG_ASSIGN_OR_RETURN(auto holder, TagHolderLocked(db, r.name, r.tag));
      TagDecision decision = DecideTag(std::move(holder), r, *tag_guard);
      if (!decision.write) return decision.id;
      moved_from = std::move(decision.moved_from);
    }
    CKG_ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db,
                              "INSERT INTO checkpoints (name, tag, sha256, size, format, verdict, status, signature, "
                              "key_id, uploader, created_at, revoked_reason, revoked_by, revoked_at) "
                              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                              "insert checkpoint"));
    CKG_TRY(s.Bind(1, r.name));
    CKG_TRY(s.Bind(2, r.tag));
    CKG_TRY(s.Bind(3, r.sha256));
    CKG_TRY(s.Bind(4, static_cast<int64_t>(r.size)));
    CKG_TRY(s.Bind(5, r.format));
    CKG_TRY(s.Bind(6, r.verdict));
    CKG_TRY(s.Bind(7, r.status));
    CKG_TRY(s.Bind(8, r.signature));
    CKG_TRY(s.Bind(9, r.key_id));
    CKG_TRY(s.Bind(10, r.uploader));
    CKG_TRY(s.Bind(11, r.created_at != 0 ? r.created_at : Now()));
    CKG_TRY(s.Bind(12, r.revoked_reason));
    CKG_TRY(s.Bind(13, r.revoked_by));
    CKG_TRY(s.Bind(14, r.revoked_at));
    CKG_TRY(s.Run());
    const int64_t id = sqlite3_last_insert_rowid(db);

    CKG_ASSIGN_OR_RETURN(Stmt m, Stmt::Prepare(db,
                                               "INSERT INTO manifest (checkpoint_id, position, key, dtype, shape) "
                                               "VALUES (?1, ?2, ?3, ?4, ?5)",
                                               "insert manifest"));
    for (size_t i = 0; i < r.manifest.size(); ++i) {
      const ManifestEntry& e = r.manifest[i];
      CKG_TRY(m.Bind(1, id));
      CKG_TRY(m.Bind(2, static_cast<int64_t>(i)));
      CKG_TRY(m.Bind(3, e.key));
      CKG_TRY(m.Bind(4, e.dtype));
      CKG_TRY(m.Bind(5, ShapeToText(e.shape)));
      CKG_TRY(m.Run());
      m.Reset();
    }
    CKG_ASSIGN_OR_RETURN(Stmt f, Stmt::Prepare(db,
                                               "INSERT INTO findings (checkpoint_id, position, rule, severity, "
                                               "message, entry, byte_offset, global_name) "
                                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                               "insert findings"));
    for (size_t i = 0; i < r.findings.size(); ++i) {
      const FindingRecord& e = r.findings[i];
      CKG_TRY(f.Bind(1, id));
      CKG_TRY(f.Bind(2, static_cast<int64_t>(i)));
      CKG_TRY(f.Bind(3, e.rule));
      CKG_TRY(f.Bind(4, e.severity));
      CKG_TRY(f.Bind(5, e.message));
      CKG_TRY(f.Bind(6, e.entry));
      CKG_TRY(f.Bind(7, static_cast<int64_t>(e.offset)));
      CKG_TRY(f.Bind(8, e.global));
      CKG_TRY(f.Run());
      f.Reset();
    }
    if (audit != nullptr) {
      AuditRecord with_target = *audit;
      if (with_target.target.empty()) with_target.target = r.sha256;
      CKG_TRY(AppendAudit(db, with_target));
    }
    if (!moved_from.empty()) {
      // A moved tag is audited in the transaction that moves it.
      CKG_TRY(AppendAudit(db, {0, 0, audit != nullptr ? audit->who : r.uploader, "retag", r.name + ":" + r.tag, "ok",
                               "tag moved from " + moved_from + " to " + r.sha256}));
    }
    return id;
  };
  return InTransaction(db, true, "insert checkpoint", [&]() -> Result<int64_t> {
    if (guarded) {
      tag_guard->signer_revoked = false;
      if (reservation != 0) {
        CKG_ASSIGN_OR_RETURN(Stmt q, Stmt::Prepare(db, "SELECT 1 FROM blob_reservations WHERE id = ?1 AND sha256 = ?2",
                                                   "check blob reservation"));
        CKG_TRY(q.Bind(1, reservation));
        CKG_TRY(q.Bind(2, r.sha256));
        CKG_ASSIGN_OR_RETURN(bool held, q.Step());
        if (!held) return catalog_internal::ReservationLost(r.sha256);
      }
      if (!r.key_id.empty()) {
        CKG_ASSIGN_OR_RETURN(Stmt k, Stmt::Prepare(db, "SELECT 1 FROM keys WHERE key_id = ?1 AND state = 'revoked'",
                                                   "check signer key"));
        CKG_TRY(k.Bind(1, r.key_id));
        CKG_ASSIGN_OR_RETURN(bool key_revoked, k.Step());
        if (key_revoked) {
          tag_guard->signer_revoked = true;  // the reservation stays: the caller signs again
          return int64_t{0};
        }
      }
    }
    CKG_ASSIGN_OR_RETURN(const int64_t id, write());
    if (reservation != 0) CKG_TRY(ReleaseLocked(db, reservation));
    return id;
  });
}

Result<std::vector<CheckpointRecord>> SqliteCatalog::ListCheckpoints(const CheckpointQuery& query) {
  CKG_ASSIGN_OR_RETURN(const int64_t limit, catalog_internal::CheckpointLimit(query));
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  // Two constant statements: with a name, "name = ?1" lets the (name, tag)
  // index drive the search; without one, the walk goes down the ids.
  constexpr std::string_view kByName = "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS
                                       " FROM checkpoints WHERE name = ?1 AND (?2 = '' OR tag = ?2)"
                                       " AND (?3 = '' OR status = ?3) AND (?4 <= 0 OR id < ?4)"
                                       " ORDER BY id DESC LIMIT ?5";
  constexpr std::string_view kAny = "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS
                                    " FROM checkpoints WHERE ?1 = '' AND (?2 = '' OR tag = ?2)"
                                    " AND (?3 = '' OR status = ?3) AND (?4 <= 0 OR id < ?4)"
                                    " ORDER BY id DESC LIMIT ?5";
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, query.name.empty() ? kAny : kByName, "list checkpoints"));
  CKG_TRY(s.Bind(1, query.name));
  CKG_TRY(s.Bind(2, query.tag));
  CKG_TRY(s.Bind(3, query.status));
  CKG_TRY(s.Bind(4, query.before_id));
  CKG_TRY(s.Bind(5, limit));
  std::vector<CheckpointRecord> out;
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(CheckpointFromRow(s));
  }
  return out;
}

namespace {

// LoadDetails fills the manifest and findings of `r` (r.id set).
Status LoadDetails(sqlite3* db, CheckpointRecord& r) {
  CKG_ASSIGN_OR_RETURN(Stmt m, Stmt::Prepare(db,
                                             "SELECT key, dtype, shape FROM manifest WHERE checkpoint_id = ?1 "
                                             "ORDER BY position",
                                             "read manifest"));
  CKG_TRY(m.Bind(1, r.id));
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, m.Step());
    if (!row) break;
    ManifestEntry e;
    e.key = m.Text(0);
    e.dtype = m.Text(1);
    CKG_ASSIGN_OR_RETURN(e.shape, ShapeFromText(m.Text(2)));
    r.manifest.push_back(std::move(e));
  }
  CKG_ASSIGN_OR_RETURN(Stmt f, Stmt::Prepare(db,
                                             "SELECT rule, severity, message, entry, byte_offset, global_name "
                                             "FROM findings WHERE checkpoint_id = ?1 ORDER BY position",
                                             "read findings"));
  CKG_TRY(f.Bind(1, r.id));
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, f.Step());
    if (!row) break;
    FindingRecord e;
    e.rule = f.Text(0);
    e.severity = f.Text(1);
    e.message = f.Text(2);
    e.entry = f.Text(3);
    e.offset = static_cast<uint64_t>(f.Int(4));
    e.global = f.Text(5);
    r.findings.push_back(std::move(e));
  }
  return OkStatus();
}

// FindCheckpointLocked: the first row of `sql` (selecting
// CKG_CATALOG_CHECKPOINT_COLUMNS, parameters ?1.. bound to `params` in order) with
// its manifest and findings, read in one transaction. The caller holds the
// mutex.
template <class... Params>
Result<std::optional<CheckpointRecord>> FindCheckpointLocked(sqlite3* db, std::string_view sql, const char* what,
                                                             const Params&... params) {
  return InTransaction(db, false, what, [&]() -> Result<std::optional<CheckpointRecord>> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, sql, what));
    int index = 0;
    Status bound = OkStatus();
    ((bound = bound ? s.Bind(++index, params) : bound), ...);
    CKG_TRY(bound);
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<CheckpointRecord>();
    CheckpointRecord r = CheckpointFromRow(s);
    CKG_TRY(LoadDetails(db, r));
    return std::optional<CheckpointRecord>(std::move(r));
  });
}

}  // namespace

Result<std::optional<CheckpointRecord>> SqliteCatalog::FindBySha256(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return InvalidArgument("find checkpoint: sha256 is not 64 lower-case hex digits");
  std::lock_guard lock(impl_->mu);
  return FindCheckpointLocked(impl_->db,
                              "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS
                              " FROM checkpoints WHERE sha256 = ?1 AND status IN ('stored', 'revoked')"
                              " ORDER BY id DESC LIMIT 1",
                              "find checkpoint", sha256);
}

Result<std::optional<CheckpointRecord>> SqliteCatalog::FindById(int64_t id) {
  std::lock_guard lock(impl_->mu);
  return FindCheckpointLocked(impl_->db, "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS " FROM checkpoints WHERE id = ?1",
                              "find checkpoint by id", id);
}

Result<std::optional<CheckpointRecord>> SqliteCatalog::FindByNameTag(const std::string& sha256, const std::string& name,
                                                               const std::string& tag) {
  if (!IsSha256Hex(sha256)) return InvalidArgument("find checkpoint: sha256 is not 64 lower-case hex digits");
  std::lock_guard lock(impl_->mu);
  return FindCheckpointLocked(impl_->db,
                              "SELECT " CKG_CATALOG_CHECKPOINT_COLUMNS
                              " FROM checkpoints WHERE sha256 = ?1 AND name = ?2 AND tag = ?3"
                              " AND status IN ('stored', 'revoked') ORDER BY id DESC LIMIT 1",
                              "find checkpoint", sha256, name, tag);
}

Result<bool> SqliteCatalog::RevokeCheckpoint(const std::string& sha256, const std::string& reason, const std::string& by) {
  if (!IsSha256Hex(sha256)) return InvalidArgument("revoke checkpoint: sha256 is not 64 lower-case hex digits");
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "revoke checkpoint", [&]() -> Result<bool> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "UPDATE checkpoints SET status = 'revoked', revoked_reason = ?1, "
                                               "revoked_by = ?2, revoked_at = ?3 WHERE sha256 = ?4 AND status = 'stored'",
                                               "revoke checkpoint"));
    CKG_TRY(s.Bind(1, reason));
    CKG_TRY(s.Bind(2, by));
    CKG_TRY(s.Bind(3, Now()));
    CKG_TRY(s.Bind(4, sha256));
    CKG_TRY(s.Run());
    return sqlite3_changes(db) > 0;
  });
}

Result<std::vector<std::string>> SqliteCatalog::ReferencedBlobs() {
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT DISTINCT sha256 FROM checkpoints "
                                             "WHERE status IN ('stored', 'revoked') ORDER BY sha256",
                                             "list referenced blobs"));
  std::vector<std::string> out;
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(s.Text(0));
  }
  return out;
}

Status SqliteCatalog::AddKey(const KeyRecord& key) {
  CKG_TRY(catalog_internal::CheckKey(key));
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "add key", [&]() -> Status {
    if (key.state == "active") {
      CKG_ASSIGN_OR_RETURN(Stmt r, Stmt::Prepare(db, "UPDATE keys SET state = 'retired' WHERE state = 'active'",
                                                 "retire the active key"));
      CKG_TRY(r.Run());
    }
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "INSERT INTO keys (key_id, public_pem, curve, state, created_at, "
                                               "revoked_reason, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                               "add key"));
    CKG_TRY(s.Bind(1, key.key_id));
    CKG_TRY(s.Bind(2, key.public_pem));
    CKG_TRY(s.Bind(3, key.curve));
    CKG_TRY(s.Bind(4, key.state));
    CKG_TRY(s.Bind(5, key.created_at != 0 ? key.created_at : Now()));
    CKG_TRY(s.Bind(6, key.revoked_reason));
    CKG_TRY(s.Bind(7, key.state == "revoked" && key.revoked_at == 0 ? Now() : key.revoked_at));
    return s.Run();
  });
}

Result<std::vector<KeyRecord>> SqliteCatalog::ListKeys() {
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT " CKG_CATALOG_KEY_COLUMNS
                                             " FROM keys ORDER BY created_at DESC, rowid DESC",
                                             "list keys"));
  std::vector<KeyRecord> out;
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(KeyFromRow(s));
  }
  return out;
}

Result<std::optional<KeyRecord>> SqliteCatalog::ActiveKey() {
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT " CKG_CATALOG_KEY_COLUMNS
                                             " FROM keys WHERE state = 'active'",
                                             "read the active key"));
  CKG_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<KeyRecord>();
  return std::optional<KeyRecord>(KeyFromRow(s));
}

Result<bool> SqliteCatalog::RevokeKey(const std::string& key_id, const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "revoke key", [&]() -> Result<bool> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "UPDATE keys SET state = 'revoked', revoked_reason = ?1, revoked_at = ?2 "
                                               "WHERE key_id = ?3 AND state != 'revoked'",
                                               "revoke key"));
    CKG_TRY(s.Bind(1, reason));
    CKG_TRY(s.Bind(2, Now()));
    CKG_TRY(s.Bind(3, key_id));
    CKG_TRY(s.Run());
    return sqlite3_changes(db) > 0;
  });
}

Status SqliteCatalog::AddToken(const std::string& name, const std::string& token_sha256, const std::string& scope,
                         const std::vector<std::string>& prefixes) {
  CKG_ASSIGN_OR_RETURN(const std::string joined, catalog_internal::CheckToken(name, token_sha256, scope, prefixes));
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "add token", [&]() -> Status {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "INSERT INTO tokens (name, token_sha256, scope, prefixes, created_at) "
                                               "VALUES (?1, ?2, ?3, ?4, ?5)",
                                               "add token"));
    CKG_TRY(s.Bind(1, name));
    CKG_TRY(s.Bind(2, token_sha256));
    CKG_TRY(s.Bind(3, scope));
    CKG_TRY(s.Bind(4, joined));
    CKG_TRY(s.Bind(5, Now()));
    return s.Run();
  });
}

Result<std::string> SqliteCatalog::EnsureRegistryId(const std::string& candidate) {
  if (candidate.empty()) return InvalidArgument("registry id: empty candidate");
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "registry id", [&]() -> Result<std::string> {
    CKG_ASSIGN_OR_RETURN(Stmt i, Stmt::Prepare(db,
                                               "INSERT OR IGNORE INTO registry_meta (key, value) "
                                               "VALUES ('registry_id', ?1)",
                                               "create registry id"));
    CKG_TRY(i.Bind(1, candidate));
    CKG_TRY(i.Run());
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "SELECT value FROM registry_meta WHERE key = 'registry_id'",
                                               "read registry id"));
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return MakeError(ErrorCode::kInternal, 0, "registry id missing after insert", std::string(kWhere));
    return s.Text(0);
  });
}

Result<std::optional<TokenRecord>> SqliteCatalog::FindToken(const std::string& token_sha256) {
  if (!IsSha256Hex(token_sha256)) return std::optional<TokenRecord>();
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT " CKG_CATALOG_TOKEN_COLUMNS " FROM tokens "
                                             "WHERE token_sha256 = ?1 AND revoked = 0",
                                             "find token"));
  CKG_TRY(s.Bind(1, token_sha256));
  CKG_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<TokenRecord>();
  return std::optional<TokenRecord>(TokenFromRow(s));
}

Result<bool> SqliteCatalog::RevokeToken(const std::string& name) {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "revoke token", [&]() -> Result<bool> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "UPDATE tokens SET revoked = 1, revoked_at = ?1 "
                                               "WHERE name = ?2 AND revoked = 0",
                                               "revoke token"));
    CKG_TRY(s.Bind(1, Now()));
    CKG_TRY(s.Bind(2, name));
    CKG_TRY(s.Run());
    return sqlite3_changes(db) > 0;
  });
}

Result<std::vector<TokenRecord>> SqliteCatalog::ListTokens() {
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT " CKG_CATALOG_TOKEN_COLUMNS " FROM tokens ORDER BY id",
                                             "list tokens"));
  std::vector<TokenRecord> out;
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(TokenFromRow(s));
  }
  return out;
}

Status SqliteCatalog::Audit(const AuditRecord& record) {
  if (record.action.empty()) return InvalidArgument("audit: empty action");
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "append audit record", [&]() -> Status { return AppendAudit(db, record); });
}

Result<std::vector<AuditRecord>> SqliteCatalog::ListAudit(int64_t after_id, uint32_t limit) {
  const int64_t n = catalog_internal::AuditLimit(limit);
  std::lock_guard lock(impl_->mu);
  CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(impl_->db,
                                             "SELECT id, at, who, action, target, result, detail FROM audit "
                                             "WHERE id > ?1 ORDER BY id LIMIT ?2",
                                             "list audit records"));
  CKG_TRY(s.Bind(1, after_id));
  CKG_TRY(s.Bind(2, n));
  std::vector<AuditRecord> out;
  while (true) {
    CKG_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    AuditRecord a;
    a.id = s.Int(0);
    a.at = s.Int(1);
    a.who = s.Text(2);
    a.action = s.Text(3);
    a.target = s.Text(4);
    a.result = s.Text(5);
    a.detail = s.Text(6);
    out.push_back(std::move(a));
  }
  return out;
}

Result<int64_t> SqliteCatalog::RegisterServer(const std::string& host, int64_t pid) {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  Result<int64_t> registered = InTransaction(db, true, "register server", [&]() -> Result<int64_t> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, "INSERT INTO servers (host, pid, started_at) VALUES (?1, ?2, ?3)",
                                               "register server"));
    CKG_TRY(s.Bind(1, host));
    CKG_TRY(s.Bind(2, pid));
    CKG_TRY(s.Bind(3, Now()));
    CKG_TRY(s.Run());
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db));
  });
  if (registered) impl_->servers.push_back(*registered);
  return registered;
}

Status SqliteCatalog::RetireServer(int64_t server) {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  CKG_TRY(InTransaction(db, true, "retire server", [&]() -> Status {
    const std::string id = std::to_string(server);
    CKG_TRY(Exec(db, "DELETE FROM blob_reservations WHERE server_id = " + id, "retire server"));
    return Exec(db, "DELETE FROM servers WHERE id = " + id, "retire server");
  }));
  std::erase(impl_->servers, server);
  return OkStatus();
}

Result<int64_t> SqliteCatalog::ReserveBlob(const std::string& sha256, int64_t server) {
  if (!IsSha256Hex(sha256)) return InvalidArgument("reserve blob: sha256 is not 64 lower-case hex digits");
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "reserve blob", [&]() -> Result<int64_t> {
    CKG_ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db,
                                               "INSERT INTO blob_reservations (sha256, server_id, created_at) "
                                               "VALUES (?1, ?2, ?3)",
                                               "reserve blob"));
    CKG_TRY(s.Bind(1, sha256));
    CKG_TRY(s.Bind(2, server));
    CKG_TRY(s.Bind(3, Now()));
    CKG_TRY(s.Run());
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db));
  });
}

Status SqliteCatalog::ReleaseBlob(int64_t reservation) {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  return InTransaction(db, true, "release blob", [&]() -> Status { return ReleaseLocked(db, reservation); });
}

Result<std::vector<int64_t>> SqliteCatalog::PruneServers() {
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  std::vector<int64_t> live = impl_->servers;
  std::sort(live.begin(), live.end());
  // The live ids as a list literal of integers (ours, never input).
  std::string in = "(0";
  for (const int64_t id : live) in += "," + std::to_string(id);
  in += ")";
  Status pruned = InTransaction(db, true, "prune servers", [&]() -> Status {
    CKG_TRY(Exec(db, "DELETE FROM blob_reservations WHERE server_id NOT IN " + in, "prune reservations"));
    return Exec(db, "DELETE FROM servers WHERE id NOT IN " + in, "prune servers");
  });
  if (!pruned) return std::unexpected(std::move(pruned).error());
  return live;
}

Result<bool> SqliteCatalog::SweepBlob(const std::string& sha256, const std::function<Status()>& remove) {
  if (!IsSha256Hex(sha256)) return InvalidArgument("sweep blob: sha256 is not 64 lower-case hex digits");
  std::lock_guard lock(impl_->mu);
  sqlite3* db = impl_->db;
  // BEGIN IMMEDIATE: no insert or reservation commits while it decides and removes.
  return InTransaction(db, true, "sweep blob", [&]() -> Result<bool> {
    CKG_ASSIGN_OR_RETURN(Stmt q, Stmt::Prepare(db,
                                               "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE sha256 = ?1 "
                                               "AND status IN ('stored', 'revoked')) OR EXISTS "
                                               "(SELECT 1 FROM blob_reservations WHERE sha256 = ?1)",
                                               "sweep blob"));
    CKG_TRY(q.Bind(1, sha256));
    CKG_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row || q.Int(0) != 0) return false;
    CKG_TRY(remove());
    return true;
  });
}

}  // namespace ckptguard::daemon

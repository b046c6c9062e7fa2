// Catalog: the registry's database. It records every checkpoint pushed
// (stored or rejected, with its findings and state-dict manifest), the signing
// keys (active, retired, revoked), write tokens (only their SHA-256 is stored)
// and an append-only audit log. Two backends implement it:
//   - SQLite (the default: DATA/catalog.db; WAL, foreign keys, versioned
//     schema migrations; one connection serialized by a mutex);
//   - PostgreSQL (a libpq URI; the same schema and migrations, so several
//     processes may share one database: writes take one transaction-scoped
//     advisory lock, the catalog's equivalent of SQLite's single writer).
// Servers sharing one blob store coordinate through it (RegisterServer,
// ReserveBlob, PruneServers, SweepBlob): a blob is reserved before it is
// published and until its row commits, and a sweep removes only blobs that
// no row references and no live server has reserved.
// One Catalog is shared by the server's threads; every method is safe to call
// concurrently (each write is one transaction).
#ifndef CKPTGUARD_DAEMON_CATALOG_H_
#define CKPTGUARD_DAEMON_CATALOG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/error.h"

namespace ckptguard::daemon {

// The schema version this build writes; Open migrates older databases up to
// it, one numbered step at a time, and refuses newer ones.
inline constexpr int kCatalogSchemaVersion = 3;

struct ManifestEntry {
  std::string key;             // state-dict key ("layer.0.weight")
  std::string dtype;           // as torch prints it ("float32")
  std::vector<int64_t> shape;  // sizes
};

struct FindingRecord {
  std::string rule;      // "CKG-D001"
  std::string severity;  // "info" | "suspicious" | "dangerous"
  std::string message;
  std::string entry;     // zip entry or ""
  uint64_t offset = 0;
  std::string global;    // "module.name" or ""
};

// One push. status: "stored" (blob in the store, signed), "rejected" (findings
// only, no blob), "revoked" (was stored; revoked_* say by whom and why).
struct CheckpointRecord {
  int64_t id = 0;              // assigned by InsertCheckpoint
  std::string name;
  std::string tag;
  std::string sha256;          // hex, lower case, of the whole file
  uint64_t size = 0;
  std::string format;          // ContainerFormatName ("torch-zip", ...)
  std::string verdict;         // scanner VerdictName ("safe", "suspicious", "dangerous", "error")
  std::string status;          // "stored" | "rejected" | "revoked"
  std::vector<ManifestEntry> manifest;
  std::vector<FindingRecord> findings;
  std::string signature;       // model-signing bundle JSON ("" when rejected)
  std::string key_id;          // signer key id ("" when rejected)
  std::string uploader;        // token name
  int64_t created_at = 0;      // unix seconds
  std::string revoked_reason;  // "" unless revoked
  std::string revoked_by;
  int64_t revoked_at = 0;
};

// A signing key's public half and its state. state: "active" (signs new
// pushes; exactly one at a time), "retired" (rotated out, still verifies),
// "revoked" (verifies nothing).
struct KeyRecord {
  std::string key_id;       // hex SHA-256 of the PEM public key text (the bundle's hint)
  std::string public_pem;
  std::string curve;        // "P-256" | "P-384" | "P-521"
  std::string state;
  int64_t created_at = 0;
  std::string revoked_reason;
  int64_t revoked_at = 0;
};

struct TokenRecord {
  std::string name;
  // "read" (list, download, verify; what --reads-need-token asks for),
  // "write" (also push), "admin" (also revoke, rotate, read the audit log).
  std::string scope;
  // write tokens: the name prefixes they may push under (empty: any name).
  std::vector<std::string> prefixes;
  int64_t created_at = 0;
  bool revoked = false;
};

struct AuditRecord {
  int64_t id = 0;
  int64_t at = 0;           // unix seconds
  std::string who;          // token name, "anonymous" or "local" (command line)
  std::string action;       // "push", "revoke-checkpoint", "revoke-key", "rotate-key", "token-create", ...
  std::string target;       // sha256, key id, token name
  std::string result;       // "stored", "rejected", "ok", "denied", "error"
  std::string detail;       // one sentence
};

struct CheckpointQuery {
  std::string name;         // "" = any
  std::string tag;          // "" = any
  std::string status;       // "" = any
  uint32_t limit = 100;     // at most 1000
  int64_t before_id = 0;    // paging: only ids below this (0 = from the newest)
};

// TagGuard makes InsertCheckpoint of a "stored" row keep tags immutable: the
// newest stored or revoked row of NAME:TAG (its holder) is read inside the
// insert's transaction.
//   - the holder has the same digest and is stored: nothing is written, the
//     result is the holder's id, same_content is set (a repeated push);
//   - the holder has another digest: nothing is written, the result is 0 and
//     holder is set, unless allow_move; then the row is written, moved_from
//     names the previous digest and a "retag" audit row lands with it.
// It also carries what else is checked for a stored row in that transaction:
//   - reservation (ReserveBlob's id for the row's blob): it must still exist
//     (a sweep that presumed its server dead fails the insert with kIo and
//     writes nothing); it is released when the row is written or refused
//     (tag, revocation), and kept when the signer was revoked;
//   - the row's signer key (key_id) must not be revoked: else nothing is
//     written, the result is 0 and signer_revoked is set (sign again).
struct TagGuard {
  bool allow_move = false;                 // in
  int64_t reservation = 0;                 // in (0: none)
  std::optional<CheckpointRecord> holder;  // out
  bool same_content = false;               // out
  std::string moved_from;                  // out
  bool signer_revoked = false;             // out
};


// CatalogOptions: how a PostgreSQL catalog connects and retries (SQLite
// ignores them). Each field says its default and its ceiling (Clamped).
struct CatalogOptions {
  // Times a transaction is run in all when it fails with a serialization
  // failure or a deadlock (SQLSTATE 40001, 40P01: other clients of the
  // database can cause them; the registry's own writes are serialized by
  // one advisory lock), each run after a short, growing pause (10 ms x
  // attempt^2). Default 5; 1 to kMaxAttempts.
  int max_attempts = 5;
  static constexpr int kMaxAttempts = 100;
  // Seconds libpq waits for the database, at Open and whenever a dropped
  // connection is reopened, unless the URI says connect_timeout. Default 10;
  // 1 to kMaxConnectTimeoutSeconds.
  int connect_timeout_seconds = 10;
  static constexpr int kMaxConnectTimeoutSeconds = 3600;

  // Clamped: every field within [1, its ceiling].
  CatalogOptions Clamped() const;
};

class Catalog {
 public:
  // Open opens the catalog `spec` names and migrates it to
  // kCatalogSchemaVersion (schema_version table; each migration one
  // transaction; a newer schema is refused with kUnsupportedFormat):
  //   "sqlite:PATH" or a plain PATH: SQLite; creates the file when missing.
  //     Sets WAL, foreign_keys=ON, synchronous=FULL, busy_timeout.
  //   "postgresql://..." or "postgres://...": PostgreSQL through libpq (the
  //     database must exist; the tables are created). Errors name the URI
  //     with its password masked (RedactCatalogSpec); `options` (clamped)
  //     say how it connects and retries.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& spec, const CatalogOptions& options = {});
  virtual ~Catalog() = default;
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  // Backend is "sqlite" or "postgresql".
  virtual std::string_view Backend() const = 0;

  virtual Result<int> SchemaVersion() = 0;

  // Checkpoints. InsertCheckpoint writes the row, its manifest and findings in
  // one transaction and returns the id. The same sha256 may be pushed again
  // under another name/tag (a new row; the blob is shared).
  // With `audit`, its audit row (target defaulting to the sha256) is written
  // in the same transaction: the row and its audit line land together.
  // A "stored" row is never written for content some row marks revoked:
  // the check runs inside the insert's own transaction, so a revocation that
  // commits while a push is scanned and signed still wins. Then nothing is
  // written, the result is 0 and `revoked` (when given) receives the revoked
  // row (who and why).
  // With `tag_guard`, tags stay immutable (see TagGuard).
  virtual Result<int64_t> InsertCheckpoint(const CheckpointRecord& record, const AuditRecord* audit = nullptr,
                                           std::optional<CheckpointRecord>* revoked = nullptr,
                                           TagGuard* tag_guard = nullptr) = 0;
  // FindTagHolder: the newest stored or revoked row named NAME:TAG (no
  // manifest/findings), or nullopt.
  virtual Result<std::optional<CheckpointRecord>> FindTagHolder(const std::string& name, const std::string& tag) = 0;
  // FindByNameTag: the newest stored or revoked row with this sha256, name and
  // tag (with manifest and findings), or nullopt.
  virtual Result<std::optional<CheckpointRecord>> FindByNameTag(const std::string& sha256, const std::string& name,
                                                                const std::string& tag) = 0;
  virtual Result<std::vector<CheckpointRecord>> ListCheckpoints(const CheckpointQuery& query) = 0;  // newest first, no manifest/findings
  // The newest row for this sha256 with status stored or revoked (with manifest
  // and findings), or nullopt.
  virtual Result<std::optional<CheckpointRecord>> FindBySha256(const std::string& sha256) = 0;
  virtual Result<std::optional<CheckpointRecord>> FindById(int64_t id) = 0;
  // Marks every stored row of sha256 revoked; false when there was none.
  virtual Result<bool> RevokeCheckpoint(const std::string& sha256, const std::string& reason, const std::string& by) = 0;
  // Every sha256 that some stored or revoked row references (for reconciling the blob store).
  virtual Result<std::vector<std::string>> ReferencedBlobs() = 0;

  // Keys.
  virtual Status AddKey(const KeyRecord& key) = 0;  // state "active" retires the previous active key in the same transaction
  virtual Result<std::vector<KeyRecord>> ListKeys() = 0;  // every key, newest first
  virtual Result<std::optional<KeyRecord>> ActiveKey() = 0;
  virtual Result<bool> RevokeKey(const std::string& key_id, const std::string& reason) = 0;

  // Tokens: the raw token is never stored, only its SHA-256 (hex).
  // scope read|write|admin; `prefixes` only for write tokens.
  virtual Status AddToken(const std::string& name, const std::string& token_sha256, const std::string& scope,
                          const std::vector<std::string>& prefixes = {}) = 0;
  virtual Result<std::optional<TokenRecord>> FindToken(const std::string& token_sha256) = 0;  // nullopt if unknown or revoked
  virtual Result<bool> RevokeToken(const std::string& name) = 0;
  virtual Result<std::vector<TokenRecord>> ListTokens() = 0;

  // EnsureRegistryId returns the registry's stable id, storing `candidate`
  // as it when the catalog has none yet (the first start).
  virtual Result<std::string> EnsureRegistryId(const std::string& candidate) = 0;

  // Servers sharing the blob store. RegisterServer records this process as
  // a server (host and pid, for operators) and returns its id; it stays
  // alive while this Catalog lives: on PostgreSQL it holds a session-level
  // advisory lock (retaken when a dropped connection is reopened), on
  // SQLite it is alive only to this Catalog object (one server per data
  // folder: SQLite sweeps only under DATA/lock).
  virtual Result<int64_t> RegisterServer(const std::string& host, int64_t pid) = 0;
  // RetireServer removes a server this Catalog registered (its row and
  // reservations; on PostgreSQL its lock is released): a clean shutdown.
  virtual Status RetireServer(int64_t server) = 0;
  // ReserveBlob records that `server` is about to publish blob `sha256` and
  // write its row; returns the reservation's id (for TagGuard, ReleaseBlob).
  virtual Result<int64_t> ReserveBlob(const std::string& sha256, int64_t server) = 0;
  virtual Status ReleaseBlob(int64_t reservation) = 0;
  // PruneServers deletes the rows and reservations of servers that are not
  // alive and returns the ids of the live ones, ascending. A server is
  // alive from inside its RegisterServer transaction on, so anything it
  // made after RegisterServer returned (its upload folder) and that was
  // seen before this call belongs to a server this call judges.
  virtual Result<std::vector<int64_t>> PruneServers() = 0;
  // SweepBlob: when no stored or revoked row references `sha256` and no
  // reservation holds it, runs `remove` (deleting the file) inside the
  // transaction that decided so, holding the lock that ReserveBlob and
  // InsertCheckpoint take for that digest; true when it removed. A failed
  // `remove` fails the sweep.
  virtual Result<bool> SweepBlob(const std::string& sha256, const std::function<Status()>& remove) = 0;

  // Audit log: append only (no method updates or deletes; the schema has
  // triggers that abort UPDATE and DELETE on the table).
  virtual Status Audit(const AuditRecord& record) = 0;  // id and at (when 0) are filled in
  virtual Result<std::vector<AuditRecord>> ListAudit(int64_t after_id = 0, uint32_t limit = 1000) = 0;

 protected:
  Catalog() = default;
};

// RedactCatalogSpec returns `spec` fit for logs and errors: the password of
// a URI's user info (postgresql://user:secret@host/db) and a password=...
// query parameter become "***". Other specs are returned as they are.
std::string RedactCatalogSpec(std::string_view spec);

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_CATALOG_H_

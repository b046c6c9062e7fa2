// Registry: what ckptguardd does, without the HTTP. It owns the data folder
//   DATA/catalog.db        the Catalog (SQLite; or PostgreSQL with --catalog)
//   DATA/blobs/, DATA/tmp/ the BlobStore (uploads in tmp/s<server id>/)
//   DATA/keys/<id>.pem     private signing keys (folder 0700, files 0600)
// and runs the ingest pipeline: upload (hashed while it streamed) -> scan
// -> policy -> sign -> reserve the blob in the catalog -> publish it into
// the store -> one catalog transaction (the row; the reservation released).
// A rejected upload is catalogued with its findings and its bytes dropped.
//
// Crash safety: a blob is published before its row, and cleanup
// (Reconcile) removes the upload folders of servers that are gone and
// blobs that no row references and no live server has reserved, so after
// kill -9 at any moment and a restart there is no row without its blob and
// no blob without its row.
//
// Several servers: with the catalog on PostgreSQL, any number of servers
// share one data folder (on a shared filesystem): each registers in the
// catalog (alive while its session holds an advisory lock), cleanup runs at
// every start and admin command and never races another server's push,
// and the signing keys are the files in DATA/keys, named by the catalog's
// keys table. With SQLite, one server per data folder: DATA/lock is
// flock()ed by a serving registry (RegistryOptions::serve) for its
// lifetime, and a second one refuses to start. Administration (token, key,
// audit commands) opens the same folder while a server runs; on SQLite it
// cleans up only when it gets the lock, i.e. when no server runs.
// Everything a request depends on is read from the catalog at that request
// (tokens, revocations, the active key before each signature, the trusted
// keys), so a change made by any process is in force at the next request;
// a key revoked while a push was being signed is caught in the insert's
// transaction and the push is signed again.
#ifndef CKPTGUARD_DAEMON_REGISTRY_H_
#define CKPTGUARD_DAEMON_REGISTRY_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/daemon/blob_store.h"
#include "ckptguard/daemon/catalog.h"
#include "ckptguard/error.h"
#include "ckptguard/signing/model_signing.h"

namespace ckptguard::daemon {

struct RegistryOptions {
  std::string data_dir;
  // The catalog, as Catalog::Open takes it: "" means sqlite:DATA/catalog.db;
  // "postgresql://user@host/db" puts it on PostgreSQL (blobs and keys stay
  // in data_dir).
  std::string catalog;
  // How a PostgreSQL catalog connects and retries (--catalog-attempts,
  // --catalog-connect-timeout).
  CatalogOptions catalog_options;
  // Policy: dangerous and unreadable files are always rejected; suspicious
  // ones (unknown globals, container anomalies) only when this is false.
  bool accept_suspicious = false;
  signing::Curve key_curve = signing::Curve::kP256;  // for keys this registry creates
  // serve: with the SQLite catalog, hold DATA/lock for the registry's
  // lifetime (a server). Open waits up to lock_wait for it (an admin command
  // may hold it for its cleanup), then fails naming the process that holds
  // it. With PostgreSQL there is no folder lock (several servers may serve).
  bool serve = false;
  std::chrono::milliseconds lock_wait{5000};
  // A display name or URL for this registry, signed into every statement
  // beside its stable id ("" when none is configured).
  std::string registry_name;
  // Tags are immutable: a push of other content to a NAME:TAG that holds
  // some is refused, unless this is set AND the push says force.
  bool allow_retag = false;
};

struct IngestRequest {
  std::string name;      // [A-Za-z0-9._/-], 1..200 chars
  std::string tag;       // [A-Za-z0-9._-], 0..128 chars
  std::string uploader;  // token name
  bool force = false;    // move the tag if it holds other content (only with allow_retag)
};

// IngestOutcome: what Ingest did besides the record it returns.
struct IngestOutcome {
  // The same content was pushed to the same NAME:TAG again: nothing was
  // written; the record returned is the existing row.
  bool unchanged = false;
  // Set when the push was refused because NAME:TAG holds other content
  // (Ingest then fails with kInvalidArgument naming that digest).
  std::optional<CheckpointRecord> tag_holder;
  // A forced retag moved the tag from this digest ("" otherwise).
  std::string moved_from;
};

struct VerifyReport {
  std::string sha256;
  bool catalogued = false;     // some row has this digest
  std::string status;          // the newest row's status ("" when not catalogued)
  bool blob_present = false;   // the store holds the bytes
  bool unchanged = false;      // the bytes hash to sha256 (re-hashed when asked, or the uploaded file)
  bool signature_valid = false;// the bundle verifies with a key that is not revoked and names this digest
  std::string key_id;
  std::string key_state;
  std::string detail;          // why not, one sentence ("" when verified)
  std::optional<CheckpointRecord> record;
  bool verified() const { return catalogued && status == "stored" && unchanged && signature_valid; }
};

class Registry {
 public:
  // Open creates DATA and everything in it on first start (database, a
  // signing key), registers this process among the store's servers, then
  // reconciles the blob store with the catalog (SQLite: when it holds
  // DATA/lock; PostgreSQL: always).
  static Result<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Ingest takes a finished upload. Returns the catalogued record: status
  // "stored" (signed, blob kept) or "rejected" (findings, blob dropped).
  // Each stored record is signed with a RegistryClaim naming its name, tag
  // and this registry (registry_id(), options().registry_name). Tags are
  // immutable (see RegistryOptions::allow_retag); `outcome` says when the
  // push changed nothing or was refused for its tag.
  Result<CheckpointRecord> Ingest(Upload& upload, const IngestRequest& request, IngestOutcome* outcome = nullptr);

  // VerifyDigest: is `sha256` catalogued, stored, signed by a trusted key,
  // and (rehash) does the stored blob still hash to it?
  Result<VerifyReport> VerifyDigest(const std::string& sha256, bool rehash);
  // VerifyUpload: the same for a file a client sent (its digest was computed while it streamed).
  Result<VerifyReport> VerifyUpload(const Upload& upload);
  // VerifyBytesDigest: the same for bytes a client sent that the server only
  // hashed (their digest; the bytes themselves were never stored).
  Result<VerifyReport> VerifyBytesDigest(const std::string& sha256);

  Result<bool> RevokeCheckpoint(const std::string& sha256, const std::string& reason, const std::string& who);
  // RotateKey creates a new active key; the previous one is retired (still verifies).
  Result<KeyRecord> RotateKey(const std::string& who);
  // RevokeKey: the key verifies nothing any more and its private file is
  // deleted; revoking the active key rotates first.
  Result<bool> RevokeKey(const std::string& key_id, const std::string& reason, const std::string& who);
  // CreateToken returns the raw token ("ckg_" + 64 hex); only its SHA-256 is kept.
  // scope: read, write or admin; `prefixes` (write only): the name prefixes
  // the token may push under (each a valid name start, e.g. "team-a/").
  Result<std::string> CreateToken(const std::string& name, const std::string& scope, const std::string& who,
                                  const std::vector<std::string>& prefixes = {});
  Result<bool> RevokeToken(const std::string& name, const std::string& who);
  // Authenticate maps a raw bearer token to its record (nullopt: unknown or revoked).
  Result<std::optional<TokenRecord>> Authenticate(const std::string& raw_token);

  // Reconcile removes the upload folders of servers that are gone and blobs
  // no row references and no live server reserved (safe beside other
  // servers only on PostgreSQL: on SQLite call it only under DATA/lock, as
  // Open does).
  Status Reconcile();

  // Trusted public keys as PEM, one after another, active first ("# key <id> <curve> <state>" lines between).
  Result<std::string> TrustedKeysPem();

  // This process among the servers of the blob store (Catalog::RegisterServer).
  int64_t server_id() const { return server_id_; }

  // The registry's stable id, created with its data folder (32 hex digits).
  const std::string& registry_id() const { return registry_id_; }

  Catalog& catalog() { return *catalog_; }
  const BlobStore& blobs() const { return blobs_; }
  const RegistryOptions& options() const { return options_; }
  // Warnings of Open (a data folder narrowed to 0700), for the operator.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  Registry(RegistryOptions options, std::unique_ptr<Catalog> catalog, BlobStore blobs);
  Status EnsureSigningKey();
  // RefreshSignerLocked (key_mutex_ held) loads the catalog's active key when
  // another process rotated or revoked keys since this one last signed.
  Status RefreshSignerLocked();
  Status LoadSignerLocked(const KeyRecord& active);
  Result<std::vector<signing::PublicKey>> TrustedKeys();
  std::string KeyPath(const std::string& key_id) const;

  RegistryOptions options_;
  std::unique_ptr<Catalog> catalog_;
  BlobStore blobs_;
  std::mutex key_mutex_;                          // guards signer_
  std::optional<signing::PrivateKey> signer_;     // the active key
  std::string signer_id_;
  std::string registry_id_;
  int64_t server_id_ = 0;  // this process among the blob store's servers (Catalog::RegisterServer)
  int lock_fd_ = -1;  // DATA/lock, flock()ed exclusively while serving (SQLite)
  std::vector<std::string> warnings_;
};

// ValidName / ValidTag / ValidSha256: the registry's accepted spellings.
bool ValidName(const std::string& name);
bool ValidTag(const std::string& tag);
bool ValidSha256(const std::string& hex);

// PushDenied: why `token` may not push NAME (scope read, or a write token
// whose prefixes do not cover it), or nullopt when it may.
std::optional<std::string> PushDenied(const TokenRecord& token, const std::string& name);

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_REGISTRY_H_

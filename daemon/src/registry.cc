// Registry: the ingest pipeline and the registry's state (see registry.h).
#include "ckptguard/daemon/registry.h"

#include <openssl/rand.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>
#include <utility>

#include "ckptguard/checkpoint.h"
#include "ckptguard/container.h"
#include "ckptguard/dtype.h"
#include "ckptguard/input_file.h"
#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/scan.h"
#include "ckptguard/sha256.h"

namespace ckptguard::daemon {
namespace {

namespace fs = std::filesystem;

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool AllOf(const std::string& s, std::string_view extra) {
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           extra.find(c) != std::string_view::npos;
  });
}

Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return MakeError(ErrorCode::kIo, 0, std::string("cannot create folder: ") + std::strerror(errno), path);
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return MakeError(ErrorCode::kIo, 0, "exists and is not a folder", path);
  }
  return OkStatus();
}

// The state-dict manifest of an accepted file: every tensor reachable from
// the root with its dtype and shape. A file the loader cannot represent
// (a TorchScript archive, a quantized tensor) is stored without one.
std::vector<ManifestEntry> ManifestOf(const std::string& path) {
  std::vector<ManifestEntry> out;
  auto checkpoint = LoadCheckpoint(path);
  if (!checkpoint) return out;
  auto named = checkpoint->NamedTensors();
  if (!named) return out;
  constexpr size_t kMaxManifest = 200000;
  for (const NamedTensor& entry : *named) {
    if (out.size() >= kMaxManifest) break;
    const Tensor& tensor = checkpoint->tensors()[entry.tensor];
    out.push_back({entry.path, std::string(DTypeName(tensor.dtype)), tensor.shape});
  }
  return out;
}

std::string CurveNameOf(signing::Curve curve) { return std::string(signing::CurveName(curve)); }

}  // namespace

bool ValidName(const std::string& name) {
  return !name.empty() && name.size() <= 200 && AllOf(name, "._/-") && name.front() != '/' &&
         name.find("..") == std::string::npos;
}
bool ValidTag(const std::string& tag) { return tag.size() <= 128 && AllOf(tag, "._-"); }
bool ValidSha256(const std::string& hex) {
  return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<std::string> PushDenied(const TokenRecord& token, const std::string& name) {
  if (token.scope == "admin") return std::nullopt;
  if (token.scope != "write") {
    return "token " + token.name + " has scope " + token.scope + "; pushing needs scope write or admin";
  }
  if (token.prefixes.empty()) return std::nullopt;
  std::string rule;
  for (const std::string& prefix : token.prefixes) {
    if (name.starts_with(prefix)) return std::nullopt;
    rule += (rule.empty() ? "" : ", ") + prefix;
  }
  return "token " + token.name + " may push only names starting with " + rule + " (prefix rule); '" + name +
         "' is outside them";
}

Registry::Registry(RegistryOptions options, std::unique_ptr<Catalog> catalog, BlobStore blobs)
    : options_(std::move(options)), catalog_(std::move(catalog)), blobs_(std::move(blobs)) {}

namespace {

// FolderLock is DATA/lock: an open descriptor with an exclusive flock(), or
// -1 when another process holds it.
struct FolderLock {
  int fd = -1;
  FolderLock() = default;
  FolderLock(FolderLock&& other) noexcept : fd(other.Release()) {}
  FolderLock& operator=(FolderLock&& other) noexcept {
    if (this != &other) {
      if (fd >= 0) ::close(fd);
      fd = other.Release();
    }
    return *this;
  }
  FolderLock(const FolderLock&) = delete;
  ~FolderLock() {
    if (fd >= 0) ::close(fd);
  }
  int Release() {
    const int out = fd;
    fd = -1;
    return out;
  }
};

// LockFolder takes DATA/lock exclusively, waiting up to `wait`. Returns a
// FolderLock with fd -1 when someone else still holds it after that; then
// `holder` is what the lock file says about them.
Result<FolderLock> LockFolder(const std::string& data_dir, std::chrono::milliseconds wait, std::string& holder) {
  const std::string path = data_dir + "/lock";
  FolderLock lock;
  lock.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock.fd < 0) return MakeError(ErrorCode::kIo, 0, std::string("cannot open the lock file: ") + std::strerror(errno), path);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (::flock(lock.fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return MakeError(ErrorCode::kIo, 0, std::string("cannot lock: ") + std::strerror(errno), path);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      char buf[64] = {};
      const ssize_t n = ::pread(lock.fd, buf, sizeof(buf) - 1, 0);
      holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
      return FolderLock{};  // closes our descriptor
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return lock;
}

}  // namespace

Registry::~Registry() {
  // A clean shutdown leaves no entry among the store's servers and no
  // upload folder (a crash's are cleaned up by the next Reconcile).
  if (catalog_ && server_id_ != 0 && catalog_->RetireServer(server_id_)) {
    (void)blobs_.RemoveUploads("s" + std::to_string(server_id_));
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& options) {
  if (options.data_dir.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "no data folder given");
  CKG_TRY(MakeDir(options.data_dir, 0700));
  CKG_TRY(MakeDir(options.data_dir + "/keys", 0700));
  std::vector<std::string> warnings;
  {
    // Owner-only, whatever an older version or a umask made of it.
    struct stat st{};
    if (::stat(options.data_dir.c_str(), &st) == 0 && (st.st_mode & 077) != 0 && st.st_uid == ::geteuid()) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
      if (::chmod(options.data_dir.c_str(), 0700) == 0) {
        warnings.push_back("the data folder " + options.data_dir + " was mode " + mode + "; narrowed to 0700");
      }
    }
  }
  CKG_ASSIGN_OR_RETURN(auto catalog,
                       Catalog::Open(options.catalog.empty() ? "sqlite:" + options.data_dir + "/catalog.db" : options.catalog,
                                     options.catalog_options));
  // SQLite: one server per data folder, through DATA/lock. A server waits
  // for the lock (an admin command may hold it while it cleans up); an
  // admin command only tries: a running server means "do no cleanup".
  // PostgreSQL: no folder lock; the servers coordinate through the catalog.
  const bool shared = catalog->Backend() != "sqlite";
  FolderLock lock;
  if (!shared) {
    std::string holder;
    CKG_ASSIGN_OR_RETURN(lock, LockFolder(options.data_dir,
                                          options.serve ? options.lock_wait : std::chrono::milliseconds(0), holder));
    if (options.serve && lock.fd < 0) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "another ckptguardd serves this data folder" +
                           (holder.empty() ? std::string() : " (" + holder + ")") +
                           "; with the SQLite catalog one server per folder (stop it first, use another --data-dir, "
                           "or put the catalog on PostgreSQL with --catalog postgresql://... to run several)",
                       options.data_dir);
    }
  }
  // This process's entry among the servers of the blob store; its uploads
  // go to tmp/s<id>, which no other server's cleanup touches while it lives.
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  CKG_ASSIGN_OR_RETURN(const int64_t server_id, catalog->RegisterServer(host, ::getpid()));
  CKG_ASSIGN_OR_RETURN(auto blobs, BlobStore::Open(options.data_dir, "s" + std::to_string(server_id)));
  std::unique_ptr<Registry> registry(new Registry(options, std::move(catalog), std::move(blobs)));
  registry->server_id_ = server_id;
  registry->warnings_ = std::move(warnings);
  if (shared || lock.fd >= 0) {
    // Uploads of servers that are gone and blobs no row references are
    // leftovers of a crash (or of a push that lost its tag race).
    CKG_TRY(registry->Reconcile());
  }
  {
    // The registry's identity: created once, with the data folder, and
    // signed into every statement; clients pin it.
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) return MakeError(ErrorCode::kIo, 0, "the random generator failed");
    CKG_ASSIGN_OR_RETURN(registry->registry_id_,
                         registry->catalog_->EnsureRegistryId(
                             HexLower(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw))));
  }
  CKG_TRY(registry->EnsureSigningKey());
  if (options.serve && lock.fd >= 0) {
    const std::string text = "pid " + std::to_string(::getpid()) + "\n";
    if (::ftruncate(lock.fd, 0) != 0 || ::pwrite(lock.fd, text.data(), text.size(), 0) < 0) {
      // Only informative (who holds the lock); the flock is what counts.
    }
    registry->lock_fd_ = lock.Release();
  }
  return registry;
}

std::string Registry::KeyPath(const std::string& key_id) const {
  return options_.data_dir + "/keys/" + key_id + ".pem";
}

// Reconcile: the entries of servers that are gone are dropped with their
// upload folders (and files an older layout left in tmp/), and so are blobs
// that were published but whose row never committed. Each blob is removed
// by Catalog::SweepBlob, which decides under the digest's lock: never one
// a live server has reserved, never one a row references.
Status Registry::Reconcile() {
  // Listed before the servers are judged: a folder seen here was made after
  // its server registered, so the judgement below covers it.
  CKG_ASSIGN_OR_RETURN(const std::vector<std::string> uploads, blobs_.UploadEntries());
  CKG_ASSIGN_OR_RETURN(const std::vector<int64_t> live, catalog_->PruneServers());
  for (const std::string& name : uploads) {
    // "s<id>": a server's upload folder; anything else: an older layout's leftovers.
    int64_t id = 0;
    const char* first = name.data() + 1;
    const char* last = name.data() + name.size();
    const bool server_folder = name.size() >= 2 && name[0] == 's' &&
                               std::from_chars(first, last, id).ptr == last;
    if (server_folder && std::binary_search(live.begin(), live.end(), id)) continue;
    CKG_TRY(blobs_.RemoveUploads(name));
  }
  CKG_ASSIGN_OR_RETURN(auto referenced, catalog_->ReferencedBlobs());
  std::set<std::string> keep(referenced.begin(), referenced.end());
  CKG_ASSIGN_OR_RETURN(auto present, blobs_.List());
  for (const std::string& sha : present) {
    if (keep.contains(sha)) continue;
    CKG_TRY(catalog_->SweepBlob(sha, [&] { return blobs_.Remove(sha); }));
  }
  return OkStatus();
}

// LoadSignerLocked (key_mutex_ held) makes the catalogued active key the
// signer, from its private file.
Status Registry::LoadSignerLocked(const KeyRecord& active) {
  auto key = signing::PrivateKey::LoadFile(KeyPath(active.key_id));
  if (!key) {
    return MakeError(ErrorCode::kIo, 0,
                     "the active signing key's private file is missing or unreadable (" + key.error().ToString() +
                         "); restore it or run 'ckptguardd key rotate'",
                     KeyPath(active.key_id));
  }
  if (key->KeyId() != active.key_id) {
    return MakeError(ErrorCode::kMalformed, 0, "private key file does not match the catalogued key id",
                     KeyPath(active.key_id));
  }
  signer_ = std::move(*key);
  signer_id_ = active.key_id;
  return OkStatus();
}

Status Registry::RefreshSignerLocked() {
  CKG_ASSIGN_OR_RETURN(auto active, catalog_->ActiveKey());
  if (!active) {
    signer_.reset();
    signer_id_.clear();
    return MakeError(ErrorCode::kInternal, 0, "no active signing key (run 'ckptguardd key rotate')");
  }
  if (signer_ && active->key_id == signer_id_) return OkStatus();
  return LoadSignerLocked(*active);
}

Status Registry::EnsureSigningKey() {
  std::lock_guard lock(key_mutex_);
  CKG_ASSIGN_OR_RETURN(auto active, catalog_->ActiveKey());
  if (active) return LoadSignerLocked(*active);
  CKG_ASSIGN_OR_RETURN(auto key, signing::PrivateKey::Generate(options_.key_curve));
  const std::string id = key.KeyId();
  CKG_TRY(key.WriteFile(KeyPath(id)));
  CKG_TRY(catalog_->AddKey({id, key.PublicPem(), CurveNameOf(key.curve()), "active", NowSeconds(), "", 0}));
  CKG_TRY(catalog_->Audit({0, 0, "local", "key-create", id, "ok", "first start: created the signing key"}));
  signer_ = std::move(key);
  signer_id_ = id;
  return OkStatus();
}

namespace {

std::unexpected<Error> TagTaken(const CheckpointRecord& holder, const std::string& name, const std::string& tag,
                                bool allow_retag) {
  return MakeError(ErrorCode::kInvalidArgument, 0,
                   name + ":" + tag + " already holds sha256 " + holder.sha256 + " (" + holder.status + ", pushed by " +
                       holder.uploader + "); tags are immutable: push under a new tag" +
                       (allow_retag ? std::string(", or move this one with force")
                                    : std::string(" (this registry does not allow retagging)")));
}

}  // namespace

Result<CheckpointRecord> Registry::Ingest(Upload& upload, const IngestRequest& request, IngestOutcome* outcome) {
  IngestOutcome scratch;
  IngestOutcome& out = outcome != nullptr ? *outcome : scratch;
  out = IngestOutcome{};
  if (!ValidName(request.name)) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "name must be 1-200 characters of A-Z a-z 0-9 . _ / -");
  }
  if (!ValidTag(request.tag)) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "tag must be 0-128 characters of A-Z a-z 0-9 . _ -");
  }
  CheckpointRecord record;
  record.name = request.name;
  record.tag = request.tag;
  record.sha256 = upload.sha256();
  record.size = upload.size();
  record.uploader = request.uploader;
  record.created_at = NowSeconds();

  // Revoked content stays revoked: pushing the same bytes again (under any
  // name) must not bring it back; only an admin decision could.
  CKG_ASSIGN_OR_RETURN(auto previous, catalog_->FindBySha256(record.sha256));
  if (previous && previous->status == "revoked") {
    record.status = "rejected";
    record.verdict = previous->verdict;
    record.format = previous->format;
    record.findings.push_back({"CKG-R001", "dangerous",
                               "this content was revoked by " + previous->revoked_by + ": " + previous->revoked_reason,
                               "", 0, ""});
    const AuditRecord audit{0, 0, request.uploader, "push", record.sha256, "rejected",
                             "name " + record.name + " tag " + record.tag + ": the content was revoked"};
    CKG_ASSIGN_OR_RETURN(record.id, catalog_->InsertCheckpoint(record, &audit));
    return record;
  }

  // Tags are immutable: decided before the scan (cheap), and again inside
  // the insert's transaction (a concurrent push may take the tag meanwhile).
  const bool allow_move = options_.allow_retag && request.force;
  {
    CKG_ASSIGN_OR_RETURN(auto holder, catalog_->FindTagHolder(record.name, record.tag));
    if (holder && holder->sha256 == record.sha256 && holder->status == "stored") {
      CKG_ASSIGN_OR_RETURN(auto full, catalog_->FindById(holder->id));
      out.unchanged = true;
      return full ? std::move(*full) : std::move(*holder);
    }
    if (holder && holder->sha256 != record.sha256 && !allow_move) {
      out.tag_holder = *holder;
      return TagTaken(*holder, record.name, record.tag, options_.allow_retag);
    }
  }

  const scanner::FileReport report = scanner::ScanFile(upload.temp_path());
  record.format = report.format;
  record.verdict = std::string(scanner::VerdictName(report.verdict));
  for (const scanner::Finding& f : report.findings) {
    record.findings.push_back({f.rule, std::string(scanner::SeverityName(f.severity)), f.message, f.entry,
                               f.offset, f.global});
  }
  if (report.error) {
    record.findings.push_back({"CKG-E000", "dangerous", "the file could not be read: " + report.error->ToString(),
                               "", report.error->offset, ""});
  }
  const bool accepted = report.verdict == scanner::Verdict::kSafe ||
                        (report.verdict == scanner::Verdict::kSuspicious && options_.accept_suspicious);
  if (!accepted) {
    record.status = "rejected";
    const AuditRecord audit{0, 0, request.uploader, "push", record.sha256, "rejected",
                             "name " + record.name + " tag " + record.tag + ": verdict " + record.verdict + ", " +
                                 std::to_string(record.findings.size()) + " finding(s)"};
    CKG_ASSIGN_OR_RETURN(record.id, catalog_->InsertCheckpoint(record, &audit));
    return record;
  }

  record.manifest = ManifestOf(upload.temp_path());
  // Sign: with the active key as the catalog says now, so that a rotation
  // or revocation made by any process (another server, `ckptguardd key`)
  // takes effect at this signature. The model is the single file, named
  // "." (model_signing's single-file form); it was hashed once, while it
  // streamed in. The statement binds what a pull asks for: name, tag and
  // this registry.
  auto sign = [&]() -> Status {
    std::lock_guard lock(key_mutex_);
    CKG_TRY(RefreshSignerLocked());
    signing::SignOptions sign_options;
    sign_options.registry_claim =
        signing::RegistryClaim{record.name, record.tag, registry_id_, options_.registry_name};
    CKG_ASSIGN_OR_RETURN(record.signature,
                         signing::SignResources(*signer_, record.name, {{".", record.sha256}}, sign_options));
    record.key_id = signer_id_;
    return OkStatus();
  };
  record.status = "stored";
  // The blob is reserved before it is published and until its row commits
  // (InsertCheckpoint releases it), so that no server's cleanup removes it
  // in between; every other way out releases it here.
  CKG_ASSIGN_OR_RETURN(const int64_t reservation, catalog_->ReserveBlob(record.sha256, server_id_));
  bool reservation_released = false;
  struct ReleaseOnExit {
    std::function<void()> run;
    ~ReleaseOnExit() { run(); }
  } release_on_exit{[&] {
    if (!reservation_released) (void)catalog_->ReleaseBlob(reservation);  // a leftover is pruned with its server
  }};
  CKG_TRY(blobs_.Commit(upload));
  std::optional<CheckpointRecord> revoked;
  TagGuard guard;
  // A key revoked between the signature and the insert (by any process) is
  // caught inside the insert's transaction: sign again with the new active
  // key (a revocation of the active key rotates first).
  constexpr int kMaxSignatures = 3;
  for (int attempt = 1;; ++attempt) {
    CKG_TRY(sign());
    const AuditRecord audit{0, 0, request.uploader, "push", record.sha256, "stored",
                            "name " + record.name + " tag " + record.tag + ": verdict " + record.verdict +
                                ", signed by " + record.key_id};
    revoked.reset();
    guard = TagGuard{};
    guard.allow_move = allow_move;
    guard.reservation = reservation;
    CKG_ASSIGN_OR_RETURN(record.id, catalog_->InsertCheckpoint(record, &audit, &revoked, &guard));
    if (!guard.signer_revoked) break;
    if (attempt >= kMaxSignatures) {
      return MakeError(ErrorCode::kUnavailable, 0,
                       "the signing key was revoked " + std::to_string(kMaxSignatures) +
                           " times while this push was signed; push again");
    }
  }
  reservation_released = true;
  if (guard.same_content) {
    // A concurrent push of the same bytes to the same tag won the race.
    CKG_ASSIGN_OR_RETURN(auto full, catalog_->FindById(record.id));
    out.unchanged = true;
    return full ? std::move(*full) : std::move(*guard.holder);
  }
  if (!revoked && guard.holder) {
    // Another push took the tag while this one was scanned. Its blob stays
    // in the store until the next cleanup sweeps it (not while a push of
    // the same bytes still holds a reservation).
    out.tag_holder = guard.holder;
    return TagTaken(*guard.holder, record.name, record.tag, options_.allow_retag);
  }
  out.moved_from = guard.moved_from;
  if (revoked) {
    // Revoked while this push was scanned and signed: the revocation wins
    // (the catalog checked it inside the insert's transaction). The blob
    // stays referenced by the revoked row.
    record.status = "rejected";
    record.signature.clear();
    record.key_id.clear();
    record.findings.push_back({"CKG-R001", "dangerous",
                               "this content was revoked by " + revoked->revoked_by + ": " + revoked->revoked_reason,
                               "", 0, ""});
    const AuditRecord rejected{0, 0, request.uploader, "push", record.sha256, "rejected",
                               "name " + record.name + " tag " + record.tag +
                                   ": the content was revoked while the push was scanned"};
    CKG_ASSIGN_OR_RETURN(record.id, catalog_->InsertCheckpoint(record, &rejected));
  }
  return record;
}

Result<std::vector<signing::PublicKey>> Registry::TrustedKeys() {
  CKG_ASSIGN_OR_RETURN(auto keys, catalog_->ListKeys());
  std::vector<signing::PublicKey> out;
  for (const KeyRecord& key : keys) {
    if (key.state == "revoked") continue;
    CKG_ASSIGN_OR_RETURN(auto pub, signing::PublicKey::FromPem(key.public_pem));
    out.push_back(std::move(pub));
  }
  return out;
}

Result<std::string> Registry::TrustedKeysPem() {
  CKG_ASSIGN_OR_RETURN(auto keys, catalog_->ListKeys());
  std::stable_sort(keys.begin(), keys.end(),
                   [](const KeyRecord& a, const KeyRecord& b) { return a.state == "active" && b.state != "active"; });
  std::string out;
  for (const KeyRecord& key : keys) {
    if (key.state == "revoked") continue;
    out += "# key " + key.key_id + " " + key.curve + " " + key.state + "\n" + key.public_pem;
    if (!out.empty() && out.back() != '\n') out.push_back('\n');
  }
  return out;
}

namespace {

// Judge fills the signature and status fields of `report` from the record.
void Judge(VerifyReport& report, const CheckpointRecord& record, const std::vector<KeyRecord>& keys,
           const std::vector<signing::PublicKey>& trusted) {
  report.catalogued = true;
  report.status = record.status;
  report.key_id = record.key_id;
  for (const KeyRecord& key : keys) {
    if (key.key_id == record.key_id) report.key_state = key.state;
  }
  if (record.status == "rejected") {
    report.detail = "this file was pushed and rejected by the scanner (verdict " + record.verdict + ")";
    return;
  }
  auto statement = signing::VerifyBundle(record.signature, trusted);
  if (!statement) {
    report.detail = "the signature does not verify with a trusted key: " + statement.error().ToString();
    return;
  }
  if (statement->resources.size() != 1 || statement->resources[0].name != "." ||
      statement->resources[0].sha256_hex != record.sha256) {
    report.detail = "the signature is valid but signs other content than this digest";
    return;
  }
  report.signature_valid = true;
  if (record.status == "revoked") {
    report.detail = "the checkpoint was revoked by " + record.revoked_by + ": " + record.revoked_reason;
  }
}

}  // namespace

Result<VerifyReport> Registry::VerifyDigest(const std::string& sha256, bool rehash) {
  if (!ValidSha256(sha256)) return MakeError(ErrorCode::kInvalidArgument, 0, "sha256 must be 64 lower-case hex digits");
  VerifyReport report;
  report.sha256 = sha256;
  CKG_ASSIGN_OR_RETURN(auto record, catalog_->FindBySha256(sha256));
  if (!record) {
    report.detail = "no stored checkpoint has this digest";
    return report;
  }
  CKG_ASSIGN_OR_RETURN(auto keys, catalog_->ListKeys());
  CKG_ASSIGN_OR_RETURN(auto trusted, TrustedKeys());
  report.blob_present = blobs_.Has(sha256);
  bool changed_under_rehash = false;
  if (report.blob_present) {
    if (rehash) {
      Result<std::string> actual = Sha256FileHex(blobs_.PathOf(sha256));
      if (!actual && IsChangedWhileReading(actual.error())) {
        // Something rewrote the blob under the re-hash: not what was stored.
        report.unchanged = false;
        changed_under_rehash = true;
      } else {
        if (!actual) return std::unexpected(std::move(actual).error());
        report.unchanged = *actual == sha256;
      }
    } else {
      report.unchanged = true;  // content-addressed: only a re-hash can say more
    }
  }
  Judge(report, *record, keys, trusted);
  if (report.detail.empty() && changed_under_rehash) report.detail = "the stored blob changed while it was re-hashed";
  if (report.detail.empty() && !report.blob_present) report.detail = "the blob is missing from the store";
  if (report.detail.empty() && !report.unchanged) report.detail = "the stored blob no longer hashes to its digest";
  report.record = std::move(record);
  return report;
}

Result<VerifyReport> Registry::VerifyUpload(const Upload& upload) { return VerifyBytesDigest(upload.sha256()); }

Result<VerifyReport> Registry::VerifyBytesDigest(const std::string& sha256) {
  if (!ValidSha256(sha256)) return MakeError(ErrorCode::kInvalidArgument, 0, "sha256 must be 64 lower-case hex digits");
  VerifyReport report;
  report.sha256 = sha256;
  CKG_ASSIGN_OR_RETURN(auto record, catalog_->FindBySha256(report.sha256));
  if (!record) {
    report.detail = "no stored checkpoint has this file's digest (changed, or never pushed)";
    return report;
  }
  CKG_ASSIGN_OR_RETURN(auto keys, catalog_->ListKeys());
  CKG_ASSIGN_OR_RETURN(auto trusted, TrustedKeys());
  report.blob_present = blobs_.Has(report.sha256);
  report.unchanged = true;  // the bytes the client sent hash to the catalogued digest
  Judge(report, *record, keys, trusted);
  report.record = std::move(record);
  return report;
}

Result<bool> Registry::RevokeCheckpoint(const std::string& sha256, const std::string& reason, const std::string& who) {
  if (!ValidSha256(sha256)) return MakeError(ErrorCode::kInvalidArgument, 0, "sha256 must be 64 lower-case hex digits");
  CKG_ASSIGN_OR_RETURN(bool revoked, catalog_->RevokeCheckpoint(sha256, reason, who));
  CKG_TRY(catalog_->Audit({0, 0, who, "revoke-checkpoint", sha256, revoked ? "ok" : "not-found", reason}));
  return revoked;
}

Result<KeyRecord> Registry::RotateKey(const std::string& who) {
  std::lock_guard lock(key_mutex_);
  CKG_ASSIGN_OR_RETURN(auto key, signing::PrivateKey::Generate(options_.key_curve));
  const std::string id = key.KeyId();
  CKG_TRY(key.WriteFile(KeyPath(id)));
  KeyRecord record{id, key.PublicPem(), CurveNameOf(key.curve()), "active", NowSeconds(), "", 0};
  CKG_TRY(catalog_->AddKey(record));
  CKG_TRY(catalog_->Audit({0, 0, who, "rotate-key", id, "ok", "new active key; the previous one is retired"}));
  signer_ = std::move(key);
  signer_id_ = id;
  return record;
}

Result<bool> Registry::RevokeKey(const std::string& key_id, const std::string& reason, const std::string& who) {
  if (!ValidSha256(key_id)) return MakeError(ErrorCode::kInvalidArgument, 0, "a key id is 64 lower-case hex digits");
  // Active as the catalog says (another process may have rotated since
  // this one loaded its key).
  CKG_ASSIGN_OR_RETURN(auto active, catalog_->ActiveKey());
  const bool was_active = active && active->key_id == key_id;
  if (was_active) CKG_TRY(RotateKey(who));
  CKG_ASSIGN_OR_RETURN(bool revoked, catalog_->RevokeKey(key_id, reason));
  if (revoked) {
    std::error_code ec;
    fs::remove(KeyPath(key_id), ec);  // a revoked key must never sign again
  }
  CKG_TRY(catalog_->Audit({0, 0, who, "revoke-key", key_id, revoked ? "ok" : "not-found", reason}));
  return revoked;
}

Result<std::string> Registry::CreateToken(const std::string& name, const std::string& scope, const std::string& who,
                                          const std::vector<std::string>& prefixes) {
  if (name.empty() || name.size() > 64 || !AllOf(name, "._-")) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "a token name is 1-64 characters of A-Z a-z 0-9 . _ -");
  }
  if (scope != "read" && scope != "write" && scope != "admin") {
    return MakeError(ErrorCode::kInvalidArgument, 0, "scope must be read, write or admin");
  }
  if (!prefixes.empty() && scope != "write") {
    return MakeError(ErrorCode::kInvalidArgument, 0, "--prefix limits write tokens only");
  }
  constexpr size_t kMaxPrefixes = 64;
  if (prefixes.size() > kMaxPrefixes) return MakeError(ErrorCode::kInvalidArgument, 0, "at most 64 prefixes");
  for (const std::string& prefix : prefixes) {
    // A prefix is the start of a valid name ("team-a/" may end in '/').
    const std::string probe = prefix.ends_with('/') ? prefix + "x" : prefix;
    if (prefix.empty() || !ValidName(probe)) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "a prefix is the start of a name (A-Z a-z 0-9 . _ / -, not starting with '/', no '..'): '" +
                           prefix + "'");
    }
  }
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return MakeError(ErrorCode::kIo, 0, "the random generator failed");
  const std::string token = "ckg_" + HexLower(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  CKG_TRY(catalog_->AddToken(name, Sha256Hex(token), scope, prefixes));
  std::string detail = "scope " + scope;
  for (const std::string& prefix : prefixes) detail += ", prefix " + prefix;
  CKG_TRY(catalog_->Audit({0, 0, who, "token-create", name, "ok", detail}));
  return token;
}

Result<bool> Registry::RevokeToken(const std::string& name, const std::string& who) {
  CKG_ASSIGN_OR_RETURN(bool revoked, catalog_->RevokeToken(name));
  CKG_TRY(catalog_->Audit({0, 0, who, "token-revoke", name, revoked ? "ok" : "not-found", ""}));
  return revoked;
}

Result<std::optional<TokenRecord>> Registry::Authenticate(const std::string& raw_token) {
  if (raw_token.size() != 68 || raw_token.rfind("ckg_", 0) != 0) return std::optional<TokenRecord>();
  return catalog_->FindToken(Sha256Hex(raw_token));
}

}  // namespace ckptguard::daemon

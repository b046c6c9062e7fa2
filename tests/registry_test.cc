// Tests of ckptguardd in process: the Registry (first start, ingest pipeline,
// verification, key rotation and revocation, tokens, crash reconciliation) and
// the HTTP Server over loopback (RegistryClient and raw sockets: auth, routes,
// limits, timeouts, keep-alive, concurrency, draining).
//
// Every case runs on the catalog backend $CKPTGUARD_TEST_CATALOG names
// (CTest runs the program for each): SQLite in DATA/catalog.db, or a fresh
// database per data folder on a throwaway PostgreSQL server
// (postgres_server.h). What only one backend has (the catalog file, the
// one-server-per-folder lock) is checked on that backend only.
#define BOOST_TEST_MODULE registry_test
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "ckptguard/atomic_file.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/daemon/blob_store.h"
#include "ckptguard/daemon/catalog.h"
#include "ckptguard/daemon/client.h"
#include "ckptguard/daemon/registry.h"
#include "ckptguard/daemon/server.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/safetensors_writer.h"
#include "ckptguard/sha256.h"
#include "ckptguard/signing/model_signing.h"
#include "amplifiers.h"
#include "postgres_server.h"
#include "test_util.h"

namespace ckptguard::daemon {
namespace {

namespace fs = std::filesystem;
using ckptguard::testing::CorpusDir;
using ckptguard::testing::ReadFile;
using ckptguard::testing::TempDir;
using Json = nlohmann::json;

template <typename T>
T Ok(Result<T> r) {
  BOOST_REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? std::string() : r.error().ToString()));
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

void Check(const Status& s) { BOOST_REQUIRE_MESSAGE(s.has_value(), (s ? std::string() : s.error().ToString())); }

std::string Benign(const std::string& name) { return (CorpusDir() / "benign" / name).string(); }
std::string Malicious(const std::string& name) { return (CorpusDir() / "malicious" / name).string(); }

using ckptguard::testing::TestCatalogIsPostgres;

// OptionsFor: a registry on `dir` with the catalog under test (the same
// PostgreSQL database whenever `dir` is opened again).
RegistryOptions OptionsFor(const fs::path& dir) {
  RegistryOptions options;
  options.data_dir = dir.string();
  std::string err;
  options.catalog = ckptguard::testing::TestCatalogFor(options.data_dir, &err);
  BOOST_REQUIRE_MESSAGE(err.empty(), err);
  return options;
}

// ServingOptionsFor: OptionsFor a server (RegistryOptions::serve), which
// waits at most 200 ms for DATA/lock (SQLite).
RegistryOptions ServingOptionsFor(const fs::path& dir) {
  RegistryOptions options = OptionsFor(dir);
  options.serve = true;
  options.lock_wait = std::chrono::milliseconds(200);
  return options;
}

std::unique_ptr<Registry> OpenRegistry(const fs::path& dir, bool accept_suspicious = false) {
  RegistryOptions options = OptionsFor(dir);
  options.accept_suspicious = accept_suspicious;
  return Ok(Registry::Open(options));
}

// UploadBytes streams `bytes` into a finished Upload (in small pieces, as the server does).
Upload UploadBytes(const BlobStore& blobs, const std::string& bytes) {
  Upload upload = Ok(blobs.BeginUpload(uint64_t{1} << 30));
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  for (size_t at = 0; at < bytes.size(); at += 4096) {
    Check(upload.Append(Bytes(data + at, std::min<size_t>(4096, bytes.size() - at))));
  }
  Check(upload.Finish());
  return upload;
}

Result<CheckpointRecord> IngestFile(Registry& registry, const std::string& path, const std::string& name,
                                   const std::string& tag = "v1") {
  Upload upload = UploadBytes(registry.blobs(), ReadFile(path));
  return registry.Ingest(upload, IngestRequest{name, tag, "tester"});
}

size_t CountFiles(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

std::vector<signing::PublicKey> PublicKeysOf(Registry& registry, bool include_revoked = false) {
  std::vector<signing::PublicKey> out;
  for (const KeyRecord& key : Ok(registry.catalog().ListKeys())) {
    if (key.state == "revoked" && !include_revoked) continue;
    out.push_back(Ok(signing::PublicKey::FromPem(key.public_pem)));
  }
  return out;
}

std::string FileSha256(const std::string& path) { return Ok(Sha256FileHex(path)); }

// The tensors an expectation file lists: key -> (dtype, shape).
std::map<std::string, std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(const std::string& expect_json) {
  const Json j = Json::parse(ReadFile(expect_json));
  std::map<std::string, std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& [key, t] : j.at("tensors").items()) {
    out[key] = {t.at("dtype").get<std::string>(), t.at("shape").get<std::vector<int64_t>>()};
  }
  return out;
}

// ---------------------------------------------------------------- Registry

BOOST_AUTO_TEST_SUITE(registry)

BOOST_AUTO_TEST_CASE(first_open_creates_database_and_key_reopen_keeps_it) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  std::string key_id;
  {
    auto registry = OpenRegistry(data);
    BOOST_TEST(fs::is_regular_file(data / "catalog.db") == !TestCatalogIsPostgres());
    BOOST_TEST(fs::is_directory(data / "blobs"));
    BOOST_TEST(fs::is_directory(data / "tmp"));
    struct stat st{};
    BOOST_REQUIRE_EQUAL(::stat((data / "keys").c_str(), &st), 0);
    BOOST_TEST((st.st_mode & 07777) == 0700u);
    BOOST_REQUIRE_EQUAL(::stat(data.c_str(), &st), 0);
    BOOST_TEST((st.st_mode & 077) == 0u, "the data folder is private");
    auto keys = Ok(registry->catalog().ListKeys());
    BOOST_REQUIRE_EQUAL(keys.size(), 1u);
    BOOST_TEST(keys[0].state == "active");
    BOOST_TEST(keys[0].curve == "P-256");
    key_id = keys[0].key_id;
    const fs::path pem = data / "keys" / (key_id + ".pem");
    BOOST_REQUIRE(fs::is_regular_file(pem));
    BOOST_REQUIRE_EQUAL(::stat(pem.c_str(), &st), 0);
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    BOOST_TEST(CountFiles(data / "keys") == 1u);
    // The private file is the catalogued key.
    auto priv = Ok(signing::PrivateKey::LoadFile(pem.string()));
    BOOST_TEST(priv.KeyId() == key_id);
    BOOST_TEST(priv.PublicPem() == keys[0].public_pem);
    auto active = Ok(registry->catalog().ActiveKey());
    BOOST_REQUIRE(active.has_value());
    BOOST_TEST(active->key_id == key_id);
    // The PEM bundle lists it.
    const std::string pems = Ok(registry->TrustedKeysPem());
    BOOST_TEST(pems.find(key_id) != std::string::npos);
    BOOST_TEST(Ok(signing::PublicKey::FromPem(pems)).KeyId() == key_id);
  }
  auto again = OpenRegistry(data);
  auto keys = Ok(again->catalog().ListKeys());
  BOOST_REQUIRE_EQUAL(keys.size(), 1u);
  BOOST_TEST(keys[0].key_id == key_id);
  BOOST_TEST(keys[0].state == "active");
  BOOST_TEST(CountFiles(data / "keys") == 1u);
}

BOOST_AUTO_TEST_CASE(open_refuses_a_missing_private_key) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  std::string key_id;
  { key_id = Ok(OpenRegistry(data)->catalog().ActiveKey())->key_id; }
  fs::remove(data / "keys" / (key_id + ".pem"));
  RegistryOptions options = OptionsFor(data);
  BOOST_TEST(!Registry::Open(options).has_value());
}

BOOST_AUTO_TEST_CASE(ingest_benign_stores_signs_and_catalogues) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const std::string path = Benign("mlp.params");
  const std::string sha = FileSha256(path);
  const CheckpointRecord record = Ok(IngestFile(*registry, path, "team/mlp", "v1.0"));
  BOOST_TEST(record.status == "stored");
  BOOST_TEST(record.verdict == "safe");
  BOOST_TEST(record.sha256 == sha);
  BOOST_TEST(record.size == fs::file_size(path));
  BOOST_TEST(record.format == "torch-zip");
  BOOST_TEST(record.name == "team/mlp");
  BOOST_TEST(record.tag == "v1.0");
  BOOST_TEST(record.uploader == "tester");
  BOOST_TEST(record.id > 0);
  const auto active = Ok(registry->catalog().ActiveKey());
  BOOST_TEST(record.key_id == active->key_id);

  // The signature: a model-signing bundle over the single file ".".
  auto statement = Ok(signing::VerifyBundle(record.signature, PublicKeysOf(*registry)));
  BOOST_REQUIRE_EQUAL(statement.resources.size(), 1u);
  BOOST_TEST(statement.resources[0].name == ".");
  BOOST_TEST(statement.resources[0].sha256_hex == sha);
  BOOST_TEST(statement.key_id == active->key_id);
  BOOST_TEST(statement.subject_name == "team/mlp");
  // It verifies the stored blob as a file, too.
  Ok(signing::VerifyPath(record.signature, registry->blobs().PathOf(sha), PublicKeysOf(*registry)));
  // A foreign key does not verify it.
  auto other = Ok(signing::PrivateKey::Generate(signing::Curve::kP256));
  BOOST_TEST(!signing::VerifyBundle(record.signature, {Ok(signing::PublicKey::FromPrivate(other))}).has_value());

  // The manifest is what the file holds.
  const auto expected = ExpectedTensors(Benign("mlp.params.expect.json"));
  BOOST_REQUIRE_EQUAL(record.manifest.size(), expected.size());
  for (const ManifestEntry& m : record.manifest) {
    auto it = expected.find(m.key);
    BOOST_REQUIRE_MESSAGE(it != expected.end(), "unexpected key " + m.key);
    BOOST_TEST(m.dtype == it->second.first, m.key);
    BOOST_TEST(m.shape == it->second.second, boost::test_tools::per_element());
  }
  bool saw_hidden = false;
  for (const ManifestEntry& m : record.manifest) {
    if (m.key == "hidden.weight") {
      saw_hidden = true;
      BOOST_TEST(m.dtype == "float32");
      BOOST_TEST(m.shape == (std::vector<int64_t>{256, 20}), boost::test_tools::per_element());
    }
  }
  BOOST_TEST(saw_hidden);

  // The blob is in the store, byte for byte; tmp/ is empty.
  BOOST_TEST(registry->blobs().Has(sha));
  BOOST_TEST(ReadFile(registry->blobs().PathOf(sha)) == ReadFile(path));
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);

  // The catalogue has it, with manifest and signature.
  auto found = Ok(registry->catalog().FindBySha256(sha));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->status == "stored");
  BOOST_TEST(found->signature == record.signature);
  BOOST_TEST(found->manifest.size() == record.manifest.size());

  // One audit row for the push.
  int pushes = 0;
  for (const AuditRecord& a : Ok(registry->catalog().ListAudit())) {
    if (a.action != "push") continue;
    ++pushes;
    BOOST_TEST(a.target == sha);
    BOOST_TEST(a.result == "stored");
    BOOST_TEST(a.who == "tester");
  }
  BOOST_TEST(pushes == 1);
}

BOOST_AUTO_TEST_CASE(ingest_every_safe_benign_file_is_stored) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  for (const char* name : {"mlp_input.pt", "mlp_output.pt", "mlp.safetensors", "mlp_legacy.pt", "parameters.pt"}) {
    const CheckpointRecord record = Ok(IngestFile(*registry, Benign(name), std::string("b/") + name));
    BOOST_TEST(record.status == "stored", name << ": " << record.verdict);
    BOOST_TEST(registry->blobs().Has(record.sha256), name);
  }
}

// The amplifiers of issue 13 (tests/amplifiers.h): every push is answered
// (the scan and the manifest load charge one budget per file each), nothing
// hostile is stored, and no temporary file is left.
BOOST_AUTO_TEST_CASE(ingest_amplifiers_is_answered_and_bounded) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"nested-shared", testing::NestedSharedZip()},
      {"none-pop", testing::NonePopPickle()},
      {"sparse-memo", testing::SparseMemoPickle()},
      {"huge-declared", testing::HugeDeclaredEntryZip()},
      {"broadcast-view", testing::BroadcastViewCheckpoint()},
  };
  for (const auto& [name, bytes] : inputs) {
    Upload upload = UploadBytes(registry->blobs(), bytes);
    const CheckpointRecord record = Ok(registry->Ingest(upload, IngestRequest{"amp/" + name, "v1", "tester"}));
    BOOST_TEST((record.status == "stored" || record.status == "rejected"), name);
    if (record.status == "stored") {
      // Only content the scanner calls safe is stored (the None pickle, the
      // broadcast view whose digest the budget refuses: its manifest says so).
      BOOST_TEST(record.verdict == "safe", name);
    }
  }
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);
}

BOOST_AUTO_TEST_CASE(ingest_dangerous_is_rejected_with_findings_and_no_blob) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  // Every malicious corpus file the manifest calls dangerous is refused.
  std::ifstream manifest(CorpusDir() / "malicious" / "manifest.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    const Json entry = Json::parse(line);
    const std::string file = entry.at("file");
    if (!fs::exists(Malicious(file))) continue;
    const std::string expected = entry.at("verdict");
    const CheckpointRecord record = Ok(IngestFile(*registry, Malicious(file), "evil/" + file));
    BOOST_TEST(record.status == "rejected", file);
    BOOST_TEST(record.verdict == expected, file);
    BOOST_TEST(!record.findings.empty(), file);
    BOOST_TEST(record.signature.empty(), file);
    BOOST_TEST(record.key_id.empty(), file);
    BOOST_TEST(!registry->blobs().Has(record.sha256), file);
    ++checked;
  }
  BOOST_TEST(checked >= 10);
  BOOST_TEST(CountFiles(tmp.path / "data" / "blobs") == 0u);
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u, "rejected uploads leave no temp file");

  // os.system is named by a dangerous finding.
  const CheckpointRecord record = Ok(IngestFile(*registry, Malicious("os_system_p2.pkl"), "evil/again"));
  bool names_system = false;
  for (const FindingRecord& f : record.findings) {
    if (f.severity == "dangerous" && f.global.find("system") != std::string::npos) names_system = true;
  }
  BOOST_TEST(names_system);
  auto rows = Ok(registry->catalog().ListCheckpoints({.name = "evil/again"}));
  BOOST_REQUIRE_EQUAL(rows.size(), 1u);
  BOOST_TEST(rows[0].status == "rejected");
  // A rejected digest is not "found" as stored or revoked.
  BOOST_TEST(!Ok(registry->catalog().FindBySha256(record.sha256)).has_value());
  bool audited = false;
  for (const AuditRecord& a : Ok(registry->catalog().ListAudit())) {
    if (a.action == "push" && a.target == record.sha256 && a.result == "rejected") audited = true;
  }
  BOOST_TEST(audited);
  // An unreadable file is rejected too.
  Upload junk = UploadBytes(registry->blobs(), "not a model at all");
  const CheckpointRecord garbage = Ok(registry->Ingest(junk, IngestRequest{"junk", "", "tester"}));
  BOOST_TEST(garbage.status == "rejected");
  BOOST_TEST(!registry->blobs().Has(garbage.sha256));
}

BOOST_AUTO_TEST_CASE(suspicious_rejected_by_default_stored_when_accepted) {
  for (const char* name : {"whole_module.pt", "mlp_torchscript.pt"}) {
    TempDir tmp;
    {
      auto strict = OpenRegistry(tmp.path / "strict");
      const CheckpointRecord record = Ok(IngestFile(*strict, Benign(name), "s/m"));
      BOOST_TEST(record.verdict == "suspicious", name);
      BOOST_TEST(record.status == "rejected", name);
      BOOST_TEST(!strict->blobs().Has(record.sha256), name);
    }
    auto lenient = OpenRegistry(tmp.path / "lenient", /*accept_suspicious=*/true);
    const CheckpointRecord record = Ok(IngestFile(*lenient, Benign(name), "s/m"));
    BOOST_TEST(record.verdict == "suspicious", name);
    BOOST_TEST(record.status == "stored", name);
    BOOST_TEST(!record.findings.empty(), name);
    BOOST_TEST(lenient->blobs().Has(record.sha256), name);
    BOOST_TEST(Ok(lenient->VerifyDigest(record.sha256, true)).verified(), name);
  }
  // Dangerous stays rejected even when suspicious is accepted.
  TempDir tmp;
  auto lenient = OpenRegistry(tmp.path / "data", true);
  BOOST_TEST(Ok(IngestFile(*lenient, Malicious("os_system_p0.pkl"), "x")).status == "rejected");
}

BOOST_AUTO_TEST_CASE(invalid_name_or_tag_is_refused) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const std::string path = Benign("mlp_input.pt");
  for (const std::string& name : {std::string(), std::string("/abs"), std::string("a/../b"), std::string("a b"),
                                   std::string("x;rm"), std::string(201, 'a'), std::string("caf\xc3\xa9")}) {
    auto r = IngestFile(*registry, path, name);
    BOOST_TEST(!r.has_value(), "name '" << name << "' was accepted");
    if (!r) BOOST_TEST((r.error().code == ErrorCode::kInvalidArgument));
  }
  for (const std::string& tag : {std::string("a/b"), std::string("a b"), std::string(129, 't')}) {
    BOOST_TEST(!IngestFile(*registry, path, "ok", tag).has_value(), "tag '" << tag << "' was accepted");
  }
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({})).empty());
  BOOST_TEST(CountFiles(tmp.path / "data" / "blobs") == 0u);
  // The edges that are allowed.
  BOOST_TEST(Ok(IngestFile(*registry, path, std::string(200, 'a'), std::string(128, 't'))).status == "stored");
  BOOST_TEST(Ok(IngestFile(*registry, path, "Org_1/sub.dir/model-x", "")).status == "stored");
  BOOST_TEST(ValidSha256(std::string(64, 'a')));
  BOOST_TEST(!ValidSha256(std::string(64, 'A')));
  BOOST_TEST(!ValidSha256(std::string(63, 'a')));
}

BOOST_AUTO_TEST_CASE(verify_digest_rehash_and_corruption) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const CheckpointRecord record = Ok(IngestFile(*registry, Benign("mlp.params"), "m"));
  for (bool rehash : {false, true}) {
    const VerifyReport report = Ok(registry->VerifyDigest(record.sha256, rehash));
    BOOST_TEST(report.verified(), report.detail);
    BOOST_TEST(report.catalogued);
    BOOST_TEST(report.blob_present);
    BOOST_TEST(report.unchanged);
    BOOST_TEST(report.signature_valid);
    BOOST_TEST(report.status == "stored");
    BOOST_TEST(report.key_id == record.key_id);
    BOOST_TEST(report.key_state == "active");
    BOOST_TEST(report.detail.empty());
    BOOST_REQUIRE(report.record.has_value());
    BOOST_TEST(report.record->name == "m");
  }
  // VerifyUpload of the same bytes.
  Upload same = UploadBytes(registry->blobs(), ReadFile(Benign("mlp.params")));
  BOOST_TEST(Ok(registry->VerifyUpload(same)).verified());
  // Unknown digest; malformed digest.
  const VerifyReport unknown = Ok(registry->VerifyDigest(std::string(64, '0'), true));
  BOOST_TEST(!unknown.verified());
  BOOST_TEST(!unknown.catalogued);
  BOOST_TEST(!unknown.detail.empty());
  BOOST_TEST(!registry->VerifyDigest("XYZ", false).has_value());
  Upload changed = UploadBytes(registry->blobs(), ReadFile(Benign("mlp.params")) + "x");
  const VerifyReport changed_report = Ok(registry->VerifyUpload(changed));
  BOOST_TEST(!changed_report.verified());
  BOOST_TEST(!changed_report.catalogued);

  // Corrupt the stored blob: a re-hash notices, the quick check cannot.
  const std::string blob = registry->blobs().PathOf(record.sha256);
  fs::permissions(blob, fs::perms::owner_read | fs::perms::owner_write);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  const VerifyReport corrupt = Ok(registry->VerifyDigest(record.sha256, true));
  BOOST_TEST(!corrupt.unchanged);
  BOOST_TEST(!corrupt.verified());
  BOOST_TEST(corrupt.signature_valid);
  BOOST_TEST(!corrupt.detail.empty());
  BOOST_TEST(Ok(registry->VerifyDigest(record.sha256, false)).unchanged);

  // A missing blob.
  fs::remove(blob);
  const VerifyReport missing = Ok(registry->VerifyDigest(record.sha256, false));
  BOOST_TEST(!missing.blob_present);
  BOOST_TEST(!missing.verified());
  BOOST_TEST(!missing.detail.empty());
}

BOOST_AUTO_TEST_CASE(verify_revoked_checkpoint) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const CheckpointRecord record = Ok(IngestFile(*registry, Benign("mlp.params"), "m"));
  BOOST_TEST(Ok(registry->RevokeCheckpoint(record.sha256, "leaked weights", "admin")));
  const VerifyReport report = Ok(registry->VerifyDigest(record.sha256, true));
  BOOST_TEST(!report.verified());
  BOOST_TEST(report.status == "revoked");
  BOOST_TEST(report.catalogued);
  BOOST_TEST(report.detail.find("leaked weights") != std::string::npos, report.detail);
  BOOST_TEST(report.detail.find("admin") != std::string::npos, report.detail);
  // Revoking again or an unknown digest: false.
  BOOST_TEST(!Ok(registry->RevokeCheckpoint(record.sha256, "again", "admin")));
  BOOST_TEST(!Ok(registry->RevokeCheckpoint(std::string(64, 'e'), "nope", "admin")));
  BOOST_TEST(!registry->RevokeCheckpoint("not-a-digest", "x", "admin").has_value());
  // The blob stays (it may be fetched with allow_revoked) and survives a reopen.
  BOOST_TEST(registry->blobs().Has(record.sha256));
  registry.reset();
  registry = OpenRegistry(tmp.path / "data");
  BOOST_TEST(registry->blobs().Has(record.sha256));
  BOOST_TEST(Ok(registry->VerifyDigest(record.sha256, false)).status == "revoked");
  // Pushing the same bytes again, under another name, does not bring them
  // back: the push is rejected naming the revocation, and it stays revoked.
  const CheckpointRecord again = Ok(IngestFile(*registry, Benign("mlp.params"), "renamed"));
  BOOST_TEST(again.status == "rejected");
  BOOST_REQUIRE(!again.findings.empty());
  BOOST_TEST(again.findings[0].rule == "CKG-R001");
  BOOST_TEST(again.findings[0].message.find("leaked weights") != std::string::npos, again.findings[0].message);
  BOOST_TEST(again.signature.empty());
  const VerifyReport after = Ok(registry->VerifyDigest(record.sha256, true));
  BOOST_TEST(!after.verified());
  BOOST_TEST(after.status == "revoked");
}

BOOST_AUTO_TEST_CASE(key_rotation_and_revocation) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  auto registry = OpenRegistry(data);
  const std::string first = Ok(registry->catalog().ActiveKey())->key_id;
  const CheckpointRecord a = Ok(IngestFile(*registry, Benign("mlp.params"), "a"));
  BOOST_TEST(a.key_id == first);

  // Rotate: new pushes use the new key, old signatures still verify.
  const KeyRecord second = Ok(registry->RotateKey("admin"));
  BOOST_TEST(second.key_id != first);
  BOOST_TEST(second.state == "active");
  BOOST_TEST(Ok(registry->catalog().ActiveKey())->key_id == second.key_id);
  BOOST_TEST(fs::exists(data / "keys" / (second.key_id + ".pem")));
  const VerifyReport old_ok = Ok(registry->VerifyDigest(a.sha256, true));
  BOOST_TEST(old_ok.verified(), old_ok.detail);
  BOOST_TEST(old_ok.key_state == "retired");
  const CheckpointRecord b = Ok(IngestFile(*registry, Benign("mlp_input.pt"), "b"));
  BOOST_TEST(b.key_id == second.key_id);
  BOOST_TEST(Ok(registry->VerifyDigest(b.sha256, true)).verified());
  // Both keys are in the trusted PEM, the active one first.
  const std::string pems = Ok(registry->TrustedKeysPem());
  BOOST_TEST(pems.find(first) != std::string::npos);
  BOOST_TEST(pems.find(second.key_id) < pems.find(first));
  BOOST_TEST(Ok(signing::PublicKey::FromPem(pems)).KeyId() == second.key_id);

  // A reopened registry signs with the rotated key.
  registry.reset();
  registry = OpenRegistry(data);
  const CheckpointRecord c = Ok(IngestFile(*registry, Benign("mlp_output.pt"), "c"));
  BOOST_TEST(c.key_id == second.key_id);

  // Revoke the retired key: what it signed no longer verifies.
  BOOST_TEST(Ok(registry->RevokeKey(first, "compromised", "admin")));
  BOOST_TEST(!fs::exists(data / "keys" / (first + ".pem")));
  const VerifyReport old_bad = Ok(registry->VerifyDigest(a.sha256, true));
  BOOST_TEST(!old_bad.verified());
  BOOST_TEST(!old_bad.signature_valid);
  BOOST_TEST(old_bad.key_state == "revoked");
  BOOST_TEST(!old_bad.detail.empty());
  BOOST_TEST(Ok(registry->VerifyDigest(b.sha256, true)).verified());
  BOOST_TEST(Ok(registry->TrustedKeysPem()).find(first) == std::string::npos);
  BOOST_TEST(!Ok(registry->RevokeKey(std::string(64, 'f'), "unknown", "admin")));
  BOOST_TEST(!registry->RevokeKey("short", "bad id", "admin").has_value());

  // Revoke the active key: a new one takes over, b fails, new pushes verify.
  BOOST_TEST(Ok(registry->RevokeKey(second.key_id, "compromised too", "admin")));
  auto active = Ok(registry->catalog().ActiveKey());
  BOOST_REQUIRE(active.has_value());
  BOOST_TEST(active->key_id != second.key_id);
  BOOST_TEST(active->key_id != first);
  BOOST_TEST(!fs::exists(data / "keys" / (second.key_id + ".pem")));
  BOOST_TEST(!Ok(registry->VerifyDigest(b.sha256, true)).verified());
  const CheckpointRecord d = Ok(IngestFile(*registry, Benign("parameters.pt"), "d"));
  BOOST_TEST(d.key_id == active->key_id);
  BOOST_TEST(Ok(registry->VerifyDigest(d.sha256, true)).verified());
  int states_active = 0;
  for (const KeyRecord& k : Ok(registry->catalog().ListKeys())) states_active += k.state == "active" ? 1 : 0;
  BOOST_TEST(states_active == 1);
  // The reopened registry still opens (its active key file exists).
  registry.reset();
  registry = OpenRegistry(data);
  BOOST_TEST(Ok(registry->catalog().ActiveKey())->key_id == active->key_id);
  // Audit rows for rotate and revoke.
  std::set<std::string> actions;
  for (const AuditRecord& r : Ok(registry->catalog().ListAudit())) actions.insert(r.action);
  BOOST_TEST(actions.contains("rotate-key"));
  BOOST_TEST(actions.contains("revoke-key"));
}

BOOST_AUTO_TEST_CASE(tokens) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const std::string token = Ok(registry->CreateToken("ci", "write", "local"));
  BOOST_TEST(token.size() == 68u);
  BOOST_TEST(token.rfind("ckg_", 0) == 0u);
  const std::string admin = Ok(registry->CreateToken("root", "admin", "local"));
  BOOST_TEST(admin != token);
  auto found = Ok(registry->Authenticate(token));
  BOOST_REQUIRE(found.has_value());
  BOOST_TEST(found->name == "ci");
  BOOST_TEST(found->scope == "write");
  BOOST_TEST(Ok(registry->Authenticate(admin))->scope == "admin");
  // The raw token is not stored anywhere in the database file.
  if (TestCatalogIsPostgres()) {
    const std::string uri = ckptguard::testing::TestCatalogFor((tmp.path / "data").string());
    // No column of any token row holds the raw token (the token is hex: no quoting needed).
    BOOST_TEST(ckptguard::testing::PostgresServer::Count(
                   uri, "SELECT count(*) FROM tokens WHERE strpos(name || token_sha256 || prefixes, '" + token +
                            "') > 0 OR strpos(token_sha256, '" + token.substr(4) + "') > 0") == 0);
    BOOST_TEST(ckptguard::testing::PostgresServer::Count(uri, "SELECT count(*) FROM tokens") == 2);
  } else {
    BOOST_TEST(ReadFile(tmp.path / "data" / "catalog.db").find(token) == std::string::npos);
  }
  // Malformed or altered tokens.
  std::string altered = token;
  altered.back() = altered.back() == '0' ? '1' : '0';
  for (const std::string& bad : {std::string(), std::string("ckg_"), std::string("ckg_xyz"), altered,
                                 token.substr(0, 67), token + "0", "Bearer " + token, "xyz_" + token.substr(4)}) {
    BOOST_TEST(!Ok(registry->Authenticate(bad)).has_value(), "'" << bad << "' authenticated");
  }
  BOOST_TEST(!registry->CreateToken("bad name", "write", "local").has_value());
  BOOST_TEST(!registry->CreateToken("x", "superuser", "local").has_value());
  BOOST_TEST(!registry->CreateToken("", "write", "local").has_value());
  // Revoked: nullopt.
  BOOST_TEST(Ok(registry->RevokeToken("ci", "local")));
  BOOST_TEST(!Ok(registry->Authenticate(token)).has_value());
  BOOST_TEST(Ok(registry->Authenticate(admin)).has_value());
  BOOST_TEST(!Ok(registry->RevokeToken("nobody", "local")));
}

BOOST_AUTO_TEST_CASE(reconcile_removes_strays_keeps_referenced) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  std::string kept, orphan;
  {
    auto registry = OpenRegistry(data);
    kept = Ok(IngestFile(*registry, Benign("mlp.params"), "kept")).sha256;
    const std::string revoked = Ok(IngestFile(*registry, Benign("mlp_input.pt"), "revoked")).sha256;
    BOOST_TEST(Ok(registry->RevokeCheckpoint(revoked, "bad", "admin")));
    // A committed blob with no row (the crash between blob and row).
    Upload upload = UploadBytes(registry->blobs(), "orphan bytes nobody catalogued");
    orphan = upload.sha256();
    Check(registry->blobs().Commit(upload));
    BOOST_TEST(registry->blobs().Has(orphan));
    // An interrupted upload.
    std::ofstream(data / "tmp" / "upload-stray") << "half a file";
    std::ofstream(data / "tmp" / "upload-Xy12Zq") << "another";
    BOOST_TEST(CountFiles(data / "tmp") == 2u);
  }
  auto registry = OpenRegistry(data);
  BOOST_TEST(CountFiles(data / "tmp") == 0u);
  BOOST_TEST(!registry->blobs().Has(orphan));
  BOOST_TEST(registry->blobs().Has(kept));
  BOOST_TEST(Ok(registry->blobs().List()).size() == 2u, "the stored and the revoked blob are kept");
  BOOST_TEST(Ok(registry->VerifyDigest(kept, true)).verified());
}

// One writer per data folder: a serving registry holds DATA/lock; a second
// one refuses to start; administration beside it never cleans up (the data
// loss of issue 15: a cleanup that read the catalog before listing blobs
// deleted blobs whose rows were being committed).
BOOST_AUTO_TEST_CASE(one_server_per_folder_and_admin_never_cleans_up_beside_it) {
  if (TestCatalogIsPostgres()) return;  // the SQLite rule (PostgreSQL: several_servers_share_one_folder)
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  const RegistryOptions serve = ServingOptionsFor(data);
  auto server = Ok(Registry::Open(serve));
  const std::string kept = Ok(IngestFile(*server, Benign("mlp.params"), "kept")).sha256;
  // A blob committed whose row is not written yet (a push in flight).
  Upload upload = UploadBytes(server->blobs(), "a push between blob and row");
  const std::string in_flight = upload.sha256();
  Check(server->blobs().Commit(upload));
  std::ofstream(data / "tmp" / "upload-inflight") << "half an upload";

  // A second server refuses, naming the holder.
  auto second = Registry::Open(serve);
  BOOST_REQUIRE(!second.has_value());
  BOOST_TEST(second.error().detail.find("another ckptguardd serves this data folder") != std::string::npos,
             second.error().ToString());
  BOOST_TEST(second.error().detail.find("--catalog postgresql://") != std::string::npos, second.error().ToString());
  BOOST_TEST(second.error().detail.find("pid " + std::to_string(::getpid())) != std::string::npos,
             second.error().ToString());

  // Administration opens beside it and removes nothing.
  {
    auto admin = OpenRegistry(data);
    BOOST_TEST(Ok(admin->catalog().ListTokens()).empty());
  }
  BOOST_TEST(server->blobs().Has(in_flight), "a blob whose row may still commit survives an admin command");
  BOOST_TEST(server->blobs().Has(kept));
  BOOST_TEST(fs::exists(data / "tmp" / "upload-inflight"));

  // Once the server is gone, the next open is alone and cleans up.
  server.reset();
  {
    auto admin = OpenRegistry(data);
    BOOST_TEST(!admin->blobs().Has(in_flight));
    BOOST_TEST(admin->blobs().Has(kept));
    BOOST_TEST(!fs::exists(data / "tmp" / "upload-inflight"));
  }
  // And a server can start again.
  BOOST_TEST(Registry::Open(serve).has_value());
}

// With the catalog on PostgreSQL, several servers serve one data folder:
// a cleanup by one never removes a blob another has reserved (published,
// its row not yet committed) nor that server's uploads in progress, and
// removes what a server that is gone left behind.
BOOST_AUTO_TEST_CASE(several_servers_share_one_folder) {
  if (!TestCatalogIsPostgres()) return;  // SQLite: one server per folder (above)
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  const RegistryOptions serve = ServingOptionsFor(data);
  auto a = Ok(Registry::Open(serve));
  auto b = Ok(Registry::Open(serve));
  BOOST_TEST(a->server_id() != b->server_id());
  BOOST_TEST(a->registry_id() == b->registry_id());
  BOOST_TEST(!fs::exists(data / "lock"));
  const CheckpointRecord through_a = Ok(IngestFile(*a, Benign("mlp.params"), "m", "v1"));
  const CheckpointRecord through_b = Ok(IngestFile(*b, Benign("mlp_input.pt"), "m", "v2"));
  BOOST_TEST(through_a.key_id == through_b.key_id, "one signing key for the registry");
  BOOST_TEST(Ok(b->VerifyDigest(through_a.sha256, true)).verified());
  // A's push in flight: blob reserved and published, row not yet written;
  // and an upload still streaming.
  Upload upload = UploadBytes(a->blobs(), "a push between blob and row");
  const std::string in_flight = upload.sha256();
  const int64_t reservation = Ok(a->catalog().ReserveBlob(in_flight, a->server_id()));
  Check(a->blobs().Commit(upload));
  Upload streaming = Ok(a->blobs().BeginUpload(1000));
  Check(streaming.Append(Bytes(reinterpret_cast<const uint8_t*>("half"), 4)));
  // An orphan no one reserved (a push that lost its tag race).
  Upload orphan_upload = UploadBytes(b->blobs(), "orphan bytes");
  const std::string orphan = orphan_upload.sha256();
  Check(b->blobs().Commit(orphan_upload));
  // A server that is gone (kill -9) left an upload folder, a reservation
  // and its published blob. (A registry closed cleanly leaves nothing.)
  int64_t gone = 0;
  {
    auto c = Ok(Registry::Open(serve));
    gone = c->server_id();
  }
  const std::string gone_folder = "s" + std::to_string(gone);
  BOOST_TEST(!fs::exists(data / "tmp" / gone_folder), "a clean shutdown removes its upload folder");
  fs::create_directories(data / "tmp" / gone_folder);
  std::ofstream(data / "tmp" / gone_folder / "upload-left") << "half";
  Upload left = UploadBytes(b->blobs(), "left by a dead server");
  const std::string left_sha = left.sha256();
  Ok(b->catalog().ReserveBlob(left_sha, gone));
  Check(b->blobs().Commit(left));
  Check(b->Reconcile());
  BOOST_TEST(!b->blobs().Has(left_sha), "a dead server's reservation does not keep its blob");
  BOOST_TEST(b->blobs().Has(in_flight), "a blob another server reserved survives its cleanup");
  BOOST_TEST(fs::exists(streaming.temp_path()), "another server's upload in progress survives");
  BOOST_TEST(!b->blobs().Has(orphan));
  BOOST_TEST(!fs::exists(data / "tmp" / gone_folder));
  BOOST_TEST(Ok(b->blobs().List()).size() == 3u, "two rows' blobs and the reserved one");
  // Once A's row commits, the blob is referenced; released unreferenced, it goes.
  Check(a->catalog().ReleaseBlob(reservation));
  Check(b->Reconcile());
  BOOST_TEST(!b->blobs().Has(in_flight));
  BOOST_TEST(b->blobs().Has(through_a.sha256));
  BOOST_TEST(b->blobs().Has(through_b.sha256));
}

// A revocation or key change made through one server is in force at the
// other's next request: nothing is cached in process.
BOOST_AUTO_TEST_CASE(changes_through_one_server_are_in_force_on_the_other) {
  if (!TestCatalogIsPostgres()) return;
  TempDir tmp;
  const RegistryOptions serve = ServingOptionsFor(tmp.path / "data");
  auto a = Ok(Registry::Open(serve));
  auto b = Ok(Registry::Open(serve));
  const CheckpointRecord first = Ok(IngestFile(*b, Benign("mlp.params"), "m", "v1"));
  const std::string token = Ok(a->CreateToken("ci", "write", "local"));
  BOOST_TEST(Ok(b->Authenticate(token)).has_value());
  BOOST_TEST(Ok(a->RevokeToken("ci", "local")));
  BOOST_TEST(!Ok(b->Authenticate(token)).has_value());
  BOOST_TEST(Ok(a->RevokeCheckpoint(first.sha256, "backdoored", "admin")));
  const VerifyReport report = Ok(b->VerifyDigest(first.sha256, false));
  BOOST_TEST(!report.verified());
  BOOST_TEST(report.status == "revoked");
  BOOST_TEST(Ok(IngestFile(*b, Benign("mlp.params"), "m", "v2")).status == "rejected");
  // Key revoked on A: B signs its next push with the key A rotated to, and
  // what the revoked key signed no longer verifies on B.
  const CheckpointRecord signed_by_old = Ok(IngestFile(*b, Benign("mlp_input.pt"), "n", "v1"));
  BOOST_TEST(Ok(a->RevokeKey(signed_by_old.key_id, "leaked", "admin")));
  const std::string rotated = Ok(a->catalog().ActiveKey())->key_id;
  BOOST_TEST(!Ok(b->VerifyDigest(signed_by_old.sha256, false)).verified());
  BOOST_TEST(!fs::exists(tmp.path / "data" / "keys" / (signed_by_old.key_id + ".pem")));
  const CheckpointRecord after = Ok(IngestFile(*b, Benign("mlp_input.pt"), "n", "v2"));
  BOOST_TEST(after.key_id == rotated);
  BOOST_TEST(Ok(a->VerifyDigest(after.sha256, true)).verified());
}

BOOST_AUTO_TEST_CASE(catalog_files_and_data_folder_are_owner_only) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  fs::create_directories(data);
  ::chmod(data.c_str(), 0755);
  auto registry = OpenRegistry(data);
  Ok(IngestFile(*registry, Benign("mlp.params"), "m"));
  BOOST_REQUIRE_EQUAL(registry->warnings().size(), 1u);
  BOOST_TEST(registry->warnings()[0].find("was mode 0755; narrowed to 0700") != std::string::npos);
  for (const char* name : {"catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"}) {
    BOOST_TEST_CONTEXT(name) {
      struct stat st{};
      if (::stat((data / name).c_str(), &st) != 0) continue;  // -wal/-shm exist only while open
      BOOST_TEST((st.st_mode & 077) == 0u);
    }
  }
  struct stat st{};
  BOOST_REQUIRE_EQUAL(::stat(data.c_str(), &st), 0);
  BOOST_TEST((st.st_mode & 07777) == 0700u);
  BOOST_TEST(OpenRegistry(data)->warnings().empty(), "no warning once narrowed");
}

// Revocation is final: the catalog refuses a "stored" row for content some
// row marks revoked inside the insert's own transaction, so a revocation
// committed while a push was scanned and signed wins.
BOOST_AUTO_TEST_CASE(a_stored_row_is_never_written_for_revoked_content) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  auto registry = OpenRegistry(data);
  CheckpointRecord first = Ok(IngestFile(*registry, Benign("mlp.params"), "m", "v1"));
  BOOST_REQUIRE(first.status == "stored");
  BOOST_REQUIRE(Ok(registry->RevokeCheckpoint(first.sha256, "backdoored", "admin")));
  // What a push that passed its early revocation check before the revoke commits.
  CheckpointRecord late = first;
  late.id = 0;
  late.tag = "v2";
  std::optional<CheckpointRecord> revoked;
  const int64_t id = Ok(registry->catalog().InsertCheckpoint(late, nullptr, &revoked));
  BOOST_TEST(id == 0);
  BOOST_REQUIRE(revoked.has_value());
  BOOST_TEST(revoked->revoked_reason == "backdoored");
  BOOST_TEST(revoked->revoked_by == "admin");
  for (const CheckpointRecord& row : Ok(registry->catalog().ListCheckpoints({"m", "", "", 100, 0}))) {
    BOOST_TEST(row.status != "stored", "row " << row.id << " tag " << row.tag);
  }
  // Pushing the bytes again is rejected naming the revocation.
  CheckpointRecord again = Ok(IngestFile(*registry, Benign("mlp.params"), "m", "v3"));
  BOOST_TEST(again.status == "rejected");
  BOOST_TEST(Ok(registry->VerifyDigest(first.sha256, false)).verified() == false);
}

// Keys rotated or revoked by another process (the `ckptguardd key` command
// beside a running server) are in force at the server's next signature.
BOOST_AUTO_TEST_CASE(key_changes_by_another_process_reach_the_signer_at_once) {
  TempDir tmp;
  const fs::path data = tmp.path / "data";
  const RegistryOptions serve = ServingOptionsFor(data);
  auto server = Ok(Registry::Open(serve));
  const std::string k1 = Ok(IngestFile(*server, Benign("mlp.params"), "a")).key_id;
  std::string k2;
  {
    auto admin = OpenRegistry(data);  // another process, in effect
    BOOST_REQUIRE(Ok(admin->RevokeKey(k1, "leaked", "local")));
    k2 = Ok(admin->catalog().ActiveKey())->key_id;
  }
  BOOST_REQUIRE(k2 != k1);
  const CheckpointRecord signed_after = Ok(IngestFile(*server, Benign("mlp_input.pt"), "b"));
  BOOST_TEST(signed_after.key_id == k2, "the server signs with the key made by the other process");
  BOOST_TEST(Ok(server->VerifyDigest(signed_after.sha256, true)).verified());
  std::string k3;
  {
    auto admin = OpenRegistry(data);
    k3 = Ok(admin->RotateKey("local")).key_id;
  }
  const CheckpointRecord rotated = Ok(IngestFile(*server, Benign("mlp.params"), "c"));
  BOOST_TEST(rotated.key_id == k3);
}


// Issue 15: the signed statement binds what a pull asks for.
BOOST_AUTO_TEST_CASE(statement_binds_name_tag_and_registry_id) {
  TempDir tmp;
  std::string id;
  {
    RegistryOptions options = OptionsFor(tmp.path / "data");
    options.registry_name = "https://ckpt.example";
    auto registry = Ok(Registry::Open(options));
    id = registry->registry_id();
    BOOST_TEST(id.size() == 32u);
    BOOST_TEST(ValidSha256(id + id));  // lower-case hex
    const CheckpointRecord record = Ok(IngestFile(*registry, Benign("mlp.params"), "team/mlp", "v7"));
    auto statement = Ok(signing::VerifyBundle(record.signature, PublicKeysOf(*registry)));
    BOOST_REQUIRE(statement.registry_claim.has_value());
    BOOST_TEST(statement.registry_claim->name == "team/mlp");
    BOOST_TEST(statement.registry_claim->tag == "v7");
    BOOST_TEST(statement.registry_claim->registry_id == id);
    BOOST_TEST(statement.registry_claim->registry_name == "https://ckpt.example");
    BOOST_TEST(statement.subject_name == "team/mlp");
  }
  // The id is made once, with the data folder.
  auto reopened = OpenRegistry(tmp.path / "data");
  BOOST_TEST(reopened->registry_id() == id);
  TempDir other;
  BOOST_TEST(OpenRegistry(other.path / "data")->registry_id() != id);
}

BOOST_AUTO_TEST_CASE(tags_are_immutable_same_content_is_idempotent_retag_needs_both_switches) {
  TempDir tmp;
  const std::string a = Benign("mlp.params");
  const std::string b = Benign("mlp_input.pt");
  for (const bool allow_retag : {false, true}) {
    BOOST_TEST_CONTEXT("allow_retag " << allow_retag) {
      RegistryOptions options = OptionsFor(tmp.path / (allow_retag ? "retag" : "strict"));
      options.allow_retag = allow_retag;
      auto registry = Ok(Registry::Open(options));
      const CheckpointRecord first = Ok(IngestFile(*registry, a, "m", "v1"));
      BOOST_REQUIRE(first.status == "stored");
      // Same content, same tag: nothing new, the existing row comes back.
      {
        Upload upload = UploadBytes(registry->blobs(), ReadFile(a));
        IngestOutcome outcome;
        const CheckpointRecord again = Ok(registry->Ingest(upload, {"m", "v1", "tester"}, &outcome));
        BOOST_TEST(outcome.unchanged);
        BOOST_TEST(again.id == first.id);
        BOOST_TEST(again.manifest.size() == first.manifest.size());
      }
      // Other content, same tag, no force: refused naming the digest held.
      {
        Upload upload = UploadBytes(registry->blobs(), ReadFile(b));
        IngestOutcome outcome;
        auto refused = registry->Ingest(upload, {"m", "v1", "tester"}, &outcome);
        BOOST_REQUIRE(!refused.has_value());
        BOOST_TEST(refused.error().detail.find(first.sha256) != std::string::npos, refused.error().ToString());
        BOOST_REQUIRE(outcome.tag_holder.has_value());
        BOOST_TEST(outcome.tag_holder->sha256 == first.sha256);
      }
      // With force: moved only when the registry allows retagging.
      Upload upload = UploadBytes(registry->blobs(), ReadFile(b));
      IngestOutcome outcome;
      auto forced = registry->Ingest(upload, {"m", "v1", "tester", /*force=*/true}, &outcome);
      BOOST_TEST(forced.has_value() == allow_retag);
      if (allow_retag) {
        BOOST_TEST(forced->status == "stored");
        BOOST_TEST(outcome.moved_from == first.sha256);
        BOOST_TEST(Ok(registry->catalog().FindTagHolder("m", "v1"))->sha256 == FileSha256(b));
        int retags = 0;
        for (const AuditRecord& r : Ok(registry->catalog().ListAudit())) retags += r.action == "retag" ? 1 : 0;
        BOOST_TEST(retags == 1);
      } else {
        BOOST_TEST(forced.error().detail.find("does not allow retagging") != std::string::npos);
        BOOST_TEST(Ok(registry->catalog().FindTagHolder("m", "v1"))->sha256 == first.sha256);
      }
      const size_t rows = Ok(registry->catalog().ListCheckpoints({.name = "m"})).size();
      BOOST_TEST(rows == (allow_retag ? 2u : 1u));
    }
  }
}

BOOST_AUTO_TEST_CASE(token_scopes_and_prefixes) {
  TempDir tmp;
  auto registry = OpenRegistry(tmp.path / "data");
  const std::string reader = Ok(registry->CreateToken("reader", "read", "local"));
  const std::string team = Ok(registry->CreateToken("team", "write", "local", {"team-a/", "shared/"}));
  const std::string any = Ok(registry->CreateToken("any", "write", "local"));
  const std::string admin = Ok(registry->CreateToken("root", "admin", "local"));
  BOOST_TEST(!registry->CreateToken("r2", "read", "local", {"team-a/"}).has_value());
  BOOST_TEST(!registry->CreateToken("w2", "write", "local", {"/abs"}).has_value());
  BOOST_TEST(!registry->CreateToken("w3", "write", "local", {"a/../b"}).has_value());
  BOOST_TEST(!registry->CreateToken("w4", "write", "local", {""}).has_value());
  auto token = [&](const std::string& raw) { return *Ok(registry->Authenticate(raw)); };
  BOOST_TEST(token(reader).scope == "read");
  BOOST_TEST(PushDenied(token(reader), "x").value_or("").find("scope read") != std::string::npos);
  BOOST_TEST(!PushDenied(token(team), "team-a/resnet").has_value());
  BOOST_TEST(!PushDenied(token(team), "shared/x").has_value());
  const std::string why = PushDenied(token(team), "team-b/resnet").value_or("");
  BOOST_TEST(why.find("team-a/") != std::string::npos, why);
  BOOST_TEST(why.find("prefix rule") != std::string::npos, why);
  BOOST_TEST(PushDenied(token(team), "team-a").has_value());  // the prefix is "team-a/", not "team-a"
  BOOST_TEST(!PushDenied(token(any), "anything").has_value());
  BOOST_TEST(!PushDenied(token(admin), "anything").has_value());
  auto tokens = Ok(registry->catalog().ListTokens());
  BOOST_REQUIRE_EQUAL(tokens.size(), 4u);
  BOOST_TEST((tokens[1].prefixes == std::vector<std::string>{"team-a/", "shared/"}));
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------ Server

// RawConn: a blocking loopback socket with a receive timeout, for requests
// RegistryClient cannot make (chunked, malformed, stalled, pipelined).
struct RawConn {
  int fd = -1;
  // Adopts a connected socket (a Unix one).
  explicit RawConn(int connected_fd) : fd(connected_fd) {
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  explicit RawConn(uint16_t port, int timeout_s = 10) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(fd >= 0);
    timeval tv{timeout_s, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE_EQUAL(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ~RawConn() {
    if (fd >= 0) ::close(fd);
  }
  bool Send(const std::string& bytes) {
    size_t at = 0;
    while (at < bytes.size()) {
      const ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }
  // Recv: some bytes; "" on EOF; nullopt on error/timeout.
  std::optional<std::string> Recv() {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }
  struct Reply {
    int status = 0;
    std::string head;
    std::string body;
  };
  // ReadReply reads one response (Content-Length framed); status 0 when the
  // connection closed or timed out first.
  Reply ReadReply(bool head_only = false) {
    Reply reply;
    while (pending.find("\r\n\r\n") == std::string::npos) {
      auto more = Recv();
      if (!more || more->empty()) return reply;
      pending += *more;
    }
    const size_t end = pending.find("\r\n\r\n");
    reply.head = pending.substr(0, end);
    pending.erase(0, end + 4);
    size_t length = 0;
    std::string lower = reply.head;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const size_t cl = lower.find("content-length:");
    if (cl != std::string::npos && !head_only) length = std::stoul(lower.substr(cl + 15));
    while (pending.size() < length) {
      auto more = Recv();
      if (!more || more->empty()) return reply;
      pending += *more;
    }
    reply.body = pending.substr(0, length);
    pending.erase(0, length);
    reply.status = std::stoi(reply.head.substr(9, 3));
    return reply;
  }
  // Closed: the server closed the connection (EOF or reset) before `within`.
  bool ClosedWithin(std::chrono::seconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < deadline) {
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    }
    return false;
  }
  std::string pending;
};

std::string HttpGet(const std::string& target, const std::string& extra = {}) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

struct ServerFixture {
  TempDir tmp;
  std::unique_ptr<Registry> registry;
  std::unique_ptr<Server> server;
  std::string write_token, admin_token;
  ServerOptions options;
  static constexpr uint64_t kMaxUpload = 150000;

  ServerFixture() {
    registry = OpenRegistry(tmp.path / "data");
    write_token = Ok(registry->CreateToken("ci", "write", "local"));
    admin_token = Ok(registry->CreateToken("boss", "admin", "local"));
    options.port = 0;
    options.io_threads = 2;
    options.workers = 2;
    options.max_header_bytes = 4096;
    options.max_json_bytes = 4096;
    options.max_upload_bytes = kMaxUpload;
    options.header_timeout = std::chrono::seconds(2);
    options.idle_timeout = std::chrono::seconds(1);
    options.request_timeout = std::chrono::seconds(20);
    options.drain_timeout = std::chrono::seconds(10);
    server = Ok(Server::Start(*registry, options));
    BOOST_REQUIRE(server->port() != 0);
  }
  ~ServerFixture() {
    if (server) {
      server->Stop();
      server->Wait();
    }
  }
  RegistryClient Client(const std::string& token = {}) {
    ClientOptions o;
    o.url = "http://127.0.0.1:" + std::to_string(server->port());
    o.token = token;
    o.timeout = std::chrono::seconds(10);
    return Ok(RegistryClient::Create(o));
  }
  Response Push(const std::string& path, const std::string& query, const std::string& token) {
    return Ok(Client(token).SendFile("POST", "/v1/checkpoints?" + query, path));
  }
};

Json BodyJson(const Response& r) {
  Json j = Json::parse(r.body, nullptr, false);
  BOOST_REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " + r.body);
  return j;
}

BOOST_FIXTURE_TEST_SUITE(server, ServerFixture)

BOOST_AUTO_TEST_CASE(health_and_bind_errors) {
  auto r = Ok(Client().Call("GET", "/v1/health"));
  BOOST_TEST(r.status == 200);
  BOOST_TEST(BodyJson(r)["status"] == "ok");
  BOOST_TEST(r.content_type == "application/json");
  // The same port again cannot be bound.
  ServerOptions clash = options;
  clash.port = server->port();
  auto second = Server::Start(*registry, clash);
  BOOST_TEST(!second.has_value());
  if (!second) BOOST_TEST((second.error().code == ErrorCode::kIo));
  ServerOptions bad_host = options;
  bad_host.host = "not-an-ip";
  BOOST_TEST(!Server::Start(*registry, bad_host).has_value());
}

BOOST_AUTO_TEST_CASE(push_benign_and_hostile) {
  const std::string path = Benign("mlp.params");
  const std::string sha = FileSha256(path);
  Response r = Push(path, "name=mlp&tag=v1", write_token);
  BOOST_TEST(r.status == 201, r.body);
  Json j = BodyJson(r);
  BOOST_TEST(j["sha256"] == sha);
  BOOST_TEST(j["verdict"] == "safe");
  BOOST_TEST(j["status"] == "stored");
  BOOST_TEST(j["uploader"] == "ci");
  BOOST_TEST(j["manifest"].size() == 4u);
  BOOST_TEST(j["signature"].is_object());
  BOOST_TEST(registry->blobs().Has(sha));

  r = Push(Malicious("os_system_p0.pkl"), "name=evil", write_token);
  BOOST_TEST(r.status == 422, r.body);
  j = BodyJson(r);
  BOOST_TEST(j["status"] == "rejected");
  BOOST_TEST(j["verdict"] == "dangerous");
  BOOST_TEST(j["findings"].is_array());
  BOOST_TEST(!j["findings"].empty());
  BOOST_TEST(!registry->blobs().Has(j["sha256"].get<std::string>()));
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);

  // Only /v1/ routes ingest.
  {
    const std::string small = ReadFile(Benign("mlp_input.pt"));
    RawConn conn(server->port());
    conn.Send("POST /v2/checkpoints?name=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
              "\r\nContent-Length: " + std::to_string(small.size()) + "\r\n\r\n" + small);
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 404, reply.head);
  }
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({.name = "x"})).empty());
  // A bad name is a 400, nothing stored.
  r = Push(path, "name=..%2Fetc", write_token);
  BOOST_TEST(r.status == 400, r.body);
  r = Push(path, "tag=v1", write_token);
  BOOST_TEST(r.status == 400, r.body);
}

BOOST_AUTO_TEST_CASE(authentication_and_scopes) {
  const std::string path = Benign("mlp_input.pt");
  BOOST_TEST(Push(path, "name=a", "").status == 401);
  BOOST_TEST(Push(path, "name=a", "ckg_" + std::string(64, '0')).status == 401);
  BOOST_TEST(Push(path, "name=a", "garbage").status == 401);
  {
    RawConn conn(server->port());
    conn.Send("POST /v1/checkpoints?name=a HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Zm9vOmJhcg==\r\n"
              "Content-Length: 3\r\n\r\nabc");
    BOOST_TEST(conn.ReadReply().status == 401);
  }
  Response pushed = Push(path, "name=a", write_token);
  BOOST_REQUIRE_EQUAL(pushed.status, 201);
  const std::string sha = BodyJson(pushed)["sha256"];
  const std::string revoke = "/v1/checkpoints/" + sha + "/revoke";
  BOOST_TEST(Ok(Client().Call("POST", revoke, R"({"reason":"x"})")).status == 401);
  BOOST_TEST(Ok(Client(write_token).Call("POST", revoke, R"({"reason":"x"})")).status == 403);
  BOOST_TEST(Ok(Client(write_token).Call("POST", "/v1/keys/rotate")).status == 403);
  BOOST_TEST(Ok(Client(write_token).Call("GET", "/v1/audit")).status == 403);
  BOOST_TEST(Ok(Client().Call("GET", "/v1/audit")).status == 401);
  BOOST_TEST(Ok(Client(admin_token).Call("POST", revoke, R"({"not_reason":1})")).status == 400);
  BOOST_TEST(Ok(Client(admin_token).Call("POST", revoke, "not json")).status == 400);
  Response ok = Ok(Client(admin_token).Call("POST", revoke, R"({"reason":"leaked"})"));
  BOOST_TEST(ok.status == 200, ok.body);
  BOOST_TEST(BodyJson(ok)["status"] == "revoked");
  BOOST_TEST(Ok(Client(admin_token).Call("POST", revoke, R"({"reason":"again"})")).status == 404);
  // A revoked token is refused.
  BOOST_TEST(Ok(registry->RevokeToken("ci", "local")));
  BOOST_TEST(Push(path, "name=b", write_token).status == 401);
  // Denials are audited, in bounded form: the first per client address and
  // reason (401, 403) in a window at once, the rest as a count when the
  // window ends (registry_net_test checks the counts).
  int denied = 0;
  for (const AuditRecord& a : Ok(registry->catalog().ListAudit())) denied += a.result == "denied" ? 1 : 0;
  BOOST_TEST(denied >= 2);
}

BOOST_AUTO_TEST_CASE(read_routes) {
  const std::string path = Benign("mlp.params");
  Response pushed = Push(path, "name=team%2Fmlp&tag=v%2E1", write_token);
  BOOST_REQUIRE_EQUAL(pushed.status, 201);
  const std::string sha = BodyJson(pushed)["sha256"];
  BOOST_TEST(BodyJson(pushed)["name"] == "team/mlp");
  BOOST_TEST(BodyJson(pushed)["tag"] == "v.1");
  BOOST_REQUIRE_EQUAL(Push(Benign("mlp_input.pt"), "name=other", write_token).status, 201);
  auto client = Client();

  // List, with filters (percent-encoded name).
  Response r = Ok(client.Call("GET", "/v1/checkpoints"));
  BOOST_TEST(r.status == 200);
  BOOST_TEST(BodyJson(r)["checkpoints"].size() == 2u);
  r = Ok(client.Call("GET", "/v1/checkpoints?name=team%2Fmlp"));
  Json list = BodyJson(r)["checkpoints"];
  BOOST_REQUIRE_EQUAL(list.size(), 1u);
  BOOST_TEST(list[0]["sha256"] == sha);
  BOOST_TEST(BodyJson(Ok(client.Call("GET", "/v1/checkpoints?limit=1")))["checkpoints"].size() == 1u);
  BOOST_TEST(BodyJson(Ok(client.Call("GET", "/v1/checkpoints?status=rejected")))["checkpoints"].empty());

  // One record.
  r = Ok(client.Call("GET", "/v1/checkpoints/" + sha));
  BOOST_TEST(r.status == 200);
  Json one = BodyJson(r);
  BOOST_TEST(one["sha256"] == sha);
  BOOST_TEST(one["manifest"].size() == 4u);
  BOOST_TEST(one["status"] == "stored");

  // Blob: the same bytes.
  {
    const fs::path out = tmp.path / "download.bin";
    auto file = Ok(AtomicFile::Create(out.string()));
    std::string got_sha;
    Response blob = Ok(client.Download("/v1/checkpoints/" + sha + "/blob", file, got_sha));
    BOOST_TEST(blob.status == 200);
    BOOST_TEST(blob.content_type == "application/octet-stream");
    BOOST_TEST(got_sha == sha);
    Check(file.Commit());
    BOOST_TEST(ReadFile(out) == ReadFile(path));
  }

  // Signature: a bundle the registry's published keys verify.
  r = Ok(client.Call("GET", "/v1/checkpoints/" + sha + "/signature"));
  BOOST_TEST(r.status == 200);
  Response keys = Ok(client.Call("GET", "/v1/keys"));
  BOOST_TEST(keys.status == 200);
  BOOST_TEST(keys.content_type == "application/x-pem-file");
  BOOST_TEST(keys.body.find("-----BEGIN PUBLIC KEY-----") != std::string::npos);
  auto pub = Ok(signing::PublicKey::FromPem(keys.body));
  auto statement = Ok(signing::VerifyBundle(r.body, {pub}));
  BOOST_REQUIRE_EQUAL(statement.resources.size(), 1u);
  BOOST_TEST(statement.resources[0].sha256_hex == sha);
  r = Ok(client.Call("GET", "/v1/keys?format=json"));
  Json key_list = BodyJson(r)["keys"];
  BOOST_REQUIRE_EQUAL(key_list.size(), 1u);
  BOOST_TEST(key_list[0]["state"] == "active");
  BOOST_TEST(key_list[0]["key_id"] == pub.KeyId());

  // Audit (admin).
  r = Ok(Client(admin_token).Call("GET", "/v1/audit"));
  BOOST_TEST(r.status == 200);
  int pushes = 0;
  const Json audit_rows = BodyJson(r)["audit"];
  for (const auto& row : audit_rows) pushes += row["action"] == "push" ? 1 : 0;
  BOOST_TEST(pushes == 2);
  r = Ok(Client(admin_token).Call("GET", "/v1/audit?limit=1"));
  BOOST_TEST(BodyJson(r)["audit"].size() == 1u);

  // 404s and 400s.
  BOOST_TEST(Ok(client.Call("GET", "/v1/checkpoints/" + std::string(64, 'a'))).status == 404);
  BOOST_TEST(Ok(client.Call("GET", "/v1/checkpoints/" + std::string(64, 'a') + "/blob")).status == 404);
  BOOST_TEST(Ok(client.Call("GET", "/v1/checkpoints/" + sha + "/nope")).status == 404);
  BOOST_TEST(Ok(client.Call("GET", "/v1/nope")).status == 404);
  BOOST_TEST(Ok(client.Call("GET", "/nope")).status == 404);
  BOOST_TEST(Ok(client.Call("GET", "/v1/checkpoints/XYZ")).status == 400);

  // Revoked: the blob is gone (410) unless asked for anyway; the record says why.
  BOOST_REQUIRE_EQUAL(Ok(Client(admin_token).Call("POST", "/v1/checkpoints/" + sha + "/revoke",
                                                  R"({"reason":"leaked"})")).status, 200);
  r = Ok(client.Call("GET", "/v1/checkpoints/" + sha + "/blob"));
  BOOST_TEST(r.status == 410, r.body);
  BOOST_TEST(r.body.find("leaked") != std::string::npos);
  r = Ok(client.Call("GET", "/v1/checkpoints/" + sha));
  BOOST_TEST(BodyJson(r)["status"] == "revoked");
  BOOST_TEST(BodyJson(r)["revoked"]["reason"] == "leaked");
  BOOST_TEST(BodyJson(r)["revoked"]["by"] == "boss");
  {
    auto file = Ok(AtomicFile::Create((tmp.path / "revoked.bin").string()));
    std::string got_sha;
    Response blob = Ok(client.Download("/v1/checkpoints/" + sha + "/blob?allow_revoked=1", file, got_sha));
    BOOST_TEST(blob.status == 200);
    BOOST_TEST(got_sha == sha);
  }
}

BOOST_AUTO_TEST_CASE(verify_routes) {
  const std::string path = Benign("mlp.params");
  Response pushed = Push(path, "name=m", write_token);
  BOOST_REQUIRE_EQUAL(pushed.status, 201);
  const std::string sha = BodyJson(pushed)["sha256"];
  auto client = Client();
  // By digest.
  Response r = Ok(client.Call("POST", "/v1/verify?sha256=" + sha + "&rehash=1"));
  BOOST_TEST(r.status == 200, r.body);
  Json j = BodyJson(r);
  BOOST_TEST(j["verified"] == true);
  BOOST_TEST(j["name"] == "m");
  r = Ok(client.Call("POST", "/v1/verify?sha256=" + std::string(64, 'b')));
  BOOST_TEST(r.status == 200);
  BOOST_TEST(BodyJson(r)["verified"] == false);
  BOOST_TEST(BodyJson(r)["catalogued"] == false);
  BOOST_TEST(Ok(client.Call("POST", "/v1/verify?sha256=nothex")).status == 400);
  // By file body.
  r = Ok(client.SendFile("POST", "/v1/verify", path));
  BOOST_TEST(r.status == 200, r.body);
  BOOST_TEST(BodyJson(r)["verified"] == true);
  BOOST_TEST(BodyJson(r)["sha256"] == sha);
  r = Ok(client.SendFile("POST", "/v1/verify", Benign("mlp_output.pt")));
  BOOST_TEST(r.status == 200);
  BOOST_TEST(BodyJson(r)["verified"] == false);
  BOOST_TEST(BodyJson(r)["catalogued"] == false);
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u, "verify uploads leave no temp file");
  BOOST_TEST(!registry->blobs().Has(FileSha256(Benign("mlp_output.pt"))), "verify never stores");
}

BOOST_AUTO_TEST_CASE(upload_limits) {
  // Content-Length over the limit: refused before the body is read.
  {
    RawConn conn(server->port());
    conn.Send("POST /v1/checkpoints?name=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
              "\r\nContent-Length: " + std::to_string(kMaxUpload + 1) + "\r\n\r\n");
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 413, reply.head);
  }
  // Chunked: one chunk announced larger than the limit.
  {
    RawConn conn(server->port());
    char size_hex[32];
    std::snprintf(size_hex, sizeof size_hex, "%llx", static_cast<unsigned long long>(kMaxUpload + 10));
    conn.Send("POST /v1/checkpoints?name=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
              "\r\nTransfer-Encoding: chunked\r\n\r\n" + size_hex + "\r\n" + std::string(1000, 'x'));
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 413, reply.head);
  }
  // Chunked: many small chunks adding up to more than the limit.
  {
    RawConn conn(server->port());
    conn.Send("POST /v1/checkpoints?name=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
              "\r\nTransfer-Encoding: chunked\r\n\r\n");
    const std::string chunk = "1000\r\n" + std::string(0x1000, 'y') + "\r\n";
    std::string all;
    for (uint64_t sent = 0; sent <= kMaxUpload; sent += 0x1000) all += chunk;
    std::thread writer([&conn, all] { conn.Send(all); });
    auto reply = conn.ReadReply();
    ::shutdown(conn.fd, SHUT_RDWR);
    writer.join();
    BOOST_TEST(reply.status == 413, reply.head);
  }
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({})).empty());
  // The temp files are gone once the sessions end.
  for (int i = 0; i < 50 && CountFiles(tmp.path / "data" / "tmp") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);
  // A file exactly at the limit is taken.
  const std::string exact = tmp.Write("exact.bin", std::string(kMaxUpload, 'z'));
  Response r = Push(exact, "name=exact", write_token);
  BOOST_TEST(r.status == 422, r.body);  // not a model, but read whole and scanned
  // An empty body is a 400.
  r = Ok(Client(write_token).Call("POST", "/v1/checkpoints?name=empty", "", "application/octet-stream"));
  BOOST_TEST(r.status == 400, r.body);
  // A JSON body over max_json_bytes is a 413.
  r = Ok(Client(admin_token).Call("POST", "/v1/keys/" + std::string(64, 'a') + "/revoke",
                                  R"({"reason":")" + std::string(options.max_json_bytes, 'r') + R"("})"));
  BOOST_TEST(r.status == 413, r.body);
  // ... with Content-Length just over the limit, and chunked.
  {
    RawConn conn(server->port());
    conn.Send("POST /v1/keys/" + std::string(64, 'a') + "/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              admin_token + "\r\nContent-Length: " + std::to_string(options.max_json_bytes + 1) + "\r\n\r\n");
    BOOST_TEST(conn.ReadReply().status == 413);
  }
  {
    RawConn conn(server->port());
    conn.Send("POST /v1/keys/" + std::string(64, 'a') + "/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              admin_token + "\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n" + std::string(100, 'r'));
    BOOST_TEST(conn.ReadReply().status == 413);
  }
}

BOOST_AUTO_TEST_CASE(uploads_larger_than_one_mib) {
  // Beast's default request body limit (1 MiB) must not apply to uploads.
  ServerOptions big = options;
  big.max_upload_bytes = uint64_t{8} << 20;
  auto big_server = Ok(Server::Start(*registry, big));
  std::vector<float> values(512 * 1024, 0.5f);
  std::vector<SafetensorsTensorData> tensors;
  tensors.push_back({"w", DType::kFloat32, {512, 1024},
                     Bytes(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float))});
  const std::string path = (tmp.path / "big.safetensors").string();
  Check(WriteSafetensors(path, tensors));
  BOOST_REQUIRE(fs::file_size(path) > (uint64_t{2} << 20));
  ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(big_server->port());
  o.token = write_token;
  o.timeout = std::chrono::seconds(10);
  auto client = Ok(RegistryClient::Create(o));
  Response r = Ok(client.SendFile("POST", "/v1/checkpoints?name=big", path));
  BOOST_TEST(r.status == 201, r.body.substr(0, 300));
  if (r.status == 201) {
    const Json j = BodyJson(r);
    BOOST_REQUIRE_EQUAL(j["manifest"].size(), 1u);
    BOOST_TEST(j["manifest"][0]["key"] == "w");
    BOOST_TEST(j["manifest"][0]["dtype"] == "float32");
    BOOST_TEST((j["manifest"][0]["shape"] == Json::array({512, 1024})));
  }
  // The same bytes chunked (64 KiB chunks), under another name.
  {
    const std::string bytes = ReadFile(path);
    std::string request = "POST /v1/checkpoints?name=big-chunked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          write_token + "\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t at = 0; at < bytes.size(); at += 0x10000) {
      const size_t n = std::min<size_t>(0x10000, bytes.size() - at);
      char size_hex[32];
      std::snprintf(size_hex, sizeof size_hex, "%zx", n);
      request += std::string(size_hex) + "\r\n" + bytes.substr(at, n) + "\r\n";
    }
    request += "0\r\n\r\n";
    RawConn conn(big_server->port());
    std::thread writer([&conn, &request] { conn.Send(request); });
    auto reply = conn.ReadReply();
    writer.join();
    BOOST_TEST(reply.status == 201, reply.head << reply.body.substr(0, 300));
  }
  r = Ok(client.SendFile("POST", "/v1/verify", path));
  BOOST_TEST(r.status == 200, r.body.substr(0, 300));
  BOOST_TEST((r.status == 200 && BodyJson(r)["verified"] == true));
  big_server->Stop();
  big_server->Wait();
}

// Not tested through RegistryClient: the server answers 413 after the header
// and closes without reading the body, so the client (which writes the whole
// file before reading) usually fails with "Broken pipe" instead of showing
// the 413. See the report; the raw-socket cases above cover the server side.

BOOST_AUTO_TEST_CASE(malformed_requests) {
  {
    RawConn conn(server->port());
    conn.Send("GARBAGE\r\n\r\n");
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 400, reply.head);
    BOOST_TEST(conn.ClosedWithin(std::chrono::seconds(3)));
  }
  {
    RawConn conn(server->port());
    conn.Send("GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(options.max_header_bytes + 100, 'p') +
              "\r\n\r\n");
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 431, reply.head);
  }
  {
    RawConn conn(server->port());
    conn.Send("GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
    BOOST_TEST(conn.ReadReply().status == 400);
  }
  // The server still serves afterwards.
  BOOST_TEST(Ok(Client().Call("GET", "/v1/health")).status == 200);
}

BOOST_AUTO_TEST_CASE(stalled_clients_are_disconnected) {
  const auto t0 = std::chrono::steady_clock::now();
  // A header that never ends: header_timeout (2 s).
  RawConn partial(server->port(), 1);
  partial.Send("GET /v1/health HTTP/1.1\r\nHost: x\r\n");
  // A body that never comes: idle_timeout (1 s).
  RawConn body(server->port(), 1);
  body.Send("POST /v1/checkpoints?name=slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
            "\r\nContent-Length: 1000\r\n\r\nabc");
  // An idle keep-alive connection after one answer: idle or header timeout.
  RawConn idle(server->port(), 1);
  idle.Send(HttpGet("/v1/health"));
  BOOST_TEST(idle.ReadReply().status == 200);
  BOOST_TEST(body.ClosedWithin(std::chrono::seconds(5)));
  BOOST_TEST(partial.ClosedWithin(std::chrono::seconds(5)));
  BOOST_TEST(idle.ClosedWithin(std::chrono::seconds(5)));
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(8)));
  // The stalled upload left nothing behind.
  for (int i = 0; i < 50 && CountFiles(tmp.path / "data" / "tmp") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({})).empty());
}

BOOST_AUTO_TEST_CASE(keep_alive_two_requests_on_one_connection) {
  RawConn conn(server->port());
  conn.Send(HttpGet("/v1/health"));
  auto first = conn.ReadReply();
  BOOST_TEST(first.status == 200);
  BOOST_TEST(first.body.find("ckptguardd") != std::string::npos);
  conn.Send(HttpGet("/v1/keys?format=json"));
  auto second = conn.ReadReply();
  BOOST_TEST(second.status == 200, second.head);
  BOOST_TEST(second.body.find("\"keys\"") != std::string::npos);
  // An upload, then a GET, on the same connection.
  const std::string bytes = ReadFile(Benign("mlp_input.pt"));
  conn.Send("POST /v1/checkpoints?name=ka HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
            "\r\nContent-Length: " + std::to_string(bytes.size()) + "\r\n\r\n" + bytes);
  auto third = conn.ReadReply();
  BOOST_TEST(third.status == 201, third.head << third.body);
  conn.Send(HttpGet("/v1/checkpoints?name=ka", "Connection: close\r\n"));
  auto fourth = conn.ReadReply();
  BOOST_TEST(fourth.status == 200);
  BOOST_TEST(fourth.body.find(FileSha256(Benign("mlp_input.pt"))) != std::string::npos);
  BOOST_TEST(conn.ClosedWithin(std::chrono::seconds(3)), "Connection: close is honoured");
}

BOOST_AUTO_TEST_CASE(expect_100_continue_upload) {
  const std::string bytes = ReadFile(Benign("mlp_input.pt"));
  RawConn conn(server->port());
  conn.Send("POST /v1/checkpoints?name=cont HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
            "\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(bytes.size()) + "\r\n\r\n");
  auto interim = conn.ReadReply();
  BOOST_TEST(interim.status == 100, interim.head);
  conn.Send(bytes);
  auto reply = conn.ReadReply();
  BOOST_TEST(reply.status == 201, reply.head << reply.body);
}

BOOST_AUTO_TEST_CASE(head_requests_have_no_body) {
  const std::string path = Benign("mlp_input.pt");
  Response pushed = Push(path, "name=h", write_token);
  BOOST_REQUIRE_EQUAL(pushed.status, 201);
  const std::string sha = BodyJson(pushed)["sha256"];
  RawConn conn(server->port());
  for (const std::string& target : {std::string("/v1/health"), "/v1/checkpoints/" + sha + "/blob"}) {
    conn.Send("HEAD " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    auto head = conn.ReadReply(/*head_only=*/true);
    BOOST_TEST(head.status == 200, target);
    if (target.ends_with("/blob")) {
      BOOST_TEST(head.head.find("Content-Length: " + std::to_string(fs::file_size(path))) != std::string::npos,
                 head.head);
    }
  }
  // The next response on the connection is not preceded by a stray body.
  conn.Send(HttpGet("/v1/health"));
  auto next = conn.ReadReply();
  BOOST_TEST(next.status == 200, next.head);
  BOOST_TEST(conn.pending.empty());
}

BOOST_AUTO_TEST_CASE(reads_need_token_option) {
  ServerOptions strict = options;
  strict.reads_need_token = true;
  auto strict_server = Ok(Server::Start(*registry, strict));
  ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(strict_server->port());
  o.timeout = std::chrono::seconds(10);
  auto anonymous = Ok(RegistryClient::Create(o));
  o.token = write_token;
  auto reader = Ok(RegistryClient::Create(o));
  BOOST_TEST(Ok(anonymous.Call("GET", "/v1/health")).status == 200);
  BOOST_TEST(Ok(anonymous.Call("GET", "/v1/checkpoints")).status == 401);
  BOOST_TEST(Ok(anonymous.Call("GET", "/v1/keys")).status == 401);
  BOOST_TEST(Ok(anonymous.Call("POST", "/v1/verify?sha256=" + std::string(64, 'a'))).status == 401);
  BOOST_TEST(Ok(reader.Call("GET", "/v1/checkpoints")).status == 200);
  BOOST_TEST(Ok(reader.Call("GET", "/v1/keys")).status == 200);
  strict_server->Stop();
  strict_server->Wait();
}

BOOST_AUTO_TEST_CASE(unix_socket_listener) {
  const std::string sock = (tmp.path / "ckg.sock").string();
  // Another file at the path is not deleted.
  const std::string precious = tmp.Write("precious.txt", "keep me");
  ServerOptions wrong = options;
  wrong.unix_socket = precious;
  BOOST_TEST(!Server::Start(*registry, wrong).has_value());
  BOOST_TEST(ReadFile(precious) == "keep me");

  ServerOptions with_unix = options;
  with_unix.unix_socket = sock;
  auto unix_server = Ok(Server::Start(*registry, with_unix));
  struct stat st{};
  BOOST_REQUIRE_EQUAL(::lstat(sock.c_str(), &st), 0);
  BOOST_TEST(S_ISSOCK(st.st_mode));
  BOOST_TEST((st.st_mode & 0777) == 0660u);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  BOOST_REQUIRE_EQUAL(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  RawConn conn(fd);
  conn.Send(HttpGet("/v1/health"));
  BOOST_TEST(conn.ReadReply().status == 200);
  unix_server->Stop();
  unix_server->Wait();
  BOOST_TEST(!fs::exists(sock), "the socket file is removed on stop");
  // A stale socket file from a previous run is replaced.
  {
    int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
    BOOST_REQUIRE_EQUAL(::bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(stale);
  }
  BOOST_REQUIRE(fs::exists(sock));
  auto again = Ok(Server::Start(*registry, with_unix));
  again->Stop();
  again->Wait();
}

BOOST_AUTO_TEST_CASE(concurrent_pushes_all_land) {
  constexpr int kThreads = 8;
  const std::string path = Benign("mlp.params");
  std::vector<std::future<int>> results;
  for (int i = 0; i < kThreads; ++i) {
    results.push_back(std::async(std::launch::async, [this, i, &path] {
      auto r = Client(write_token).SendFile("POST", "/v1/checkpoints?name=conc%2F" + std::to_string(i), path);
      return r ? r->status : -1;
    }));
  }
  for (auto& f : results) BOOST_TEST(f.get() == 201);
  Response r = Ok(Client().Call("GET", "/v1/checkpoints?limit=1000"));
  Json list = BodyJson(r)["checkpoints"];
  std::set<std::string> names;
  for (const auto& row : list) names.insert(row["name"].get<std::string>());
  BOOST_TEST(names.size() == static_cast<size_t>(kThreads));
  BOOST_TEST(list.size() == static_cast<size_t>(kThreads));
  int push_rows = 0;
  for (const AuditRecord& a : Ok(registry->catalog().ListAudit())) push_rows += a.action == "push" ? 1 : 0;
  BOOST_TEST(push_rows == kThreads);
  BOOST_TEST(Ok(registry->blobs().List()).size() == 1u, "one shared blob");
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);
  BOOST_TEST(Ok(registry->VerifyDigest(FileSha256(path), true)).verified());
}

BOOST_AUTO_TEST_CASE(stop_drains_in_flight_request) {
  const std::string bytes = ReadFile(Benign("mlp.params"));
  const uint16_t port = server->port();
  RawConn conn(port);
  const size_t half = bytes.size() / 2;
  conn.Send("POST /v1/checkpoints?name=drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
            "\r\nContent-Length: " + std::to_string(bytes.size()) + "\r\n\r\n" + bytes.substr(0, half));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the header is read: the request is in flight
  server->Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  conn.Send(bytes.substr(half));
  auto reply = conn.ReadReply();
  BOOST_TEST(reply.status == 201, reply.head << reply.body);
  auto waited = std::async(std::launch::async, [this] { server->Wait(); });
  BOOST_TEST((waited.wait_for(std::chrono::seconds(5)) == std::future_status::ready), "Wait() returns");
  waited.get();
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({.name = "drain"})).size() == 1u);
  // New connections are refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0);
  ::close(fd);
}

// An idle keep-alive connection does not hold up a drain (it is closed at
// once, not after drain_timeout), while a request that is mid-flight on
// another connection still gets its answer.
BOOST_AUTO_TEST_CASE(stop_closes_idle_keep_alive_connections_at_once) {
  const std::string bytes = ReadFile(Benign("mlp.params"));
  RawConn idle(server->port());
  idle.Send("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
  BOOST_TEST(idle.ReadReply().status == 200);
  RawConn busy(server->port());
  const size_t half = bytes.size() / 2;
  busy.Send("POST /v1/checkpoints?name=drain2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
            "\r\nContent-Length: " + std::to_string(bytes.size()) + "\r\n\r\n" + bytes.substr(0, half));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto stopped_at = std::chrono::steady_clock::now();
  server->Stop();
  // The idle connection is closed by the server: EOF, no answer.
  const auto eof = idle.Recv();
  BOOST_TEST((eof.has_value() && eof->empty()), "the idle connection is closed (EOF), not left open");
  busy.Send(bytes.substr(half));
  auto reply = busy.ReadReply();
  BOOST_TEST(reply.status == 201, reply.head << reply.body);
  BOOST_TEST(reply.head.find("Connection: close") != std::string::npos, reply.head);
  server->Wait();
  const auto took = std::chrono::steady_clock::now() - stopped_at;
  BOOST_TEST(took < std::chrono::seconds(5), "drain took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
}


// Issue 15: a moved tag is a 409 naming the digest held; the same content
// again is a 200 (nothing new); force moves it only on a server that allows it.
BOOST_AUTO_TEST_CASE(push_to_a_taken_tag_is_409_and_same_content_200) {
  const std::string a = Benign("mlp.params");
  const std::string b = Benign("mlp_input.pt");
  Response first = Push(a, "name=m&tag=v1", write_token);
  BOOST_REQUIRE_EQUAL(first.status, 201);
  Response again = Push(a, "name=m&tag=v1", write_token);
  BOOST_TEST(again.status == 200, again.body);
  BOOST_TEST(BodyJson(again)["unchanged"] == true);
  BOOST_TEST(BodyJson(again)["id"] == BodyJson(first)["id"]);
  Response taken = Push(b, "name=m&tag=v1", write_token);
  BOOST_TEST(taken.status == 409, taken.body);
  BOOST_TEST(BodyJson(taken)["existing_sha256"] == FileSha256(a));
  BOOST_TEST(BodyJson(taken)["error"].get<std::string>().find(FileSha256(a)) != std::string::npos);
  Response forced = Push(b, "name=m&tag=v1&force=1", write_token);
  BOOST_TEST(forced.status == 409, "this server does not allow retagging: " << forced.body);
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({.name = "m"})).size() == 1u);
  // The registry's identity route.
  Response identity = Ok(Client().Call("GET", "/v1/registry"));
  BOOST_TEST(identity.status == 200);
  BOOST_TEST(BodyJson(identity)["registry_id"] == registry->registry_id());
}

BOOST_AUTO_TEST_CASE(retag_with_allow_retag_and_force_is_audited) {
  server->Stop();
  server->Wait();
  server.reset();
  registry.reset();
  RegistryOptions ro = OptionsFor(tmp.path / "data");
  ro.allow_retag = true;
  registry = Ok(Registry::Open(ro));
  server = Ok(Server::Start(*registry, options));
  const std::string a = Benign("mlp.params");
  const std::string b = Benign("mlp_input.pt");
  BOOST_REQUIRE_EQUAL(Push(a, "name=m&tag=v1", write_token).status, 201);
  BOOST_TEST(Push(b, "name=m&tag=v1", write_token).status == 409);
  Response moved = Push(b, "name=m&tag=v1&force=1", write_token);
  BOOST_TEST(moved.status == 201, moved.body);
  BOOST_TEST(BodyJson(moved)["moved_from"] == FileSha256(a));
  bool audited = false;
  for (const AuditRecord& r : Ok(registry->catalog().ListAudit())) {
    audited |= r.action == "retag" && r.target == "m:v1" && r.who == "ci";
  }
  BOOST_TEST(audited);
}

// A write token limited to prefixes is refused (403 naming the rule) before
// any body byte is read; a read token cannot push but reads when reads need one.
BOOST_AUTO_TEST_CASE(token_scopes_enforced_before_the_body) {
  const std::string team = Ok(registry->CreateToken("team", "write", "local", {"team-a/"}));
  const std::string reader = Ok(registry->CreateToken("reader", "read", "local"));
  const std::string path = Benign("mlp_input.pt");
  BOOST_TEST(Push(path, "name=team-a%2Fm&tag=v1", team).status == 201);
  Response outside = Push(path, "name=team-b%2Fm&tag=v1", team);
  BOOST_TEST(outside.status == 403, outside.body);
  BOOST_TEST(BodyJson(outside)["error"].get<std::string>().find("team-a/") != std::string::npos, outside.body);
  BOOST_TEST(Push(path, "name=x&tag=v1", reader).status == 403);
  {
    // Refused on the header alone: the server answers without waiting for
    // the promised (never sent) body.
    RawConn conn(server->port());
    conn.Send("POST /v1/checkpoints?name=team-b/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + team +
              "\r\nContent-Length: 100000\r\n\r\n");
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 403, reply.head);
  }
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({.name = "team-b/m"})).empty());
  ServerOptions strict = options;
  strict.reads_need_token = true;
  auto strict_server = Ok(Server::Start(*registry, strict));
  ClientOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(strict_server->port());
  o.timeout = std::chrono::seconds(10);
  BOOST_TEST(Ok(Ok(RegistryClient::Create(o)).Call("GET", "/v1/checkpoints")).status == 401);
  o.token = reader;
  BOOST_TEST(Ok(Ok(RegistryClient::Create(o)).Call("GET", "/v1/checkpoints")).status == 200);
  BOOST_TEST(Ok(Ok(RegistryClient::Create(o)).Call("GET", "/v1/audit")).status == 403);
  strict_server->Stop();
  strict_server->Wait();
}

// A passing condition is a 503 with Retry-After, nothing written, and the
// same request made again succeeds: here another writer (an admin command,
// a backup) holds the SQLite catalog past the busy timeout.
BOOST_AUTO_TEST_CASE(a_catalog_held_by_another_writer_is_503_with_retry_after) {
  if (TestCatalogIsPostgres()) return;  // SQLite's file lock (PostgreSQL: its own tests of lost sessions)
  const std::string path = Benign("mlp_input.pt");
  const std::string body = ReadFile(path);
  sqlite3* db = nullptr;
  BOOST_REQUIRE_EQUAL(sqlite3_open((tmp.path / "data" / "catalog.db").c_str(), &db), SQLITE_OK);
  BOOST_REQUIRE_EQUAL(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  {
    RawConn conn(server->port(), 30);
    conn.Send("POST /v1/checkpoints?name=held&tag=v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + write_token +
              "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    auto reply = conn.ReadReply();
    BOOST_TEST(reply.status == 503, reply.head);
    BOOST_TEST(reply.head.find("Retry-After: 1\r\n") != std::string::npos, reply.head);
    BOOST_TEST(reply.body.find("unavailable") != std::string::npos, reply.body);
  }
  BOOST_REQUIRE_EQUAL(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  BOOST_TEST(Ok(registry->catalog().ListCheckpoints({.name = "held"})).empty());
  BOOST_TEST(!registry->blobs().Has(FileSha256(path)));
  BOOST_TEST(CountFiles(tmp.path / "data" / "tmp") == 0u);
  Response again = Push(path, "name=held&tag=v1", write_token);
  BOOST_TEST(again.status == 201, again.body);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace ckptguard::daemon

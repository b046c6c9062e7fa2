// `ckptguard registry pull` against a hostile registry (issue 15): a test
// server (tests/malicious_registry.py) replays the genuine answers of a real
// ckptguardd, then substitutes blobs, bundles (another checkpoint, another
// name, another tag, another registry, an unbound one), keys and records.
// The real CLI must refuse each case with a precise error and write nothing.
// Also against the real server: trust on first use, a rotated key accepted
// only when told, and a tag whose newest version is revoked.
#define BOOST_TEST_MODULE registry_pull_test
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ckptguard/daemon/client.h"
#include "ckptguard/daemon/registry.h"
#include "ckptguard/daemon/server.h"
#include "ckptguard/sha256.h"
#include "ckptguard/signing/model_signing.h"
#include "test_util.h"

namespace ckptguard::daemon {
namespace {

namespace fs = std::filesystem;
using ckptguard::testing::CorpusDir;
using ckptguard::testing::ReadFile;
using ckptguard::testing::Run;
using ckptguard::testing::ShellQuote;
using ckptguard::testing::TempDir;
using Json = nlohmann::json;

const std::string kCli = CKPTGUARD_CLI;

template <typename T>
T Ok(Result<T> r) {
  BOOST_REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? std::string() : r.error().ToString()));
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

std::string Benign(const std::string& name) { return (CorpusDir() / "benign" / name).string(); }

// A real registry served in process on a free loopback port.
struct RealRegistry {
  std::unique_ptr<Registry> registry;
  std::unique_ptr<Server> server;
  std::string write_token;
  std::string admin_token;
  fs::path data;

  explicit RealRegistry(const fs::path& dir) : data(dir) {
    RegistryOptions options;
    options.data_dir = dir.string();
    registry = Ok(Registry::Open(options));
    write_token = Ok(registry->CreateToken("ci", "write", "local"));
    admin_token = Ok(registry->CreateToken("boss", "admin", "local"));
    ServerOptions so;
    so.port = 0;
    so.io_threads = 1;
    so.workers = 2;
    server = Ok(Server::Start(*registry, so));
  }
  ~RealRegistry() {
    server->Stop();
    server->Wait();
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(server->port()); }
  RegistryClient Client(const std::string& token = {}) const {
    ClientOptions o;
    o.url = Url();
    o.token = token;
    o.timeout = std::chrono::seconds(20);
    return Ok(RegistryClient::Create(o));
  }
  // Push returns the stored record's sha256.
  std::string Push(const std::string& file, const std::string& name, const std::string& tag) {
    Response r = Ok(Client(write_token).SendFile("POST", "/v1/checkpoints?name=" + name + "&tag=" + tag, file));
    BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
    return Json::parse(r.body)["sha256"].get<std::string>();
  }
  std::string Get(const std::string& target) {
    Response r = Ok(Client().Call("GET", target));
    BOOST_REQUIRE_MESSAGE(r.status == 200, target << ": " << r.body);
    return r.body;
  }
  std::string PublicKeyFile(const fs::path& dir, const std::string& name) {
    const fs::path path = dir / name;
    std::ofstream(path) << Get("/v1/keys");
    return path.string();
  }
};

// FakeRegistry runs tests/malicious_registry.py over a routes file.
struct FakeRegistry {
  fs::path dir;
  fs::path routes_file;
  Json routes = Json::object();
  pid_t pid = -1;
  int port = 0;
  int bodies = 0;

  explicit FakeRegistry(const fs::path& work) : dir(work / "fake"), routes_file(dir / "routes.json") {
    fs::create_directories(dir);
    Save();
    const std::string port_file = (dir / "port").string();
    pid = ::fork();
    if (pid == 0) {
      const std::string script = std::string(CKPTGUARD_SOURCE_DIR) + "/tests/malicious_registry.py";
      ::execl(CKPTGUARD_PYTHON, CKPTGUARD_PYTHON, script.c_str(), routes_file.c_str(), port_file.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 300 && port == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (fs::exists(port_file)) port = std::stoi(ReadFile(port_file));
    }
    BOOST_REQUIRE_MESSAGE(port != 0, "the malicious registry did not start");
  }
  ~FakeRegistry() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port); }
  void Save() {
    const fs::path tmp = routes_file.string() + ".tmp";
    std::ofstream(tmp) << routes.dump(1);
    fs::rename(tmp, routes_file);
  }
  // Serve answers `key` (a full target or a path) with `body`.
  void Serve(const std::string& key, const std::string& body, const std::string& content_type = "application/json",
             int status = 200) {
    const fs::path file = dir / ("body-" + std::to_string(bodies++));
    std::ofstream(file, std::ios::binary) << body;
    routes[key] = {{"status", status}, {"content_type", content_type}, {"file", file.string()}};
    Save();
  }
  // Mirror copies the real registry's genuine answers for pulling NAME:TAG
  // (whose digest is `sha`).
  void Mirror(RealRegistry& real, const std::string& name, const std::string& tag, const std::string& sha) {
    Serve("/v1/registry", real.Get("/v1/registry"));
    Serve("/v1/keys", real.Get("/v1/keys"), "application/x-pem-file");
    Serve("/v1/keys?format=json", real.Get("/v1/keys?format=json"));
    Serve("/v1/checkpoints", real.Get("/v1/checkpoints?name=" + name + "&tag=" + tag));
    Serve("/v1/checkpoints/" + sha, real.Get("/v1/checkpoints/" + sha + "?name=" + name + "&tag=" + tag));
    Serve("/v1/checkpoints/" + sha + "/signature",
          real.Get("/v1/checkpoints/" + sha + "/signature?name=" + name + "&tag=" + tag));
    Serve("/v1/checkpoints/" + sha + "/blob", real.Get("/v1/checkpoints/" + sha + "/blob"), "application/octet-stream");
  }
};

// The world every case starts from: registry A holds mlp:v1 (and the same
// bytes as mlp:v2 and mlp-copy:v9, and other content as other:v1); registry
// B (another data folder, its own key and id) holds the same bytes as mlp:v1.
// The fake registry mirrors A's answers for mlp:v1.
struct World {
  TempDir work;
  RealRegistry a{work.path / "a"};
  RealRegistry b{work.path / "b"};
  FakeRegistry fake{work.path};
  std::string sha;        // mlp:v1
  std::string other_sha;  // other:v1
  std::string known;      // the known-registries file
  std::string out;

  World() {
    sha = a.Push(Benign("mlp.params"), "mlp", "v1");
    a.Push(Benign("mlp.params"), "mlp", "v2");
    a.Push(Benign("mlp.params"), "mlp-copy", "v9");
    other_sha = a.Push(Benign("mlp_input.pt"), "other", "v1");
    b.Push(Benign("mlp.params"), "mlp", "v1");
    fake.Mirror(a, "mlp", "v1", sha);
    known = (work.path / "config" / "known_registries").string();
    out = (work.path / "pulled.pt").string();
  }

  ckptguard::testing::CommandResult Pull(const std::string& ref, const std::string& extra = {},
                                         const std::string& url = {}) {
    return Run(ShellQuote(kCli) + " registry --url " + (url.empty() ? fake.Url() : url) + " pull " + ref + " --out " +
               ShellQuote(out) + " --known-keys " + ShellQuote(known) + " " + extra + " 2>&1");
  }
  // Pins A's keys for the fake URL with an honest pull, then removes what it wrote.
  void PinHonestly() {
    auto first = Pull("mlp:v1");
    BOOST_REQUIRE_MESSAGE(first.exit_code == 0, first.out);
    BOOST_REQUIRE(first.out.find("pinned registry") != std::string::npos);
    fs::remove(out);
    fs::remove(out + ".sig");
  }
  // NothingWritten: no output, no signature, no temporary file beside them.
  void CheckNothingWritten() {
    BOOST_TEST(!fs::exists(out));
    BOOST_TEST(!fs::exists(out + ".sig"));
    for (const auto& e : fs::directory_iterator(work.path)) {
      BOOST_TEST(e.path().filename().string().find(".tmp-") == std::string::npos, e.path());
    }
  }
  void CheckRefused(const ckptguard::testing::CommandResult& r, const std::string& phrase) {
    BOOST_TEST(r.exit_code == 1, r.out);
    BOOST_TEST(r.out.find(phrase) != std::string::npos, "expected '" << phrase << "' in: " << r.out);
    BOOST_TEST(r.out.find("nothing written") != std::string::npos, r.out);
    CheckNothingWritten();
  }
  std::string Signature(RealRegistry& r, const std::string& digest, const std::string& name, const std::string& tag) {
    return r.Get("/v1/checkpoints/" + digest + "/signature?name=" + name + "&tag=" + tag);
  }
};

BOOST_FIXTURE_TEST_SUITE(malicious_registry, World)

// The control: the genuine answers, replayed, pull (so each refusal below is
// caused by its substitution alone).
BOOST_AUTO_TEST_CASE(genuine_answers_replayed_pull_and_pin_on_first_use) {
  auto r = Pull("mlp:v1");
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(ReadFile(out) == ReadFile(Benign("mlp.params")));
  BOOST_TEST(r.out.find("pinned registry " + fake.Url() + " (id " + a.registry->registry_id()) != std::string::npos,
             r.out);
  BOOST_TEST(r.out.find("it names mlp:v1 at registry " + a.registry->registry_id()) != std::string::npos, r.out);
  struct stat st{};
  BOOST_REQUIRE(::stat(known.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  const Json pins = Json::parse(ReadFile(known));
  BOOST_TEST(pins["registries"][0]["registry_id"] == a.registry->registry_id());
  BOOST_TEST(pins["registries"][0]["keys"][0]["key_id"] == Ok(a.registry->catalog().ActiveKey())->key_id);
  // The second pull trusts the pin and pins nothing new.
  fs::remove(out);
  r = Pull("mlp:v1");
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(r.out.find("pinned registry") == std::string::npos, r.out);
  BOOST_TEST(r.out.find("pinned new key") == std::string::npos, r.out);
  BOOST_TEST(r.out.find("trusted from the keys pinned for " + fake.Url()) != std::string::npos, r.out);
  // The bundle stays plain model-signing: verify-signature checks it alone.
  const std::string key = a.PublicKeyFile(work.path, "a.pem");
  auto check = Run(ShellQuote(kCli) + " verify-signature " + ShellQuote(out) + " --signature " +
                   ShellQuote(out + ".sig") + " --key " + ShellQuote(key) + " 2>&1");
  BOOST_TEST(check.exit_code == 0, check.out);
}

BOOST_AUTO_TEST_CASE(substituted_blob) {
  fake.Serve("/v1/checkpoints/" + sha + "/blob", ReadFile(Benign("mlp_input.pt")), "application/octet-stream");
  CheckRefused(Pull("mlp:v1"), "the downloaded bytes hash to " + Ok(Sha256FileHex(Benign("mlp_input.pt"))));
}

BOOST_AUTO_TEST_CASE(bundle_of_another_checkpoint) {
  fake.Serve("/v1/checkpoints/" + sha + "/signature", Signature(a, other_sha, "other", "v1"));
  CheckRefused(Pull("mlp:v1"), "the signature covers other content than " + sha);
}

BOOST_AUTO_TEST_CASE(bundle_of_the_same_bytes_under_another_name) {
  fake.Serve("/v1/checkpoints/" + sha + "/signature", Signature(a, sha, "mlp-copy", "v9"));
  CheckRefused(Pull("mlp:v1"), "the signature is for name 'mlp-copy', not 'mlp'");
}

BOOST_AUTO_TEST_CASE(bundle_of_the_same_bytes_under_another_tag) {
  fake.Serve("/v1/checkpoints/" + sha + "/signature", Signature(a, sha, "mlp", "v2"));
  CheckRefused(Pull("mlp:v1"), "the signature is for tag 'v2', not 'v1'");
}

// Another registry's valid bundle for the same name, tag and bytes: even a
// user who trusts both registries' keys gets what the registry asked signed.
BOOST_AUTO_TEST_CASE(bundle_from_another_registry) {
  PinHonestly();  // A's keys, pinned on first use
  const std::string key_a = a.PublicKeyFile(work.path, "a.pem");
  const std::string key_b = b.PublicKeyFile(work.path, "b.pem");
  fake.Serve("/v1/checkpoints/" + sha + "/signature", Signature(b, sha, "mlp", "v1"));
  CheckRefused(Pull("mlp:v1", "--key " + ShellQuote(key_a) + " --key " + ShellQuote(key_b)),
               "the signature is for registry " + b.registry->registry_id() + ", not " + a.registry->registry_id());
  // With the pins, B's bundle does not even verify.
  CheckRefused(Pull("mlp:v1"), "which is not pinned for " + fake.Url());
}

// The registry swaps its keys for another's (and signs with it) after the
// client pinned: refused; --accept-new-key pins the key the server presents,
// but the bundle still names another registry.
BOOST_AUTO_TEST_CASE(swapped_keys) {
  PinHonestly();
  fake.Serve("/v1/keys", b.Get("/v1/keys"), "application/x-pem-file");
  fake.Serve("/v1/keys?format=json", b.Get("/v1/keys?format=json"));
  fake.Serve("/v1/checkpoints/" + sha + "/signature", Signature(b, sha, "mlp", "v1"));
  const std::string b_key = Ok(b.registry->catalog().ActiveKey())->key_id;
  auto r = Pull("mlp:v1");
  CheckRefused(r, "the signature is by key " + b_key + ", which is not pinned for " + fake.Url());
  BOOST_TEST(r.out.find("--accept-new-key") != std::string::npos, r.out);
  CheckRefused(Pull("mlp:v1", "--accept-new-key"), "the signature is for registry " + b.registry->registry_id());
  // The refused pull pinned nothing.
  BOOST_TEST(ReadFile(known).find(b_key) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(another_registry_answers_at_the_pinned_address) {
  PinHonestly();
  fake.Serve("/v1/registry", b.Get("/v1/registry"));
  CheckRefused(Pull("mlp:v1"), "says its id is " + b.registry->registry_id() + ", but " + a.registry->registry_id() +
                                   " is pinned for it");
}

// The record says revoked, yet the blob is served (a registry that ignores its own 410).
BOOST_AUTO_TEST_CASE(revoked_record) {
  Json record = Json::parse(a.Get("/v1/checkpoints/" + sha + "?name=mlp&tag=v1"));
  record["status"] = "revoked";
  record["revoked"] = {{"reason", "backdoored"}, {"by", "boss"}, {"at", 1}};
  fake.Serve("/v1/checkpoints/" + sha, record.dump());
  CheckRefused(Pull("mlp:v1"), "checkpoint " + sha + " was revoked by boss: backdoored");
  CheckRefused(Pull(sha), "was revoked by boss: backdoored");
}

BOOST_AUTO_TEST_CASE(tag_whose_newest_version_is_revoked) {
  Json list = Json::parse(a.Get("/v1/checkpoints?name=mlp&tag=v1"));
  Json newest = list["checkpoints"][0];
  newest["status"] = "revoked";
  newest["revoked"] = {{"reason", "leaked weights"}, {"by", "boss"}, {"at", 1}};
  Json older = list["checkpoints"][0];
  older["id"] = 1;
  list["checkpoints"] = Json::array({newest, older});
  fake.Serve("/v1/checkpoints", list.dump());
  CheckRefused(Pull("mlp:v1"), "its newest version (sha256 " + sha + ") was revoked by boss: leaked weights");
}

BOOST_AUTO_TEST_CASE(key_revoked_at_the_registry) {
  PinHonestly();
  Json keys = Json::parse(a.Get("/v1/keys?format=json"));
  for (auto& k : keys["keys"]) {
    k["state"] = "revoked";
    k["revoked_reason"] = "key stolen";
  }
  fake.Serve("/v1/keys?format=json", keys.dump());
  CheckRefused(Pull("mlp:v1"), "which the registry revoked: key stolen");
  // A --key that the registry revoked is refused too.
  const std::string key = a.PublicKeyFile(work.path, "a.pem");
  CheckRefused(Pull("mlp:v1", "--key " + ShellQuote(key)), "which the registry revoked: key stolen");
}

// A bundle signed by the registry's own key before binding existed (no
// name, tag or registry in it): refused for NAME:TAG unless --allow-unbound;
// a pull by digest (what was asked is the digest) takes it.
BOOST_AUTO_TEST_CASE(unbound_bundle) {
  const std::string key_id = Ok(a.registry->catalog().ActiveKey())->key_id;
  auto signer = Ok(signing::PrivateKey::LoadFile((a.data / "keys" / (key_id + ".pem")).string()));
  const std::string unbound = Ok(signing::SignResources(signer, "mlp", {{".", sha}}));
  BOOST_REQUIRE(!Ok(signing::VerifyBundle(unbound, {Ok(signing::PublicKey::FromPrivate(signer))})).registry_claim);
  fake.Serve("/v1/checkpoints/" + sha + "/signature", unbound);
  CheckRefused(Pull("mlp:v1"), "the signature names no checkpoint name, tag or registry");
  auto allowed = Pull("mlp:v1", "--allow-unbound");
  BOOST_TEST(allowed.exit_code == 0, allowed.out);
  BOOST_TEST(allowed.out.find("unbound bundle") != std::string::npos, allowed.out);
  fs::remove(out);
  fs::remove(out + ".sig");
  auto by_digest = Pull(sha);
  BOOST_TEST(by_digest.exit_code == 0, by_digest.out);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------- the real server

BOOST_AUTO_TEST_SUITE(real_registry)

// Trust on first use, then a rotation: the new key is refused until the
// user says --accept-new-key; then it is pinned and later pulls need nothing.
BOOST_AUTO_TEST_CASE(rotated_key_is_accepted_only_when_told) {
  TempDir work;
  RealRegistry a(work.path / "a");
  const std::string known = (work.path / "known").string();
  const std::string out = (work.path / "out.pt").string();
  auto pull = [&](const std::string& ref, const std::string& extra = {}) {
    return Run(ShellQuote(kCli) + " registry --url " + a.Url() + " pull " + ref + " --out " + ShellQuote(out) +
               " --known-keys " + ShellQuote(known) + " " + extra + " 2>&1");
  };
  a.Push(Benign("mlp.params"), "m", "v1");
  auto first = pull("m:v1");
  BOOST_REQUIRE_MESSAGE(first.exit_code == 0, first.out);
  BOOST_TEST(first.out.find("pinned registry") != std::string::npos, first.out);
  const KeyRecord rotated = Ok(a.registry->RotateKey("local"));
  a.Push(Benign("mlp_input.pt"), "m", "v2");
  fs::remove(out);
  auto refused = pull("m:v2");
  BOOST_TEST(refused.exit_code == 1, refused.out);
  BOOST_TEST(refused.out.find("the signature is by key " + rotated.key_id + ", which is not pinned") != std::string::npos,
             refused.out);
  BOOST_TEST(refused.out.find("the registry presents it now") != std::string::npos, refused.out);
  BOOST_TEST(!fs::exists(out));
  auto accepted = pull("m:v2", "--accept-new-key");
  BOOST_TEST(accepted.exit_code == 0, accepted.out);
  BOOST_TEST(accepted.out.find("pinned new key " + rotated.key_id) != std::string::npos, accepted.out);
  BOOST_TEST(ReadFile(out) == ReadFile(Benign("mlp_input.pt")));
  fs::remove(out);
  auto later = pull("m:v2");
  BOOST_TEST(later.exit_code == 0, later.out);
  // The old version, signed by the retired (still pinned) key, pulls too.
  fs::remove(out);
  BOOST_TEST(pull("m:v1").exit_code == 0);
}

// The real registry's own answers: a revoked tag is refused naming the
// revocation, and no older version is served in its place.
BOOST_AUTO_TEST_CASE(revoked_tag_is_refused_naming_the_revocation) {
  TempDir work;
  RealRegistry a(work.path / "a");
  const std::string known = (work.path / "known").string();
  const std::string out = (work.path / "out.pt").string();
  const std::string sha = a.Push(Benign("mlp.params"), "m", "v1");
  BOOST_TEST(Ok(a.registry->RevokeCheckpoint(sha, "backdoor found", "boss")));
  auto r = Run(ShellQuote(kCli) + " registry --url " + a.Url() + " pull m:v1 --out " + ShellQuote(out) +
               " --known-keys " + ShellQuote(known) + " 2>&1");
  BOOST_TEST(r.exit_code == 1, r.out);
  BOOST_TEST(r.out.find("was revoked by boss: backdoor found") != std::string::npos, r.out);
  BOOST_TEST(!fs::exists(out));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace ckptguard::daemon

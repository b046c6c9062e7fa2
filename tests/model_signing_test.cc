// signing/: the reference model_signing's golden signatures verify and fail
// once tampered with; our own signatures verify with us and with the openssl
// command; keys round-trip; the CLI signs, verifies and reports.
#define BOOST_TEST_MODULE model_signing_test
#include <sys/stat.h>

#include <openssl/evp.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ckptguard/signing/model_signing.h"
#include "test_util.h"

namespace ckptguard::signing {
namespace {

using testing::ReadFile;
using testing::Run;
using testing::ShellQuote;
using testing::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kGoldenHint = "e8450dec4eb99dae995da9af1bc2cc9f76ed669ee2e744f57abba763df3e3f8e";

fs::path Golden() { return testing::DataDir() / "model-signing"; }

PublicKey GoldenPublicKey() {
  auto key = PublicKey::LoadFile((Golden() / "keys" / "signing-key-pub.pem").string());
  BOOST_REQUIRE_MESSAGE(key.has_value(), (key ? "" : key.error().ToString()));
  return *key;
}

std::string ErrorText(const Error& e) { return e.ToString(); }

// Copy a golden folder into a writable temp folder.
fs::path CopyGolden(const TempDir& tmp, const std::string& name) {
  const fs::path dst = tmp.path / name;
  fs::copy(Golden() / name, dst, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dst)) {
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  return dst;
}

void FlipByte(const fs::path& file, size_t index = 0) {
  std::string bytes = ReadFile(file);
  BOOST_REQUIRE(index < bytes.size());
  bytes[index] ^= 0x01;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

struct GoldenCase {
  const char* folder;
  bool single_file;  // the model is folder/signme-1
};
constexpr GoldenCase kGoldenCases[] = {
    {"v0.3.1-elliptic-key", true},
    {"v1.0.0-elliptic-key", true},
    {"v1.0.1-elliptic-key", false},
    {"v1.1.0-elliptic-key", false},
};

std::string ModelPathOf(const fs::path& folder, const GoldenCase& c) {
  return c.single_file ? (folder / "signme-1").string() : folder.string();
}

SignOptions GoldenOptions() {
  SignOptions options;
  options.ignore_paths = {"ignore-me"};
  return options;
}

BOOST_AUTO_TEST_CASE(pae_is_the_dsse_encoding) {
  BOOST_TEST(Pae("application/vnd.in-toto+json", "{}") == "DSSEv1 28 application/vnd.in-toto+json 2 {}");
  BOOST_TEST(Pae("", "") == "DSSEv1 0  0 ");
  // Lengths are bytes, not characters.
  BOOST_TEST(Pae("t", "\xc3\xa9") == "DSSEv1 1 t 2 \xc3\xa9");
}

BOOST_AUTO_TEST_CASE(paths_sort_component_by_component) {
  // Plain string order puts "a.txt" ('.' 0x2e) before "a/b" ('/' 0x2f);
  // PurePosixPath compares ("a", "b") with ("a.txt",) and puts "a/b" first.
  BOOST_TEST(ModelPathLess("a/b", "a.txt"));
  BOOST_TEST(!ModelPathLess("a.txt", "a/b"));
  BOOST_TEST(ModelPathLess("a", "a/b"));
  BOOST_TEST(ModelPathLess("B", "a"));
  BOOST_TEST(!ModelPathLess("x", "x"));
}

BOOST_AUTO_TEST_CASE(base64_round_trips_and_rejects_garbage) {
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)}) {
    auto decoded = Base64Decode(Base64Encode(s));
    BOOST_REQUIRE(decoded);
    BOOST_TEST(*decoded == s);
  }
  BOOST_TEST(Base64Encode("foobar") == "Zm9vYmFy");
  BOOST_TEST(Base64Encode("fo") == "Zm8=");
  BOOST_TEST(!Base64Decode("Zm9"));
  BOOST_TEST(!Base64Decode("Zm9v!mFy"));
  BOOST_TEST(!Base64Decode("Zm=vYmFy"));
}

BOOST_AUTO_TEST_CASE(golden_public_key_id_is_the_hint) {
  const PublicKey key = GoldenPublicKey();
  BOOST_TEST(key.KeyId() == kGoldenHint);
  BOOST_TEST((key.curve() == Curve::kP384));
  BOOST_TEST(key.Pem().starts_with("-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE"));
  // The golden private key has the same public half.
  auto priv = PrivateKey::LoadFile((Golden() / "keys" / "signing-key.pem").string());
  BOOST_REQUIRE_MESSAGE(priv.has_value(), (priv ? "" : ErrorText(priv.error())));
  BOOST_TEST(priv->KeyId() == kGoldenHint);
}

BOOST_AUTO_TEST_CASE(every_golden_signature_verifies) {
  const std::vector<PublicKey> trusted{GoldenPublicKey()};
  for (const GoldenCase& c : kGoldenCases) {
    const fs::path folder = Golden() / c.folder;
    const std::string bundle = ReadFile(folder / "model.sig");
    auto verified = VerifyPath(bundle, ModelPathOf(folder, c), trusted, GoldenOptions());
    BOOST_TEST_REQUIRE(verified.has_value(), c.folder << ": " << (verified ? "" : ErrorText(verified.error())));
    BOOST_TEST(verified->key_id == kGoldenHint, c.folder);
    if (c.single_file) {
      BOOST_TEST(verified->subject_name == "signme-1");
      BOOST_TEST_REQUIRE(verified->resources.size() == 1u);
      BOOST_TEST(verified->resources[0].name == ".");
      BOOST_TEST(verified->resources[0].sha256_hex ==
                 "bc9a717db6064a32cbe9eae6fc40651dd6d36ef1757183f590eff2b1765d7ebc");
    } else {
      BOOST_TEST(verified->subject_name == c.folder);
      BOOST_TEST_REQUIRE(verified->resources.size() == 2u);
      BOOST_TEST(verified->resources[0].name == "signme-1");
      BOOST_TEST(verified->resources[1].name == "signme-2");
      BOOST_TEST(verified->root_sha256 == "92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4");
    }
  }
  // v1.1.0 records its ignore paths, so it verifies without being told.
  auto v110 = VerifyPath(ReadFile(Golden() / "v1.1.0-elliptic-key" / "model.sig"),
                         (Golden() / "v1.1.0-elliptic-key").string(), trusted);
  BOOST_TEST_REQUIRE(v110.has_value(), (v110 ? "" : ErrorText(v110.error())));
  BOOST_TEST((std::find(v110->ignore_paths.begin(), v110->ignore_paths.end(), "ignore-me") != v110->ignore_paths.end()));
  // v1.0.1 does not, so ignore-me is an extra file unless the caller ignores it.
  auto v101 = VerifyPath(ReadFile(Golden() / "v1.0.1-elliptic-key" / "model.sig"),
                         (Golden() / "v1.0.1-elliptic-key").string(), trusted);
  BOOST_TEST_REQUIRE(!v101.has_value());
  BOOST_TEST(v101.error().detail == "extra file ignore-me not in the signature");
}

BOOST_AUTO_TEST_CASE(golden_signatures_fail_after_one_byte_changes) {
  const std::vector<PublicKey> trusted{GoldenPublicKey()};
  for (const GoldenCase& c : kGoldenCases) {
    // A signed file.
    {
      TempDir tmp;
      const fs::path folder = CopyGolden(tmp, c.folder);
      FlipByte(folder / (c.single_file ? "signme-1" : "signme-2"), 3);
      auto r = VerifyPath(ReadFile(folder / "model.sig"), ModelPathOf(folder, c), trusted, GoldenOptions());
      BOOST_TEST_REQUIRE(!r.has_value(), c.folder);
      const std::string want = c.single_file ? "file signme-1 digest differs" : "file signme-2 digest differs";
      BOOST_TEST(r.error().detail.starts_with(want), c.folder << ": " << ErrorText(r.error()));
    }
    const json original = json::parse(ReadFile(Golden() / c.folder / "model.sig"));
    // The payload: one byte of the decoded statement.
    {
      json bundle = original;
      std::string payload = *Base64Decode(bundle["dsseEnvelope"]["payload"].get<std::string>());
      const size_t at = payload.find("signme-1");
      BOOST_REQUIRE(at != std::string::npos);
      payload[at + 7] = '3';
      bundle["dsseEnvelope"]["payload"] = Base64Encode(payload);
      auto r = VerifyBundle(bundle.dump(), trusted);
      BOOST_TEST_REQUIRE(!r.has_value(), c.folder);
      BOOST_TEST(r.error().detail == std::string("signature does not verify with key ") + kGoldenHint,
                 ErrorText(r.error()));
    }
    // The signature: one byte of the DER (the last byte of s).
    {
      json bundle = original;
      std::string sig = *Base64Decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].get<std::string>());
      sig.back() ^= 0x01;
      bundle["dsseEnvelope"]["signatures"][0]["sig"] = Base64Encode(sig);
      auto r = VerifyBundle(bundle.dump(), trusted);
      BOOST_TEST_REQUIRE(!r.has_value(), c.folder);
      BOOST_TEST(r.error().detail.starts_with("signature does not verify"), ErrorText(r.error()));
    }
    // The payloadType (it is inside the PAE).
    {
      json bundle = original;
      bundle["dsseEnvelope"]["payloadType"] = "application/vnd.in-toto+jsoN";
      auto r = VerifyBundle(bundle.dump(), trusted);
      BOOST_TEST_REQUIRE(!r.has_value(), c.folder);
      BOOST_TEST(r.error().where == "bundle.dsseEnvelope.payloadType");
    }
  }
}

BOOST_AUTO_TEST_CASE(extra_and_missing_files_are_named) {
  const std::vector<PublicKey> trusted{GoldenPublicKey()};
  {
    TempDir tmp;
    const fs::path folder = CopyGolden(tmp, "v1.1.0-elliptic-key");
    fs::create_directory(folder / "sub");
    std::ofstream(folder / "sub" / "x") << "x";
    auto r = VerifyPath(ReadFile(folder / "model.sig"), folder.string(), trusted);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().detail == "extra file sub/x not in the signature");
  }
  {
    TempDir tmp;
    const fs::path folder = CopyGolden(tmp, "v1.1.0-elliptic-key");
    fs::remove(folder / "signme-1");
    auto r = VerifyPath(ReadFile(folder / "model.sig"), folder.string(), trusted);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().detail == "signed file signme-1 is missing");
  }
}

BOOST_AUTO_TEST_CASE(untrusted_key_and_bad_bundles_fail_precisely) {
  auto other = PrivateKey::Generate(Curve::kP384);
  BOOST_REQUIRE(other);
  auto other_pub = PublicKey::FromPrivate(*other);
  BOOST_REQUIRE(other_pub);
  const std::string golden = ReadFile(Golden() / "v1.1.0-elliptic-key" / "model.sig");
  auto r = VerifyBundle(golden, {*other_pub});
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().detail.find("not among the trusted keys") != std::string::npos);
  // rawBytes bundles name their key too.
  auto raw = VerifyBundle(ReadFile(Golden() / "v1.0.0-elliptic-key" / "model.sig"), {*other_pub});
  BOOST_TEST_REQUIRE(!raw.has_value());
  BOOST_TEST(raw.error().where == "bundle.verificationMaterial.publicKey.rawBytes");
  // No hint at all: every trusted key is tried.
  json nohint = json::parse(golden);
  nohint["verificationMaterial"]["publicKey"].erase("hint");
  auto tried = VerifyBundle(nohint.dump(), {*other_pub, GoldenPublicKey()});
  BOOST_TEST_REQUIRE(tried.has_value(), (tried ? "" : ErrorText(tried.error())));
  BOOST_TEST(tried->key_id == kGoldenHint);
  auto none = VerifyBundle(nohint.dump(), {*other_pub});
  BOOST_TEST_REQUIRE(!none.has_value());
  BOOST_TEST(none.error().detail == "signature does not verify with key " + other_pub->KeyId());
  // Not JSON, too deep, too large, no keys.
  BOOST_TEST(VerifyBundle("{", {GoldenPublicKey()}).error().detail == "not valid JSON");
  BOOST_TEST((VerifyBundle(std::string(100, '[') + std::string(100, ']'), {GoldenPublicKey()}).error().code ==
              ErrorCode::kLimitExceeded));
  SignOptions small;
  small.max_bundle_len = 100;
  BOOST_TEST((VerifyBundle(golden, {GoldenPublicKey()}, small).error().code == ErrorCode::kLimitExceeded));
  BOOST_TEST((VerifyBundle(golden, {}).error().code == ErrorCode::kInvalidArgument));
}

// Writes PAE and DER signature of `bundle` to files and asks the openssl
// command to verify them with `public_pem`.
std::string OpensslVerify(const TempDir& tmp, const std::string& bundle_text, const std::string& public_pem,
                          const char* digest) {
  const json bundle = json::parse(bundle_text);
  const std::string payload = *Base64Decode(bundle["dsseEnvelope"]["payload"].get<std::string>());
  const std::string sig = *Base64Decode(bundle["dsseEnvelope"]["signatures"][0]["sig"].get<std::string>());
  const std::string pae = tmp.Write("pae.bin", Pae(bundle["dsseEnvelope"]["payloadType"].get<std::string>(), payload));
  const std::string sig_file = tmp.Write("sig.der", sig);
  const std::string pub_file = tmp.Write("pub.pem", public_pem);
  return Run(std::string("openssl dgst -") + digest + " -verify " + ShellQuote(pub_file) + " -signature " +
             ShellQuote(sig_file) + " " + ShellQuote(pae) + " 2>&1")
      .out;
}

BOOST_AUTO_TEST_CASE(our_signatures_verify_here_and_with_openssl) {
  struct KeyCase {
    Curve curve;
    const char* digest;
  };
  for (const KeyCase kc : {KeyCase{Curve::kP256, "sha256"}, KeyCase{Curve::kP384, "sha384"},
                           KeyCase{Curve::kP521, "sha512"}}) {
    auto key = PrivateKey::Generate(kc.curve);
    BOOST_REQUIRE(key);
    auto pub = PublicKey::FromPrivate(*key);
    BOOST_REQUIRE(pub);
    TempDir tmp;
    const fs::path model = tmp.path / "my-model";
    fs::create_directories(model / "a");
    fs::create_directories(model / ".git");
    std::ofstream(model / "a.txt") << "top";
    std::ofstream(model / "a" / "b") << "nested";
    std::ofstream(model / "weights.bin") << std::string(3 << 20, 'w');  // several hash chunks
    std::ofstream(model / "skip.log") << "not signed";
    std::ofstream(model / ".git" / "HEAD") << "ref";
    std::ofstream(model / "model.sig") << "an old signature";
    SignOptions options;
    options.ignore_paths = {"skip.log"};
    auto bundle = SignPath(*key, model.string(), options);
    BOOST_TEST_REQUIRE(bundle.has_value(), (bundle ? "" : ErrorText(bundle.error())));
    auto verified = VerifyPath(*bundle, model.string(), {*pub});
    BOOST_TEST_REQUIRE(verified.has_value(), (verified ? "" : ErrorText(verified.error())));
    BOOST_TEST(verified->subject_name == "my-model");
    std::vector<std::string> names;
    for (const Resource& r : verified->resources) names.push_back(r.name);
    BOOST_TEST((names == std::vector<std::string>{"a/b", "a.txt", "weights.bin"}));
    BOOST_TEST(OpensslVerify(tmp, *bundle, pub->Pem(), kc.digest) == "Verified OK\n", CurveName(kc.curve));
    // The wrong hash does not verify (the test can fail).
    BOOST_TEST(OpensslVerify(tmp, *bundle, pub->Pem(), kc.curve == Curve::kP256 ? "sha384" : "sha256") !=
               "Verified OK\n");
    // Change a signed file: VerifyPath names it.
    std::ofstream(model / "a" / "b") << "changed";
    auto changed = VerifyPath(*bundle, model.string(), {*pub});
    BOOST_TEST_REQUIRE(!changed.has_value());
    BOOST_TEST(changed.error().detail.starts_with("file a/b digest differs"));

    // A single file.
    const fs::path file = tmp.path / "model.safetensors";
    std::ofstream(file) << "single file model";
    auto single = SignPath(*key, file.string());
    BOOST_REQUIRE(single);
    auto single_ok = VerifyPath(*single, file.string(), {*pub});
    BOOST_TEST_REQUIRE(single_ok.has_value(), (single_ok ? "" : ErrorText(single_ok.error())));
    BOOST_TEST(single_ok->subject_name == "model.safetensors");
    BOOST_TEST(single_ok->resources.size() == 1u);
    BOOST_TEST(single_ok->resources[0].name == ".");
    BOOST_TEST(OpensslVerify(tmp, *single, pub->Pem(), kc.digest) == "Verified OK\n");
  }
}

BOOST_AUTO_TEST_CASE(signing_with_the_golden_key_gives_the_golden_shape) {
  auto key = PrivateKey::LoadFile((Golden() / "keys" / "signing-key.pem").string());
  BOOST_REQUIRE(key);
  TempDir tmp;
  const fs::path folder = CopyGolden(tmp, "v1.1.0-elliptic-key");
  fs::remove(folder / "model.sig");
  auto bundle_text = SignPath(*key, folder.string(), GoldenOptions());
  BOOST_REQUIRE(bundle_text);
  const json ours = json::parse(*bundle_text);
  const json golden = json::parse(ReadFile(Golden() / "v1.1.0-elliptic-key" / "model.sig"));
  BOOST_TEST(ours["mediaType"] == golden["mediaType"]);
  BOOST_TEST(ours["verificationMaterial"] == golden["verificationMaterial"]);  // hint and tlogEntries
  BOOST_TEST(ours["dsseEnvelope"]["payloadType"] == golden["dsseEnvelope"]["payloadType"]);
  BOOST_TEST(ours["dsseEnvelope"]["signatures"][0]["keyid"] == "");
  const json our_statement = json::parse(*Base64Decode(ours["dsseEnvelope"]["payload"].get<std::string>()));
  json golden_statement = json::parse(*Base64Decode(golden["dsseEnvelope"]["payload"].get<std::string>()));
  // Same statement, ignore_paths as a set (model_signing writes a Python set's order).
  auto sorted_ignores = [](json s) {
    auto& list = s["predicate"]["serialization"]["ignore_paths"];
    std::vector<std::string> v = list.get<std::vector<std::string>>();
    std::sort(v.begin(), v.end());
    list = v;
    return s;
  };
  BOOST_TEST(sorted_ignores(our_statement) == sorted_ignores(golden_statement),
             our_statement.dump() << " vs " << golden_statement.dump());
  // And it verifies in the copied golden folder with the golden public key.
  auto verified = VerifyPath(*bundle_text, folder.string(), {GoldenPublicKey()});
  BOOST_TEST(verified.has_value());
}

BOOST_AUTO_TEST_CASE(keys_round_trip_and_bad_keys_fail) {
  TempDir tmp;
  auto key = PrivateKey::Generate(Curve::kP521);
  BOOST_REQUIRE(key);
  const std::string path = (tmp.path / "key.pem").string();
  BOOST_REQUIRE(key->WriteFile(path));
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  BOOST_TEST(ReadFile(path).starts_with("-----BEGIN PRIVATE KEY-----"));
  auto loaded = PrivateKey::LoadFile(path);
  BOOST_REQUIRE(loaded);
  BOOST_TEST(loaded->KeyId() == key->KeyId());
  BOOST_TEST((loaded->curve() == Curve::kP521));
  BOOST_TEST(key->PublicPem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
  BOOST_TEST(key->PublicPem().ends_with("-----END PUBLIC KEY-----\n"));

  // SEC1 "EC PRIVATE KEY" from the openssl command.
  const std::string sec1 = (tmp.path / "sec1.pem").string();
  BOOST_REQUIRE(Run("openssl ecparam -name prime256v1 -genkey -noout -out " + ShellQuote(sec1)).exit_code == 0);
  BOOST_TEST(ReadFile(sec1).starts_with("-----BEGIN EC PRIVATE KEY-----"));
  auto sec1_key = PrivateKey::LoadFile(sec1);
  BOOST_TEST_REQUIRE(sec1_key.has_value(), (sec1_key ? "" : ErrorText(sec1_key.error())));
  BOOST_TEST((sec1_key->curve() == Curve::kP256));

  // Wrong curve, wrong algorithm, garbage.
  const std::string k1 = (tmp.path / "k1.pem").string();
  BOOST_REQUIRE(Run("openssl ecparam -name secp256k1 -genkey -noout -out " + ShellQuote(k1)).exit_code == 0);
  auto k1_key = PrivateKey::LoadFile(k1);
  BOOST_TEST_REQUIRE(!k1_key.has_value());
  BOOST_TEST(k1_key.error().detail.find("secp256k1") != std::string::npos);
  const std::string ed = (tmp.path / "ed.pem").string();
  BOOST_REQUIRE(Run("openssl genpkey -algorithm ed25519 -out " + ShellQuote(ed)).exit_code == 0);
  auto ed_key = PrivateKey::LoadFile(ed);
  BOOST_TEST_REQUIRE(!ed_key.has_value());
  BOOST_TEST((ed_key.error().code == ErrorCode::kUnsupportedFormat));
  BOOST_TEST(!PublicKey::FromPem("hello"));
  BOOST_TEST((PrivateKey::LoadFile((tmp.path / "absent.pem").string()).error().code == ErrorCode::kIo));
}

BOOST_AUTO_TEST_CASE(symlinks_and_limits_are_refused) {
  auto key = PrivateKey::Generate(Curve::kP256);
  BOOST_REQUIRE(key);
  TempDir tmp;
  const fs::path model = tmp.path / "m";
  fs::create_directories(model / "d1" / "d2" / "d3");
  std::ofstream(model / "d1" / "d2" / "d3" / "f") << "f";
  std::ofstream(model / "g") << "g";
  SignOptions shallow;
  shallow.max_depth = 2;
  auto deep = SignPath(*key, model.string(), shallow);
  BOOST_TEST_REQUIRE(!deep.has_value());
  BOOST_TEST((deep.error().code == ErrorCode::kLimitExceeded));
  SignOptions few;
  few.max_files = 1;
  BOOST_TEST((SignPath(*key, model.string(), few).error().code == ErrorCode::kLimitExceeded));
  fs::create_symlink("g", model / "link");
  auto linked = SignPath(*key, model.string());
  BOOST_TEST_REQUIRE(!linked.has_value());
  BOOST_TEST(linked.error().where == "link");
  SignOptions ignore_link;
  ignore_link.ignore_paths = {"link"};
  BOOST_TEST(SignPath(*key, model.string(), ignore_link).has_value());
  SignOptions escape;
  escape.ignore_paths = {"../x"};
  BOOST_TEST((SignPath(*key, model.string(), escape).error().code == ErrorCode::kInvalidArgument));
  // A FIFO is refused (and never opened, so nothing blocks).
  fs::remove(model / "link");
  BOOST_REQUIRE(::mkfifo((model / "pipe").c_str(), 0600) == 0);
  auto fifo = SignPath(*key, model.string());
  BOOST_TEST_REQUIRE(!fifo.has_value());
  BOOST_TEST(fifo.error().where == "pipe");
  fs::remove(model / "pipe");
  // A name that is not UTF-8 cannot go into the JSON statement: an error, not an exception.
  std::ofstream(model / "\xff\xfe") << "x";
  auto bad_name = SignPath(*key, model.string());
  BOOST_TEST_REQUIRE(!bad_name.has_value());
  BOOST_TEST((bad_name.error().code == ErrorCode::kInvalidArgument));
}

struct BadBundleCase {
  const char* what;
  void (*mutate)(json& bundle);
  ErrorCode code;
  const char* where;
};

BOOST_AUTO_TEST_CASE(bad_bundle_fields_are_named) {
  const BadBundleCase cases[] = {
      {"not a bundle", [](json& b) { b["mediaType"] = "text/plain"; }, ErrorCode::kMalformed, "bundle.mediaType"},
      {"old bundle", [](json& b) { b["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"; },
       ErrorCode::kUnsupportedFormat, "bundle.mediaType"},
      {"certificate", [](json& b) { b["verificationMaterial"]["certificate"] = {{"rawBytes", "AAAA"}}; },
       ErrorCode::kUnsupportedFormat, "bundle.verificationMaterial"},
      {"no envelope", [](json& b) { b.erase("dsseEnvelope"); }, ErrorCode::kMalformed, "bundle"},
      {"two signatures",
       [](json& b) { b["dsseEnvelope"]["signatures"].push_back(b["dsseEnvelope"]["signatures"][0]); },
       ErrorCode::kMalformed, "bundle.dsseEnvelope.signatures"},
      {"payload not base64", [](json& b) { b["dsseEnvelope"]["payload"] = "!!!!"; }, ErrorCode::kMalformed,
       "bundle.dsseEnvelope.payload"},
      {"hint not a string", [](json& b) { b["verificationMaterial"]["publicKey"]["hint"] = 7; },
       ErrorCode::kMalformed, "bundle.verificationMaterial.publicKey.hint"},
  };
  const json golden = json::parse(ReadFile(Golden() / "v1.1.0-elliptic-key" / "model.sig"));
  for (const BadBundleCase& c : cases) {
    json bundle = golden;
    c.mutate(bundle);
    auto r = VerifyBundle(bundle.dump(), {GoldenPublicKey()});
    BOOST_TEST_REQUIRE(!r.has_value(), c.what);
    BOOST_TEST((r.error().code == c.code), c.what << ": " << ErrorText(r.error()));
    BOOST_TEST(r.error().where == c.where, c.what << ": " << ErrorText(r.error()));
  }
}

// SignStatement signs arbitrary statement text the way a (possibly buggy or
// hostile) signer would, so checks behind the signature can be reached.
std::string SignStatement(const PrivateKey& key, const std::string& statement) {
  const std::string pae = Pae("application/vnd.in-toto+json", statement);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  BOOST_REQUIRE(EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key.pkey()) == 1);
  BOOST_REQUIRE(EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(pae.data()), pae.size()) == 1);
  std::string sig(len, '\0');
  BOOST_REQUIRE(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                               reinterpret_cast<const unsigned char*>(pae.data()), pae.size()) == 1);
  EVP_MD_CTX_free(ctx);
  sig.resize(len);
  const json bundle{{"mediaType", "application/vnd.dev.sigstore.bundle.v0.3+json"},
                    {"verificationMaterial", {{"publicKey", {{"hint", key.KeyId()}}}, {"tlogEntries", json::array()}}},
                    {"dsseEnvelope",
                     {{"payload", Base64Encode(statement)},
                      {"payloadType", "application/vnd.in-toto+json"},
                      {"signatures", json::array({{{"sig", Base64Encode(sig)}, {"keyid", ""}}})}}}};
  return bundle.dump();
}

struct BadStatementCase {
  const char* what;
  void (*mutate)(json& statement);
  ErrorCode code;
  const char* where;
};

BOOST_AUTO_TEST_CASE(bad_statements_behind_a_good_signature_are_named) {
  auto key = PrivateKey::Generate(Curve::kP256);
  BOOST_REQUIRE(key);
  auto pub = PublicKey::FromPrivate(*key);
  BOOST_REQUIRE(pub);
  const std::string digest(64, 'a');
  const std::string root = *RootDigest({Resource{"x", digest}});
  const json good{{"_type", "https://in-toto.io/Statement/v1"},
                  {"subject", json::array({{{"name", "m"}, {"digest", {{"sha256", root}}}}})},
                  {"predicateType", "https://model_signing/signature/v1.0"},
                  {"predicate",
                   {{"serialization", {{"method", "files"}, {"hash_type", "sha256"}, {"allow_symlinks", false}}},
                    {"resources", json::array({{{"name", "x"}, {"algorithm", "sha256"}, {"digest", digest}}})}}}};
  BOOST_TEST_REQUIRE(VerifyBundle(SignStatement(*key, good.dump()), {*pub}).has_value());
  const BadStatementCase cases[] = {
      {"type", [](json& s) { s["_type"] = "https://in-toto.io/Statement/v0.1"; }, ErrorCode::kMalformed,
       "statement._type"},
      {"predicate", [](json& s) { s["predicateType"] = "https://slsa.dev/provenance/v1"; }, ErrorCode::kMalformed,
       "statement.predicateType"},
      {"shards", [](json& s) { s["predicate"]["serialization"]["method"] = "shards"; },
       ErrorCode::kUnsupportedFormat, "statement.predicate.serialization.method"},
      {"sha512", [](json& s) { s["predicate"]["serialization"]["hash_type"] = "blake2"; }, ErrorCode::kMalformed,
       "statement.predicate.serialization.hash_type"},
      {"root", [](json& s) { s["subject"][0]["digest"]["sha256"] = std::string(64, '0'); }, ErrorCode::kMalformed,
       "statement.subject[0].digest.sha256"},
      {"bad digest", [](json& s) { s["predicate"]["resources"][0]["digest"] = "AA"; }, ErrorCode::kMalformed,
       "statement.predicate.resources[0].digest"},
      {"duplicate",
       [](json& s) { s["predicate"]["resources"].push_back(s["predicate"]["resources"][0]); },
       ErrorCode::kMalformed, "statement.predicate.resources[1].name"},
      {"two subjects", [](json& s) { s["subject"].push_back(s["subject"][0]); }, ErrorCode::kMalformed,
       "statement.subject"},
  };
  for (const BadStatementCase& c : cases) {
    json statement = good;
    c.mutate(statement);
    auto r = VerifyBundle(SignStatement(*key, statement.dump()), {*pub});
    BOOST_TEST_REQUIRE(!r.has_value(), c.what);
    BOOST_TEST((r.error().code == c.code), c.what << ": " << ErrorText(r.error()));
    BOOST_TEST(r.error().where == c.where, c.what << ": " << ErrorText(r.error()));
  }
}

// The registry claim (issue 15): carried in the predicate beside the fields
// model_signing reads, signed, returned by VerifyBundle; malformed ones fail
// naming the field; bundles without one (every golden) have none.
BOOST_AUTO_TEST_CASE(registry_claim_round_trips_and_malformed_claims_are_named) {
  auto key = PrivateKey::Generate(Curve::kP256);
  BOOST_REQUIRE(key);
  auto pub = PublicKey::FromPrivate(*key);
  BOOST_REQUIRE(pub);
  const std::string digest(64, 'b');
  SignOptions options;
  options.registry_claim = RegistryClaim{"team-a/m", "v3", std::string(32, 'c'), "https://ckpt.example"};
  auto bundle = SignResources(*key, "team-a/m", {Resource{".", digest}}, options);
  BOOST_TEST_REQUIRE(bundle.has_value());
  auto verified = VerifyBundle(*bundle, {*pub});
  BOOST_TEST_REQUIRE(verified.has_value(), (verified ? "" : ErrorText(verified.error())));
  BOOST_TEST_REQUIRE(verified->registry_claim.has_value());
  BOOST_TEST((*verified->registry_claim == *options.registry_claim));
  // In the payload: predicate.ckptguard_registry, beside serialization and resources.
  const json envelope = json::parse(*bundle)["dsseEnvelope"];
  const json statement = json::parse(*Base64Decode(envelope["payload"].get<std::string>()));
  BOOST_TEST(statement["predicate"]["ckptguard_registry"]["tag"] == "v3");
  BOOST_TEST(statement["predicate"].contains("serialization"));
  BOOST_TEST(statement["predicate"].contains("resources"));
  BOOST_TEST(statement["predicateType"] == "https://model_signing/signature/v1.0");
  // Without a claim: none.
  auto plain = VerifyBundle(*SignResources(*key, "m", {Resource{".", digest}}), {*pub});
  BOOST_TEST_REQUIRE(plain.has_value());
  BOOST_TEST(!plain->registry_claim.has_value());
  for (const GoldenCase& c : kGoldenCases) {
    auto golden = VerifyBundle(ReadFile(Golden() / c.folder / "model.sig"), {GoldenPublicKey()});
    BOOST_TEST_REQUIRE(golden.has_value(), c.folder);
    BOOST_TEST(!golden->registry_claim.has_value(), c.folder);
  }
  // A claim that is not four strings fails, naming the field.
  json bad = statement;
  bad["predicate"]["ckptguard_registry"]["tag"] = 3;
  auto r = VerifyBundle(SignStatement(*key, bad.dump()), {*pub});
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().where == "statement.predicate.ckptguard_registry.tag", ErrorText(r.error()));
  bad = statement;
  bad["predicate"]["ckptguard_registry"].erase("registry_id");
  r = VerifyBundle(SignStatement(*key, bad.dump()), {*pub});
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST(ErrorText(r.error()).find("registry_id") != std::string::npos, ErrorText(r.error()));
}

// CLI ------------------------------------------------------------------------

testing::CommandResult Cli(const std::string& args) {
  return Run(ShellQuote(CKPTGUARD_CLI) + " " + args + " 2>&1");
}

BOOST_AUTO_TEST_CASE(cli_keygen_sign_and_verify) {
  TempDir tmp;
  const std::string key = (tmp.path / "key.pem").string();
  const std::string pub = (tmp.path / "pub.pem").string();
  auto gen = Run(ShellQuote(CKPTGUARD_CLI) + " keygen --out " + ShellQuote(key) + " --curve P-384 > " +
                 ShellQuote(pub));
  BOOST_TEST_REQUIRE(gen.exit_code == 0);
  BOOST_TEST(ReadFile(pub).starts_with("-----BEGIN PUBLIC KEY-----"));
  const fs::path model = tmp.path / "model";
  fs::create_directory(model);
  std::ofstream(model / "w.bin") << "weights";
  std::ofstream(model / "notes.txt") << "notes";

  auto sign = Cli("sign " + ShellQuote(model.string()) + " --key " + ShellQuote(key) + " --ignore-paths notes.txt");
  BOOST_TEST_REQUIRE(sign.exit_code == 0, sign.out);
  BOOST_TEST(fs::exists(model / "model.sig"));
  auto ok = Cli("verify-signature " + ShellQuote(model.string()) + " --key " + ShellQuote(pub) + " --json");
  BOOST_TEST_REQUIRE(ok.exit_code == 0, ok.out);
  const json doc = json::parse(ok.out);
  BOOST_TEST(doc["ok"] == true);
  BOOST_TEST(doc["files"].size() == 1u);

  std::ofstream(model / "w.bin") << "tampered";
  auto bad = Cli("verify-signature " + ShellQuote(model.string()) + " --key " + ShellQuote(pub));
  BOOST_TEST(bad.exit_code == 1, bad.out);
  BOOST_TEST(bad.out.find("file w.bin digest differs") != std::string::npos, bad.out);

  auto missing_key = Cli("verify-signature " + ShellQuote(model.string()) + " --key " +
                         ShellQuote((tmp.path / "absent.pem").string()));
  BOOST_TEST(missing_key.exit_code == 2, missing_key.out);
  auto usage = Cli("verify-signature " + ShellQuote(model.string()));
  BOOST_TEST(usage.exit_code == 3);  // --key missing: a usage error
}

BOOST_AUTO_TEST_CASE(cli_verifies_the_goldens) {
  const std::string pub = ShellQuote((Golden() / "keys" / "signing-key-pub.pem").string());
  const fs::path v110 = Golden() / "v1.1.0-elliptic-key";
  auto folder = Cli("verify-signature " + ShellQuote(v110.string()) + " --key " + pub);
  BOOST_TEST(folder.exit_code == 0, folder.out);
  const fs::path v100 = Golden() / "v1.0.0-elliptic-key";
  auto file = Cli("verify-signature " + ShellQuote((v100 / "signme-1").string()) + " --signature " +
                  ShellQuote((v100 / "model.sig").string()) + " --key " + pub);
  BOOST_TEST(file.exit_code == 0, file.out);
  const fs::path v101 = Golden() / "v1.0.1-elliptic-key";
  auto no_ignore = Cli("verify-signature " + ShellQuote(v101.string()) + " --key " + pub);
  BOOST_TEST(no_ignore.exit_code == 1, no_ignore.out);
  auto with_ignore = Cli("verify-signature " + ShellQuote(v101.string()) + " --key " + pub + " --ignore-paths " +
                         ShellQuote((v101 / "ignore-me").string()));
  BOOST_TEST(with_ignore.exit_code == 0, with_ignore.out);
  auto help = Cli("verify-signature --help");
  BOOST_TEST(help.out.find("model_signing verify key") != std::string::npos);
}

}  // namespace
}  // namespace ckptguard::signing

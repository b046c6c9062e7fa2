// OpenSSF model signing v1.0, key mode: sign a model (a file or a folder) with
// an ECDSA key and verify such signatures, interoperable with the reference
// `model_signing sign key` / `model_signing verify key` (sigstore/model-transparency).
//
// A signature is a Sigstore bundle (JSON) holding a DSSE envelope over an
// in-toto Statement v1 whose predicate lists every signed file with its
// SHA-256 and whose subject digest (ROOT) is the SHA-256 of those digests
// concatenated in resource order. See docs/formats.md, "OpenSSF model signing".
//
// Nothing here throws: every fallible function returns Result<T> or Status.
// Verification failures (bad signature, digest mismatch, extra or missing
// file, wrong field) are kMalformed with a detail naming the file or field;
// kIo and kInvalidArgument mean the inputs could not be read or used at all.
#ifndef CKPTGUARD_SIGNING_MODEL_SIGNING_H_
#define CKPTGUARD_SIGNING_MODEL_SIGNING_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

typedef struct evp_pkey_st EVP_PKEY;

CKPTGUARD_API_BEGIN
namespace ckptguard::signing {

// The ECDSA curves the format allows; each fixes the signature's hash
// (P-256: SHA-256, P-384: SHA-384, P-521: SHA-512).
enum class Curve : uint8_t { kP256, kP384, kP521 };

// CurveName returns "P-256", "P-384" or "P-521".
std::string_view CurveName(Curve curve);
// ParseCurve accepts "P-256", "P-384", "P-521" (also "p256", "secp384r1"...).
Result<Curve> ParseCurve(std::string_view name);

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const;
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// PrivateKey owns an EC private key on one of the three curves. Movable, not
// copyable.
class PrivateKey {
 public:
  // Generate makes a fresh key. Failure: kInternal if OpenSSL refuses.
  static Result<PrivateKey> Generate(Curve curve);
  // FromPem reads a PKCS#8 "PRIVATE KEY" or SEC1 "EC PRIVATE KEY" PEM block.
  // Encrypted keys, RSA/Ed25519 keys and other curves fail (kUnsupportedFormat
  // or kMalformed), never prompting for a passphrase.
  static Result<PrivateKey> FromPem(std::string_view pem);
  // LoadFile reads at most 64 KiB from `path` (kLimitExceeded beyond) then FromPem.
  static Result<PrivateKey> LoadFile(const std::string& path);

  // WriteFile writes the key as PKCS#8 PEM, mode 0600, atomically (a
  // temporary file in the same folder, fsynced, renamed over `path`).
  Status WriteFile(const std::string& path) const;
  // PublicPem is the SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----\n...").
  std::string PublicPem() const;
  // KeyId is the lowercase hex SHA-256 of PublicPem(): the bundle's publicKey.hint.
  std::string KeyId() const;
  Curve curve() const { return curve_; }
  // pkey is the OpenSSL key, owned by this object (valid while it lives).
  EVP_PKEY* pkey() const { return key_.get(); }

 private:
  PrivateKey(PkeyPtr key, Curve curve) : key_(std::move(key)), curve_(curve) {}
  PkeyPtr key_;
  Curve curve_ = Curve::kP256;
};

// PublicKey is an EC public key on one of the three curves. Copyable (the
// OpenSSL key is shared and immutable).
class PublicKey {
 public:
  // FromPem finds the first "-----BEGIN PUBLIC KEY-----" block in `text`
  // (text before it, such as a certtool dump, is skipped) and reads it.
  static Result<PublicKey> FromPem(std::string_view text);
  // LoadFile reads at most 64 KiB from `path`, then FromPem.
  static Result<PublicKey> LoadFile(const std::string& path);
  // FromPrivate returns the public half of `key`.
  static Result<PublicKey> FromPrivate(const PrivateKey& key);

  // Pem is the canonical PEM text of the key (as PrivateKey::PublicPem).
  std::string Pem() const { return pem_; }
  // KeyId is the lowercase hex SHA-256 of Pem().
  std::string KeyId() const { return key_id_; }
  Curve curve() const { return curve_; }
  EVP_PKEY* pkey() const { return key_.get(); }

 private:
  PublicKey() = default;
  std::shared_ptr<EVP_PKEY> key_;
  Curve curve_ = Curve::kP256;
  std::string pem_;
  std::string key_id_;
};

// Resource is one signed file: `name` is its path relative to the model
// folder in POSIX form ("." for a single-file model); `sha256_hex` is 64
// lowercase hex digits.
struct Resource {
  std::string name;
  std::string sha256_hex;
  bool operator==(const Resource&) const = default;
};

// RegistryClaim is what a registry (ckptguardd) says about the model it
// signs: the catalog name and tag it was pushed under and the registry's
// identity. It travels inside the signed statement as the predicate field
// "ckptguard_registry" ({"name", "tag", "registry_id", "registry_name"}).
// model_signing v1.0 verifiers read only predicate.serialization and
// predicate.resources, so a bundle with a claim stays a plain model-signing
// bundle (`model_signing verify key` accepts it).
struct RegistryClaim {
  std::string name;           // catalog name ("team-a/resnet50")
  std::string tag;            // catalog tag ("v3"; may be "")
  std::string registry_id;    // the registry's stable id (made with its data folder)
  std::string registry_name;  // display name or URL the operator configured ("" when none)
  bool operator==(const RegistryClaim&) const = default;
};

// kRegistryClaimField is the predicate field that carries a RegistryClaim.
inline constexpr std::string_view kRegistryClaimField = "ckptguard_registry";

// SignOptions: what to leave out, and the limits on the walk and the inputs.
struct SignOptions {
  // Paths relative to the model folder (POSIX) left out of the signature,
  // with everything below them. Recorded in the statement's ignore_paths.
  std::vector<std::string> ignore_paths;
  // The signature file's path relative to the model folder, left out and
  // recorded like an ignore path; empty when it lives outside the folder.
  std::string signature_name = "model.sig";
  // Leave out .git, .gitattributes, .gitignore and .github, as model_signing
  // does by default.
  bool ignore_git_paths = true;
  // Most files in a model (default 100000; ceiling 10000000): bounds memory.
  uint64_t max_files = 100000;
  // Deepest folder nesting below the model folder (default 64).
  uint32_t max_depth = 64;
  // SignResources/SignPath: add this claim to the predicate (none when unset).
  std::optional<RegistryClaim> registry_claim;
  // Largest bundle VerifyBundle parses, bytes (default 16 MiB).
  uint64_t max_bundle_len = 16u << 20;
  // Deepest JSON nesting in a bundle or statement (default 32; the format needs 6).
  uint32_t max_json_depth = 32;
};

// Pae is the DSSE pre-authentication encoding that is signed:
// "DSSEv1 <len(type)> <type> <len(payload)> <payload>" (lengths in decimal).
std::string Pae(std::string_view payload_type, std::string_view payload);

// ModelPathLess orders POSIX relative paths component by component, as
// Python's PurePosixPath does ("a/b" < "a.txt", since "a" < "a.txt").
bool ModelPathLess(std::string_view a, std::string_view b);

// RootDigest is the hex SHA-256 over the raw digests of `resources`, in order.
// Failure: kMalformed if a digest is not 64 hex digits.
Result<std::string> RootDigest(const std::vector<Resource>& resources);

// SignResources builds the statement over `resources` (sorted as model_signing
// sorts them; duplicates fail), signs its PAE with `key` and returns the
// bundle JSON text. `subject_name` is the model's name (folder or file name).
Result<std::string> SignResources(const PrivateKey& key, std::string_view subject_name,
                                  std::vector<Resource> resources, const SignOptions& options = {});

// HashPath hashes the model at `model_path`: a regular file gives one
// resource named "."; a folder gives every regular file below it except the
// ignored ones, sorted. Symbolic links and special files fail (kInvalidArgument
// naming the path) unless ignored; so do too many files or too deep a tree
// (kLimitExceeded).
Result<std::vector<Resource>> HashPath(const std::string& model_path, const SignOptions& options = {});

// SignPath is HashPath then SignResources with the file or folder name as subject.
Result<std::string> SignPath(const PrivateKey& key, const std::string& model_path,
                             const SignOptions& options = {});

// VerifiedStatement is what a verified bundle signs.
struct VerifiedStatement {
  std::string subject_name;
  std::string root_sha256;
  std::vector<Resource> resources;
  std::vector<std::string> ignore_paths;
  std::string key_id;  // KeyId() of the trusted key that verified it
  // The predicate's "ckptguard_registry" claim, when the bundle has one
  // (signed, like everything here). A claim that is present but not an
  // object of four strings fails verification (kMalformed).
  std::optional<RegistryClaim> registry_claim;
};

// VerifyBundle parses `bundle_json` (bounded by options' max_bundle_len and
// max_json_depth), picks the trusted key named by the bundle (publicKey.hint,
// or the key in rawBytes; with neither, every trusted key is tried), checks the
// DSSE signature over the PAE, then payloadType, _type, predicateType, the
// serialization and that ROOT matches the resources. Failure: kMalformed
// naming the field ("signature does not verify with key <id>"...),
// kUnsupportedFormat for certificate bundles or shard serialization,
// kInvalidArgument if no key is trusted.
Result<VerifiedStatement> VerifyBundle(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                                       const SignOptions& options = {});

// VerifyPath is VerifyBundle, then hashes `model_path` (ignoring
// options.ignore_paths, the statement's ignore_paths and the signature file)
// and requires exactly the signed files with the signed digests: an extra,
// missing or changed file fails, naming it.
Result<VerifiedStatement> VerifyPath(std::string_view bundle_json, const std::string& model_path,
                                     const std::vector<PublicKey>& trusted, const SignOptions& options = {});

// ReadBundleFile reads a signature file, at most options.max_bundle_len bytes
// (kLimitExceeded beyond, kIo naming `path` if it cannot be read).
Result<std::string> ReadBundleFile(const std::string& path, const SignOptions& options = {});

// Exposed for tests and the CLI: base64 (standard alphabet, padded).
std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

}  // namespace ckptguard::signing

CKPTGUARD_API_END

#endif  // CKPTGUARD_SIGNING_MODEL_SIGNING_H_

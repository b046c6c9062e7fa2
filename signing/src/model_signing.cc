// Model signing: hashing a model, building and signing the in-toto statement,
// and verifying bundles (see model_signing.h for the format).
#include "ckptguard/signing/model_signing.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <new>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ckptguard/input_file.h"
#include "ckptguard/sha256.h"
#include "signing_internal.h"

namespace ckptguard::signing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kBundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
constexpr std::string_view kPayloadType = "application/vnd.in-toto+json";
constexpr std::string_view kStatementType = "https://in-toto.io/Statement/v1";
constexpr std::string_view kPredicateType = "https://model_signing/signature/v1.0";
constexpr uint64_t kMaxFilesCeiling = 10'000'000;

std::unexpected<Error> Bad(std::string detail, std::string where = {}) {
  return MakeError(ErrorCode::kMalformed, 0, std::move(detail), std::move(where));
}

bool IsHexDigest(std::string_view s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::vector<std::string_view> Components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > start) out.push_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

// NormalizeRelative turns "./a//b/" into "a/b"; rejects absolute paths and "..".
Result<std::string> NormalizeRelative(std::string_view path) {
  if (!path.empty() && path.front() == '/') {
    return MakeError(ErrorCode::kInvalidArgument, 0, "ignore path must be relative to the model folder",
                     std::string(path));
  }
  std::string out;
  for (std::string_view c : Components(path)) {
    if (c == ".") continue;
    if (c == "..") {
      return MakeError(ErrorCode::kInvalidArgument, 0, "ignore path must not contain '..'", std::string(path));
    }
    if (!out.empty()) out.push_back('/');
    out.append(c);
  }
  return out;
}

// IsIgnored: `rel` equals one of `ignored` or lies below it.
bool IsIgnored(std::string_view rel, const std::set<std::string>& ignored) {
  for (const std::string& ig : ignored) {
    if (ig.empty()) continue;
    if (rel == ig) return true;
    if (rel.size() > ig.size() && rel.starts_with(ig) && rel[ig.size()] == '/') return true;
  }
  return false;
}

Result<std::set<std::string>> IgnoreSet(const SignOptions& options,
                                        const std::vector<std::string>& extra = {}) {
  std::set<std::string> out;
  for (const auto* list : {&options.ignore_paths, &extra}) {
    for (const std::string& p : *list) {
      CKG_ASSIGN_OR_RETURN(std::string norm, NormalizeRelative(p));
      if (!norm.empty()) out.insert(std::move(norm));
    }
  }
  if (!options.signature_name.empty()) {
    CKG_ASSIGN_OR_RETURN(std::string norm, NormalizeRelative(options.signature_name));
    if (!norm.empty()) out.insert(std::move(norm));
  }
  if (options.ignore_git_paths) {
    for (const char* g : {".git", ".gitattributes", ".gitignore", ".github"}) out.insert(g);
  }
  return out;
}

Result<std::string> HashFile(const std::string& path, const std::string& name) {
  // Not followed if it became a symlink since the walk looked at it; a FIFO
  // swapped in is refused before it is opened (input_file.h).
  Result<InputFile> file = OpenInputFile(path, OpenInputOptions{.follow_symlinks = false});
  if (!file) {
    Error e = std::move(file).error();
    e.where = name;
    return std::unexpected(std::move(e));
  }
  // Signing bytes that never existed together (a file rewritten in place
  // while it was hashed) would vouch for a torn snapshot: refuse it.
  Result<std::string> hex = Sha256FdHex(file->fd(), name);
  if (hex) {
    if (Status unchanged = file->CheckUnchanged(); !unchanged) return ChangedWhileReading(name);
  }
  return hex;
}

// ModelName is the last component of `model_path` ("models/bert/" -> "bert").
std::string ModelName(const std::string& model_path) {
  fs::path p = fs::path(model_path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.empty() || name == ".") name = fs::absolute(model_path).lexically_normal().filename().string();
  return name;
}

Status SortAndCheck(std::vector<Resource>& resources) {
  std::sort(resources.begin(), resources.end(),
            [](const Resource& a, const Resource& b) { return ModelPathLess(a.name, b.name); });
  for (size_t i = 0; i < resources.size(); ++i) {
    if (!IsHexDigest(resources[i].sha256_hex)) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "digest is not 64 lowercase hex digits", resources[i].name);
    }
    if (i > 0 && resources[i].name == resources[i - 1].name) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "resource listed twice", resources[i].name);
    }
  }
  return OkStatus();
}

// CheckJsonDepth scans JSON text without parsing, so that a hostile bundle
// cannot make any parser nest deeper than `max_depth`.
Status CheckJsonDepth(std::string_view text, uint32_t max_depth, const char* what) {
  uint32_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        return MakeError(ErrorCode::kLimitExceeded, i,
                         "JSON nesting deeper than max_json_depth " + std::to_string(max_depth), what);
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return OkStatus();
}

Result<json> ParseJson(std::string_view text, const SignOptions& options, const char* what) {
  CKG_TRY(CheckJsonDepth(text, options.max_json_depth, what));
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad("not valid JSON", what);
  if (!doc.is_object()) return Bad("not a JSON object", what);
  return doc;
}

// Field accessors: each names the field it failed on.
Result<const json*> Member(const json& obj, const char* key, const std::string& path) {
  if (!obj.is_object()) return Bad("not an object", path);
  auto it = obj.find(key);
  if (it == obj.end()) return Bad(std::string("missing field ") + key, path);
  return &*it;
}

Result<std::string> StringMember(const json& obj, const char* key, const std::string& path) {
  CKG_ASSIGN_OR_RETURN(const json* v, Member(obj, key, path));
  if (!v->is_string()) return Bad("field is not a string", path + "." + key);
  return v->get_ref<const std::string&>();
}

Status ExpectString(const json& obj, const char* key, std::string_view want, const std::string& path) {
  CKG_ASSIGN_OR_RETURN(std::string got, StringMember(obj, key, path));
  if (got != want) {
    return Bad("is \"" + got + "\", expected \"" + std::string(want) + "\"", path + "." + key);
  }
  return OkStatus();
}

Result<std::string> DecodeBase64Field(const json& obj, const char* key, const std::string& path) {
  CKG_ASSIGN_OR_RETURN(std::string text, StringMember(obj, key, path));
  auto decoded = Base64Decode(text);
  if (!decoded) return Bad("is not valid base64: " + decoded.error().detail, path + "." + key);
  return std::move(*decoded);
}

const PublicKey* FindKey(const std::vector<PublicKey>& trusted, std::string_view key_id) {
  for (const PublicKey& k : trusted) {
    if (k.KeyId() == key_id) return &k;
  }
  return nullptr;
}

Result<VerifiedStatement> VerifyBundleImpl(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                                           const SignOptions& options) {
  if (trusted.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "no trusted public key given");
  if (bundle_json.size() > options.max_bundle_len) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "bundle is larger than max_bundle_len " + std::to_string(options.max_bundle_len), "bundle");
  }
  CKG_ASSIGN_OR_RETURN(const json bundle, ParseJson(bundle_json, options, "bundle"));
  CKG_ASSIGN_OR_RETURN(std::string media_type, StringMember(bundle, "mediaType", "bundle"));
  if (!media_type.starts_with("application/vnd.dev.sigstore.bundle")) {
    return Bad("is \"" + media_type + "\", not a Sigstore bundle", "bundle.mediaType");
  }
  if (media_type != kBundleMediaType) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     "Sigstore bundle version \"" + media_type + "\" is not supported (v0.3 only)",
                     "bundle.mediaType");
  }
  CKG_ASSIGN_OR_RETURN(const json* material, Member(bundle, "verificationMaterial", "bundle"));
  if (material->contains("certificate") || material->contains("x509CertificateChain")) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     "certificate (Sigstore keyless or PKI) signatures are not supported; key mode only",
                     "bundle.verificationMaterial");
  }
  CKG_ASSIGN_OR_RETURN(const json* public_key, Member(*material, "publicKey", "bundle.verificationMaterial"));
  if (!public_key->is_object()) return Bad("not an object", "bundle.verificationMaterial.publicKey");

  // Which trusted keys to try.
  std::vector<const PublicKey*> candidates;
  if (public_key->contains("hint")) {
    CKG_ASSIGN_OR_RETURN(std::string hint, StringMember(*public_key, "hint", "bundle.verificationMaterial.publicKey"));
    const PublicKey* k = FindKey(trusted, hint);
    if (k == nullptr) {
      return Bad("signed with key " + hint + ", which is not among the trusted keys",
                 "bundle.verificationMaterial.publicKey.hint");
    }
    candidates.push_back(k);
  } else if (public_key->contains("rawBytes")) {
    CKG_ASSIGN_OR_RETURN(std::string raw,
                         DecodeBase64Field(*public_key, "rawBytes", "bundle.verificationMaterial.publicKey"));
    auto embedded = PublicKey::FromPem(raw);
    if (!embedded) {
      return Bad("does not hold a PEM EC public key: " + embedded.error().detail,
                 "bundle.verificationMaterial.publicKey.rawBytes");
    }
    const PublicKey* k = FindKey(trusted, embedded->KeyId());
    if (k == nullptr) {
      return Bad("signed with key " + embedded->KeyId() + ", which is not among the trusted keys",
                 "bundle.verificationMaterial.publicKey.rawBytes");
    }
    candidates.push_back(k);
  } else {
    for (const PublicKey& k : trusted) candidates.push_back(&k);
  }

  CKG_ASSIGN_OR_RETURN(const json* envelope, Member(bundle, "dsseEnvelope", "bundle"));
  if (bundle.contains("messageSignature")) {
    return MakeError(ErrorCode::kUnsupportedFormat, 0, "messageSignature bundles are not model signatures",
                     "bundle");
  }
  CKG_TRY(ExpectString(*envelope, "payloadType", kPayloadType, "bundle.dsseEnvelope"));
  CKG_ASSIGN_OR_RETURN(std::string payload, DecodeBase64Field(*envelope, "payload", "bundle.dsseEnvelope"));
  CKG_ASSIGN_OR_RETURN(const json* signatures, Member(*envelope, "signatures", "bundle.dsseEnvelope"));
  if (!signatures->is_array() || signatures->size() != 1) {
    return Bad("must be an array of exactly one signature", "bundle.dsseEnvelope.signatures");
  }
  CKG_ASSIGN_OR_RETURN(std::string sig, DecodeBase64Field((*signatures)[0], "sig", "bundle.dsseEnvelope.signatures[0]"));

  const std::string pae = Pae(kPayloadType, payload);
  const PublicKey* verified_by = nullptr;
  for (const PublicKey* k : candidates) {
    if (VerifyBytes(*k, pae, sig)) {
      verified_by = k;
      break;
    }
  }
  if (verified_by == nullptr) {
    if (candidates.size() == 1) {
      return Bad("signature does not verify with key " + candidates[0]->KeyId(), "bundle.dsseEnvelope.signatures[0]");
    }
    return Bad("signature does not verify with any of the " + std::to_string(candidates.size()) + " trusted keys",
               "bundle.dsseEnvelope.signatures[0]");
  }

  // The statement: only trusted bytes from here on.
  CKG_ASSIGN_OR_RETURN(const json statement, ParseJson(payload, options, "statement"));
  CKG_TRY(ExpectString(statement, "_type", kStatementType, "statement"));
  CKG_TRY(ExpectString(statement, "predicateType", kPredicateType, "statement"));
  CKG_ASSIGN_OR_RETURN(const json* subjects, Member(statement, "subject", "statement"));
  if (!subjects->is_array() || subjects->size() != 1) {
    return Bad("must be an array of exactly one subject", "statement.subject");
  }
  VerifiedStatement out;
  out.key_id = verified_by->KeyId();
  CKG_ASSIGN_OR_RETURN(out.subject_name, StringMember((*subjects)[0], "name", "statement.subject[0]"));
  CKG_ASSIGN_OR_RETURN(const json* subject_digest, Member((*subjects)[0], "digest", "statement.subject[0]"));
  CKG_ASSIGN_OR_RETURN(out.root_sha256, StringMember(*subject_digest, "sha256", "statement.subject[0].digest"));

  CKG_ASSIGN_OR_RETURN(const json* predicate, Member(statement, "predicate", "statement"));
  CKG_ASSIGN_OR_RETURN(const json* serialization, Member(*predicate, "serialization", "statement.predicate"));
  CKG_ASSIGN_OR_RETURN(std::string method, StringMember(*serialization, "method", "statement.predicate.serialization"));
  if (method != "files") {
    return MakeError(ErrorCode::kUnsupportedFormat, 0,
                     "serialization method \"" + method + "\" is not supported (\"files\" only)",
                     "statement.predicate.serialization.method");
  }
  CKG_TRY(ExpectString(*serialization, "hash_type", "sha256", "statement.predicate.serialization"));
  if (serialization->contains("allow_symlinks")) {
    const json& allow = (*serialization)["allow_symlinks"];
    if (!allow.is_boolean()) return Bad("is not a boolean", "statement.predicate.serialization.allow_symlinks");
    if (allow.get<bool>()) {
      return MakeError(ErrorCode::kUnsupportedFormat, 0, "signatures that follow symbolic links are not supported",
                       "statement.predicate.serialization.allow_symlinks");
    }
  }
  if (serialization->contains("ignore_paths")) {
    const json& ignore = (*serialization)["ignore_paths"];
    if (!ignore.is_array()) return Bad("is not an array", "statement.predicate.serialization.ignore_paths");
    for (const json& p : ignore) {
      if (!p.is_string()) return Bad("holds a non-string", "statement.predicate.serialization.ignore_paths");
      out.ignore_paths.push_back(p.get<std::string>());
    }
  }
  CKG_ASSIGN_OR_RETURN(const json* resources, Member(*predicate, "resources", "statement.predicate"));
  if (!resources->is_array()) return Bad("is not an array", "statement.predicate.resources");
  if (resources->size() > options.max_files) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     std::to_string(resources->size()) + " resources exceed max_files " +
                         std::to_string(options.max_files),
                     "statement.predicate.resources");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < resources->size(); ++i) {
    const std::string path = "statement.predicate.resources[" + std::to_string(i) + "]";
    const json& r = (*resources)[i];
    CKG_TRY(ExpectString(r, "algorithm", "sha256", path));
    Resource res;
    CKG_ASSIGN_OR_RETURN(res.name, StringMember(r, "name", path));
    CKG_ASSIGN_OR_RETURN(res.sha256_hex, StringMember(r, "digest", path));
    if (!IsHexDigest(res.sha256_hex)) return Bad("is not 64 lowercase hex digits", path + ".digest");
    if (!seen.insert(res.name).second) return Bad("file " + res.name + " is listed twice", path + ".name");
    out.resources.push_back(std::move(res));
  }
  if (auto it = predicate->find(std::string(kRegistryClaimField)); it != predicate->end()) {
    const std::string path = "statement.predicate." + std::string(kRegistryClaimField);
    RegistryClaim claim;
    CKG_ASSIGN_OR_RETURN(claim.name, StringMember(*it, "name", path));
    CKG_ASSIGN_OR_RETURN(claim.tag, StringMember(*it, "tag", path));
    CKG_ASSIGN_OR_RETURN(claim.registry_id, StringMember(*it, "registry_id", path));
    CKG_ASSIGN_OR_RETURN(claim.registry_name, StringMember(*it, "registry_name", path));
    out.registry_claim = std::move(claim);
  }
  CKG_ASSIGN_OR_RETURN(const std::string root, RootDigest(out.resources));
  if (root != out.root_sha256) {
    return Bad("subject digest " + out.root_sha256 + " does not match the resources (their root is " + root + ")",
               "statement.subject[0].digest.sha256");
  }
  return out;
}

Result<std::vector<Resource>> HashPathImpl(const std::string& model_path, const SignOptions& options,
                                           const std::set<std::string>& ignored) {
  if (model_path.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "empty model path");
  if (options.max_files > kMaxFilesCeiling) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "max_files above the ceiling of 10000000");
  }
  std::error_code ec;
  const fs::file_status top = fs::symlink_status(model_path, ec);
  if (ec) return MakeError(ErrorCode::kIo, 0, "cannot stat: " + ec.message(), model_path);
  if (fs::is_symlink(top)) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "the model path is a symbolic link (not followed)", model_path);
  }
  std::vector<Resource> out;
  if (fs::is_regular_file(top)) {
    CKG_ASSIGN_OR_RETURN(std::string digest, HashFile(model_path, model_path));
    out.push_back(Resource{".", std::move(digest)});
    return out;
  }
  if (!fs::is_directory(top)) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "not a regular file or folder", model_path);
  }
  // Iterative walk: (relative folder, depth).
  std::vector<std::pair<std::string, uint32_t>> pending{{"", 0}};
  while (!pending.empty()) {
    auto [rel_dir, depth] = std::move(pending.back());
    pending.pop_back();
    const fs::path dir = rel_dir.empty() ? fs::path(model_path) : fs::path(model_path) / rel_dir;
    fs::directory_iterator it(dir, ec);
    if (ec) return MakeError(ErrorCode::kIo, 0, "cannot list folder: " + ec.message(), rel_dir.empty() ? "." : rel_dir);
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const std::string rel = rel_dir.empty() ? name : rel_dir + "/" + name;
      if (IsIgnored(rel, ignored)) continue;
      const fs::file_status st = it->symlink_status(ec);
      if (ec) return MakeError(ErrorCode::kIo, 0, "cannot stat: " + ec.message(), rel);
      if (fs::is_symlink(st)) {
        return MakeError(ErrorCode::kInvalidArgument, 0,
                         "symbolic link refused (allow_symlinks is false); remove it or ignore it", rel);
      }
      if (fs::is_directory(st)) {
        if (depth + 1 > options.max_depth) {
          return MakeError(ErrorCode::kLimitExceeded, 0,
                           "folder nesting deeper than max_depth " + std::to_string(options.max_depth), rel);
        }
        pending.emplace_back(rel, depth + 1);
        continue;
      }
      if (!fs::is_regular_file(st)) {
        return MakeError(ErrorCode::kInvalidArgument, 0, "not a regular file (device, socket or FIFO)", rel);
      }
      if (out.size() >= options.max_files) {
        return MakeError(ErrorCode::kLimitExceeded, 0,
                         "more files than max_files " + std::to_string(options.max_files), rel);
      }
      CKG_ASSIGN_OR_RETURN(std::string digest, HashFile((fs::path(model_path) / rel).string(), rel));
      out.push_back(Resource{rel, std::move(digest)});
    }
    if (ec) return MakeError(ErrorCode::kIo, 0, "cannot list folder: " + ec.message(), rel_dir.empty() ? "." : rel_dir);
  }
  CKG_TRY(SortAndCheck(out));
  return out;
}

Result<std::string> SignResourcesImpl(const PrivateKey& key, std::string_view subject_name,
                                      std::vector<Resource> resources, const SignOptions& options) {
  if (subject_name.empty()) return MakeError(ErrorCode::kInvalidArgument, 0, "empty subject name");
  if (resources.size() > options.max_files) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "more resources than max_files");
  }
  CKG_TRY(SortAndCheck(resources));
  CKG_ASSIGN_OR_RETURN(const std::string root, RootDigest(resources));
  CKG_ASSIGN_OR_RETURN(const std::set<std::string> ignored, IgnoreSet(options));

  ordered_json resource_list = ordered_json::array();
  for (const Resource& r : resources) {
    resource_list.push_back(ordered_json{{"name", r.name}, {"algorithm", "sha256"}, {"digest", r.sha256_hex}});
  }
  ordered_json ignore_list = ordered_json::array();
  for (const std::string& p : ignored) ignore_list.push_back(p);
  ordered_json statement{
      {"_type", kStatementType},
      {"subject", ordered_json::array({ordered_json{{"name", subject_name}, {"digest", {{"sha256", root}}}}})},
      {"predicateType", kPredicateType},
      {"predicate",
       {{"serialization",
         {{"method", "files"}, {"hash_type", "sha256"}, {"allow_symlinks", false}, {"ignore_paths", ignore_list}}},
        {"resources", resource_list}}}};
  if (options.registry_claim) {
    const RegistryClaim& c = *options.registry_claim;
    statement["predicate"][std::string(kRegistryClaimField)] = ordered_json{
        {"name", c.name}, {"tag", c.tag}, {"registry_id", c.registry_id}, {"registry_name", c.registry_name}};
  }
  std::string payload;
  try {
    payload = statement.dump(-1, ' ', false, ordered_json::error_handler_t::strict);
  } catch (const ordered_json::exception&) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "a file or model name is not valid UTF-8; it cannot be signed");
  }
  CKG_ASSIGN_OR_RETURN(const std::string sig, SignBytes(key, Pae(kPayloadType, payload)));
  const ordered_json bundle{
      {"mediaType", kBundleMediaType},
      {"verificationMaterial", {{"publicKey", {{"hint", key.KeyId()}}}, {"tlogEntries", ordered_json::array()}}},
      {"dsseEnvelope",
       {{"payload", Base64Encode(payload)},
        {"payloadType", kPayloadType},
        {"signatures", ordered_json::array({ordered_json{{"sig", Base64Encode(sig)}, {"keyid", ""}}})}}}};
  return bundle.dump();
}

std::unexpected<Error> OutOfMemory() { return MakeError(ErrorCode::kLimitExceeded, 0, "out of memory"); }

}  // namespace

std::string Pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payload_type.size());
  out += ' ';
  out += payload_type;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

bool ModelPathLess(std::string_view a, std::string_view b) {
  const auto ca = Components(a);
  const auto cb = Components(b);
  return std::lexicographical_compare(ca.begin(), ca.end(), cb.begin(), cb.end());
}

Result<std::string> RootDigest(const std::vector<Resource>& resources) {
  std::string raw;
  raw.reserve(resources.size() * 32);
  for (const Resource& r : resources) {
    if (!IsHexDigest(r.sha256_hex)) return Bad("digest is not 64 lowercase hex digits", r.name);
    for (size_t i = 0; i < 64; i += 2) {
      auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
      raw.push_back(static_cast<char>(nibble(r.sha256_hex[i]) << 4 | nibble(r.sha256_hex[i + 1])));
    }
  }
  return ckptguard::Sha256Hex(raw);
}

std::string Base64Encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 |
                       static_cast<uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return MakeError(ErrorCode::kMalformed, text.size(), "length is not a multiple of 4");
  }
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2 && (j == 3 || text[i + 3] == '=')) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = value(c);
      if (d < 0 || pad > 0) return MakeError(ErrorCode::kMalformed, i + j, "invalid base64 character");
      v = v << 6 | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<char>(v >> 16));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

Result<std::string> ReadBundleFile(const std::string& path, const SignOptions& options) {
  return ReadSmallFile(path, options.max_bundle_len);
}

Result<std::vector<Resource>> HashPath(const std::string& model_path, const SignOptions& options) {
  try {
    CKG_ASSIGN_OR_RETURN(const std::set<std::string> ignored, IgnoreSet(options));
    return HashPathImpl(model_path, options, ignored);
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

Result<std::string> SignResources(const PrivateKey& key, std::string_view subject_name,
                                  std::vector<Resource> resources, const SignOptions& options) {
  try {
    return SignResourcesImpl(key, subject_name, std::move(resources), options);
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

Result<std::string> SignPath(const PrivateKey& key, const std::string& model_path, const SignOptions& options) {
  CKG_ASSIGN_OR_RETURN(std::vector<Resource> resources, HashPath(model_path, options));
  return SignResources(key, ModelName(model_path), std::move(resources), options);
}

Result<VerifiedStatement> VerifyBundle(std::string_view bundle_json, const std::vector<PublicKey>& trusted,
                                       const SignOptions& options) {
  try {
    return VerifyBundleImpl(bundle_json, trusted, options);
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

Result<VerifiedStatement> VerifyPath(std::string_view bundle_json, const std::string& model_path,
                                     const std::vector<PublicKey>& trusted, const SignOptions& options) {
  try {
    CKG_ASSIGN_OR_RETURN(VerifiedStatement statement, VerifyBundleImpl(bundle_json, trusted, options));
    // The statement's ignore_paths are signed, so honouring them is safe.
    std::vector<std::string> recorded;
    for (const std::string& p : statement.ignore_paths) {
      auto norm = NormalizeRelative(p);
      if (!norm) return Bad("ignore path \"" + p + "\" is absolute or has '..'", "statement.predicate.serialization.ignore_paths");
      recorded.push_back(*norm);
    }
    CKG_ASSIGN_OR_RETURN(const std::set<std::string> ignored, IgnoreSet(options, recorded));
    CKG_ASSIGN_OR_RETURN(std::vector<Resource> actual, HashPathImpl(model_path, options, ignored));
    std::vector<Resource> expected = statement.resources;
    std::sort(expected.begin(), expected.end(),
              [](const Resource& a, const Resource& b) { return ModelPathLess(a.name, b.name); });
    // Merge the two sorted lists and name the first difference. A
    // single-file model's resource is "."; errors name the file instead.
    const std::string file_name = ModelName(model_path);
    auto shown = [&](const std::string& name) { return name == "." ? file_name : name; };
    size_t i = 0;
    size_t j = 0;
    while (i < expected.size() || j < actual.size()) {
      if (j == actual.size() || (i < expected.size() && ModelPathLess(expected[i].name, actual[j].name))) {
        return Bad("signed file " + shown(expected[i].name) + " is missing", expected[i].name);
      }
      if (i == expected.size() || ModelPathLess(actual[j].name, expected[i].name)) {
        return Bad("extra file " + shown(actual[j].name) + " not in the signature", actual[j].name);
      }
      if (expected[i].sha256_hex != actual[j].sha256_hex) {
        return Bad("file " + shown(expected[i].name) + " digest differs: signed " + expected[i].sha256_hex + ", now " +
                       actual[j].sha256_hex,
                   expected[i].name);
      }
      ++i;
      ++j;
    }
    return statement;
  } catch (const std::bad_alloc&) {
    return OutOfMemory();
  }
}

}  // namespace ckptguard::signing

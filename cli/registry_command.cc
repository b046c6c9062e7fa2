// `ckptguard registry ...`: push, pull, verify, list and revoke against a
// ckptguardd registry over HTTP. Pull verifies before it writes: the
// model-signing bundle must verify with a trusted key (--key, or the keys
// pinned for the registry on first use), sign exactly the digest, and name
// the name, tag and registry asked for; the record and the key must not be
// revoked; the bytes must hash to the digest. Else nothing is written.
#include "registry_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "ckptguard/atomic_file.h"
#include "ckptguard/daemon/client.h"
#include "ckptguard/printable.h"
#include "ckptguard/signing/model_signing.h"
#include "cli_util.h"

namespace ckptguard::cli {
namespace {

using nlohmann::json;
using daemon::RegistryClient;
using daemon::Response;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string Encode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

bool IsSha256(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// ServerError: the "error" field of a JSON error answer, or the status.
std::string ServerError(const Response& r) {
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    // The server's words: escaped for the terminal (a hostile registry
    // cannot drive it).
    return "HTTP " + std::to_string(r.status) + ": " + Printable(j["error"].get<std::string>());
  }
  return "HTTP " + std::to_string(r.status);
}

// Progress on stderr when it is a terminal and the transfer is large.
std::function<void(uint64_t, uint64_t)> ProgressFor(const std::string& label) {
  if (!::isatty(STDERR_FILENO)) return {};
  return [label, last = -1](uint64_t done, uint64_t total) mutable {
    if (total < (uint64_t{16} << 20)) return;
    const int pct = static_cast<int>(done * 100 / total);
    if (pct == last) return;
    last = pct;
    std::cerr << "\r" << label << ": " << pct << "% (" << (done >> 20) << " / " << (total >> 20) << " MiB)"
              << (done == total ? "\n" : "") << std::flush;
  };
}

Result<RegistryClient> MakeClient(const RegistryFlags& flags, const std::string& label) {
  daemon::ClientOptions options;
  options.url = !flags.url.empty() ? flags.url : !Env("CKPTGUARD_REGISTRY").empty() ? Env("CKPTGUARD_REGISTRY")
                                                                                       : options.url;
  options.token = !flags.token.empty() ? flags.token : Env("CKPTGUARD_TOKEN");
  options.ca_file = !flags.ca_file.empty() ? flags.ca_file : Env("CKPTGUARD_CA_FILE");
  options.insecure = flags.insecure;
  options.timeout = std::chrono::seconds(std::max(1, flags.timeout_seconds));
  options.progress = ProgressFor(label);
  return RegistryClient::Create(std::move(options));
}

void PrintFindings(const json& record) {
  for (const auto& f : record.value("findings", json::array())) {
    std::cout << "  [" << Printable(f.value("severity", "")) << "] " << Printable(f.value("rule", "")) << " at byte "
              << f.value("offset", uint64_t{0});
    const std::string entry = f.value("entry", "");
    if (!entry.empty()) std::cout << " (" << Printable(entry) << ")";
    std::cout << ": " << Printable(f.value("message", "")) << "\n";
  }
}

int Push(const RegistryFlags& flags) {
  int worst = kExitOk;
  json results = json::array();
  for (const std::string& file : flags.files) {
    const std::string name = flags.name.empty() ? std::filesystem::path(file).filename().string() : flags.name;
    auto client = MakeClient(flags, "pushing " + file);
    if (!client) {
      ReportError(file, client.error());
      return kExitError;
    }
    auto response = client->SendFile(
        "POST", "/v1/checkpoints?name=" + Encode(name) + "&tag=" + Encode(flags.tag) + (flags.force ? "&force=1" : ""),
        file);
    if (!response) {
      ReportError(file, response.error());
      worst = kExitError;
      continue;
    }
    json record = json::parse(response->body, nullptr, false);
    if ((response->status != 200 && response->status != 201 && response->status != 422) || !record.is_object()) {
      std::cerr << "ckptguard: " << file << ": the registry refused the push: " << ServerError(*response) << "\n";
      worst = kExitError;
      continue;
    }
    if (flags.json) {
      record["path"] = file;
      results.push_back(record);
    } else if (response->status == 200) {
      std::cout << file << ": already stored as " << Printable(record.value("name", "")) << ":" << Printable(record.value("tag", ""))
                << " sha256 " << Printable(record.value("sha256", "")) << " (same content; nothing new)\n";
    } else if (response->status == 201) {
      if (record.contains("moved_from")) {
        std::cout << file << ": moved tag " << Printable(record.value("name", "")) << ":" << Printable(record.value("tag", "")) << " from sha256 "
                  << Printable(record.value("moved_from", "")) << "\n";
      }
      std::cout << file << ": stored as " << Printable(record.value("name", "")) << ":" << Printable(record.value("tag", ""))
                << " sha256 " << Printable(record.value("sha256", "")) << ", signed by key " << Printable(record.value("key_id", "")).substr(0, 16)
                << "\n";
    } else {
      std::cout << file << ": REJECTED (verdict " << Printable(record.value("verdict", "")) << "), sha256 "
                << Printable(record.value("sha256", "")) << "\n";
      PrintFindings(record);
    }
    if (response->status == 422 && worst == kExitOk) worst = kExitFindings;
  }
  if (flags.json) std::cout << Stamp(json{{"files", std::move(results)}}, "registry push").dump(2) << "\n";
  return worst;
}

// SplitPemBundle: the PUBLIC KEY blocks of a PEM text, each parsed.
Result<std::vector<signing::PublicKey>> ParseKeys(const std::string& text, const std::string& where) {
  std::vector<signing::PublicKey> keys;
  const std::string begin = "-----BEGIN PUBLIC KEY-----";
  const std::string end = "-----END PUBLIC KEY-----";
  size_t at = 0;
  while ((at = text.find(begin, at)) != std::string::npos && keys.size() < 64) {
    const size_t stop = text.find(end, at);
    if (stop == std::string::npos) break;
    auto key = signing::PublicKey::FromPem(text.substr(at, stop + end.size() - at) + "\n");
    if (!key) {
      Error e = key.error();
      e.where = where;
      return std::unexpected(e);
    }
    keys.push_back(std::move(*key));
    at = stop + end.size();
  }
  if (keys.empty()) return MakeError(ErrorCode::kMalformed, 0, "no public key found", where);
  return keys;
}

// ------------------------------------------------------------ known registries
//
// Trust on first use, as SSH's known_hosts: the first pull from a registry
// URL without --key pins the registry's id and the keys it presents; later
// pulls trust only those keys and refuse another id. A key the registry
// presents later (a rotation) is pinned only with --accept-new-key. The file
// is JSON, written atomically, mode 0600, in a 0700 folder:
//   {"registries": [{"url", "registry_id", "registry_name",
//                    "keys": [{"key_id", "public_pem", "pinned_at"}]}]}

struct PinnedKey {
  std::string key_id;
  std::string public_pem;
  int64_t pinned_at = 0;
};

struct KnownRegistry {
  std::string url;
  std::string registry_id;
  std::string registry_name;
  std::vector<PinnedKey> keys;
};

std::string DefaultKnownKeysPath() {
  const std::string xdg = Env("XDG_CONFIG_HOME");
  if (!xdg.empty() && xdg.front() == '/') return xdg + "/ckptguard/known_registries";
  const std::string home = Env("HOME");
  if (home.empty()) return "";
  return home + "/.config/ckptguard/known_registries";
}

std::string NormalUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// LoadKnown reads the file; a missing file is an empty list, anything
// unreadable or malformed is an error (never silently "nothing pinned").
Result<std::vector<KnownRegistry>> LoadKnown(const std::string& path) {
  std::vector<KnownRegistry> out;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return out;
  constexpr uintmax_t kMaxKnownBytes = uintmax_t{4} << 20;
  if (std::filesystem::file_size(path, ec) > kMaxKnownBytes || ec) {
    return MakeError(ErrorCode::kLimitExceeded, 0, "the known-registries file is unreadable or larger than 4 MiB", path);
  }
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("registries") || !j["registries"].is_array()) {
    return MakeError(ErrorCode::kMalformed, 0, "the known-registries file is not what ckptguard writes", path);
  }
  for (const auto& r : j["registries"]) {
    if (!r.is_object()) continue;
    KnownRegistry known{r.value("url", ""), r.value("registry_id", ""), r.value("registry_name", ""), {}};
    for (const auto& k : r.value("keys", json::array())) {
      if (k.is_object()) known.keys.push_back({k.value("key_id", ""), k.value("public_pem", ""), k.value("pinned_at", int64_t{0})});
    }
    out.push_back(std::move(known));
  }
  return out;
}

Status SaveKnown(const std::string& path, const std::vector<KnownRegistry>& known) {
  json list = json::array();
  for (const KnownRegistry& r : known) {
    json keys = json::array();
    for (const PinnedKey& k : r.keys) keys.push_back({{"key_id", k.key_id}, {"public_pem", k.public_pem}, {"pinned_at", k.pinned_at}});
    list.push_back({{"url", r.url}, {"registry_id", r.registry_id}, {"registry_name", r.registry_name}, {"keys", keys}});
  }
  const std::string text = json{{"registries", list}}.dump(2) + "\n";
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  if (!folder.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(folder, ec)) {
      std::filesystem::create_directories(folder, ec);
      if (ec) return MakeError(ErrorCode::kIo, 0, "cannot create the folder: " + ec.message(), folder.string());
      ::chmod(folder.c_str(), 0700);
    }
  }
  CKG_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  if (::chmod(file.temp_path().c_str(), 0600) != 0) {
    return MakeError(ErrorCode::kIo, 0, "cannot make the known-registries file owner-only", path);
  }
  CKG_TRY(file.Write(Bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size())));
  return file.Commit();
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// BundleKeyHint: the key id a bundle names (verificationMaterial.publicKey.hint), "" when none.
std::string BundleKeyHint(const std::string& bundle) {
  json j = json::parse(bundle, nullptr, false);
  if (!j.is_object()) return "";
  const json* vm = j.contains("verificationMaterial") ? &j["verificationMaterial"] : nullptr;
  if (vm == nullptr || !vm->is_object() || !vm->contains("publicKey") || !(*vm)["publicKey"].is_object()) return "";
  const json& pk = (*vm)["publicKey"];
  return pk.contains("hint") && pk["hint"].is_string() ? pk["hint"].get<std::string>() : "";
}

bool ValidRefPart(const std::string& s, bool is_name) {
  if (is_name && s.empty()) return false;
  if (s.size() > 200) return false;
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-' || (is_name && c == '/'))) return false;
  }
  return true;
}

// Refuse prints why the pull was refused (exit 1: nothing written).
int Refuse(const std::string& ref, const std::string& why) {
  std::cerr << "ckptguard: " << Printable(ref) << ": refused: " << Printable(why) << "; nothing written\n";
  return kExitFindings;
}

int Pull(const RegistryFlags& flags) {
  auto client = MakeClient(flags, "pulling " + flags.ref);
  if (!client) {
    ReportError(flags.ref, client.error());
    return kExitError;
  }
  const std::string& ref = flags.ref;
  const std::string url = NormalUrl(client->options().url);
  // What is asked for: a digest, or NAME (any tag) or NAME:TAG.
  const bool by_digest = IsSha256(ref);
  std::string want_name, want_tag;
  bool has_tag = false;
  if (!by_digest) {
    const size_t colon = ref.rfind(':');
    want_name = ref.substr(0, colon);
    has_tag = colon != std::string::npos;
    if (has_tag) want_tag = ref.substr(colon + 1);
    if (!ValidRefPart(want_name, true) || !ValidRefPart(want_tag, false)) {
      std::cerr << "ckptguard: " << ref << ": not a sha256, NAME or NAME:TAG\n";
      return kExitError;
    }
  }
  auto get = [&](const std::string& target) -> Result<Response> { return client->Call("GET", target); };
  // get_json: GET `target` as a JSON object (with an array `array_field`
  // when given); on any failure the error is printed, prefixed by `context`.
  auto get_json = [&](const std::string& target, const char* array_field,
                      const std::string& context) -> std::optional<json> {
    auto response = get(target);
    if (!response) {
      ReportError(ref, response.error());
      return std::nullopt;
    }
    json j = json::parse(response->body, nullptr, false);
    if (response->status != 200 || !j.is_object() ||
        (array_field != nullptr && !(j.contains(array_field) && j[array_field].is_array()))) {
      std::cerr << "ckptguard: " << ref << ": " << context << ServerError(*response) << "\n";
      return std::nullopt;
    }
    return j;
  };

  // The registry's identity as it answers now.
  std::string server_id, server_name;
  {
    auto identity = get("/v1/registry");
    if (!identity) {
      ReportError(ref, identity.error());
      return kExitError;
    }
    json j = json::parse(identity->body, nullptr, false);
    if (identity->status == 200 && j.is_object()) {
      server_id = j.value("registry_id", "");
      server_name = j.value("registry_name", "");
    }
  }

  // Trusted keys and the registry id signatures must name.
  std::vector<signing::PublicKey> trusted;
  std::string expected_id;
  std::string trust_source;
  std::string known_path;
  std::vector<KnownRegistry> known;
  KnownRegistry* entry = nullptr;
  bool first_use = false;
  std::vector<signing::PublicKey> presented;  // keys the registry presents that are not pinned
  if (!flags.keys.empty()) {
    for (const std::string& path : flags.keys) {
      auto key = signing::PublicKey::LoadFile(path);
      if (!key) {
        ReportError(path, key.error());
        return kExitError;
      }
      trusted.push_back(std::move(*key));
    }
    expected_id = !flags.registry_id.empty() ? flags.registry_id : server_id;
    trust_source = "--key";
  } else {
    known_path = !flags.known_keys.empty() ? flags.known_keys : DefaultKnownKeysPath();
    if (known_path.empty()) {
      std::cerr << "ckptguard: " << ref << ": no --key and nowhere to pin keys (set HOME, XDG_CONFIG_HOME or --known-keys)\n";
      return kExitError;
    }
    auto loaded = LoadKnown(known_path);
    if (!loaded) {
      ReportError(known_path, loaded.error());
      return kExitError;
    }
    known = std::move(*loaded);
    for (KnownRegistry& r : known) {
      if (NormalUrl(r.url) == url) entry = &r;
    }
    if (server_id.empty()) {
      return Refuse(ref, "the registry at " + url + " does not say its id (GET /v1/registry); keys cannot be pinned to it");
    }
    if (entry != nullptr && entry->registry_id != server_id) {
      return Refuse(ref, "the registry at " + url + " says its id is " + server_id + ", but " + entry->registry_id +
                             " is pinned for it in " + known_path +
                             " (another registry answers at this address?); if that is expected, remove its entry");
    }
    auto keys = get("/v1/keys");
    if (!keys) {
      ReportError(ref, keys.error());
      return kExitError;
    }
    if (keys->status != 200) {
      std::cerr << "ckptguard: " << ref << ": cannot fetch the registry's keys: " << ServerError(*keys) << "\n";
      return kExitError;
    }
    auto parsed = ParseKeys(keys->body, url + "/v1/keys");
    if (!parsed) {
      ReportError(ref, parsed.error());
      return kExitError;
    }
    if (entry == nullptr) {
      first_use = true;
      known.push_back({url, server_id, server_name, {}});
      entry = &known.back();
      for (const auto& key : *parsed) {
        entry->keys.push_back({key.KeyId(), key.Pem(), NowSeconds()});
        trusted.push_back(key);
      }
      trust_source = "keys pinned now, on first use, in " + known_path;
    } else {
      for (const PinnedKey& pin : entry->keys) {
        auto key = signing::PublicKey::FromPem(pin.public_pem);
        if (!key || key->KeyId() != pin.key_id) {
          std::cerr << "ckptguard: " << known_path << ": a pinned key of " << url << " is damaged\n";
          return kExitError;
        }
        trusted.push_back(std::move(*key));
      }
      for (const auto& key : *parsed) {
        const bool pinned = std::any_of(trusted.begin(), trusted.end(),
                                        [&](const signing::PublicKey& t) { return t.KeyId() == key.KeyId(); });
        if (!pinned) presented.push_back(key);
      }
      trust_source = "the keys pinned for " + url + " in " + known_path;
    }
    expected_id = entry->registry_id;
  }

  // Resolve NAME[:TAG] to the row that holds it: the newest stored or
  // revoked one (a rejected push never takes a tag). A revoked newest
  // version is refused, never replaced by an older one.
  std::string sha = by_digest ? ref : std::string();
  std::string resolved_tag = want_tag;
  if (!by_digest) {
    const auto list = get_json(
        "/v1/checkpoints?limit=100&name=" + Encode(want_name) + (has_tag ? "&tag=" + Encode(want_tag) : ""),
        "checkpoints", "");
    if (!list) return kExitError;
    const json* holder = nullptr;
    for (const auto& row : (*list)["checkpoints"]) {
      if (!row.is_object() || row.value("status", "") == "rejected") continue;
      holder = &row;
      break;
    }
    if (holder == nullptr) {
      std::cerr << "ckptguard: " << ref << ": no stored checkpoint is named so (NAME or NAME:TAG, or a sha256)\n";
      return kExitError;
    }
    sha = holder->value("sha256", "");
    resolved_tag = holder->value("tag", "");
    if (!IsSha256(sha)) return Refuse(ref, "the registry named no valid digest for it");
    if (holder->value("status", "") == "revoked" && !flags.allow_revoked) {
      const json rev = holder->value("revoked", json::object());
      return Refuse(ref, "its newest version (sha256 " + sha + ") was revoked by " + rev.value("by", "?") + ": " +
                             rev.value("reason", "?") + " (older versions are not served in its place)");
    }
  }
  const std::string row_query = by_digest ? "" : "?name=" + Encode(want_name) + "&tag=" + Encode(resolved_tag);

  // The record: checkpoint revocation as the registry says it.
  {
    const auto record = get_json("/v1/checkpoints/" + sha + row_query, nullptr, "");
    if (!record) return kExitError;
    const json& j = *record;
    if (j.value("sha256", "") != sha) return Refuse(ref, "the registry's record names another digest than " + sha);
    const std::string status = j.value("status", "");
    if (status == "revoked" && !flags.allow_revoked) {
      const json rev = j.value("revoked", json::object());
      return Refuse(ref, "checkpoint " + sha + " was revoked by " + rev.value("by", "?") + ": " + rev.value("reason", "?"));
    }
    if (status != "stored" && status != "revoked") {
      return Refuse(ref, "checkpoint " + sha + " has status '" + status + "', not stored");
    }
  }

  auto bundle = get("/v1/checkpoints/" + sha + "/signature" + row_query);
  if (!bundle) {
    ReportError(ref, bundle.error());
    return kExitError;
  }
  if (bundle->status != 200) {
    std::cerr << "ckptguard: " << ref << ": no signature: " << ServerError(*bundle) << "\n";
    return kExitError;
  }
  std::vector<std::string> newly_pinned;
  auto statement = signing::VerifyBundle(bundle->body, trusted);
  if (!statement && flags.keys.empty() && !first_use) {
    const std::string hint = BundleKeyHint(bundle->body);
    const bool hint_pinned = std::any_of(trusted.begin(), trusted.end(),
                                         [&](const signing::PublicKey& t) { return t.KeyId() == hint; });
    if (!hint_pinned) {
      const auto offered = std::find_if(presented.begin(), presented.end(),
                                        [&](const signing::PublicKey& k) { return k.KeyId() == hint; });
      std::string pinned_ids;
      for (const PinnedKey& k : entry->keys) pinned_ids += (pinned_ids.empty() ? "" : ", ") + k.key_id.substr(0, 16);
      if (offered == presented.end() || !flags.accept_new_key) {
        return Refuse(ref, "the signature is by key " + (hint.empty() ? std::string("(unnamed)") : hint) +
                               ", which is not pinned for " + url + " in " + known_path + " (pinned: " + pinned_ids +
                               ")" +
                               (offered != presented.end()
                                    ? "; the registry presents it now: if it rotated its key, confirm with its "
                                      "operator and re-run with --accept-new-key"
                                    : "; the registry does not even present it"));
      }
      entry->keys.push_back({offered->KeyId(), offered->Pem(), NowSeconds()});
      newly_pinned.push_back(offered->KeyId());
      trusted.push_back(*offered);
      statement = signing::VerifyBundle(bundle->body, trusted);
    }
  }
  if (!statement) return Refuse(ref, "the signature does not verify: " + statement.error().ToString());
  if (statement->resources.size() != 1 || statement->resources[0].name != "." ||
      statement->resources[0].sha256_hex != sha) {
    return Refuse(ref, "the signature covers other content than " + sha);
  }
  // The binding: what was signed is what was asked, from this registry.
  const auto& claim = statement->registry_claim;
  if (!claim) {
    if (!by_digest && !flags.allow_unbound) {
      return Refuse(ref, "the signature names no checkpoint name, tag or registry (a bundle from before registry "
                         "binding); pull it by digest, or pass --allow-unbound");
    }
  } else {
    if (claim->registry_id != expected_id) {
      return Refuse(ref, "the signature is for registry " + claim->registry_id +
                             (claim->registry_name.empty() ? "" : " (" + claim->registry_name + ")") + ", not " +
                             (expected_id.empty() ? std::string("(this registry says no id)") : expected_id) + " at " + url);
    }
    if (!by_digest && claim->name != want_name) {
      return Refuse(ref, "the signature is for name '" + claim->name + "', not '" + want_name + "'");
    }
    if (!by_digest && claim->tag != resolved_tag) {
      return Refuse(ref, "the signature is for tag '" + claim->tag + "', not '" + resolved_tag + "'");
    }
  }
  // Key revocation as the registry says it (a pinned or --key key may have
  // been revoked since).
  {
    const auto states = get_json("/v1/keys?format=json", "keys", "cannot check key revocation: ");
    if (!states) return kExitError;
    for (const auto& k : (*states)["keys"]) {
      if (k.is_object() && k.value("key_id", "") == statement->key_id && k.value("state", "") == "revoked") {
        return Refuse(ref, "the signature is by key " + statement->key_id + ", which the registry revoked: " +
                               k.value("revoked_reason", "?"));
      }
    }
  }
  if (!known_path.empty() && (first_use || !newly_pinned.empty())) {
    if (Status saved = SaveKnown(known_path, known); !saved) {
      ReportError(known_path, saved.error());
      return kExitError;
    }
    if (first_use) {
      std::cout << "pinned registry " << Printable(url) << " (id " << Printable(entry->registry_id)
                << (entry->registry_name.empty() ? "" : ", " + Printable(entry->registry_name)) << ") on first use in " << known_path
                << ":\n";
      for (const PinnedKey& k : entry->keys) std::cout << "  key " << Printable(k.key_id) << "\n";
    }
    for (const std::string& id : newly_pinned) {
      std::cout << "pinned new key " << Printable(id) << " for " << url << " (--accept-new-key) in " << known_path << "\n";
    }
  }

  auto out = AtomicFile::Create(flags.out);
  if (!out) {
    ReportError(flags.out, out.error());
    return kExitError;
  }
  std::string actual;
  auto response = client->Download("/v1/checkpoints/" + sha + "/blob" + (flags.allow_revoked ? "?allow_revoked=1" : ""),
                                   *out, actual);
  if (!response) {
    ReportError(ref, response.error());
    return kExitError;
  }
  if (response->status != 200) {
    std::cerr << "ckptguard: " << ref << ": " << ServerError(*response) << "\n";
    return response->status == 410 ? kExitFindings : kExitError;
  }
  if (actual != sha) {
    return Refuse(ref, "the downloaded bytes hash to " + actual + ", not " + sha);
  }
  auto committed = out->Commit();
  if (!committed) {
    ReportError(flags.out, committed.error());
    return kExitError;
  }
  const std::string sig_path = flags.signature_out.empty() ? flags.out + ".sig" : flags.signature_out;
  auto sig_written = WriteFileAtomically(
      sig_path, Bytes(reinterpret_cast<const uint8_t*>(bundle->body.data()), bundle->body.size()));
  if (!sig_written) {
    ReportError(sig_path, sig_written.error());
    return kExitError;
  }
  std::cout << "pulled " << ref << " (sha256 " << sha << ") to " << flags.out << "\nsignature verified with key "
            << statement->key_id << ", trusted from " << trust_source;
  if (claim) {
    std::cout << "; it names " << Printable(claim->name) << ":" << Printable(claim->tag) << " at registry "
              << Printable(claim->registry_id);
  } else {
    std::cout << "; it names no name, tag or registry (an unbound bundle)";
  }
  std::cout << "; bundle written to " << sig_path << "\n";
  return kExitOk;
}

int Verify(const RegistryFlags& flags) {
  int worst = kExitOk;
  json reports = json::array();
  for (const std::string& file : flags.files) {
    auto client = MakeClient(flags, "verifying " + file);
    if (!client) {
      ReportError(file, client.error());
      return kExitError;
    }
    auto response = client->SendFile("POST", "/v1/verify", file);
    if (!response) {
      ReportError(file, response.error());
      worst = kExitError;
      continue;
    }
    json report = json::parse(response->body, nullptr, false);
    if (response->status != 200 || !report.is_object()) {
      std::cerr << "ckptguard: " << file << ": " << ServerError(*response) << "\n";
      worst = kExitError;
      continue;
    }
    const bool verified = report.value("verified", false);
    if (flags.json) {
      report["path"] = file;
      reports.push_back(std::move(report));
    } else if (verified) {
      std::cout << file << ": verified: catalogued as " << Printable(report.value("name", "")) << ":" << Printable(report.value("tag", ""))
                << ", unchanged, signed by key " << Printable(report.value("key_id", "")).substr(0, 16) << " ("
                << Printable(report.value("key_state", "")) << ")\n";
    } else {
      std::cout << file << ": NOT VERIFIED: " << Printable(report.value("detail", "")) << "\n";
    }
    if (!verified && worst == kExitOk) worst = kExitFindings;
  }
  if (flags.json) std::cout << Stamp(json{{"files", std::move(reports)}}, "registry verify").dump(2) << "\n";
  return worst;
}

int List(const RegistryFlags& flags) {
  auto client = MakeClient(flags, "list");
  if (!client) {
    ReportError(flags.url, client.error());
    return kExitError;
  }
  std::string target = "/v1/checkpoints?limit=" + std::to_string(flags.limit);
  if (!flags.name.empty()) target += "&name=" + Encode(flags.name);
  if (!flags.tag.empty()) target += "&tag=" + Encode(flags.tag);
  if (!flags.status.empty()) target += "&status=" + Encode(flags.status);
  auto response = client->Call("GET", target);
  if (!response) {
    ReportError(client->options().url, response.error());
    return kExitError;
  }
  json list = json::parse(response->body, nullptr, false);
  if (response->status != 200 || !list.is_object()) {
    std::cerr << "ckptguard: " << ServerError(*response) << "\n";
    return kExitError;
  }
  if (flags.json) {
    std::cout << Stamp(std::move(list), "registry list").dump(2) << "\n";
    return kExitOk;
  }
  for (const auto& r : list.value("checkpoints", json::array())) {
    std::cout << Printable(r.value("sha256", "")).substr(0, 16) << "  " << Printable(r.value("status", "")) << "\t" << Printable(r.value("name", ""))
              << ":" << Printable(r.value("tag", "")) << "\t" << r.value("size", uint64_t{0}) << " B\t" << Printable(r.value("format", ""))
              << "\t" << Printable(r.value("verdict", "")) << "\t" << Printable(r.value("uploader", "")) << "\n";
  }
  return kExitOk;
}

int Revoke(const RegistryFlags& flags) {
  auto client = MakeClient(flags, "revoke");
  if (!client) {
    ReportError(flags.ref, client.error());
    return kExitError;
  }
  auto response = client->Call("POST", "/v1/checkpoints/" + flags.ref + "/revoke", json{{"reason", flags.reason}}.dump());
  if (!response) {
    ReportError(flags.ref, response.error());
    return kExitError;
  }
  if (response->status != 200) {
    std::cerr << "ckptguard: " << flags.ref << ": " << ServerError(*response) << "\n";
    return kExitError;
  }
  std::cout << "revoked " << flags.ref << "\n";
  return kExitOk;
}

}  // namespace

void AddRegistryCommand(CLI::App& app, RegistryFlags& flags) {
  CLI::App* cmd = app.add_subcommand("registry", "Push to, pull from and verify against a ckptguardd registry");
  cmd->require_subcommand(1);
  cmd->add_option("--url", flags.url,
                  "the registry, https://HOST:PORT (or http:// on loopback) (default $CKPTGUARD_REGISTRY, else "
                  "http://127.0.0.1:8470)");
  cmd->add_option("--token", flags.token, "bearer token for writes (default $CKPTGUARD_TOKEN)");
  cmd->add_option("--ca-file", flags.ca_file,
                  "https: trust the CAs in this PEM file instead of the system store (default $CKPTGUARD_CA_FILE)");
  cmd->add_flag("--insecure", flags.insecure,
                "allow plain http:// to an address that is not loopback (tokens and files travel in the clear)");
  cmd->add_option("--timeout", flags.timeout_seconds, "seconds without progress before giving up")->capture_default_str();
  cmd->footer(R"(The registry scans every push by content and rejects dangerous files (recorded
with their findings); accepted files are signed (OpenSSF model-signing v1.0,
key mode) and catalogued with their state-dict manifest.

Exit status: 0 done (stored / verified), 1 rejected, not verified or revoked,
2 an error (unreachable registry, bad token, unreadable file).

Examples:
  ckptguardd --data-dir /srv/ckpt token create ci      # on the registry host
  export CKPTGUARD_TOKEN=ckg_...  CKPTGUARD_REGISTRY=http://127.0.0.1:8470
  ckptguard registry push model.pt --name resnet50 --tag v3
  ckptguard registry pull resnet50:v3 --out model.pt     # pins the registry's keys on first use
  ckptguard registry pull resnet50:v3 --out model.pt --key registry-key.pem
  ckptguard registry verify model.pt
  ckptguard registry list --name resnet50)");

  flags.push = cmd->add_subcommand("push", "Upload files; each is scanned, then stored and signed, or rejected");
  flags.push->add_option("FILE", flags.files, "model files")->required()->check(CLI::ExistingFile);
  flags.push->add_option("--name", flags.name, "catalog name (default: the file name)");
  flags.push->add_option("--tag", flags.tag, "version or tag, e.g. v3 or epoch-40");
  flags.push->add_flag("--json", flags.json, "one JSON document: files[] (the catalog record of each push, with its path)");
  flags.push->add_flag("--force", flags.force,
                       "move NAME:TAG if it holds other content (tags are immutable unless the server runs with "
                       "--allow-retag; the move is audited)");

  flags.pull = cmd->add_subcommand("pull", "Download a stored checkpoint, verified before it is written");
  flags.pull->add_option("REF", flags.ref, "a sha256, or NAME or NAME:TAG (the newest stored)")->required();
  flags.pull->add_option("--out", flags.out, "where to write the file (atomically)")->required();
  flags.pull->add_option("--signature", flags.signature_out, "where to write the signature bundle (default OUT.sig)");
  flags.pull->add_option("--key", flags.keys,
                         "trusted public key PEM (repeatable); default: the keys pinned for the registry on first use");
  flags.pull->add_flag("--allow-revoked", flags.allow_revoked, "fetch a revoked checkpoint anyway");
  flags.pull->add_option("--known-keys", flags.known_keys,
                         "the known-registries file (default $XDG_CONFIG_HOME/ckptguard/known_registries, else "
                         "~/.config/ckptguard/known_registries)");
  flags.pull->add_flag("--accept-new-key", flags.accept_new_key,
                       "pin a key the registry presents that is not pinned yet (after a rotation you confirmed)");
  flags.pull->add_flag("--allow-unbound", flags.allow_unbound,
                       "accept a NAME[:TAG] whose bundle names no name, tag or registry (signed before binding)");
  flags.pull->add_option("--registry-id", flags.registry_id,
                         "with --key: the registry id signatures must name (default: what the registry says)");

  flags.verify = cmd->add_subcommand("verify", "Is this file catalogued, unchanged and signed by a trusted key?");
  flags.verify->add_option("FILE", flags.files, "files to check (their bytes are sent)")->required()->check(CLI::ExistingFile);
  flags.verify->add_flag("--json", flags.json, "one JSON document: files[] (path, verified, name, tag, key_id, detail...)");

  flags.list = cmd->add_subcommand("list", "List catalogued checkpoints, newest first");
  flags.list->add_option("--name", flags.name, "only this name");
  flags.list->add_option("--tag", flags.tag, "only this tag");
  flags.list->add_option("--status", flags.status, "stored, rejected or revoked")
      ->check(CLI::IsMember({"stored", "rejected", "revoked"}));
  flags.list->add_option("--limit", flags.limit, "at most this many (<= 1000)")->capture_default_str();
  flags.list->add_flag("--json", flags.json, "one JSON document: checkpoints[] as the registry lists them");

  flags.revoke = cmd->add_subcommand("revoke", "Revoke a stored checkpoint (needs an admin token)");
  flags.revoke->add_option("SHA256", flags.ref, "the checkpoint's digest")->required();
  flags.revoke->add_option("--reason", flags.reason, "why (recorded in the catalog and audit log)")->required();
  // --url, --token, --ca-file, --insecure and --timeout may also follow the subcommand.
  for (CLI::App* sub : {flags.push, flags.pull, flags.verify, flags.list, flags.revoke}) sub->fallthrough();
}

int RunRegistry(RegistryFlags& flags) {
  if (flags.push->parsed()) return Push(flags);
  if (flags.pull->parsed()) return Pull(flags);
  if (flags.verify->parsed()) return Verify(flags);
  if (flags.list->parsed()) return List(flags);
  if (flags.revoke->parsed()) return Revoke(flags);
  return kExitError;
}

}  // namespace ckptguard::cli

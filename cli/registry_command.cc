// `ckptguard registry ...`: push, pull, verify, list and revoke against a
// ckptguardd registry over HTTP. Pull verifies before it writes: the bytes
// must hash to the digest asked for and the model-signing bundle must verify
// with a trusted key, else nothing is written.
#include "registry_command.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "ckptguard/atomic_file.h"
#include "ckptguard/daemon/client.h"
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
    return "HTTP " + std::to_string(r.status) + ": " + j["error"].get<std::string>();
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
    std::cout << "  [" << f.value("severity", "") << "] " << f.value("rule", "") << " at byte "
              << f.value("offset", uint64_t{0});
    const std::string entry = f.value("entry", "");
    if (!entry.empty()) std::cout << " (" << entry << ")";
    std::cout << ": " << f.value("message", "") << "\n";
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
    auto response = client->SendFile("POST", "/v1/checkpoints?name=" + Encode(name) + "&tag=" + Encode(flags.tag), file);
    if (!response) {
      ReportError(file, response.error());
      worst = kExitError;
      continue;
    }
    json record = json::parse(response->body, nullptr, false);
    if ((response->status != 201 && response->status != 422) || !record.is_object()) {
      std::cerr << "ckptguard: " << file << ": the registry refused the push: " << ServerError(*response) << "\n";
      worst = kExitError;
      continue;
    }
    if (flags.json) {
      record["path"] = file;
      results.push_back(record);
    } else if (response->status == 201) {
      std::cout << file << ": stored as " << record.value("name", "") << ":" << record.value("tag", "")
                << " sha256 " << record.value("sha256", "") << ", signed by key " << record.value("key_id", "").substr(0, 16)
                << "\n";
    } else {
      std::cout << file << ": REJECTED (verdict " << record.value("verdict", "") << "), sha256 "
                << record.value("sha256", "") << "\n";
      PrintFindings(record);
    }
    if (response->status == 422 && worst == kExitOk) worst = kExitFindings;
  }
  if (flags.json) std::cout << results.dump(2) << "\n";
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

int Pull(const RegistryFlags& flags) {
  auto client = MakeClient(flags, "pulling " + flags.ref);
  if (!client) {
    ReportError(flags.ref, client.error());
    return kExitError;
  }
  std::string sha = flags.ref;
  std::string label = flags.ref;
  if (!IsSha256(sha)) {
    const size_t colon = flags.ref.rfind(':');
    const std::string name = flags.ref.substr(0, colon);
    const std::string tag = colon == std::string::npos ? "" : flags.ref.substr(colon + 1);
    auto found = client->Call("GET", "/v1/checkpoints?status=stored&limit=1&name=" + Encode(name) +
                                         (tag.empty() ? "" : "&tag=" + Encode(tag)));
    if (!found) {
      ReportError(flags.ref, found.error());
      return kExitError;
    }
    json list = json::parse(found->body, nullptr, false);
    if (found->status != 200 || !list.is_object() || !list.contains("checkpoints")) {
      std::cerr << "ckptguard: " << flags.ref << ": " << ServerError(*found) << "\n";
      return kExitError;
    }
    if (list["checkpoints"].empty()) {
      std::cerr << "ckptguard: " << flags.ref << ": no stored checkpoint is named so (NAME or NAME:TAG, or a sha256)\n";
      return kExitError;
    }
    sha = list["checkpoints"][0].value("sha256", "");
  }
  // Trusted keys: pinned with --key, else the registry's own (said so).
  std::vector<signing::PublicKey> trusted;
  std::string trust_source;
  if (!flags.keys.empty()) {
    for (const std::string& path : flags.keys) {
      auto key = signing::PublicKey::LoadFile(path);
      if (!key) {
        ReportError(path, key.error());
        return kExitError;
      }
      trusted.push_back(std::move(*key));
    }
    trust_source = "--key";
  } else {
    auto keys = client->Call("GET", "/v1/keys");
    if (!keys) {
      ReportError(flags.ref, keys.error());
      return kExitError;
    }
    if (keys->status != 200) {
      std::cerr << "ckptguard: " << flags.ref << ": cannot fetch the registry's keys: " << ServerError(*keys) << "\n";
      return kExitError;
    }
    auto parsed = ParseKeys(keys->body, client->options().url + "/v1/keys");
    if (!parsed) {
      ReportError(flags.ref, parsed.error());
      return kExitError;
    }
    trusted = std::move(*parsed);
    trust_source = "the registry's /v1/keys (pin keys with --key)";
  }
  auto bundle = client->Call("GET", "/v1/checkpoints/" + sha + "/signature");
  if (!bundle) {
    ReportError(flags.ref, bundle.error());
    return kExitError;
  }
  if (bundle->status != 200) {
    std::cerr << "ckptguard: " << flags.ref << ": no signature: " << ServerError(*bundle) << "\n";
    return kExitError;
  }
  auto statement = signing::VerifyBundle(bundle->body, trusted);
  if (!statement) {
    std::cerr << "ckptguard: " << flags.ref << ": the signature does not verify: " << statement.error().ToString() << "\n";
    return kExitFindings;
  }
  if (statement->resources.size() != 1 || statement->resources[0].name != "." ||
      statement->resources[0].sha256_hex != sha) {
    std::cerr << "ckptguard: " << flags.ref << ": the signature covers other content than " << sha << "\n";
    return kExitFindings;
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
    ReportError(flags.ref, response.error());
    return kExitError;
  }
  if (response->status != 200) {
    std::cerr << "ckptguard: " << flags.ref << ": " << ServerError(*response) << "\n";
    return response->status == 410 ? kExitFindings : kExitError;
  }
  if (actual != sha) {
    std::cerr << "ckptguard: " << flags.ref << ": the downloaded bytes hash to " << actual << ", not " << sha
              << "; nothing written\n";
    return kExitFindings;
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
  std::cout << "pulled " << label << " (sha256 " << sha << ") to " << flags.out << "\nsignature verified with key "
            << statement->key_id << ", trusted from " << trust_source << "; bundle written to " << sig_path << "\n";
  return kExitOk;
}

int Verify(const RegistryFlags& flags) {
  int worst = kExitOk;
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
      std::cout << report.dump() << "\n";
    } else if (verified) {
      std::cout << file << ": verified: catalogued as " << report.value("name", "") << ":" << report.value("tag", "")
                << ", unchanged, signed by key " << report.value("key_id", "").substr(0, 16) << " ("
                << report.value("key_state", "") << ")\n";
    } else {
      std::cout << file << ": NOT VERIFIED: " << report.value("detail", "") << "\n";
    }
    if (!verified && worst == kExitOk) worst = kExitFindings;
  }
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
    std::cout << list.dump(2) << "\n";
    return kExitOk;
  }
  for (const auto& r : list.value("checkpoints", json::array())) {
    std::cout << r.value("sha256", "").substr(0, 16) << "  " << r.value("status", "") << "\t" << r.value("name", "")
              << ":" << r.value("tag", "") << "\t" << r.value("size", uint64_t{0}) << " B\t" << r.value("format", "")
              << "\t" << r.value("verdict", "") << "\t" << r.value("uploader", "") << "\n";
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
  ckptguard registry pull resnet50:v3 --out model.pt --key registry-key.pem
  ckptguard registry verify model.pt
  ckptguard registry list --name resnet50)");

  flags.push = cmd->add_subcommand("push", "Upload files; each is scanned, then stored and signed, or rejected");
  flags.push->add_option("FILE", flags.files, "model files")->required()->check(CLI::ExistingFile);
  flags.push->add_option("--name", flags.name, "catalog name (default: the file name)");
  flags.push->add_option("--tag", flags.tag, "version or tag, e.g. v3 or epoch-40");
  flags.push->add_flag("--json", flags.json, "print the catalog records as JSON");

  flags.pull = cmd->add_subcommand("pull", "Download a stored checkpoint, verified before it is written");
  flags.pull->add_option("REF", flags.ref, "a sha256, or NAME or NAME:TAG (the newest stored)")->required();
  flags.pull->add_option("--out", flags.out, "where to write the file (atomically)")->required();
  flags.pull->add_option("--signature", flags.signature_out, "where to write the signature bundle (default OUT.sig)");
  flags.pull->add_option("--key", flags.keys, "trusted public key PEM (repeatable); default: the registry's keys");
  flags.pull->add_flag("--allow-revoked", flags.allow_revoked, "fetch a revoked checkpoint anyway");

  flags.verify = cmd->add_subcommand("verify", "Is this file catalogued, unchanged and signed by a trusted key?");
  flags.verify->add_option("FILE", flags.files, "files to check (their bytes are sent)")->required()->check(CLI::ExistingFile);
  flags.verify->add_flag("--json", flags.json, "one JSON report per line");

  flags.list = cmd->add_subcommand("list", "List catalogued checkpoints, newest first");
  flags.list->add_option("--name", flags.name, "only this name");
  flags.list->add_option("--tag", flags.tag, "only this tag");
  flags.list->add_option("--status", flags.status, "stored, rejected or revoked")
      ->check(CLI::IsMember({"stored", "rejected", "revoked"}));
  flags.list->add_option("--limit", flags.limit, "at most this many (<= 1000)")->capture_default_str();
  flags.list->add_flag("--json", flags.json, "print JSON");

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

// ckptguardd: the signed checkpoint registry. `ckptguardd --data-dir DIR`
// serves; `ckptguardd --data-dir DIR token|key|audit ...` administers the
// same data folder from the command line (the server may be running: the
// catalog is SQLite in WAL mode, or PostgreSQL with --catalog; only the
// server, or an admin command when none runs, holds DIR/lock and cleans up).
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include "ckptguard/atomic_file.h"
#include "ckptguard/daemon/registry.h"
#include "ckptguard/daemon/server.h"
#include "ckptguard/version.h"

namespace {

using namespace ckptguard;
using namespace ckptguard::daemon;

constexpr int kExitOk = 0;
constexpr int kExitError = 2;

int Fail(const std::string& what, const Error& error) {
  std::cerr << "ckptguardd: " << what << ": " << error.ToString() << "\n";
  return kExitError;
}

bool ParseListen(const std::string& listen, ServerOptions& options) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  options.host = listen.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[' && options.host.back() == ']') {
    options.host = options.host.substr(1, options.host.size() - 2);
  }
  try {
    const unsigned long port = std::stoul(listen.substr(colon + 1));
    if (port > 65535) return false;
    options.port = static_cast<uint16_t>(port);
  } catch (...) {
    return false;
  }
  return true;
}

// Field prints one audit field on one line whatever it holds: the audit log
// records what clients sent (paths, names), and a newline, tab or terminal
// escape in them must not forge a line or a column, nor drive the terminal.
// Backslash, tab, control characters and DEL become \\, \t, \xNN.
std::string Field(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ckptguardd: a signed checkpoint registry.\n"
      "Every upload is scanned by content (the same scanner as 'ckptguard scan'); dangerous files\n"
      "are rejected and recorded with their findings; accepted ones are signed (OpenSSF\n"
      "model-signing v1.0, key mode: 'model_signing verify key' accepts the bundles), stored by\n"
      "SHA-256 and catalogued with their state-dict manifest (in SQLite, DIR/catalog.db, or in\n"
      "PostgreSQL with --catalog). A fresh DIR just works: the database and an ECDSA signing key\n"
      "are created on first start. With the SQLite catalog, one server per data folder (it holds\n"
      "DIR/lock); with --catalog postgresql://..., several servers may share one data folder\n"
      "(on a shared filesystem) and one database. The token, key and audit commands work beside\n"
      "running servers.\n\n"
      "  ckptguardd --data-dir DIR --listen 127.0.0.1:8470     serve\n"
      "  ckptguardd --data-dir DIR token create ci             print a write token (last line)\n"
      "  ckptguardd --data-dir DIR key rotate                  new signing key; old ones still verify\n"
      "  ckptguardd --data-dir DIR --catalog postgresql://ckg@db.internal/registry   catalog on PostgreSQL\n"};
  app.set_version_flag("--version", std::string("ckptguardd ") + CKPTGUARD_VERSION);
  RegistryOptions registry_options;
  ServerOptions server_options;
  std::string listen = "127.0.0.1:8470";
  std::string port_file;
  std::string curve = "P-256";
  app.add_option("--data-dir", registry_options.data_dir,
                 "the registry's folder: catalog.db, blobs/, keys/ (created when missing)")
      ->required();
  app.add_option("--catalog", registry_options.catalog,
                 "where the catalog lives: sqlite:PATH (default sqlite:DIR/catalog.db) or a libpq URI,\n"
                 "postgresql://USER@HOST[:PORT]/DB[?sslmode=verify-full&...] (the database must exist;\n"
                 "the tables are created). Keep the password out of the command line: libpq reads\n"
                 "PGPASSWORD or ~/.pgpass. Blobs and keys stay in --data-dir.")
      ->default_str("sqlite:DIR/catalog.db");
  app.add_option("--catalog-attempts", registry_options.catalog_options.max_attempts,
                 "PostgreSQL catalog: times a transaction is run in all when it fails with a serialization\n"
                 "failure or deadlock (SQLSTATE 40001, 40P01) before the request fails")
      ->capture_default_str()
      ->check(CLI::Range(1, CatalogOptions::kMaxAttempts));
  app.add_option("--catalog-connect-timeout", registry_options.catalog_options.connect_timeout_seconds,
                 "PostgreSQL catalog: seconds to wait for the database at start and when a dropped\n"
                 "connection is reopened (a connect_timeout in the URI wins)")
      ->capture_default_str()
      ->check(CLI::Range(1, CatalogOptions::kMaxConnectTimeoutSeconds));
  app.add_option("--listen", listen, "HOST:PORT to serve HTTP on (port 0: any free port)")->capture_default_str();
  app.add_option("--unix-socket", server_options.unix_socket, "also serve on this Unix socket (mode 0660)");
  app.add_option("--port-file", port_file, "write the port actually bound to this file once listening");
  app.add_option("--max-upload-bytes", server_options.max_upload_bytes, "largest upload accepted")->capture_default_str();
  app.add_option("--workers", server_options.workers, "threads that scan, sign and verify")->capture_default_str();
  app.add_option("--io-threads", server_options.io_threads, "threads that move bytes")->capture_default_str();
  app.add_option("--max-connections", server_options.max_connections, "connections open at once")->capture_default_str();
  int header_timeout = static_cast<int>(server_options.header_timeout.count());
  int idle_timeout = static_cast<int>(server_options.idle_timeout.count());
  int request_timeout = static_cast<int>(server_options.request_timeout.count());
  int drain_timeout = static_cast<int>(server_options.drain_timeout.count());
  app.add_option("--header-timeout", header_timeout, "seconds to receive a request header")->capture_default_str()->check(CLI::Range(1, 86400));
  app.add_option("--idle-timeout", idle_timeout, "seconds without a byte, inside a body or between requests")->capture_default_str()->check(CLI::Range(1, 86400));
  app.add_option("--request-timeout", request_timeout, "seconds for a whole upload")->capture_default_str()->check(CLI::Range(1, 7 * 86400));
  app.add_option("--drain-timeout", drain_timeout, "on SIGTERM, seconds in-flight requests may take to finish")->capture_default_str()->check(CLI::Range(0, 86400));
  app.add_option("--max-header-bytes", server_options.max_header_bytes, "largest request header")->capture_default_str();
  app.add_option("--tls-cert", server_options.tls_cert_file,
                 "serve HTTPS on --listen with this PEM certificate chain (with --tls-key; default: plain HTTP)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", server_options.tls_key_file, "the PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--max-connections-per-address", server_options.max_connections_per_address,
                 "connections one client address may hold open (past it, or past --max-connections: 503 with Retry-After)")
      ->capture_default_str();
  int transfer_grace = static_cast<int>(server_options.transfer_grace.count());
  app.add_option("--min-transfer-rate", server_options.min_transfer_rate,
                 "bytes/s a request header or body must keep up after --transfer-grace (0: off); slower clients are dropped")
      ->capture_default_str();
  app.add_option("--transfer-grace", transfer_grace, "seconds a request may take before --min-transfer-rate applies")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_option("--max-anonymous-upload-bytes", server_options.max_anonymous_upload_bytes,
                 "largest body taken without a token (POST /v1/verify with the file)")
      ->capture_default_str();
  app.add_option("--denied-burst", server_options.denied_burst,
                 "denied requests (401, 403; 4xx to anonymous clients) one address may make before 429")
      ->capture_default_str();
  app.add_option("--denied-per-second", server_options.denied_per_second,
                 "rate at which an address's denied-request allowance refills")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  int audit_window = static_cast<int>(server_options.audit_window.count());
  app.add_option("--audit-window", audit_window,
                 "seconds over which denied requests are audited as one count per address and reason")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_flag("--accept-suspicious", registry_options.accept_suspicious,
               "store files the scanner calls suspicious (dangerous ones are always rejected)");
  app.add_flag("--reads-need-token", server_options.reads_need_token,
               "require a token for listing, downloading and verifying too");
  app.add_option("--curve", curve, "curve for signing keys this registry creates")
      ->check(CLI::IsMember({"P-256", "P-384", "P-521"}))
      ->capture_default_str();

  app.add_option("--registry-name", registry_options.registry_name,
                 "a display name or URL for this registry, signed into every statement beside its id");
  app.add_flag("--allow-retag", registry_options.allow_retag,
               "let a push with force=1 (ckptguard registry push --force) move a tag to other content (audited)");

  auto* token = app.add_subcommand("token", "manage tokens (stored hashed; shown once)");
  token->require_subcommand(1);
  std::string token_name, token_scope = "write";
  std::vector<std::string> token_prefixes;
  auto* token_create = token->add_subcommand("create", "create a token; it is printed on the last line");
  token_create->add_option("NAME", token_name, "who uses it (recorded as the uploader)")->required();
  token_create->add_option("--scope", token_scope,
                           "read: list, pull, verify (for --reads-need-token); write: also push; "
                           "admin: also revoke, rotate, read the audit log")
      ->check(CLI::IsMember({"read", "write", "admin"}))
      ->capture_default_str();
  token_create->add_option("--prefix", token_prefixes,
                           "write tokens: push only names starting with this (repeatable, e.g. team-a/)");
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token by name");
  token_revoke->add_option("NAME", token_name)->required();
  token->add_subcommand("list", "list tokens (names and scopes, never the tokens)");

  auto* key = app.add_subcommand("key", "manage signing keys");
  key->require_subcommand(1);
  key->add_subcommand("rotate", "create a new active key; the previous one is retired and still verifies");
  key->add_subcommand("list", "list keys with their state");
  std::string key_id, reason;
  auto* key_revoke = key->add_subcommand("revoke", "revoke a key: signatures by it no longer verify");
  key_revoke->add_option("KEY_ID", key_id)->required();
  key_revoke->add_option("--reason", reason, "why (recorded)")->required();

  auto* audit = app.add_subcommand("audit", "print the audit log as JSON lines");
  int64_t audit_after = 0;
  audit->add_option("--after", audit_after, "only entries with a larger id");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitError;
  }
  server_options.header_timeout = std::chrono::seconds(header_timeout);
  server_options.idle_timeout = std::chrono::seconds(idle_timeout);
  server_options.request_timeout = std::chrono::seconds(request_timeout);
  server_options.drain_timeout = std::chrono::seconds(drain_timeout);
  server_options.transfer_grace = std::chrono::seconds(transfer_grace);
  server_options.audit_window = std::chrono::seconds(audit_window);
  if (curve == "P-384") registry_options.key_curve = signing::Curve::kP384;
  if (curve == "P-521") registry_options.key_curve = signing::Curve::kP521;
  if (!ParseListen(listen, server_options)) {
    std::cerr << "ckptguardd: --listen wants HOST:PORT, got '" << listen << "'\n";
    return kExitError;
  }

  try {
    // Serving holds the data folder's lock; administration works beside a
    // running server (and cleans up only when none runs).
    registry_options.serve = !token->parsed() && !key->parsed() && !audit->parsed();
    auto registry = Registry::Open(registry_options);
    if (!registry) return Fail(registry_options.data_dir, registry.error());
    Registry& r = **registry;
    for (const std::string& warning : r.warnings()) std::cerr << "ckptguardd: warning: " << warning << "\n";

    if (token->parsed()) {
      if (token_create->parsed()) {
        auto raw = r.CreateToken(token_name, token_scope, "local", token_prefixes);
        if (!raw) return Fail("token create", raw.error());
        std::string limits;
        for (const std::string& p : token_prefixes) limits += (limits.empty() ? ", names starting with " : " or ") + p;
        std::cout << "token for " << token_name << " (scope " << token_scope << limits
                  << "); it is shown once, only its SHA-256 is stored:\n"
                  << *raw << "\n";
        return kExitOk;
      }
      if (token_revoke->parsed()) {
        auto revoked = r.RevokeToken(token_name, "local");
        if (!revoked) return Fail("token revoke", revoked.error());
        std::cout << (*revoked ? "revoked " : "no active token named ") << token_name << "\n";
        return *revoked ? kExitOk : kExitError;
      }
      auto tokens = r.catalog().ListTokens();
      if (!tokens) return Fail("token list", tokens.error());
      for (const auto& t : *tokens) {
        // Last column: the name prefixes a write token may push under ("*": any).
        std::string prefixes;
        for (const std::string& p : t.prefixes) prefixes += (prefixes.empty() ? "" : ",") + p;
        std::cout << Field(t.name) << "\t" << t.scope << "\t" << (t.revoked ? "revoked" : "active") << "\t" << t.created_at
                  << "\t" << (prefixes.empty() ? std::string("*") : Field(prefixes)) << "\n";
      }
      return kExitOk;
    }
    if (key->parsed()) {
      if (key_revoke->parsed()) {
        auto revoked = r.RevokeKey(key_id, reason, "local");
        if (!revoked) return Fail("key revoke", revoked.error());
        std::cout << (*revoked ? "revoked " : "no such key ") << key_id << "\n";
        return *revoked ? kExitOk : kExitError;
      }
      if (key->got_subcommand("rotate")) {
        auto rotated = r.RotateKey("local");
        if (!rotated) return Fail("key rotate", rotated.error());
        std::cout << "active key " << rotated->key_id << " (" << rotated->curve << ")\n";
        return kExitOk;
      }
      auto keys = r.catalog().ListKeys();
      if (!keys) return Fail("key list", keys.error());
      for (const auto& k : *keys) std::cout << k.key_id << "\t" << k.curve << "\t" << k.state << "\t" << k.created_at << "\n";
      return kExitOk;
    }
    if (audit->parsed()) {
      auto rows = r.catalog().ListAudit(audit_after, 1000);
      if (!rows) return Fail("audit", rows.error());
      for (const auto& a : *rows) {
        std::cout << a.id << "\t" << a.at << "\t" << Field(a.who) << "\t" << Field(a.action) << "\t"
                  << Field(a.target) << "\t" << Field(a.result) << "\t" << Field(a.detail) << "\n";
      }
      return kExitOk;
    }

    // Serve. Signals are handled by the server (graceful drain).
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGXFSZ, SIG_IGN);  // past `ulimit -f`: EFBIG, and the blob's temporary file is removed
    auto server = Server::Start(r, server_options);
    if (!server) return Fail("serve", server.error());
    const uint16_t port = (*server)->port();
    if (!port_file.empty()) {
      const std::string text = std::to_string(port) + "\n";
      auto written = WriteFileAtomically(port_file, Bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
      if (!written) return Fail("--port-file", written.error());
    }
    std::cout << "ckptguardd: serving " << (server_options.tls_cert_file.empty() ? "http" : "https") << "://"
              << server_options.host << ":" << port << " from "
              << registry_options.data_dir
              << (registry_options.catalog.empty() ? std::string()
                                                   : ", catalog " + RedactCatalogSpec(registry_options.catalog))
              << std::endl;
    (*server)->Wait();
    // Stopped: a second SIGTERM/SIGINT (an impatient supervisor) during the
    // teardown below must not turn a clean exit 0 into death by signal.
    // Every other thread has ended, so blocking them here keeps them pending.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::cout << "ckptguardd: stopped" << std::endl;
    return kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "ckptguardd: internal error: " << e.what() << "\n";
    return kExitError;
  }
}

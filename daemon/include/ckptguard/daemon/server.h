// Server: ckptguardd's HTTP/JSON front end over a Registry (Boost.Beast),
// HTTPS when given a certificate and key (OpenSSL through Asio's ssl).
//
// Every request is bounded: the header by size, time and a minimum transfer
// rate, a JSON body by size, an upload by size, by the same minimum rate, by
// an idle timeout between chunks and by a total deadline. Uploads stream to a
// temp file and are hashed as they arrive; scanning and signing run on a
// worker pool, never on the I/O threads.
//
// Under abuse the server stays bounded: denied requests (401, 403, and 4xx
// answers to anonymous clients) draw on a token bucket per client address
// (429 with Retry-After past it) and are audited as counts per address and
// reason over a window, never one row each; connections are limited in total
// and per address (503 with Retry-After past either); anonymous uploads
// (/v1/verify with a body) are capped small. Every request, aborted ones
// included, is logged exactly once, with secrets redacted.
//
// Routes (JSON unless said):
//   GET  /v1/health
//   GET  /v1/registry                            {"registry_id", "registry_name"}
//   POST /v1/checkpoints?name=N&tag=T[&force=1]  raw file body; write token (its prefixes
//                                                checked before the body); 201 stored,
//                                                200 same content already there, 409 the
//                                                tag holds other content, 422 rejected
//   GET  /v1/checkpoints?name=&tag=&status=&limit=&before=
//   GET  /v1/checkpoints/{sha256}[?name=&tag=]   record, manifest, findings, signature
//   GET  /v1/checkpoints/{sha256}/blob           the file (410 when revoked)
//   GET  /v1/checkpoints/{sha256}/signature[?name=&tag=]  the model-signing bundle
//   POST /v1/checkpoints/{sha256}/revoke         {"reason": ...}; admin token
//   POST /v1/verify?sha256=H[&rehash=1]          or the file as the body
//   GET  /v1/keys                                trusted public keys, PEM (?format=json: states)
//   POST /v1/keys/rotate, POST /v1/keys/{id}/revoke   admin token
//   GET  /v1/audit?after=&limit=                 admin token
#ifndef CKPTGUARD_DAEMON_SERVER_H_
#define CKPTGUARD_DAEMON_SERVER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "ckptguard/daemon/registry.h"
#include "ckptguard/error.h"

namespace ckptguard::daemon {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8470;          // 0: any free port (see Server::port)
  std::string unix_socket;       // also listen here when set (mode 0660)
  unsigned io_threads = 2;
  unsigned workers = 4;          // scan/sign/verify threads (they also wait on fsync)
  uint32_t max_connections = 256;
  uint32_t max_header_bytes = 16 * 1024;
  uint32_t max_json_bytes = 64 * 1024;
  uint64_t max_upload_bytes = uint64_t{16} << 30;
  std::chrono::seconds header_timeout{30};   // to receive a whole request header (also: keep-alive idle)
  std::chrono::seconds idle_timeout{60};     // between two chunks of a body; to write an answer
  std::chrono::seconds request_timeout{3600};// a whole upload
  bool reads_need_token = false;             // GETs and verify need a token too
  std::chrono::seconds drain_timeout{30};    // on SIGTERM: how long in-flight requests may finish

  // HTTPS: both set, the TCP listener speaks TLS (1.2 or later) with this PEM
  // certificate chain and private key; both empty, plain HTTP. The Unix
  // socket, when set, stays plain (its file mode is its access control).
  std::string tls_cert_file;
  std::string tls_key_file;

  // Abuse limits. Each has a flag in ckptguardd --help.
  // Connections from one client address at once (TCP only): one address
  // cannot take every slot. Past it, and past max_connections, a connection
  // gets 503 with Retry-After (up to kMaxRefusing at once; beyond, closed).
  uint32_t max_connections_per_address = 32;
  // A request header, and a request body, must arrive at this many bytes per
  // second once transfer_grace has passed since its first byte (a trickling
  // client is dropped instead of holding a slot for the request timeout).
  // 0 turns the rule off. 1 KiB/s: any real link does better.
  uint32_t min_transfer_rate = 1024;
  std::chrono::seconds transfer_grace{10};
  // A body sent without a token (POST /v1/verify with the file when reads
  // need no token): only hashed, but bounded small so anonymous clients
  // cannot stream without end. 64 MiB; larger files are verified with a token
  // or by digest (?sha256=).
  uint64_t max_anonymous_upload_bytes = uint64_t{64} << 20;
  // Denied requests per client address: a token bucket of denied_burst,
  // refilled at denied_per_second. Past it every request from the address is
  // answered 429 with Retry-After until the bucket refills.
  uint32_t denied_burst = 60;
  double denied_per_second = 2.0;
  // Denials are audited as one row per (address, reason) per window with
  // their count; the first of each in a window is written at once.
  std::chrono::seconds audit_window{60};
};

class Server {
 public:
  // Start binds (failing with kIo naming the address when it cannot) and
  // starts the I/O threads; requests are served until Stop or a signal.
  static Result<std::unique_ptr<Server>> Start(Registry& registry, const ServerOptions& options);
  ~Server();
  uint16_t port() const;
  // Wait blocks until the server stopped: after SIGTERM/SIGINT (accepting
  // stops, in-flight requests finish within drain_timeout) or Stop().
  void Wait();
  void Stop();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_SERVER_H_

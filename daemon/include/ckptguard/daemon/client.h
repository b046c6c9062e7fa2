// RegistryClient: the HTTP(S) side of `ckptguard registry ...`. One
// connection per call; every step (connect, TLS handshake, send, each read) is
// bounded by a timeout; files are streamed in 1 MiB chunks both ways, never
// held whole. https:// verifies the server's certificate chain (the system
// store, or ca_file) and that it names the host; plain http:// goes only to a
// loopback address unless `insecure`.
#ifndef CKPTGUARD_DAEMON_CLIENT_H_
#define CKPTGUARD_DAEMON_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "ckptguard/atomic_file.h"
#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::daemon {

struct ClientOptions {
  std::string url = "http://127.0.0.1:8470";  // http://HOST:PORT or https://HOST:PORT
  std::string ca_file;                        // https: trust these PEM CAs instead of the system store
  bool insecure = false;                      // allow plain http:// to a non-loopback address
  std::string token;                          // sent as "Authorization: Bearer TOKEN" when set
  std::chrono::seconds timeout{120};          // per step: connect, each write, each read
  uint64_t max_response_bytes = uint64_t{64} << 20;  // JSON answers
  uint64_t max_download_bytes = uint64_t{1} << 40;   // blobs
  // Called as bytes move (done, total; total 0 when unknown); e.g. a progress bar.
  std::function<void(uint64_t, uint64_t)> progress;
};

struct Response {
  int status = 0;
  std::string content_type;
  std::string body;
  std::string location;  // the Location header (redirects), "" when none
};

class RegistryClient {
 public:
  // Create checks the URL ("http://HOST[:PORT]" or "https://HOST[:PORT]",
  // ports 80 and 443 by default, optionally ending in "/"); plain http to a
  // host that is not loopback
  // (127.0.0.0/8, ::1, localhost) fails with kInvalidArgument unless
  // options.insecure.
  static Result<RegistryClient> Create(ClientOptions options);

  // Call sends a small request and returns the whole answer (any status).
  Result<Response> Call(std::string_view method, const std::string& target, const std::string& body = {},
                        const std::string& content_type = "application/json");
  // SendFile streams the file at `path` as the request body.
  Result<Response> SendFile(std::string_view method, const std::string& target, const std::string& path);
  // Download streams a 200 answer's body into `out` (not committed) and sets
  // `sha256_hex` to its digest; any other status comes back with its body.
  Result<Response> Download(const std::string& target, AtomicFile& out, std::string& sha256_hex);

  const ClientOptions& options() const { return options_; }

 private:
  explicit RegistryClient(ClientOptions options) : options_(std::move(options)) {}
  ClientOptions options_;
  std::string host_;
  std::string port_;
  bool tls_ = false;
};

// SplitUrl splits an absolute http(s) URL into its origin ("https://HOST:PORT",
// what RegistryClient::Create takes; default ports filled in) and its target
// (path and query, "/" when empty). kInvalidArgument for anything else.
Result<std::pair<std::string, std::string>> SplitUrl(std::string_view url);

// GetUrl and DownloadUrl GET an absolute http(s) URL (`options.url` is
// ignored), following up to 10 redirects (absolute or relative Location).
// The token in `options` is sent only to the first URL's origin, never to a
// host a redirect leads to (a CDN's signed URL carries its own grant).
// GetUrl returns the final answer (bounded by max_response_bytes); a
// redirect loop or too many hops is kIo.
Result<Response> GetUrl(const std::string& url, const ClientOptions& options);
// DownloadUrl streams the final 200 answer into `out` (not committed), as
// RegistryClient::Download; any other final status comes back with its body.
Result<Response> DownloadUrl(const std::string& url, const ClientOptions& options, AtomicFile& out,
                             std::string& sha256_hex);

}  // namespace ckptguard::daemon

CKPTGUARD_API_END

#endif  // CKPTGUARD_DAEMON_CLIENT_H_

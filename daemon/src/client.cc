// RegistryClient: Boost.Beast over C++20 coroutines, one io_context per call,
// TLS through Asio's OpenSSL stream for https://.
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include "ckptguard/daemon/client.h"
#include "ckptguard/input_file.h"
#include "ckptguard/sha256.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace ckptguard::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr size_t kChunk = size_t{1} << 20;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
void Expire(Stream& stream, std::chrono::seconds timeout) {
  beast::get_lowest_layer(stream).expires_after(timeout);
}

bool IsLoopback(const net::ip::address& address) {
  if (address.is_loopback()) return true;
  // ::ffff:127.x.y.z
  return address.is_v6() && address.to_v6().is_v4_mapped() &&
         net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6()).is_loopback();
}

// TlsFailure turns a failed handshake into a sentence naming why the
// certificate was refused (expired, wrong host, unknown issuer).
std::string TlsFailure(TlsStream& stream, const std::string& host, const beast::error_code& ec) {
  const long verify = SSL_get_verify_result(stream.native_handle());
  std::string why = ec.message();
  if (verify != X509_V_OK) {
    why = std::string("the server's certificate was refused: ") + X509_verify_cert_error_string(verify);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      why += " (it does not name " + host + ")";
    } else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
               verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || verify == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE) {
      why += " (not signed by a trusted CA; --ca-file names the registry's CA)";
    }
  }
  return "TLS handshake with " + host + " failed: " + why;
}

// Runs `make` (a coroutine taking the connected stream: a beast::tcp_stream,
// or a TlsStream after a verified handshake) and turns exceptions (Asio
// reports network errors as system_error) into Error values.
template <class Make>
Result<Response> RunCall(const ClientOptions& options, const std::string& host, const std::string& port, bool tls,
                         const std::string& what, Make make) {
  net::io_context ioc;
  std::optional<Result<Response>> result;
  auto resolve = [&](auto executor) -> net::awaitable<net::ip::tcp::resolver::results_type> {
    net::ip::tcp::resolver resolver(executor);
    auto endpoints = co_await resolver.async_resolve(host, port, net::use_awaitable);
    if (!tls && !options.insecure) {
      // Plain HTTP carries tokens and files in the clear: loopback only,
      // whatever the name resolved to.
      for (const auto& entry : endpoints) {
        if (!IsLoopback(entry.endpoint().address())) {
          throw std::runtime_error("plain http:// to " + host + " (" + entry.endpoint().address().to_string() +
                                   ") is refused: it is not a loopback address; use https:// (or --insecure)");
        }
      }
    }
    co_return endpoints;
  };
  auto run_plain = [&]() -> net::awaitable<void> {
    auto executor = co_await net::this_coro::executor;
    auto endpoints = co_await resolve(executor);
    beast::tcp_stream stream(executor);
    stream.expires_after(options.timeout);
    co_await stream.async_connect(endpoints, net::use_awaitable);
    result = co_await make(stream);
    beast::error_code ignored;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  };
  net::ssl::context ctx(net::ssl::context::tls_client);
  auto run_tls = [&]() -> net::awaitable<void> {
    auto executor = co_await net::this_coro::executor;
    auto endpoints = co_await resolve(executor);
    TlsStream stream(executor, ctx);
    SSL* ssl = stream.native_handle();
    beast::error_code ec;
    const auto literal = net::ip::make_address(host, ec);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (!ec) {
      (void)literal;
      if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) throw std::runtime_error("cannot check the address " + host);
    } else {
      // SSL_set_tlsext_host_name without its old-style cast.
      if (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str())) != 1 ||
          X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0) != 1) {
        throw std::runtime_error("cannot check the host name " + host);
      }
    }
    Expire(stream, options.timeout);
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, net::use_awaitable);
    Expire(stream, options.timeout);
    co_await stream.async_handshake(net::ssl::stream_base::client, net::redirect_error(net::use_awaitable, ec));
    if (ec) throw std::runtime_error(TlsFailure(stream, host, ec));
    result = co_await make(stream);
    beast::error_code ignored;
    beast::get_lowest_layer(stream).socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  };
  if (tls) {
    beast::error_code ec;
    ctx.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                        net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1,
                    ec);
    ctx.set_verify_mode(net::ssl::verify_peer, ec);
    if (!options.ca_file.empty()) {
      ctx.load_verify_file(options.ca_file, ec);
      if (ec) return MakeError(ErrorCode::kIo, 0, "cannot load the CA file: " + ec.message(), options.ca_file);
    } else {
      ctx.set_default_verify_paths(ec);
      if (ec) return MakeError(ErrorCode::kIo, 0, "cannot load the system's CA store: " + ec.message(), options.url);
    }
  }
  std::exception_ptr failure;
  auto done = [&](std::exception_ptr e) { failure = e; };
  if (tls) {
    net::co_spawn(ioc, run_tls(), done);
  } else {
    net::co_spawn(ioc, run_plain(), done);
  }
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      std::string detail = e.code() == beast::error::timeout
                               ? "no progress for " + std::to_string(options.timeout.count()) + " s (timeout)"
                               : e.code().message();
      return MakeError(ErrorCode::kIo, 0, what + ": " + detail, options.url);
    } catch (const std::exception& e) {
      return MakeError(ErrorCode::kIo, 0, what + ": " + e.what(), options.url);
    }
  }
  if (!result) return MakeError(ErrorCode::kInternal, 0, what + ": no answer", options.url);
  return std::move(*result);
}

template <class Request>
void SetCommon(Request& req, const std::string& host, const ClientOptions& options) {
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "ckptguard");
  if (!options.token.empty()) req.set(http::field::authorization, "Bearer " + options.token);
}

// TakeResponse moves a parsed answer (status, content type, body) out of its parser.
Response TakeResponse(http::response_parser<http::string_body>& parser) {
  return Response{static_cast<int>(parser.get().result_int()), std::string(parser.get()[http::field::content_type]),
                  std::move(parser.get().body()), std::string(parser.get()[http::field::location])};
}

// ReadSmall reads a whole answer into a Response (bounded).
template <class Stream>
net::awaitable<Result<Response>> ReadSmall(Stream& stream, beast::flat_buffer& buffer, const ClientOptions& options) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(options.max_response_bytes);
  Expire(stream, options.timeout);
  co_await http::async_read(stream, buffer, parser, net::use_awaitable);
  co_return TakeResponse(parser);
}

}  // namespace

Result<RegistryClient> RegistryClient::Create(ClientOptions options) {
  std::string url = options.url;
  bool tls = false;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return MakeError(ErrorCode::kInvalidArgument, 0,
                     "the registry URL must start with https:// or http:// (e.g. https://registry.example:8470)", url);
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  // No port: the scheme's (an IPv6 literal is [..], its colons are not one).
  const size_t bracket = rest.rfind(']');
  const size_t last_colon = rest.rfind(':');
  if (last_colon == std::string::npos || (bracket != std::string::npos && last_colon < bracket)) {
    rest += tls ? ":443" : ":80";
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size() || rest.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "the registry URL must be https://HOST[:PORT] or http://HOST[:PORT]", url);
  }
  RegistryClient client(std::move(options));
  client.options_.url = (tls ? "https://" : "http://") + rest;  // with its port: one spelling per origin
  client.tls_ = tls;
  client.host_ = rest.substr(0, colon);
  client.port_ = rest.substr(colon + 1);
  if (client.host_.size() > 2 && client.host_.front() == '[') client.host_ = client.host_.substr(1, client.host_.size() - 2);
  if (!tls && !client.options_.insecure) {
    // Refused before any connection when the name says so; names that
    // resolve are checked again at connect time (RunCall).
    beast::error_code ec;
    const auto address = net::ip::make_address(client.host_, ec);
    if (ec ? client.host_ != "localhost" : !IsLoopback(address)) {
      return MakeError(ErrorCode::kInvalidArgument, 0,
                       "plain http:// is only for loopback addresses (127.0.0.1, ::1, localhost): tokens and files "
                       "would cross the network in the clear; use https:// (or --insecure)",
                       url);
    }
  }
  return client;
}

Result<Response> RegistryClient::Call(std::string_view method, const std::string& target, const std::string& body,
                                      const std::string& content_type) {
  const std::string what = std::string(method) + " " + target;
  return RunCall(options_, host_, port_, tls_, what, [&](auto& stream) -> net::awaitable<Result<Response>> {
    http::request<http::string_body> req(http::string_to_verb(beast::string_view(method.data(), method.size())), target, 11);
    SetCommon(req, host_, options_);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.prepare_payload();
    Expire(stream, options_.timeout);
    co_await http::async_write(stream, req, net::use_awaitable);
    beast::flat_buffer buffer;
    co_return co_await ReadSmall(stream, buffer, options_);
  });
}

Result<Response> RegistryClient::SendFile(std::string_view method, const std::string& target, const std::string& path) {
  // A FIFO, device or socket is refused before it is opened (input_file.h).
  Result<InputFile> opened = OpenInputFile(path);
  if (!opened) return std::unexpected(std::move(opened).error());
  auto file = std::make_shared<InputFile>(std::move(*opened));
  const uint64_t total = static_cast<uint64_t>(file->identity().size);
  const std::string what = std::string(method) + " " + target;
  std::optional<Error> read_error;
  auto result = RunCall(options_, host_, port_, tls_, what, [&](auto& stream) -> net::awaitable<Result<Response>> {
    http::request<http::empty_body> req(http::string_to_verb(beast::string_view(method.data(), method.size())), target, 11);
    SetCommon(req, host_, options_);
    req.set(http::field::content_type, "application/octet-stream");
    req.content_length(total);
    // Ask first: a refusal (bad token, too large) then arrives before any body
    // byte is sent, instead of as a broken pipe halfway through the file.
    req.set(http::field::expect, "100-continue");
    http::request_serializer<http::empty_body> serializer(req);
    Expire(stream, options_.timeout);
    co_await http::async_write_header(stream, serializer, net::use_awaitable);
    beast::flat_buffer buffer;
    {
      http::response_parser<http::string_body> first;
      first.body_limit(options_.max_response_bytes);
      Expire(stream, options_.timeout);
      co_await http::async_read_header(stream, buffer, first, net::use_awaitable);
      if (first.get().result() != http::status::continue_) {
        if (!first.is_done()) co_await http::async_read(stream, buffer, first, net::use_awaitable);
        co_return TakeResponse(first);
      }
    }
    std::vector<char> chunk(kChunk);
    uint64_t sent = 0;
    while (sent < total) {
      const ssize_t n = ::pread(file->fd(), chunk.data(), std::min<uint64_t>(kChunk, total - sent), static_cast<off_t>(sent));
      if (n <= 0) {
        read_error = Error{ErrorCode::kIo, sent, path, n == 0 ? "the file shrank while it was sent" : std::strerror(errno)};
        co_return Response{};
      }
      // Each chunk is sent only if the file is still what it was at open: a
      // file rewritten in place stops the upload before its last byte, so the
      // registry never stores a torn mix (it discards a short body).
      if (Status unchanged = file->CheckUnchanged(); !unchanged) {
        read_error = unchanged.error();
        read_error->offset = sent;
        co_return Response{};
      }
      Expire(stream, options_.timeout);
      co_await net::async_write(stream, net::buffer(chunk.data(), static_cast<size_t>(n)), net::use_awaitable);
      sent += static_cast<uint64_t>(n);
      if (options_.progress) options_.progress(sent, total);
    }
    co_return co_await ReadSmall(stream, buffer, options_);
  });
  if (read_error) return std::unexpected(*read_error);
  return result;
}

Result<Response> RegistryClient::Download(const std::string& target, AtomicFile& out, std::string& sha256_hex) {
  const std::string what = "GET " + target;
  std::optional<Error> write_error;
  auto result = RunCall(options_, host_, port_, tls_, what, [&](auto& stream) -> net::awaitable<Result<Response>> {
    http::request<http::empty_body> req(http::verb::get, target, 11);
    SetCommon(req, host_, options_);
    Expire(stream, options_.timeout);
    co_await http::async_write(stream, req, net::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(options_.max_download_bytes);
    Expire(stream, options_.timeout);
    co_await http::async_read_header(stream, buffer, parser, net::use_awaitable);
    if (parser.get().result_int() != 200) {
      http::response_parser<http::string_body> rest(std::move(parser));
      rest.body_limit(options_.max_response_bytes);
      Expire(stream, options_.timeout);
      co_await http::async_read(stream, buffer, rest, net::use_awaitable);
      co_return TakeResponse(rest);
    }
    const uint64_t total = parser.content_length().value_or(0);
    Sha256 digest;
    std::vector<char> chunk(kChunk);
    uint64_t received = 0;
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      Expire(stream, options_.timeout);
      beast::error_code ec;
      co_await http::async_read(stream, buffer, parser, net::redirect_error(net::use_awaitable, ec));
      if (ec && ec != http::error::need_buffer) throw boost::system::system_error(ec);
      const size_t n = chunk.size() - parser.get().body().size;
      if (n == 0) continue;
      digest.Update(chunk.data(), n);
      auto written = out.Write(Bytes(reinterpret_cast<const uint8_t*>(chunk.data()), n));
      if (!written) {
        write_error = written.error();
        co_return Response{};
      }
      received += n;
      if (options_.progress) options_.progress(received, total);
    }
    auto hex = digest.FinishHex();
    if (!hex) {
      write_error = hex.error();
      co_return Response{};
    }
    sha256_hex = *hex;
    co_return Response{200, std::string(parser.get()[http::field::content_type]), {}, {}};
  });
  if (write_error) return std::unexpected(*write_error);
  return result;
}

Result<std::pair<std::string, std::string>> SplitUrl(std::string_view url) {
  size_t scheme_end = 0;
  if (url.starts_with("https://")) {
    scheme_end = 8;
  } else if (url.starts_with("http://")) {
    scheme_end = 7;
  } else {
    return MakeError(ErrorCode::kInvalidArgument, 0, "not an http:// or https:// URL", std::string(url));
  }
  const size_t slash = url.find_first_of("/?#", scheme_end);
  std::string origin(url.substr(0, slash));
  std::string target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (const size_t hash = target.find('#'); hash != std::string::npos) target.resize(hash);  // never sent
  if (target.empty() || target.front() != '/') target.insert(0, "/");
  if (origin.size() == scheme_end || origin.find('@') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "a URL needs a host (and no user:password@)", std::string(url));
  }
  // The origin as Create normalises it (default port).
  ClientOptions check;
  check.url = origin;
  check.insecure = true;  // a shape check only: the call's own options decide
  CKG_ASSIGN_OR_RETURN(RegistryClient client, RegistryClient::Create(std::move(check)));
  origin = client.options().url;
  return std::make_pair(std::move(origin), std::move(target));
}

namespace {

// Resolve returns the URL a Location header names, from `base` (absolute
// locations as they are, "/path" on the same origin, "path" beside it).
std::string Resolve(const std::string& base, const std::string& location) {
  if (location.starts_with("https://") || location.starts_with("http://")) return location;
  auto split = SplitUrl(base);
  if (!split) return location;
  if (location.starts_with("/")) return split->first + location;
  std::string dir = split->second.substr(0, split->second.find('?'));
  dir = dir.substr(0, dir.rfind('/') + 1);
  return split->first + dir + location;
}

// Follow runs `get` (one request: origin client, target) along redirects.
template <class Get>
Result<Response> Follow(const std::string& url, const ClientOptions& options, Get get) {
  std::string current = url;
  std::string first_origin;
  for (int hop = 0; hop <= 10; ++hop) {
    CKG_ASSIGN_OR_RETURN(auto split, SplitUrl(current));
    if (hop == 0) first_origin = split.first;
    ClientOptions hop_options = options;
    hop_options.url = split.first;
    // The token is for the origin it was given for, never for a redirect's host.
    if (split.first != first_origin) hop_options.token.clear();
    CKG_ASSIGN_OR_RETURN(RegistryClient client, RegistryClient::Create(std::move(hop_options)));
    CKG_ASSIGN_OR_RETURN(Response response, get(client, split.second));
    const bool redirect = response.status == 301 || response.status == 302 || response.status == 303 ||
                          response.status == 307 || response.status == 308;
    if (!redirect) return response;
    if (response.location.empty()) {
      return MakeError(ErrorCode::kIo, 0, "HTTP " + std::to_string(response.status) + " without a Location", current);
    }
    current = Resolve(current, response.location);
  }
  return MakeError(ErrorCode::kIo, 0, "more than 10 redirects", url);
}

}  // namespace

Result<Response> GetUrl(const std::string& url, const ClientOptions& options) {
  return Follow(url, options, [](RegistryClient& client, const std::string& target) { return client.Call("GET", target); });
}

Result<Response> DownloadUrl(const std::string& url, const ClientOptions& options, AtomicFile& out,
                             std::string& sha256_hex) {
  return Follow(url, options, [&](RegistryClient& client, const std::string& target) {
    return client.Download(target, out, sha256_hex);
  });
}

}  // namespace ckptguard::daemon

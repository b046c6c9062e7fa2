// RegistryClient: Boost.Beast over C++20 coroutines, one io_context per call.
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include "ckptguard/daemon/client.h"
#include "ckptguard/input_file.h"
#include "ckptguard/sha256.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <vector>

namespace ckptguard::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr size_t kChunk = size_t{1} << 20;

// Runs `body` (a coroutine taking the connected stream) and turns exceptions
// (Asio reports network errors as system_error) into Error values.
template <class Make>
Result<Response> RunCall(const ClientOptions& options, const std::string& host, const std::string& port,
                         const std::string& what, Make make) {
  net::io_context ioc;
  std::optional<Result<Response>> result;
  auto run = [&]() -> net::awaitable<void> {
    auto executor = co_await net::this_coro::executor;
    net::ip::tcp::resolver resolver(executor);
    beast::tcp_stream stream(executor);
    auto endpoints = co_await resolver.async_resolve(host, port, net::use_awaitable);
    stream.expires_after(options.timeout);
    co_await stream.async_connect(endpoints, net::use_awaitable);
    result = co_await make(stream);
    beast::error_code ignored;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  };
  std::exception_ptr failure;
  net::co_spawn(ioc, run(), [&](std::exception_ptr e) { failure = e; });
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
  return Response{static_cast<int>(parser.get().result_int()),
                  std::string(parser.get()[http::field::content_type]), std::move(parser.get().body())};
}

// ReadSmall reads a whole answer into a Response (bounded).
net::awaitable<Result<Response>> ReadSmall(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                           const ClientOptions& options) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(options.max_response_bytes);
  stream.expires_after(options.timeout);
  co_await http::async_read(stream, buffer, parser, net::use_awaitable);
  co_return TakeResponse(parser);
}

}  // namespace

Result<RegistryClient> RegistryClient::Create(ClientOptions options) {
  std::string url = options.url;
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "the registry URL must start with http:// (e.g. http://127.0.0.1:8470)", url);
  }
  std::string rest = url.substr(scheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size() || rest.find('/') != std::string::npos) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "the registry URL must be http://HOST:PORT", url);
  }
  RegistryClient client(std::move(options));
  client.host_ = rest.substr(0, colon);
  client.port_ = rest.substr(colon + 1);
  if (client.host_.size() > 2 && client.host_.front() == '[') client.host_ = client.host_.substr(1, client.host_.size() - 2);
  return client;
}

Result<Response> RegistryClient::Call(std::string_view method, const std::string& target, const std::string& body,
                                      const std::string& content_type) {
  const std::string what = std::string(method) + " " + target;
  return RunCall(options_, host_, port_, what, [&](beast::tcp_stream& stream) -> net::awaitable<Result<Response>> {
    http::request<http::string_body> req(http::string_to_verb(beast::string_view(method.data(), method.size())), target, 11);
    SetCommon(req, host_, options_);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.prepare_payload();
    stream.expires_after(options_.timeout);
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
  auto result = RunCall(options_, host_, port_, what, [&](beast::tcp_stream& stream) -> net::awaitable<Result<Response>> {
    http::request<http::empty_body> req(http::string_to_verb(beast::string_view(method.data(), method.size())), target, 11);
    SetCommon(req, host_, options_);
    req.set(http::field::content_type, "application/octet-stream");
    req.content_length(total);
    // Ask first: a refusal (bad token, too large) then arrives before any body
    // byte is sent, instead of as a broken pipe halfway through the file.
    req.set(http::field::expect, "100-continue");
    http::request_serializer<http::empty_body> serializer(req);
    stream.expires_after(options_.timeout);
    co_await http::async_write_header(stream, serializer, net::use_awaitable);
    beast::flat_buffer buffer;
    {
      http::response_parser<http::string_body> first;
      first.body_limit(options_.max_response_bytes);
      stream.expires_after(options_.timeout);
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
      stream.expires_after(options_.timeout);
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
  auto result = RunCall(options_, host_, port_, what, [&](beast::tcp_stream& stream) -> net::awaitable<Result<Response>> {
    http::request<http::empty_body> req(http::verb::get, target, 11);
    SetCommon(req, host_, options_);
    stream.expires_after(options_.timeout);
    co_await http::async_write(stream, req, net::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(options_.max_download_bytes);
    stream.expires_after(options_.timeout);
    co_await http::async_read_header(stream, buffer, parser, net::use_awaitable);
    if (parser.get().result_int() != 200) {
      http::response_parser<http::string_body> rest(std::move(parser));
      rest.body_limit(options_.max_response_bytes);
      stream.expires_after(options_.timeout);
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
      stream.expires_after(options_.timeout);
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
    co_return Response{200, std::string(parser.get()[http::field::content_type]), {}};
  });
  if (write_error) return std::unexpected(*write_error);
  return result;
}

}  // namespace ckptguard::daemon

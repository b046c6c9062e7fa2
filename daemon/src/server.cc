// Server: Boost.Beast HTTP/1.1 over TCP (plain or TLS) and a Unix socket, one
// strand per connection, blocking work (scan, sign, SQLite, hashing) on a
// worker pool.
#include "ckptguard/daemon/server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <openssl/ssl.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/optional.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ckptguard/sha256.h"
#include "http_util.h"

namespace ckptguard::daemon {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kUploadReadBytes = std::size_t{256} << 10;
constexpr std::size_t kHeaderReadBytes = 8192;
// Connections answered 503 at once (each reads one header, bounded by the
// header timeout and the transfer rate); past this they are closed unanswered.
constexpr uint32_t kMaxRefusing = 64;
// Distinct (address, reason) pairs counted per audit window; more addresses
// than this are counted together as "*".
constexpr std::size_t kMaxDenialKeys = 4096;
// Token buckets kept; past this, full (idle) buckets are dropped.
constexpr std::size_t kMaxBuckets = 65536;
// Audit fields and log targets are cut to this many bytes.
constexpr std::size_t kMaxFieldBytes = 200;

// UploadBody: a Beast body that streams into an Upload (temp file + SHA-256),
// or, for a verify, only into a Sha256 (nothing touches the disk).
struct UploadBody {
  struct value_type {
    Upload* upload = nullptr;
    Sha256* hasher = nullptr;
    std::optional<Error> error;
  };
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>&, beast::error_code& ec) {
      ec = (body_.upload || body_.hasher) ? beast::error_code{}
                                          : beast::errc::make_error_code(beast::errc::bad_file_descriptor);
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      std::size_t n = 0;
      for (auto buffer : beast::buffers_range_ref(buffers)) {
        if (body_.hasher) {  // the parser's body_limit bounds the size
          body_.hasher->Update(buffer.data(), buffer.size());
          n += buffer.size();
          continue;
        }
        auto status = body_.upload->Append(Bytes(static_cast<const uint8_t*>(buffer.data()), buffer.size()));
        if (!status) {
          body_.error = status.error();
          ec = status.error().code == ErrorCode::kLimitExceeded ? http::error::body_limit
                                                                 : beast::errc::make_error_code(beast::errc::io_error);
          return n;
        }
        n += buffer.size();
      }
      ec = {};
      return n;
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

std::string TimeNow() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

// Retry-After for 503 answers when the connection slots are full.
constexpr uint32_t kBusyRetryAfterSeconds = 5;
// Retry-After for 503 answers to a request that met a transient condition
// (ErrorCode::kUnavailable): making it again is likely to succeed at once.
constexpr uint32_t kRetryAfterSeconds = 1;

// SessionBase: what the server needs of a live connection when it drains.
struct SessionBase {
  virtual ~SessionBase() = default;
  // CloseIfIdle closes the connection if it is waiting for a next request
  // (keep-alive); a request in progress finishes first (its answer then says
  // "Connection: close").
  virtual void CloseIfIdle() = 0;
};

struct Server::Impl {
  Impl(Registry& r, ServerOptions o)
      : registry(r), options(std::move(o)), ioc(static_cast<int>(std::max(1u, options.io_threads))),
        tcp_acceptor(ioc), unix_acceptor(ioc), signals(ioc, SIGTERM, SIGINT), drain_timer(ioc),
        audit_timer(ioc), pool(std::max(1u, options.workers)) {}

  // Declared before the io_context: sessions still queued in it when it is
  // destroyed touch these from their destructors.
  Registry& registry;
  ServerOptions options;
  std::atomic<uint32_t> sessions{0};   // every open connection, refused ones included
  std::atomic<uint32_t> refusing{0};   // connections being answered 503
  std::atomic<uint32_t> inflight{0};
  std::atomic<bool> draining{false};
  Clock::time_point drain_deadline{};
  std::mutex log_mutex;
  std::once_flag joined;
  std::mutex live_mutex;  // guards live: every session, to close idle ones on drain
  std::map<SessionBase*, std::weak_ptr<SessionBase>> live;
  std::unique_ptr<net::ssl::context> tls;  // set when the TCP listener serves HTTPS

  // Abuse accounting (abuse_mutex): connections per address, the denied
  // requests' token buckets, and this window's denial counts for the audit.
  struct Bucket {
    double tokens = 0;
    Clock::time_point last{};
  };
  struct Denials {
    uint64_t count = 0;    // in this window, the first one included
    std::string who;       // of the first
    std::string sample;    // the first one's request and answer, escaped and cut
  };
  std::mutex abuse_mutex;
  std::unordered_map<std::string, uint32_t> per_address;
  std::unordered_map<std::string, Bucket> buckets;
  std::map<std::pair<std::string, std::string>, Denials> denials;
  uint16_t bound_port = 0;
  net::io_context ioc;
  net::ip::tcp::acceptor tcp_acceptor;
  net::local::stream_protocol::acceptor unix_acceptor;
  net::signal_set signals;
  net::steady_timer drain_timer;
  net::steady_timer audit_timer;
  net::thread_pool pool;
  std::vector<std::thread> threads;

  // Log writes one line; what clients sent must already be escaped
  // (LogSafe) so that it cannot forge a line.
  void Log(const std::string& line) {
    std::lock_guard lock(log_mutex);
    std::cerr << TimeNow() << " " << line << "\n";
  }
  template <bool kTls, class Acceptor>
  void Accept(Acceptor& acceptor);
  // AcquireAddress counts a connection from `address` unless it has
  // max_connections_per_address already (false: not counted).
  bool AcquireAddress(const std::string& address);
  void ReleaseAddress(const std::string& address);
  // DrawDenial takes one token from the address's bucket: false when it is
  // empty, with the seconds until one is back in `retry_after`.
  bool DrawDenial(const std::string& address, uint32_t& retry_after);
  // OverLimit: is the bucket empty (nothing drawn)?
  bool OverLimit(const std::string& address, uint32_t& retry_after);
  // NoteDenial counts a denial for the audit: the first per address and
  // reason in a window is written at once, the rest as one count at the
  // window's end (FlushDenials).
  // Returns the row to write now for the first one.
  std::optional<AuditRecord> NoteDenial(const std::string& address, const std::string& reason, const std::string& who,
                                        const std::string& sample);
  void FlushDenials(bool now_on_this_thread);
  void ScheduleAuditFlush();
  void BeginDrain();
  void CheckDrained();
  void Join();
};

namespace {

// A reply computed on the worker pool.
struct Reply {
  http::status status = http::status::ok;
  std::string content_type = "application/json";
  std::string body;
  std::string file;  // send this file instead of body
  bool close = false;
  uint32_t retry_after = 0;  // seconds; sent as Retry-After when not 0
  std::string who = "-";
};

Reply JsonReply(http::status status, const Json& json) {
  Reply reply;
  reply.status = status;
  reply.body = json.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  return reply;
}

Reply ErrorReply(http::status status, const std::string& message) {
  return JsonReply(status, Json{{"error", message}, {"status", static_cast<int>(status)}});
}

Reply FromError(const Error& error) {
  http::status status = http::status::internal_server_error;
  uint32_t retry_after = 0;
  switch (error.code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kMalformed:
      status = http::status::bad_request;
      break;
    case ErrorCode::kLimitExceeded:
      status = http::status::payload_too_large;
      break;
    case ErrorCode::kUnavailable:
      // Nothing was written and the same request may succeed when made
      // again (a catalog session that dropped, a reservation swept while it
      // was away, a key revoked again and again while a push was signed).
      status = http::status::service_unavailable;
      retry_after = kRetryAfterSeconds;
      break;
    default:
      break;
  }
  Reply reply = ErrorReply(status, error.ToString());
  reply.retry_after = retry_after;
  return reply;
}

// RateDeadline: when `bytes` received since `start` fall below the minimum
// transfer rate (after the grace period); nullopt when the rule is off.
std::optional<Clock::time_point> RateDeadline(const ServerOptions& options, Clock::time_point start, uint64_t bytes) {
  if (options.min_transfer_rate == 0) return std::nullopt;
  const auto allowed = std::chrono::microseconds(
      static_cast<int64_t>(static_cast<double>(bytes) * 1e6 / options.min_transfer_rate));
  return start + options.transfer_grace + allowed;
}

template <class Protocol, bool kTls>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Protocol, kTls>> {
 public:
  using Base = beast::basic_stream<Protocol, net::any_io_executor, beast::unlimited_rate_policy>;
  using Stream = std::conditional_t<kTls, beast::ssl_stream<Base>, Base>;
  static constexpr bool kTcp = std::is_same_v<Protocol, net::ip::tcp>;

  // `peer` is the client's address ("unix" on the Unix socket); `counted`:
  // the connection is counted in the per-address table; a non-empty
  // `refuse` answers the first request 503 with it and closes.
  Session(Server::Impl& server, typename Protocol::socket socket, std::string peer, bool counted, std::string refuse)
      : server_(server), stream_(MakeStream(server, std::move(socket))), peer_(std::move(peer)),
        counted_(counted), refuse_(std::move(refuse)) {
    ++server_.sessions;
    if (!refuse_.empty()) ++server_.refusing;
  }
  ~Session() override {
    // A request whose answer was never written (the server stopped under
    // it) is still logged, once.
    if (request_open_) LogRequest("aborted: the server stopped first");
    {
      std::lock_guard lock(server_.live_mutex);
      server_.live.erase(this);
    }
    ReleaseSlot();
  }

  void Start() {
    {
      std::lock_guard lock(server_.live_mutex);
      server_.live.emplace(this, std::weak_ptr<SessionBase>(this->shared_from_this()));
    }
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->Handshake(); });
  }

  void CloseIfIdle() override {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->idle_) self->Layer().cancel();  // the header read ends with operation_aborted: Close
    });
  }

 private:
  static Stream MakeStream(Server::Impl& server, typename Protocol::socket socket) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *server.tls);
    } else {
      return Stream(std::move(socket));
    }
  }
  Base& Layer() { return beast::get_lowest_layer(stream_); }

  // Handshake: TLS first (bounded by the header timeout); a failure is
  // logged as one aborted request.
  void Handshake() {
    if constexpr (kTls) {
      Layer().expires_after(server_.options.header_timeout);
      started_ = Clock::now();
      stream_.async_handshake(net::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) {
          self->method_ = "TLS";
          self->request_open_ = true;
          ++self->server_.inflight;
          return self->Abort("TLS handshake failed: " + ec.message());
        }
        self->ReadHeader();
      });
    } else {
      ReadHeader();
    }
  }

  void ReadHeader() {
    if (server_.draining) return Close();
    header_parser_.emplace();
    header_parser_->header_limit(server_.options.max_header_bytes);
    // No body limit while only the header is read: Beast checks Content-Length
    // against the limit when the header completes, and its default (1 MiB)
    // would refuse every larger upload as a bad header. Each route sets its
    // own limit once it is known (OnAuthenticated). Not boost::none: Boost
    // 1.74's finish_header compares `len_ > body_limit_` with the optional,
    // and any length compares greater than an empty one.
    header_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    idle_ = true;
    wait_started_ = Clock::now();
    header_bytes_ = buffer_.size();  // a pipelined request may have begun already
    if (header_bytes_ > 0) first_byte_ = wait_started_;
    ParseOrReadHeader();
  }

  // ParseOrReadHeader reads the header piece by piece so that the minimum
  // transfer rate bounds it: the first byte may take header_timeout
  // (keep-alive idle); from then on the header must keep up with the rate
  // and be whole within header_timeout.
  void ParseOrReadHeader() {
    if (buffer_.size() > 0) {
      beast::error_code ec;
      const std::size_t used = header_parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec && ec != http::error::need_more) return OnHeader(ec);
      if (header_parser_->is_header_done()) return OnHeader({});
    }
    const auto now = Clock::now();
    Clock::time_point deadline = wait_started_ + server_.options.header_timeout;
    if (header_bytes_ > 0) {
      deadline = first_byte_ + server_.options.header_timeout;
      if (auto rate = RateDeadline(server_.options, first_byte_, header_bytes_)) deadline = std::min(deadline, *rate);
    }
    if (deadline <= now) return OnHeader(beast::error::timeout);
    Layer().expires_at(deadline);
    stream_.async_read_some(buffer_.prepare(kHeaderReadBytes),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->buffer_.commit(n);
                              if (n > 0 && self->header_bytes_ == 0) self->first_byte_ = Clock::now();
                              self->header_bytes_ += n;
                              if (ec) return self->OnHeader(ec);
                              self->ParseOrReadHeader();
                            });
  }

  void BeginRequest() {
    started_ = Clock::now();
    request_open_ = true;
    ++server_.inflight;
  }

  void OnHeader(beast::error_code ec) {
    idle_ = false;
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::ssl::error::stream_truncated) {
      // Nothing sent: a keep-alive connection ending, not a request.
      if (header_bytes_ == 0) return Close();
      BeginRequest();
      return Abort(ec == beast::error::timeout ? "the request header did not arrive in time (" +
                                                     std::to_string(header_bytes_) + " bytes)"
                                               : "the client left during the request header: " + ec.message());
    }
    BeginRequest();
    if (ec) {
      Reply reply = ErrorReply(ec == http::error::header_limit ? http::status::request_header_fields_too_large
                                                               : http::status::bad_request,
                               "bad request header: " + ec.message());
      reply.close = true;
      return Send(std::move(reply));
    }
    auto& req = header_parser_->get();
    method_ = std::string(req.method_string());
    target_ = std::string(req.target());
    keep_alive_ = req.keep_alive();
    route_ = ParseTarget(target_);
    if (!refuse_.empty()) {
      Reply reply = ErrorReply(http::status::service_unavailable, "the registry is busy: " + refuse_);
      reply.retry_after = kBusyRetryAfterSeconds;
      reply.close = true;
      return Send(std::move(reply));
    }
    // An address past its denied-request budget is refused before any work.
    if (uint32_t retry_after = 0; server_.OverLimit(peer_, retry_after)) {
      Reply reply = ErrorReply(http::status::too_many_requests,
                               "too many denied requests from this address; retry later");
      reply.retry_after = retry_after;
      reply.close = true;
      return Send(std::move(reply));
    }
    const std::string authorization(req[http::field::authorization]);
    const bool expect_continue = beast::iequals(req[http::field::expect], "100-continue");

    // Authenticate before reading any body (a DB lookup: on the pool).
    net::post(server_.pool, [self = this->shared_from_this(), authorization, expect_continue] {
      std::optional<TokenRecord> token;
      std::string auth_error;
      if (!authorization.empty()) {
        const std::string prefix = "Bearer ";
        if (authorization.rfind(prefix, 0) != 0) {
          auth_error = "the Authorization header must be 'Bearer TOKEN'";
        } else {
          auto found = self->server_.registry.Authenticate(authorization.substr(prefix.size()));
          if (!found) {
            auth_error = found.error().ToString();
          } else if (!*found) {
            auth_error = "unknown or revoked token";
          } else {
            token = **found;
          }
        }
      }
      net::dispatch(self->stream_.get_executor(), [self, token, auth_error, expect_continue] {
        self->OnAuthenticated(token, auth_error, expect_continue);
      });
    });
  }

  // What a route needs before its body is read.
  enum class Need { kNone, kRead, kWrite, kAdmin };

  Need NeedOf() const {
    const auto& s = route_.segments;
    const bool post = method_ == "POST";
    if (post && s.size() == 2 && s[1] == "checkpoints") return Need::kWrite;
    if (post && s.size() == 4 && s[1] == "checkpoints" && s[3] == "revoke") return Need::kAdmin;
    if (post && s.size() >= 3 && s[1] == "keys") return Need::kAdmin;
    if (s.size() == 2 && s[1] == "audit") return Need::kAdmin;
    if (s.size() == 2 && s[1] == "health") return Need::kNone;
    return Need::kRead;
  }

  void OnAuthenticated(std::optional<TokenRecord> token, const std::string& auth_error, bool expect_continue) {
    token_ = token;
    who_ = token ? token->name : "anonymous";
    const Need need = NeedOf();
    std::optional<Reply> denied;
    if (!auth_error.empty() && need != Need::kNone) {
      denied = ErrorReply(http::status::unauthorized, auth_error);
    } else if ((need == Need::kWrite || need == Need::kAdmin || (need == Need::kRead && server_.options.reads_need_token)) &&
               !token) {
      denied = ErrorReply(http::status::unauthorized, "this request needs 'Authorization: Bearer TOKEN' (ckptguardd token create NAME)");
    } else if (need == Need::kAdmin && token->scope != "admin") {
      denied = ErrorReply(http::status::forbidden, "this request needs a token with scope admin");
    } else if (need == Need::kWrite) {
      // Scope and name prefixes, before any body byte is read.
      if (auto why = PushDenied(*token, route_.Query("name"))) denied = ErrorReply(http::status::forbidden, *why);
    }
    if (denied) {
      denied->close = true;  // the body (if any) is not read; Send counts and audits the denial
      return Send(std::move(*denied));
    }
    auto& req = header_parser_->get();
    const bool is_push = method_ == "POST" && route_.segments.size() == 2 && route_.segments[0] == "v1" &&
                         route_.segments[1] == "checkpoints";
    const bool streams_file =
        is_push || (method_ == "POST" && route_.segments.size() == 2 && route_.segments[0] == "v1" &&
                    route_.segments[1] == "verify" && !route_.query.contains("sha256"));
    if (is_push) {
      // Name and tag are checked before any body byte is read (and before
      // 100 Continue): a bad one costs the client no upload.
      std::optional<Reply> bad;
      if (!ValidName(route_.Query("name"))) {
        bad = ErrorReply(http::status::bad_request, "name must be 1-200 characters of A-Z a-z 0-9 . _ / -");
      } else if (!ValidTag(route_.Query("tag"))) {
        bad = ErrorReply(http::status::bad_request, "tag must be 0-128 characters of A-Z a-z 0-9 . _ -");
      }
      if (bad) {
        bad->close = true;
        return Send(std::move(*bad));
      }
    }
    if (streams_file) {
      // Without a token (verify, when reads need none) the body is capped small.
      const uint64_t limit = token_ ? server_.options.max_upload_bytes
                                    : std::min(server_.options.max_upload_bytes, server_.options.max_anonymous_upload_bytes);
      const std::string limit_text = token_ ? "this registry takes at most " + std::to_string(limit)
                                            : "without a token this registry takes at most " + std::to_string(limit);
      if (req.has_content_length()) {
        auto length = header_parser_->content_length();
        if (length && *length > limit) {
          Reply reply = ErrorReply(http::status::payload_too_large,
                                   "the upload is " + std::to_string(*length) + " bytes; " + limit_text);
          reply.close = true;
          return Send(std::move(reply));
        }
      }
      upload_limit_ = limit;
      const bool verify_only = route_.segments[1] == "verify";
      if (verify_only) {
        hasher_ = std::make_unique<Sha256>();
      } else {
        auto upload = server_.registry.blobs().BeginUpload(server_.options.max_upload_bytes);
        if (!upload) return Send(FromError(upload.error()));
        upload_.emplace(std::move(*upload));
      }
      upload_parser_.emplace(std::move(*header_parser_));
      upload_parser_->body_limit(limit);
      // Beast reads what the buffer has room for (512 bytes when it only
      // ever held a header): give uploads large reads.
      buffer_.reserve(kUploadReadBytes);
      if (verify_only) {
        upload_parser_->get().body().hasher = hasher_.get();
      } else {
        upload_parser_->get().body().upload = &*upload_;
      }
      auto start_body = [self = this->shared_from_this()] {
        self->body_started_ = Clock::now();
        self->body_bytes_ = 0;
        self->ReadUploadChunk();
      };
      if (expect_continue) return SendContinue(start_body);
      return start_body();
    }
    // The limit is checked against Content-Length when the header completes,
    // so one set now only bounds chunked bodies: check the length here.
    if (auto length = header_parser_->content_length(); length && *length > server_.options.max_json_bytes) {
      Reply reply = ErrorReply(http::status::payload_too_large,
                               "a request body may be at most " + std::to_string(server_.options.max_json_bytes) +
                                   " bytes here");
      reply.close = true;
      return Send(std::move(reply));
    }
    string_parser_.emplace(std::move(*header_parser_));
    string_parser_->body_limit(server_.options.max_json_bytes);
    auto read_body = [self = this->shared_from_this()] {
      // A small body: the idle timeout, or less when the minimum rate says so.
      const auto now = Clock::now();
      auto deadline = now + self->server_.options.idle_timeout;
      if (auto rate = RateDeadline(self->server_.options, now, self->server_.options.max_json_bytes)) {
        deadline = std::min(deadline, *rate);
      }
      self->Layer().expires_at(deadline);
      http::async_read(self->stream_, self->buffer_, *self->string_parser_,
                       [self](beast::error_code ec, std::size_t) { self->OnSmallBody(ec); });
    };
    if (expect_continue) return SendContinue(read_body);
    read_body();
  }

  template <class Next>
  void SendContinue(Next next) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    Layer().expires_after(server_.options.idle_timeout);
    net::async_write(stream_, net::buffer(kContinue, sizeof kContinue - 1),
                     [self = this->shared_from_this(), next](beast::error_code ec, std::size_t) {
                       if (ec) return self->Abort("could not send 100 Continue: " + ec.message());
                       next();
                     });
  }

  void ReadUploadChunk() {
    if (upload_parser_->is_done()) return OnUploadChunk({});
    const auto deadline = started_ + server_.options.request_timeout;
    const auto now = Clock::now();
    if (now >= deadline) {
      Reply reply = ErrorReply(http::status::request_timeout, "the upload took longer than the request timeout");
      reply.close = true;
      return Send(std::move(reply));
    }
    auto until = std::min<Clock::time_point>(now + server_.options.idle_timeout, deadline);
    rate_bound_ = false;
    if (auto rate = RateDeadline(server_.options, body_started_, body_bytes_); rate && *rate < until) {
      until = *rate;
      rate_bound_ = true;
    }
    if (until <= now) return OnUploadChunk(beast::error::timeout);
    Layer().expires_at(until);
    http::async_read_some(stream_, buffer_, *upload_parser_,
                          [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                            self->body_bytes_ += n;
                            self->OnUploadChunk(ec);
                          });
  }

  void OnUploadChunk(beast::error_code ec) {
    if (ec) {
      auto& body = upload_parser_->get().body();
      if (ec == http::error::body_limit || (body.error && body.error->code == ErrorCode::kLimitExceeded)) {
        Reply reply = ErrorReply(http::status::payload_too_large,
                                 "the upload is larger than this registry takes (" +
                                     std::to_string(upload_limit_) + " bytes" + (token_ ? "" : " without a token") + ")");
        reply.close = true;
        upload_.reset();
        hasher_.reset();
        return Send(std::move(reply));
      }
      if (body.error) {
        Reply reply = FromError(*body.error);
        reply.close = true;
        upload_.reset();
        return Send(std::move(reply));
      }
      upload_.reset();  // timeout, reset, malformed chunking: drop the temp file and the connection
      hasher_.reset();
      if (ec == beast::error::timeout) {
        return Abort(rate_bound_ ? "the body arrived slower than " + std::to_string(server_.options.min_transfer_rate) +
                                       " bytes/s (" + std::to_string(body_bytes_) + " bytes)"
                                 : "the body stalled (" + std::to_string(body_bytes_) + " bytes)");
      }
      return Abort("the body ended early: " + ec.message() + " (" + std::to_string(body_bytes_) + " bytes)");
    }
    if (!upload_parser_->is_done()) return ReadUploadChunk();
    Layer().expires_never();
    RunOnPool([self = this->shared_from_this()] { return self->HandleUpload(); });
  }

  void OnSmallBody(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      Reply reply = ErrorReply(http::status::payload_too_large,
                               "a request body may be at most " + std::to_string(server_.options.max_json_bytes) +
                                   " bytes here");
      reply.close = true;
      return Send(std::move(reply));
    }
    if (ec) return Abort("the body ended early: " + ec.message());
    Layer().expires_never();
    RunOnPool([self = this->shared_from_this()] { return self->HandleSmall(); });
  }

  template <class Work>
  void RunOnPool(Work work) {
    net::post(server_.pool, [self = this->shared_from_this(), work]() mutable {
      Reply reply;
      try {
        reply = work();
      } catch (const std::exception& e) {
        reply = ErrorReply(http::status::internal_server_error, std::string("internal error: ") + e.what());
      }
      net::dispatch(self->stream_.get_executor(),
                    [self, reply = std::move(reply)]() mutable { self->Send(std::move(reply)); });
    });
  }

  // --- handlers (on the pool) ---

  Reply HandleUpload() {
    if (hasher_) {
      if (hasher_->size() == 0) {
        hasher_.reset();
        return ErrorReply(http::status::bad_request, "the body is empty: send the file's bytes as the request body");
      }
      auto digest = hasher_->FinishHex();
      hasher_.reset();
      if (!digest) return FromError(digest.error());
      auto report = server_.registry.VerifyBytesDigest(*digest);
      if (!report) return FromError(report.error());
      return JsonReply(http::status::ok, VerifyJson(*report));
    }
    if (upload_->size() == 0) {
      upload_.reset();
      return ErrorReply(http::status::bad_request, "the body is empty: send the file's bytes as the request body");
    }
    auto finished = upload_->Finish();
    if (!finished) return FromError(finished.error());
    Registry& registry = server_.registry;
    IngestRequest request{route_.Query("name"), route_.Query("tag"), who_, route_.Query("force") == "1"};
    IngestOutcome outcome;
    auto record = registry.Ingest(*upload_, request, &outcome);
    upload_.reset();  // stored: committed already; rejected: the temp file goes now
    if (!record && outcome.tag_holder) {
      // Tags are immutable: 409 naming the digest the tag holds.
      Reply reply = JsonReply(http::status::conflict, Json{{"error", record.error().detail},
                                                           {"status", 409},
                                                           {"existing_sha256", outcome.tag_holder->sha256},
                                                           {"existing_status", outcome.tag_holder->status}});
      return reply;
    }
    if (!record) return FromError(record.error());
    Json body = RecordJson(*record, /*details=*/true);
    if (outcome.unchanged) {
      body["unchanged"] = true;  // the same content to the same tag: nothing new
      return JsonReply(http::status::ok, body);
    }
    if (!outcome.moved_from.empty()) body["moved_from"] = outcome.moved_from;
    return JsonReply(record->status == "stored" ? http::status::created : http::status::unprocessable_entity, body);
  }

  Reply HandleSmall() {
    Registry& registry = server_.registry;
    const auto& s = route_.segments;
    const std::string& body = string_parser_->get().body();
    if (s.empty() || s[0] != "v1") return ErrorReply(http::status::not_found, "no such route (the API is under /v1/)");
    const bool get = method_ == "GET" || method_ == "HEAD";
    const bool post = method_ == "POST";
    if (s.size() == 2 && s[1] == "health" && get) {
      return JsonReply(http::status::ok, Json{{"status", "ok"}, {"service", "ckptguardd"}});
    }
    if (s.size() == 2 && s[1] == "registry" && get) {
      // The identity every signature names; clients pin it.
      return JsonReply(http::status::ok, Json{{"registry_id", registry.registry_id()},
                                              {"registry_name", registry.options().registry_name}});
    }
    if (s.size() == 2 && s[1] == "checkpoints" && get) {
      CheckpointQuery query;
      query.name = route_.Query("name");
      query.tag = route_.Query("tag");
      query.status = route_.Query("status");
      if (auto limit = ParseUint(route_.Query("limit"))) query.limit = static_cast<uint32_t>(std::min<uint64_t>(*limit, 1000));
      if (auto before = ParseUint(route_.Query("before"))) query.before_id = static_cast<int64_t>(*before);
      auto rows = registry.catalog().ListCheckpoints(query);
      if (!rows) return FromError(rows.error());
      Json list = Json::array();
      for (const auto& row : *rows) list.push_back(RecordJson(row, false));
      return JsonReply(http::status::ok, Json{{"checkpoints", list}});
    }
    if (s.size() >= 3 && s[1] == "checkpoints") {
      const std::string& sha = s[2];
      if (!ValidSha256(sha)) return ErrorReply(http::status::bad_request, "a checkpoint is named by its sha256 (64 lower-case hex)");
      if (s.size() == 4 && s[3] == "revoke" && post) {
        const Json args = Json::parse(body.empty() ? "{}" : body, nullptr, false);
        if (args.is_discarded() || !args.is_object()) return ErrorReply(http::status::bad_request, "the body must be a JSON object");
        const std::string reason = args.value("reason", std::string());
        if (reason.empty()) return ErrorReply(http::status::bad_request, "say why: {\"reason\": \"...\"}");
        auto revoked = registry.RevokeCheckpoint(sha, reason.substr(0, 1000), who_);
        if (!revoked) return FromError(revoked.error());
        if (!*revoked) return ErrorReply(http::status::not_found, "no stored checkpoint has this digest");
        return JsonReply(http::status::ok, Json{{"sha256", sha}, {"status", "revoked"}});
      }
      if (!get) return ErrorReply(http::status::method_not_allowed, "use GET");
      // ?name=&tag= picks the row pushed under that name and tag (its
      // signature binds them); without, the newest row of the digest.
      const bool by_name = route_.query.contains("name");
      auto record = by_name ? registry.catalog().FindByNameTag(sha, route_.Query("name"), route_.Query("tag"))
                            : registry.catalog().FindBySha256(sha);
      if (!record) return FromError(record.error());
      if (!*record) {
        return ErrorReply(http::status::not_found,
                          by_name ? "no stored checkpoint has this digest under this name and tag"
                                  : "no stored checkpoint has this digest");
      }
      if (s.size() == 3) return JsonReply(http::status::ok, RecordJson(**record, true));
      if (s.size() == 4 && s[3] == "signature") {
        Reply reply;
        reply.body = (*record)->signature;
        return reply;
      }
      if (s.size() == 4 && s[3] == "blob") {
        if ((*record)->status == "revoked" && route_.Query("allow_revoked") != "1") {
          return ErrorReply(http::status::gone, "this checkpoint was revoked: " + (*record)->revoked_reason +
                                                    " (add ?allow_revoked=1 to fetch it anyway)");
        }
        if (!registry.blobs().Has(sha)) return ErrorReply(http::status::not_found, "the blob is not in the store");
        Reply reply;
        reply.content_type = "application/octet-stream";
        reply.file = registry.blobs().PathOf(sha);
        return reply;
      }
      return ErrorReply(http::status::not_found, "no such route");
    }
    if (s.size() == 2 && s[1] == "verify" && post) {
      const std::string sha = route_.Query("sha256");
      auto report = registry.VerifyDigest(sha, route_.Query("rehash") == "1");
      if (!report) return FromError(report.error());
      return JsonReply(http::status::ok, VerifyJson(*report));
    }
    if (s.size() == 2 && s[1] == "keys" && get) {
      if (route_.Query("format") == "json") {
        auto keys = registry.catalog().ListKeys();
        if (!keys) return FromError(keys.error());
        Json list = Json::array();
        for (const auto& key : *keys) {
          list.push_back({{"key_id", key.key_id}, {"curve", key.curve}, {"state", key.state},
                          {"created_at", key.created_at}, {"public_pem", key.public_pem},
                          {"revoked_reason", key.revoked_reason}, {"revoked_at", key.revoked_at}});
        }
        return JsonReply(http::status::ok, Json{{"keys", list}});
      }
      auto pem = registry.TrustedKeysPem();
      if (!pem) return FromError(pem.error());
      Reply reply;
      reply.content_type = "application/x-pem-file";
      reply.body = *pem;
      return reply;
    }
    if (s.size() == 3 && s[1] == "keys" && s[2] == "rotate" && post) {
      auto key = registry.RotateKey(who_);
      if (!key) return FromError(key.error());
      return JsonReply(http::status::ok, Json{{"key_id", key->key_id}, {"curve", key->curve}, {"state", key->state}});
    }
    if (s.size() == 4 && s[1] == "keys" && s[3] == "revoke" && post) {
      const Json args = Json::parse(body.empty() ? "{}" : body, nullptr, false);
      const std::string reason = args.is_object() ? args.value("reason", std::string()) : std::string();
      if (reason.empty()) return ErrorReply(http::status::bad_request, "say why: {\"reason\": \"...\"}");
      auto revoked = registry.RevokeKey(s[2], reason.substr(0, 1000), who_);
      if (!revoked) return FromError(revoked.error());
      if (!*revoked) return ErrorReply(http::status::not_found, "no such key");
      return JsonReply(http::status::ok, Json{{"key_id", s[2]}, {"state", "revoked"}});
    }
    if (s.size() == 2 && s[1] == "audit" && get) {
      const int64_t after = static_cast<int64_t>(ParseUint(route_.Query("after")).value_or(0));
      const uint32_t limit = static_cast<uint32_t>(std::min<uint64_t>(ParseUint(route_.Query("limit")).value_or(1000), 1000));
      auto rows = registry.catalog().ListAudit(after, limit);
      if (!rows) return FromError(rows.error());
      Json list = Json::array();
      for (const auto& row : *rows) {
        list.push_back({{"id", row.id}, {"at", row.at}, {"who", row.who}, {"action", row.action},
                        {"target", row.target}, {"result", row.result}, {"detail", row.detail}});
      }
      return JsonReply(http::status::ok, Json{{"audit", list}});
    }
    return ErrorReply(http::status::not_found, "no such route: " + method_ + " " + route_.path);
  }

  // --- writing ---

  // IsDenial: an answer that counts against the client address's denied
  // budget: 401 and 403 always, client errors to anonymous clients too.
  bool IsDenial(int code) const {
    if (code == 401 || code == 403 || code == 429) return true;
    return !token_ && (code == 400 || code == 404 || code == 405 || code == 408 || code == 413 || code == 431);
  }

  void Send(Reply reply) {
    Layer().expires_after(server_.options.idle_timeout);
    if (refuse_.empty() && IsDenial(static_cast<int>(reply.status))) {
      uint32_t retry_after = 0;
      if (reply.status != http::status::too_many_requests && !server_.DrawDenial(peer_, retry_after)) {
        reply = ErrorReply(http::status::too_many_requests, "too many denied requests from this address; retry later");
        reply.retry_after = retry_after;
        reply.close = true;
      }
      std::string error;
      if (const Json j = Json::parse(reply.body, nullptr, false); j.is_object() && j.contains("error") && j["error"].is_string()) {
        error = j["error"].get<std::string>();
      }
      auto row = server_.NoteDenial(peer_, std::to_string(static_cast<int>(reply.status)), who_,
                                    LogSafe(method_, 16) + " " + LogSafe(RedactTarget(target_), kMaxFieldBytes) +
                                        ": " + LogSafe(error, kMaxFieldBytes));
      if (row) {
        // The first denial per address and reason in a window is in the
        // audit log before its answer goes out.
        net::post(server_.pool, [self = this->shared_from_this(), row = std::move(*row), reply = std::move(reply)]() mutable {
          (void)self->server_.registry.catalog().Audit(row);
          net::dispatch(self->stream_.get_executor(),
                        [self, reply = std::move(reply)]() mutable { self->Write(std::move(reply)); });
        });
        return;
      }
    }
    Write(std::move(reply));
  }

  void Write(Reply reply) {
    const bool close = reply.close || !keep_alive_ || server_.draining;
    reply.who = who_;
    last_status_ = static_cast<int>(reply.status);
    const auto common = [&](auto& res) {
      res.set(http::field::server, "ckptguardd");
      res.set(http::field::content_type, reply.content_type);
      if (reply.retry_after != 0) res.set(http::field::retry_after, std::to_string(reply.retry_after));
      res.keep_alive(!close);
    };
    if (method_ == "HEAD") {
      // The header only, with the length a GET would have had (RFC 9110
      // 9.3.2): a body here would be read as the next response.
      uint64_t length = reply.body.size();
      if (!reply.file.empty()) {
        struct stat st{};
        length = ::stat(reply.file.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
      }
      auto res = std::make_shared<http::response<http::empty_body>>(reply.status, 11);
      common(*res);
      res->content_length(length);
      sent_bytes_ = 0;
      http::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, std::size_t) {
        self->OnWritten(ec, close);
      });
      return;
    }
    if (!reply.file.empty()) {
      auto res = std::make_shared<http::response<http::file_body>>();
      beast::error_code open_ec;
      res->body().open(reply.file.c_str(), beast::file_mode::scan, open_ec);
      if (open_ec) return Send(ErrorReply(http::status::internal_server_error, "cannot open the blob: " + open_ec.message()));
      res->result(reply.status);
      res->version(11);
      common(*res);
      res->prepare_payload();
      sent_bytes_ = res->body().size();
      http::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, std::size_t) {
        self->OnWritten(ec, close);
      });
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>(reply.status, 11);
    common(*res);
    res->body() = std::move(reply.body);
    res->prepare_payload();
    sent_bytes_ = res->body().size();
    http::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, std::size_t) {
      self->OnWritten(ec, close);
    });
  }

  // LogRequest writes the request's one log line (address, token name,
  // method, redacted target, status, bytes, ms, and why it was aborted), at
  // most once per request.
  void LogRequest(const std::string& aborted) {
    if (!request_open_) return;
    request_open_ = false;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count();
    std::string line = LogSafe(peer_, 64) + " " + LogSafe(who_, 64) + " " + (method_.empty() ? "-" : LogSafe(method_, 16)) +
                       " " + (target_.empty() ? "-" : LogSafe(RedactTarget(target_), kMaxFieldBytes)) + " " +
                       (last_status_ == 0 ? "-" : std::to_string(last_status_)) + " " + std::to_string(sent_bytes_) +
                       "B " + std::to_string(ms) + "ms";
    if (!aborted.empty()) line += " " + LogSafe(aborted, 2 * kMaxFieldBytes);
    server_.Log(line);
  }

  void OnWritten(beast::error_code ec, bool close) {
    LogRequest(ec ? "aborted: the answer could not be written: " + ec.message() : std::string());
    --server_.inflight;
    if (server_.draining) server_.CheckDrained();
    if (ec || close) return Close();
    header_parser_.reset();
    string_parser_.reset();
    upload_parser_.reset();
    token_.reset();
    who_ = "anonymous";
    method_.clear();  // a malformed next request must not inherit this one's method (HEAD) or target
    target_.clear();
    last_status_ = 0;
    sent_bytes_ = 0;
    ReadHeader();
  }

  // Abort ends a request that gets no answer (the client left, stalled or
  // trickled): one log line saying why, and the connection closes.
  void Abort(const std::string& why) {
    sent_bytes_ = 0;
    LogRequest("aborted: " + why);
    --server_.inflight;
    if (server_.draining) server_.CheckDrained();
    Close();
  }

  // ReleaseSlot gives back this connection's place in the connection
  // limits, once. Close calls it before the socket closes, so a client that
  // sees the connection end may connect again at once without finding its
  // own finished connection still counted.
  void ReleaseSlot() {
    if (released_) return;
    released_ = true;
    if (counted_) server_.ReleaseAddress(peer_);
    if (!refuse_.empty()) --server_.refusing;
    --server_.sessions;
  }

  void Close() {
    ReleaseSlot();
    beast::error_code ec;
    Layer().socket().shutdown(Protocol::socket::shutdown_both, ec);
    Layer().close();
  }

  Server::Impl& server_;
  Stream stream_;
  const std::string peer_;
  const bool counted_;
  const std::string refuse_;
  bool released_ = false;  // ReleaseSlot ran (on the strand, or in the destructor)
  bool idle_ = false;  // waiting for a request header (on the strand only)
  bool request_open_ = false;  // a request began and its log line is not written yet
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_parser_;
  std::optional<http::request_parser<http::string_body>> string_parser_;
  std::optional<http::request_parser<UploadBody>> upload_parser_;
  std::optional<Upload> upload_;
  std::unique_ptr<Sha256> hasher_;
  std::optional<TokenRecord> token_;
  std::string who_ = "anonymous";
  std::string method_;
  std::string target_;
  Target route_;
  bool keep_alive_ = false;
  Clock::time_point started_{};
  Clock::time_point wait_started_{};
  Clock::time_point first_byte_{};
  Clock::time_point body_started_{};
  uint64_t header_bytes_ = 0;
  uint64_t body_bytes_ = 0;
  uint64_t upload_limit_ = 0;
  bool rate_bound_ = false;  // the pending body read's deadline is the minimum rate's
  int last_status_ = 0;
  uint64_t sent_bytes_ = 0;
};

}  // namespace

template <bool kTls, class Acceptor>
void Server::Impl::Accept(Acceptor& acceptor) {
  acceptor.async_accept(net::make_strand(ioc), [this, &acceptor](beast::error_code ec, auto socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      using Protocol = typename Acceptor::protocol_type;
      constexpr bool kTcp = std::is_same_v<Protocol, net::ip::tcp>;
      std::string peer = "unix";
      if constexpr (kTcp) {
        beast::error_code peer_ec;
        auto endpoint = socket.remote_endpoint(peer_ec);
        peer = peer_ec ? std::string("?") : endpoint.address().to_string();
      }
      std::string refuse;
      bool counted = false;
      if (sessions.load() - refusing.load() >= options.max_connections) {
        refuse = "all " + std::to_string(options.max_connections) + " connection slots are in use";
      } else if (kTcp && !(counted = AcquireAddress(peer))) {
        refuse = "this address has " + std::to_string(options.max_connections_per_address) + " connections open already";
      }
      if (!refuse.empty() && refusing.load() >= kMaxRefusing) {
        // Too many to even answer: close at once (logged, it is not a request).
        Log(LogSafe(peer, 64) + " connection closed unanswered: " + refuse);
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        std::make_shared<Session<Protocol, kTls>>(*this, std::move(socket), std::move(peer), counted, std::move(refuse))
            ->Start();
      }
    }
    Accept<kTls>(acceptor);
  });
}

bool Server::Impl::AcquireAddress(const std::string& address) {
  std::lock_guard lock(abuse_mutex);
  uint32_t& count = per_address[address];
  if (count >= options.max_connections_per_address) {
    if (count == 0) per_address.erase(address);
    return false;
  }
  ++count;
  return true;
}

void Server::Impl::ReleaseAddress(const std::string& address) {
  std::lock_guard lock(abuse_mutex);
  auto it = per_address.find(address);
  if (it == per_address.end()) return;
  if (--it->second == 0) per_address.erase(it);
}

namespace {

// Refill brings a bucket up to date; Seconds until it holds one token.
void Refill(Server::Impl::Bucket& bucket, const ServerOptions& options, Clock::time_point now) {
  const double elapsed = std::chrono::duration<double>(now - bucket.last).count();
  bucket.tokens = std::min<double>(options.denied_burst, bucket.tokens + elapsed * options.denied_per_second);
  bucket.last = now;
}

uint32_t SecondsUntilToken(const Server::Impl::Bucket& bucket, const ServerOptions& options) {
  if (options.denied_per_second <= 0) return 3600;
  const double wait = (1.0 - bucket.tokens) / options.denied_per_second;
  return static_cast<uint32_t>(std::clamp(std::ceil(wait), 1.0, 3600.0));
}

}  // namespace

bool Server::Impl::DrawDenial(const std::string& address, uint32_t& retry_after) {
  const auto now = Clock::now();
  std::lock_guard lock(abuse_mutex);
  auto it = buckets.find(address);
  if (it == buckets.end()) {
    if (buckets.size() >= kMaxBuckets) {
      // Drop the buckets that are full again (idle addresses); if that frees
      // nothing, start over (bounded memory beats remembering every address).
      for (auto at = buckets.begin(); at != buckets.end();) {
        Refill(at->second, options, now);
        at = at->second.tokens >= options.denied_burst ? buckets.erase(at) : std::next(at);
      }
      if (buckets.size() >= kMaxBuckets) buckets.clear();
    }
    it = buckets.emplace(address, Bucket{static_cast<double>(options.denied_burst), now}).first;
  }
  Refill(it->second, options, now);
  if (it->second.tokens < 1.0) {
    retry_after = SecondsUntilToken(it->second, options);
    return false;
  }
  it->second.tokens -= 1.0;
  return true;
}

bool Server::Impl::OverLimit(const std::string& address, uint32_t& retry_after) {
  const auto now = Clock::now();
  std::lock_guard lock(abuse_mutex);
  auto it = buckets.find(address);
  if (it == buckets.end()) return false;
  Refill(it->second, options, now);
  if (it->second.tokens >= 1.0) return false;
  retry_after = SecondsUntilToken(it->second, options);
  return true;
}

std::optional<AuditRecord> Server::Impl::NoteDenial(const std::string& address, const std::string& reason,
                                                   const std::string& who, const std::string& sample) {
  bool first = false;
  {
    std::lock_guard lock(abuse_mutex);
    std::pair<std::string, std::string> key(address, reason);
    if (!denials.contains(key) && denials.size() >= kMaxDenialKeys) key.first = "*";
    Denials& d = denials[key];
    first = d.count++ == 0;
    if (first) {
      d.who = who;
      d.sample = sample;
    }
  }
  if (!first) return std::nullopt;
  return AuditRecord{0, 0, LogSafe(who, 64), "denied-request", LogSafe(address, 64), "denied",
                     "HTTP " + reason + " " + sample};
}

void Server::Impl::FlushDenials(bool now_on_this_thread) {
  std::map<std::pair<std::string, std::string>, Denials> window;
  {
    std::lock_guard lock(abuse_mutex);
    window.swap(denials);
  }
  std::vector<AuditRecord> rows;
  const std::string seconds = std::to_string(options.audit_window.count());
  for (const auto& [key, d] : window) {
    if (d.count <= 1) continue;  // the first was written already
    rows.push_back({0, 0, LogSafe(d.who, 64), "denied-request", LogSafe(key.first, 64), "denied",
                    "HTTP " + key.second + ": " + std::to_string(d.count - 1) + " more in this window (up to " +
                        seconds + " s) after " + d.sample});
  }
  if (rows.empty()) return;
  auto write = [this, rows = std::move(rows)] {
    for (const auto& row : rows) (void)registry.catalog().Audit(row);
  };
  if (now_on_this_thread) {
    write();
  } else {
    net::post(pool, std::move(write));
  }
}

void Server::Impl::ScheduleAuditFlush() {
  audit_timer.expires_after(options.audit_window);
  audit_timer.async_wait([this](beast::error_code ec) {
    if (ec) return;
    FlushDenials(false);
    if (!draining) ScheduleAuditFlush();
  });
}

void Server::Impl::BeginDrain() {
  if (draining.exchange(true)) return;
  Log("draining: no new connections; waiting for " + std::to_string(inflight.load()) + " request(s)");
  beast::error_code ec;
  tcp_acceptor.close(ec);
  if (unix_acceptor.is_open()) {
    unix_acceptor.close(ec);
    ::unlink(options.unix_socket.c_str());
  }
  signals.cancel(ec);
  audit_timer.cancel();
  drain_deadline = Clock::now() + options.drain_timeout;
  std::vector<std::shared_ptr<SessionBase>> open;
  {
    std::lock_guard lock(live_mutex);
    for (auto& [raw, weak] : live) {
      if (auto session = weak.lock()) open.push_back(std::move(session));
    }
  }
  for (auto& session : open) session->CloseIfIdle();
  open.clear();
  CheckDrained();
}

void Server::Impl::CheckDrained() {
  net::post(ioc, [this] {
    // Done when no connection is left: one whose request header has just
    // arrived is still a session, so it cannot be dropped between its read
    // and its count in `inflight`.
    if ((inflight.load() == 0 && sessions.load() == 0) || Clock::now() >= drain_deadline) {
      if (inflight.load() != 0) Log("drain timeout: stopping with requests in flight");
      ioc.stop();
      return;
    }
    drain_timer.expires_after(std::chrono::milliseconds(50));
    drain_timer.async_wait([this](beast::error_code ec) {
      if (!ec) CheckDrained();
    });
  });
}

void Server::Impl::Join() {
  std::call_once(joined, [this] {
    for (auto& t : threads) t.join();
    pool.join();
    FlushDenials(true);  // the last window's counts, on this thread: the pool is gone
  });
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  Stop();
  Wait();
}

uint16_t Server::port() const { return impl_->bound_port; }

void Server::Wait() { impl_->Join(); }

void Server::Stop() {
  net::post(impl_->ioc, [impl = impl_.get()] { impl->BeginDrain(); });
}

Result<std::unique_ptr<Server>> Server::Start(Registry& registry, const ServerOptions& options) {
  auto impl = std::make_unique<Impl>(registry, options);
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "HTTPS needs both a certificate and its key (--tls-cert, --tls-key)");
  }
  if (!options.tls_cert_file.empty()) {
    auto tls = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
    beast::error_code tls_ec;
    tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                         net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 |
                         net::ssl::context::single_dh_use,
                     tls_ec);
    tls->use_certificate_chain_file(options.tls_cert_file, tls_ec);
    if (tls_ec) {
      return MakeError(ErrorCode::kIo, 0, "cannot load the TLS certificate chain: " + tls_ec.message(), options.tls_cert_file);
    }
    tls->use_private_key_file(options.tls_key_file, net::ssl::context::pem, tls_ec);
    if (tls_ec) {
      return MakeError(ErrorCode::kIo, 0,
                       "cannot load the TLS private key, or it does not match the certificate: " + tls_ec.message(),
                       options.tls_key_file);
    }
    if (SSL_CTX_check_private_key(tls->native_handle()) != 1) {
      return MakeError(ErrorCode::kInvalidArgument, 0, "the TLS private key does not match the certificate", options.tls_key_file);
    }
    impl->tls = std::move(tls);
  }
  if (options.min_transfer_rate != 0 && options.transfer_grace.count() < 1) {
    return MakeError(ErrorCode::kInvalidArgument, 0, "the transfer grace period must be at least 1 s");
  }
  const std::string where = options.host + ":" + std::to_string(options.port);
  beast::error_code ec;
  auto address = net::ip::make_address(options.host, ec);
  if (ec) return MakeError(ErrorCode::kInvalidArgument, 0, "not an IP address: " + ec.message(), options.host);
  net::ip::tcp::endpoint endpoint(address, options.port);
  impl->tcp_acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->tcp_acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->tcp_acceptor.bind(endpoint, ec);
  if (!ec) impl->tcp_acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return MakeError(ErrorCode::kIo, 0, "cannot listen: " + ec.message(), where);
  if (!options.unix_socket.empty()) {
    // Replace a stale socket, but never delete some other file the option names by mistake.
    struct stat st{};
    if (::lstat(options.unix_socket.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return MakeError(ErrorCode::kIo, 0, "cannot listen: exists and is not a socket", options.unix_socket);
      }
      ::unlink(options.unix_socket.c_str());
    }
    net::local::stream_protocol::endpoint unix_endpoint(options.unix_socket);
    impl->unix_acceptor.open(unix_endpoint.protocol(), ec);
    if (!ec) impl->unix_acceptor.bind(unix_endpoint, ec);
    if (!ec) impl->unix_acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return MakeError(ErrorCode::kIo, 0, "cannot listen: " + ec.message(), options.unix_socket);
    ::chmod(options.unix_socket.c_str(), 0660);
    impl->Accept<false>(impl->unix_acceptor);
  }
  impl->bound_port = impl->tcp_acceptor.local_endpoint(ec).port();
  if (impl->tls) {
    impl->Accept<true>(impl->tcp_acceptor);
  } else {
    impl->Accept<false>(impl->tcp_acceptor);
  }
  impl->ScheduleAuditFlush();
  impl->signals.async_wait([raw = impl.get()](beast::error_code e, int signal) {
    if (e) return;
    raw->Log(std::string("received ") + (signal == SIGTERM ? "SIGTERM" : "SIGINT"));
    raw->BeginDrain();
  });
  for (unsigned i = 0; i < std::max(1u, options.io_threads); ++i) {
    impl->threads.emplace_back([raw = impl.get()] { raw->ioc.run(); });
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

}  // namespace ckptguard::daemon

// Server: Boost.Beast HTTP/1.1 over TCP (and a Unix socket), one strand per
// connection, blocking work (scan, sign, SQLite, hashing) on a worker pool.
#include "ckptguard/daemon/server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/optional.hpp>
#include <chrono>
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
        pool(std::max(1u, options.workers)) {}

  // Declared before the io_context: sessions still queued in it when it is
  // destroyed touch these from their destructors.
  Registry& registry;
  ServerOptions options;
  std::atomic<uint32_t> sessions{0};
  std::atomic<uint32_t> inflight{0};
  std::atomic<bool> draining{false};
  Clock::time_point drain_deadline{};
  std::mutex log_mutex;
  std::once_flag joined;
  std::mutex live_mutex;  // guards live: every session, to close idle ones on drain
  std::map<SessionBase*, std::weak_ptr<SessionBase>> live;
  uint16_t bound_port = 0;
  net::io_context ioc;
  net::ip::tcp::acceptor tcp_acceptor;
  net::local::stream_protocol::acceptor unix_acceptor;
  net::signal_set signals;
  net::steady_timer drain_timer;
  net::thread_pool pool;
  std::vector<std::thread> threads;

  void Log(const std::string& line) {
    std::lock_guard lock(log_mutex);
    std::cerr << TimeNow() << " " << line << "\n";
  }
  template <class Acceptor>
  void Accept(Acceptor& acceptor);
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
  switch (error.code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kMalformed:
      status = http::status::bad_request;
      break;
    case ErrorCode::kLimitExceeded:
      status = http::status::payload_too_large;
      break;
    default:
      break;
  }
  return ErrorReply(status, error.ToString());
}

template <class Protocol>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Protocol>> {
 public:
  using Stream = beast::basic_stream<Protocol, net::any_io_executor, beast::unlimited_rate_policy>;

  Session(Server::Impl& server, typename Protocol::socket socket)
      : server_(server), stream_(std::move(socket)) {
    ++server_.sessions;
  }
  ~Session() override {
    {
      std::lock_guard lock(server_.live_mutex);
      server_.live.erase(this);
    }
    --server_.sessions;
  }

  void Start() {
    {
      std::lock_guard lock(server_.live_mutex);
      server_.live.emplace(this, std::weak_ptr<SessionBase>(this->shared_from_this()));
    }
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->ReadHeader(); });
  }

  void CloseIfIdle() override {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->idle_) self->stream_.cancel();  // the header read ends with operation_aborted: Close
    });
  }

 private:
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
    stream_.expires_after(server_.options.header_timeout);
    idle_ = true;
    http::async_read_header(stream_, buffer_, *header_parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    idle_ = false;
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return Close();
    }
    if (ec) {
      Reply reply = ErrorReply(ec == http::error::header_limit ? http::status::request_header_fields_too_large
                                                               : http::status::bad_request,
                               "bad request header: " + ec.message());
      reply.close = true;
      started_ = Clock::now();
      ++server_.inflight;
      return Send(std::move(reply));
    }
    started_ = Clock::now();
    ++server_.inflight;
    auto& req = header_parser_->get();
    method_ = std::string(req.method_string());
    target_ = std::string(req.target());
    keep_alive_ = req.keep_alive();
    route_ = ParseTarget(target_);
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
      denied->close = true;  // the body (if any) is not read
      const std::string detail = method_ + " " + route_.path + ": " + std::string(denied->body.substr(0, 200));
      net::post(server_.pool, [self = this->shared_from_this(), denied = std::move(*denied), detail]() mutable {
        (void)self->server_.registry.catalog().Audit({0, 0, self->who_, "auth", self->route_.path, "denied", detail});
        net::dispatch(self->stream_.get_executor(),
                      [self, denied = std::move(denied)]() mutable { self->Send(std::move(denied)); });
      });
      return;
    }
    auto& req = header_parser_->get();
    const bool streams_file =
        method_ == "POST" && route_.segments.size() == 2 && route_.segments[0] == "v1" &&
        (route_.segments[1] == "checkpoints" ||
         (route_.segments[1] == "verify" && !route_.query.contains("sha256")));
    if (streams_file) {
      if (req.has_content_length()) {
        auto length = header_parser_->content_length();
        if (length && *length > server_.options.max_upload_bytes) {
          Reply reply = ErrorReply(http::status::payload_too_large,
                                   "the upload is " + std::to_string(*length) + " bytes; this registry takes at most " +
                                       std::to_string(server_.options.max_upload_bytes));
          reply.close = true;
          return Send(std::move(reply));
        }
      }
      const bool verify_only = route_.segments[1] == "verify";
      if (verify_only) {
        hasher_ = std::make_unique<Sha256>();
      } else {
        auto upload = server_.registry.blobs().BeginUpload(server_.options.max_upload_bytes);
        if (!upload) return Send(FromError(upload.error()));
        upload_.emplace(std::move(*upload));
      }
      upload_parser_.emplace(std::move(*header_parser_));
      upload_parser_->body_limit(server_.options.max_upload_bytes);
      // Beast reads what the buffer has room for (512 bytes when it only
      // ever held a header): give uploads large reads.
      buffer_.reserve(kUploadReadBytes);
      if (verify_only) {
        upload_parser_->get().body().hasher = hasher_.get();
      } else {
        upload_parser_->get().body().upload = &*upload_;
      }
      if (expect_continue) return SendContinue([self = this->shared_from_this()] { self->ReadUploadChunk(); });
      return ReadUploadChunk();
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
      self->stream_.expires_after(self->server_.options.idle_timeout);
      http::async_read(self->stream_, self->buffer_, *self->string_parser_,
                       [self](beast::error_code ec, std::size_t) { self->OnSmallBody(ec); });
    };
    if (expect_continue) return SendContinue(read_body);
    read_body();
  }

  template <class Next>
  void SendContinue(Next next) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    stream_.expires_after(server_.options.idle_timeout);
    net::async_write(stream_, net::buffer(kContinue, sizeof kContinue - 1),
                     [self = this->shared_from_this(), next](beast::error_code ec, std::size_t) {
                       if (ec) return self->Abort();
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
    stream_.expires_after(std::min<Clock::duration>(server_.options.idle_timeout, deadline - now));
    http::async_read_some(stream_, buffer_, *upload_parser_,
                          [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                            self->OnUploadChunk(ec);
                          });
  }

  void OnUploadChunk(beast::error_code ec) {
    if (ec) {
      auto& body = upload_parser_->get().body();
      if (ec == http::error::body_limit || (body.error && body.error->code == ErrorCode::kLimitExceeded)) {
        Reply reply = ErrorReply(http::status::payload_too_large,
                                 "the upload is larger than this registry takes (" +
                                     std::to_string(server_.options.max_upload_bytes) + " bytes)");
        reply.close = true;
        upload_.reset();
        return Send(std::move(reply));
      }
      if (body.error) {
        Reply reply = FromError(*body.error);
        reply.close = true;
        upload_.reset();
        return Send(std::move(reply));
      }
      upload_.reset();  // timeout, reset, malformed chunking: drop the temp file and the connection
      return Abort();
    }
    if (!upload_parser_->is_done()) return ReadUploadChunk();
    stream_.expires_never();
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
    if (ec) return Abort();
    stream_.expires_never();
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

  void Send(Reply reply) {
    stream_.expires_after(server_.options.idle_timeout);
    const bool close = reply.close || !keep_alive_ || server_.draining;
    reply.who = who_;
    last_status_ = static_cast<int>(reply.status);
    if (method_ == "HEAD") {
      // The header only, with the length a GET would have had (RFC 9110
      // 9.3.2): a body here would be read as the next response.
      uint64_t length = reply.body.size();
      if (!reply.file.empty()) {
        struct stat st{};
        length = ::stat(reply.file.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
      }
      auto res = std::make_shared<http::response<http::empty_body>>(reply.status, 11);
      res->set(http::field::server, "ckptguardd");
      res->set(http::field::content_type, reply.content_type);
      res->content_length(length);
      res->keep_alive(!close);
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
      res->set(http::field::server, "ckptguardd");
      res->set(http::field::content_type, reply.content_type);
      res->keep_alive(!close);
      res->prepare_payload();
      sent_bytes_ = res->body().size();
      http::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, std::size_t) {
        self->OnWritten(ec, close);
      });
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>(reply.status, 11);
    res->set(http::field::server, "ckptguardd");
    res->set(http::field::content_type, reply.content_type);
    res->body() = std::move(reply.body);
    res->keep_alive(!close);
    res->prepare_payload();
    sent_bytes_ = res->body().size();
    http::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, std::size_t) {
      self->OnWritten(ec, close);
    });
  }

  void OnWritten(beast::error_code ec, bool close) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_).count();
    server_.Log(who_ + " " + method_ + " " + target_.substr(0, 200) + " " + std::to_string(last_status_) + " " +
                std::to_string(sent_bytes_) + "B " + std::to_string(ms) + "ms");
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
    ReadHeader();
  }

  void Abort() {
    --server_.inflight;
    if (server_.draining) server_.CheckDrained();
    Close();
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_both, ec);
    stream_.close();
  }

  Server::Impl& server_;
  Stream stream_;
  bool idle_ = false;  // waiting for a request header (on the strand only)
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
  int last_status_ = 0;
  uint64_t sent_bytes_ = 0;
};

}  // namespace

template <class Acceptor>
void Server::Impl::Accept(Acceptor& acceptor) {
  acceptor.async_accept(net::make_strand(ioc), [this, &acceptor](beast::error_code ec, auto socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      using Protocol = typename Acceptor::protocol_type;
      if (sessions.load() >= options.max_connections) {
        Log("refused a connection: " + std::to_string(options.max_connections) + " already open");
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        std::make_shared<Session<Protocol>>(*this, std::move(socket))->Start();
      }
    }
    Accept(acceptor);
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
    impl->Accept(impl->unix_acceptor);
  }
  impl->bound_port = impl->tcp_acceptor.local_endpoint(ec).port();
  impl->Accept(impl->tcp_acceptor);
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

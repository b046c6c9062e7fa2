// Catalog::Open (which backend a spec names), RedactCatalogSpec and what the
// two backends share (catalog_internal.h).
#include "ckptguard/daemon/catalog.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <limits>
#include <new>
#include <string_view>
#include <utility>

#include "catalog_internal.h"

namespace ckptguard::daemon {

namespace catalog_internal {

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool IsScope(std::string_view s) { return s == "read" || s == "write" || s == "admin"; }

bool IsStatus(std::string_view s) { return s == "stored" || s == "rejected" || s == "revoked"; }

std::unexpected<Error> InvalidArgument(std::string detail) {
  return MakeError(ErrorCode::kInvalidArgument, 0, std::move(detail), std::string(kWhere));
}

std::string ShapeToText(const std::vector<int64_t>& shape) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) out.push_back(',');
    out += std::to_string(shape[i]);
  }
  return out;
}

Result<std::vector<int64_t>> ShapeFromText(std::string_view text) {
  std::vector<int64_t> out;
  if (text.empty()) return out;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    const std::string_view part = text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || ptr != part.data() + part.size() || part.empty()) {
      return MakeError(ErrorCode::kMalformed, 0, "manifest shape is not a comma list of integers", std::string(kWhere));
    }
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::vector<std::string> SplitPrefixes(std::string_view prefixes) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < prefixes.size()) {
    size_t end = prefixes.find('\n', start);
    if (end == std::string_view::npos) end = prefixes.size();
    if (end > start) out.emplace_back(prefixes.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Status CheckCheckpoint(const CheckpointRecord& r) {
  if (r.name.empty()) return InvalidArgument("insert checkpoint: empty name");
  if (!IsSha256Hex(r.sha256)) return InvalidArgument("insert checkpoint: sha256 is not 64 lower-case hex digits");
  if (!IsStatus(r.status)) return InvalidArgument("insert checkpoint: status must be stored, rejected or revoked");
  if (r.size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return InvalidArgument("insert checkpoint: size too large");
  }
  return OkStatus();
}

Status CheckKey(const KeyRecord& key) {
  if (!IsSha256Hex(key.key_id)) return InvalidArgument("add key: key_id is not 64 lower-case hex digits");
  if (key.public_pem.empty()) return InvalidArgument("add key: empty public key");
  if (key.curve != "P-256" && key.curve != "P-384" && key.curve != "P-521") {
    return InvalidArgument("add key: curve must be P-256, P-384 or P-521");
  }
  if (key.state != "active" && key.state != "retired" && key.state != "revoked") {
    return InvalidArgument("add key: state must be active, retired or revoked");
  }
  return OkStatus();
}

Result<std::string> CheckToken(const std::string& name, const std::string& token_sha256, const std::string& scope,
                               const std::vector<std::string>& prefixes) {
  if (name.empty()) return InvalidArgument("add token: empty name");
  if (!IsSha256Hex(token_sha256)) return InvalidArgument("add token: token_sha256 is not 64 lower-case hex digits");
  if (!IsScope(scope)) return InvalidArgument("add token: scope must be read, write or admin");
  if (!prefixes.empty() && scope != "write") return InvalidArgument("add token: only write tokens take name prefixes");
  std::string joined;
  for (const std::string& p : prefixes) {
    if (p.empty() || p.find('\n') != std::string::npos) return InvalidArgument("add token: empty prefix or a newline in one");
    if (!joined.empty()) joined.push_back('\n');
    joined += p;
  }
  return joined;
}

Result<int64_t> CheckpointLimit(const CheckpointQuery& query) {
  if (!query.status.empty() && !IsStatus(query.status)) {
    return InvalidArgument("list checkpoints: status must be stored, rejected or revoked");
  }
  return query.limit == 0 ? 100 : std::min<int64_t>(query.limit, 1000);
}

std::unexpected<Error> ReservationLost(const std::string& sha256) {
  return MakeError(ErrorCode::kUnavailable, 0,
                   "the reservation of blob " + sha256 +
                       " is gone (a sweep found this server's catalog session dead); nothing was written, push again",
                   std::string(kWhere));
}

int64_t AuditLimit(uint32_t limit) { return limit == 0 ? 1000 : std::min<int64_t>(limit, 1000); }

TagDecision DecideTag(std::optional<CheckpointRecord> holder, const CheckpointRecord& r, TagGuard& guard) {
  TagDecision out;
  if (holder && holder->sha256 == r.sha256 && holder->status == "stored") {
    guard.same_content = true;
    out.write = false;
    out.id = holder->id;
    guard.holder = std::move(holder);
    return out;
  }
  if (holder && holder->sha256 != r.sha256) {
    if (!guard.allow_move) {
      out.write = false;
      guard.holder = std::move(holder);
      return out;
    }
    out.moved_from = holder->sha256;
    guard.moved_from = out.moved_from;
  }
  return out;
}

}  // namespace catalog_internal

namespace {

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

std::string RedactCatalogSpec(std::string_view spec) {
  std::string out(spec);
  const size_t scheme = out.find("://");
  if (scheme == std::string::npos) return out;
  // URI user info: scheme://user:password@host...; the authority ends at the
  // first '/', '?' or '#' after the scheme, and its last '@' ends the user info.
  const size_t authority = scheme + 3;
  size_t authority_end = out.find_first_of("/?#", authority);
  if (authority_end == std::string::npos) authority_end = out.size();
  const size_t at = out.rfind('@', authority_end == 0 ? 0 : authority_end - 1);
  if (at != std::string::npos && at >= authority) {
    const size_t colon = out.find(':', authority);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
  }
  // Query parameters: ...?password=secret&... (libpq accepts them too).
  const size_t query = out.find('?');
  if (query != std::string::npos) {
    size_t pos = query + 1;
    while (pos < out.size()) {
      size_t end = out.find('&', pos);
      if (end == std::string::npos) end = out.size();
      if (StartsWith(std::string_view(out).substr(pos, end - pos), "password=")) {
        const size_t value = pos + 9;
        out.replace(value, end - value, "***");
        end = value + 3;
      }
      pos = end + 1;
    }
  }
  return out;
}

CatalogOptions CatalogOptions::Clamped() const {
  CatalogOptions out = *this;
  out.max_attempts = std::clamp(max_attempts, 1, kMaxAttempts);
  out.connect_timeout_seconds = std::clamp(connect_timeout_seconds, 1, kMaxConnectTimeoutSeconds);
  return out;
}

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& spec, const CatalogOptions& options) {
  try {
    if (StartsWith(spec, "postgresql://") || StartsWith(spec, "postgres://")) {
      return catalog_internal::OpenPostgres(spec, options.Clamped());
    }
    if (StartsWith(spec, "postgresql:") || StartsWith(spec, "postgres:")) {
      return catalog_internal::InvalidArgument("catalog: a PostgreSQL catalog is named by a URI, postgresql://...");
    }
    if (StartsWith(spec, "sqlite:")) return catalog_internal::OpenSqlite(spec.substr(7));
    return catalog_internal::OpenSqlite(spec);
  } catch (const std::bad_alloc&) {
    return MakeError(ErrorCode::kIo, 0, "open catalog: out of memory", std::string(catalog_internal::kWhere));
  }
}

}  // namespace ckptguard::daemon

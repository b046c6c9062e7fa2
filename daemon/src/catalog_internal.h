// What the catalog backends (catalog_sqlite.cc, catalog_postgres.cc) share:
// argument checks and the text forms of shapes and token prefixes, so that
// both accept and refuse the same calls and store the same values.
// Private to daemon/src.
#ifndef CKPTGUARD_DAEMON_CATALOG_INTERNAL_H_
#define CKPTGUARD_DAEMON_CATALOG_INTERNAL_H_

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/daemon/catalog.h"
#include "ckptguard/error.h"

namespace ckptguard::daemon::catalog_internal {

inline constexpr std::string_view kWhere = "catalog";

// OpenSqlite / OpenPostgres: the backends' Open (Catalog::Open dispatches).
Result<std::unique_ptr<Catalog>> OpenSqlite(const std::string& db_path);
Result<std::unique_ptr<Catalog>> OpenPostgres(const std::string& uri, const CatalogOptions& options);

int64_t Now();
bool IsSha256Hex(std::string_view s);
bool IsScope(std::string_view s);
bool IsStatus(std::string_view s);
std::unexpected<Error> InvalidArgument(std::string detail);

// ShapeToText: "768,3072" ("" for a scalar); ShapeFromText parses it back.
std::string ShapeToText(const std::vector<int64_t>& shape);
Result<std::vector<int64_t>> ShapeFromText(std::string_view text);

// Token prefixes are stored one per line ("" = any name).
std::vector<std::string> SplitPrefixes(std::string_view joined);

// The argument checks every backend runs before it touches the database.
Status CheckCheckpoint(const CheckpointRecord& r);
Status CheckKey(const KeyRecord& key);
// CheckToken returns the prefixes joined for storage.
Result<std::string> CheckToken(const std::string& name, const std::string& token_sha256, const std::string& scope,
                               const std::vector<std::string>& prefixes);
// ReservationLost: the error of an insert whose blob reservation a sweep
// removed (it presumed the reserving server dead): nothing was written.
std::unexpected<Error> ReservationLost(const std::string& sha256);
// CheckpointLimit: query.limit clamped to 1..1000 (0 means 100); refuses an unknown status.
Result<int64_t> CheckpointLimit(const CheckpointQuery& query);
// AuditLimit: `limit` clamped to 1..1000 (0 means 1000).
int64_t AuditLimit(uint32_t limit);

// The columns the backends select for a record, in the order the row
// readers below take them (literals, so that queries stay compile-time
// constants).
#define CKG_CATALOG_CHECKPOINT_COLUMNS                                                           \
  "id, name, tag, sha256, size, format, verdict, status, signature, key_id, uploader, created_at, " \
  "revoked_reason, revoked_by, revoked_at"
#define CKG_CATALOG_KEY_COLUMNS "key_id, public_pem, curve, state, created_at, revoked_reason, revoked_at"
#define CKG_CATALOG_TOKEN_COLUMNS "name, scope, created_at, revoked, prefixes"

// CheckpointFromRow, KeyFromRow, TokenFromRow read one selected row of
// those columns from either backend: `row` has Text(col) and Int(col).
template <typename Row>
CheckpointRecord CheckpointFromRow(const Row& row) {
  CheckpointRecord r;
  r.id = row.Int(0);
  r.name = row.Text(1);
  r.tag = row.Text(2);
  r.sha256 = row.Text(3);
  r.size = static_cast<uint64_t>(row.Int(4));
  r.format = row.Text(5);
  r.verdict = row.Text(6);
  r.status = row.Text(7);
  r.signature = row.Text(8);
  r.key_id = row.Text(9);
  r.uploader = row.Text(10);
  r.created_at = row.Int(11);
  r.revoked_reason = row.Text(12);
  r.revoked_by = row.Text(13);
  r.revoked_at = row.Int(14);
  return r;
}

template <typename Row>
KeyRecord KeyFromRow(const Row& row) {
  KeyRecord k;
  k.key_id = row.Text(0);
  k.public_pem = row.Text(1);
  k.curve = row.Text(2);
  k.state = row.Text(3);
  k.created_at = row.Int(4);
  k.revoked_reason = row.Text(5);
  k.revoked_at = row.Int(6);
  return k;
}

template <typename Row>
TokenRecord TokenFromRow(const Row& row) {
  TokenRecord t;
  t.name = row.Text(0);
  t.scope = row.Text(1);
  t.created_at = row.Int(2);
  t.revoked = row.Int(3) != 0;
  t.prefixes = SplitPrefixes(row.Text(4));
  return t;
}

// TagDecision is what InsertCheckpoint does with a stored row's NAME:TAG
// given its current holder (read under the backend's write lock), as
// TagGuard documents: write the row (moved_from names a holder it replaces),
// or return `id` without writing (0: refused, the guard holds the holder;
// else the holder's id for the same content).
struct TagDecision {
  bool write = true;
  int64_t id = 0;
  std::string moved_from;
};
TagDecision DecideTag(std::optional<CheckpointRecord> holder, const CheckpointRecord& r, TagGuard& guard);

}  // namespace ckptguard::daemon::catalog_internal

#endif  // CKPTGUARD_DAEMON_CATALOG_INTERNAL_H_

// Private to daemon/: request targets and the JSON shapes of the API.
#ifndef CKPTGUARD_DAEMON_HTTP_UTIL_H_
#define CKPTGUARD_DAEMON_HTTP_UTIL_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ckptguard/daemon/catalog.h"
#include "ckptguard/daemon/registry.h"

namespace ckptguard::daemon {

// Target: "/v1/checkpoints?name=a%2Fb" -> path, segments {"v1","checkpoints"}, query {name: "a/b"}.
struct Target {
  std::string path;
  std::vector<std::string> segments;
  std::map<std::string, std::string> query;
  std::string Query(const std::string& key) const {
    auto it = query.find(key);
    return it == query.end() ? std::string() : it->second;
  }
};
// ParseTarget never fails: bad percent escapes are kept literally, at most
// 32 segments and 32 query parameters are kept.
Target ParseTarget(const std::string& target);
std::string PercentEncode(const std::string& text);
std::optional<uint64_t> ParseUint(const std::string& text);

// RedactTarget returns a request target fit for a log line or the audit log:
// the value of every query parameter whose (decoded) name looks like a
// credential (token, key, secret, password, auth, sig, credential) becomes
// REDACTED, and so does anything shaped like one of our tokens ("ckg_" and
// hex) anywhere in it.
std::string RedactTarget(std::string_view target);
// LogSafe returns `text` cut to `max_len` bytes (then "...") with backslash,
// control characters and DEL escaped (\\, \xNN), so what a client sent
// stays on one line (a request target has no spaces: Beast refuses them).
std::string LogSafe(std::string_view text, size_t max_len);

nlohmann::json RecordJson(const CheckpointRecord& record, bool details);
nlohmann::json VerifyJson(const VerifyReport& report);

}  // namespace ckptguard::daemon

#endif  // CKPTGUARD_DAEMON_HTTP_UTIL_H_

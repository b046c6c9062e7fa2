#include "http_util.h"

#include <cctype>
#include <charconv>

namespace ckptguard::daemon {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? HexValue(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? HexValue(text[i + 2]) : -1;
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

}  // namespace

Target ParseTarget(const std::string& target) {
  constexpr size_t kMaxParts = 32;
  Target out;
  const size_t q = target.find('?');
  out.path = PercentDecode(std::string_view(target).substr(0, q), false);
  size_t start = 0;
  while (start <= out.path.size() && out.segments.size() < kMaxParts) {
    size_t end = out.path.find('/', start);
    if (end == std::string::npos) end = out.path.size();
    if (end > start) out.segments.push_back(out.path.substr(start, end - start));
    start = end + 1;
  }
  if (q == std::string::npos) return out;
  std::string_view query = std::string_view(target).substr(q + 1);
  while (!query.empty() && out.query.size() < kMaxParts) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    std::string key = PercentDecode(pair.substr(0, eq), true);
    std::string value = eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1), true);
    if (!key.empty()) out.query.emplace(std::move(key), std::move(value));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

std::string PercentEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

namespace {

bool IsCredentialName(std::string name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"token", "key", "secret", "passw", "auth", "sig", "credential", "session", "cookie"}) {
    if (name.find(word) != std::string::npos) return true;
  }
  return false;
}

bool IsTokenChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// RedactTokens replaces "ckg_" followed by 8 or more hex digits (a token,
// whatever the context: a path, a mistyped parameter).
std::string RedactTokens(std::string text) {
  size_t at = 0;
  while ((at = text.find("ckg_", at)) != std::string::npos) {
    size_t end = at + 4;
    while (end < text.size() && IsTokenChar(text[end])) ++end;
    if (end - at - 4 >= 8) {
      text.replace(at, end - at, "ckg_REDACTED");
      at += 12;
    } else {
      at = end;
    }
  }
  return text;
}

}  // namespace

std::string RedactTarget(std::string_view target) {
  const size_t q = target.find('?');
  std::string out(target.substr(0, q));
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    out.push_back('?');
    bool first = true;
    while (true) {
      const size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      const size_t eq = pair.find('=');
      if (!first) out.push_back('&');
      first = false;
      if (eq != std::string_view::npos && IsCredentialName(PercentDecode(pair.substr(0, eq), true))) {
        out.append(pair.substr(0, eq));
        out.append("=REDACTED");
      } else {
        out.append(pair);
      }
      if (amp == std::string_view::npos) break;
      query.remove_prefix(amp + 1);
    }
  }
  // Percent-encoded token characters are decoded first so "%63kg_..." is caught too.
  const std::string decoded = PercentDecode(out, false);
  if (decoded.find("ckg_") != std::string::npos) return RedactTokens(decoded);
  return RedactTokens(std::move(out));
}

std::string LogSafe(std::string_view text, size_t max_len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const bool cut = text.size() > max_len;
  if (cut) text = text.substr(0, max_len);
  out.reserve(text.size() + 8);
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  if (cut) out += "...";
  return out;
}

std::optional<uint64_t> ParseUint(const std::string& text) {
  uint64_t value = 0;
  if (text.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

nlohmann::json RecordJson(const CheckpointRecord& r, bool details) {
  nlohmann::json j = {{"id", r.id},           {"name", r.name},         {"tag", r.tag},
                      {"sha256", r.sha256},   {"size", r.size},         {"format", r.format},
                      {"verdict", r.verdict}, {"status", r.status},     {"key_id", r.key_id},
                      {"uploader", r.uploader}, {"created_at", r.created_at}};
  if (r.status == "revoked") {
    j["revoked"] = {{"reason", r.revoked_reason}, {"by", r.revoked_by}, {"at", r.revoked_at}};
  }
  nlohmann::json findings = nlohmann::json::array();
  for (const FindingRecord& f : r.findings) {
    findings.push_back({{"rule", f.rule}, {"severity", f.severity}, {"message", f.message},
                        {"entry", f.entry}, {"offset", f.offset}, {"global", f.global}});
  }
  j["findings"] = std::move(findings);
  if (details) {
    nlohmann::json manifest = nlohmann::json::array();
    for (const ManifestEntry& m : r.manifest) {
      manifest.push_back({{"key", m.key}, {"dtype", m.dtype}, {"shape", m.shape}});
    }
    j["manifest"] = std::move(manifest);
    nlohmann::json signature = nlohmann::json::parse(r.signature, nullptr, false);
    j["signature"] = signature.is_discarded() ? nlohmann::json() : signature;
  }
  return j;
}

nlohmann::json VerifyJson(const VerifyReport& v) {
  nlohmann::json j = {{"sha256", v.sha256},
                      {"verified", v.verified()},
                      {"catalogued", v.catalogued},
                      {"status", v.status},
                      {"blob_present", v.blob_present},
                      {"unchanged", v.unchanged},
                      {"signature_valid", v.signature_valid},
                      {"key_id", v.key_id},
                      {"key_state", v.key_state},
                      {"detail", v.detail}};
  if (v.record) {
    j["name"] = v.record->name;
    j["tag"] = v.record->tag;
  }
  return j;
}

}  // namespace ckptguard::daemon

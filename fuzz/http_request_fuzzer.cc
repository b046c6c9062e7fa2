// Fuzz target for what ckptguardd does with a request before any route runs:
// Boost.Beast's request parser (http::request_parser<http::empty_body>, with
// the header limit and body limit the server sets in Session::ReadHeader) fed
// through put() in chunks, then ParseTarget (daemon/src/http_util.h) on the
// target; and ParseTarget on the raw input too, which reaches targets Beast
// would refuse.
//
// Invariants checked (abort on violation):
//  * never a crash; put() never consumes more than it was given; a parsed
//    header is at most the header limit;
//  * ParseTarget keeps at most 32 path segments and 32 query parameters, no
//    segment is empty or contains '/', no query key is empty;
//  * ParseTarget inverts PercentEncode: "/" + PercentEncode(s) has the single
//    segment s, and "/x?" + PercentEncode(k) + "=" + PercentEncode(v) has the
//    query {k: v}, for each segment and parameter found;
//  * ParseUint, on each segment: what it accepts is all digits and reads as
//    the number written (leading zeros aside); it accepts every digit string
//    shorter than 20 (all fit in 64 bits).
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/asio/buffer.hpp>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "ckptguard/daemon/server.h"
#include "fuzz_check.h"
#include "http_util.h"

namespace {

namespace http = boost::beast::http;
using ckptguard::daemon::ParseTarget;
using ckptguard::daemon::PercentEncode;
using ckptguard::daemon::Target;
using ckptguard::fuzz::Check;

void CheckTarget(const std::string& raw) {
  const Target t = ParseTarget(raw);
  Check(t.segments.size() <= 32, "at most 32 segments", raw);
  Check(t.query.size() <= 32, "at most 32 query parameters", raw);
  for (const std::string& s : t.segments) {
    Check(!s.empty() && s.find('/') == std::string::npos, "a segment is non-empty and has no '/'", raw);
    const Target one = ParseTarget("/" + PercentEncode(s));
    Check(one.segments.size() == 1 && one.segments[0] == s, "ParseTarget inverts PercentEncode (segment)", s);
    const std::optional<uint64_t> n = ckptguard::daemon::ParseUint(s);
    bool digits = true;
    for (char c : s) digits = digits && c >= '0' && c <= '9';
    if (n) {
      const size_t first = s.find_first_not_of('0');
      const std::string expected = first == std::string::npos ? "0" : s.substr(first);
      Check(digits && std::to_string(*n) == expected, "ParseUint reads the decimal number written", s);
    } else {
      Check(!digits || s.size() >= 20, "ParseUint accepts digit strings shorter than 20", s);
    }
  }
  for (const auto& [k, v] : t.query) {
    Check(!k.empty(), "a query key is non-empty", raw);
    const Target one = ParseTarget("/x?" + PercentEncode(k) + "=" + PercentEncode(v));
    Check(one.query.size() == 1 && one.query.begin()->first == k && one.query.begin()->second == v,
          "ParseTarget inverts PercentEncode (query)", k);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckTarget(std::string(input.substr(0, 4096)));

  const uint32_t header_limit = ckptguard::daemon::ServerOptions{}.max_header_bytes;
  http::request_parser<http::empty_body> parser;
  parser.header_limit(header_limit);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  // Chunk sizes from the first byte, so that split points are fuzzed too.
  const size_t chunk = size == 0 ? 1 : 1 + static_cast<unsigned char>(input[0]) % 64;
  size_t pos = 0, buffered_end = 0;
  boost::beast::error_code ec;
  while (!parser.is_header_done() && pos < size) {
    buffered_end = std::min(size, std::max(buffered_end, pos) + chunk);
    const size_t used = parser.put(boost::asio::buffer(input.data() + pos, buffered_end - pos), ec);
    Check(used <= buffered_end - pos, "put() consumes at most what it was given");
    pos += used;
    if (ec == http::error::need_more) {
      ec = {};
      if (buffered_end == size) break;  // the input ends inside the header
      continue;
    }
    if (ec) break;
  }
  if (!ec && parser.is_header_done()) {
    Check(pos <= header_limit, "a parsed header is within the header limit");
    const auto& req = parser.get();
    CheckTarget(std::string(req.target()));
  }
  return 0;
}

// The registry on a hostile network (issue 15), end to end with the real
// ckptguardd and `ckptguard registry` processes:
//   - HTTPS with certificates made here with the openssl command line: push
//     and pull succeed with --ca-file; a wrong CA, a certificate for another
//     host name and an expired one fail with a clear error; plain http to an
//     address that is not loopback is refused without --insecure;
//   - abuse stays bounded: connection limits answer 503 with Retry-After,
//     denied requests hit 429 with Retry-After and are audited as counts,
//     trickling headers and bodies are dropped, anonymous uploads are capped,
//     a bad name is refused before any body byte;
//   - every request, aborted ones included, is logged once, secrets redacted.
#define BOOST_TEST_MODULE registry_net_test
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ckptguard::testing;
using namespace std::chrono_literals;

namespace {

const std::string kCli = kCliPath;
const std::string kDaemon = kDaemonPath;

void MustRun(const std::string& command) {
  auto r = Run(command + " 2>&1");
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, command << ":\n" << r.out);
}

// Pki: a CA, and server certificates it signs, made with the openssl CLI.
struct Pki {
  fs::path dir;
  explicit Pki(const fs::path& d) : dir(d) { fs::create_directories(dir); }

  std::string Path(const std::string& name) const { return (dir / name).string(); }

  void MakeCa(const std::string& name) {
    MustRun("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + ShellQuote(Path(name + ".key")) +
            " -out " + ShellQuote(Path(name + ".pem")) + " -subj /CN=" + name + " -days 2");
  }
  // MakeServer: a certificate for `san` (e.g. "DNS:localhost,IP:127.0.0.1")
  // signed by `ca`, valid for `days` (negative: already expired).
  void MakeServer(const std::string& name, const std::string& ca, const std::string& san, int days) {
    const std::string ext = Path(name + ".ext");
    std::ofstream(ext) << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
    MustRun("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + ShellQuote(Path(name + ".key")) +
            " -out " + ShellQuote(Path(name + ".csr")) + " -subj /CN=" + name);
    MustRun("openssl x509 -req -in " + ShellQuote(Path(name + ".csr")) + " -CA " + ShellQuote(Path(ca + ".pem")) +
            " -CAkey " + ShellQuote(Path(ca + ".key")) + " -CAcreateserial -days " + std::to_string(days) +
            " -extfile " + ShellQuote(ext) + " -out " + ShellQuote(Path(name + ".pem")));
  }
  std::vector<std::string> ServerArgs(const std::string& name) const {
    return {"--tls-cert", Path(name + ".pem"), "--tls-key", Path(name + ".key")};
  }
};

std::string Cli(const std::string& url, const std::string& token, const std::string& args) {
  return "CKPTGUARD_REGISTRY=" + ShellQuote(url) + " CKPTGUARD_TOKEN=" + ShellQuote(token) + " " + ShellQuote(kCli) +
         " registry " + args + " 2>&1";
}

std::string Benign(const std::string& name) { return (CorpusDir() / "benign" / name).string(); }

// Request sends one raw request from `from` and returns the whole answer.
std::string Request(int port, const std::string& request, const char* from = "127.0.0.1") {
  const int fd = ConnectFrom(port, from);
  BOOST_REQUIRE(fd >= 0);
  SendBytes(fd, request);
  std::string answer = ReadUntilClosed(fd, 30s);
  ::close(fd);
  return answer;
}

int StatusOf(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12) return 0;
  return std::stoi(answer.substr(9, 3));
}

}  // namespace

BOOST_AUTO_TEST_CASE(HttpsEndToEndAndEveryCertificateFailureIsClear) {
  TempDir work;
  Pki pki(work.path / "pki");
  pki.MakeCa("ca");
  pki.MakeCa("other-ca");
  pki.MakeServer("good", "ca", "DNS:localhost,IP:127.0.0.1", 2);
  pki.MakeServer("elsewhere", "ca", "DNS:registry.example", 2);
  pki.MakeServer("expired", "ca", "DNS:localhost,IP:127.0.0.1", -1);

  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "tls", "admin");
  DaemonProcess daemon(data, work.path, pki.ServerArgs("good"));
  const std::string ca = " --ca-file " + ShellQuote(pki.Path("ca.pem"));
  const std::string mlp = Benign("mlp.params");

  // Push and pull over https, by name and by address (both in the certificate).
  auto push = Run(Cli(daemon.Url("localhost"), token, "push" + ca + " --name mlp --tag v1 " + ShellQuote(mlp)));
  BOOST_REQUIRE_MESSAGE(push.exit_code == 0, push.out);
  BOOST_CHECK_MESSAGE(push.out.find("stored as mlp:v1") != std::string::npos, push.out);
  const std::string out = (work.path / "pulled.params").string();
  auto pull = Run(Cli(daemon.Url("127.0.0.1"), token, "pull mlp:v1" + ca + " --out " + ShellQuote(out)));
  BOOST_CHECK_MESSAGE(pull.exit_code == 0, pull.out);
  BOOST_CHECK(ReadFile(out) == ReadFile(mlp));
  // The CA file may also come from the environment.
  auto list = Run("CKPTGUARD_CA_FILE=" + ShellQuote(pki.Path("ca.pem")) + " " + Cli(daemon.Url("localhost"), token, "list"));
  BOOST_CHECK_MESSAGE(list.exit_code == 0 && list.out.find("mlp") != std::string::npos, list.out);

  // A CA that did not sign the server's certificate, or none (the system
  // store does not know ours): refused, saying why, nothing sent.
  auto wrong_ca = Run(Cli(daemon.Url("localhost"), token, "list --ca-file " + ShellQuote(pki.Path("other-ca.pem"))));
  BOOST_CHECK_EQUAL(wrong_ca.exit_code, 2);
  BOOST_CHECK_MESSAGE(wrong_ca.out.find("certificate was refused") != std::string::npos &&
                          wrong_ca.out.find("not signed by a trusted CA") != std::string::npos,
                      wrong_ca.out);
  auto system_store = Run(Cli(daemon.Url("localhost"), token, "list"));
  BOOST_CHECK_EQUAL(system_store.exit_code, 2);
  BOOST_CHECK_MESSAGE(system_store.out.find("certificate was refused") != std::string::npos, system_store.out);
  // Plain http to the https port gets no answer it could mistake for one.
  auto plain = Run(Cli(daemon.Url("127.0.0.1").replace(0, 5, "http"), token, "list --timeout 10"));
  BOOST_CHECK_EQUAL(plain.exit_code, 2);
  // A missing CA file is named.
  auto missing = Run(Cli(daemon.Url("localhost"), token, "list --ca-file " + ShellQuote(pki.Path("nope.pem"))));
  BOOST_CHECK_EQUAL(missing.exit_code, 2);
  BOOST_CHECK_MESSAGE(missing.out.find("cannot load the CA file") != std::string::npos, missing.out);

  // A certificate for another host name.
  {
    const fs::path data2 = work.path / "registry2";
    const std::string token2 = MakeToken(data2, "tls", "write");
    DaemonProcess elsewhere(data2, work.path, pki.ServerArgs("elsewhere"));
    auto r = Run(Cli(elsewhere.Url("localhost"), token2, "push" + ca + " " + ShellQuote(mlp)));
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(r.out.find("hostname mismatch") != std::string::npos &&
                            r.out.find("does not name localhost") != std::string::npos,
                        r.out);
    r = Run(Cli(elsewhere.Url("127.0.0.1"), token2, "list" + ca));
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(r.out.find("does not name 127.0.0.1") != std::string::npos, r.out);
  }
  // An expired certificate.
  {
    const fs::path data3 = work.path / "registry3";
    const std::string token3 = MakeToken(data3, "tls", "write");
    DaemonProcess expired(data3, work.path, pki.ServerArgs("expired"));
    auto r = Run(Cli(expired.Url("localhost"), token3, "push" + ca + " " + ShellQuote(mlp)));
    BOOST_CHECK_EQUAL(r.exit_code, 2);
    BOOST_CHECK_MESSAGE(r.out.find("certificate has expired") != std::string::npos, r.out);
  }
  // Key and certificate that do not belong together: the server does not start.
  {
    const fs::path data4 = work.path / "registry4";
    DaemonProcess mismatched(data4, work.path,
                             {"--tls-cert", pki.Path("good.pem"), "--tls-key", pki.Path("elsewhere.key")},
                             /*must_start=*/false);
    BOOST_CHECK_EQUAL(mismatched.port, 0);
    BOOST_CHECK_MESSAGE(ReadFile(mismatched.log).find("does not match the certificate") != std::string::npos,
                        ReadFile(mismatched.log));
  }

  // Every failed handshake is one line in the server's log.
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  const std::string log = ReadFile(daemon.log);
  BOOST_CHECK_MESSAGE(CountLines(log, "TLS handshake failed") >= 3u, log);
  BOOST_CHECK(log.find(token) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(PlainHttpOnlyToLoopback) {
  // 192.0.2.1 (TEST-NET-1) is never a loopback address: refused before any
  // connection, naming the way out.
  auto r = Run(Cli("http://192.0.2.1:8470", "", "list"));
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(r.out.find("plain http:// is only for loopback") != std::string::npos, r.out);
  r = Run(Cli("http://registry.example:8470", "", "push " + ShellQuote(Benign("mlp.params"))));
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(r.out.find("plain http:// is only for loopback") != std::string::npos, r.out);
  // --insecure lets it try (and fail to connect, here, within the timeout).
  r = Run(Cli("http://192.0.2.1:8470", "", "list --insecure --timeout 1"));
  BOOST_CHECK_EQUAL(r.exit_code, 2);
  BOOST_CHECK_MESSAGE(r.out.find("only for loopback") == std::string::npos, r.out);
  // Loopback by address or by name is fine over plain http.
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "w", "write");
  DaemonProcess daemon(data, work.path);
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    r = Run(Cli(daemon.Url(host), token, "push " + ShellQuote(Benign("mlp.params"))));
    BOOST_CHECK_MESSAGE(r.exit_code == 0, host << ": " << r.out);
  }
}

BOOST_AUTO_TEST_CASE(ConnectionLimitsAnswer503WithRetryAfter) {
  TempDir work;
  const fs::path data = work.path / "registry";
  MakeToken(data, "w", "write");
  DaemonProcess daemon(data, work.path,
                       {"--max-connections", "6", "--max-connections-per-address", "4", "--header-timeout", "60"});
  // Four idle connections from 127.0.0.1 fill its share; the fifth is told so.
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(ConnectFrom(daemon.port, "127.0.0.1"));
    BOOST_REQUIRE(held.back() >= 0);
  }
  std::this_thread::sleep_for(500ms);  // the server accepted them
  std::string answer = Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.1");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 503, answer);
  BOOST_CHECK_MESSAGE(answer.find("Retry-After: ") != std::string::npos, answer);
  BOOST_CHECK_MESSAGE(answer.find("connections open already") != std::string::npos, answer);
  // Another address still gets in, up to the total.
  answer = Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.2");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 200, answer);
  for (int i = 0; i < 2; ++i) {
    held.push_back(ConnectFrom(daemon.port, "127.0.0.2"));
    BOOST_REQUIRE(held.back() >= 0);
  }
  std::this_thread::sleep_for(500ms);
  // Every slot is taken: 503 at once instead of a hang.
  const auto before = std::chrono::steady_clock::now();
  answer = Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.3");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 503, answer);
  BOOST_CHECK_MESSAGE(answer.find("connection slots are in use") != std::string::npos, answer);
  BOOST_CHECK_MESSAGE(answer.find("Retry-After: 5") != std::string::npos, answer);
  BOOST_CHECK(std::chrono::steady_clock::now() - before < 20s);
  // Slots free up when connections close.
  for (int fd : held) ::close(fd);
  std::this_thread::sleep_for(1s);
  answer = Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.3");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 200, answer);
}

BOOST_AUTO_TEST_CASE(DeniedRequestsAreRateLimitedAndAuditedAsCounts) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "w", "write");
  DaemonProcess daemon(data, work.path, {"--denied-burst", "5", "--denied-per-second", "0.5", "--audit-window", "2"});
  // A hostile path: long, with control characters (it must not forge audit
  // lines, nor make the audit log grow with it).
  const std::string hostile = "/v1/audit/" + std::string(3000, 'A') + "%0a%1b%5b2J";
  int denied = 0, limited = 0, other = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string answer =
        Request(daemon.port,
                "GET " + (i % 2 ? hostile : std::string("/v1/audit")) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "127.0.0.4");
    const int status = StatusOf(answer);
    if (status == 401 || status == 404) {
      ++denied;
    } else if (status == 429) {
      ++limited;
      if (limited == 1) BOOST_CHECK_MESSAGE(answer.find("Retry-After: ") != std::string::npos, answer);
    } else {
      ++other;
    }
  }
  BOOST_CHECK_EQUAL(other, 0);
  BOOST_CHECK_GE(denied, 5);
  BOOST_CHECK_LT(denied, 60);  // the burst, plus what refilled at 0.5/s while the loop ran
  BOOST_CHECK_GT(limited, 100);
  // Other addresses are not affected; the limited one is, whatever it asks.
  BOOST_CHECK_EQUAL(StatusOf(Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                     "127.0.0.5")),
                    200);
  BOOST_CHECK_EQUAL(StatusOf(Request(daemon.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                     "127.0.0.4")),
                    429);
  // An authenticated client's 404s do not count.
  for (int i = 0; i < 10; ++i) {
    const std::string answer = Request(daemon.port, "GET /v1/checkpoints/" + std::string(64, 'a') +
                                                        " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                                                        "\r\nConnection: close\r\n\r\n",
                                       "127.0.0.6");
    BOOST_CHECK_EQUAL(StatusOf(answer), 404);
  }

  // The audit log holds counts, not a row per request: after the window.
  std::this_thread::sleep_for(3s);
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  auto audit = Run(ShellQuote(kDaemon) + " --data-dir " + ShellQuote(data.string()) + " audit");
  BOOST_REQUIRE_EQUAL(audit.exit_code, 0);
  const size_t rows = CountLines(audit.out, "\tdenied-request\t127.0.0.4\t");
  BOOST_CHECK_GE(rows, 2u);   // the first 401 and the first 429, at least
  BOOST_CHECK_LE(rows, 30u);  // a few per window, never 200
  BOOST_CHECK_MESSAGE(audit.out.find("more in this window") != std::string::npos, audit.out.substr(0, 3000));
  BOOST_CHECK_LT(audit.out.size(), 30000u);
  BOOST_CHECK(audit.out.find(std::string(1000, 'A')) == std::string::npos);  // fields are cut
  size_t total = 0;
  std::istringstream in(audit.out);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\tdenied-request\t127.0.0.4\t") == std::string::npos) continue;
    const size_t more = line.find(" more in this window");
    if (more == std::string::npos) {
      ++total;  // a first one
    } else {
      const size_t colon = line.rfind(": ", more);
      total += std::stoul(line.substr(colon + 2, more - colon - 2));
    }
  }
  BOOST_CHECK_EQUAL(total, 201u);  // every denied request is counted, the last 429 included
  BOOST_CHECK_EQUAL(CountLines(audit.out, "127.0.0.6"), 0u);
}

BOOST_AUTO_TEST_CASE(TricklingClientsAreDroppedAndLoggedOnce) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "w", "write");
  DaemonProcess daemon(data, work.path, {"--min-transfer-rate", "2000", "--transfer-grace", "2"});
  // A header at a few bytes a second.
  const auto before = std::chrono::steady_clock::now();
  int fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(fd >= 0);
  const std::string head = "GET /v1/health?n=trickle-head HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(200, 'p');
  bool dropped = false;
  for (size_t i = 0; i < head.size() && !dropped; ++i) {
    if (!SendBytes(fd, head.substr(i, 1))) dropped = true;
    if (PeerClosed(fd, 200ms)) dropped = true;
  }
  BOOST_CHECK(dropped);
  BOOST_CHECK(std::chrono::steady_clock::now() - before < 30s);
  ::close(fd);
  // A body at a few bytes a second (with a valid token and name).
  fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(fd >= 0);
  BOOST_REQUIRE(SendBytes(fd, "POST /v1/checkpoints?name=slow&n=trickle-body HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                  token + "\r\nContent-Length: 100000\r\n\r\n"));
  dropped = false;
  for (int i = 0; i < 300 && !dropped; ++i) {
    if (!SendBytes(fd, "x")) dropped = true;
    if (PeerClosed(fd, 200ms)) dropped = true;
  }
  BOOST_CHECK(dropped);
  ::close(fd);
  // A fast client is unaffected.
  auto push = Run(Cli(daemon.Url(), token, "push " + ShellQuote(Benign("mlp.params"))));
  BOOST_CHECK_MESSAGE(push.exit_code == 0, push.out);
  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  const std::string log = ReadFile(daemon.log);
  BOOST_CHECK_MESSAGE(CountLines(log, "aborted: the request header did not arrive in time") == 1u, log);
  BOOST_CHECK_MESSAGE(CountLines(log, "n=trickle-body") == 1u, log);
  BOOST_CHECK_MESSAGE(CountLines(log, "slower than 2000 bytes/s") == 1u, log);
}

BOOST_AUTO_TEST_CASE(AnonymousUploadsAreCappedAndBadNamesRefusedBeforeTheBody) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "w", "write");
  DaemonProcess daemon(data, work.path, {"--max-anonymous-upload-bytes", "1000"});
  const std::string body(5000, 'z');
  // Anonymous verify with a body over the cap: 413 before the body is read.
  std::string answer = Request(daemon.port, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 413, answer);
  BOOST_CHECK_MESSAGE(answer.find("without a token") != std::string::npos, answer);
  // Chunked, so the length is not known up front: cut at the cap.
  answer = Request(daemon.port, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" +
                                    body + "\r\n0\r\n\r\n");
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 413, answer);
  // Under the cap, or with a token, it is verified.
  answer = Request(daemon.port, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 500\r\n\r\n" +
                                    body.substr(0, 500));
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 200, answer);
  answer = Request(daemon.port, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " +
                                    token + "\r\nContent-Length: 5000\r\n\r\n" + body);
  BOOST_CHECK_MESSAGE(StatusOf(answer) == 200, answer);

  // A bad name or tag is refused before any body byte: with Expect:
  // 100-continue the answer is the 400 (never 100), without it the 400
  // comes although no body byte was sent.
  for (const std::string query : {"name=..%2Fetc&tag=v1", "name=ok&tag=bad%20tag", "tag=v1"}) {
    BOOST_TEST_CONTEXT(query) {
      int fd = ConnectFrom(daemon.port);
      BOOST_REQUIRE(fd >= 0);
      BOOST_REQUIRE(SendBytes(fd, "POST /v1/checkpoints?" + query + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                      token + "\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n"));
      std::string head = ReadHead(fd, 30s);
      BOOST_CHECK_MESSAGE(StatusOf(head) == 400, head);
      ::close(fd);
      fd = ConnectFrom(daemon.port);
      BOOST_REQUIRE(SendBytes(fd, "POST /v1/checkpoints?" + query + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                      token + "\r\nContent-Length: 1000000000\r\n\r\n"));
      head = ReadHead(fd, 30s);
      BOOST_CHECK_MESSAGE(StatusOf(head) == 400, head);
      ::close(fd);
    }
  }
  // A good name gets 100 Continue.
  int fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(SendBytes(fd, "POST /v1/checkpoints?name=ok&tag=v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                                  "\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"));
  const std::string head = ReadHead(fd, 30s);
  BOOST_CHECK_MESSAGE(head.rfind("HTTP/1.1 100", 0) == 0, head);
  ::close(fd);
  BOOST_CHECK(BlobDigests(data).empty());
}

BOOST_AUTO_TEST_CASE(EveryRequestIsLoggedOnceWithSecretsRedacted) {
  TempDir work;
  const fs::path data = work.path / "registry";
  const std::string token = MakeToken(data, "logger", "write");
  DaemonProcess daemon(data, work.path, {"--header-timeout", "3"});
  // A token in the query string (a client's mistake) and in the header.
  std::string answer = Request(daemon.port, "GET /v1/health?n=log-1&token=" + token +
                                                "&api_key=sekrit-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  BOOST_CHECK_EQUAL(StatusOf(answer), 200);
  answer = Request(daemon.port, "GET /v1/checkpoints?n=log-2&access%5Ftoken=sekrit-2 HTTP/1.1\r\nHost: x\r\n"
                                "Authorization: Bearer " + token + "\r\nConnection: close\r\n\r\n");
  BOOST_CHECK_EQUAL(StatusOf(answer), 200);
  answer = Request(daemon.port, "GET /v1/" + token + "?n=log-3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  BOOST_CHECK_EQUAL(StatusOf(answer), 404);
  // A wrong token in the header.
  answer = Request(daemon.port, "GET /v1/audit?n=log-4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ckg_" +
                                    std::string(64, 'f') + "\r\nConnection: close\r\n\r\n");
  BOOST_CHECK_EQUAL(StatusOf(answer), 401);
  // A push through the CLI (the token in its Authorization header).
  auto push = Run(Cli(daemon.Url(), token, "push --name log-5 " + ShellQuote(Benign("mlp.params"))));
  BOOST_CHECK_MESSAGE(push.exit_code == 0, push.out);
  // A client that leaves mid-body.
  int fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(SendBytes(fd, "POST /v1/checkpoints?name=log-6 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                                  "\r\nContent-Length: 100000\r\n\r\n" + std::string(1000, 'x')));
  std::this_thread::sleep_for(500ms);
  ::close(fd);
  // A header that never ends (the header timeout, 3 s).
  fd = ConnectFrom(daemon.port);
  BOOST_REQUIRE(SendBytes(fd, "GET /v1/health?n=log-7 HTTP/1.1\r\nHost: x\r\n"));
  BOOST_CHECK(PeerClosed(fd, 30s));
  ::close(fd);
  // A connection that sends nothing and leaves is not a request.
  fd = ConnectFrom(daemon.port);
  ::close(fd);
  // Two requests on one keep-alive connection: two lines.
  answer = Request(daemon.port, "GET /v1/health?n=log-8a HTTP/1.1\r\nHost: x\r\n\r\n"
                                "GET /v1/health?n=log-8b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  BOOST_CHECK_EQUAL(CountLines(answer, "HTTP/1.1 200"), 2u);

  BOOST_CHECK_EQUAL(daemon.Stop(SIGTERM), 0);
  const std::string log = ReadFile(daemon.log);
  BOOST_TEST_CONTEXT(log) {
    BOOST_CHECK(log.find(token) == std::string::npos);
    BOOST_CHECK(log.find(token.substr(4)) == std::string::npos);
    BOOST_CHECK(log.find("sekrit") == std::string::npos);
    BOOST_CHECK(log.find(std::string(64, 'f')) == std::string::npos);
    for (const std::string marker : {"n=log-1", "n=log-2", "n=log-3", "n=log-4", "name=log-5", "name=log-6", "n=log-8a",
                                     "n=log-8b"}) {
      BOOST_CHECK_MESSAGE(CountLines(log, marker) == 1u, marker);
    }
    BOOST_CHECK(CountLines(log, "n=log-1") == CountLines(log, "token=REDACTED&api_key=REDACTED"));
    BOOST_CHECK_EQUAL(CountLines(log, "access%5Ftoken=REDACTED"), 1u);
    BOOST_CHECK_EQUAL(CountLines(log, "/v1/ckg_REDACTED?n=log-3"), 1u);
    BOOST_CHECK_EQUAL(CountLines(log, "aborted: the body ended early"), 1u);
    BOOST_CHECK_EQUAL(CountLines(log, "aborted: the request header did not arrive in time"), 1u);
    // One line per request: 8 raw ones (the header that never ended among
    // them) and the CLI's push; nothing for the silent connection.
    BOOST_CHECK_EQUAL(CountLines(log, "127.0.0.1 "), 9u);
  }
}

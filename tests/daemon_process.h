// Helpers for tests that run the real ckptguardd process: start it on a free
// loopback port (plain or HTTPS), make tokens, talk raw HTTP from a chosen
// loopback source address, and check the data folder's consistency.
// (The same shapes as daemon_e2e_test.cc's, which predates this header.)
#ifndef CKPTGUARD_TESTS_DAEMON_PROCESS_H_
#define CKPTGUARD_TESTS_DAEMON_PROCESS_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ckptguard/daemon/catalog.h"
#include "test_util.h"

namespace ckptguard::testing {

inline const std::string kCliPath = CKPTGUARD_CLI;
inline const std::string kDaemonPath = CKPTGUARD_DAEMON;

inline std::string LastLine(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// DaemonProcess runs ckptguardd in the background on port 0 of 127.0.0.1
// and reads the port it bound; stderr and stdout go to `log`.
struct DaemonProcess {
  pid_t pid = -1;
  int port = 0;
  std::filesystem::path dir;
  std::filesystem::path log;
  std::string scheme = "http";

  DaemonProcess(const std::filesystem::path& data_dir, const std::filesystem::path& work,
                std::vector<std::string> extra = {}, bool must_start = true)
      : dir(data_dir) {
    const std::filesystem::path port_file =
        work / ("port-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    log = work / (port_file.filename().string() + ".log");
    std::vector<std::string> args = {kDaemonPath, "--data-dir", data_dir.string(), "--listen", "127.0.0.1:0",
                                     "--port-file", port_file.string()};
    for (const auto& a : extra) {
      if (a == "--tls-cert") scheme = "https";
    }
    args.insert(args.end(), extra.begin(), extra.end());
    pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 600 && port == 0; ++i) {  // ASan start-up can be slow: up to 60 s
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (std::filesystem::exists(port_file)) {
        const std::string text = ReadFile(port_file);
        if (!text.empty()) port = std::stoi(text);
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
    }
    if (must_start) BOOST_REQUIRE_MESSAGE(port != 0, "ckptguardd did not start: " << ReadFile(log));
  }
  ~DaemonProcess() { Stop(SIGTERM); }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  std::string Url(const std::string& host = "127.0.0.1") const {
    return scheme + "://" + host + ":" + std::to_string(port);
  }

  // Stop sends `signal` and waits; returns the exit status (-1 if killed by a signal).
  int Stop(int signal) {
    if (pid <= 0) return -1;
    ::kill(pid, signal);
    int status = 0;
    for (int i = 0; i < 600; ++i) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    pid = -1;
    return -2;
  }
  static inline int counter = 0;
};

// MakeToken creates a token with `ckptguardd token create` (on the catalog
// `catalog` names: "" for DATA/catalog.db) and returns it.
inline std::string MakeToken(const std::filesystem::path& data_dir, const std::string& name, const std::string& scope,
                             const std::string& catalog = "") {
  auto r = Run(ShellQuote(kDaemonPath) + " --data-dir " + ShellQuote(data_dir.string()) +
               (catalog.empty() ? std::string() : " --catalog " + ShellQuote(catalog)) + " token create " + name +
               " --scope " + scope + " 2>&1");
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.out);
  return LastLine(r.out);
}

// Connect opens a TCP connection to 127.0.0.1:port from the loopback
// address `from` (any of 127.0.0.0/8: each is a distinct client address to
// the server). Returns -1 when the connection fails.
inline int ConnectFrom(int port, const char* from = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &local.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    ::close(fd);
    return -1;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// SendBytes sends all of `bytes`; false when the peer closed.
inline bool SendBytes(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// ReadUntilClosed reads until the peer closes or `limit` passes.
inline std::string ReadUntilClosed(int fd, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// ReadHead reads until the end of a response header (or close, or `limit`).
inline std::string ReadHead(int fd, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char c;
  while (std::chrono::steady_clock::now() < deadline && out.find("\r\n\r\n") == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (::recv(fd, &c, 1, 0) != 1) break;
    out.push_back(c);
  }
  return out;
}

// PeerClosed: has the server closed the connection (EOF or reset) within `limit`?
inline bool PeerClosed(int fd, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
  return false;
}

inline std::set<std::string> BlobDigests(const std::filesystem::path& data_dir) {
  std::set<std::string> out;
  if (!std::filesystem::exists(data_dir / "blobs")) return out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(data_dir / "blobs")) {
    if (e.is_regular_file()) out.insert(e.path().filename().string());
  }
  return out;
}

// CheckBlobsMatchRows: no stored or revoked row of the catalog `catalog_spec`
// names lacks its blob in `data_dir`; with `strict` (after a cleanup) no blob
// lacks its row either, and no upload is left under tmp/ (the servers'
// upload folders may remain, empty).
inline void CheckBlobsMatchRows(const std::filesystem::path& data_dir, const std::string& catalog_spec, bool strict) {
  auto catalog = ckptguard::daemon::Catalog::Open(catalog_spec);
  if (!catalog) BOOST_FAIL("cannot open the catalog: " << catalog.error().ToString());
  auto referenced = (*catalog)->ReferencedBlobs();
  BOOST_REQUIRE(referenced.has_value());
  const std::set<std::string> blobs = BlobDigests(data_dir);
  for (const auto& sha : *referenced) BOOST_CHECK_MESSAGE(blobs.contains(sha), "row without blob: " << sha);
  if (!strict) return;
  const std::set<std::string> rows(referenced->begin(), referenced->end());
  for (const auto& sha : blobs) BOOST_CHECK_MESSAGE(rows.contains(sha), "blob without row: " << sha);
  for (const auto& e : std::filesystem::recursive_directory_iterator(data_dir / "tmp")) {
    BOOST_CHECK_MESSAGE(!e.is_regular_file(), "upload left in tmp/: " << e.path());
  }
}

// CountLines: lines of `text` that contain `needle`.
inline size_t CountLines(const std::string& text, const std::string& needle) {
  size_t count = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (std::string_view(text).substr(start, end - start).find(needle) != std::string_view::npos) ++count;
    start = end + 1;
  }
  return count;
}

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_DAEMON_PROCESS_H_

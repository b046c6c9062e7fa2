// PostgresServer: a throwaway PostgreSQL cluster for tests, reachable only
// through a Unix socket in its own temporary folder.
//
//   auto& server = PostgresServer::Shared();          // started on first use
//   BOOST_REQUIRE_MESSAGE(server.ok(), server.error());
//   std::string uri = server.CreateDatabase();         // a fresh, empty database
//
// Start: mkdtemp /tmp/ckg-pg-XXXXXX, `initdb` (trust authentication, a
// superuser named ckptguard), postgresql.conf without TCP (listen_addresses
// = '') and with the socket in that folder, `pg_ctl start -w`. The
// destructor runs `pg_ctl stop -m immediate` and removes the folder; the
// shared server is a function-local static, so that happens when the test
// program exits, whether its tests passed or failed (Boost.Test turns a
// failed assertion or a signal in a test into a failure and carries on).
//
// PostgreSQL refuses to run as root, and CI runs the tests as root: then
// initdb and pg_ctl run as the unprivileged user `nobody` (the child sets its
// groups, gid and uid before exec), and the folder is chowned to it first.
//
// The binaries come from $CKPTGUARD_PG_BINDIR, `pg_config --bindir`, or the
// newest /usr/lib/postgresql/*/bin. Without them, ok() is false and error()
// says what to install: tests must fail, not skip (CI installs them).
#ifndef CKPTGUARD_TESTS_POSTGRES_SERVER_H_
#define CKPTGUARD_TESTS_POSTGRES_SERVER_H_

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace ckptguard::testing {

class PostgresServer {
 public:
  static PostgresServer& Shared() {
    static PostgresServer server;
    return server;
  }

  PostgresServer() { error_ = Start(); }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;
  ~PostgresServer() { Stop(); }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // The folder holding the socket (the URIs' host).
  const std::string& socket_dir() const { return dir_; }

  // Uri names database `db` on this server (user ckptguard, no password).
  std::string Uri(const std::string& db) const { return "postgresql://ckptguard@/" + db + "?host=" + dir_; }

  // CreateDatabase creates a fresh database and returns its URI ("" and
  // *err set on failure).
  std::string CreateDatabase(std::string* err = nullptr) {
    if (!ok()) {
      if (err != nullptr) *err = error_;
      return "";
    }
    const std::string name = "catalog_" + std::to_string(++databases_);
    std::string message;
    // The name is ours (a counter), never a test's input.
    if (!Exec(Uri("postgres"), "CREATE DATABASE " + name + " TEMPLATE template0", &message)) {
      if (err != nullptr) *err = "CREATE DATABASE " + name + ": " + message;
      return "";
    }
    return Uri(name);
  }

  // Exec runs `sql` (one or several statements) on its own connection to
  // `uri`; false and *err set (the server's message) when it fails.
  static bool Exec(const std::string& uri, const std::string& sql, std::string* err = nullptr) {
    PGconn* conn = PQconnectdb(uri.c_str());
    bool ok = PQstatus(conn) == CONNECTION_OK;
    if (ok) {
      PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
      PGresult* result = PQexec(conn, sql.c_str());
      const ExecStatusType status = PQresultStatus(result);
      ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
      if (!ok && err != nullptr) *err = PQresultErrorMessage(result);
      PQclear(result);
    } else if (err != nullptr) {
      *err = PQerrorMessage(conn);
    }
    PQfinish(conn);
    return ok;
  }

  // Count runs a one-number query on its own connection (-1 on failure).
  static long long Count(const std::string& uri, const std::string& sql) {
    PGconn* conn = PQconnectdb(uri.c_str());
    long long out = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
      PGresult* result = PQexec(conn, sql.c_str());
      if (PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1) {
        out = std::atoll(PQgetvalue(result, 0, 0));
      }
      PQclear(result);
    }
    PQfinish(conn);
    return out;
  }

 private:
  static std::string FindBinDir() {
    namespace fs = std::filesystem;
    auto has_tools = [](const std::string& dir) {
      return !dir.empty() && fs::exists(dir + "/initdb") && fs::exists(dir + "/pg_ctl") && fs::exists(dir + "/postgres");
    };
    if (const char* env = std::getenv("CKPTGUARD_PG_BINDIR"); env != nullptr && has_tools(env)) return env;
    if (FILE* pipe = ::popen("pg_config --bindir 2>/dev/null", "r")) {
      char line[4096] = {};
      const bool read = std::fgets(line, sizeof line, pipe) != nullptr;
      ::pclose(pipe);
      std::string dir = read ? line : "";
      while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
      if (has_tools(dir)) return dir;
    }
    // The newest Debian cluster version installed.
    std::string best;
    int best_version = -1;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string version = entry.path().filename().string();
      const int v = std::atoi(version.c_str());
      const std::string dir = entry.path().string() + "/bin";
      if (v > best_version && has_tools(dir)) {
        best = dir;
        best_version = v;
      }
    }
    return best;
  }

  // Run runs argv[0] with `argv` in the cluster folder, as `nobody` when we
  // are root; its output goes to the folder's setup.log. Returns the exit
  // status (-1 when it could not run).
  int Run(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const std::string log = dir_ + "/setup.log";
    const pid_t pid = ::fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec.
      if (run_as_uid_ != static_cast<uid_t>(-1)) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(run_as_gid_) != 0 || ::setuid(run_as_uid_) != 0) ::_exit(126);
      }
      if (::chdir(dir_.c_str()) != 0) ::_exit(126);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, 0);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string SetupLog() const {
    std::ifstream in(dir_ + "/setup.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Start returns "" when the server runs, else what went wrong.
  std::string Start() {
    bin_ = FindBinDir();
    if (bin_.empty()) {
      return "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in $CKPTGUARD_PG_BINDIR, "
             "`pg_config --bindir` or /usr/lib/postgresql/*/bin: install Debian's postgresql "
             "(scripts/setup.sh --tests); the PostgreSQL catalog tests cannot run without it";
    }
    // /tmp, not $TMPDIR: the socket path must stay under 108 bytes.
    char templ[] = "/tmp/ckg-pg-XXXXXX";
    if (::mkdtemp(templ) == nullptr) return "mkdtemp failed";
    dir_ = templ;
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("nobody");
      if (pw == nullptr) return "running as root, and there is no user 'nobody' to run PostgreSQL as";
      run_as_uid_ = pw->pw_uid;
      run_as_gid_ = pw->pw_gid;
      if (::chown(dir_.c_str(), run_as_uid_, run_as_gid_) != 0) return "chown " + dir_ + " to nobody failed";
    }
    data_ = dir_ + "/data";
    if (Run({bin_ + "/initdb", "-D", data_, "-U", "ckptguard", "--auth=trust", "--no-sync", "-E", "UTF8",
             "--locale=C"}) != 0) {
      return "initdb failed:\n" + SetupLog();
    }
    {
      std::ofstream conf(data_ + "/postgresql.conf", std::ios::app);
      conf << "\n# ckptguard tests: Unix socket only, in the cluster's folder; speed over durability\n"
           << "listen_addresses = ''\n"
           << "unix_socket_directories = '" << dir_ << "'\n"
           << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
           << "max_connections = 60\n";
      if (!conf) return "cannot write postgresql.conf";
    }
    if (Run({bin_ + "/pg_ctl", "start", "-w", "-t", "60", "-D", data_, "-l", dir_ + "/server.log"}) != 0) {
      std::ifstream in(dir_ + "/server.log");
      std::stringstream server_log;
      server_log << in.rdbuf();
      return "pg_ctl start failed:\n" + SetupLog() + server_log.str();
    }
    started_ = true;
    return "";
  }

  void Stop() {
    if (started_) Run({bin_ + "/pg_ctl", "stop", "-D", data_, "-m", "immediate", "-w"});
    started_ = false;
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  std::string bin_;
  std::string dir_;
  std::string data_;
  std::string error_;
  bool started_ = false;
  uid_t run_as_uid_ = static_cast<uid_t>(-1);
  gid_t run_as_gid_ = static_cast<gid_t>(-1);
  std::atomic<int> databases_{0};
};

// TestCatalogIsPostgres: the suites that run on either catalog backend
// (catalog_test, registry_test, registry_stress_test) run on the one
// $CKPTGUARD_TEST_CATALOG names: "sqlite" (the default) or "postgres"; CTest
// registers each program once per backend.
inline bool TestCatalogIsPostgres() {
  const char* backend = std::getenv("CKPTGUARD_TEST_CATALOG");
  return backend != nullptr && std::string(backend) == "postgres";
}

// TestCatalogFor returns the --catalog spec a registry on `data_dir` uses
// under test: "" (its own DATA/catalog.db) on SQLite; on PostgreSQL a fresh
// database of the shared server, the same one each time `data_dir` is asked
// for again (a reopened registry finds its catalog). `*err` says why when
// the server or the database could not be made ("" returned).
inline std::string TestCatalogFor(const std::string& data_dir, std::string* err = nullptr) {
  if (!TestCatalogIsPostgres()) return "";
  static std::mutex mu;
  static std::map<std::string, std::string> by_dir;
  std::lock_guard lock(mu);
  const std::string key = std::filesystem::absolute(data_dir).lexically_normal().string();
  if (auto it = by_dir.find(key); it != by_dir.end()) return it->second;
  PostgresServer& server = PostgresServer::Shared();
  if (!server.ok()) {
    if (err != nullptr) *err = server.error();
    return "";
  }
  std::string uri = server.CreateDatabase(err);
  if (!uri.empty()) by_dir[key] = uri;
  return uri;
}

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_POSTGRES_SERVER_H_

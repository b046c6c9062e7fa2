// registry_bench: a load generator for ckptguardd (see docs/benchmarks.md,
// "Registry (ckptguardd)"; bench/run_registry_bench.sh starts the daemon).
//
//   registry_bench --url http://127.0.0.1:PORT --token ADMIN_TOKEN FILE_OR_DIR...
//                  [--threads 8] [--requests 2000] [--seconds 60] [--verify-percent 50]
//                  [--verify-file-percent 20] [--run-id ID] [--daemon-pid PID] [--json OUT]
//
// N client threads share one request budget (--requests) and one deadline
// (--seconds), whichever ends first. Each request is a push
// (POST /v1/checkpoints?name=&tag=, the file streamed with SendFile; every push
// has its own tag, so each is a new catalog row) or a verify (POST
// /v1/verify?sha256=H, or the file as the body for --verify-file-percent of
// them). Every latency is recorded; the summary has throughput and
// p50/p90/p99/max per kind, the failures (a push not 201, a verify not 200 with
// "verified": true) and transport errors. Before the timed phase every file is
// pushed once (the seed: this learns the digests verifies ask for, and drops
// files the scanner rejects, which are reported). After it, the catalog
// (GET /v1/checkpoints, paged) and the audit log (GET /v1/audit, admin token)
// must hold every push that was answered 201: nothing lost.
// With --daemon-pid the daemon's CPU time over the timed phase is read from
// /proc/PID/stat and printed as "cores busy" (CPU seconds / wall seconds).
//
// Exit status: 0 when every request succeeded and nothing was lost, 1 when
// any failed or was lost, 2 on a usage or setup error.
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ckptguard/daemon/client.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using ckptguard::daemon::ClientOptions;
using ckptguard::daemon::RegistryClient;
using ckptguard::daemon::Response;

struct Options {
  std::string url;
  std::string token;
  std::string admin_token;
  unsigned threads = 8;
  uint64_t requests = 2000;
  double seconds = 60;
  unsigned verify_percent = 50;
  unsigned verify_file_percent = 20;
  std::string run_id;
  long daemon_pid = 0;
  std::string json_out;
  std::vector<std::string> inputs;
};

struct Source {
  std::string path;
  std::string name;    // catalog name
  std::string sha256;  // learnt from the seed push
  uint64_t size = 0;
};

enum Kind { kPush = 0, kVerifySha = 1, kVerifyFile = 2, kKinds = 3 };
constexpr const char* kKindName[kKinds] = {"push", "verify-sha256", "verify-file"};

struct PushDone {
  int64_t id = 0;
  std::string tag;
  std::string sha256;
};

struct ThreadResult {
  std::vector<double> latency_ms[kKinds];
  uint64_t failed[kKinds] = {0, 0, 0};
  uint64_t transport[kKinds] = {0, 0, 0};
  std::vector<PushDone> pushes;
  std::vector<std::string> errors;  // the first few, for the report
};

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string Sanitize(const std::string& text) {
  std::string out;
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    out.push_back(ok ? c : '_');
  }
  return out;
}

bool IsRegularFile(const std::string& path, uint64_t& size) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = static_cast<uint64_t>(st.st_size);
  return true;
}

// Files named, and the regular files directly inside folders named (not
// *.json: the corpus keeps its expectations next to the files).
std::vector<Source> CollectSources(const std::vector<std::string>& inputs) {
  std::vector<std::string> paths;
  for (const std::string& in : inputs) {
    struct stat st{};
    if (::stat(in.c_str(), &st) != 0) {
      std::fprintf(stderr, "registry_bench: %s: %s\n", in.c_str(), std::strerror(errno));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      DIR* dir = ::opendir(in.c_str());
      if (!dir) continue;
      std::vector<std::string> found;
      while (dirent* e = ::readdir(dir)) {
        const std::string n = e->d_name;
        if (n == "." || n == ".." || (n.size() > 5 && n.ends_with(".json"))) continue;
        found.push_back(in + "/" + n);
      }
      ::closedir(dir);
      std::sort(found.begin(), found.end());
      paths.insert(paths.end(), found.begin(), found.end());
    } else {
      paths.push_back(in);
    }
  }
  std::vector<Source> out;
  for (const std::string& p : paths) {
    Source s;
    s.path = p;
    if (!IsRegularFile(p, s.size) || s.size == 0) continue;
    const size_t slash = p.rfind('/');
    s.name = "bench/" + Sanitize(slash == std::string::npos ? p : p.substr(slash + 1));
    out.push_back(std::move(s));
  }
  return out;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat).
double ProcessCpuSeconds(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Machine-wide busy and total jiffies from the first line of /proc/stat.
std::pair<double, double> MachineJiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  std::vector<unsigned long long> v;
  unsigned long long x = 0;
  while (v.size() < 8 && in >> x) v.push_back(x);
  v.resize(8, 0);
  const double idle = static_cast<double>(v[3] + v[4]);
  double total = 0;
  for (auto y : v) total += static_cast<double>(y);
  return {total - idle, total};
}

std::optional<RegistryClient> MakeClient(const Options& options, const std::string& token) {
  ClientOptions co;
  co.url = options.url;
  co.token = token;
  co.timeout = std::chrono::seconds(60);
  auto client = RegistryClient::Create(co);
  if (!client) {
    std::fprintf(stderr, "registry_bench: %s\n", client.error().ToString().c_str());
    return std::nullopt;
  }
  return std::move(*client);
}

std::string PushTarget(const Source& s, const std::string& tag) {
  return "/v1/checkpoints?name=" + s.name + "&tag=" + tag;  // both are URL-safe already
}

// One push: 201 with the digest we expect.
bool DoPush(RegistryClient& client, const Source& s, const std::string& tag, ThreadResult& r) {
  const auto start = Clock::now();
  auto res = client.SendFile("POST", PushTarget(s, tag), s.path);
  r.latency_ms[kPush].push_back(Since(start) * 1e3);
  if (!res) {
    ++r.transport[kPush];
    if (r.errors.size() < 5) r.errors.push_back("push " + s.path + ": " + res.error().ToString());
    return false;
  }
  const Json j = Json::parse(res->body, nullptr, false);
  const bool ok = res->status == 201 && j.is_object() && j.value("sha256", std::string()) == s.sha256 &&
                  j.value("tag", std::string()) == tag;
  if (!ok) {
    ++r.failed[kPush];
    if (r.errors.size() < 5) r.errors.push_back("push " + s.path + ": HTTP " + std::to_string(res->status) + " " + res->body.substr(0, 300));
    return false;
  }
  r.pushes.push_back({j.value("id", int64_t{0}), tag, s.sha256});
  return true;
}

bool DoVerify(RegistryClient& client, const Source& s, bool by_file, ThreadResult& r) {
  const Kind kind = by_file ? kVerifyFile : kVerifySha;
  const auto start = Clock::now();
  auto res = by_file ? client.SendFile("POST", "/v1/verify", s.path)
                     : client.Call("POST", "/v1/verify?sha256=" + s.sha256);
  r.latency_ms[kind].push_back(Since(start) * 1e3);
  if (!res) {
    ++r.transport[kind];
    if (r.errors.size() < 5) r.errors.push_back(std::string(kKindName[kind]) + " " + s.path + ": " + res.error().ToString());
    return false;
  }
  const Json j = Json::parse(res->body, nullptr, false);
  const bool ok = res->status == 200 && j.is_object() && j.value("verified", false) &&
                  j.value("sha256", std::string()) == s.sha256;
  if (!ok) {
    ++r.failed[kind];
    if (r.errors.size() < 5) r.errors.push_back(std::string(kKindName[kind]) + " " + s.path + ": HTTP " + std::to_string(res->status) + " " + res->body.substr(0, 300));
    return false;
  }
  return true;
}

int Usage() {
  std::fprintf(stderr,
               "usage: registry_bench --url http://HOST:PORT --token ADMIN_TOKEN FILE_OR_DIR...\n"
               "       [--threads N] [--requests N] [--seconds S] [--verify-percent P] [--verify-file-percent P]\n"
               "       [--run-id ID] [--daemon-pid PID] [--json OUT]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "registry_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--url") o.url = next();
    else if (a == "--token") o.token = next();
    else if (a == "--admin-token") o.admin_token = next();
    else if (a == "--threads") o.threads = static_cast<unsigned>(std::max(1, std::atoi(next().c_str())));
    else if (a == "--requests") o.requests = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--seconds") o.seconds = std::atof(next().c_str());
    else if (a == "--verify-percent") o.verify_percent = std::min(100u, static_cast<unsigned>(std::atoi(next().c_str())));
    else if (a == "--verify-file-percent") o.verify_file_percent = std::min(100u, static_cast<unsigned>(std::atoi(next().c_str())));
    else if (a == "--run-id") o.run_id = next();
    else if (a == "--daemon-pid") o.daemon_pid = std::atol(next().c_str());
    else if (a == "--json") o.json_out = next();
    else if (a == "-h" || a == "--help") return Usage();
    else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "registry_bench: unknown option %s\n", a.c_str());
      return Usage();
    } else o.inputs.push_back(a);
  }
  if (o.url.empty() || o.token.empty() || o.inputs.empty()) return Usage();
  if (o.admin_token.empty()) o.admin_token = o.token;
  if (o.run_id.empty()) o.run_id = "r" + std::to_string(::time(nullptr)) + "-" + std::to_string(::getpid());
  o.run_id = Sanitize(o.run_id);

  std::vector<Source> sources = CollectSources(o.inputs);
  if (sources.empty()) {
    std::fprintf(stderr, "registry_bench: no files to push\n");
    return 2;
  }
  auto admin = MakeClient(o, o.admin_token);
  if (!admin) return 2;

  // Where the audit log stands before we start (its ids only grow).
  int64_t audit_start = 0;
  for (;;) {
    auto res = admin->Call("GET", "/v1/audit?limit=1000&after=" + std::to_string(audit_start));
    if (!res || res->status != 200) {
      std::fprintf(stderr, "registry_bench: GET /v1/audit: %s\n",
                   res ? ("HTTP " + std::to_string(res->status) + " " + res->body).c_str() : res.error().ToString().c_str());
      return 2;
    }
    const Json j = Json::parse(res->body, nullptr, false);
    if (!j.is_object() || !j["audit"].is_array() || j["audit"].empty()) break;
    audit_start = j["audit"].back().value("id", audit_start);
  }

  // Seed: push every file once, learn its digest; a file the registry
  // rejects (422) is reported and left out of the load.
  std::vector<Source> usable;
  std::vector<std::string> rejected;
  ThreadResult seed;
  for (Source& s : sources) {
    auto res = admin->SendFile("POST", PushTarget(s, o.run_id + "-seed"), s.path);
    if (!res) {
      std::fprintf(stderr, "registry_bench: seed push %s: %s\n", s.path.c_str(), res.error().ToString().c_str());
      return 2;
    }
    const Json j = Json::parse(res->body, nullptr, false);
    if (res->status == 201 && j.is_object()) {
      s.sha256 = j.value("sha256", std::string());
      seed.pushes.push_back({j.value("id", int64_t{0}), o.run_id + "-seed", s.sha256});
      usable.push_back(s);
    } else if (res->status == 422) {
      rejected.push_back(s.path);
    } else {
      std::fprintf(stderr, "registry_bench: seed push %s: HTTP %d %s\n", s.path.c_str(), res->status, res->body.c_str());
      return 2;
    }
  }
  if (usable.empty()) {
    std::fprintf(stderr, "registry_bench: the registry rejected every file\n");
    return 2;
  }
  for (const auto& r : rejected) std::fprintf(stderr, "registry_bench: note: the registry rejects %s (422); left out\n", r.c_str());

  // The timed phase.
  std::atomic<uint64_t> next_request{0};
  std::vector<ThreadResult> results(o.threads);
  const double daemon_cpu0 = o.daemon_pid ? ProcessCpuSeconds(o.daemon_pid) : -1;
  const double self_cpu0 = SelfCpuSeconds();
  const auto machine0 = MachineJiffies();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      ThreadResult& r = results[t];
      auto client = MakeClient(o, o.token);
      if (!client) return;
      for (;;) {
        if (Clock::now() >= deadline) break;
        const uint64_t i = next_request.fetch_add(1);
        if (i >= o.requests) break;
        // Spread the kinds evenly over the request numbers (deterministic).
        const Source& s = usable[(i * 7 + t) % usable.size()];
        const bool verify = (i * 37) % 100 < o.verify_percent;
        if (!verify) {
          DoPush(*client, s, o.run_id + "-" + std::to_string(i), r);
        } else {
          const bool by_file = (i * 61) % 100 < o.verify_file_percent;
          DoVerify(*client, s, by_file, r);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const double wall = Since(start);
  const double daemon_cpu = o.daemon_pid ? ProcessCpuSeconds(o.daemon_pid) - daemon_cpu0 : -1;
  const double self_cpu = SelfCpuSeconds() - self_cpu0;
  const auto machine1 = MachineJiffies();
  const double machine_busy_cores =
      (machine1.second - machine0.second) > 0
          ? (machine1.first - machine0.first) / (machine1.second - machine0.second) * std::thread::hardware_concurrency()
          : 0;

  // Merge.
  ThreadResult all;
  for (auto& r : results) {
    for (int k = 0; k < kKinds; ++k) {
      all.latency_ms[k].insert(all.latency_ms[k].end(), r.latency_ms[k].begin(), r.latency_ms[k].end());
      all.failed[k] += r.failed[k];
      all.transport[k] += r.transport[k];
    }
    all.pushes.insert(all.pushes.end(), r.pushes.begin(), r.pushes.end());
    for (auto& e : r.errors) if (all.errors.size() < 10) all.errors.push_back(e);
  }

  // Nothing lost: every push answered 201 (seed ones too) is a catalog row
  // with its tag and digest, and has a "push ... stored" audit entry.
  std::vector<PushDone> expected = seed.pushes;
  expected.insert(expected.end(), all.pushes.begin(), all.pushes.end());
  std::map<int64_t, Json> rows;  // this run's rows, by id
  int64_t before = 0;
  bool check_error = false;
  for (;;) {
    std::string target = "/v1/checkpoints?limit=1000";
    if (before > 0) target += "&before=" + std::to_string(before);
    auto res = admin->Call("GET", target);
    if (!res || res->status != 200) {
      std::fprintf(stderr, "registry_bench: GET %s: %s\n", target.c_str(),
                   res ? ("HTTP " + std::to_string(res->status)).c_str() : res.error().ToString().c_str());
      check_error = true;
      break;
    }
    const Json j = Json::parse(res->body, nullptr, false);
    if (!j.is_object() || !j["checkpoints"].is_array() || j["checkpoints"].empty()) break;
    for (const Json& row : j["checkpoints"]) {
      const std::string tag = row.value("tag", std::string());
      if (tag.rfind(o.run_id + "-", 0) == 0) rows[row.value("id", int64_t{0})] = row;
      before = row.value("id", int64_t{0});
    }
    if (before <= 1) break;
  }
  std::multiset<std::string> audit_stored;  // "sha256 tag"
  int64_t after = audit_start;
  uint64_t audit_denied = 0;
  for (;;) {
    auto res = admin->Call("GET", "/v1/audit?limit=1000&after=" + std::to_string(after));
    if (!res || res->status != 200) {
      std::fprintf(stderr, "registry_bench: GET /v1/audit: %s\n",
                   res ? ("HTTP " + std::to_string(res->status)).c_str() : res.error().ToString().c_str());
      check_error = true;
      break;
    }
    const Json j = Json::parse(res->body, nullptr, false);
    if (!j.is_object() || !j["audit"].is_array() || j["audit"].empty()) break;
    for (const Json& a : j["audit"]) {
      after = a.value("id", after);
      const std::string action = a.value("action", std::string()), result = a.value("result", std::string());
      if (action == "auth" && result == "denied") ++audit_denied;
      if (action != "push" || result != "stored") continue;
      // detail: "name N tag T: verdict ..."
      const std::string detail = a.value("detail", std::string());
      const size_t tag_at = detail.find(" tag ");
      if (tag_at == std::string::npos) continue;
      const size_t colon = detail.find(':', tag_at);
      const std::string tag = detail.substr(tag_at + 5, colon == std::string::npos ? std::string::npos : colon - tag_at - 5);
      if (tag.rfind(o.run_id + "-", 0) == 0) audit_stored.insert(a.value("target", std::string()) + " " + tag);
    }
  }
  uint64_t lost_catalog = 0, lost_audit = 0;
  std::set<int64_t> answered;
  for (const PushDone& p : expected) {
    answered.insert(p.id);
    auto it = rows.find(p.id);
    if (it == rows.end() || it->second.value("tag", std::string()) != p.tag ||
        it->second.value("sha256", std::string()) != p.sha256 || it->second.value("status", std::string()) != "stored") {
      if (lost_catalog < 5) std::fprintf(stderr, "registry_bench: LOST (catalog): id %lld tag %s\n", static_cast<long long>(p.id), p.tag.c_str());
      ++lost_catalog;
    }
    auto a = audit_stored.find(p.sha256 + " " + p.tag);
    if (a == audit_stored.end()) {
      if (lost_audit < 5) std::fprintf(stderr, "registry_bench: LOST (audit): tag %s\n", p.tag.c_str());
      ++lost_audit;
    } else {
      audit_stored.erase(a);
    }
  }
  uint64_t unanswered_rows = 0;  // rows whose push got no 201 (e.g. a transport error after the commit)
  uint64_t rejected_rows = 0;    // the seed's 422s are catalogued too (status "rejected")
  for (const auto& [id, row] : rows) {
    if (answered.contains(id)) continue;
    if (row.value("status", std::string()) == "rejected" && row.value("tag", std::string()) == o.run_id + "-seed") {
      ++rejected_rows;
    } else {
      ++unanswered_rows;
    }
  }
  if (rejected_rows != rejected.size()) check_error = true;

  // Report.
  uint64_t total = 0, failed = 0, transport = 0;
  Json kinds = Json::object();
  std::printf("registry_bench: %u threads, %.2f s, run %s, %zu files (%zu rejected by the scanner)\n", o.threads, wall,
              o.run_id.c_str(), usable.size(), rejected.size());
  std::printf("%-14s %8s %9s %8s %8s %8s %8s %7s %9s\n", "kind", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "failed", "transport");
  for (int k = 0; k < kKinds; ++k) {
    auto& v = all.latency_ms[k];
    std::sort(v.begin(), v.end());
    total += v.size();
    failed += all.failed[k];
    transport += all.transport[k];
    const double rate = wall > 0 ? static_cast<double>(v.size()) / wall : 0;
    std::printf("%-14s %8zu %9.1f %8.2f %8.2f %8.2f %8.2f %7llu %9llu\n", kKindName[k], v.size(), rate,
                Percentile(v, 50), Percentile(v, 90), Percentile(v, 99), v.empty() ? 0.0 : v.back(),
                static_cast<unsigned long long>(all.failed[k]), static_cast<unsigned long long>(all.transport[k]));
    kinds[kKindName[k]] = {{"requests", v.size()},
                           {"per_second", rate},
                           {"p50_ms", Percentile(v, 50)},
                           {"p90_ms", Percentile(v, 90)},
                           {"p99_ms", Percentile(v, 99)},
                           {"max_ms", v.empty() ? 0.0 : v.back()},
                           {"failed", all.failed[k]},
                           {"transport_errors", all.transport[k]}};
  }
  std::printf("%-14s %8llu %9.1f\n", "all", static_cast<unsigned long long>(total), wall > 0 ? static_cast<double>(total) / wall : 0.0);
  if (daemon_cpu >= 0) std::printf("daemon CPU: %.2f s over %.2f s = %.2f cores busy\n", daemon_cpu, wall, daemon_cpu / wall);
  std::printf("bench CPU: %.2f s = %.2f cores; whole machine: %.2f of %u cores busy\n", self_cpu, self_cpu / wall,
              machine_busy_cores, std::thread::hardware_concurrency());
  std::printf("catalog: %zu rows of this run, %zu pushes answered 201 (incl. %zu seed), lost in catalog %llu, "
              "lost in audit %llu, rows without a 201 %llu, auth denials %llu\n",
              rows.size(), expected.size(), seed.pushes.size(), static_cast<unsigned long long>(lost_catalog),
              static_cast<unsigned long long>(lost_audit), static_cast<unsigned long long>(unanswered_rows),
              static_cast<unsigned long long>(audit_denied));
  for (const auto& e : all.errors) std::fprintf(stderr, "registry_bench: error: %s\n", e.c_str());

  const bool ok = failed == 0 && transport == 0 && lost_catalog == 0 && lost_audit == 0 && !check_error &&
                  unanswered_rows == 0;
  Json out = {{"tool", "registry_bench"},
              {"run_id", o.run_id},
              {"threads", o.threads},
              {"seconds", wall},
              {"files", usable.size()},
              {"rejected_files", rejected.size()},
              {"requests", total},
              {"per_second", wall > 0 ? static_cast<double>(total) / wall : 0.0},
              {"kinds", kinds},
              {"failed", failed},
              {"transport_errors", transport},
              {"daemon_cpu_seconds", daemon_cpu},
              {"daemon_cores_busy", daemon_cpu >= 0 ? daemon_cpu / wall : -1.0},
              {"bench_cores_busy", self_cpu / wall},
              {"machine_cores_busy", machine_busy_cores},
              {"catalog_rows", rows.size()},
              {"pushes_answered", expected.size()},
              {"lost_catalog", lost_catalog},
              {"lost_audit", lost_audit},
              {"rows_without_201", unanswered_rows},
              {"ok", ok}};
  std::printf("%s\n", out.dump().c_str());
  if (!o.json_out.empty()) std::ofstream(o.json_out) << out.dump(2) << "\n";
  if (!ok) std::fprintf(stderr, "registry_bench: FAILED: %llu failed, %llu transport errors, %llu lost\n",
                        static_cast<unsigned long long>(failed), static_cast<unsigned long long>(transport),
                        static_cast<unsigned long long>(lost_catalog + lost_audit));
  return ok ? 0 : 1;
}

#!/usr/bin/env bash
# Pushes per second of the registry on its two catalogs, side by side in one
# run; the numbers in docs/benchmarks.md ("Registry on PostgreSQL: one and two
# servers", issue 20) come from this script. It
#   1. builds ckptguardd and bench/registry_bench (release; an existing build
#      folder is only built, not reconfigured),
#   2. starts a throwaway PostgreSQL cluster (initdb + pg_ctl in a temporary
#      folder, Unix socket only, as `nobody` when run as root; the server's
#      durability defaults: fsync and synchronous_commit on, as SQLite's
#      synchronous=FULL),
#   3. runs, ROUNDS times in turn, each on a fresh data folder:
#        sqlite      one ckptguardd, catalog in DATA/catalog.db (the default);
#        pg-1        one ckptguardd, catalog in a fresh PostgreSQL database;
#        pg-2        two ckptguardd on one data folder and one fresh database,
#                    each driven by its own registry_bench with half the threads
#                    (at the same time); pushes/s is the sum;
#      every run is push-only (each push a new tag: a scan, a signature, a
#      blob and a catalog row), THREADS client threads in all, bounded by
#      REQUESTS per bench and SECONDS_PER_RUN; registry_bench fails the run
#      when a push fails or is missing from the catalog or the audit log,
#   4. prints one table: pushes/s, p50/p99 ms, the CPU the daemons and the
#      PostgreSQL server (its backends included) used per second of the run,
#      and the whole machine's; stops everything it started.
# Usage: bench/run_registry_scale_bench.sh   (needs: scripts/setup.sh --tests)
# Environment: BUILD_DIR (default build/release), THREADS (8), REQUESTS (6000),
#   SECONDS_PER_RUN (20), ROUNDS (2), CKPTGUARD_PG_BINDIR (PostgreSQL's bin folder).
# Exit status: 0 when every push succeeded and nothing was lost, else non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/release}
threads=${THREADS:-8}
requests=${REQUESTS:-6000}
seconds=${SECONDS_PER_RUN:-20}
rounds=${ROUNDS:-2}
files=tests/data/corpus/benign
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake --preset release -B "$build" -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target registry_bench ckptguardd >/dev/null
daemon_bin=$build/daemon/ckptguardd
bench_bin=$build/bench/registry_bench

work=$(mktemp -d)
pgdir=$(mktemp -d /tmp/ckg-bench-pg-XXXXXX)  # /tmp: the socket path must stay short
pids=()
pg_started=
as_pg() {
  if [[ $EUID -eq 0 ]]; then (cd / && runuser -u nobody -- "$@"); else "$@"; fi
}
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  done
  if [[ -n "$pg_started" ]]; then as_pg "$pg_bin/pg_ctl" stop -D "$pgdir/data" -m fast -w >/dev/null || true; fi
  rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

# PostgreSQL's server binaries: as tests/postgres_server.h finds them.
pg_bin=${CKPTGUARD_PG_BINDIR:-}
if [[ -z "$pg_bin" ]]; then
  candidate=$(pg_config --bindir 2>/dev/null || true)
  [[ -x "$candidate/initdb" ]] && pg_bin=$candidate
fi
if [[ -z "$pg_bin" ]]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[[ -x "$pg_bin/initdb" && -x "$pg_bin/pg_ctl" ]] || {
  echo "PostgreSQL server binaries not found: install Debian's postgresql (scripts/setup.sh --tests)" >&2; exit 2; }
[[ $EUID -ne 0 ]] || chown nobody: "$pgdir"
as_pg "$pg_bin/initdb" -D "$pgdir/data" -U ckptguard --auth=trust -E UTF8 --locale=C >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; exit 2; }
cat >>"$pgdir/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$pgdir'
max_connections = 50
EOF
as_pg "$pg_bin/pg_ctl" start -w -D "$pgdir/data" -l "$pgdir/server.log" >/dev/null
pg_started=1
pg_version=$("$pg_bin/postgres" --version)
new_database() {  # new_database NAME: creates it, prints its URI
  as_pg "$pg_bin/createdb" -h "$pgdir" -U ckptguard "$1" >&2
  echo "postgresql://ckptguard@/$1?host=$pgdir"
}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $pg_version; ckptguardd $daemon_bin"
echo "== push-only runs: $threads client threads in all, <= $requests pushes per bench, <= ${seconds}s; files: $files"

# pg_ticks: CPU ticks (user + system) of the PostgreSQL server and its backends so far.
pg_ticks() {
  local postmaster total=0 pid
  postmaster=$(head -1 "$pgdir/data/postmaster.pid")
  for pid in "$postmaster" $(pgrep -P "$postmaster" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# start_daemon DATA [ARGS...]: starts ckptguardd on a free port; sets
# started_pid and started_url.
start_daemon() {
  local data=$1
  shift
  local port_file
  port_file=$(mktemp -u "$work/port-XXXXXX")
  "$daemon_bin" --data-dir "$data" "$@" --listen 127.0.0.1:0 --port-file "$port_file" \
    >>"$work/daemon.out" 2>>"$work/daemon.log" &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 200); do [[ -s "$port_file" ]] && break; sleep 0.1; done
  [[ -s "$port_file" ]] || { echo "ckptguardd did not start:" >&2; tail -5 "$work/daemon.log" >&2; exit 2; }
  started_url="http://127.0.0.1:$(cat "$port_file")"
}

# run CONFIG SERVERS: one timed run on a fresh data folder; appends a row to $work/rows.
status=0
run() {
  local config=$1 servers=$2 round=$3
  local data="$work/data-$config-$round"
  local catalog=()
  [[ "$config" == sqlite ]] || catalog=(--catalog "$(new_database "bench_${config//-/_}_$round")")
  local token
  token=$("$daemon_bin" --data-dir "$data" "${catalog[@]}" token create bench --scope admin | tail -1)
  local urls=() daemon_pids=()
  for _ in $(seq "$servers"); do
    start_daemon "$data" "${catalog[@]}"
    urls+=("$started_url")
    daemon_pids+=("$started_pid")
  done
  local per_bench=$((threads / servers)) outs=() bench_pids=()
  local pg_ticks_before
  pg_ticks_before=$(pg_ticks)
  local t0
  t0=$(date +%s.%N)
  for i in "${!urls[@]}"; do
    local out="$work/bench-$config-$round-$i.json"
    outs+=("$out")
    "$bench_bin" --url "${urls[$i]}" --token "$token" --threads "$per_bench" --requests "$requests" \
      --seconds "$seconds" --verify-percent 0 --run-id "$config-$round-$i" --daemon-pid "${daemon_pids[$i]}" \
      --json "$out" "$files" >"$work/bench-$config-$round-$i.txt" 2>&1 &
    bench_pids+=($!)
  done
  for i in "${!bench_pids[@]}"; do
    if ! wait "${bench_pids[$i]}"; then
      status=1
      echo "registry_bench failed ($config, round $round, bench $i):" >&2
      tail -5 "$work/bench-$config-$round-$i.txt" >&2
    fi
  done
  local pg_busy
  pg_busy=$(awk -v a="$pg_ticks_before" -v b="$(pg_ticks)" -v t0="$t0" -v t1="$(date +%s.%N)" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) }')
  [[ "$config" != sqlite ]] || pg_busy=-
  for pid in "${daemon_pids[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
  /usr/bin/python3 - "$config" "$round" "$pg_busy" "${outs[@]}" >>"$work/rows" <<'PY'
import json, sys
config, rnd, pg_busy, outs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
docs = [json.load(open(o)) for o in outs]
def push(d): return d["kinds"]["push"]
pushes = sum(push(d)["requests"] for d in docs)
rate = sum(push(d)["per_second"] for d in docs)
p50 = max(push(d)["p50_ms"] for d in docs)
p99 = max(push(d)["p99_ms"] for d in docs)
cores = sum(max(d["daemon_cores_busy"], 0) for d in docs)
machine = max(d["machine_cores_busy"] for d in docs)
bad = sum(d["failed"] + d["transport_errors"] + d["lost_catalog"] + d["lost_audit"] for d in docs)
print(f"| {config} | {rnd} | {len(docs)} | {pushes} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {cores:.2f} | {pg_busy} | {machine:.2f} | {bad} |")
PY
  echo "   $(tail -1 "$work/rows")"
}

for round in $(seq "$rounds"); do
  for config in sqlite pg-1 pg-2; do
    servers=1
    [[ "$config" == pg-2 ]] && servers=2
    echo "== round $round: $config ($servers server(s)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    run "${config}" "$servers" "$round"
  done
done
echo
echo "| catalog | round | servers | pushes | pushes/s | p50 ms (worst bench) | p99 ms (worst bench) | ckptguardd cores busy | PostgreSQL cores busy | machine cores busy | failed+lost |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
sed 's/^| pg-1 /| PostgreSQL /; s/^| pg-2 /| PostgreSQL /; s/^| sqlite /| SQLite /' "$work/rows"
exit "$status"

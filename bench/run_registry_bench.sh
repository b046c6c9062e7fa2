#!/usr/bin/env bash
# Load benchmark of ckptguardd on loopback; the numbers in docs/benchmarks.md
# ("Registry (ckptguardd)") come from this script. It
#   1. builds ckptguardd, ckptguard and registry_bench (release),
#   2. starts ckptguardd on 127.0.0.1 with a fresh data folder and an admin token,
#   3. (a) many small pushes and verifies: registry_bench with THREADS client
#      threads over tests/data/corpus/benign (every push a new tag, so a new
#      row), push-only and then half verifies, each bounded by requests and
#      seconds; the daemon's CPU use is printed as "cores busy"; registry_bench
#      fails if any request failed or any push is missing from the catalog or
#      the audit log,
#   4. (b) one big push: a ~1 GiB torch checkpoint (bench/make_big_checkpoint.py,
#      kept in $CACHE and reused), `openssl dgst -sha256` on it (warm cache,
#      best of 3) against `ckptguard registry push` (best of 3, new tags), the
#      ratio, plus `ckptguard registry verify` (upload + hash only, no scan) and
#      `ckptguard scan` to show where the push time goes, and the daemon's own
#      per-request milliseconds from its log,
#   5. stops the daemon with SIGTERM.
# Usage: bench/run_registry_bench.sh [SIZE_GB]   (needs: scripts/setup.sh --tests)
# Environment: BUILD_DIR (default build/release), CACHE (default build/bench-cache),
#   THREADS (12), REQUESTS (10000), SECONDS_PER_RUN (30), REPEAT (3),
#   CKPTGUARDD (default $BUILD_DIR/daemon/ckptguardd: another build of the daemon to measure).
# Exit status: 0 when every request succeeded, nothing was lost and every big
# push succeeded (the 1 GiB ratio is reported, not enforced), else non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1.0}
build=${BUILD_DIR:-build/release}
cache=${CACHE:-build/bench-cache}
threads=${THREADS:-12}
requests=${REQUESTS:-10000}
seconds=${SECONDS_PER_RUN:-30}
repeat=${REPEAT:-3}
daemon_bin=${CKPTGUARDD:-$build/daemon/ckptguardd}
jobs=$(nproc)
cmake --preset release -B "$build" -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target registry_bench ckptguardd ckptguard >/dev/null

work=$(mktemp -d)
data=$(mktemp -d)
daemon_pid=
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" && wait "$daemon_pid" || true
  fi
  rm -rf "$work" "$data"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# The daemon: a fresh data folder, an admin token, any free port.
token=$("$daemon_bin" --data-dir "$data" token create bench --scope admin | tail -1)
"$daemon_bin" --data-dir "$data" --listen 127.0.0.1:0 --port-file "$work/port" \
  >"$work/daemon.out" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
[[ -s "$work/port" ]] || { echo "ckptguardd did not start:" >&2; cat "$work/daemon.log" >&2; exit 2; }
url="http://127.0.0.1:$(cat "$work/port")"
echo "== ckptguardd ($daemon_bin) pid $daemon_pid at $url, data $data"

# (a) many small pushes and verifies.
status=0
echo "== (a1) small pushes only: $threads threads, <= $requests requests, <= ${seconds}s"
"$build/bench/registry_bench" --url "$url" --token "$token" --threads "$threads" --requests "$requests" \
  --seconds "$seconds" --verify-percent 0 --run-id push-only --daemon-pid "$daemon_pid" \
  tests/data/corpus/benign || status=1
echo "== (a2) half pushes, half verifies (1 in 5 of them sends the file): $threads threads"
"$build/bench/registry_bench" --url "$url" --token "$token" --threads "$threads" --requests "$requests" \
  --seconds "$seconds" --verify-percent 50 --verify-file-percent 20 --run-id mixed --daemon-pid "$daemon_pid" \
  tests/data/corpus/benign || status=1

# (b) the big push.
mkdir -p "$cache"
big="$cache/big-${size}g.pt"
if [[ ! -s "$big" ]]; then
  /usr/bin/python3 bench/make_big_checkpoint.py "$big" --size-gb "$size" >&2
fi
bytes=$(stat -c %s "$big")
echo "== (b) big push: $big, $bytes bytes"
cat "$big" >/dev/null  # warm the page cache
openssl_times=() push_times=() verify_times=()
for i in $(seq "$repeat"); do
  t0=$(now); openssl dgst -sha256 "$big" >/dev/null; t1=$(now)
  openssl_times+=("$(elapsed "$t0" "$t1")")
done
export CKPTGUARD_REGISTRY="$url" CKPTGUARD_TOKEN="$token"
for i in $(seq "$repeat"); do
  t0=$(now)
  if ! "$build/cli/ckptguard" registry push "$big" --name bench/big --tag "big-$i" >/dev/null; then
    echo "ckptguard registry push failed (see above); daemon log:" >&2; tail -3 "$work/daemon.log" >&2
    status=1; break
  fi
  t1=$(now)
  push_times+=("$(elapsed "$t0" "$t1")")
done
for i in $(seq "$repeat"); do
  [[ ${#push_times[@]} -gt 0 ]] || break
  t0=$(now); "$build/cli/ckptguard" registry verify "$big" >/dev/null || { status=1; break; }; t1=$(now)
  verify_times+=("$(elapsed "$t0" "$t1")")
done
t0=$(now); "$build/cli/ckptguard" scan "$big" >/dev/null || true; t1=$(now)
scan_time=$(elapsed "$t0" "$t1")
openssl_best=$(best "${openssl_times[@]}")
push_best=$(best "${push_times[@]:-nan}")
verify_best=$(best "${verify_times[@]:-nan}")
echo "openssl dgst -sha256:        ${openssl_times[*]} s (best $openssl_best s)"
echo "ckptguard registry push:     ${push_times[*]} s (best $push_best s)"
echo "ckptguard registry verify:   ${verify_times[*]} s (best $verify_best s; upload + hash + lookup, no scan)"
echo "ckptguard scan (local):      $scan_time s"
echo "daemon's own ms per big request (header to answer written):"
grep -E 'POST /v1/(checkpoints\?name=bench%2Fbig&tag=big-[0-9]+|verify) ' "$work/daemon.log" | grep -v 'sha256=' | sed 's/^/  /' | tail -n $((2 * repeat))
[[ "$push_best" == nan ]] || awk -v p="$push_best" -v o="$openssl_best" -v b="$bytes" 'BEGIN {
  printf "push / openssl = %.2f (target < 2.00): %s; push %.0f MiB/s, openssl %.0f MiB/s\n",
         p / o, (p < 2 * o ? "met" : "MISSED"), b / p / 1048576, b / o / 1048576 }'

kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=
echo "== daemon stopped: $(tail -1 "$work/daemon.out")"
exit "$status"

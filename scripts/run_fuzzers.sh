#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR/fuzz for SECONDS each, on a scratch
# copy of its seed corpus (fuzz/corpus/<target>) plus fuzz/regressions/<target>,
# with its dictionary when there is one. A crash or invariant failure fails
# the run and leaves the input in fuzz/crashes/ (add it to fuzz/regressions/).
# <target>_defaults_fuzzer binaries (the user's default limits) use their base
# target's seeds, dictionary and regressions. Every run is bounded in memory
# (-rss_limit_mb, -malloc_limit_mb): an input that makes the parsers allocate
# past them (an amplifier the per-file budget should stop) is a crash.
# Targets run JOBS at a time (default: the number of cores), each for its
# full SECONDS: the same fuzzing in less wall time. Reports are printed in
# target order once all have finished.
# Usage: scripts/run_fuzzers.sh BUILD_DIR SECONDS
#        (RSS_LIMIT_MB / MALLOC_LIMIT_MB change the bounds: default 2048 / 1024;
#         JOBS: targets at once)
set -euo pipefail
build=${1:?build dir}
seconds=${2:?seconds}
jobs=${JOBS:-$(nproc)}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/fuzz/crashes"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# run_one BINARY_PATH: fuzzes one target; its report goes to $logs/<binary>.log
# and its exit status to $logs/<binary>.rc.
run_one() {
  local bin=$1 binary name work
  binary=$(basename "$bin" _fuzzer)
  name=${binary%_defaults}
  work=$(mktemp -d)
  cp "$root/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  local dict=()
  [ -f "$root/fuzz/$name.dict" ] && dict=(-dict="$root/fuzz/$name.dict")
  local rc=0
  "$bin" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -rss_limit_mb="${RSS_LIMIT_MB:-2048}" -malloc_limit_mb="${MALLOC_LIMIT_MB:-1024}" \
      -artifact_prefix="$root/fuzz/crashes/$binary-" "$work" "$root/fuzz/regressions/$name" \
      > "$logs/$binary.log" 2>&1 || rc=$?
  echo "$rc" > "$logs/$binary.rc"
  rm -rf "$work"
}

targets=()
for bin in "$build"/fuzz/*_fuzzer; do
  [ -x "$bin" ] && targets+=("$bin")
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $jobs at a time"
running=0
for bin in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$bin" &
  running=$((running + 1))
done
wait || true

status=0
for bin in "${targets[@]}"; do
  binary=$(basename "$bin" _fuzzer)
  echo "fuzz: $binary for ${seconds}s"
  if [ "$(cat "$logs/$binary.rc" 2>/dev/null || echo missing)" != 0 ]; then
    tail -40 "$logs/$binary.log" >&2 || echo "no log for $binary" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$logs/$binary.log" | tail -2
  fi
done
exit $status

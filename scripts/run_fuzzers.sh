#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR/fuzz for SECONDS each, on a scratch
# copy of its seed corpus (fuzz/corpus/<target>) plus fuzz/regressions/<target>,
# with its dictionary when there is one. A crash or invariant failure fails
# the run and leaves the input in fuzz/crashes/ (add it to fuzz/regressions/).
# <target>_defaults_fuzzer binaries (the user's default limits) use their base
# target's seeds, dictionary and regressions. Every run is bounded in memory
# (-rss_limit_mb, -malloc_limit_mb): an input that makes the parsers allocate
# past them (an amplifier the per-file budget should stop) is a crash.
# Usage: scripts/run_fuzzers.sh BUILD_DIR SECONDS
#        (RSS_LIMIT_MB / MALLOC_LIMIT_MB change the bounds: default 2048 / 1024)
set -euo pipefail
build=${1:?build dir}
seconds=${2:?seconds}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/fuzz/crashes"
status=0
for bin in "$build"/fuzz/*_fuzzer; do
  [ -x "$bin" ] || continue
  binary=$(basename "$bin" _fuzzer)
  name=${binary%_defaults}
  work=$(mktemp -d)
  cp "$root/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f "$root/fuzz/$name.dict" ] && dict=(-dict="$root/fuzz/$name.dict")
  echo "fuzz: $binary for ${seconds}s"
  if ! "$bin" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        -rss_limit_mb="${RSS_LIMIT_MB:-2048}" -malloc_limit_mb="${MALLOC_LIMIT_MB:-1024}" \
        -artifact_prefix="$root/fuzz/crashes/$binary-" "$work" "$root/fuzz/regressions/$name" \
        > "$work.log" 2>&1; then
    tail -40 "$work.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$work.log" | tail -2
  fi
  rm -rf "$work" "$work.log"
done
exit $status

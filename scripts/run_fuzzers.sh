#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR/fuzz for SECONDS each, on a scratch
# copy of its seed corpus (fuzz/corpus/<target>) plus fuzz/regressions/<target>,
# with its dictionary when there is one. A crash or invariant failure fails
# the run and leaves the input in fuzz/crashes/ (add it to fuzz/regressions/).
# Usage: scripts/run_fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail
build=${1:?build dir}
seconds=${2:?seconds}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/fuzz/crashes"
status=0
for bin in "$build"/fuzz/*_fuzzer; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin" _fuzzer)
  work=$(mktemp -d)
  cp "$root/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f "$root/fuzz/$name.dict" ] && dict=(-dict="$root/fuzz/$name.dict")
  echo "fuzz: $name for ${seconds}s"
  if ! "$bin" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$root/fuzz/crashes/$name-" "$work" "$root/fuzz/regressions/$name" \
        > "$work.log" 2>&1; then
    tail -40 "$work.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$work.log" | tail -2
  fi
  rm -rf "$work" "$work.log"
done
exit $status

#!/usr/bin/env bash
# Loads one checkpoint with two builds of bench/load_bench (before/after) in
# each of their ways, and with torch.load(weights_only=True), alternating for
# ROUNDS rounds, and prints each configuration's best time and every peak
# RSS. For machines whose speed drifts from minute to minute: every
# configuration runs once per round, and the best of the rounds is kept.
#
#   bench/run_load_series.sh BEFORE_LOAD_BENCH AFTER_LOAD_BENCH FILE [ROUNDS]
set -euo pipefail
before=$1 after=$2 file=$3 rounds=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
declare -A best rss
configs=("before|$before $file" "threads1|$after $file --threads 1" "default|$after $file" "beside|$after $file --beside")
for _ in $(seq 1 "$rounds"); do
  for cfg in "${configs[@]}"; do
    name=${cfg%%|*}
    out=$(${cfg#*|} --repeat 10)
    s=$(grep -o '"seconds_best":[0-9.]*' <<<"$out" | cut -d: -f2)
    r=$(grep -o '"peak_rss_kib":[0-9]*' <<<"$out" | cut -d: -f2)
    if [ -z "${best[$name]:-}" ] || (( $(echo "$s < ${best[$name]}" | bc -l) )); then best[$name]=$s; fi
    rss[$name]="${rss[$name]:-} $r"
  done
  s=$(/usr/bin/python3 "$here/torch_load.py" "$file" --repeat 2 | grep -o '"seconds_best": [0-9.]*' | cut -d' ' -f2)
  if [ -z "${best[torch]:-}" ] || (( $(echo "$s < ${best[torch]}" | bc -l) )); then best[torch]=$s; fi
done
for k in before threads1 default beside torch; do echo "$k best=${best[$k]} s peak_rss_kib:${rss[$k]:-}"; done

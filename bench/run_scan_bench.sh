#!/usr/bin/env bash
# Scan throughput, as recorded in docs/benchmarks.md: a >= 1 GiB checkpoint
# made by torch (cold from disk and warm), a 20,000-tensor state dict, and a
# folder of 1,000 small checkpoints scanned by `ckptguard scan` on every core.
# Usage: bench/run_scan_bench.sh [SIZE_GB]   (needs: scripts/setup.sh --tests)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1.0}
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target scan_bench ckptguard >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 bench/make_big_checkpoint.py "$work/big.pt" --size-gb "$size" >&2
/usr/bin/python3 bench/make_many_checkpoints.py wide "$work/wide.pt" --tensors 20000
/usr/bin/python3 bench/make_many_checkpoints.py folder "$work/many" --count 1000
build/release/bench/scan_bench "$work/big.pt" --repeat 20
build/release/bench/scan_bench "$work/wide.pt" --repeat 20
for run in 1 2 3; do
  start=$(date +%s.%N)
  build/release/cli/ckptguard scan --format json "$work/many" > "$work/report.json" || true
  end=$(date +%s.%N)
  /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); s=float(sys.argv[3])-float(sys.argv[2]); \
print(json.dumps({'tool': 'ckptguard scan (folder)', 'files': d['summary']['files'], 'safe': d['summary']['safe'], \
'seconds': round(s, 4), 'files_per_second': round(d['summary']['files'] / s), 'jobs': $(nproc)}))" "$work/report.json" "$start" "$end"
done

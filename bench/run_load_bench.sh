#!/usr/bin/env bash
# Loads a >= 1 GiB checkpoint made by torch with ckptguard and with
# torch.load(weights_only=True), in the same run, on the same file (already in
# the page cache for both), and prints both JSON lines. The numbers in
# docs/benchmarks.md come from this script.
# Usage: bench/run_load_bench.sh [SIZE_GB]   (needs: scripts/setup.sh --tests)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1.0}
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target load_bench >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 bench/make_big_checkpoint.py "$work/big.pt" --size-gb "$size" >&2
/usr/bin/python3 bench/torch_load.py "$work/big.pt" --repeat 5
build/release/bench/load_bench "$work/big.pt" --repeat 20
build/release/bench/load_bench "$work/big.pt" --repeat 1 --digest

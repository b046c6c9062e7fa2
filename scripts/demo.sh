#!/usr/bin/env bash
# The main job on the sample files in examples/: installs what is needed,
# builds ckptguard (release) and shows what it sees inside each sample,
# benign and hostile, without executing anything.
# Usage: scripts/demo.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target ckptguard
bin=build/release/cli/ckptguard
samples=()
for f in examples/*; do
  case "$f" in *.md) continue ;; esac
  samples+=("$f")
done
echo "### ckptguard info examples/* (formats by content, entries, pickles, anomalies)"
"$bin" info "${samples[@]}"
for f in "${samples[@]}"; do
  echo
  echo "### ckptguard disasm $f"
  "$bin" disasm "$f"
done

#!/usr/bin/env bash
# The main job on the sample files in examples/: installs what is needed,
# builds ckptguard (release) and shows what it sees inside each sample,
# benign and hostile, without executing anything.
# Usage: scripts/demo.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target ckptguard mlp_forward
bin=build/release/cli/ckptguard
samples=()
for f in examples/*; do
  case "$f" in *.md | *.cc | *.txt | *.json) continue ;; esac
  samples+=("$f")
done
echo "### ckptguard scan examples/ (what loading each file would run; nothing is run)"
"$bin" scan examples/ || true
echo
echo "### ckptguard info examples/* (formats by content, entries, pickles, anomalies)"
"$bin" info "${samples[@]}"
for f in "${samples[@]}"; do
  echo
  echo "### ckptguard disasm $f"
  "$bin" disasm "$f"
done

echo
echo "### ckptguard inspect examples/mlp.params (the hardened loader: tensors, digests, values)"
"$bin" inspect examples/mlp.params
echo
echo "### ckptguard inspect on a hostile sample: refused, naming the global; nothing runs"
"$bin" inspect examples/os_system_p4.pkl || true
echo
echo "### ckptguard check: does mlp.params fit the MLP's expected keys and shapes?"
"$bin" check examples/mlp.params --expect examples/mlp.schema.json
echo
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "### ckptguard convert + verify: mlp.params to safetensors and back, checked"
"$bin" convert examples/mlp.params "$out/mlp.safetensors"
"$bin" convert "$out/mlp.safetensors" "$out/mlp.pt"
"$bin" verify "$out/mlp.safetensors" "$out/mlp.pt"
echo
echo "### examples/mlp_forward.cc: load the weights in C++ and run the MLP like torch did"
build/release/examples/mlp_forward examples/mlp.params examples/mlp_input.pt examples/mlp_output.pt

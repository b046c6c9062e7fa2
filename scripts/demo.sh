#!/usr/bin/env bash
# The main job on the sample files in examples/: installs what is needed,
# builds ckptguard (release) and shows what it sees inside each sample,
# benign and hostile, without executing anything.
# Usage: scripts/demo.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target ckptguard ckptguardd mlp_forward ckptguard_python
# `import ckptguard` for Debian's python3: the package goes to
# /usr/local/lib/python3.X/dist-packages (as root, or through sudo; without
# either, the Python section below imports it from the build folder).
py_path=""
if [ "$(id -u)" -eq 0 ]; then
  cmake --install build/release --component python >/dev/null
elif command -v sudo >/dev/null; then
  sudo cmake --install build/release --component python >/dev/null
else
  py_path=build/release/python
fi
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
echo
echo "### import ckptguard: the same from Python (zero-copy numpy arrays; hostile files raise)"
PYTHONPATH="$py_path" /usr/bin/python3 - examples <<'PY'
import sys, ckptguard
ex = sys.argv[1]
weights = ckptguard.load(f"{ex}/mlp.params")
for name, a in weights.items():
    print(f"{name}: {a.dtype} {a.shape} (a view of the mapped file: {not a.flags.owndata})")
try:
    ckptguard.load(f"{ex}/os_system_p4.pkl")
except ckptguard.ForbiddenGlobalError as e:
    print(f"refused ({type(e).__name__}, entry {e.entry!r}, byte {e.offset}): {e}")
print("scan:", [(f["path"].rsplit("/", 1)[-1], f["verdict"]) for f in ckptguard.scan([f"{ex}/mlp.params", f"{ex}/os_system_p4.pkl"])["files"]])
PY

echo
echo "### ckptguard keygen / sign / verify-signature: OpenSSF model-signing without a daemon"
"$bin" keygen --out "$out/signer.pem"
"$bin" sign examples/mlp.params --key "$out/signer.pem" --signature "$out/mlp.params.sig"
openssl pkey -in "$out/signer.pem" -pubout -out "$out/signer.pub.pem"
"$bin" verify-signature examples/mlp.params --signature "$out/mlp.params.sig" --key "$out/signer.pub.pem"

echo
echo "### ckptguardd: a signed registry on a free loopback port, fed the examples"
daemon=build/release/daemon/ckptguardd
data="$out/registry"
token=$("$daemon" --data-dir "$data" token create demo | tail -1)
"$daemon" --data-dir "$data" --listen 127.0.0.1:0 --port-file "$out/port" 2>"$out/ckptguardd.log" &
daemon_pid=$!
trap 'kill "$daemon_pid" 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do [ -s "$out/port" ] && break; sleep 0.1; done
export CKPTGUARD_REGISTRY="http://127.0.0.1:$(cat "$out/port")" CKPTGUARD_TOKEN="$token"
"$bin" registry push examples/mlp.params --name mlp --tag v1
"$bin" registry push examples/os_system_p4.pkl --name not-a-model || true
"$bin" registry list
"$bin" registry pull mlp:v1 --out "$out/mlp-pulled.pt"
"$bin" registry verify "$out/mlp-pulled.pt"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
echo "(ckptguardd log:)"
cat "$out/ckptguardd.log"

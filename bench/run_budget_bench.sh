#!/usr/bin/env bash
# The numbers of docs/benchmarks.md "One budget per file" (issue 13), in one run:
#   1. the amplifiers (tests/amplifiers.h): whole-process `ckptguard scan` and
#      `ckptguard inspect`, wall time and peak RSS (GNU time's %M, or Python's
#      rusage when /usr/bin/time is missing);
#   2. a 20,000-tensor state dict made by torch.save: torch.load(weights_only=True)
#      and LoadCheckpoint on the same file, then whole-process `ckptguard scan`;
#   3. a tiny pickle (pickle.dumps(None)): whole-process `ckptguard scan`,
#      start-up included, and `ckptguard --version`.
# Usage: bench/run_budget_bench.sh   (needs: scripts/setup.sh --tests)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release -DCKPTGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build --preset release -j "$(nproc)" --target ckptguard load_bench make_amplifiers >/dev/null
cli=build/release/cli/ckptguard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run LABEL CMD...: one JSON line with wall seconds, peak RSS and exit code.
run() {
  local label=$1
  shift
  /usr/bin/python3 - "$label" "$@" <<'PY'
import json, resource, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"case": label, "seconds": round(seconds, 4), "peak_rss_kib": rss, "exit": rc}))
PY
}

build/release/bench/make_amplifiers "$work"
for f in nested_shared.zip none_pop.pkl sparse_memo.pkl huge_declared.pt broadcast_view.pt; do
  run "scan $f ($(stat -c %s "$work/$f") bytes)" "$cli" scan --format json "$work/$f"
  run "inspect $f" "$cli" inspect --json "$work/$f"
done

/usr/bin/python3 bench/make_many_checkpoints.py wide "$work/wide.pt" --tensors 20000
/usr/bin/python3 bench/torch_load.py "$work/wide.pt" --repeat 5
build/release/bench/load_bench "$work/wide.pt" --repeat 20
for i in 1 2 3 4 5; do run "scan wide.pt (20,000 tensors)" "$cli" scan --format json "$work/wide.pt"; done

/usr/bin/python3 -c "import pickle, sys; open(sys.argv[1], 'wb').write(pickle.dumps(None))" "$work/tiny.pkl"
for i in 1 2 3 4 5; do run "scan tiny.pkl" "$cli" scan --format json "$work/tiny.pkl"; done
for i in 1 2 3; do run "--version" "$cli" --version; done

#!/usr/bin/env bash
# The planted-bug test: proves a fuzz target finds a real bounds bug within the
# CI time box. Copies the source tree to a temporary folder, applies
# scripts/planted_bug.patch there (it drops the header-length check in
# lib/formats/src/npy_reader.cc; the production source never carries the bug,
# not even behind a macro), builds npy_fuzzer with the `fuzz` preset, runs it
# from its seed corpus for at most SECONDS (default 60) and succeeds only if
# libFuzzer stops on an AddressSanitizer report. Scratch corpus and crash
# artifacts go to a temporary folder, never to fuzz/corpus, fuzz/crashes or
# fuzz/regressions.
# Usage: scripts/planted_bug_test.sh [SECONDS]
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=npy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The patched copy: everything but build folders and git's data.
src=$work/src
mkdir -p "$src"
tar -C "$root" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$src" -xf -
patch -s -p1 -d "$src" < scripts/planted_bug.patch
(cd "$src" && cmake --preset fuzz >/dev/null &&
 cmake --build --preset fuzz --target "${target}_fuzzer" -j "${JOBS:-$(nproc)}" >/dev/null)
bin=$src/build/fuzz/fuzz/${target}_fuzzer

mkdir -p "$work/corpus" "$work/artifacts"
cp fuzz/corpus/$target/* "$work/corpus"/
# Symbolized frames in the report when a symbolizer is installed (optional).
for sym in llvm-symbolizer-16 llvm-symbolizer; do
  if command -v "$sym" >/dev/null; then export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v "$sym")}; break; fi
done
start=$(date +%s)
set +e
"$bin" -dict="fuzz/$target.dict" -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" > "$work/log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))

if [ $rc -ne 0 ] && grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$work/log" \
   && ls "$work/artifacts"/crash-* >/dev/null 2>&1; then
  runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$work/log" | grep -oE "[0-9]+$" || echo "?")
  frame=$(grep -m1 -E "#[0-9]+ .* in .*ParseNpy" "$work/log" | sed -E 's/^ *//' || true)
  echo "planted bug: found by ${target}_fuzzer in ${elapsed}s (${runs} runs): ${frame:-ASan report}"
  exit 0
fi
echo "FAIL: planted bug not found by ${target}_fuzzer within ${seconds}s (exit $rc)" >&2
tail -30 "$work/log" >&2
exit 1

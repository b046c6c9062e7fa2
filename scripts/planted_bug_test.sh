#!/usr/bin/env bash
# The planted-bug test: proves a fuzz target finds a real bounds bug within the
# CI time box. Applies scripts/planted_bug.patch (it drops the header-length
# check in lib/formats/src/npy_reader.cc; the production source never carries
# the bug, not even behind a macro) to a copy of that one source file in a
# temporary folder, compiles the copy with the exact command the `fuzz` build
# uses for the original, links npy_fuzzer again with the patched object ahead
# of the libraries (so the archive's own npy_reader.o is never pulled in), runs
# that binary from its seed corpus for at most SECONDS (default 60) and
# succeeds only if libFuzzer stops on an AddressSanitizer report. Nothing in
# the source tree or build/fuzz changes; patched source, object, binary,
# scratch corpus and crash artifacts live in the temporary folder, never in
# fuzz/corpus, fuzz/crashes or fuzz/regressions.
# Usage: scripts/planted_bug_test.sh [SECONDS]   (builds the `fuzz` preset's
# npy_fuzzer first if build/fuzz does not have it; scripts/test.sh has built it)
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=npy
source_file=lib/formats/src/npy_reader.cc
build=$root/build/fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The patch must touch exactly the one file compiled again below.
touched=$(grep -E '^\+\+\+ ' scripts/planted_bug.patch | sed -E 's#^\+\+\+ b/##; s#\t.*##' | sort -u)
if [ "$touched" != "$source_file" ]; then
  echo "FAIL: scripts/planted_bug.patch must change only $source_file (it changes: $touched)" >&2
  exit 1
fi

[ -f "$build/build.ninja" ] || cmake --preset fuzz >/dev/null
cmake --build "$build" --target "${target}_fuzzer" -j "${JOBS:-$(nproc)}" >/dev/null

patch -s -o "$work/npy_reader.cc" "$source_file" < scripts/planted_bug.patch

# The original's compile command, with the patched copy as input. Quoted
# includes still resolve beside the original (-iquote its folder).
compile=$(CKG_SOURCE="$root/$source_file" CKG_COPY="$work/npy_reader.cc" CKG_OBJECT="$work/npy_reader.o" \
  /usr/bin/python3 - "$build/compile_commands.json" <<'EOF'
import json, os, shlex, sys
source, copy, obj = os.environ["CKG_SOURCE"], os.environ["CKG_COPY"], os.environ["CKG_OBJECT"]
for entry in json.load(open(sys.argv[1])):
    if os.path.realpath(os.path.join(entry["directory"], entry["file"])) != os.path.realpath(source):
        continue
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            out += ["-o", obj]; i += 2; continue
        if a == "-c":
            out += ["-iquote", os.path.dirname(source), "-c", copy]; i += 2; continue
        out.append(a); i += 1
    print(shlex.join(out))
    break
else:
    sys.exit("no compile command for " + source)
EOF
)
(cd "$build" && eval "$compile")

# npy_fuzzer's link command, with the patched object first and a new output.
link=$(ninja -C "$build" -t commands "fuzz/${target}_fuzzer" | tail -1)
own_object="fuzz/CMakeFiles/${target}_fuzzer.dir/${target}_fuzzer.cc.o"
if [[ "$link " != *" $own_object "* || "$link " != *" -o fuzz/${target}_fuzzer "* ]]; then
  echo "FAIL: unexpected link command for ${target}_fuzzer: $link" >&2
  exit 1
fi
link=${link/ $own_object / $own_object $work/npy_reader.o }
link=${link/ -o fuzz\/${target}_fuzzer / -o $work/${target}_fuzzer }
(cd "$build" && eval "$link")
bin=$work/${target}_fuzzer

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

#!/bin/bash
# compare_outputs.sh BASE_BINARY NEW_BINARY [EXTRA_FILE...]
# Runs `scan --format json`, `info --json`, `inspect --json` and `disasm` of
# every file under tests/data and examples (and the extra files) with both
# binaries and diffs stdout, stderr and exit codes: a performance change must
# leave every output byte-identical. Run from the repository root.
set -u
base=$1; new=$2; shift 2
out=$(mktemp -d)
files=$(find tests/data examples -type f | sort; for f in "$@"; do echo "$f"; done)
for side in base new; do
  bin=$base; [ $side = new ] && bin=$new
  mkdir -p "$out/$side"; i=0
  while read -r f; do
    i=$((i + 1))
    for cmd in "scan --format json" "info --json" "inspect --json" "disasm"; do
      tag=${cmd%% *}
      timeout 60 "$bin" $cmd "$f" > "$out/$side/$i.$tag.out" 2> "$out/$side/$i.$tag.err"
      echo "rc=$?" >> "$out/$side/$i.$tag.err"
    done
  done <<< "$files"
done
if diff -r "$out/base" "$out/new" > "$out/diff.txt"; then
  echo "identical: $(echo "$files" | wc -l) files x 4 commands"; rm -rf "$out"
else
  echo "DIFFERENT (see $out/diff.txt)"; head -40 "$out/diff.txt"; exit 1
fi

#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. install the Debian packages (scripts/setup.sh),
#   2. build with AddressSanitizer + UBSan and run every CTest test
#      (Boost.Test suites, the pickletools oracle, fuzz-target replays),
#   3. build the libFuzzer targets with clang and run each briefly, then the
#      planted-bug test (scripts/planted_bug_test.sh).
# Usage: scripts/test.sh   (from anywhere; FUZZ_SECONDS=N changes step 3's time box)
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's start, with the seconds since the script began (CI allows 45 min).
began=$(date +%s)
step() { echo "== [$(date +%T), $(( $(date +%s) - began )) s] $*"; }
step "setup: Debian packages"
bash scripts/setup.sh --tests

jobs=$(nproc)
step "build: asan-ubsan"
cmake --preset asan-ubsan >/dev/null
cmake --build --preset asan-ubsan -j "$jobs"
step "test: ctest (asan-ubsan)"
ctest --preset asan-ubsan -j "$jobs"

step "build: fuzz"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
step "fuzz: every target"
bash scripts/run_fuzzers.sh build/fuzz "${FUZZ_SECONDS:-15}"
# The fuzzers find bugs: npy_fuzzer must find a planted one (a test-only build
# without a bounds check) within 60 s.
step "fuzz: planted bug"
bash scripts/planted_bug_test.sh 60

# Nothing from the hostile corpus may ever have run.
if ls /tmp/ckptguard-pwned-* >/dev/null 2>&1; then
  echo "FAIL: payload markers exist: $(ls /tmp/ckptguard-pwned-*)" >&2
  exit 1
fi
step "done"

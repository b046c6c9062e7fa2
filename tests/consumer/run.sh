#!/usr/bin/env bash
# The C++ package as an integrator uses it: install the "lib" component of a
# build into an empty prefix, then build tests/consumer/consumer.cc against
# that prefix alone, once with find_package(ckptguard) and once with
# pkg-config, and run both on a benign checkpoint and a hostile pickle.
# Usage: run.sh BUILD_DIR SOURCE_DIR CXX_COMPILER "EXTRA_FLAGS" BENIGN HOSTILE
# (EXTRA_FLAGS: the sanitizer flags of a sanitizer build, else empty).
set -euo pipefail
build=$1 src=$2 cxx=$3 flags=$4 benign=$5 hostile=$6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" --component lib >/dev/null
test -f "$work/prefix/include/ckptguard/version.h"

echo "== find_package(ckptguard)"
cmake -S "$src/tests/consumer" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/cmake"
"$work/cmake/consumer" "$benign" "$hostile"

echo "== pkg-config ckptguard"
pc_dir=$(dirname "$(find "$work/prefix" -name ckptguard.pc | head -n 1)")
export PKG_CONFIG_PATH="$pc_dir"
pkg-config --modversion ckptguard
# shellcheck disable=SC2046,SC2086  # word splitting of the flags is wanted
"$cxx" $flags -Wall -Wextra -Werror -o "$work/consumer-pc" "$src/tests/consumer/consumer.cc" \
  $(pkg-config --cflags --libs ckptguard)
# A shared build's libraries are found as a user of an unusual prefix finds
# them (the find_package build gets a run path from CMake instead).
LD_LIBRARY_PATH="$(pkg-config --variable=libdir ckptguard)" "$work/consumer-pc" "$benign" "$hostile"

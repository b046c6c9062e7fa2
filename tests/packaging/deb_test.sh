#!/usr/bin/env bash
# The Debian packages as a user gets them: CPack makes ckptguard and
# libckptguard-dev from BUILD_DIR, this checks what they hold and their
# control fields, then (as root, as in CI) installs both with dpkg, uses what
# they installed (the commands, man pages, bash completion, the systemd
# unit, pkg-config and the CMake package) and purges them again.
# Usage: deb_test.sh BUILD_DIR SAMPLE_HOSTILE_PICKLE
# Exit 77 (CTest: skipped) when not root: nothing to install with.
set -euo pipefail
build=$1 hostile=$2
work=$(mktemp -d)
installed=()
cleanup() {
  if [ ${#installed[@]} -gt 0 ]; then dpkg --purge "${installed[@]}" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$work/out" >/dev/null)
tools=$(ls "$work"/out/ckptguard_*.deb) || fail "no ckptguard package"
dev=$(ls "$work"/out/libckptguard-dev_*.deb) || fail "no libckptguard-dev package"

echo "== contents"
tool_files=$(dpkg-deb -c "$tools" | awk '{print $6}')
for f in ./usr/bin/ckptguard ./usr/bin/ckptguardd ./usr/lib/systemd/system/ckptguardd.service \
         ./usr/share/man/man1/ckptguard.1.gz ./usr/share/man/man1/ckptguard-scan.1.gz \
         ./usr/share/man/man1/ckptguardd.1.gz ./usr/share/bash-completion/completions/ckptguard \
         ./usr/share/zsh/vendor-completions/_ckptguard ./usr/share/doc/ckptguard/copyright; do
  grep -qx -- "$f" <<<"$tool_files" || fail "ckptguard package lacks $f"
done
dev_files=$(dpkg-deb -c "$dev" | awk '{print $6}')
for f in ./usr/include/ckptguard/version.h ./usr/include/ckptguard/checkpoint.h \
         ./usr/include/ckptguard/scanner/scan.h ./usr/lib/cmake/ckptguard/ckptguardConfig.cmake \
         ./usr/lib/pkgconfig/ckptguard.pc; do
  grep -qx -- "$f" <<<"$dev_files" || fail "libckptguard-dev package lacks $f"
done
# One man page per subcommand the CLI lists.
for sub in $("$build/cli/ckptguard" --help | awk '/^Subcommands:/{s=1;next} s&&/^  [a-z]/{print $1}'); do
  grep -qx -- "./usr/share/man/man1/ckptguard-$sub.1.gz" <<<"$tool_files" || fail "no man page for $sub"
done
[ "$(dpkg-deb -f "$tools" Package)" = ckptguard ] || fail "package name"
dpkg-deb -f "$tools" Depends | grep -q libssl3 || fail "Depends lacks the libraries the commands link"
dpkg-deb -f "$dev" Depends | grep -q libre2-dev || fail "libckptguard-dev does not depend on what its archives link"

if [ "$(id -u)" -ne 0 ]; then
  echo "not root: the packages were built and checked, not installed"
  exit 77
fi
for p in ckptguard libckptguard-dev; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    fail "$p is already installed on this machine: not touching it"
  fi
done

echo "== dpkg -i"
installed=(ckptguard libckptguard-dev)
dpkg -i "$tools" "$dev" >/dev/null
[ "$(/usr/bin/ckptguard --version)" = "ckptguard $(dpkg-deb -f "$tools" Version)" ] || fail "ckptguard --version"
/usr/bin/ckptguardd --version >/dev/null
set +e
/usr/bin/ckptguard scan "$hostile" >/dev/null
rc=$?
set -e
[ $rc -eq 1 ] || fail "the installed ckptguard scan exited $rc on a hostile file, not 1"
zcat /usr/share/man/man1/ckptguard-scan.1.gz >"$work/scan.1"
grep -q 'fail\\-on' "$work/scan.1" || fail "the man page of scan lacks --fail-on"
if command -v man >/dev/null; then man -w ckptguard-scan >/dev/null || fail "man -w ckptguard-scan"; fi
got=$(bash -c 'source /usr/share/bash-completion/completions/ckptguard
  COMP_WORDS=(ckptguard sc); COMP_CWORD=1; _ckptguard; echo "${COMPREPLY[*]}"
  COMP_WORDS=(ckptguard scan --fail-on da); COMP_CWORD=3; _ckptguard; echo "${COMPREPLY[*]}"')
[ "$got" = $'scan\ndangerous' ] || fail "bash completion said: $got"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /usr/lib/systemd/system/ckptguardd.service || fail "systemd-analyze verify"
fi
[ "$(pkg-config --modversion ckptguard)" = "$(dpkg-deb -f "$dev" Version)" ] || fail "pkg-config"
# find_package from the system prefix (tests/consumer builds against a prefix).
mkdir -p "$work/find"
cat >"$work/find/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(find_ckptguard LANGUAGES CXX)
find_package(ckptguard 0.1 CONFIG REQUIRED)
get_target_property(features ckptguard::ckptguard INTERFACE_COMPILE_FEATURES)
message(STATUS "ckptguard ${ckptguard_VERSION} from ${ckptguard_DIR}: ${features}")
CMAKE
found=$(cmake -S "$work/find" -B "$work/find/build" 2>&1) || fail "find_package(ckptguard): $found"
grep -q "ckptguard $(dpkg-deb -f "$dev" Version) from /usr/lib/cmake/ckptguard: cxx_std_23" <<<"$found" ||
  fail "find_package(ckptguard) said: $found"

echo "== dpkg --purge"
dpkg --purge ckptguard libckptguard-dev >/dev/null
installed=()
[ ! -e /usr/bin/ckptguard ] && [ ! -e /usr/include/ckptguard ] || fail "files left after purge"
echo "ok"

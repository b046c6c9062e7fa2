#!/usr/bin/env bash
# Installs every Debian package ckptguard needs to build, test and fuzz.
# Idempotent: when everything is installed it prints nothing and touches nothing.
# Runs apt-get as root (directly, or through sudo when not root).
set -euo pipefail

PACKAGES=(
  # toolchain and build
  g++ cmake ninja-build pkg-config
  # libraries
  zlib1g-dev libbz2-dev liblzma-dev nlohmann-json3-dev libcli11-dev
  # tests: Boost.Test, and Debian's python3 for the pickletools oracle
  libboost-test-dev python3
  # fuzzing: clang-16 with libFuzzer and libc++ (libstdc++ 12's <expected>
  # needs a newer clang than Debian 12 has)
  clang-16 libclang-rt-16-dev libc++-16-dev libc++abi-16-dev
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

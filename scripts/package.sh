#!/usr/bin/env bash
# Builds the Debian packages (ckptguard, libckptguard-dev) from a release
# build for the prefix /usr, into dist/.
# Usage: scripts/package.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build/package -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DCKPTGUARD_BUILD_TESTS=OFF -DCKPTGUARD_PYTHON_PACKAGE=OFF >/dev/null
cmake --build build/package -j "$(nproc)"
(cd build/package && cpack -G DEB -B "$PWD/../../dist" >/dev/null)
rm -rf dist/_CPack_Packages
ls dist/*.deb

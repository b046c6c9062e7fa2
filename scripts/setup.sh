#!/usr/bin/env bash
# Installs the Debian packages ckptguard needs.
#   scripts/setup.sh          to build (the demo)
#   scripts/setup.sh --tests  also to test and fuzz: Boost.Test, clang-16 with
#                             libFuzzer, and Debian's python3 with torch and
#                             numpy (the real producers the interop tests use)
# Idempotent: when everything is installed it prints nothing and touches nothing.
# Runs apt-get as root (directly, or through sudo when not root).
set -euo pipefail

PACKAGES=(
  # toolchain and build; help2man makes the man pages from --help
  g++ cmake ninja-build pkg-config help2man
  # libraries (libarchive: tar and 7z archives)
  zlib1g-dev libbz2-dev liblzma-dev libarchive-dev nlohmann-json3-dev libcli11-dev libssl-dev libtomlplusplus-dev libre2-dev
  # libdeflate: the zip CRC-32 with carry-less multiplication
  libdeflate-dev
  # daemon: SQLite catalog, the PostgreSQL catalog's client library (libpq),
  # Boost.Beast/Asio HTTP (header-only); the openssl command (the demo, and
  # the tests' independent check of our signatures)
  libsqlite3-dev libpq-dev libboost-dev openssl
  # the Python package (python/: `import ckptguard`): pybind11 and Python's
  # headers to build it, numpy for its arrays
  pybind11-dev python3-dev python3-numpy
)
if [ "${1:-}" = "--tests" ]; then
  PACKAGES+=(
    # tests: Boost.Test; Debian's python3 for the pickletools oracle, with
    # torch 1.13 and numpy for the interop tests (call /usr/bin/python3), and
    # jsonschema to validate SARIF output against the official schema
    libboost-test-dev python3 python3-torch python3-numpy python3-jsonschema
    # pytest: tests/python (payloads proven under the real loaders, the
    # benign real-world corpus); yaml: the pre-commit hook and GitHub Action
    # definitions, read as their hosts read them
    python3-pytest python3-yaml
    # the reader-views test: joblib.load, and bsdtar (libarchive) for 7z
    python3-joblib libarchive-tools
    # curl: the e2e test fetches the registry's keys as any user would
    curl
    # the PostgreSQL catalog tests start a throwaway server (initdb, pg_ctl;
    # as `nobody` when run as root)
    postgresql
    # fuzzing: clang-16 with libFuzzer, on Debian's libstdc++ 12 (the fuzz
    # preset explains the __cpp_concepts define that lets it use <expected>)
    clang-16 libclang-rt-16-dev
  )
fi

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

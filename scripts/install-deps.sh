#!/usr/bin/env bash
# Installs the Debian packages ward's build, tests, example and benchmark need, when missing.
#
#   scripts/install-deps.sh          # install what is missing (as root), or say what is missing
#   scripts/install-deps.sh --check  # only report; exit 1 if something is missing
#
# Packages: PostgreSQL server and client binaries (tests start a throwaway server; pgbench),
# pgbouncer (benchmark baseline), libclang-dev (the pg_query crate builds the real PostgreSQL
# parser with bindgen), build-essential and pkg-config (C toolchain), python3 and openssl
# (benchmark helpers). `apt-get update` runs only when something has to be installed.
set -euo pipefail

# PG_MAJOR picks the PostgreSQL server package; default: the one Debian 12 ships.
PG_MAJOR=${PG_MAJOR:-15}
PACKAGES=(
  "postgresql-$PG_MAJOR"
  postgresql-client
  pgbouncer
  libclang-dev
  build-essential
  pkg-config
  python3
  openssl
)

check_only=false
[[ "${1:-}" == "--check" ]] && check_only=true

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: not a Debian/Ubuntu system (no dpkg-query); install these yourself:" >&2
  echo "  ${PACKAGES[*]}" >&2
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all system packages present"
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if $check_only; then
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: not root; run as root or install them yourself:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Installing the server package must not create and start a cluster on port 5432: the
# tests and the example start their own throwaway servers.
if ! installed postgresql-common; then
  mkdir -p /etc/postgresql-common
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
fi
apt-get update -q
apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}"
echo "install-deps: installed ${missing[*]}"

#!/usr/bin/env bash
# Installs the Debian packages ward's build, tests, example and benchmark need, when missing.
#
#   scripts/install-deps.sh          # install what is missing (as root), or say what is missing
#   scripts/install-deps.sh --check  # only report; exit 1 if something is missing
#
# Packages: PostgreSQL server and client binaries (tests start a throwaway server; pgbench),
# pgbouncer (benchmark baseline), libclang-dev (the pg_query crate builds the real PostgreSQL
# parser with bindgen), build-essential and pkg-config (C toolchain), python3 and openssl
# (benchmark helpers), openssh-server and openssh-client (the SSH tests start a throwaway sshd
# and drive it with ssh, scp and sftp through ward), Node.js and npm (ward-oidc's integration test runs a real OpenID Connect
# provider). `apt-get update` runs only when something has to be installed. Then the test
# provider's npm packages are installed with `npm ci` (pinned by its package-lock.json) when
# crates/ward-oidc/tests/oidc/node_modules is missing.
set -euo pipefail

OIDC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/crates/ward-oidc/tests/oidc"

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
  openssh-server
  openssh-client
)

check_only=false
[[ "${1:-}" == "--check" ]] && check_only=true

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The test provider's npm packages, when not installed yet.
npm_packages() {
  [[ -e "$OIDC_DIR/node_modules/oidc-provider/package.json" ]] && return 0
  if $check_only || ! command -v npm >/dev/null 2>&1; then
    echo "install-deps: missing: npm packages of the test OIDC provider (npm ci --prefix $OIDC_DIR)"
    return 1
  fi
  echo "install-deps: npm ci in $OIDC_DIR"
  npm ci --no-audit --no-fund --prefix "$OIDC_DIR"
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: not a Debian/Ubuntu system (no dpkg-query); install these yourself:" >&2
  echo "  ${PACKAGES[*]} nodejs npm" >&2
  npm_packages || true
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
# Node.js and npm are checked by command, not by package: NodeSource's nodejs package brings
# npm itself and conflicts with Debian's npm package.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all system packages present"
  npm_packages || exit 1
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if $check_only; then
  npm_packages || true
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
npm_packages

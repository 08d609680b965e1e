#!/usr/bin/env bash
# Lock latency: from an administrator's lock request until every live session of the
# identity has seen its connection end, with SESSIONS idle sessions open (tokio-postgres over
# TLS, through a release-built `ward serve`, to a throwaway PostgreSQL from the test harness).
# Also reports the API's answer time and each client's time.
#
#   bench/lock_latency.sh                    # 100 sessions, 20 rounds
#   SESSIONS=200 ROUNDS=50 bench/lock_latency.sh
#
# Needs what the integration tests need (PostgreSQL server binaries; scripts/install-deps.sh).
# The Markdown table goes to stdout and bench/results/lock_latency.md; progress to stderr.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SESSIONS=${SESSIONS:-100}
ROUNDS=${ROUNDS:-20}
mkdir -p bench/results

# Each session needs two descriptors in ward and one in the client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo bench -p ward --bench lock_latency -- --sessions "$SESSIONS" --rounds "$ROUNDS" |
  tee bench/results/lock_latency.md

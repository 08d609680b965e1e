#!/usr/bin/env bash
# Throughput and latency of ward against PostgreSQL direct and pgbouncer, plus ward's memory
# per idle session. Everything runs on 127.0.0.1 in a temporary directory that is removed at
# the end (set KEEP=1 to keep it).
#
#   bench/pgbench.sh            # or `make bench`
#
# Knobs (environment): DURATION (s per run, 20), WARMUP (s, 3), CLIENTS (8), THREADS (2),
# SCALE (10), IDLE_SESSIONS (1000), WARD_BIN (skip the release build and use this binary).
#
# Legs (each with TLS between pgbench and the server it talks to, sslmode=require):
#   direct     pgbench -> PostgreSQL (ssl = on)
#   pgbouncer  pgbench -> pgbouncer (client TLS, session pooling) -> PostgreSQL (plain TCP)
#   ward       pgbench -> ward (TLS, token login) -> PostgreSQL (plain TCP)
# Workload: `pgbench -S` (select-only) with -M simple and -M prepared.
# Results: a Markdown table on stdout and in bench/results/latest.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
IDLE_SESSIONS=${IDLE_SESSIONS:-1000}
RESULTS="$ROOT/bench/results/latest.md"
mkdir -p "$ROOT/bench/results"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'pgbench.sh: %s\n' "$*" >&2; exit 1; }

"$ROOT/scripts/install-deps.sh" >&2

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
PGBIN=$(find_pgbin)
command -v pgbouncer >/dev/null || die "pgbouncer is not installed (run scripts/install-deps.sh as root)"

if [[ -z "${WARD_BIN:-}" ]]; then
  say "building ward (release)"
  cargo build --release -p ward >&2
  WARD_BIN="$ROOT/target/release/ward"
fi
[[ -x "$WARD_BIN" ]] || die "no ward binary at $WARD_BIN"

# 1,000 idle sessions need ~2 descriptors each in ward and one in the client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ $(ulimit -n) -ge $((IDLE_SESSIONS * 2 + 100)) ]] ||
  say "warning: open-file limit $(ulimit -n) may be too low for $IDLE_SESSIONS idle sessions"

make_workdir ward-bench

WARD_PID=""
IDLE_PID=""
cleanup() {
  local rc=$?
  [[ -n "$IDLE_PID" ]] && kill "$IDLE_PID" 2>/dev/null || true
  [[ -n "$WARD_PID" ]] && kill "$WARD_PID" 2>/dev/null || true
  if [[ -f "$PGDIR/pgbouncer.pid" ]]; then
    kill "$(cat "$PGDIR/pgbouncer.pid")" 2>/dev/null || true
  fi
  if [[ -f "$PGDIR/data/postmaster.pid" ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" stop -m immediate >/dev/null 2>&1 || true
  fi
  [[ -n "$WARD_PID" ]] && wait "$WARD_PID" 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_PORT=$(free_port)
PGB_PORT=$(free_port)
WARD_PORT=$(free_port)
API_PORT=$(free_port)
BENCH_PASSWORD=$(openssl rand -hex 16)

# ---- PostgreSQL ----
start_postgres $((IDLE_SESSIONS + 100))

export PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=require PGCONNECT_TIMEOUT=10
say "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$WORK/logs/init.log" 2>&1 ||
  die "pgbench -i failed: $(tail -20 "$WORK/logs/init.log")"

# ---- pgbouncer ----
say "starting pgbouncer on 127.0.0.1:$PGB_PORT"
printf '"bench" "%s"\n' "$BENCH_PASSWORD" >"$PGDIR/pgbouncer.users"
cat >"$PGDIR/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGDIR/pgbouncer.users
pool_mode = session
max_client_conn = 200
default_pool_size = 40
client_tls_sslmode = require
client_tls_cert_file = $PGDIR/server.crt
client_tls_key_file = $PGDIR/server.key
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
logfile = $PGDIR/pgbouncer.log
pidfile = $PGDIR/pgbouncer.pid
INI
chmod 600 "$PGDIR/pgbouncer.users"
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$PGDIR/pgbouncer.users" "$PGDIR/pgbouncer.ini"
as_pg pgbouncer -d "$PGDIR/pgbouncer.ini" || die "pgbouncer did not start: $(tail -20 "$PGDIR/pgbouncer.log" 2>/dev/null)"

# ---- ward ----
say "starting ward on 127.0.0.1:$WARD_PORT"
WARD_PIDS=()
start_ward ward "$WARD_PORT" "$API_PORT" "mode: strict"
WARD_PID=${WARD_PIDS[-1]}

# ---- runs ----
# leg -> "port user password"
declare -A LEG_PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [ward]=$WARD_PORT)
declare -A LEG_USER=([direct]=bench [pgbouncer]=bench [ward]=bench)
declare -A LEG_PASS=([direct]=$BENCH_PASSWORD [pgbouncer]=$BENCH_PASSWORD [ward]=$WARD_TOKEN)
declare -A TPS P50 P99 CPU_US

# CPU time (user+system, in clock ticks) used so far by a process and all its threads.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
proxy_pid() { # leg -> pid of the proxy process whose CPU is measured ("" for direct)
  case $1 in
    pgbouncer) cat "$PGDIR/pgbouncer.pid" ;;
    ward) echo "$WARD_PID" ;;
    *) echo "" ;;
  esac
}

run_pgbench() { # leg mode seconds [log-prefix]
  local leg=$1 mode=$2 secs=$3 prefix=${4:-}
  local args=(-n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$secs"
    -h 127.0.0.1 -p "${LEG_PORT[$leg]}" -U "${LEG_USER[$leg]}")
  [[ -n "$prefix" ]] && args+=(-l "--log-prefix=$prefix")
  PGPASSWORD=${LEG_PASS[$leg]} "$PGBIN/pgbench" "${args[@]}" bench
}

for mode in simple prepared; do
  for leg in direct pgbouncer ward; do
    say "$leg, -M $mode: ${WARMUP}s warm-up, ${DURATION}s measured"
    run_pgbench "$leg" "$mode" "$WARMUP" >/dev/null 2>&1 || true
    prefix="$WORK/logs/tx-$leg-$mode"
    out="$WORK/logs/pgbench-$leg-$mode.txt"
    ppid=$(proxy_pid "$leg")
    [[ -n "$ppid" ]] && c0=$(cpu_ticks "$ppid")
    (cd "$WORK/logs" && run_pgbench "$leg" "$mode" "$DURATION" "$prefix") >"$out" 2>&1 ||
      die "pgbench through $leg failed: $(tail -20 "$out")"
    TPS[$leg-$mode]=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$out")
    if [[ -n "$ppid" ]]; then
      c1=$(cpu_ticks "$ppid")
      txns=$(awk '/^number of transactions actually processed:/ { split($6, a, "/"); print a[1]; exit }' "$out")
      CPU_US[$leg-$mode]=$(awk -v c=$((c1 - c0)) -v t="$TICK_US" -v n="${txns:-0}" 'BEGIN { if (n > 0) printf "%.1f", c * t / n; else print "n/a" }')
    else
      CPU_US[$leg-$mode]="-"
    fi
    # Per-transaction log: 3rd field is the latency in microseconds.
    read -r p50 p99 < <(cat "$prefix".* | awk '{ print $3 }' | sort -n | awk '
      { v[NR] = $1 }
      END {
        if (NR == 0) { print "nan nan"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
      }')
    P50[$leg-$mode]=$p50
    P99[$leg-$mode]=$p99
    rm -f "$prefix".*
    printf '   %s TPS, p50 %s ms, p99 %s ms, proxy CPU %s us/txn\n' "${TPS[$leg-$mode]}" "$p50" "$p99" "${CPU_US[$leg-$mode]}" >&2
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# ---- idle sessions ----
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
say "ward memory with $IDLE_SESSIONS idle TLS sessions"
RSS_BEFORE=$(rss_kib "$WARD_PID")
PGPASSWORD=$WARD_TOKEN python3 "$ROOT/bench/idle_sessions.py" 127.0.0.1 "$WARD_PORT" bench bench \
  "$IDLE_SESSIONS" >"$WORK/logs/idle.out" 2>"$WORK/logs/idle.err" &
IDLE_PID=$!
for _ in $(seq 1 1800); do
  grep -q '^ready' "$WORK/logs/idle.out" 2>/dev/null && break
  kill -0 "$IDLE_PID" 2>/dev/null || die "idle sessions failed: $(tail -5 "$WORK/logs/idle.err")"
  sleep 0.1
done
grep -q '^ready' "$WORK/logs/idle.out" || die "idle sessions not ready after 180 s"
sleep 2
RSS_AFTER=$(rss_kib "$WARD_PID")
PER_SESSION=$(awk -v a="$RSS_AFTER" -v b="$RSS_BEFORE" -v n="$IDLE_SESSIONS" 'BEGIN { printf "%.1f", (a - b) / n }')
kill "$IDLE_PID" 2>/dev/null || true
wait "$IDLE_PID" 2>/dev/null || true
IDLE_PID=""

# ---- report ----
report() {
  echo "# ward benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "- machine: $(nproc) cores, $(uname -sr); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(pgbouncer --version | head -1)"
  echo "- workload: pgbench -S (select-only), scale $SCALE, $CLIENTS clients, $THREADS threads, ${DURATION}s per run after ${WARMUP}s warm-up"
  echo "- TLS from pgbench to each leg (sslmode=require); pgbouncer and ward reach PostgreSQL over plain TCP on loopback; pgbouncer in session mode"
  echo "- everything (pgbench, proxies, PostgreSQL) shares the same cores, so compare ratios, not absolute numbers"
  echo
  echo "| mode | leg | TPS | p50 ms | p99 ms | proxy CPU µs/txn |"
  echo "|---|---|---:|---:|---:|---:|"
  for mode in simple prepared; do
    for leg in direct pgbouncer ward; do
      echo "| $mode | $leg | ${TPS[$leg-$mode]} | ${P50[$leg-$mode]} | ${P99[$leg-$mode]} | ${CPU_US[$leg-$mode]} |"
    done
  done
  echo
  echo "| mode | ward/direct TPS | ward/pgbouncer TPS |"
  echo "|---|---:|---:|"
  for mode in simple prepared; do
    echo "| $mode | $(ratio "${TPS[ward-$mode]}" "${TPS[direct-$mode]}") | $(ratio "${TPS[ward-$mode]}" "${TPS[pgbouncer-$mode]}") |"
  done
  echo
  echo "ward RSS with $IDLE_SESSIONS idle TLS sessions: $RSS_BEFORE KiB before, $RSS_AFTER KiB after, **$PER_SESSION KiB per session**"
}
report | tee "$RESULTS"
say "written to ${RESULTS#"$ROOT/"}"

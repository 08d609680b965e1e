#!/usr/bin/env bash
# pgbench through ward in strict audit mode (every command's event fsync'd to the audit
# store, group commit across sessions: writes before they are forwarded, plain reads while
# they run, their results held until the commit), strict with reads waiting too
# (overlap_reads: false) and buffered mode. One ward process per configuration in front of
# one PostgreSQL; runs alternate between them so drift on the shared cores affects all
# alike. The audit store lives under /tmp (same disk as /work here).
#
#   bench/audit_modes.sh
#
# Knobs: DURATION (s per run, 15), WARMUP (s, 3), ROUNDS (alternations, 2), CLIENTS (8),
# LEGS ("strict waitreads buffered"; also nofsync = strict with fsync: false),
# THREADS (2), SCALE (10), WARD_BIN (skip the release build).
# Workloads: pgbench -S (select-only) -M simple and -M prepared, and -N (simple-update,
# writes) -M prepared. Results on stdout and in bench/results/audit-modes.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
RESULTS="$ROOT/bench/results/audit-modes.md"
mkdir -p "$ROOT/bench/results"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'audit_modes.sh: %s\n' "$*" >&2; exit 1; }

"$ROOT/scripts/install-deps.sh" >&2
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
PGBIN=$(find_pgbin)
if [[ -z "${WARD_BIN:-}" ]]; then
  say "building ward (release)"
  cargo build --release -p ward >&2
  WARD_BIN="$ROOT/target/release/ward"
fi
make_workdir ward-bench-audit
WARD_PIDS=()
cleanup() {
  local rc=$?
  for p in "${WARD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -f "$PGDIR/data/postmaster.pid" ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" stop -m immediate >/dev/null 2>&1 || true
  fi
  [[ "${KEEP:-0}" == 1 ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_PORT=$(free_port)
BENCH_PASSWORD=$(openssl rand -hex 16)
start_postgres 100
export PGPASSWORD=$BENCH_PASSWORD PGSSLMODE=require PGCONNECT_TIMEOUT=10
say "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$WORK/logs/init.log" 2>&1 ||
  die "pgbench -i failed: $(tail -20 "$WORK/logs/init.log")"

# LEGS picks the ward configurations compared (the last one is the baseline of the ratios).
read -r -a LEGS <<<"${LEGS:-strict waitreads buffered}"
declare -A SETTINGS=(
  [strict]="mode: strict"
  [waitreads]="mode: strict, overlap_reads: false"
  [nofsync]="mode: strict, fsync: false"
  [buffered]="mode: buffered"
)
declare -A LABEL=(
  [strict]="strict"
  [waitreads]="strict, overlap_reads: false"
  [nofsync]="strict, fsync: false"
  [buffered]="buffered"
)
for leg in "${LEGS[@]}"; do
  [[ -n "${SETTINGS[$leg]:-}" ]] || die "unknown leg $leg (known: ${!SETTINGS[*]})"
done
BASE=${LEGS[-1]}
declare -A PORT TOKEN
for leg in "${LEGS[@]}"; do
  PORT[$leg]=$(free_port)
  start_ward "$leg" "${PORT[$leg]}" "$(free_port)" "${SETTINGS[$leg]}"
  TOKEN[$leg]=$WARD_TOKEN
done
declare -A SUM RUNS

run() { # leg workload(-S|-N) mode seconds
  PGPASSWORD=${TOKEN[$1]} "$PGBIN/pgbench" -n "$2" -M "$3" -c "$CLIENTS" -j "$THREADS" -T "$4" \
    -h 127.0.0.1 -p "${PORT[$1]}" -U bench bench
}

WORKLOADS=("-S simple" "-S prepared" "-N prepared")
for round in $(seq 1 "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    read -r flag mode <<<"$w"
    for leg in "${LEGS[@]}"; do
      run "$leg" "$flag" "$mode" "$WARMUP" >/dev/null 2>&1 || true
      out="$WORK/logs/$leg$flag-$mode-$round.txt"
      run "$leg" "$flag" "$mode" "$DURATION" >"$out" 2>&1 || die "pgbench via $leg failed: $(tail -20 "$out")"
      tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$out")
      say "round $round: pgbench $flag -M $mode via $leg ward: $tps TPS"
      SUM[$leg$w]=$(( ${SUM[$leg$w]:-0} + tps ))
      RUNS[$leg$w]=$(( ${RUNS[$leg$w]:-0} + 1 ))
    done
  done
done

{
  echo "# ward audit modes: strict vs buffered"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- machine: $(nproc) cores, $(uname -sr); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
  echo "- $CLIENTS clients, $THREADS threads, scale $SCALE, ${DURATION}s per run, $ROUNDS alternating rounds (mean TPS); TLS from pgbench to ward"
  echo
  header="| workload |"; rule="|---|"
  for leg in "${LEGS[@]}"; do header+=" ${LABEL[$leg]} |"; rule+="---:|"; done
  for leg in "${LEGS[@]}"; do
    [[ $leg == "$BASE" ]] && continue
    header+=" ${LABEL[$leg]} / ${LABEL[$BASE]} |"; rule+="---:|"
  done
  echo "$header"; echo "$rule"
  for w in "${WORKLOADS[@]}"; do
    line="| pgbench $w |"
    declare -A MEAN=()
    for leg in "${LEGS[@]}"; do
      MEAN[$leg]=$(( SUM[$leg$w] / RUNS[$leg$w] )); line+=" ${MEAN[$leg]} |"
    done
    for leg in "${LEGS[@]}"; do
      [[ $leg == "$BASE" ]] && continue
      line+=" $(awk -v a="${MEAN[$leg]}" -v b="${MEAN[$BASE]}" 'BEGIN { printf "%.2f", a / b }') |"
    done
    echo "$line"
  done
} | tee "$RESULTS"

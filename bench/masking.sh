#!/usr/bin/env bash
# Cost of result masking on bulk reads: one big table read in full, straight from PostgreSQL
# and through ward with and without masking rules. Everything runs on 127.0.0.1 in a
# temporary directory that is removed at the end (set KEEP=1 to keep it).
#
#   bench/masking.sh                 # 1,000,000 rows, median of 3 runs per leg
#   ROWS=200000 RUNS=5 bench/masking.sh
#
# Knobs (environment): ROWS (1000000), RUNS (3), WARD_BIN (skip the release build and use
# this binary), DIRECT_SSLMODE (require; `disable` for plain TCP to PostgreSQL), KEEP.
#
# Table: big(id int, name text, email text, card text); emails `user<N>@example.com`, cards
# Luhn-valid 16-digit numbers (half of them in `4556 7375 …` groups), so the detectors have
# real work to do on every row.
#
# Legs (one PostgreSQL, one ward process with three targets on the same database, which
# differ only in the masking rules that apply to them):
#   direct        psql -> PostgreSQL (TLS, sslmode=$DIRECT_SSLMODE)
#   ward          psql -> ward (TLS, sslmode=require, token login) -> PostgreSQL (plain TCP),
#                 no masking rule applies
#   ward+columns  as ward, rule `columns: ["*.email", "*.card"], strategy: redact`
#                 (two masked columns, whole-value redaction)
#   ward+detect   as ward, rule `detectors: all, strategy: redact` (content scanning of
#                 every value of every column)
# Workloads (wall time of the client process, output to /dev/null):
#   select        psql -X -At -c "select * from big"
#   copy          psql -X -c "COPY (select * from big) TO STDOUT"
# Results: a Markdown table on stdout and in bench/results/masking.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
DIRECT_SSLMODE=${DIRECT_SSLMODE:-require}
RESULTS="$ROOT/bench/results/masking.md"
mkdir -p "$ROOT/bench/results"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'masking.sh: %s\n' "$*" >&2; exit 1; }

[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -gt 0 ]] || die "ROWS must be a positive integer"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || die "RUNS must be a positive integer"
for tool in python3 openssl curl; do
  command -v "$tool" >/dev/null || die "$tool is needed (scripts/install-deps.sh installs it)"
done

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
PGBIN=$(find_pgbin)

if [[ -z "${WARD_BIN:-}" ]]; then
  say "building ward (release)"
  cargo build --release -p ward >&2
  WARD_BIN="$ROOT/target/release/ward"
fi
[[ -x "$WARD_BIN" ]] || die "no ward binary at $WARD_BIN"

make_workdir ward-bench-mask

WARD_PID=""
cleanup() {
  local rc=$?
  [[ -n "$WARD_PID" ]] && kill "$WARD_PID" 2>/dev/null || true
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
WARD_PORT=$(free_port)
API_PORT=$(free_port)
BENCH_PASSWORD=$(openssl rand -hex 16)

# ---- PostgreSQL ----
start_postgres 50
admin_psql() {
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PG_PORT" -U postgres "$@"
}

# ---- the table ----
say "loading $ROWS rows into big(id, name, email, card)"
admin_psql -d bench -c "create table big (id int primary key, name text, email text, card text);
                        alter table big owner to bench"
python3 - "$ROWS" <<'PY' | admin_psql -d bench -c "\\copy big from stdin"
import sys

def luhn_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10

out = sys.stdout
rows = int(sys.argv[1])
buf = []
for n in range(1, rows + 1):
    body = "4556%011d" % ((n * 104729 + 73750000000) % 10**11)
    card = body + str(luhn_digit(body))
    if n % 2:
        card = " ".join(card[i:i + 4] for i in range(0, 16, 4))
    buf.append("%d\tCustomer %d\tuser%d@example.com\t%s\n" % (n, n, n, card))
    if len(buf) >= 10000:
        out.write("".join(buf))
        buf = []
out.write("".join(buf))
PY
admin_psql -d bench -c "vacuum analyze big"
TABLE_SIZE=$(admin_psql -At -d bench -c "select pg_size_pretty(pg_table_size('big'))")

# ---- ward ----
say "starting ward on 127.0.0.1:$WARD_PORT"
mkdir -p "$WORK/ward"
# Long-lived (no expiry timer, as in earlier runs); the token lives only in this run's config.
token_json=$("$WARD_BIN" token create bench --long-lived --format json)
WARD_TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$token_json")
WARD_HASH=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])' <<<"$token_json")
printf '%s\n' "$BENCH_PASSWORD" >"$WORK/ward/bench.password"
chmod 600 "$WORK/ward/bench.password"
target_yaml() { # name
  cat <<YAML
  $1:
    postgres: "127.0.0.1:$PG_PORT"
    database: bench
    credential: { user: bench, password: "file:bench.password" }
    tls: { mode: disable }
YAML
}
{
  cat <<YAML
data_dir: data
listen: { postgres: "127.0.0.1:$WARD_PORT", api: "127.0.0.1:$API_PORT" }
identity:
  tokens:
    - { name: bench, hash: "$WARD_HASH", long_lived: true }
targets:
YAML
  target_yaml plain
  target_yaml columns
  target_yaml detect
  cat <<YAML
masking:
  rules:
    - name: bench-columns
      targets: [columns]
      columns: ["*.email", "*.card"]
      strategy: redact
    - name: bench-detect
      targets: [detect]
      detectors: all
      strategy: redact
YAML
} >"$WORK/ward/ward.yaml"
"$WARD_BIN" serve --config "$WORK/ward/ward.yaml" >"$WORK/logs/ward.log" 2>&1 &
WARD_PID=$!
for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$WARD_PID" 2>/dev/null || die "ward exited: $(tail -30 "$WORK/logs/ward.log")"
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 ||
  die "ward not ready after 20 s: $(tail -30 "$WORK/logs/ward.log")"

# ---- legs ----
LEGS=(direct ward ward+columns ward+detect)
conninfo() { # leg
  case $1 in
    direct) echo "host=127.0.0.1 port=$PG_PORT dbname=bench user=bench password=$BENCH_PASSWORD sslmode=$DIRECT_SSLMODE" ;;
    ward) echo "host=127.0.0.1 port=$WARD_PORT dbname=plain user=bench password=$WARD_TOKEN sslmode=require" ;;
    ward+columns) echo "host=127.0.0.1 port=$WARD_PORT dbname=columns user=bench password=$WARD_TOKEN sslmode=require" ;;
    ward+detect) echo "host=127.0.0.1 port=$WARD_PORT dbname=detect user=bench password=$WARD_TOKEN sslmode=require" ;;
  esac
}
export PGCONNECT_TIMEOUT=10 PSQLRC=/dev/null
unset PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGSSLMODE PGOPTIONS

# Sanity before timing anything: the masked legs must mask, the others must not, and every
# leg must return every row.
say "checking that masking is in force where expected"
for leg in "${LEGS[@]}"; do
  sample=$("$PGBIN/psql" -X -At -v ON_ERROR_STOP=1 -d "$(conninfo "$leg")" \
    -c "select * from big where id in (1, 2) order by id") ||
    die "$leg: query failed: $(tail -20 "$WORK/logs/ward.log")"
  clear=$(grep -c '@example\.com' <<<"$sample" || true)
  case $leg in
    direct | ward) [[ $clear -eq 2 ]] || die "$leg: expected clear values, got: $sample" ;;
    *) [[ $clear -eq 0 ]] || die "$leg: masking is not in force: $sample" ;;
  esac
  printf '   %-13s %s\n' "$leg" "$(head -1 <<<"$sample")" >&2
done

# CPU time (user+system, in clock ticks) used so far by a process and all its threads.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK_MS=$(awk -v t="$(getconf CLK_TCK)" 'BEGIN { print 1000 / t }')

workload_args() { # workload
  case $1 in
    select) printf '%s\n' -q -At -c "select * from big" ;;
    copy) printf '%s\n' -q -c "COPY (select * from big) TO STDOUT" ;;
  esac
}

# One timed run: prints "seconds ward_cpu_ms rows".
run_once() { # leg workload
  local leg=$1 workload=$2 args t0 t1 c0 c1 rows
  mapfile -t args < <(workload_args "$workload")
  c0=$(cpu_ticks "$WARD_PID")
  t0=$(date +%s.%N)
  rows=$("$PGBIN/psql" -X -v ON_ERROR_STOP=1 -d "$(conninfo "$leg")" "${args[@]}" | wc -l) ||
    die "$leg/$workload failed: $(tail -20 "$WORK/logs/ward.log")"
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$WARD_PID")
  awk -v a="$t0" -v b="$t1" -v c=$((c1 - c0)) -v ms="$TICK_MS" -v r="$rows" \
    'BEGIN { printf "%.3f %.0f %d\n", b - a, c * ms, r }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A SECS CPU ALL
for workload in select copy; do
  for leg in "${LEGS[@]}"; do
    say "$workload via $leg: 1 warm-up + $RUNS runs"
    run_once "$leg" "$workload" >/dev/null
    times=() cpus=()
    for _ in $(seq 1 "$RUNS"); do
      read -r secs cpu rows < <(run_once "$leg" "$workload")
      [[ $rows -eq $ROWS ]] || die "$leg/$workload returned $rows rows, expected $ROWS"
      times+=("$secs")
      cpus+=("$cpu")
    done
    SECS[$leg-$workload]=$(printf '%s\n' "${times[@]}" | median)
    CPU[$leg-$workload]=$(printf '%s\n' "${cpus[@]}" | median)
    ALL[$leg-$workload]="${times[*]}"
    [[ $leg == direct ]] && CPU[$leg-$workload]="-"
    printf '   median %s s (runs: %s), ward CPU %s ms\n' "${SECS[$leg-$workload]}" \
      "${ALL[$leg-$workload]}" "${CPU[$leg-$workload]}" >&2
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rate() { awk -v s="$1" -v n="$ROWS" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'; }

# ---- report ----
report() {
  echo "# ward masking benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "- ward binary: ${WARD_BIN#"$ROOT/"}"
  echo "- machine: $(nproc) cores, $(uname -sr); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
  echo "- table: big(id int, name text, email text, card text), $ROWS rows ($TABLE_SIZE); Luhn-valid cards, half with spaces"
  echo "- client to direct PostgreSQL: sslmode=$DIRECT_SSLMODE; client to ward: TLS (sslmode=require), token login; ward to PostgreSQL: plain TCP on loopback"
  echo "- masking rules: ward+columns = \`columns: [\"*.email\", \"*.card\"], strategy: redact\`; ward+detect = \`detectors: all, strategy: redact\` (every column scanned); ward = no rule applies"
  echo "- wall time of \`psql -X -At -c \"select * from big\"\` and \`psql -X -c \"COPY (select * from big) TO STDOUT\"\` (output counted, then discarded); median of $RUNS runs after one warm-up; ward CPU = user+system time of the ward process during the run"
  echo "- client, ward and PostgreSQL share the same cores, so compare ratios, not absolute numbers"
  echo
  echo "| workload | leg | median s | rows/s | ward CPU ms | throughput vs direct | vs ward without rules |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for workload in select copy; do
    for leg in "${LEGS[@]}"; do
      local s=${SECS[$leg-$workload]}
      echo "| $workload | $leg | $s | $(rate "$s") | ${CPU[$leg-$workload]} | $(ratio "${SECS[direct-$workload]}" "$s") | $(ratio "${SECS[ward-$workload]}" "$s") |"
    done
  done
  echo
  echo "Throughput ratio masked/direct (target >= 0.8):"
  echo
  echo "| workload | ward+columns / direct | ward+detect / direct |"
  echo "|---|---:|---:|"
  for workload in select copy; do
    echo "| $workload | $(ratio "${SECS[direct-$workload]}" "${SECS[ward+columns-$workload]}") | $(ratio "${SECS[direct-$workload]}" "${SECS[ward+detect-$workload]}") |"
  done
  echo
  echo "All runs (s):"
  echo
  for workload in select copy; do
    for leg in "${LEGS[@]}"; do
      echo "- $workload / $leg: ${ALL[$leg-$workload]}"
    done
  done
}
report | tee "$RESULTS"
say "written to ${RESULTS#"$ROOT/"}"

# Shared by the benchmark scripts (sourced, not run): finding PostgreSQL, running server
# programs as `postgres` when root, free ports, a work directory, and a throwaway
# PostgreSQL with TLS and a `bench` role and database.
#
# The sourcing script defines say() and die() first.

# The newest PostgreSQL server binaries installed.
find_pgbin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    [[ -x "$d/initdb" ]] && { echo "$d"; return; }
  done
  die "no PostgreSQL server binaries (run scripts/install-deps.sh as root)"
}

# Server programs refuse to run as root: run them as `postgres` then.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Sets WORK (a fresh directory named after $1) and PGDIR inside it.
make_workdir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$WORK"
  PGDIR="$WORK/pg"
  mkdir -p "$PGDIR" "$WORK/logs"
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$PGDIR"; fi
}

# Starts PostgreSQL on 127.0.0.1:$PG_PORT in $PGDIR with TLS (a self-signed certificate,
# which sslmode=require does not verify), durability off (benchmarks measure the proxies),
# max_connections $1, and a role and database `bench` with password $BENCH_PASSWORD.
start_postgres() {
  local max_connections=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$PGDIR/server.key" -out "$PGDIR/server.crt" 2>/dev/null
  chmod 600 "$PGDIR/server.key"
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$PGDIR/server.key" "$PGDIR/server.crt"; fi
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$WORK/logs/initdb.log"
  cat >>"$PGDIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDIR'
max_connections = $max_connections
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '$PGDIR/server.crt'
ssl_key_file = '$PGDIR/server.key'
CONF
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start: $(tail -20 "$PGDIR/postgres.log")"
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PG_PORT" -U postgres -d postgres \
    -c "create role bench login password '$BENCH_PASSWORD'" -c "create database bench owner bench"
}

# Starts `ward serve` from $WORK/$1 on 127.0.0.1:$2 (API on $3) with audit settings $4 (the
# inside of a YAML flow mapping, e.g. "mode: strict, fsync: false") in front
# of the `bench` database of the PostgreSQL started above, with a token `bench`. Sets
# WARD_TOKEN and appends the ward's pid to WARD_PIDS. Needs WARD_BIN and BENCH_PASSWORD.
start_ward() {
  local name=$1 port=$2 api=$3 mode=$4 dir="$WORK/$1"
  mkdir -p "$dir"
  local token_json hash
  # Long-lived like the runs recorded before tokens had to say so (no expiry timer); the
  # token exists only for this run's throwaway config.
  token_json=$("$WARD_BIN" token create bench --long-lived --format json)
  WARD_TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$token_json")
  hash=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])' <<<"$token_json")
  printf '%s\n' "$BENCH_PASSWORD" >"$dir/bench.password"
  chmod 600 "$dir/bench.password"
  cat >"$dir/ward.yaml" <<YAML
data_dir: data
listen: { postgres: "127.0.0.1:$port", api: "127.0.0.1:$api" }
audit: { $mode }
identity:
  tokens:
    - { name: bench, hash: "$hash", long_lived: true }
targets:
  bench:
    postgres: "127.0.0.1:$PG_PORT"
    database: bench
    credential: { user: bench, password: "file:bench.password" }
    tls: { mode: disable }
YAML
  "$WARD_BIN" serve --config "$dir/ward.yaml" >"$WORK/logs/$name.log" 2>&1 &
  WARD_PIDS+=("$!")
  local i
  for i in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${WARD_PIDS[-1]}" 2>/dev/null || die "$name exited: $(tail -30 "$WORK/logs/$name.log")"
    sleep 0.1
  done
  die "$name not ready after 20 s: $(tail -30 "$WORK/logs/$name.log")"
}

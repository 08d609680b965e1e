#!/usr/bin/env bash
# One command from a fresh checkout to a running ward in front of an example PostgreSQL.
#
#   scripts/run-example.sh        # (or `make run`) set up what is missing, then run ward
#   scripts/run-example.sh stop   # stop the example PostgreSQL
#
# What it does (each step is skipped when already done, so re-running is safe):
#   1. installs missing system packages (scripts/install-deps.sh; needs root for that);
#   2. builds ward in release mode;
#   3. starts an example PostgreSQL in ./ward-data/example-pg on 127.0.0.1:54329 with a
#      database `orders`, a sample table `orders`, and a role `app` whose random password is
#      kept in ./ward-data/example-pg/app.password (mode 600);
#   4. creates a token for identity `demo` (./ward-data/demo.token, mode 600), valid for 90
#      days; a later run makes a new one once it has expired;
#   5. writes ./ward-data/ward.example.yaml (target `orders-db` -> that database);
#   6. prints how to connect, then runs `ward serve` in the foreground (Ctrl-C stops it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DATA="$ROOT/ward-data"
PGDIR="$DATA/example-pg"
PG_PORT=${EXAMPLE_PG_PORT:-54329}
WARD_PG_PORT=${WARD_PG_PORT:-15432}
WARD_API_PORT=${WARD_API_PORT:-18080}
CONFIG="$DATA/ward.example.yaml"
WARD="$ROOT/target/release/ward"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'run-example: %s\n' "$*" >&2; exit 1; }

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    [[ -x "$d/initdb" ]] && { echo "$d"; return; }
  done
  command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]] && { pg_config --bindir; return; }
  die "no PostgreSQL server binaries found; run scripts/install-deps.sh as root"
}

# Runs a PostgreSQL server program as `postgres` when we are root (initdb refuses root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

psql_admin() {
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PGDIR" -p "$PG_PORT" -U postgres "$@"
}

if [[ "${1:-}" == "stop" ]]; then
  PGBIN=$(pg_bindir)
  if [[ -d "$PGDIR/data" ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" stop -m fast
  else
    echo "example PostgreSQL is not running"
  fi
  exit 0
fi

say "checking system packages"
"$ROOT/scripts/install-deps.sh"
PGBIN=$(pg_bindir)

say "building ward (release)"
cargo build --release -p ward
[[ -x "$WARD" ]] || die "build did not produce $WARD"

mkdir -p "$DATA"
chmod 755 "$DATA"

# ---- example PostgreSQL ----
if [[ ! -f "$PGDIR/data/PG_VERSION" ]]; then
  say "creating the example PostgreSQL in $PGDIR"
  mkdir -p "$PGDIR"
  chmod 700 "$PGDIR"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$PGDIR"
    runuser -u postgres -- test -x "$PGDIR" ||
      die "user postgres cannot reach $PGDIR (a parent directory is not world-searchable); move the checkout or chmod o+x its parents"
  fi
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C >"$PGDIR/initdb.log" ||
    die "initdb failed; see $PGDIR/initdb.log"
fi

if as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
  say "example PostgreSQL already running on 127.0.0.1:$PG_PORT"
else
  say "starting the example PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDIR" start >/dev/null ||
    die "PostgreSQL did not start (port $PG_PORT taken? set EXAMPLE_PG_PORT); see $PGDIR/postgres.log"
fi

if [[ ! -s "$PGDIR/app.password" ]]; then
  (umask 077 && openssl rand -hex 24 >"$PGDIR/app.password")
fi
chmod 600 "$PGDIR/app.password"
APP_PASSWORD=$(cat "$PGDIR/app.password")

say "preparing database orders, role app and table orders"
if [[ -z "$(psql_admin -d postgres -c "select 1 from pg_roles where rolname = 'app'")" ]]; then
  psql_admin -d postgres -c "create role app login"
fi
# The password is (re)set on every run so the file and the role always agree.
psql_admin -d postgres -c "alter role app password '$APP_PASSWORD'"
if [[ -z "$(psql_admin -d postgres -c "select 1 from pg_database where datname = 'orders'")" ]]; then
  psql_admin -d postgres -c "create database orders owner app"
fi
psql_admin -d orders <<'SQL'
set role app;
create table if not exists orders (
  id          bigint generated always as identity primary key,
  customer    text        not null,
  item        text        not null,
  amount_cents integer    not null,
  created_at  timestamptz not null default now()
);
insert into orders (customer, item, amount_cents)
select * from (values
  ('acme',    'anvil',          12900),
  ('acme',    'rocket skates',  45000),
  ('globex',  'hammock',         8900),
  ('initech', 'red stapler',     1500),
  ('umbrella','umbrella',        2500)
) v
where not exists (select 1 from orders);
SQL

# ---- token for identity demo (every token needs an expiry: 90 days, renewed once passed) ----
# True when the kept token exists and is valid for at least another hour.
demo_token_current() {
  [[ -s "$DATA/demo.token" && -s "$DATA/demo.token.hash" && -s "$DATA/demo.token.expires" ]] || return 1
  python3 -c '
import datetime, sys
expires = datetime.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
now = datetime.datetime.now(datetime.timezone.utc)
sys.exit(0 if expires > now + datetime.timedelta(hours=1) else 1)' "$(cat "$DATA/demo.token.expires")"
}
if ! demo_token_current; then
  say "creating a token for identity demo (valid for 90 days)"
  json=$("$WARD" token create demo --ttl 90d --format json)
  field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" <<<"$json"; }
  token=$(field token)
  hash=$(field hash)
  expires=$(field expires)
  (umask 077 && printf '%s\n' "$token" >"$DATA/demo.token" && printf '%s\n' "$hash" >"$DATA/demo.token.hash" &&
    printf '%s\n' "$expires" >"$DATA/demo.token.expires")
fi
chmod 600 "$DATA/demo.token"
DEMO_HASH=$(cat "$DATA/demo.token.hash")
DEMO_EXPIRES=$(cat "$DATA/demo.token.expires")

# ---- ward.example.yaml (rewritten each run; relative paths are relative to ward-data/) ----
cat >"$CONFIG" <<YAML
# Written by scripts/run-example.sh; re-running the script rewrites it.
data_dir: state   # ward's own files: admin token, audit store, generated TLS certificate
listen:
  postgres: "127.0.0.1:$WARD_PG_PORT"
  api: "127.0.0.1:$WARD_API_PORT"
identity:
  tokens:
    - name: demo
      hash: "$DEMO_HASH"
      expires: "$DEMO_EXPIRES"   # a new token is made by the next run after this
targets:
  orders-db:
    postgres: "127.0.0.1:$PG_PORT"
    database: orders
    credential:
      user: app
      password: file:example-pg/app.password
    tls: { mode: disable }   # loopback; use verify-full with a CA for a remote database
YAML
chmod 600 "$CONFIG"

for port in "$WARD_PG_PORT" "$WARD_API_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another ward running?); stop it or set WARD_PG_PORT / WARD_API_PORT"
  fi
done

rel_ward=${WARD#"$ROOT/"}
rel_config=${CONFIG#"$ROOT/"}
rel_data=${DATA#"$ROOT/"}
cat <<MSG

ward is starting in front of the example database. In another terminal, from $ROOT:

  # connect as identity "demo" (the password is the token; TLS is required)
  psql "host=127.0.0.1 port=$WARD_PG_PORT dbname=orders-db user=demo password=\$(cat $rel_data/demo.token) sslmode=require" -c 'select * from orders'

  # see the recorded sessions and their statements
  $rel_ward --config $rel_config sessions list

  # stop the example PostgreSQL when done
  scripts/run-example.sh stop

MSG
say "ward serve --config $rel_config   (Ctrl-C to stop)"
exec "$WARD" serve --config "$CONFIG"

#!/usr/bin/env bash
# SSH throughput through ward against a direct connection, and ward's CPU per MB.
#
#   bench/ssh_throughput.sh            # needs root (starts a throwaway sshd with a test user)
#
# Workload: `ssh HOST cat < 100MB > /dev/null`, which echoes every byte back, so 100 MB go
# each way: client -> ward -> sshd -> cat -> sshd -> ward -> client (two SSH legs through
# ward, one direct). Both legs use OpenSSH's default cipher negotiation against russh
# (chacha20-poly1305 or AES-GCM). ward runs with its default audit (strict) and terminal
# recording on, which by default keeps the first 4 MiB of each stream of a channel.
#
# Knobs (environment): SIZE_MB (100), ROUNDS (5), TERMINAL_LIMIT (audit.terminal_limit in
# bytes; 0 records every byte; default: ward's default), WARD_BIN (skip the release build and
# use this binary), KEEP=1 (keep the work directory).
# Results: a Markdown table on stdout and in bench/results/ssh-latest.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
SIZE_MB=${SIZE_MB:-100}
ROUNDS=${ROUNDS:-5}
RESULTS="$ROOT/bench/results/ssh-latest.md"
USER_NAME=sshtest
mkdir -p "$ROOT/bench/results"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ssh_throughput.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it starts sshd and creates the user $USER_NAME)"
"$ROOT/scripts/install-deps.sh" >&2
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if [[ -z "${WARD_BIN:-}" ]]; then
  say "building ward (release)"
  cargo build --release -p ward >&2
  WARD_BIN="$ROOT/target/release/ward"
fi
[[ -x "$WARD_BIN" ]] || die "no ward binary at $WARD_BIN"

WORK=$(mktemp -d /tmp/ward-ssh-bench.XXXXXX)
chmod 755 "$WORK"
SSHD_PID=""
WARD_PID=""
cleanup() {
  [[ -n "$WARD_PID" ]] && kill "$WARD_PID" 2>/dev/null || true
  [[ -n "$SSHD_PID" ]] && kill "$SSHD_PID" 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

id "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USER_NAME"
usermod -p '*' "$USER_NAME"

say "starting sshd"
ssh-keygen -q -t ed25519 -N '' -C target-host -f "$WORK/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C ward -f "$WORK/ward_login"
ssh-keygen -q -t ed25519 -N '' -C direct -f "$WORK/direct"
ssh-keygen -q -t ed25519 -N '' -C alice -f "$WORK/alice"
mkdir -p "$WORK/authkeys" /run/sshd
cat "$WORK/ward_login.pub" "$WORK/direct.pub" >"$WORK/authkeys/$USER_NAME"
chmod 755 "$WORK/authkeys"
chmod 644 "$WORK/authkeys/$USER_NAME"
SSHD_PORT=$(free_port)
cat >"$WORK/sshd_config" <<CONF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_ed25519
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authkeys/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin no
CONF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" >"$WORK/sshd.log" 2>&1 &
SSHD_PID=$!

say "starting ward"
SSH_PORT=$(free_port)
API_PORT=$(free_port)
mkdir -p "$WORK/ward"
cat >"$WORK/ward/ward.yaml" <<YAML
data_dir: data
listen: { ssh: "127.0.0.1:$SSH_PORT", api: "127.0.0.1:$API_PORT" }
audit: { ${TERMINAL_LIMIT:+terminal_limit: $TERMINAL_LIMIT} }
identity:
  ssh_keys:
    - { identity: alice, key: "$(cut -d' ' -f1,2 "$WORK/alice.pub")" }
targets:
  web-1:
    ssh: "127.0.0.1:$SSHD_PORT"
    host_key: "$(cut -d' ' -f1,2 "$WORK/host_ed25519.pub")"
    credential: { user: $USER_NAME, private_key: "file:$WORK/ward_login" }
YAML
(cd "$WORK/ward" && exec "$WARD_BIN" serve --config ward.yaml) >"$WORK/ward.log" 2>&1 &
WARD_PID=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$WARD_PID" 2>/dev/null || die "ward exited: $(tail -30 "$WORK/ward.log")"
  sleep 0.1
done

say "writing ${SIZE_MB} MB of random data"
head -c "${SIZE_MB}M" /dev/urandom >"$WORK/data.bin"

SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
  -o IdentitiesOnly=yes -o LogLevel=ERROR -F /dev/null)
# Seconds a run took.
run() {
  local port=$1 user=$2 key=$3 start end
  start=$(date +%s.%N)
  ssh "${SSH_OPTS[@]}" -i "$key" -p "$port" "$user@127.0.0.1" cat <"$WORK/data.bin" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}
# CPU seconds (user + system) ward has used so far.
ward_cpu() {
  python3 - "$WARD_PID" <<'PY'
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
PY
}

DIRECT=()
WARD=()
CPU=()
for round in $(seq 1 "$ROUNDS"); do
  d=$(run "$SSHD_PORT" "$USER_NAME" "$WORK/direct")
  c0=$(ward_cpu)
  w=$(run "$SSH_PORT" web-1 "$WORK/alice")
  c1=$(ward_cpu)
  DIRECT+=("$d")
  WARD+=("$w")
  CPU+=("$(python3 -c "print($c1 - $c0)")")
  say "round $round: direct $(printf %.2f "$d")s, through ward $(printf %.2f "$w")s, ward CPU $(printf %.2f "$(python3 -c "print($c1 - $c0)")")s"
done

python3 - "$SIZE_MB" "${DIRECT[*]}" "${WARD[*]}" "${CPU[*]}" >"$RESULTS" <<'PY'
import statistics, sys, platform, os
size = float(sys.argv[1])
direct = [float(x) for x in sys.argv[2].split()]
ward = [float(x) for x in sys.argv[3].split()]
cpu = [float(x) for x in sys.argv[4].split()]
md, mw, mc = statistics.median(direct), statistics.median(ward), statistics.median(cpu)
# Bytes ward handles per run: SIZE each way, decrypted and re-encrypted on both legs.
limit = os.environ.get("TERMINAL_LIMIT")
recording = "every byte recorded" if limit == "0" else f"terminal_limit {limit or 'default (4 MiB)'}"
print(f"SSH `cat` echo, {size:.0f} MB each way, {recording}, {len(direct)} rounds, medians "
      f"({os.cpu_count()} CPUs, {platform.machine()}):\n")
print("| leg | seconds | MB/s (one way) | ratio to direct | ward CPU s | ward CPU ms per MB moved |")
print("|---|---|---|---|---|---|")
print(f"| direct | {md:.2f} | {size/md:.0f} | 1.00 | - | - |")
print(f"| through ward | {mw:.2f} | {size/mw:.0f} | {md/mw:.2f} | {mc:.2f} | {1000*mc/(2*size):.1f} |")
print(f"\nper-round ratios: {', '.join(f'{d/w:.2f}' for d, w in zip(direct, ward))}")
PY
cat "$RESULTS"

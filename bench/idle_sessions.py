#!/usr/bin/env python3
"""Opens N PostgreSQL sessions over TLS and keeps them idle (for measuring proxy memory).

Speaks the wire protocol directly (no driver needed): SSLRequest, TLS handshake without
certificate verification, StartupMessage, answers a cleartext password request with the
password (ward's token) and waits for ReadyForQuery. Prints "ready N" once every session is
idle, then holds them until it receives SIGTERM or SIGINT.

usage: idle_sessions.py HOST PORT USER DATABASE COUNT   (password in $PGPASSWORD)
"""

import os
import signal
import socket
import ssl
import struct
import sys
from concurrent.futures import ThreadPoolExecutor

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def read_message(sock):
    header = read_exact(sock, 5)
    kind, length = header[:1], struct.unpack("!i", header[1:])[0]
    return kind, read_exact(sock, length - 4)


def open_session(host, port, user, database, password, context):
    raw = socket.create_connection((host, port), timeout=30)
    raw.sendall(SSL_REQUEST)
    if read_exact(raw, 1) != b"S":
        raise RuntimeError("server refused TLS")
    sock = context.wrap_socket(raw, server_hostname=host)
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", user), ("database", database), ("application_name", "idle-sessions"))
    ) + b"\0"
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    while True:
        kind, body = read_message(sock)
        if kind == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 3:  # cleartext password
                pw = password.encode() + b"\0"
                sock.sendall(b"p" + struct.pack("!i", 4 + len(pw)) + pw)
            elif code != 0:
                raise RuntimeError(f"unsupported authentication request {code} (only cleartext)")
        elif kind == b"E":
            fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
            raise RuntimeError(f"server error: {fields.get(b'M', body)}")
        elif kind == b"Z":
            sock.settimeout(None)
            return sock
        # S (ParameterStatus), K (BackendKeyData), N (notice): ignore


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    host, port, user, database, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    password = os.environ.get("PGPASSWORD", "")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(open_session, host, port, user, database, password, context) for _ in range(count)]
        sessions = []
        for i, f in enumerate(futures):
            try:
                sessions.append(f.result())
            except Exception as e:  # noqa: BLE001 - report and stop
                print(f"session {i + 1} of {count} failed: {e}", file=sys.stderr, flush=True)
                sys.exit(1)
    print(f"ready {len(sessions)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How long the disk takes to make one small write durable (write + fdatasync).

Strict audit mode makes every command's event durable before the command (or, for plain
reads, its result) goes on, so this latency is added to every statement's round trip; it
bounds what strict mode can reach against buffered mode on a given machine
(docs/benchmarks.md, "Audit modes").

    bench/sync_latency.py [DIR] [COUNT]     # DIR: where the audit store lives (default /tmp)

Writes 512 bytes at a time into a preallocated 8 MiB file (as ward's journal does) and
times each fdatasync; prints the median, p90, p99 and mean in microseconds.
"""
import os
import sys
import tempfile
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
size = 8 << 20
fd, path = tempfile.mkstemp(prefix="ward-sync-", dir=directory)
try:
    os.write(fd, b"\0" * size)
    os.fsync(fd)
    lat = []
    for i in range(count):
        os.pwrite(fd, b"x" * 512, (i * 4096) % size)
        start = time.perf_counter()
        os.fdatasync(fd)
        lat.append((time.perf_counter() - start) * 1e6)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(
    f"fdatasync in {directory}, {count} syncs: median {pick(0.5):.0f} us, "
    f"p90 {pick(0.9):.0f} us, p99 {pick(0.99):.0f} us, mean {sum(lat) / len(lat):.0f} us"
)

"""What --proxy-from costs: connections per second with a PROXY v2 header.

Three servers, trials interleaved, medians: the C tcpserver and ours with
plain connections, and ours with `--proxy-from 127.0.0.1` where every
connection first sends a v2 header naming 192.0.2.7 (as HAProxy's
`send-proxy-v2` does), which the listening parent reads before it starts
the program.  All run `/bin/echo 220 hi` with -HRl0 (the posix_spawn path),
-c 100, 10 connections at a time.  Also printed: the parent's own CPU per
connection.

Run: python -m bench.bench_proxy [seconds-per-trial] [trials]
"""

from __future__ import annotations

import ipaddress
import os
import statistics
import struct
import sys

from .bench_tcpserver import C_TCPSERVER, OURS, trial

CONCURRENCY = 10
BODY = (ipaddress.ip_address("192.0.2.7").packed + ipaddress.ip_address("127.0.0.1").packed
        + struct.pack(">HH", 40000, 25))
HEADER = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack(">H", len(BODY)) + BODY
SERVERS = [("c", C_TCPSERVER, [], b""), ("ours", OURS, [], b""),
           ("ours+proxy", OURS, ["--proxy-from", "127.0.0.1"], HEADER)]


def main(argv: list[str] | None = None) -> int:
    argv = argv or []
    seconds = float(argv[0]) if argv else 1.0
    trials = int(argv[1]) if len(argv) > 1 else 5
    if not os.access(C_TCPSERVER, os.X_OK) or not os.access(OURS, os.X_OK):
        print(f"skipped: need {C_TCPSERVER} and {OURS}")
        return 0
    print(f"-HRl0, {CONCURRENCY} at a time; {trials} interleaved trials of {seconds} s each")
    results = {name: [] for name, *_ in SERVERS}
    for _ in range(trials):
        for name, exe, extra, prefix in SERVERS:
            rate, own, _, bad = trial(exe, CONCURRENCY, ["-HRl0", *extra], seconds, prefix)
            results[name].append((rate, own, bad))
    print(f"{'server':>10} {'conn/s':>8} {'parent us/conn':>15} {'errors':>6}")
    rate = {}
    for name, rows in results.items():
        rate[name] = statistics.median(r[0] for r in rows)
        own = statistics.median(r[1] for r in rows)
        print(f"{name:>10} {rate[name]:>8.0f} {own:>15.0f} {sum(r[2] for r in rows):>6}")
    print(f"ratio ours+proxy/ours = {rate['ours+proxy'] / rate['ours']:.2f}, "
          f"ours+proxy/c = {rate['ours+proxy'] / rate['c']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

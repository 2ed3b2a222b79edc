"""Two builds of our tcpserver and the C one, interleaved: the spawn path.

For changes to the listening parent: bench_tcpserver's rows (-HRl0,
/bin/echo, 1 or 10 clients at once), but the parent's CPU comes from
/proc/PID/schedstat (nanoseconds) rather than clock ticks (10 ms, about
100 connections' worth), and two trees are compared with each other as
well as with C.  Trials rotate the order of the three servers.

Run: python -m bench.ab_tcpserver BASE_TCPSERVER NEW_TCPSERVER \
         [seconds-per-trial] [trials] [clients,...]
e.g. python -m bench.ab_tcpserver ../base/.venv/bin/tcpserver .venv/bin/tcpserver 1.5 5 1,10
"""

from __future__ import annotations

import statistics
import sys
import time

from .bench_tcpserver import C_TCPSERVER, load, start, stop


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0])


def trial(exe: str, clients: int, seconds: float) -> tuple[float, float]:
    """(connections per second, parent CPU per connection in us)."""
    proc, port = start(exe, ["-HRl0"])
    try:
        load(port, clients, 0.2)          # warm up
        time.sleep(0.1)
        cpu0 = cpu_ns(proc.pid)
        started = time.monotonic()
        good, _ = load(port, clients, seconds)
        elapsed = time.monotonic() - started
        time.sleep(0.2)                   # let the last children be reaped
        cpu1 = cpu_ns(proc.pid)
    finally:
        stop(proc)
    return good / elapsed, (cpu1 - cpu0) / 1000 / max(good, 1)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().split("\n\n")[-1])
        return 100
    servers = [("c", C_TCPSERVER), ("base", argv[0]), ("new", argv[1])]
    seconds = float(argv[2]) if len(argv) > 2 else 1.5
    trials = int(argv[3]) if len(argv) > 3 else 5
    clients = [int(n) for n in argv[4].split(",")] if len(argv) > 4 else [1, 10]
    for n in clients:
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in servers}
        for i in range(trials):
            order = servers[i % 3:] + servers[:i % 3]
            for name, exe in order:
                rows[name].append(trial(exe, n, seconds))
        rate_c = statistics.median(r[0] for r in rows["c"])
        cpu_c = statistics.median(r[1] for r in rows["c"])
        for name, results in rows.items():
            rate = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            print(f"{n:>3} clients {name:>5}: {rate:6.0f} conn/s ({rate / rate_c:.2f}x C), "
                  f"parent {cpu:6.1f} us/conn ({cpu / cpu_c:.2f}x C)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Connections per second through tcpserver, ours against the C one.

Each server runs `/bin/echo 220 hi` per connection (-HRl0, -c 100 -b 256);
a non-blocking client keeps 1, 10 or 50 connections open at once, each
reading the greeting to EOF.  Trials alternate between the two servers and
the medians are compared.  Also printed: the listening parent's own CPU per
connection (utime+stime from /proc/PID/stat) and the parent plus its reaped
children (cutime+cstime: fork, the pre-exec child work and echo itself).

Run: python -m bench.bench_tcpserver [seconds-per-trial] [trials]
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = os.path.join(os.path.dirname(sys.executable), "tcpserver")
C_TCPSERVER = "/usr/bin/tcpserver"
CHILD = ["/bin/echo", "220", "hi"]
EXPECT = b"220 hi\n"
TICKS = os.sysconf("SC_CLK_TCK")


# (label, concurrency, lookup options).  -HRl0 is the usual SMTP setup;
# -r (ident, refused at once on 127.0.0.1:113) is "the path that forks a
# Python child" of issue 10, as any lookup or a banner once did: ours now
# asks identd from the parent's poll loop (server/lookupwait.py) and then
# starts the program as on the spawn path.  The row keeps its name.
RUNS = [("spawn", 1, ["-HRl0"]), ("spawn", 10, ["-HRl0"]), ("spawn", 50, ["-HRl0"]),
        ("fork", 10, ["-Hl0", "-r", "-t", "1"])]


def start(exe: str, lookups: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([exe, "-1", *lookups, "-c", "100", "-b", "256", "127.0.0.1", "0",
                             *CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    port = int(proc.stdout.readline())
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    proc.stdout.close()


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(parent utime+stime, parent+reaped children) in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime + stime, utime + stime + cutime + cstime


def load(port: int, concurrency: int, seconds: float,
         prefix: bytes = b"") -> tuple[int, int]:
    """Run the client for `seconds`; return (good connections, bad ones).
    `prefix` is sent first on every connection (a PROXY header, bench_proxy)."""
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    good = bad = 0
    deadline = time.monotonic() + seconds

    def open_one() -> None:
        if prefix:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(prefix)
            sock.setblocking(False)
        else:
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                raise OSError(err, os.strerror(err))
        buffers[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)

    for _ in range(concurrency):
        open_one()
    while buffers:
        for key, _ in sel.select(timeout=5):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
                buffers[sock] = bytearray(b"!")
            if data:
                buffers[sock] += data
                continue
            sel.unregister(sock)
            got = buffers.pop(sock)
            sock.close()
            if got == EXPECT:
                good += 1
            else:
                bad += 1
            if time.monotonic() < deadline:
                open_one()
    sel.close()
    return good, bad


def trial(exe: str, concurrency: int, lookups: list[str],
          seconds: float, prefix: bytes = b"") -> tuple[float, float, float, int]:
    proc, port = start(exe, lookups)
    try:
        load(port, concurrency, 0.2, prefix)   # warm up
        time.sleep(0.1)
        own0, all0 = cpu_ticks(proc.pid)
        started = time.monotonic()
        good, bad = load(port, concurrency, seconds, prefix)
        elapsed = time.monotonic() - started
        time.sleep(0.2)                 # let the last children be reaped
        own1, all1 = cpu_ticks(proc.pid)
    finally:
        stop(proc)
    per = max(good, 1)
    return (good / elapsed, (own1 - own0) / TICKS / per * 1e6,
            (all1 - all0) / TICKS / per * 1e6, bad)


RESULTS: list[dict] = []      # read by bench.report


def main(argv: list[str] | None = None) -> int:
    """`make bench` calls main() with no arguments (the defaults); run
    directly, the command line may give seconds per trial and trials."""
    argv = argv or []
    seconds = float(argv[0]) if argv else 1.0
    trials = int(argv[1]) if len(argv) > 1 else 5
    if not os.access(C_TCPSERVER, os.X_OK) or not os.access(OURS, os.X_OK):
        print(f"skipped: need {C_TCPSERVER} and {OURS}")
        return 0
    print(f"child: {' '.join(CHILD)}; {trials} interleaved trials of {seconds} s each")
    print(f"{'path':>5} {'conc':>4} {'server':>6} {'conn/s':>8} {'parent us/conn':>15} "
          f"{'+children us/conn':>18} {'errors':>6}")
    for label, concurrency, lookups in RUNS:
        results = {"c": [], "ours": []}
        for _ in range(trials):
            for name, exe in (("c", C_TCPSERVER), ("ours", OURS)):
                results[name].append(trial(exe, concurrency, lookups, seconds))
        medians = {}
        cpu = {}
        for name, rows in results.items():
            rate = statistics.median(r[0] for r in rows)
            own = statistics.median(r[1] for r in rows)
            total = statistics.median(r[2] for r in rows)
            errors = sum(r[3] for r in rows)
            medians[name] = rate
            cpu[name] = own
            print(f"{label:>5} {concurrency:>4} {name:>6} {rate:>8.0f} {own:>15.0f} "
                  f"{total:>18.0f} {errors:>6}")
        print(f"{label:>5} {concurrency:>4} ratio ours/c = {medians['ours'] / medians['c']:.2f}")
        RESULTS.append({"scenario": f"tcpserver {label} path, {concurrency} at once",
                        "unit": "conn/s", "ours": medians["ours"],
                        "peers": {"C tcpserver": medians["c"]},
                        "ratio": medians["ours"] / medians["c"],
                        "cpu_us": {"ours": cpu["ours"], "C tcpserver": cpu["c"]},
                        "command": f"tcpserver -1 {' '.join(lookups)} -c 100 -b 256 127.0.0.1 0 "
                                   f"{' '.join(CHILD)}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

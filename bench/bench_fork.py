"""How costly is forking a preloaded server, against a small fork helper?

`tcpserver --preload` forks a process that has smtpd-child imported.  Two
designs were measured (docs/tcpserver.md, Preloaded mode):
  parent  tcpserver itself (its modules and smtpd-child's) forks each child;
  helper  a separate process with only smtpd-child's modules forks it, and
          tcpserver hands it each connection over a Unix socket (SCM_RIGHTS,
          with the environment): the hand-over is measured on its own.
Each process is started fresh (python -I -S, the launchers' flags), its
memory frozen for the collector as tcpserver does, then forks N children
that exit at once.  Printed: resident size, wall time per fork and CPU per
fork in the parent and in the child.  Medians of interleaved rounds.

Then where one preloaded SMTP session's CPU goes, step by step, and what
our tcpserver's parent spends per connection when it forks (--preload)
against when it posix_spawns (bench/preload_breakdown.py).

Run: python -m bench.bench_fork [sessions-per-round] [rounds]
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench import preload_breakdown

ROUNDS = 5
FORKS = 300
SESSIONS = 200              # per probe process and round
SESSION_ROUNDS = 3

PROBE = r"""
import gc, os, socket, sys, time
kind, n = sys.argv[1], int(sys.argv[2])
import importlib
mods = sys.argv[3:]          # smtpd-child's module and what --preload imports with it
if kind == "parent":
    mods += ["tcpserver_py.tcpserver", "tcpserver_py.server.preloading.noexec"]
for m in mods:
    importlib.import_module(m)
gc.freeze()
if kind == "handover":
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = b"\0".join(b"VARIABLE%d=some value %d" % (i, i) for i in range(25))
    fd = os.open(os.devnull, os.O_RDONLY)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        socket.send_fds(a, [env], [fd])
        msg, fds, _, _ = socket.recv_fds(b, 65536, 1)
        os.close(fds[0])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(wall / n * 1e6, cpu / n * 1e6, 0.0, 0)
    sys.exit()
with open("/proc/self/status") as f:
    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
before = os.times()
t0 = time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
wall = time.perf_counter() - t0
after = os.times()
parent = (after.user + after.system - before.user - before.system) / n
child = (after.children_user + after.children_system - before.children_user
         - before.children_system) / n
print(wall / n * 1e6, parent * 1e6, child * 1e6, rss)
"""


def probe(kind: str, syspath: list[str]) -> list[float]:
    code = f"import sys; sys.path[:0] = {syspath!r}\n" + PROBE
    from tcpserver_py.server.preloading.launcher import PRELOADABLE
    modules = ["smtpd_child.main", *PRELOADABLE["smtpd_child.main"]]
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, kind, str(FORKS), *modules],
                         capture_output=True, check=True, text=True).stdout
    return [float(x) for x in out.split()]


RESULTS: list[dict] = []


def main(argv: list[str] | None = None) -> int:
    argv = argv or []
    sessions = int(argv[0]) if argv else SESSIONS
    rounds = int(argv[1]) if len(argv) > 1 else SESSION_ROUNDS
    syspath = [p for p in sys.path if p]
    runs: dict[str, list[list[float]]] = {"parent": [], "helper": [], "handover": []}
    for _ in range(ROUNDS):
        for kind in runs:
            runs[kind].append(probe(kind, syspath))
    print(f"fork + exit + wait, {FORKS} children per process, median of {ROUNDS} rounds:")
    for kind, rows in runs.items():
        wall, parent, child, rss = (statistics.median(col) for col in zip(*rows))
        if kind == "handover":
            print(f"  {'hand-over to a helper':24s} {wall:6.0f} us wall, {parent:5.0f} us CPU "
                  "per connection (send + receive of fd and environment)")
        else:
            print(f"  {'fork from ' + kind:24s} {wall:6.0f} us wall, {parent:5.0f} us parent CPU,"
                  f" {child:5.0f} us child CPU, RSS {rss / 1024:.1f} MB")
        RESULTS.append({"kind": kind, "wall_us": wall, "parent_us": parent,
                        "child_us": child, "rss_kb": rss})
    preload_breakdown.session_breakdown(syspath, sessions, rounds)
    preload_breakdown.parent_per_connection(sessions, rounds)
    RESULTS.extend(preload_breakdown.RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where a preloaded SMTP session's CPU goes (printed by bench_fork).

1. bench/preload_probe.py, in fresh interpreters, interleaved rounds:
   the floor (fork, and the child exits at once), whole sessions with the
   child's own getrusage at each step (CPU and minor faults: a minor fault
   here is mostly a page copied on write, some 1-3 us each), and the same
   main() in a process that has served ten sessions already (measurement
   only: tcpserver never reuses a process).
2. Our tcpserver itself, one session at a time: the parent's CPU and
   faults per connection when it forks (--preload) and when it
   posix_spawns (exec), from /proc/PID/stat.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import preload_probe

VENV_BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
WARM_SKIP = 10              # the warm child's first sessions are not counted
# The child's marks (preload_probe.py: run() starts, main() starts, after
# each of the 7 replies, os._exit) and the steps between them.
STEPS = [("fork's return, at-fork hooks, dup2", None, 0),
         ("exec emulation (noexec.Preloaded.run)", 0, 1),
         ("start-up to the 220 (control files read)", 1, 2),
         ("EHLO, MAIL, RCPT (controls parsed first)", 2, 5),
         ("DATA: spool file opened, 354", 5, 6),
         ("message, spool commit, 250", 6, 7),
         ("QUIT, sweep check, exit status", 7, 9)]
MARKS = 10
RESULTS: list[dict] = []
HOOKS: set[str] = set()     # modules with at-fork hooks the preloading process imported


def run_probe(mode: str, count: int, syspath: list[str]) -> list:
    code = (f"import sys; sys.path[:0] = {syspath!r}; import runpy; "
            "runpy.run_path(sys.argv.pop(1), run_name='__main__')")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, preload_probe.__file__, mode,
                          str(count), str(VENV_BIN / "smtpd-child")],
                         capture_output=True, check=True, text=True, timeout=600).stdout
    found = json.loads(out)
    HOOKS.update(found["at_fork_hooks"])
    return found["rows"]


def _step(rows, start, end, column) -> float:
    return statistics.median(row["marks"][end][column]
                             - (row["marks"][start][column] if start is not None else 0)
                             for row in rows)


def session_breakdown(syspath: list[str], sessions: int, rounds: int) -> None:
    floor, forked, warm = [], [], []
    for _ in range(rounds):
        floor += run_probe("floor", sessions, syspath)
        forked += [row for row in run_probe("session", sessions, syspath)
                   if all(mark[0] for mark in row["marks"][:MARKS])]
        warm += run_probe("warm", WARM_SKIP + sessions // 4, syspath)[WARM_SKIP:]
    if not forked:
        print("session breakdown: no complete session recorded")
        return
    med = statistics.median
    print(f"where a preloaded session's CPU goes ({len(forked)} sessions, {rounds} interleaved "
          "rounds, medians; EHLO, MAIL, RCPT, DATA 1 KB, QUIT, a reply at a time):")
    parent = (med(r["parent"][0] for r in forked) * 1e6, med(r["parent"][1] for r in forked))
    print(f"  {'parent: fork()':50s} {parent[0]:5.0f} us {parent[1]:4.0f} faults")
    steps = {}
    for name, start, end in STEPS:
        steps[name] = (_step(forked, start, end, 0) * 1e6, _step(forked, start, end, 1))
        print(f"  {'child: ' + name:50s} {steps[name][0]:5.0f} us {steps[name][1]:4.0f} faults")
        if name.startswith("message"):
            slot = preload_probe.FSYNC_SLOT
            fsync = (med(r["marks"][slot][0] for r in forked) * 1e6,
                     med(r["marks"][slot][1] for r in forked))
            print(f"  {'  of which the two fsyncs':50s} {fsync[0]:5.0f} us {fsync[1]:4.0f} faults")
    exit_cpu = med(r["child"][0] - r["marks"][MARKS - 1][0] for r in forked) * 1e6
    print(f"  {'child: exit (the kernel frees its memory)':50s} {exit_cpu:5.0f} us")
    child = (med(r["child"][0] for r in forked) * 1e6, med(r["child"][1] for r in forked))
    print(f"  {'child: total (wait4)':50s} {child[0]:5.0f} us {child[1]:4.0f} faults")
    bare = (med(r["parent"][0] for r in floor) * 1e6, med(r["child"][0] for r in floor) * 1e6,
            med(r["child"][1] for r in floor))
    print(f"  floor, fork + _exit at once: parent {bare[0]:.0f} us; child {bare[1]:.0f} us, "
          f"{bare[2]:.0f} faults")
    hot = (med(r[0] for r in warm) * 1e6, med(r[1] for r in warm))
    if HOOKS:
        print(f"  (the process had imported {', '.join(sorted(HOOKS))}: its at-fork hook ran in "
              "each child)")
    print(f"  the same main() once warm (sessions {WARM_SKIP + 1}+ of one process, measurement "
          f"only): {hot[0]:.0f} us, {hot[1]:.0f} faults")
    RESULTS.append({"kind": "session", "parent_fork": parent, "steps": steps,
                    "exit_us": exit_cpu, "child": child, "floor": bare, "warm_main": hot})


def stat_fields(pid: int) -> list[float]:
    """The process's own CPU (us, from schedstat: clock ticks are too coarse
    here), its minor faults, its reaped children's CPU (us) and faults."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat") as handle:
        own = int(handle.read().split()[0]) / 1000
    return [own, int(fields[7]), (int(fields[13]) + int(fields[14])) / TICKS * 1e6,
            int(fields[8])]


def _serve(extra: list[str], env: dict, count: int) -> list[float]:
    proc = subprocess.Popen([str(VENV_BIN / "tcpserver"), *extra, "-1", "-HRl0", "127.0.0.1",
                             "0", str(VENV_BIN / "smtpd-child")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        port = int(proc.stdout.readline())
        before = stat_fields(proc.pid)
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port)) as client:
                preload_probe.converse(client)
                client.recv(1)                  # EOF: the child has exited
        time.sleep(0.2)                         # and has been reaped
        after = stat_fields(proc.pid)
        return [(b - a) / count for a, b in zip(before, after)]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def parent_per_connection(sessions: int, rounds: int) -> None:
    """Our tcpserver's own CPU and faults per connection, --preload vs exec."""
    root = Path(tempfile.mkdtemp(prefix="bench-fork-"))
    modes = {"--preload": (["--preload"], sessions), "exec": ([], max(10, sessions // 2))}
    found: dict[str, list] = {name: [] for name in modes}
    try:
        home = preload_probe.make_home(root)
        env = {"QMAILHOME": str(home), "PATH": "/usr/bin:/bin"}
        for _ in range(rounds):
            for name, (extra, count) in modes.items():
                found[name].append(_serve(extra, env, count))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"our tcpserver -HRl0 + smtpd-child, a session at a time, per connection (medians "
          f"of {rounds} rounds):")
    for name, rows in found.items():
        cpu, faults, child, child_faults = (statistics.median(c) for c in zip(*rows))
        print(f"  {name:10s} parent {cpu:5.0f} us {faults:4.0f} faults; children "
              f"{child:6.0f} us {child_faults:4.0f} faults")
        RESULTS.append({"kind": f"tcpserver {name}", "parent_us": cpu, "parent_faults": faults,
                        "child_us": child, "child_faults": child_faults})

"""`make stress`: every check, one summary table, exit 1 if an invariant broke.

    cd tests && python -m stress.run [--quick] [--mode preload|exec] [--only NAME[,NAME...]]

--quick runs the small counts `make test` uses (tests/test_stress.py runs
the same functions with assertions).  Loopback only; needs root for the
tmpfs, port 113 and RLIMIT_NPROC parts (each says so when it cannot run).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from . import floods, fuzz, injection, kills, load, queuefaults, slowloris, starve
from .common import ROOT, Result

FULL = dict(kills=200, examples=3000, connections=100_000, sessions=10_000)
QUICK = dict(kills=18, examples=200, connections=1000, sessions=100)


def rules_cdb_checks() -> Result:
    """The rules cdb deleted, truncated and rewritten while serving
    (tests/test_reliability.py, run as it is)."""
    result = Result("rules cdb replaced 1000x, truncated, rewritten")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_reliability.py", "-k", "rules"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = (out.stdout.strip().splitlines() or ["no output"])[-1]
    result.check(out.returncode == 0, f"tests/test_reliability.py -k rules: {summary}")
    result.faults = 1000 + 2 * 2 if result.ok else 0
    result.detail = summary
    result.seconds = time.monotonic() - started
    return result


def checks(counts: dict, mode: str, quick: bool):
    """(name, function taking the work directory) in running order."""
    mode_args = load.MODES[mode]
    return [
        ("kill-spool", lambda base: kills.run_kills(base, counts["kills"], False)),
        ("kill-queue", lambda base: kills.run_kills(base, counts["kills"], True)),
        ("disk-full", queuefaults.run_disk_full),
        ("fsize", queuefaults.run_fsize),
        ("qq-exits", lambda base: queuefaults.run_queue_exits(base, quick)),
        ("nproc", lambda base: starve.run_nproc(base, mode_args)),
        ("nofile", lambda base: starve.run_nofile(base, mode_args)),
        ("rules-cdb", lambda base: rules_cdb_checks()),
        ("fuzz", lambda base: fuzz.run_fuzz(counts["examples"])),
        ("slowloris", lambda base: slowloris.run_slowloris(base, quick, mode_args)),
        ("injection", injection.run_injection),
        ("floods", lambda base: floods.run_floods(base, quick)),
        ("connections", lambda base: load.run_connections(base, counts["connections"], mode)),
        ("sessions", lambda base: load.run_sessions(base, counts["sessions"], mode)),
    ]


def table(results: list) -> str:
    rows = [("check", "ok", "load", "faults", "inputs", "lost", "dup/part", "relays", "s",
             "figures")]
    for r in results:
        rows.append((r.name, "ok" if r.ok else "FAIL", str(r.load), str(r.faults),
                     str(r.inputs), str(r.lost), str(r.duplicated), str(r.relays),
                     f"{r.seconds:.1f}", r.detail))
    total = Result("TOTAL", ok=all(r.ok for r in results))
    for field in ("load", "faults", "inputs", "lost", "duplicated", "relays", "seconds"):
        setattr(total, field, sum(getattr(r, field) for r in results))
    rows.append(("TOTAL", "ok" if total.ok else "FAIL", str(total.load), str(total.faults),
                 str(total.inputs), str(total.lost), str(total.duplicated), str(total.relays),
                 f"{total.seconds:.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(9)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:9], widths[1:])]
        lines.append("  ".join(cells) + "  " + row[9])
        if n == 0 or n == len(rows) - 2:
            lines.append("-" * (sum(widths) + 2 * 9 + 7))
    lines.append(f"load held {total.load}, faults survived {total.faults}, hostile inputs "
                 f"tried {total.inputs}, messages lost {total.lost} (must be 0), duplicated "
                 f"or partial {total.duplicated} (must be 0), relays opened {total.relays} "
                 f"(must be 0)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="stress")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", default="preload", choices=sorted(load.MODES))
    parser.add_argument("--only", default="")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    wanted = set(filter(None, args.only.split(",")))
    base = pathlib.Path(tempfile.mkdtemp(prefix="stress-"))
    results = []
    print(f"stress: {'quick' if args.quick else 'full'} run, mode {args.mode}, "
          f"work directory {base}", flush=True)
    try:
        for name, function in checks(counts, args.mode, args.quick):
            if wanted and name not in wanted:
                continue
            work = base / name
            work.mkdir()
            started = time.monotonic()
            try:
                result = function(work)
            except Exception as exc:          # a harness failure is a failed check
                result = Result(name)
                result.fail(f"{type(exc).__name__}: {exc}")
            if not result.seconds:
                result.seconds = time.monotonic() - started
            results.append(result)
            print(f"  {name}: {'ok' if result.ok else 'FAIL'} ({result.seconds:.1f} s)",
                  flush=True)
            for problem in result.problems:
                print(f"    {problem}", flush=True)
    finally:
        if not args.keep and all(r.ok for r in results):
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(table(results))
    broken = [r for r in results if not r.ok or r.lost or r.duplicated or r.relays]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

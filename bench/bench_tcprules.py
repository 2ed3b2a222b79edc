"""Benchmark: compile N rule lines with our tcprules and Debian's C tcprules.

    python -m bench.bench_tcprules [N]      (default N: $BENCH_TCPRULES_LINES or 1000000)

Both programs compile the same vanilla input (hosts, dotted prefixes, ranges,
host names, user@ rules, variables, comments: keys mostly distinct, as in a
real block list), run alternately so that machine noise hits both alike; the
median wall time of each and their ratio are printed, with our peak RSS.
Then both compile a two-line file (start-up cost), and ours alone compiles
an input with IPv4 CIDR and IPv6 lines mixed in.
The output cdbs of the vanilla runs are compared byte for byte.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
OURS = str(pathlib.Path(sys.executable).parent / "tcprules")
THEIRS = "/usr/bin/tcprules"
ROUNDS = 5
EXT_ROUNDS = 3
CIDR_LENGTHS = (24, 22, 23, 20, 20, 24, 21, 28)  # 1 to 16 keys each
SMALL_ROUNDS = 30
SMALL_RULES = b'127.:allow,RELAYCLIENT=""\n:allow\n'  # what most sites compile
REASONS = [b"-spam source %d, see https://example.org/why" % n for n in range(40)]


def vanilla_line(i: int) -> bytes:
    """Line i of the vanilla corpus; keys are distinct except by design."""
    a, b, c, d = (i >> 16) & 255, (i >> 8) & 255, i & 255, (i * 7) & 255
    kind = i % 20
    if kind < 9:
        return b"%d.%d.%d.%d:deny\n" % (1 + a % 200, b, c, d)
    if kind == 9:
        return b"%d.%d.%d.%d:allow,RELAYCLIENT=\"\"\n" % (201 + a % 20, b, c, d)
    if kind < 13:
        return b"%d.%d.%d.:deny,RBLSMTPD=\"%s\"\n" % (a % 200 + 1, b, c, REASONS[i % 40])
    if kind == 13:
        return b"%d.%d.:allow,RBLSMTPD=\"\"\n" % ((i // 20) >> 8 & 255, i // 20 & 255)
    if kind == 14:
        return b"=host%d.example.com:deny\n" % i
    if kind == 15:
        return b"=.domain%d.example:allow,SMTPUSER=\"u%d\"\n" % (i, i % 1000)
    if kind == 16:
        return b"joe@%d.%d.%d.%d:allow,SMTPUSER=\"joe\",DATABYTES=\"0\"\n" % (a, b, c, d)
    if kind == 17 and i % 400 == 17:
        return b"%d.%d.%d.10-13:allow\n" % (a, b, c)
    if kind == 18 and i % 200 == 18:
        return b"# block list section %d\n" % i
    return b"%d.%d.%d.%d:allow,QMAILQUEUE=\"/var/qmail/bin/q\"\n" % (230 + a % 20, b, c, d)


def extension_line(i: int) -> bytes:
    """Vanilla line, or every tenth line an IPv4 CIDR / IPv6 rule."""
    if i % 10 == 3:
        # each CIDR rule gets its own /20 of 200.0.0.0 and up
        net = (0xC8000000 + (i // 10) * 4096).to_bytes(4, "big")
        length = CIDR_LENGTHS[i // 10 % len(CIDR_LENGTHS)]
        return b"%d.%d.%d.%d/%d:deny\n" % (*net, length)
    if i % 10 == 7:
        # each IPv6 rule gets its own /56 of 2001:db8::/32
        j = i // 10
        return b"2001:db8:%x:%x00::/%d:allow,V6=\"1\"\n" % (j >> 8, j & 255,
                                                            56 + 2 * (j % 5))
    return vanilla_line(i)


def write_corpus(path: pathlib.Path, count: int, make) -> None:
    with open(path, "wb") as out:
        for start in range(0, count, 100_000):
            out.write(b"".join(make(i) for i in range(start, min(count, start + 100_000))))


def run(program: str, src: pathlib.Path, cdb: pathlib.Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one compile."""
    with open(src, "rb") as stdin:
        begin = time.perf_counter()
        proc = subprocess.Popen([program, str(cdb), str(cdb) + ".tmp"], stdin=stdin,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - begin
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode


RESULTS: list[dict] = []      # read by bench.report


def main(argv: list[str] | None = None) -> int:
    """`make bench` calls main() (size from $BENCH_TCPRULES_LINES or 1,000,000);
    `python -m bench.bench_tcprules N` passes N."""
    count = int(argv[0] if argv else os.environ.get("BENCH_TCPRULES_LINES", "1000000"))
    if not os.access(THEIRS, os.X_OK):
        print(f"bench_tcprules: {THEIRS} not installed, skipped")
        return 0
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-tcprules-"))
    try:
        src = work / "vanilla.rules"
        write_corpus(src, count, vanilla_line)
        times: dict[str, list[float]] = {"ours": [], "C": []}
        peak = 0
        for _ in range(ROUNDS):
            for name, program in (("C", THEIRS), ("ours", OURS)):
                elapsed, rss, code = run(program, src, work / f"{name}.cdb")
                if code != 0:
                    print(f"bench_tcprules: {name} exited {code}")
                    return 0
                times[name].append(elapsed)
                if name == "ours":
                    peak = max(peak, rss)
        same = (work / "ours.cdb").read_bytes() == (work / "C.cdb").read_bytes()
        ours, theirs = statistics.median(times["ours"]), statistics.median(times["C"])
        print(f"tcprules, {count} vanilla lines, {ROUNDS} interleaved rounds:")
        print(f"  C tcprules   median {theirs:.3f} s")
        RESULTS.append({"scenario": f"tcprules, {count} lines", "unit": "s", "ours": ours,
                        "peers": {"C tcprules": theirs}, "ratio": ours / theirs,
                        "command": f"tcprules out.cdb out.tmp < vanilla.rules ({count} lines)"})
        print(f"  ours         median {ours:.3f} s   ratio {ours / theirs:.2f}x   "
              f"peak RSS {peak / 1024:.0f} MB   cdb identical: {same}")
        small = work / "small.rules"
        small.write_bytes(SMALL_RULES)
        starts: dict[str, list[float]] = {"ours": [], "C": []}
        for _ in range(SMALL_ROUNDS):
            for name, program in (("C", THEIRS), ("ours", OURS)):
                starts[name].append(run(program, small, work / f"small-{name}.cdb")[0])
        print(f"  a two-line file, {SMALL_ROUNDS} interleaved rounds: "
              f"C median {statistics.median(starts['C']) * 1e3:.1f} ms, ours median "
              f"{statistics.median(starts['ours']) * 1e3:.1f} ms")
        ext = work / "extended.rules"
        write_corpus(ext, count, extension_line)
        ext_times, ext_peak, code = [], 0, 0
        for _ in range(EXT_ROUNDS):
            elapsed, rss, code = run(OURS, ext, work / "ext.cdb")
            ext_times.append(elapsed)
            ext_peak = max(ext_peak, rss)
        extended = statistics.median(ext_times)
        # Every tenth line is an IPv4 CIDR and every tenth an IPv6 rule.
        special = sum(1 for i in range(count) if i % 10 in (3, 7))
        per_line = (extended - ours) / special * 1e6 if special else 0.0
        print(f"  ours, with CIDR/IPv6 lines: median {extended:.3f} s   peak RSS "
              f"{ext_peak / 1024:.0f} MB   exit {code}   "
              f"~{per_line:.1f} us more per CIDR/IPv6 line than a vanilla line")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run every benchmark in turn: `make bench` (or `python -m bench.run_all NAME...`).

Each benchmark compares us with the peer programs on the same input in one
interleaved run and prints medians and ratios; none of them asserts a time.
A full run (no names given) then writes docs/bench.md and docs/bench.png.
"""

import contextlib
import importlib
import io
import os
import sys
import time

from bench import report

BENCHMARKS = ["bench_tcprules", "bench_tcpserver", "bench_proxy", "bench_smtpd",
              "bench_fork", "bench_preload_memory"]


class Tee(io.TextIOBase):
    """Print as usual and keep a copy for docs/bench.md."""

    def __init__(self, stream):
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text):
        self.copy.write(text)
        self.stream.write(text)
        self.stream.flush()
        return len(text)


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    failed = []
    results = {}
    started, load_start = report.now(), os.getloadavg()[0]
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        for name in chosen:
            print(f"=== {name} ===")
            began = time.monotonic()
            module = importlib.import_module(f"bench.{name}")
            status = module.main() or 0
            results[name] = getattr(module, "RESULTS", [])
            print(f"=== {name}: exit {status}, {time.monotonic() - began:.1f} s ===\n")
            if status:
                failed.append(name)
    if not argv:
        report.write(results, tee.copy.getvalue(), started, (load_start, os.getloadavg()[0]))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

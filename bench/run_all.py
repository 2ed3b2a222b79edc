"""Run every benchmark in turn: `make bench` (or `python -m bench.run_all NAME...`).

Each benchmark compares us with the C program on the same input in one
interleaved run and prints medians and ratios; none of them asserts a time.
"""

import importlib
import sys
import time

BENCHMARKS = ["bench_tcprules", "bench_tcpserver", "bench_proxy", "bench_smtpd"]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    failed = []
    for name in chosen:
        print(f"=== {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        status = module.main() or 0
        print(f"=== {name}: exit {status}, {time.monotonic() - started:.1f} s ===\n", flush=True)
        if status:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A/B of `tcpserver --preload` + smtpd-child between two checkouts.

    python -m bench.ab_preload TREE_A TREE_B [messages] [rounds] [rcpthosts-domains]

Each TREE is a checkout with its own .venv (`make install`).  The two run
in turn, interleaved, under the same load as bench_smtpd (smtp-source, 1 KB
messages, 10 sessions in parallel); with a third number, control/rcpthosts
gets that many more domains.  Printed: median sessions/s and server CPU
(tcpserver and its children) per session, and each round's rate.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import bench_smtpd


def main(argv: list[str]) -> int:
    trees = argv[:2]
    messages = int(argv[2]) if len(argv) > 2 else bench_smtpd.MESSAGES
    rounds = int(argv[3]) if len(argv) > 3 else bench_smtpd.SESSION_ROUNDS
    extra = int(argv[4]) if len(argv) > 4 else 0
    root = Path(tempfile.mkdtemp(prefix="ab-preload-"))
    try:
        home = bench_smtpd.make_home(root)
        with open(home / "control" / "rcpthosts", "a") as rcpthosts:
            rcpthosts.writelines(f"d{i}.example.net\n" for i in range(extra))
        rules, env = bench_smtpd.session_setup(root, home)
        found: dict[str, list] = {tree: [] for tree in trees}
        for _ in range(rounds):
            for tree in trees:
                proc, port = bench_smtpd.start_tcpserver(
                    f"{tree}/.venv/bin/tcpserver", rules, [f"{tree}/.venv/bin/smtpd-child"], env,
                    ["--preload"])
                try:
                    found[tree].append(bench_smtpd.run_source(proc, port, messages))
                finally:
                    proc.kill()
                    proc.wait()
                    proc.stdout.close()
                time.sleep(0.3)
        print(f"tcpserver --preload + smtpd-child, {messages} sessions, {rounds} interleaved "
              f"rounds, rcpthosts of {2 + extra} domains:")
        for tree, values in found.items():
            print(f"  {tree}: {statistics.median(v[0] for v in values):.1f} sessions/s, "
                  f"{statistics.median(v[1] for v in values):.2f} ms CPU/session "
                  f"(rates {', '.join(str(round(v[0])) for v in values)})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

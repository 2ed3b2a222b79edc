"""The --preload parent's memory over many connections: it must stay flat.

Our tcpserver --preload runs smtpd-child; a client keeps 10 sessions open at
once, each reading the greeting, sending QUIT and reading to EOF.  The
parent's resident size (VmRSS) is read every tenth of the run.

Run: python -m bench.bench_preload_memory [connections]   (default 5000;
the figure in docs/tcpserver.md is from 100000)
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONCURRENCY = 10
RESULTS: list[dict] = []


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def sessions(port: int, count: int) -> tuple[int, int]:
    """Run `count` QUIT-only sessions, CONCURRENCY at a time: (good, bad)."""
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, bytearray] = {}
    started = good = bad = 0

    def open_one() -> None:
        nonlocal started
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        state[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)
        started += 1

    for _ in range(min(CONCURRENCY, count)):
        open_one()
    while state:
        for key, _ in sel.select(timeout=10):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            got = state[sock]
            if data:
                if not got:
                    sock.sendall(b"QUIT\r\n")
                got += data
                continue
            sel.unregister(sock)
            del state[sock]
            sock.close()
            if got.startswith(b"220 ") and got.endswith(b"221 localhost\r\n"):
                good += 1
            else:
                bad += 1
            if started < count:
                open_one()
    sel.close()
    return good, bad


def main(argv: list[str] | None = None) -> int:
    count = int(argv[0]) if argv else 5000
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    home = root / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "me").write_text("localhost\n")
    (home / "spool").mkdir()
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen([str(bin_dir / "tcpserver"), "--preload", "-1", "-HRl0", "-c", "40",
                             "127.0.0.1", "0", str(bin_dir / "smtpd-child")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", "QMAILHOME": str(home)})
    try:
        port = int(proc.stdout.readline())
        samples = [(0, rss_kb(proc.pid))]
        step = max(count // 10, 1)
        done = good = bad = 0
        began = time.monotonic()
        while done < count:
            g, b = sessions(port, min(step, count - done))
            good, bad, done = good + g, bad + b, done + g + b
            samples.append((done, rss_kb(proc.pid)))
        elapsed = time.monotonic() - began
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
    first, last = samples[1][1], samples[-1][1]
    print(f"tcpserver --preload, {count} sessions ({good} good, {bad} bad, "
          f"{count / elapsed:.0f}/s): parent RSS at start {samples[0][1]} kB, after "
          f"{samples[1][0]} sessions {first} kB, at the end {last} kB "
          f"(max {max(s[1] for s in samples)} kB)")
    print("  samples (sessions, kB): " + " ".join(f"{n}:{kb}" for n, kb in samples))
    RESULTS.append({"connections": count, "samples": samples, "bad": bad})
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""tcpserver at its process limit (RLIMIT_NPROC) and out of descriptors
(RLIMIT_NOFILE).

Invariant: it logs the shortage, keeps its children (they go on serving),
keeps serving new clients once resources return, never exits and never
spins (its CPU while starved is measured and must stay under 5%).
"""

from __future__ import annotations

import os
import pathlib
import resource
import socket
import time

from tcpserver_py.install.check import blocked

from .common import Result, Server, children_of, cpu_seconds, program

UID = 54321               # an otherwise unused uid: RLIMIT_NPROC counts its processes
MEASURE = 2.0             # seconds of CPU measurement while starved
MAX_CPU_SHARE = 0.05     # idle: ~0%; a spinning loop gets far more even on a busy machine


def _held(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    return sock


def _echo(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    sock.settimeout(10)
    got = b""
    while len(got) < len(text):
        data = sock.recv(4096)
        if not data:
            break
        got += data
    return got


def _talk(port: int, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(b"ping\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""             # dropped at once
        chunks = []
        while True:
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _starved_cpu(pid: int, seconds: float = MEASURE) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def run_nproc(base: pathlib.Path, mode_args=()) -> Result:
    result = Result("tcpserver at RLIMIT_NPROC")
    started = time.monotonic()
    held_count, nproc = 3, 4          # tcpserver itself + 3 children

    def limit():
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    why = blocked(program("tcpserver"))
    if why:
        # A checkout under a private directory (mktemp -d is mode 0700).
        result.detail = f"skipped: uid {UID} cannot run our tcpserver: {why}"
        return result

    # setpriv: root is never held to RLIMIT_NPROC, so serve as another uid.
    server = Server([f"--reuid={UID}", f"--regid={UID}", "--clear-groups", program("tcpserver"),
                     "-1", "-HRl0", *mode_args, "-c", "20", "127.0.0.1", "0", "/bin/cat"],
                    base / "nproc.log", preexec_fn=limit, exe="/usr/bin/setpriv")
    held = []
    try:
        for i in range(held_count):
            held.append(_held(server.port))
            result.check(_echo(held[-1], b"hi\n") == b"hi\n", f"held client {i} not served")
        refused = _talk(server.port)               # one over: fork fails, dropped
        result.check(refused == b"", f"client over RLIMIT_NPROC got {refused!r}")
        waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(5)]
        share = _starved_cpu(server.proc.pid)
        for sock in waiting:
            sock.close()
        result.check(share < MAX_CPU_SHARE, f"tcpserver used {share:.0%} CPU while starved")
        result.check("unable to fork" in server.log(), "no log line for the failed fork")
        for i, sock in enumerate(held):
            result.check(_echo(sock, b"still\n") == b"still\n",
                         f"held child {i} stopped serving during the shortage")
        result.check(len(children_of(server.proc.pid)) == held_count,
                     f"children: {children_of(server.proc.pid)}")
        for sock in held:
            sock.close()
        held = []
        time.sleep(0.3)
        served = _talk(server.port)
        result.check(served == b"ping\n", f"after children exit a client got {served!r}")
        result.check(server.alive(), "tcpserver exited")
        result.faults = 1 if result.ok else 0
        result.detail = f"CPU while starved {share:.1%}; held children kept serving"
    finally:
        for sock in held:
            sock.close()
        server.stop()
    result.seconds = time.monotonic() - started
    return result


def _sample_fds(pid: int) -> int:
    time.sleep(0.05)
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_nofile(base: pathlib.Path, mode_args=()) -> Result:
    result = Result("tcpserver out of fds (RLIMIT_NOFILE)")
    started = time.monotonic()
    server = Server(["-1", "-HRl0", *mode_args, "-c", "20", "127.0.0.1", "0", "/bin/cat"],
                    base / "nofile.log")
    held = waiting = []
    try:
        held = [_held(server.port) for _ in range(2)]
        for sock in held:
            result.check(_echo(sock, b"hi\n") == b"hi\n", "held client not served")
        pid = server.proc.pid
        # The fewest descriptors it holds while idle: a sample taken while
        # it briefly held one more (a spawn's pipe) would leave it a spare.
        open_fds = min(_sample_fds(pid) for _ in range(5))
        old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds, old[1]))
        waiting = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(5)]
        for sock in waiting:
            sock.sendall(b"waiting\n")
        share = _starved_cpu(pid)
        result.check(share < MAX_CPU_SHARE, f"tcpserver used {share:.0%} CPU out of fds")
        result.check("unable to accept" in server.log(), "no log line for the failed accept")
        for sock in held:
            result.check(_echo(sock, b"still\n") == b"still\n",
                         "held child stopped serving during the shortage")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        for i, sock in enumerate(waiting):
            sock.settimeout(10)
            try:
                got = sock.recv(100)
            except OSError as exc:
                got = repr(exc).encode()
            result.check(got == b"waiting\n", f"waiting client {i} got {got!r} after fds returned")
        result.check(_talk(server.port) == b"ping\n", "a new client not served after fds returned")
        result.check(server.alive(), "tcpserver exited")
        result.faults = 1 if result.ok else 0
        result.detail = (f"CPU while starved {share:.1%}; the 5 clients in the backlog "
                         "served when fds returned")
    finally:
        for sock in list(held) + list(waiting):
            sock.close()
        server.stop()
    result.seconds = time.monotonic() - started
    return result

"""Run a tcpserver (ours or the C one) for a test and talk to it.

Every server runs in its own session so `stop()` can end it and every child
it started; ports are learned with -1, clients come from 127.0.0.x or ::1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

C_TCPSERVER = "/usr/bin/tcpserver"


class Server:
    def __init__(self, exe: str, args: list[str], log_path, env: dict | None = None,
                 stdin=subprocess.DEVNULL, preexec_fn=None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([exe, *args], stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, start_new_session=True,
                                     preexec_fn=preexec_fn)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError(f"no port from {exe}: {line!r}; log: {self.log()}")
        self.port = int(line)

    def log(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_served(self, connections: int, timeout: float = 5.0) -> None:
        """With -v: wait until every child has been reaped and logged."""
        self.wait_log(r"^tcpserver: status: ", count=1 + 2 * connections, timeout=timeout)
        self.wait_log(r"^tcpserver: end ", count=connections, timeout=timeout)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log(), re.M)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def talk(self, data: bytes = b"", source: str = "127.0.0.1", host: str = "127.0.0.1",
             timeout: float = 5.0) -> bytes:
        """Connect, send `data`, shut down writing, read until EOF."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.bind((source, 0))
            sock.connect((host, self.port))
            try:
                if data:
                    sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except socket.timeout:
                raise
            except OSError:
                # A server that closes at once (a drop) may reset the
                # connection before we are done writing: that is an EOF.
                pass
            return read_all(sock)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self._log.close()
        # Every test through this harness also checks that our quick path
        # never failed quietly into the slower forked child.
        assert "posix_spawn path failed" not in self.log(), self.log()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def parse_env(output: bytes) -> dict[str, str]:
    env = {}
    for line in output.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    return env


def normalise_log(text: str) -> list[str]:
    """Log lines with pids, ports and child counts replaced, sorted: parent
    and child lines interleave differently from run to run, and whether the
    previous child was reaped before the next accept is a race."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^tcpserver: status: \d+/", "tcpserver: status: N/", line)
        line = re.sub(r"^(tcpserver: (?:pid|ok|deny|end|limit)) \d+", r"\1 PID", line)
        line = re.sub(r":\d+( |$)", r":PORT\1", line)
        out.append(line)
    return sorted(out)


def write_rules_c(tmp_path, text: str, name: str = "rules.cdb") -> str:
    """Compile rules text with the C tcprules."""
    cdb = str(tmp_path / name)
    subprocess.run(["/usr/bin/tcprules", cdb, cdb + ".tmp"], input=text.encode(),
                   check=True, timeout=10)
    return cdb

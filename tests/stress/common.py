"""What every stress check shares: results, qmail homes, servers, SMTP clients,
and the spool audit that counts lost, duplicated and partial messages."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

from smtpd_child.delivery import spoolfile

import tcpserver_harness as harness    # tests/ is on the path: pytest, or `cd tests`

VENV_BIN = pathlib.Path(sys.executable).parent
ROOT = pathlib.Path(__file__).resolve().parents[2]     # the checkout
BASE_ENV = {"PATH": "/usr/bin:/bin"}


def program(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        raise SystemExit(f"stress: {path} missing: run `make install`")
    return str(path)


@dataclasses.dataclass
class Result:
    """One check.  The counters add up into the summary table."""
    name: str
    ok: bool = True
    load: int = 0          # connections or sessions served under load
    faults: int = 0        # faults injected and survived
    inputs: int = 0        # hostile inputs tried
    lost: int = 0          # a 250 reached the client, the message is not in new/
    duplicated: int = 0    # a message in new/ more than once, or partial/corrupt
    relays: int = 0        # a recipient outside rcpthosts accepted without RELAYCLIENT
    detail: str = ""
    problems: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def fail(self, text: str) -> None:
        self.ok = False
        if len(self.problems) < 20:
            self.problems.append(text)

    def check(self, condition: bool, text: str) -> bool:
        if not condition:
            self.fail(text)
        return condition


# -- qmail homes ------------------------------------------------------------

def make_home(base: pathlib.Path, name: str = "qmail", controls: dict | None = None
              ) -> pathlib.Path:
    home = base / name
    (home / "control").mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "new"):
        (home / "spool" / sub).mkdir(parents=True, exist_ok=True)
    files = {"me": "stress.test", "rcpthosts": "example.org"}
    files.update(controls or {})
    for control, text in files.items():
        (home / "control" / control).write_text(text + "\n")
    return home


def smtpd_env(home, **extra) -> dict:
    env = dict(BASE_ENV, QMAILHOME=str(home), TCPREMOTEIP="127.0.0.1",
               TCPLOCALIP="127.0.0.1", TCPREMOTEHOST="localhost", TCPLOCALHOST="stress.test")
    env.update({k: str(v) for k, v in extra.items()})
    return env


FAKE_QUEUE = '''#!{python}
"""A test qmail-queue: message on fd 0, envelope on fd 1; queues into the
built-in spool format with qmail-queue's guarantees (nothing without the
whole envelope; exit 0 only once the file is durable in new/)."""
import os, sys
sys.path[:0] = {path!r}
from smtpd_child.delivery import spoolfile
from smtpd_child.smtp.envelope import parse_envelope
def read_all(fd):
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
message = read_all(0)
envelope = read_all(1)
parsed = parse_envelope(envelope)
if parsed is None or parsed[2] != len(envelope):
    sys.exit(54)                      # qmail-queue: read error, nothing queued
spool = os.path.join(os.environ["QMAILHOME"], "spool")
name = "%d.%d.q" % (os.getpid(), len(message))
tmp = os.path.join(spool, "tmp", name)
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
data = spoolfile.header(parsed[0], parsed[1]) + message
view = memoryview(data)
while view:
    view = view[os.write(fd, view):]
os.fsync(fd)
os.close(fd)
os.rename(tmp, os.path.join(spool, "new", name))
dfd = os.open(os.path.join(spool, "new"), os.O_RDONLY)
os.fsync(dfd)
os.close(dfd)
'''

EXIT_QUEUE = '''#!/bin/sh
# A test qmail-queue that reads its input and exits with $QQ_EXIT, or is
# killed by signal $QQ_SIGNAL.
cat >/dev/null
cat <&1 >/dev/null 2>&1
if [ -n "$QQ_SIGNAL" ]; then kill -"$QQ_SIGNAL" $$; fi
exit "$QQ_EXIT"
'''


def write_script(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def fake_queue(base: pathlib.Path) -> str:
    return write_script(base / "fake-qmail-queue",
                        FAKE_QUEUE.format(python=sys.executable, path=[str(ROOT)]))


# -- talking SMTP -----------------------------------------------------------

REPLY_END = re.compile(rb"^\d{3} .*\r\n", re.M)


class Smtp:
    """A blocking SMTP client over any connected socket."""

    def __init__(self, sock: socket.socket, timeout: float = 30.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buffer = b""

    def reply(self) -> bytes:
        """One whole reply (all its lines); b"" on EOF."""
        while True:
            match = REPLY_END.search(self.buffer)
            if match:
                reply, self.buffer = self.buffer[:match.end()], self.buffer[match.end():]
                return reply
            data = self.sock.recv(65536)
            if not data:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += data

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything until EOF (after a kill, what had been sent already)."""
        chunks = [self.buffer]
        self.buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError:
            pass
        return b"".join(chunks)


def start_child(env: dict, stderr, preexec_fn=None):
    """smtpd-child on one end of a socketpair, as tcpserver would run it."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([program("smtpd-child")], stdin=theirs, stdout=theirs,
                            stderr=stderr, env=env, preexec_fn=preexec_fn)
    theirs.close()
    return proc, ours


def wait_rusage(proc: subprocess.Popen):
    """(wait status, max RSS in kB) of a child, reaped here."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, usage.ru_maxrss


def body_for(token: str, size: int) -> bytes:
    """A message whose every line names its token: a partial or mixed copy shows."""
    head = (f"From: stress@client.test\r\nTo: box@example.org\r\nSubject: {token}\r\n"
            f"X-Stress: {token}\r\n\r\n").encode()
    line = f"{token} " + "x" * 60 + "\r\n"
    lines = max(1, size // len(line))
    return head + line.encode() * lines


def decoded(body: bytes) -> bytes:
    """What the spool holds of `body` after our Received line (LF ends; no
    line of ours starts with a dot)."""
    return body.replace(b"\r\n", b"\n")


# -- the spool audit --------------------------------------------------------

TOKEN = re.compile(rb"^X-Stress: (\S+)$", re.M)


def audit_spool(spool: pathlib.Path, sent: dict, acked: set, result: Result) -> dict:
    """Compare spool/new with what was sent (token -> body) and what was
    acknowledged with 250 (tokens); add lost/duplicated/partial to result."""
    seen: dict = {}
    new = spool / "new"
    for name in os.listdir(new):
        data = (new / name).read_bytes()
        parsed = spoolfile.parse(data)
        if parsed is None:
            result.duplicated += 1
            result.fail(f"not a whole spool file: new/{name}")
            continue
        _, _, message = parsed
        match = TOKEN.search(message)
        token = match.group(1).decode() if match else None
        if token not in sent:
            result.duplicated += 1
            result.fail(f"unknown message new/{name}")
            continue
        expected = decoded(sent[token])
        received_end = message.find(b"\n", message.find(b"\n") + 1) + 1
        if not message.startswith(b"Received: ") or message[received_end:] != expected:
            result.duplicated += 1
            result.fail(f"partial message new/{name} ({len(message)} bytes)")
            continue
        seen[token] = seen.get(token, 0) + 1
    for token, count in seen.items():
        if count > 1:
            result.duplicated += count - 1
            result.fail(f"message {token} in new/ {count} times")
    for token in acked:
        if token not in seen:
            result.lost += 1
            result.fail(f"message {token} acknowledged with 250 but not in new/")
    return seen


# -- servers and processes --------------------------------------------------

class Server(harness.Server):
    """Our tcpserver (or any UCSPI server taking -1), in its own session:
    the tests' harness with the stress defaults (our tcpserver, BASE_ENV)."""

    def __init__(self, args: list, log_path, env: dict | None = None, preexec_fn=None,
                 exe: str | None = None):
        super().__init__(exe or program("tcpserver"), args, log_path,
                         env=env or dict(BASE_ENV), preexec_fn=preexec_fn)

    def alive(self) -> bool:
        return self.proc.poll() is None


def children_of(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """The largest number of children a process ever has (zombies included)."""

    def __init__(self, pid: int, every: float = 0.005):
        super().__init__(daemon=True)
        self.pid, self.every, self.most, self.samples = pid, every, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.most = max(self.most, len(children_of(self.pid)))
            self.samples += 1
            time.sleep(self.every)

    def stop(self) -> None:
        self.done.set()
        self.join()


def wait_no_children(pid: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while children_of(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return children_of(pid)

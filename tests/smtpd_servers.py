"""Helpers for smtpd-child integration tests: a qmail home, a C tcpserver running it,
and the same tests in both of our tcpserver's modes (exec, --preload)."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import our_program, peer_program

# How smtpd-child is started: "exec" (a fresh interpreter per session: over
# pipes, or by a tcpserver) or "preload" (our tcpserver --preload forks it).
MODES = ["exec", "preload"]
UNANSWERED_DNS = "127.0.0.253"    # no fake DNS of the tests uses it


@pytest.fixture(params=MODES)
def smtpd_mode(request):
    return request.param


def make_home(tmp_path, **controls):
    """A qmail home with control files (name=text; None leaves a file out)
    and an empty spool directory."""
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "spool").mkdir()
    files = {"me": "mail.example.com\n", "rcpthosts": "example.com\nmail.example.com\n"}
    files.update(controls)
    for name, text in files.items():
        if text is not None:
            (home / "control" / name).write_text(text)
    return home


# Stand-in for qmail-queue: keeps fd 0 (message) and fd 1 (envelope) in $OUT,
# exits $FAKE_EXIT, or kills itself when $CRASH is set.
FAKE_QUEUE = """#!/bin/sh
cat > "$OUT/message"
cat <&1 > "$OUT/envelope"
[ -n "$CRASH" ] && kill -9 $$
exit ${FAKE_EXIT:-0}
"""


def install_fake_queue(tmp_path):
    """Write the fake qmail-queue; returns (script path, its output directory)."""
    script = tmp_path / "qmail-queue"
    script.write_text(FAKE_QUEUE)
    script.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    return script, out


def compile_rules(tmp_path, text: str) -> str:
    """A rules cdb compiled by the C tcprules."""
    cdb = tmp_path / "rules.cdb"
    subprocess.run([peer_program("/usr/bin/tcprules"), str(cdb), str(tmp_path / "rules.tmp")],
                   input=text.encode(), check=True, timeout=10)
    return str(cdb)


@contextlib.contextmanager
def c_tcpserver(tmp_path, home, rules: str, extra_env=None, tcpserver=None, child_args=(),
                stderr=subprocess.DEVNULL, preload=False):
    """The C tcpserver (or the one given; ours with --preload when `preload`)
    on 127.0.0.1, a free port, running smtpd-child (with child_args, e.g. a
    checkpassword command); yields the port."""
    if preload:
        tcpserver = our_program("tcpserver")
    tcpserver = tcpserver or peer_program("/usr/bin/tcpserver")
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), **(extra_env or {})}
    proc = subprocess.Popen(
        [tcpserver, *(["--preload"] if preload else []),
         "-1", "-HRl0", "-c", "50", "-b", "50", "-x", compile_rules(tmp_path, rules),
         "127.0.0.1", "0", our_program("smtpd-child"), *child_args],
        stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        proc.wait()


class Client:
    """A line-oriented SMTP client over a socket, optionally from a chosen source address."""

    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        text = b""
        while True:
            line = self.file.readline()
            text += line
            if len(line) < 4 or line[3:4] != b"-":
                return text

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.file.close()
        self.sock.close()


def run_smtpd(mode, client: bytes, env: dict, timeout=20, preexec_fn=None):
    """One smtpd-child session fed `client` (then EOF) with environment `env`:
    (output, its stderr, exit code).  "exec": over pipes; "preload": under
    our tcpserver --preload, over TCP from 127.0.0.1."""
    if mode == "exec":
        result = subprocess.run([our_program("smtpd-child")], input=client, capture_output=True,
                                env=env, timeout=timeout, preexec_fn=preexec_fn)
        return result.stdout, result.stderr, result.returncode
    assert preexec_fn is None, "preexec_fn would act on tcpserver, not on the child"
    return _run_preloaded(client, env, timeout)


def _run_preloaded(client: bytes, env: dict, timeout: float):
    # tcpserver sets PROTO and TCP* itself: values the test gives for those
    # come from a rule, which is applied last, so the child sees them as given.
    ucspi = {k: v for k, v in env.items() if k == "PROTO" or k.startswith("TCP")}
    own = {k: v for k, v in env.items() if k not in ucspi}
    # No -l: TCPLOCALHOST is left out, as over pipes, when the local name is
    # unknown -- asked of a DNS server that refuses at once (nothing listens).
    own.setdefault("DNSCACHEIP", UNANSWERED_DNS)
    with tempfile.TemporaryDirectory() as work:
        rules = []
        if ucspi:
            text = ":allow," + ",".join(f'{k}="{v}"' for k, v in ucspi.items()) + "\n"
            cdb = os.path.join(work, "rules.cdb")
            subprocess.run([our_program("tcprules"), cdb, cdb + ".tmp"], input=text.encode(),
                           check=True, timeout=10)
            rules = ["-x", cdb]
        errors = os.path.join(work, "stderr")
        with open(errors, "wb") as err:
            proc = subprocess.Popen([our_program("tcpserver"), "--preload", "-v", "-1", "-HR",
                                     *rules, "127.0.0.1", "0", our_program("smtpd-child")],
                                    stdout=subprocess.PIPE, stderr=err, env=own)
        try:
            port = int(proc.stdout.readline())
            output = _converse(port, client, timeout)
            deadline = time.monotonic() + timeout
            while b"tcpserver: end " not in _read(errors):
                assert time.monotonic() < deadline, "the child never ended"
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
        text = _read(errors)
    lines = text.splitlines(keepends=True)
    status = next(int(line.split()[-1]) for line in lines if line.startswith(b"tcpserver: end "))
    stderr = b"".join(line for line in lines if not line.startswith(b"tcpserver: "))
    return output, stderr, os.waitstatus_to_exitcode(status)


def _converse(port: int, client: bytes, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(client)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                     # the child stopped reading (421, bare LF): as a pipe's EPIPE
        output = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                return output
            output += data
    return output


def _read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()

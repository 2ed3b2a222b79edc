"""Helpers for smtpd-child integration tests: a qmail home, a C tcpserver running it."""

import contextlib
import socket
import subprocess

from conftest import our_program, peer_program


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
                stderr=subprocess.DEVNULL):
    """The C tcpserver (or the one given) on 127.0.0.1, a free port, running
    smtpd-child (with child_args, e.g. a checkpassword command); yields the port."""
    tcpserver = tcpserver or peer_program("/usr/bin/tcpserver")
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), **(extra_env or {})}
    proc = subprocess.Popen(
        [tcpserver, "-1", "-HRl0", "-c", "50", "-b", "50", "-x", compile_rules(tmp_path, rules),
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
